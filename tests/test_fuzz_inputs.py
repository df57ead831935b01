"""Property-based tests (hypothesis): malformed manifests, Med-MAT records and significance CSVs
never end in anything but a `MatprobeError` (one clear line at the CLI), and whatever loads
is exactly what the file says (never silently wrong)."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matprobe.data import load_dataset
from matprobe.data.model import OPTION_LETTERS, canonical_label
from matprobe.errors import MatprobeError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.text(max_size=6), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
label_text = st.text(alphabet=string.ascii_letters + " -_", min_size=1, max_size=10).filter(lambda s: s.strip())
option_text = st.text(alphabet=string.ascii_letters + string.digits + " ", min_size=1, max_size=8).filter(lambda s: s.strip())


@st.composite
def manifest_record(draw, i: int):
    options = draw(st.lists(option_text, min_size=2, max_size=5))
    rec = {
        "id": f"r{i}", "question": draw(st.text(min_size=1, max_size=20).filter(str.strip)), "options": options,
        "answer": draw(st.one_of(st.integers(0, len(options) - 1), st.sampled_from(OPTION_LETTERS[: len(options)]),
                                 st.sampled_from(options))),
        "modality": draw(label_text), "anatomy": draw(label_text), "task": draw(label_text),
    }
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # corrupt some fields
        key = draw(st.sampled_from([*rec, "slice", "label", "split"]))
        if draw(st.booleans()):
            rec.pop(key, None)
        else:
            rec[key] = draw(junk)
    return rec


def _expected_answer(raw, options):
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    text = str(raw).strip()
    if text.isdigit():
        return int(text)
    if len(text) == 1 and text.upper() in OPTION_LETTERS[: len(options)]:
        return OPTION_LETTERS.index(text.upper())
    if text in options:
        return options.index(text)
    # not verbatim: the option up to case and spaces, else a letter with punctuation ('(B)', 'B. no')
    folded = [" ".join(o.split()).casefold() for o in options]
    if folded.count(" ".join(text.split()).casefold()) == 1:
        return folded.index(" ".join(text.split()).casefold())
    letter, rest = text.removeprefix("(")[0], text.removeprefix("(")[1:].lstrip()
    idx = OPTION_LETTERS.index(letter.upper())
    tail = rest[1:].strip() if rest[:1] in (")", ".", ":") else rest
    assert tail == "" or " ".join(tail.split()).casefold() == folded[idx], (raw, options)
    return idx


@FUZZ
@given(data=st.data())
def test_manifest_records_load_exactly_or_fail_with_one_clear_error(tmp_path_factory, data):
    n = data.draw(st.integers(1, 4))
    records = [data.draw(manifest_record(i)) for i in range(n)]
    header = data.draw(st.sampled_from([None, None, {"matprobe_manifest": 1, "vocabulary": data.draw(junk)}]))
    path = Path(tmp_path_factory.mktemp("fuzz")) / "m.jsonl"
    lines = ([json.dumps(header)] if header is not None else []) + [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    try:
        ds = load_dataset(path)
    except MatprobeError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    assert len(ds) == n
    named = any("id" in rec for rec in records)  # else every item is named by its row
    for i, (rec, s) in enumerate(zip(records, ds)):
        assert s.id == (str(rec["id"]).strip() if named else f"row-{i + 1}")
        options = tuple(str(o).strip() for o in rec["options"])
        assert s.options == options and len({o.casefold() for o in options}) == len(options)
        assert s.answer_index == _expected_answer(rec["answer"], options)
        for f in ("modality", "anatomy", "task"):
            assert getattr(s, f) == canonical_label(f, rec[f])


@st.composite
def medmat_record(draw, i: int):
    options = draw(st.lists(option_text, min_size=2, max_size=5, unique_by=lambda s: " ".join(s.split()).casefold()))
    k = draw(st.integers(0, len(options) - 1))
    rec = {
        "id": i, "image": f"med-mat/{i}.png", "Question": "What is shown?",
        "Answer": draw(st.one_of(st.just(options[k]), st.sampled_from(options), label_text)),
        "Question-choice": "Choose:\n" + "\n".join(f"{OPTION_LETTERS[j]}: {o}" for j, o in enumerate(options)),
        "Answer-choice": draw(st.one_of(st.just(OPTION_LETTERS[k]), st.sampled_from(list("ABCDEFZ")), junk)),
    }
    for _ in range(draw(st.integers(0, 1))):
        key = draw(st.sampled_from(list(rec)))
        if draw(st.booleans()):
            rec.pop(key)
        else:
            rec[key] = draw(junk)
    return rec


def _norm(text) -> str:
    return " ".join(str(text).replace("_", " ").split()).strip(" .").casefold()


@FUZZ
@given(data=st.data())
def test_medmat_records_load_exactly_or_fail_with_one_clear_error(tmp_path_factory, data):
    from matprobe.data.medmat import load_medmat, parse_options

    records = [data.draw(medmat_record(i + 1)) for i in range(data.draw(st.integers(1, 3)))]
    path = Path(tmp_path_factory.mktemp("fuzzmm")) / "Subset--03-train.json"
    path.write_text(json.dumps(records))
    try:
        ds = load_medmat(path)
    except MatprobeError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    for rec, s in zip(records, ds):
        options = parse_options(rec["Question-choice"])
        letter = str(rec["Answer-choice"]).strip().strip("()").rstrip(".:)").strip().upper()
        assert s.options == options and s.answer_index == OPTION_LETTERS.index(letter)
        assert s.label == canonical_label("label", options[s.answer_index])  # the correct option's text
        texts = [_norm(o) for o in options]
        if _norm(rec["Answer"]) in texts:  # Answer and Answer-choice never disagree silently
            assert texts[s.answer_index] == _norm(rec["Answer"])


value_cell = st.one_of(
    st.floats(0, 1).map(lambda v: f"{v:.3f}"), st.floats(0, 1).map(lambda v: f"{v:.3f}"),
    st.floats(1.5, 100).map(lambda v: f"{v:.1f}"),
    st.sampled_from(["", "nan", "inf", "abc", "1e400", "-0.2", "0.5.1"]),
)


@FUZZ
@given(data=st.data())
def test_significance_csv_reads_exactly_or_fails_with_one_clear_error(tmp_path_factory, data):
    from matprobe.stats.significance import analyze_file, read_results

    header = data.draw(st.sampled_from(["condition,target,seed,metric,value"] * 4 + ["condition,target,metric,value",
                                        "condition,seed,metric,value", ""]))
    cols = header.split(",") if header else []
    rows = []
    for i in range(data.draw(st.integers(0, 10))):
        cell = {"condition": data.draw(st.sampled_from(["AB"[i % 2]] * 29 + [""])), "target": f"t{i // 2}",
                "seed": str(data.draw(st.integers(0, 1))), "metric": data.draw(st.sampled_from(["accuracy", "mi"])),
                "value": data.draw(value_cell)}
        row = ",".join(cell[c] for c in cols)
        if row.split(",")[0] != "" or row not in rows:  # an exact duplicate row is refused, keep it rare
            rows.append(row)
    path = Path(tmp_path_factory.mktemp("fuzzsig")) / "r.csv"
    path.write_text("\n".join(([header] if header else []) + rows) + ("\n" if header else ""))
    try:
        frame = read_results(path)
    except MatprobeError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    raw = [r.split(",") for r in rows]
    assert len(frame) == len(raw)
    for (_, got), cells in zip(frame.iterrows(), raw):
        expected = float(cells[cols.index("value")])
        assert math.isfinite(expected) and got["value"] == pytest.approx(expected, abs=0, rel=0)
    acc = frame.loc[frame.metric == "accuracy", "value"]
    if len(acc) and acc.min() >= 0 and acc.max() <= 100:
        # never a percentage beside a fraction, row by row (0 and 1 read the same in both units)
        assert not ((acc > 1).any() and ((acc > 0) & (acc < 1)).any())
    try:
        analyze_file(path, None, metrics=None)
    except MatprobeError as exc:
        assert "\n" not in str(exc).strip()
