"""The last store and error paths (issue 23): resume after an unreadable image and under a
file-size limit, flipped bytes, folders where a store or lock belongs, a store without
/done, control characters in ids, from_arrays with NaN, a malformed --term, and mi's note
on rows dropped for missing labels. Each is one `error:` line (or note), nothing half-written."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.errors import DataError, EstimationError, MatprobeError, StoreError
from matprobe.store import EmbeddingStore

torch.set_num_threads(1)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run_limited(args: list[str], limit: int) -> subprocess.CompletedProcess:
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="200", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "matprobe", *args], capture_output=True, text=True, env=env,
                          preexec_fn=apply, timeout=300)


def _one_error_line(output: str) -> str:
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


def _labels(n):
    return {"M": [("CT", "MRI")[i % 2] for i in range(n)], "A": [("Lung", "Brain")[(i // 2) % 2] for i in range(n)]}


def _z(n, dim=4, seed=0):
    m = np.arange(n) % 2
    return (np.random.default_rng(seed).standard_normal((n, dim)) + m[:, None]).astype(np.float32)


MI_ARGS = ["--layer", "0", "--factors", "M,A", "--seeds", "1", "--folds", "2", "--pca", "0"]


# ---------------------------------------------------------------------- extract resume


def test_resume_after_an_unreadable_image_and_under_a_file_size_limit(tiny_ckpts, make_tiny_manifest, tmp_path):
    manifest = make_tiny_manifest(tmp_path / "data", n=20)
    image = tmp_path / "data" / "img" / "10.png"
    good = image.read_bytes()
    image.write_bytes(b"not an image")
    work = tmp_path / "work"
    work.mkdir()
    out = work / "z.h5"
    args = ["extract", "--ckpt", str(tiny_ckpts["llava"]), "--data", str(manifest), "--out", str(out),
            "--layers", "0,-1", "--pool", "last,mean", "--batch-size", "4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    line = _one_error_line(res.output)
    assert "s010" in line and "8 of 20 rows are finished" in line and "rerun the same command to resume" in line
    with EmbeddingStore.open(out) as st:
        assert int(st.done.sum()) == 8 and not st.finalized
    image.write_bytes(good)  # the fix: the record of an unfinished row changed, finished rows did not

    # resuming under a file-size limit below the store: refused before any write
    before = out.read_bytes()
    res = _run_limited(args, limit=len(before) // 2)
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    line = _one_error_line(res.stderr)
    assert line.startswith(f"error: {out}: the file-size limit was reached (ulimit -f); raise it"), line
    assert "appended to the store in place; nothing was written" in line and "temporary name" not in line
    assert "--overwrite" not in line
    assert out.read_bytes() == before
    assert sorted(p.name for p in work.iterdir()) == ["z.h5"]  # no lock or temporary file left

    # the same command, unlimited, resumes without --overwrite and finishes the store
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "12 samples to do (8 already done)" in res.output
    with EmbeddingStore.open(out) as st:
        assert st.done.all() and st.finalized


def test_a_finished_row_whose_record_changed_still_needs_overwrite(tmp_path):
    import pandas as pd

    from matprobe.provenance import check_records_unchanged, record_digests

    frame = pd.DataFrame({"id": ["a", "b", "c"], "question": ["q1", "q2", "q3"]})
    st = EmbeddingStore.create(tmp_path / "s.h5", frame, {"source": "t"}, {("0", "last"): 2})
    st.append([0], {("0", "last"): np.ones((1, 2))})
    changed = frame.assign(question=["q1", "q2 new", "q3"])  # an unfinished row: updated, accepted
    check_records_unchanged(st, changed, "data.jsonl", update=True)
    assert st.record_digests()[1] == record_digests(changed)[1]
    finished = changed.assign(question=["q1 new", "q2 new", "q3"])  # a finished row: refused
    with pytest.raises(StoreError, match="1 record.*changed.*id 'a'.*--overwrite"):
        check_records_unchanged(st, finished, "data.jsonl", update=True)
    st.close()


# ---------------------------------------------------------------------- flipped bytes


def _flip(path: Path, offset: int, n: int = 8) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = bytearray(fh.read(n))
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def test_flipped_bytes_in_an_unfinished_store_are_caught_by_the_row_digests(tmp_path):
    n = 80
    path = tmp_path / "s.h5"
    import pandas as pd

    lab = _labels(n)
    frame = pd.DataFrame({"id": [f"s{i:03d}" for i in range(n)], "modality": lab["M"], "anatomy": lab["A"]})
    st = EmbeddingStore.create(path, frame, {"source": "t"}, {("0", "last"): 4}, n_options=2)
    answers = {"pred": np.arange(n) % 2, "correct": np.ones(n, np.int8),
               "probs": np.full((n, 2), 0.5)}  # float64 probs, stored as float32
    st.append(np.arange(n), {("0", "last"): _z(n)}, answers=answers)
    st.close()  # every row done, not finalized: what a run killed before finalize leaves
    res = CliRunner().invoke(app, ["mi", str(path), *MI_ARGS])
    assert res.exit_code == 0, res.output  # intact: the digests verify
    with h5py.File(path, "r") as h5:
        ds = h5["features/0/last"]
        assert ds.compression is None
        offset = ds.id.get_chunk_info(0).byte_offset + 17 * 4 * 4  # row 17
    _flip(path, offset, 4)
    res = CliRunner().invoke(app, ["mi", str(path), *MI_ARGS])
    assert res.exit_code == 2
    line = _one_error_line(res.output)
    assert f"{path}: store corrupt, re-extract: 1 of 80 finished rows differ" in line and "'s017'" in line
    with EmbeddingStore.open(path, mode="a") as st, pytest.raises(StoreError, match="store corrupt"):
        st.finalize()  # never repacked with the bad row


def test_flipped_bytes_in_a_compressed_chunk_are_named(tmp_path):
    n = 300
    path = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)], _labels(n), {("0", "last"): _z(n, 16)}).close()
    with h5py.File(path, "r") as h5:
        info = h5["features/0/last"].id.get_chunk_info(0)
    _flip(path, info.byte_offset + info.size // 2)
    res = CliRunner().invoke(app, ["mi", str(path), *MI_ARGS])
    assert res.exit_code == 2
    line = _one_error_line(res.output)
    assert line.startswith(f"error: {path}: store corrupt, re-extract: a compressed chunk of features 0/last"), line


# ---------------------------------------------------------------------- damaged or misplaced stores


def test_a_folder_where_a_store_belongs_is_not_called_corrupt(tmp_path):
    folder = tmp_path / "s.h5"
    folder.mkdir()
    for args in (["store", "info", str(folder)], ["mi", str(folder), *MI_ARGS]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2
        line = _one_error_line(res.output)
        assert f"{folder} is a folder, not a store file" in line
        assert "corrupt" not in line and "--overwrite" not in line


def test_a_file_that_is_no_store_is_named_so_and_never_overwritten(tiny_ckpts, make_tiny_manifest, tmp_path):
    """A CSV given where a store belongs was called "corrupt or not a store: re-extract it with
    --overwrite", and `extract --overwrite` then replaced the CSV with a store. It is named not a
    store, with no --overwrite advice, and --overwrite leaves it as it was; a damaged store (its HDF5
    signature kept, the rest cut) still gets the --overwrite fix."""
    manifest = make_tiny_manifest(tmp_path / "data", n=4)
    other = tmp_path / "items.csv"
    other.write_text("id,question\nq1,Which?\n")
    before = other.read_bytes()
    for args in (["store", "info", str(other)], ["mi", str(other), *MI_ARGS],
                 ["extract", "--ckpt", str(tiny_ckpts["llava"]), "--data", str(manifest), "--out", str(other),
                  "--layers", "1"],
                 ["extract", "--ckpt", str(tiny_ckpts["llava"]), "--data", str(manifest), "--out", str(other),
                  "--layers", "1", "--overwrite"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, res.output
        line = _one_error_line(res.output)
        assert "not a store (not an HDF5 file)" in line and "corrupt" not in line, line
        assert ("--overwrite replaces stores only" in line) == ("--overwrite" in args), line
        assert other.read_bytes() == before
    damaged = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(damaged, ["a", "b"], {"M": ["x", "y"]}, {("0", "last"): np.ones((2, 2))}).close()
    damaged.write_bytes(damaged.read_bytes()[:600])
    res = CliRunner().invoke(app, ["store", "info", str(damaged)])
    line = _one_error_line(res.output)
    assert "cannot open as HDF5" in line and "re-extract it with --overwrite" in line, line


def test_a_folder_where_the_lock_belongs_is_named(tmp_path):
    path = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(path, ["a", "b"], {"M": ["x", "y"]}, {("0", "last"): np.ones((2, 2))}).close()
    (tmp_path / ".s.h5.lock").mkdir()
    with pytest.raises(MatprobeError, match=r"\.s\.h5\.lock is a folder where the lock file of .*s\.h5 belongs"):
        EmbeddingStore.open(path, mode="a")
    with pytest.raises(MatprobeError, match="is a folder where the lock file") as err:
        EmbeddingStore.from_arrays(path, ["a"], {"M": ["x"]}, {("0", "last"): np.ones((1, 2))}, overwrite=True)
    assert "corrupt" not in str(err.value)


def test_a_store_without_done_is_named_damaged_not_a_bug(tmp_path):
    path = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(40)], _labels(40), {("0", "last"): _z(40)}).close()
    with h5py.File(path, "r+") as h5:
        del h5["done"]
    res = CliRunner().invoke(app, ["mi", str(path), *MI_ARGS])
    assert res.exit_code == 2
    line = _one_error_line(res.output)
    assert f"{path}: not a complete matprobe store (/done missing)" in line and "bug" not in line


def test_from_arrays_with_nan_leaves_no_store_or_lock(tmp_path, monkeypatch):
    z = _z(10)
    z[3, 1] = np.nan
    with pytest.raises(StoreError, match=r"NaN or Inf \(rows \[3\]\); nothing was written"):
        EmbeddingStore.from_arrays(tmp_path / "s.h5", [f"s{i}" for i in range(10)], _labels(10), {("0", "last"): z})
    with pytest.raises(StoreError, match=r"answers 'pred' have 3 rows for 10 ids; nothing was written"):
        EmbeddingStore.from_arrays(tmp_path / "t.h5", [f"s{i}" for i in range(10)], _labels(10),
                                   {("0", "last"): _z(10)}, answers={"pred": np.zeros(3)})
    # a failure after the store was created (here: an append that breaks) removes it too
    def broken_append(self, *args, **kwargs):
        raise OSError("disk went away")

    monkeypatch.setattr(EmbeddingStore, "append", broken_append)
    with pytest.raises(OSError, match="disk went away"):
        EmbeddingStore.from_arrays(tmp_path / "u.h5", [f"s{i}" for i in range(10)], _labels(10),
                                   {("0", "last"): _z(10)})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- inputs


def test_nul_byte_in_an_id_is_refused_by_data_validate(make_tiny_manifest, tmp_path):
    from matprobe.data import load_dataset

    manifest = make_tiny_manifest(tmp_path, n=4)
    lines = manifest.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["id"] = "s0\x0002"
    lines[2] = json.dumps(rec)
    manifest.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["data", "validate", str(manifest)])
    assert res.exit_code != 0
    assert "record 3" in res.output and "contains a control character ('\\x00' at position 2)" in res.output
    with pytest.raises(DataError, match="control character"):
        load_dataset(manifest)


def test_term_with_two_bars_is_a_parse_error(tmp_path):
    from matprobe.mi.compare import compare_stores, parse_term

    with pytest.raises(EstimationError, match=r"--term 'T\|\|M': one '\|' separates the target"):
        parse_term("T||M")
    assert parse_term("I(Z;T|M,A)") == ("T", ["M", "A"])
    path = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(40)], _labels(40), {("0", "last"): _z(40)}).close()
    with pytest.raises(EstimationError, match="one '\\|' separates"):
        compare_stores(path, path, "T||M", layer="0", pool="last", layer_b="0")


def test_mi_notes_rows_dropped_for_missing_labels(tmp_path):
    n = 320
    labels = _labels(n)
    labels["A"] = [None if i % 10 == 3 else a for i, a in enumerate(labels["A"])]  # 32 unlabelled
    path = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)], labels, {("0", "last"): _z(n)}).close()
    res = CliRunner().invoke(app, ["mi", str(path), *MI_ARGS, "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    note = "288 of 320 rows used: 32 have no label for M/A (unlabelled per factor: A 32)"
    assert note in doc["footnotes"]


def test_an_undecompressable_chunk_outside_store_read_is_named_too():
    from matprobe.failures import user_message

    exc = OSError("Can't synchronously read data (filter returned failure during read)")
    assert user_message(exc).startswith("an HDF5 file: store corrupt, re-extract: compressed data does not decompress")
    assert "check the path" not in user_message(exc)
