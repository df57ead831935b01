"""Issue 22 (twelfth session): a fold plan raises its PCA while the reduction drops label information.

`FoldPlan.settle_reduction` runs the residual test (`mi.reduction_check`) on every term of the
plan before any critic is fitted and raises the PCA x4 (to every coordinate once that reaches
Z's width) while some term is flagged, within `MAX_RAISED_PCA` components and
`RAISE_ROWS_PER_INPUT` rows per critic input in the label cells. The tests hold a raised result to a run at the settled size with raising off (the same
numbers, bit for bit), the steps to the x4 ladder and the stops to their two limits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import matprobe.mi.base as base
from matprobe.mi import chain_terms, make_estimator
from matprobe.mi.base import RAISE_PCA_FACTOR, active_rows
from matprobe.mi.chain import ChainResult, results_json
from matprobe.mi.groundtruth import LatentMixtureTask

torch.set_num_threads(1)
KW = dict(seeds=1, folds=5, direct=False, difference=False)


def _under_noise(seed, **kw):
    # 8 signal dimensions of variance about 1.25 under noise of s.d. 3 on the other 248 (d = 256):
    # PCA-64 keeps noise only
    return LatentMixtureTask(**{**dict(k_classes=4, d=256, signal_dim=8, separation=1.0, noise_scales=3.0,
                                       seed=seed), **kw})


def _term(res, name="I(Z;Y)"):
    return dict(res.terms["probe"])[name]


def _numbers(e):
    return (e.value, e.ci_low, e.ci_high, e.bound, [f for f in e.flags])


@pytest.fixture(scope="module")
def under_noise_sample():
    """d = 256, 4 classes, n = 4,400: 1,100 rows per class, at least 4 per input at every coordinate."""
    task = _under_noise(7)
    z, f = task.sample(4400, seed=1)
    res = chain_terms(z, f, order=["Y"], **KW)
    return task, z, f, _term(res), res


@pytest.fixture(scope="module")
def stopped_at_64():
    """n = 1,800 in 8 classes (225 rows per class; every coordinate would be 257 inputs), and its
    chain at KW: not raised, stopped at 64. Three tests read this one chain (they only read it)."""
    z, f = _under_noise(9, k_classes=8, separation=1.5).sample(1800, seed=0)
    return z, f, chain_terms(z, f, order=["Y"], **KW)


def test_signal_under_the_noise_is_read_at_the_raised_size(under_noise_sample):
    """64 -> 256 = Z's width, so every coordinate; the result is the one `--pca 0` gives, it
    carries no flag and its interval covers the truth (PCA-64: under 20% of it)."""
    task, z, f, e, _ = under_noise_sample
    truth = task.truth(100_000)["I(Z;Y)"][0]
    red = e.diagnostics["reduction"]
    assert red["requested"] == 64 and red["used"] is None and red["stopped"] == ""
    assert [s["pca"] for s in red["steps"]] == [64] and red["steps"][0]["flagged_terms"] == 1
    assert red["steps"][0]["max_z"] > 5
    assert "pca-dropped-signal" not in e.flags
    assert "raised from 64 components to every coordinate" in e.note
    at_size = _term(chain_terms(z, f, order=["Y"], pca=0, raise_pca=False, **KW))
    assert _numbers(e) == _numbers(at_size)
    assert e.ci_low <= truth <= e.ci_high
    kept = _term(chain_terms(z, f, order=["Y"], raise_pca=False, **KW))
    assert kept.value < 0.2 * truth and "pca-dropped-signal" in kept.flags  # what raising replaced


def test_steps_follow_the_ladder_and_stop_where_nothing_is_flagged():
    """d = 768 with noise s.d. 0.05-2.5 (part of the signal under the top 64 components): every
    step but the last flags a term, each is RAISE_PCA_FACTOR x the one before, and the result
    equals a run at the last size."""
    task = _under_noise(8, d=768, k_classes=3, separation=1.5, noise_scales=(0.05, 2.5))
    z, f = task.sample(4000, seed=0)  # 1,333 rows per class: 4 per input at 256 components
    e = _term(chain_terms(z, f, order=["Y"], **KW))
    red = e.diagnostics["reduction"]
    sizes = [s["pca"] for s in red["steps"]]
    assert sizes == [64 * RAISE_PCA_FACTOR**j for j in range(len(sizes))] and len(sizes) >= 2
    assert all(s["flagged_terms"] == 1 for s in red["steps"][:-1]) and red["steps"][-1]["flagged_terms"] == 0
    assert red["used"] == sizes[-1] and red["stopped"] == ""
    assert e.diagnostics["reduction_residual"]["kept"] == sizes[-1]
    at_size = _term(chain_terms(z, f, order=["Y"], pca=sizes[-1], raise_pca=False, **KW))
    assert _numbers(e) == _numbers(at_size)
    assert e.ci_low <= task.truth(100_000)["I(Z;Y)"][0] <= e.ci_high


def test_nothing_is_raised_where_the_kept_components_carry_the_signal():
    task = LatentMixtureTask(k_classes=4, d=256, signal_dim=8, separation=1.0, noise_scales="decay", seed=3)
    z, f = task.sample(2000, seed=3)
    e = _term(chain_terms(z, f, order=["Y"], **KW))
    assert e.diagnostics["reduction"] is None and "raised" not in e.note
    assert _numbers(e) == _numbers(_term(chain_terms(z, f, order=["Y"], raise_pca=False, **KW)))


def test_raising_stops_before_cells_have_fewer_rows_than_inputs(stopped_at_64):
    """n = 1,800 in 8 classes: 225 rows per class, and every coordinate would be 257 inputs. The
    plan keeps 64, says why, and the term keeps its flag and one-sided interval."""
    z, f, res = stopped_at_64
    e = _term(res)
    red = e.diagnostics["reduction"]
    assert red["used"] == 64 and "257 critic inputs would leave label cells" in red["stopped"]
    assert "pca-dropped-signal" in e.flags and e.bound == "lower"
    assert ("matprobe kept the PCA at 64 components: 257 critic inputs would leave label cells holding 5% of the "
            "rows with fewer than 4 rows per input") in e.note
    plan = make_estimator("probe", **{k: v for k, v in KW.items() if k in ("seeds", "folds")}).fold_plan(z, f["Y"])
    record = plan.settle_reduction(z, [(f["Y"], None)])
    assert record.used == 64 and record.steps[0]["flagged_terms"] == 1 and "257 critic inputs" in record.stopped
    assert _numbers(e) == _numbers(_term(chain_terms(z, f, order=["Y"], raise_pca=False, **KW)))


def test_raising_stops_at_the_component_cap(monkeypatch, under_noise_sample):
    monkeypatch.setattr(base, "MAX_RAISED_PCA", 128)
    _, z, f, _, _ = under_noise_sample
    e = _term(chain_terms(z, f, order=["Y"], **KW))
    assert "pca-dropped-signal" in e.flags
    assert "matprobe kept the PCA at 64 components: every coordinate (256) would exceed 128 components" in e.note
    assert e.diagnostics["reduction"]["used"] == 64


def test_half_of_the_coordinates_or_more_means_every_coordinate():
    """d = 512 at n = 20k (8 classes, noise s.d. 0.05-1.5): 4 x 64 = 256 would keep half of Z's
    coordinates, so the plan takes every coordinate (at 256 the test no longer sees what is left:
    RESULTS.md). d = 1,024: 256 first; where a term is still flagged there, every coordinate
    would be 1,025 inputs against 2,500 rows per class, under 4 per input, so it stops."""
    from matprobe.mi.base import FoldPlan, make_plan

    for d, used in ((512, None), (1024, 256)):
        task = LatentMixtureTask(k_classes=8, d=d, signal_dim=8, separation=1.2, noise_scales=(0.05, 1.5), seed=2)
        z, f = task.sample(20_000, seed=0)
        plan: FoldPlan = make_plan(z, f["Y"], 5, 64, True, 0)
        plan.raise_pca = True
        record = plan.settle_reduction(z, [(f["Y"], None)])
        assert record.used == used and record.steps[0]["flagged_terms"] == 1
        if used is None:
            assert [s["pca"] for s in record.steps] == [64] and plan.transformed(z, 0).shape[1] == d
        else:
            assert [s["pca"] for s in record.steps] == [64, 256]
            assert record.steps[1]["flagged_terms"] == 0 or "1025 critic inputs would leave" in record.stopped


def test_a_chain_settles_one_size_on_all_its_terms():
    """A two-factor chain (Y, then its cluster U) under the noise: every term, the direct one too,
    shares the plan's one size, and the first step counts the flagged terms among all of them."""
    task = _under_noise(11, chain=True, components=2, spread=1.0, k_classes=2)
    z, f = task.sample(4400, seed=0)  # 4 (Y, U) cells of 1,100 rows
    res = chain_terms(z, f, order=["Y", "U"], seeds=1, folds=5)
    records = [e.diagnostics["reduction"] for _, e in res.terms["probe"]] + [res.direct["probe"].diagnostics["reduction"]]
    assert all(r == records[0] for r in records) and records[0]["used"] != 64
    assert 1 <= records[0]["steps"][0]["flagged_terms"] <= 3  # I(Z;Y), I(Z;U|Y), I(Z;Y,U)
    at_size = chain_terms(z, f, order=["Y", "U"], seeds=1, folds=5, raise_pca=False,
                          pca=records[0]["used"] or 0)
    for (_, a), (_, b) in zip(res.terms["probe"], at_size.terms["probe"]):
        assert _numbers(a) == _numbers(b)


def test_a_lone_estimate_raises_its_own_plan(under_noise_sample):
    _, z, f, in_chain, _ = under_noise_sample
    est = make_estimator("probe", seeds=1, folds=5)
    e = est.estimate(z, f["Y"])
    assert e.diagnostics["reduction"] == in_chain.diagnostics["reduction"] and e.value == in_chain.value
    assert est.params()["raise_pca"] is True  # recorded with the fitting: results made without it are not reused
    assert make_estimator("probe", raise_pca=False).params()["raise_pca"] is False


def test_the_record_round_trips_through_the_results_document(stopped_at_64):
    res = stopped_at_64[-1]  # not raised: stopped at 64
    assert _term(res).diagnostics["reduction"]["stopped"]
    doc = json.loads(json.dumps(results_json(res)))
    assert doc["terms"][0]["reduction"] == _term(res).diagnostics["reduction"]
    back = ChainResult.from_json(doc)
    assert _term(back).diagnostics["reduction"] == _term(res).diagnostics["reduction"]


@pytest.mark.parametrize("seed", range(3))
def test_active_rows_are_the_strata_with_two_classes(seed):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 6, 300)
    y = np.where(c < 2, 0, rng.integers(0, 3, 300))  # strata 0 and 1 have one class
    want = np.array([len(np.unique(y[c == s])) > 1 for s in c])
    np.testing.assert_array_equal(active_rows(y, c), want)
    assert active_rows(y).all() and not active_rows(np.zeros(5, int)).any()


def test_a_sweep_table_says_the_size_each_cell_was_read_at(tmp_path):
    """Two cells of one store: the signal under the noise (raised to every coordinate: 0, as
    `--pca 0`) and above it (kept at 64). The cells' numbers are chain_terms' own."""
    from matprobe.mi.sweep import run_sweep
    from matprobe.store import EmbeddingStore

    under = _under_noise(7)
    above = LatentMixtureTask(k_classes=4, d=256, signal_dim=8, separation=1.0, noise_scales="decay", seed=7)
    z_under, f = under.sample(4800, seed=1)
    z_above, f_above = above.sample(4800, seed=1)
    # one label column for both cells: per class, as many rows of each task as both have
    counts = [min((f["Y"] == k).sum(), (f_above["Y"] == k).sum()) for k in range(4)]
    keep_rows = np.concatenate([np.flatnonzero(f["Y"] == k)[: counts[k]] for k in range(4)])
    src_rows = np.concatenate([np.flatnonzero(f_above["Y"] == k)[: counts[k]] for k in range(4)])
    z_above_aligned = z_above[src_rows]
    y = f["Y"][keep_rows]
    ids = [f"s{i:05d}" for i in range(len(y))]
    path = tmp_path / "cells.h5"
    EmbeddingStore.from_arrays(path, ids, {"M": [f"m{v}" for v in y]},
                               {("0", "last"): z_under[keep_rows], ("1", "last"): z_above_aligned},
                               provenance={"checkpoint": "c"}, overwrite=True).close()
    table = run_sweep([path], tmp_path / "sweep.csv", factors=("M",), seeds=1, folds=5).table
    got = dict(zip(table["layer"].astype(str), table["pca"]))
    assert got == {"0": 0, "1": 64}
    for layer, z in (("0", z_under[keep_rows]), ("1", z_above_aligned)):
        e = dict(chain_terms(z, {"M": np.array([f"m{v}" for v in y])}, order=["M"], **KW).terms["probe"])["I(Z;M)"]
        row = table[table["layer"].astype(str) == layer].iloc[0]
        assert (row["estimate"], row["ci_low"], row["ci_high"]) == pytest.approx((e.value, e.ci_low, e.ci_high),
                                                                                 abs=1e-12)


@pytest.mark.parametrize("cap,sizes,used,stopped", [
    (128, [8, 32, 128], 128, "every coordinate (160) would exceed 128 components"),
    (160, [8, 32], None, ""),  # 4 x 32 = 128 keeps half of the 160: every coordinate, within the cap
    (1024, [8, 32], None, ""),
])
def test_the_ladder_of_sizes(monkeypatch, cap, sizes, used, stopped):
    """The sizes tried while a term stays flagged (the test forced to flag): x4 each step, every
    coordinate once a step keeps half of them and they fit under the cap, else the plain step."""
    from matprobe.mi.base import make_plan
    from matprobe.mi.reduction_check import ResidualTest

    monkeypatch.setattr(base, "MAX_RAISED_PCA", cap)
    monkeypatch.setattr(ResidualTest, "dropped", property(lambda self: True))
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 160)).astype(np.float32)
    y = rng.integers(0, 2, 2000)
    plan = make_plan(z, y, 5, 8, True, 0)
    plan.raise_pca = True
    record = plan.settle_reduction(z, [(y, None)])
    assert [s["pca"] for s in record.steps] == sizes and record.used == used
    assert (stopped in record.stopped) if stopped else record.stopped == ""
    assert plan.transformed(z, 0).shape[1] == (160 if used is None else used)


def test_a_term_still_flagged_after_a_raise_says_where_it_stopped(monkeypatch):
    """The test forced to flag, the cap at 32: raised 8 -> 32, stopped before 128; the note names
    the raise, the stop and the flag, and the numbers are those of a run at 32 with the flag."""
    from matprobe.mi.reduction_check import ResidualTest

    monkeypatch.setattr(base, "MAX_RAISED_PCA", 32)
    monkeypatch.setattr(ResidualTest, "dropped", property(lambda self: True))
    task = LatentMixtureTask(k_classes=3, d=160, signal_dim=8, separation=1.0, seed=5)
    z, f = task.sample(2000, seed=0)
    e = _term(chain_terms(z, f, order=["Y"], pca=8, **KW))
    red = e.diagnostics["reduction"]
    assert [s["pca"] for s in red["steps"]] == [8, 32] and red["used"] == 32
    assert "pca-dropped-signal" in e.flags
    assert "the PCA was raised from 8 components to 32 components" in e.note
    assert ("matprobe raised the PCA to 32 components and stopped there: 128 components would exceed 32 "
            "components") in e.note
    at_size = _term(chain_terms(z, f, order=["Y"], pca=32, raise_pca=False, **KW))
    assert _numbers(e) == _numbers(at_size)


def test_the_mi_table_says_the_size_it_was_read_at(under_noise_sample, stopped_at_64):
    """`matprobe mi`'s footnote names the raise, not only the asked size."""
    from matprobe.present.views import chain_table

    res = under_noise_sample[-1]
    foot = " ".join(chain_table(res).footnotes)
    assert "PCA 64 raised to every coordinate (the reduction dropped label information" in foot
    assert "PCA 64," in " ".join(chain_table(stopped_at_64[-1]).footnotes)  # stopped at 64: not raised
