"""`matprobe data validate`, `data split` and `store info` through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.data import load_manifest
from matprobe.store import EmbeddingStore

runner = CliRunner()

TRIPLETS = [("X-ray", "Chest", "Classification"), ("X-ray", "Chest", "Segmentation"),
            ("MRI", "Brain", "Classification"), ("MRI", "Brain", "Segmentation"),
            ("CT", "Lung", "Classification")]


def write_manifest(tmp_path, n_per=3, extra=()):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img.png")
    recs = []
    for t, (m, a, task) in enumerate(TRIPLETS):
        for i in range(n_per):
            recs.append({"id": f"{t}-{i}", "image": "img.png", "question": "Which?",
                         "options": ["a", "b", "c", "d"], "answer": i % 4,
                         "modality": m, "anatomy": a, "task": task})
    recs.extend(extra)
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return path


def test_validate_prints_triplet_counts(tmp_path):
    path = write_manifest(tmp_path)
    res = runner.invoke(app, ["data", "validate", str(path)])
    assert res.exit_code == 0, res.output
    for m, a, t in TRIPLETS:
        assert any(m in line and a in line and t in line and line.rstrip(" │").endswith("3")
                   for line in res.output.splitlines()), (m, a, t)
    assert "no problems found" in res.output


def test_validate_lists_problems_and_fails(tmp_path):
    bad = {"id": "x9", "image": "gone.png", "question": "q", "options": ["a", "b"], "answer": 0,
           "modality": "CT", "anatomy": "Lung", "task": "Classification"}
    path = write_manifest(tmp_path, extra=[bad])
    res = runner.invoke(app, ["data", "validate", str(path)])
    assert res.exit_code == 1
    assert "gone.png not found" in res.output and "1 problem(s) found" in res.output


def test_split_writes_related_training_set(tmp_path):
    path = write_manifest(tmp_path)
    out = tmp_path / "split.jsonl"
    res = runner.invoke(app, ["data", "split", str(path), "--target", "X-ray,Chest,Classification",
                              "--config", "related", "--out", str(out)])
    assert res.exit_code == 0, res.output
    split = load_manifest(out)
    assert sorted({(s.split, s.triplet) for s in split}) == [
        ("test", TRIPLETS[0]), ("train", TRIPLETS[1])]


def test_split_keeps_the_files_own_test_rows_out_of_training_as_run_does(tmp_path):
    """A README-only study marked 6 rows per triplet split = test; `data split` put them in the
    training rows (26 per triplet) while `run` counted only the marked train rows (20)."""
    from types import SimpleNamespace

    from matprobe.data import load_dataset
    from matprobe.pipeline import _training_ids

    path = write_manifest(tmp_path, n_per=4)
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for r in recs:
        r["split"] = "test" if r["id"].endswith("-0") else "train"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    target = "MRI,Brain,Classification"
    for config in ("related", "unrelated"):
        out = tmp_path / f"{config}.jsonl"
        res = runner.invoke(app, ["data", "split", str(path), "--target", target, "--config", config,
                                  "--out", str(out)])
        assert res.exit_code == 0, res.output
        train = sorted(s.id for s in load_manifest(out) if s.split == "train")
        assert train and not any(i.endswith("-0") for i in train)
        # the target's rows are all test rows, marked or not
        assert sorted(s.id for s in load_manifest(out) if s.split == "test") == [f"2-{i}" for i in range(4)]
        cfg = SimpleNamespace(checkpoints=[{"ckpt": "x"}], conditions=[config], target=target.split(","),
                              train_size=None, data_seed=0)
        assert train == _training_ids(load_dataset(path), cfg)[config]
        n_left = len({s.triplet for s in load_manifest(out) if s.split == "train"})  # one "-0" row each
        assert f"note: {n_left} row(s) of the training triplets" in " ".join(res.output.split())


def test_split_failure_is_one_line_and_writes_nothing(tmp_path):
    path = write_manifest(tmp_path)
    out = tmp_path / "split.jsonl"
    res = runner.invoke(app, ["data", "split", str(path), "--target", "CT,Lung,Classification",
                              "--config", "related", "--out", str(out)])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "no training triplet is related" in lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "img.png"]


def test_bad_data_file_is_one_error_line(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    res = runner.invoke(app, ["data", "validate", str(f)])
    assert res.exit_code == 2
    assert res.output.count("error:") == 1 and "the file is empty" in res.output and "Traceback" not in res.output


def test_store_info(tmp_path):
    z = np.arange(12, dtype=np.float32).reshape(4, 3)
    EmbeddingStore.from_arrays(tmp_path / "s.h5", list("abcd"), {"M": ["CT", "CT", "MRI", "MRI"]},
                               {("7", "last"): z},
                               answers={"pred": np.array([0, 1, 0, 1]), "correct": np.array([1, 1, 0, 1])},
                               provenance={"checkpoint": "/x/y"}).close()
    res = runner.invoke(app, ["store", "info", str(tmp_path / "s.h5"), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["n_samples"] == 4 and info["n_done"] == 4
    assert info["features"] == [{"layer": "7", "pool": "last", "dim": 3}]
    assert info["accuracy"] == 0.75 and info["provenance"]["checkpoint"] == "/x/y"
    res = runner.invoke(app, ["store", "info", str(tmp_path / "nope.h5")])
    assert res.exit_code == 2 and "no such store" in res.output


def test_split_to_a_path_not_ending_in_jsonl_is_refused_before_anything_is_written(tmp_path):
    # matprobe reads a manifest's format from its suffix: JSONL written under related.csv could
    # not be read back (a user's `data validate related.csv` then failed on unknown columns)
    path = write_manifest(tmp_path)
    for name in ("related.csv", "related.json", "related"):
        out = tmp_path / name
        res = runner.invoke(app, ["data", "split", str(path), "--target", "X-ray,Chest,Classification",
                                  "--config", "related", "--out", str(out)])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and ".jsonl" in lines[0] and name in lines[0]
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "img.png"]


def test_quiet_silences_transformers_loading_bar_too(monkeypatch):
    """`matprobe -q extract` still drew transformers' "Loading weights" bar (a README-only study), and
    off a terminal its carriage returns went into the log (another)."""
    import sys

    import transformers

    from matprobe.extract.checkpoints import quiet_loading
    from matprobe.progress import set_quiet

    logging = transformers.utils.logging
    try:
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
        logging.enable_progress_bar()
        quiet_loading()
        assert logging.is_progress_bar_enabled()  # on a terminal, not quiet: the bar stays
        set_quiet(True)
        quiet_loading()
        assert not logging.is_progress_bar_enabled()
        set_quiet(False)
        logging.enable_progress_bar()
        monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
        quiet_loading()
        assert not logging.is_progress_bar_enabled()  # off a terminal: no bar
    finally:
        set_quiet(False)
        logging.enable_progress_bar()
