"""A README-only study ran `matprobe init --store step000-s0=stores/full-step000.h5 ...`: the refusal
said "its path names no condition ... or name it on the command line: related-s0=PATH", which is
what the user did. A pipeline compares only its fixed training conditions: the refusal of a NAME
now says NAME must be CONDITION-sSEED, lists every condition, says no names of one's own are taken
and what compares other checkpoints. The NAME alone is read (before, the folder `init` ran in was
read with it: a study run from a folder called `related` took any `mine-s0=PATH` as Related)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matprobe.conditions import CONDITION_NAMES
from matprobe.errors import InitError
from matprobe.scaffold import parse_entry

TRIPS = [("MRI", "Brain", "Quality")]


def _manifest(tmp_path) -> Path:
    rows = [{"id": f"{m}{a}{t}{k}", "image": "x.png", "question": "q?", "options": ["a", "b"], "answer": k % 2,
             "modality": m, "anatomy": a, "task": t}
            for m, a, t in [("MRI", "Brain", "Quality"), ("MRI", "Brain", "Exposure"), ("CT", "Lung", "Plane")]
            for k in range(4)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_name_of_ones_own_is_refused_with_the_conditions_it_may_use(tmp_path):
    import matprobe as mp

    data = _manifest(tmp_path)
    (tmp_path / "full-step000.h5").write_bytes(b"")
    with pytest.raises(InitError) as err:
        mp.init(store=[f"step000-s0={tmp_path / 'full-step000.h5'}"], data=data, target=["MRI,Brain,Quality"],
                out=tmp_path / "study.toml")
    said = str(err.value)
    assert said.startswith(f"step000-s0={tmp_path / 'full-step000.h5'}: the name 'step000-s0' names no condition")
    assert "NAME in NAME=PATH must be CONDITION-sSEED, e.g. related-s0=" in said, said
    assert ("CONDITION is one of: related, unrelated, zero-overlap, any-overlap, leave-one-out, without-modality, "
            "without-anatomy, without-task, the training conditions a pipeline compares (it takes no names "
            "of your own;") in said, said
    assert list(CONDITION_NAMES) == ["related", "unrelated", "zero-overlap", "any-overlap", "leave-one-out",
                                     "without-modality", "without-anatomy", "without-task"]
    with pytest.raises(InitError, match="the name 'related-final' names no seed"):
        mp.init(store=[f"related-final={tmp_path / 'full-step000.h5'}"], data=data, target=["MRI,Brain,Quality"],
                out=tmp_path / "study.toml")


def test_a_name_is_read_alone_not_with_the_folder_init_runs_in(tmp_path, monkeypatch):
    (tmp_path / "related").mkdir()
    monkeypatch.chdir(tmp_path / "related")
    with pytest.raises(InitError, match="the name 'mine-s0' names no condition"):
        parse_entry(Path("mine-s0"), TRIPS, named=Path("s.h5"))
    assert parse_entry(Path("unrelated-s2"), TRIPS, named=Path("s.h5")) == \
        {"condition": "unrelated", "seed": 2, "target": TRIPS[0]}
    # a path (no NAME) is still read with its folders: ckpts/related/s2
    assert parse_entry(Path("s2"), TRIPS)["condition"] == "related"
