"""A sweep table holds one dataset: stores given together or added to its --out one call at a time
are checked against each other, answers (the `label` factor) included; `--bits` notes say bits as
`mi --bits` does; a sweep whose every cell failed exits 2 (the table still written)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.errors import StoreError
from matprobe.mi.chain import run_store
from matprobe.mi.sweep import run_sweep
from matprobe.store import EmbeddingStore

torch.set_num_threads(1)
FAST = {"penalties": (1e-4, 1e-2), "max_iter": 20}


def _store(path, n=240, drop=0, relabel=0, seed=0, modality=None):
    rng = np.random.default_rng(seed)
    m = np.arange(n) % 2
    y = (np.arange(n) // 2) % 2
    if relabel:
        y = y.copy()
        y[:relabel] = 1 - y[:relabel]
    z = rng.normal(size=(n, 3)).astype("float32")
    z[:, 0] += 12.0 * m  # M read off Z: its term sits at its cap, whose note names H(Y)
    z[:, 1] += 1.0 * y
    keep = slice(drop, n)
    labels = {"M": np.array(modality or ["CT", "MRI"])[m][keep], "Y": np.array(["no", "yes"])[y][keep]}
    EmbeddingStore.from_arrays(path, [f"q{i}" for i in range(n)][keep], labels, {("1", "last"): z[keep]},
                               provenance={"checkpoint": "/models/ckpt"}, overwrite=True).close()
    return path


def test_stores_whose_answers_differ_are_refused_together(tmp_path):
    a, b = _store(tmp_path / "a.h5"), _store(tmp_path / "b.h5", relabel=7)
    with EmbeddingStore.open(a) as sa, EmbeddingStore.open(b) as sb:
        assert sa.fingerprint == sb.fingerprint  # ids and M, A, T alike: the answers differ only
    with pytest.raises(StoreError, match=r"b\.h5 comes from another dataset than .*a\.h5 \(the same ids, 7 of them "
                                         r"labelled differently"):
        run_sweep([a, b], tmp_path / "t.csv", factors=("M", "Y"), seeds=1, folds=2, pca=None, estimator_kwargs=FAST)
    assert not (tmp_path / "t.csv").exists()


def test_a_store_of_another_dataset_added_to_a_table_later_is_refused(tmp_path):
    a = _store(tmp_path / "a.h5")
    out = tmp_path / "t.csv"
    first = run_sweep([a], out, factors=("M", "Y"), seeds=1, folds=2, pca=None, estimator_kwargs=FAST).table
    for other, detail in ((_store(tmp_path / "dropped.h5", drop=29, seed=1), "29 of its ids missing"),
                          (_store(tmp_path / "relabelled.h5", relabel=5, seed=2), "5 of them labelled differently")):
        with pytest.raises(StoreError, match=rf"comes from another dataset than .*a\.h5 \(a store of .*t\.csv\) "
                                             rf"\(.*{detail}.*another --out"):
            run_sweep([other], out, factors=("M", "Y"), seeds=1, folds=2, pca=None, estimator_kwargs=FAST)
    assert len(pd.read_csv(out)) == len(first)  # as the first call left it
    # a store of the same dataset joins the table
    same = _store(tmp_path / "same.h5", seed=3)
    table = run_sweep([same], out, factors=("M", "Y"), seeds=1, folds=2, pca=None, estimator_kwargs=FAST).table
    assert set(table["store"]) == {str(a), str(same)}


def test_bits_notes_are_in_bits_as_mi_writes_them(tmp_path):
    """Near-saturated I(Z;M): the note names H(Y) = x in the table's unit, the value `mi --bits` gives."""
    a = _store(tmp_path / "a.h5")
    table = run_sweep([a], tmp_path / "t.csv", factors=("M", "Y"), seeds=1, folds=2, pca=None, unit="bits",
                      estimator_kwargs=FAST).table
    res, _ = run_store(a, ["M", "Y"], "1", "last", seeds=1, folds=2, pca=None, unit="bits", **FAST)
    e = res.estimates("probe")[0].estimate
    row = table[table["term"] == "I(Z;M)"].iloc[0]
    assert row["estimate"] == pytest.approx(e.value, rel=1e-12)
    assert "nats" not in row["note"] and f"H(Y) = {np.log2(2):.4f} bits" in row["note"], row["note"]


def test_a_sweep_whose_every_cell_failed_exits_2_and_keeps_its_table(tmp_path):
    """One modality of one row: every cell fails at 3 folds (said per cell); `mi` exits 2 on it too."""
    n = 60
    modality = ["CT", "MRI"]
    path = tmp_path / "rare.h5"
    _store(path, n=n, modality=modality)
    with EmbeddingStore.open(path) as st:
        ids, z = [str(i) for i in st.ids], st.read("1", "last")
    labels = {"M": np.array(["PET"] + ["CT", "MRI"] * ((n - 1) // 2) + ["CT"] * ((n - 1) % 2)),
              "Y": np.array(["no", "yes"] * (n // 2))}
    EmbeddingStore.from_arrays(path, ids, labels, {("1", "last"): z}, overwrite=True).close()
    out = tmp_path / "t.csv"
    res = CliRunner().invoke(app, ["sweep", str(path), "--factors", "M,Y", "--seeds", "1", "--folds", "3",
                                   "--out", str(out)])
    said = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "warning: 1 of 1 cells failed" in said and "error: every one of the 1 cells failed" in said, said
    assert out.is_file() and pd.read_csv(out)["flags"].str.contains("failed").all()


def test_a_store_named_twice_is_one_store_and_the_footer_counts_the_whole_table(tmp_path, monkeypatch):
    """`sweep a.h5 ./a.h5` estimated and counted its cells once per name; a resume that added a store
    said only its own cells of a table holding more."""
    a = _store(tmp_path / "a.h5")
    b = _store(tmp_path / "b.h5", seed=1)
    monkeypatch.chdir(tmp_path)
    res = run_sweep([a, "./a.h5", str(a)], tmp_path / "t.csv", factors=("M", "Y"), seeds=1, folds=2, pca=None)
    assert (res.n_cells, res.n_computed) == (1, 1) and len(res.table) == 2  # one cell, two terms
    out = CliRunner().invoke(app, ["sweep", str(b), "--factors", "M,Y", "--seeds", "1", "--folds", "2", "--pca", "0",
                                   "--out", str(tmp_path / "t.csv")])
    said = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    assert "1 cells x 2 terms (1 computed here, 0 resumed)" in said
    assert "the table holds 2 cells, 1 of them of stores not given this time" in said, said


def test_a_list_of_estimators_is_refused_naming_the_one_a_sweep_takes(tmp_path):
    a = _store(tmp_path / "a.h5")
    out = CliRunner().invoke(app, ["sweep", str(a), "--estimator", "probe,ksg", "--out", str(tmp_path / "t.csv")])
    said = " ".join(out.output.split())
    assert out.exit_code == 2 and "--estimator probe,ksg: a sweep takes one estimator (`mi` takes a list)" in said, said
    assert not (tmp_path / "t.csv").exists()
