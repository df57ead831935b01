"""Answers and labels a manifest could read two ways are refused, not read one way silently.

Found on a study of counting and grading questions (options "1".."4", answers written as the option's
text) and on files exported from spreadsheets (NA, N/A, null for a missing task)."""

from __future__ import annotations

import itertools
import json

import pytest

from matprobe.data import load_dataset
from matprobe.data.model import OPTION_LETTERS
from matprobe.errors import DataError


def _record(options, answer, task="Count"):
    return {"id": "q1", "question": "How many lesions?", "options": list(options), "answer": answer,
            "modality": "CT", "anatomy": "Lung", "task": task}


def _readings(options, answer):
    """The option indices the answer names: as a number or letter, and as an option's text."""
    text = str(answer).strip()
    as_code = int(text) if text.isdigit() else (OPTION_LETTERS.index(text.upper()) if len(text) == 1 else None)
    as_code = as_code if as_code is not None and 0 <= as_code < len(options) else None
    as_text = options.index(text) if text in options else None
    return {r for r in (as_code, as_text) if r is not None}


@pytest.mark.parametrize("alphabet", [("1", "2", "3", "4"), ("0", "1", "2", "3"), ("A", "B", "C", "D"),
                                      ("C", "B", "A", "D")])
def test_an_answer_two_options_could_be_is_refused_and_one_reading_is_kept(tmp_path, alphabet):
    f = tmp_path / "m.jsonl"
    refused = kept = 0
    for options in itertools.permutations(alphabet):
        for answer in (*alphabet, *(int(a) for a in alphabet if a.isdigit())):
            f.write_text(json.dumps(_record(options, answer)) + "\n")
            readings = _readings(options, answer)
            if len(readings) == 2:
                with pytest.raises(DataError) as exc:
                    load_dataset(f)
                msg = str(exc.value)
                assert f"answer {answer!r} is ambiguous" in msg and "record 1 (id 'q1')" in msg, msg
                # both options it could be are named by letter and text, and the fix is one of them
                for r in readings:
                    assert f"option {OPTION_LETTERS[r]} ({options[r]!r})" in msg, msg
                refused += 1
            else:
                (only,) = readings
                assert load_dataset(f)[0].answer_index == only
                kept += 1
    assert refused and kept  # both kinds of case came up


@pytest.mark.parametrize("mark", ["NA", "N/A", "nan", "None", "null", "-", "#N/A", " na "])
@pytest.mark.parametrize("factor", ["modality", "anatomy", "task"])
def test_a_missing_value_mark_is_no_label(tmp_path, mark, factor):
    header = "id,question,options,answer,modality,anatomy,task\n"
    cells = {"modality": "CT", "anatomy": "Lung", "task": "COVID", factor: mark}
    (tmp_path / "m.csv").write_text(header + "1,Is it?,yes|no,yes,CT,Lung,COVID\n"
                                    + f"2,Is it?,yes|no,no,{cells['modality']},{cells['anatomy']},{cells['task']}\n")
    with pytest.raises(DataError) as exc:
        load_dataset(tmp_path / "m.csv")
    msg = str(exc.value)
    assert f"record 2 (id '2'): {factor} {mark!r} marks a missing value" in msg, msg


def test_json_nan_is_a_missing_field_and_near_misses_are_labels(tmp_path):
    # json.dump of a pandas record writes NaN for a missing cell
    f = tmp_path / "m.json"
    f.write_text('[{"id": "a", "question": "q", "options": ["x", "y"], "answer": 0, "modality": "CT", '
                 '"anatomy": "Lung", "task": NaN}]')
    with pytest.raises(DataError, match=r"record 1 \(id 'a'\): missing field\(s\) task"):
        load_dataset(f)
    # labels that only contain a mark's letters are labels
    f.write_text(json.dumps([_record(("x", "y"), 0, task=t) for t in ("Nanomedicine",)]))
    assert load_dataset(f)[0].task == "Nanomedicine"
    f.write_text(json.dumps([{**_record(("x", "y"), 0), "anatomy": "Non-lung"}]))
    assert load_dataset(f)[0].anatomy == "Non-lung"
