"""An item seen in several rows (an image with several questions, identical rows) stays in one
fold (issue 22, forty-fifth session).

An outside study repeated 500 items 4 times: the default estimate read a null at log 2 with its
lower end at 0.5 nats (a false "at least"), the copies of each held-out row being among the fitting
rows. Truths here by Monte Carlo of the exact posterior, independent of matprobe.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import matprobe as mp
from matprobe.mi.prep import grouped_folds, identical_rows, stratified_folds
from matprobe.mi.probe import _split_by_cell, _split_by_group

torch.set_num_threads(1)


def _copies(draw: int, separation: float, noise: float, items: int = 500, copies: int = 4, d: int = 64, k: int = 3):
    """`items` Gaussian items (class means at `separation` x N(0, I) per coordinate), each seen
    `copies` times with N(0, noise^2) added; rows shuffled. Returns (z, y, item, class means)."""
    rng = np.random.default_rng(draw)
    y_item = rng.integers(0, k, items)
    means = rng.standard_normal((k, d)) * separation
    x_item = means[y_item] + rng.standard_normal((items, d))
    item = np.repeat(np.arange(items), copies)
    z = x_item[item] + noise * rng.standard_normal((items * copies, d))
    perm = rng.permutation(len(z))
    return z[perm].astype(np.float32), y_item[item][perm], item[perm], means


def _copies_store(path, draw: int, column: str, distinct_images: bool = False):
    """A store of 300 null items seen 3 times (modality independent of Z), the item named in the
    sample column `column` (e.g. image, patient); with `distinct_images` an image column naming
    every row's image apart as well."""
    from matprobe.store import EmbeddingStore

    z, y, item, _ = _copies(draw, separation=0.0, noise=0.01, items=300, copies=3, d=16, k=2)
    columns = {"modality": np.array(["CT", "MRI"])[y], column: np.array([f"i{i}" for i in item])}
    if distinct_images:
        columns["image"] = np.array([f"row{i}.png" for i in range(len(y))])
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(len(y))], columns, {("4", "last"): z}).close()
    return path


def _truth(means, n_mc: int = 200_000) -> tuple[float, float]:
    """I(Z;Y) of one row (uniform classes, identity covariance): (value, Monte Carlo s.e.)."""
    rng = np.random.default_rng(99)
    y = rng.integers(0, len(means), n_mc)
    z = means[y] + rng.standard_normal((n_mc, means.shape[1]))
    logits = z @ means.T - 0.5 * (means ** 2).sum(1)
    loss = logsumexp(logits, axis=1) - logits[np.arange(n_mc), y]
    return float(np.log(len(means)) - loss.mean()), float(loss.std() / np.sqrt(n_mc))


@pytest.mark.parametrize("seed", range(6))
def test_grouped_folds_keep_groups_and_equal_the_plain_folds_without_groups(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    strata = rng.integers(0, int(rng.integers(1, 5)), n)
    k = int(rng.integers(2, 6))
    same = grouped_folds(strata, np.arange(n), k, np.random.default_rng([seed, 7919]))
    np.testing.assert_array_equal(same, stratified_folds(strata, k, np.random.default_rng([seed, 7919])))
    groups = rng.integers(0, n // 3, n)
    fold = grouped_folds(strata, groups, k, np.random.default_rng(seed))
    for g in np.unique(groups):
        assert len(set(fold[groups == g].tolist())) == 1
    # the splits inside a fold: the same draws as by cell where every group is one row
    cell = rng.integers(0, 3, n)
    by_cell = _split_by_cell([np.flatnonzero(cell == c) for c in range(3)], n, np.random.default_rng(1), lambda m: m // 5)
    np.testing.assert_array_equal(_split_by_group(cell, np.arange(n), np.random.default_rng(1), lambda m: m // 5), by_cell)
    split = _split_by_group(cell, groups, np.random.default_rng(2), lambda m: (m + 1) // 2)
    for g in np.unique(groups):
        assert len(set(split[groups == g].tolist())) == 1


def test_identical_rows_are_found_byte_for_byte():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((40, 5)).astype(np.float32)
    assert identical_rows(z) is None
    z[[7, 19, 33]] = z[3]
    z[25] = z[11]
    z[30] = np.nextafter(z[11], np.float32(9))  # one ulp apart: not identical
    got = identical_rows(z)
    want = np.array([min(j for j in range(40) if (z[j] == z[i]).all()) for i in range(40)])
    np.testing.assert_array_equal(got, want)
    z[:, 0] = np.round(z[:, 0])  # many rows share the first coordinate, few the whole row
    want = np.array([min(j for j in range(40) if (z[j] == z[i]).all()) for i in range(40)])
    np.testing.assert_array_equal(identical_rows(z), want)
    assert identical_rows(np.ones((6, 3), np.float32)).tolist() == [0] * 6


def test_copies_of_a_null_item_never_read_as_information():
    z, y, item, _ = _copies(0, separation=0.0, noise=0.0, k=2)
    exact = mp.mi(z, {"Y": y}, progress=False).terms["probe"][0][1]  # identical rows: grouped unasked
    assert exact.ci_low <= 0.01 and "identical rows of Z" in exact.note
    z_noisy = z + 0.01 * np.random.default_rng(1).standard_normal(z.shape).astype(np.float32)
    noisy = mp.mi(z_noisy, {"Y": y}, progress=False, groups=item).terms["probe"][0][1]
    assert noisy.ci_low <= 0.01 and "the groups given" in noisy.note
    # the copies straddling the folds (what the grouping prevents): read as information
    leaky = mp.mi(z_noisy, {"Y": y}, progress=False, groups=np.arange(len(y))).terms["probe"][0][1]
    assert leaky.ci_low > 0.3


def test_copies_of_informative_items_cover_the_one_row_truth():
    covered = 0
    for draw in range(3):
        z, y, item, means = _copies(draw, separation=0.12, noise=0.01)
        truth, se = _truth(means)
        e = mp.mi(z, {"Y": y}, progress=False, groups=item, seeds=2).terms["probe"][0][1]
        covered += e.ci_low - 2 * se <= truth <= e.ci_high + 2 * se
        assert "2000 rows share a group with another row (500 groups" in e.note
    assert covered == 3


def test_without_repeats_the_numbers_are_unchanged():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 600)
    z = (rng.standard_normal((600, 16)) + 0.5 * np.eye(16)[y]).astype(np.float32)
    plain = mp.mi(z, {"Y": y}, progress=False, seeds=1).terms["probe"][0][1]
    singletons = mp.mi(z, {"Y": y}, progress=False, seeds=1, groups=np.arange(600)).terms["probe"][0][1]
    assert (plain.value, plain.ci_low, plain.ci_high, plain.note) == \
        (singletons.value, singletons.ci_low, singletons.ci_high, singletons.note)
    assert "share a group" not in plain.note


def test_a_store_whose_images_repeat_is_read_with_its_images_in_one_fold(tmp_path):
    path = _copies_store(tmp_path / "s.h5", 0, "image")
    res = mp.mi(path, "M", progress=False, seeds=1)
    e = res.terms["probe"][0][1]
    assert "rows of one image" in e.note and e.ci_low <= 0.01


def test_the_cli_groups_by_a_sample_column_and_names_a_wrong_one(tmp_path):
    import json

    from typer.testing import CliRunner

    from matprobe.cli import app

    path = _copies_store(tmp_path / "s.h5", 1, "patient")
    runner = CliRunner(env={"COLUMNS": "250"})
    out = tmp_path / "mi.json"
    res = runner.invoke(app, ["mi", str(path), "--factors", "M", "--seeds", "1", "--groups", "patient", "--out", str(out)])
    assert res.exit_code == 0, res.output
    [term] = [t for t in json.loads(out.read_text())["terms"] if t["term"] == "I(Z;M)"]
    assert "900 rows share a group with another row (300 groups of 2 or more, rows of one patient)" in term["note"]
    assert term["ci_low"] <= 0.01
    bad = runner.invoke(app, ["mi", str(path), "--factors", "M", "--seeds", "1", "--groups", "visit"])
    assert bad.exit_code == 2 and "--groups 'visit' is not a sample column" in bad.output and "patient" in bad.output


IDENTICAL_NOTE = ("6 rows share a group with another row (3 groups of 2 or more, identical rows of Z): each group's "
                  "rows are in one fold")


@pytest.mark.parametrize("images, note, why", [
    ("repeat", "", "an image's rows are now kept in one fold"),
    ("distinct", IDENTICAL_NOTE, "identical features of distinct images are now read row by row"),
    ("distinct", "", None),
    ("none", IDENTICAL_NOTE, None),  # no image column: identical rows are still grouped
])
def test_a_run_recomputes_mi_grouped_otherwise_than_mi_groups_now(tmp_path, images, note, why):
    import json

    from matprobe.mi.chain import chain_terms, results_json
    from matprobe.pipeline import PipelineConfig, _mi_settings, _stale_reason
    from matprobe.store import EmbeddingStore

    store, result = tmp_path / "s.h5", tmp_path / "mi.json"
    columns = {"M": list("ababab")}
    if images != "none":
        columns["image"] = (["a.png", "a.png", "b.png", "b.png", "c.png", "c.png"] if images == "repeat"
                            else [f"{i}.png" for i in range(6)])
    EmbeddingStore.from_arrays(store, [f"s{i}" for i in range(6)], columns,
                               {("0", "last"): np.arange(12, dtype=np.float32).reshape(6, 2)}).close()
    with EmbeddingStore.open(store) as st:
        fingerprint = st.content_id
    cfg = PipelineConfig()
    m = np.tile([0, 1], 30)
    [term] = json.loads(json.dumps(results_json(chain_terms(
        np.c_[m + 0.3 * np.random.default_rng(0).standard_normal(60)], {"M": m}, seeds=1, folds=2, pca=None,
        direct=False, difference=False))))["terms"]
    term["note"] = note
    result.write_text(json.dumps({"kind": "matprobe.mi", "store_fingerprint": fingerprint,
                                  "factors": list(cfg.factors), "terms": [term], "settings": _mi_settings(cfg)}))
    assert _stale_reason(str(result), {"store": str(store), "fresh_store": False}, cfg) == why


def test_a_sweep_keeps_an_images_rows_in_one_fold_as_mi_does(tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from matprobe.cli import app

    path = _copies_store(tmp_path / "s.h5", 2, "image")
    out = tmp_path / "sweep.csv"
    res = CliRunner(env={"COLUMNS": "250"}).invoke(
        app, ["sweep", str(path), "--factors", "M", "--layers", "all", "--pools", "last", "--seeds", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    row = pd.read_csv(out).iloc[0]
    assert "900 rows share a group with another row (300 groups of 2 or more, rows of one image)" in row["note"]
    assert row["ci_low"] <= 0.01


def test_where_a_label_cells_rows_are_one_group_the_folds_stay_by_row_and_say_so():
    # class 1's 40 rows are one image (40 questions on it): kept together, every row of the class
    # would be held out with none to fit on; the folds stay by row and the note says why
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(60, int), np.ones(40, int)]
    groups = np.r_[np.repeat(np.arange(30), 2), np.full(40, 99)]
    z = (rng.standard_normal((100, 4)) + y[:, None]).astype(np.float32)
    e = mp.mi(z, {"Y": y}, progress=False, seeds=1, groups=groups).terms["probe"][0][1]
    plain = mp.mi(z, {"Y": y}, progress=False, seeds=1).terms["probe"][0][1]
    assert "1 label cell of several rows would then lie in one fold: the folds are by row" in e.note
    assert (e.value, e.ci_low, e.ci_high) == (plain.value, plain.ci_low, plain.ci_high)


@pytest.mark.parametrize("images, note, recomputed", [
    ("repeat", "", True),
    ("none", "", False),  # nothing to group (the patient column is not the image column): the cell stands
    ("none", IDENTICAL_NOTE, False),  # no image column: identical rows are still grouped, the cell stands
    ("distinct", IDENTICAL_NOTE, True),  # the forty-fifth session grouped identical rows of distinct images
])
def test_a_resumed_sweep_recomputes_cells_grouped_otherwise_than_mi_groups_now(tmp_path, images, note, recomputed):
    import pandas as pd

    from matprobe.mi.sweep import read_table, run_sweep, write_table

    path = _copies_store(tmp_path / "s.h5", 3, "image" if images == "repeat" else "patient",
                         distinct_images=images == "distinct")
    out = tmp_path / "sweep.csv"
    run_sweep([str(path)], out, factors=("M",), seeds=1, progress=False)
    # the table as an earlier grouping wrote it: its note, another estimate
    old = read_table(out)
    old["note"], old["estimate"] = note, -1.0
    write_table(old, out)
    again = run_sweep([str(path)], out, factors=("M",), seeds=1, progress=False)
    row = pd.read_csv(out).iloc[0]
    if recomputed:  # the old row replaced
        assert again.n_resumed == 0 and len(again.table) == 1 and row["estimate"] >= 0
        assert ("rows of one image" in row["note"]) == (images == "repeat")
        assert "identical rows of Z" not in str(row["note"])
    else:
        assert again.n_resumed == 1 and row["estimate"] == -1.0
