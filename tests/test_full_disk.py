"""Issue 15: a full disk (a file-size limit, `ulimit -f`) in the middle of every writing command.

Each command runs as the user runs it (`python -m matprobe ...`) in a subprocess whose
RLIMIT_FSIZE is below the size of what it writes, so a write fails part-way. It must end
with exit code 2 and exactly one `error:` line naming the output and the fix (progress
lines may come before it), no traceback, no death by a signal, no half-written output and
no temporary or lock file; the stores it read (or was finishing) must be intact.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.store import EmbeddingStore

torch.set_num_threads(1)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run_limited(args: list[str], limit: int, cwd: Path | None = None) -> subprocess.CompletedProcess:
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="200", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "matprobe", *args], capture_output=True, text=True, env=env,
                          preexec_fn=apply, timeout=300, cwd=cwd)


def _assert_one_error_line(res: subprocess.CompletedProcess, names: Path) -> str:
    """Exit 2 (not a signal), no traceback, exactly one `error:` line; it names `names` and the fix."""
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert not any("error" in line.lower() for line in res.stderr.splitlines() if not line.startswith("error:")), \
        res.stderr
    line = errors[0]
    assert f"{names}: the file-size limit was reached (ulimit -f); raise it (ulimit -f unlimited)" in line, line
    assert "nothing finished was damaged" in line, line
    return line


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _stray(folder: Path) -> list[str]:
    """Temporary (.x.tmp, .x.tmp folders) and lock files (.x.lock) anywhere under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*")
                  if p.name.endswith((".tmp", ".lock")) or ".tmp" in p.name or p.is_dir())


def _store_content(path: Path) -> tuple:
    with EmbeddingStore.open(path) as st:
        feats = {k: st.read(*k) for k in st.feature_keys()}
        return st.content_id, st.finalized, st.done.copy(), feats


def _same_content(a: tuple, b: tuple) -> None:
    assert a[0] == b[0] and a[1] == b[1]
    np.testing.assert_array_equal(a[2], b[2])
    assert a[3].keys() == b[3].keys()
    for k in a[3]:
        np.testing.assert_array_equal(a[3][k], b[3][k])


def _small_store(path: Path, n: int = 80, dim: int = 4) -> Path:
    rng = np.random.default_rng(0)
    m = np.arange(n) % 2
    z = (rng.standard_normal((n, dim)) + m[:, None]).astype(np.float32)
    labels = {"M": [f"m{v}" for v in m], "A": [f"a{v}" for v in (np.arange(n) // 2) % 2]}
    EmbeddingStore.from_arrays(path, [f"s{i:03d}" for i in range(n)], labels, {("0", "last"): z}).close()
    return path


# ---------------------------------------------------------------------- extract and finalize

def _extract_args(ckpt: Path, manifest: Path, out: Path) -> list[str]:
    return ["extract", "--ckpt", str(ckpt), "--data", str(manifest), "--out", str(out), "--layers", "0,-1",
            "--pool", "last,mean", "--batch-size", "3"]


def test_extract_under_a_file_size_limit_leaves_no_store(tiny_ckpts, make_tiny_manifest, tmp_path):
    manifest = make_tiny_manifest(tmp_path / "data", n=6)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "z.h5"
    res = _run_limited(_extract_args(tiny_ckpts["llava"], manifest, out), limit=8_000)
    _assert_one_error_line(res, out)
    assert list(work.iterdir()) == []  # no store, no temporary, no lock file


def test_finalize_under_a_file_size_limit_keeps_the_finished_store(tiny_ckpts, make_tiny_manifest, tmp_path,
                                                                   monkeypatch):
    manifest = make_tiny_manifest(tmp_path / "data", n=6)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "z.h5"
    args = _extract_args(tiny_ckpts["llava"], manifest, out)
    # every row done, not yet repacked: what a run killed between its last append and finalize leaves
    with monkeypatch.context() as m:
        m.setattr(EmbeddingStore, "finalize", lambda self, compression_level=1: self)
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
    before = _store_content(out)
    assert before[1] is False and before[2].all()
    size = out.stat().st_size
    # the resume has nothing to compute and goes straight to finalize, which writes a new file
    res = _run_limited(args, limit=size // 4)
    _assert_one_error_line(res, out)
    assert [p.name for p in work.iterdir()] == ["z.h5"]
    _same_content(_store_content(out), before)
    # without the limit the same command finishes it, with the same rows
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    after = _store_content(out)
    assert after[1] is True and after[0] == before[0]
    for k in before[3]:
        np.testing.assert_array_equal(after[3][k], before[3][k])


def test_extract_overwrite_under_a_file_size_limit_keeps_the_old_store(tiny_ckpts, make_tiny_manifest, tmp_path):
    manifest = make_tiny_manifest(tmp_path / "data", n=6)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "z.h5"
    args = _extract_args(tiny_ckpts["llava"], manifest, out)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    before, finished_bytes = _store_content(out), out.read_bytes()
    # the new store is written under a temporary name and fails there; the finished one stays
    res = _run_limited(args + ["--overwrite"], limit=out.stat().st_size // 4)
    _assert_one_error_line(res, out)
    assert [p.name for p in work.iterdir()] == ["z.h5"]
    assert out.read_bytes() == finished_bytes
    _same_content(_store_content(out), before)


# ---------------------------------------------------------------------- sweep and mi

@pytest.mark.parametrize("pointwise", [True, False])
def test_sweep_under_a_file_size_limit_writes_nothing_and_keeps_the_store(tmp_path, pointwise):
    store = _small_store(tmp_path / "s.h5")
    before = _store_content(store)
    store_bytes = store.read_bytes()
    out = tmp_path / "sweep.csv"
    args = ["sweep", str(store), "--out", str(out), "--factors", "M,A", "--seeds", "1", "--folds", "2",
            "--pca", "0", "--pointwise" if pointwise else "--no-pointwise"]
    res = _run_limited(args, limit=600)
    line = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    if pointwise:  # the first file past the limit is the cell's per-sample terms (written before its row)
        folder = out.parent / f"{out.name}.pointwise"
        assert line and f"error: {folder}/" in line[0], res.stderr[-3000:]
        _assert_one_error_line(res, folder / line[0].split(f"{folder}/")[1].split(":")[0])
    else:
        _assert_one_error_line(res, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"], _stray(tmp_path)
    assert store.read_bytes() == store_bytes
    _same_content(_store_content(store), before)


def test_mi_out_under_a_file_size_limit_writes_nothing_and_keeps_the_store(tmp_path):
    store = _small_store(tmp_path / "s.h5")
    store_bytes = store.read_bytes()
    out = tmp_path / "mi.json"
    res = _run_limited(["mi", str(store), "--layer", "0", "--factors", "M,A", "--seeds", "1", "--folds", "2",
                        "--pca", "0", "--out", str(out)], limit=512)
    _assert_one_error_line(res, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"], _stray(tmp_path)
    assert store.read_bytes() == store_bytes


# ---------------------------------------------------------------------- report

@pytest.mark.parametrize("limit", [4_000, 40_000])
def test_report_under_a_file_size_limit_keeps_the_previous_report(quick_demo, tmp_path, limit):
    run = tmp_path / "demo"
    shutil.copytree(quick_demo, run, symlinks=True)
    before = _snapshot(run)
    res = _run_limited(["report", str(run)], limit=limit)
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    line = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert line, res.stderr
    written = Path(line[0].split("error: ", 1)[1].split(": the file-size limit", 1)[0])
    assert written.is_relative_to(run) and before[str(written.relative_to(run))], line
    _assert_one_error_line(res, written)
    assert _stray(run) == []
    after = _snapshot(run)
    assert after.keys() == before.keys()
    changed = [k for k in before if after[k] != before[k]]
    assert changed == [], changed  # every file is the old one or rewritten whole (reports are deterministic)
