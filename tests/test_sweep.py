"""Layer sweeps: values equal the chain estimator's, resume recomputes nothing finished,
process-parallel and 2-rank torchrun sweeps give the one-process table, bad input is one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from matprobe.errors import EstimationError, StoreError
from matprobe.mi import chain_terms
from matprobe.mi import sweep as sweep_mod
from matprobe.mi.groundtruth import chain_task
from matprobe.mi.sweep import read_pointwise, run_sweep
from matprobe.store import EmbeddingStore

torch.set_num_threads(1)

FAST = {"penalties": (1e-4, 1e-2), "max_iter": 20}
VALUE_COLS = ["checkpoint", "layer", "pool", "term", "target", "given", "estimator", "estimate", "ci_low",
              "ci_high", "ci_level", "unit", "n", "h_upper", "clipped", "degenerate", "note", "settings"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two checkpoints' stores on the same 300 samples: layers 0, 1 (pools last, image)."""
    root = tmp_path_factory.mktemp("sweep")
    task = chain_task(sizes=(2, 3), separations=(1.0, 1.0), d=4, signal_dim=4, names=("M", "A"))
    z, f = task.sample(300, seed=1)
    noise = np.random.default_rng(9).standard_normal(z.shape).astype(np.float32)
    ids = [f"s{i:04d}" for i in range(300)]
    labels = {"M": [f"m{v}" for v in f["M"]], "A": [f"a{v}" for v in f["A"]]}
    paths = []
    for k, scale in enumerate((0.5, 2.0)):
        feats = {("0", "last"): z + scale * noise, ("1", "last"): z, ("1", "image"): noise}
        p = root / f"ckpt{k}.h5"
        EmbeddingStore.from_arrays(p, ids, labels, feats, provenance={"checkpoint": f"ckpt{k}"},
                                   overwrite=True).close()
        paths.append(p)
    return root, paths, z, f


def kwargs(**extra):
    return {**dict(factors=("M", "A"), seeds=2, pca=None, estimator_kwargs=FAST), **extra}


def test_sweep_values_equal_chain_terms_and_pointwise(stores, tmp_path):
    root, paths, z, f = stores
    res = run_sweep([paths[0]], tmp_path / "t.csv", layers="1", pools="last", **kwargs())
    tab = res.table
    assert list(tab["term"]) == ["I(Z;M)", "I(Z;A|M)"] and set(tab["layer"]) == {"1"}
    assert (tab["checkpoint"] == "ckpt0").all() and (tab["unit"] == "nats").all() and (tab["n"] == 300).all()
    ref = chain_terms(z, {"M": f["M"], "A": f["A"]}, seeds=2, pca=None, direct=False, difference=False, **FAST)
    # a sweep cell is chain_terms on the cell's features: the same numbers, bit for bit
    for col, attr in (("estimate", "value"), ("ci_low", "ci_low"), ("ci_high", "ci_high"), ("h_upper", "h_upper")):
        np.testing.assert_array_equal(tab[col].to_numpy(), [getattr(e, attr) for _, e in ref.terms["probe"]])
    pw = read_pointwise(tmp_path / "t.csv.pointwise" / sweep_mod.pointwise_name(
        sweep_mod.Cell(str(paths[0]), "ckpt0", "1", "last")))
    assert list(pw["ids"]) == [f"s{i:04d}" for i in range(300)]
    for row in tab.itertuples():
        vals = pw[f"{row.term}/values"]
        assert vals.shape == (2, 300)
        assert float(vals.mean()) == pytest.approx(row.estimate, abs=1e-5)  # not clipped here


@pytest.fixture(scope="module")
def full_table(stores, tmp_path_factory):
    """One uninterrupted serial sweep of checkpoint 0: cells 0/last, 1/image, 1/last."""
    _, paths, _, _ = stores
    return run_sweep([paths[0]], tmp_path_factory.mktemp("full") / "full.csv", **kwargs()).table


def test_resume_recomputes_nothing_finished(stores, full_table, tmp_path, monkeypatch):
    root, paths, _, _ = stores
    assert len(full_table) == 3 * 2  # (0/last, 1/image, 1/last) x 2 terms
    calls = []
    real = sweep_mod.estimate_cell

    def counting(cell, *a, **k):
        calls.append(cell.key)
        return real(cell, *a, **k)

    monkeypatch.setattr(sweep_mod, "estimate_cell", counting)

    class Stop(Exception):
        pass

    def stop_after_one(cell, rows):
        raise Stop  # an interruption right after the first cell was written

    out = tmp_path / "part.csv"
    with pytest.raises(Stop):
        run_sweep([paths[0]], out, on_cell=stop_after_one, **kwargs())
    part = pd.read_csv(out, dtype={"layer": str})
    assert len(part) == 2 and len(calls) == 1  # exactly the finished cell, complete rows only
    first = list(calls)
    calls.clear()
    res = run_sweep([paths[0]], out, **kwargs())
    assert res.n_resumed == 1 and res.n_computed == 2
    assert not set(first) & set(calls) and len(calls) == 2
    pd.testing.assert_frame_equal(res.table[VALUE_COLS], full_table[VALUE_COLS])
    calls.clear()
    res = run_sweep([paths[0]], out, **kwargs())  # everything done: nothing computed
    assert calls == [] and res.n_computed == 0
    pd.testing.assert_frame_equal(res.table[VALUE_COLS], full_table[VALUE_COLS])
    with pytest.raises(EstimationError, match="other settings"):
        run_sweep([paths[0]], out, **kwargs(seed=3))


def test_json_output_resumes(stores, tmp_path):
    _, paths, _, _ = stores
    a = run_sweep([paths[1]], tmp_path / "t.json", layers="0", pools="last", **kwargs(seeds=1))
    b = run_sweep([paths[1]], tmp_path / "t.json", layers="0", pools="last", **kwargs(seeds=1))
    assert b.n_computed == 0 and b.n_resumed == 1
    pd.testing.assert_frame_equal(a.table[VALUE_COLS], b.table[VALUE_COLS], check_dtype=False)


def test_parallel_processes_give_the_serial_table(stores, full_table, tmp_path):
    _, paths, _, _ = stores
    par = run_sweep([paths[0]], tmp_path / "p.csv", jobs=2, **kwargs()).table
    pd.testing.assert_frame_equal(par[VALUE_COLS], full_table[VALUE_COLS])


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed")
def test_torchrun_two_ranks_give_the_one_process_table(stores, tmp_path):
    _, paths, _, _ = stores
    one = run_sweep([paths[0]], tmp_path / "one.csv", factors=("M", "A"), layers="0,1", pools="last",
                    seeds=1, pca=None).table  # the CLI's settings below, in this process
    args = ["sweep", str(paths[0]), "--factors", "M,A", "--layers", "0,1", "--pools", "last",
            "--seeds", "1", "--pca", "0", "--out", str(tmp_path / "two.csv")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "matprobe", *args],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "over 2 ranks" in two.stdout
    shards = sorted((tmp_path / "two.csv.shards").iterdir())
    assert [p.name for p in shards] == ["rank0-of-2.csv", "rank1-of-2.csv"]
    assert [len(pd.read_csv(p)) for p in shards] == [2, 2]  # one cell (2 terms) per rank
    b = sweep_mod.read_table(tmp_path / "two.csv")
    pd.testing.assert_frame_equal(one[VALUE_COLS], b[VALUE_COLS])


def test_bad_input_is_one_clear_line(stores, tmp_path):
    _, paths, z, f = stores
    ids = [f"s{i:04d}" for i in range(300)]
    EmbeddingStore.from_arrays(tmp_path / "nopool.h5", ids, {"M": [f"m{v}" for v in f["M"]], "A": [f"a{v}" for v in f["A"]]},
                               {("1", "last"): z}, overwrite=True).close()
    with pytest.raises(StoreError, match=r"nopool.h5: no features for layer '1', pool 'image'"):
        run_sweep([paths[0], tmp_path / "nopool.h5"], tmp_path / "x.csv", layers="1", pools="last,image", **kwargs())
    other = [f"t{i:04d}" if i < 5 else f"s{i:04d}" for i in range(300)]
    EmbeddingStore.from_arrays(tmp_path / "other.h5", other, {"M": [f"m{v}" for v in f["M"]], "A": [f"a{v}" for v in f["A"]]},
                               {("1", "last"): z}, overwrite=True).close()
    with pytest.raises(StoreError, match=r"another dataset .*5 ids not in"):
        run_sweep([paths[0], tmp_path / "other.h5"], tmp_path / "x.csv", layers="1", pools="last", **kwargs())
    with pytest.raises(StoreError, match=r"layer '7' is not stored; stored layers: 0, 1"):
        run_sweep([paths[0]], tmp_path / "x.csv", layers="7", **kwargs())
    with pytest.raises(StoreError, match="no label column 'T'"):
        run_sweep([paths[0]], tmp_path / "x.csv", **{**kwargs(), "factors": ("M", "T")})
    with pytest.raises(EstimationError, match=r"use a \.csv, \.json or \.parquet"):
        run_sweep([paths[0]], tmp_path / "x.txt", **kwargs())
    assert not (tmp_path / "x.csv").exists()  # nothing half-written

    from typer.testing import CliRunner

    from matprobe.cli import app

    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["sweep", str(paths[0]), "--out", str(tmp_path / "y.csv"),
                                                         "--layers", "9", "--factors", "M,A"])
    assert res.exit_code == 2 and res.output.count("error:") == 1 and "layer '9' is not stored" in res.output


def test_negative_layers_resolve_from_the_model_end(stores, tmp_path):
    _, paths, z, f = stores
    ids = [f"s{i:04d}" for i in range(300)]
    p = tmp_path / "prov.h5"
    EmbeddingStore.from_arrays(p, ids, {"M": [f"m{v}" for v in f["M"]], "A": [f"a{v}" for v in f["A"]]},
                               {("31", "last"): z, ("16", "last"): z}, overwrite=True,
                               provenance={"checkpoint": "x", "num_decoder_layers": 32}).close()
    cells = sweep_mod.build_grid([p], "-1,16", "last", ("M", "A"))
    assert [c.layer for c in cells] == ["31", "16"]


def test_a_signal_that_lands_in_a_finaliser_still_stops_the_sweep(stores, tmp_path, monkeypatch):
    # Python drops an exception raised inside a finaliser ("Exception ignored in ..."): a Ctrl-C or
    # SIGTERM landing there (torch and h5py run finalisers during a cell) used to be lost, and the
    # sweep ran to its end with exit 0 (a loaded suite run saw it). It is acted on between cells.
    import gc
    import signal

    _, paths, _, _ = stores
    real = sweep_mod.estimate_cell
    calls = []

    class SignalInFinaliser:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # Python's handler raises KeyboardInterrupt here

    def estimate_cell(*args, **kw):
        calls.append(args[0])
        if len(calls) == 1:
            SignalInFinaliser()  # collected at once: the signal is delivered inside __del__
            gc.collect()
        return real(*args, **kw)

    monkeypatch.setattr(sweep_mod, "estimate_cell", estimate_cell)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "t.csv"
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(paths, out, layers="0,1", pools="last", **kwargs(pointwise=False))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(calls) == 1  # stopped at the first boundary: no second cell started
    kept = sweep_mod.read_table(out)
    assert sorted(set(zip(kept["checkpoint"], kept["layer"]))) == [("ckpt0", "0")]  # the finished cell is kept


def test_stores_of_adapters_with_one_folder_name_are_all_named_by_their_files(tmp_path):
    """Trainer adapters are all `checkpoint-500` on one base: the sweep named the first store
    "base+checkpoint-500" and the others by their file names (a README-only study); now every store
    whose checkpoint label another shares is named by its file, and distinct ones keep theirs."""
    from matprobe.mi.sweep import build_grid
    from matprobe.store import checkpoint_label, checkpoint_labels

    ids = [f"s{i}" for i in range(40)]
    labels = {"M": ["a", "b"] * 20, "A": ["x"] * 20 + ["y"] * 20}
    feats = {("0", "last"): np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)}
    provs = {"related-s0": {"checkpoint": "/m/base", "adapter": "/runs/related/seed_0/checkpoint-500"},
             "related-s1": {"checkpoint": "/m/base", "adapter": "/runs/related/seed_1/checkpoint-500"},
             "other": {"checkpoint": "/m/other-model"}}
    paths = []
    for name, prov in provs.items():
        p = tmp_path / f"{name}.h5"
        EmbeddingStore.from_arrays(p, ids, labels, feats, provenance=prov).close()
        paths.append(p)
    assert checkpoint_label(provs["related-s0"], paths[0]) == "/m/base+checkpoint-500"
    want = {str(paths[0]): "related-s0", str(paths[1]): "related-s1", str(paths[2]): "/m/other-model"}
    assert checkpoint_labels(dict(zip(map(str, paths), provs.values()))) == want
    cells = build_grid(paths, factors=("M", "A"))
    assert {c.store: c.checkpoint for c in cells} == want
    # two stores with the same file name in two folders: their paths
    twin = tmp_path / "b" / "related-s0.h5"
    twin.parent.mkdir()
    EmbeddingStore.from_arrays(twin, ids, labels, feats, provenance=provs["related-s1"]).close()
    both = checkpoint_labels({str(paths[0]): provs["related-s0"], str(twin): provs["related-s1"]})
    assert both == {str(paths[0]): str(paths[0]), str(twin): str(twin)}
