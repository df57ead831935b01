"""The probe's learning-curve step where a fold fits the non-linear level (`nonlinear_rate`).

There the term's learning-curve ratio d(n/2 -> n/4) / d(n -> n/2), pooled over its folds and
seeds, is 2^alpha for an excess log-loss falling like n^-alpha, and Aitken's step
I(n) + (I(n) - I(n/2)) / (2^alpha - 1), alpha held to [1/2, 1], replaces the 1/n step
I(n) + (I(n) - I(n/2)). Checked here: the arithmetic of `pooled_rate_step` against the formula,
and on a task whose folds fit the non-linear level, that the estimator's per-row terms with the
step are those without it plus (factor - 1) times the step, on exactly the rows of those folds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi.groundtruth import LatentMixtureTask
from matprobe.mi.probe import ProbeEstimator, pooled_rate_step

FOLD = np.array([0, 0, 1, 1, 2, 2])  # each row's held-out fold
RATE_ROWS = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])  # folds 0 and 1 fitted a quarter; fold 2 did not


def _per_seed(step, quarter):
    """Two seeds; each (fold, seed) fit's rows carry its own step and quarter difference."""
    rng = np.random.default_rng(0)
    out = []
    for s in range(2):
        plain = rng.normal(0.3, 0.1, 6)
        corr = np.array([step[s][0]] * 2 + [step[s][1]] * 2 + [0.02] * 2)
        q = np.array([quarter[s][0]] * 2 + [quarter[s][1]] * 2 + [0.0] * 2)
        out.append({"r": plain + corr, "corr": corr, "level_gap": np.zeros(6), "corr_quarter": q,
                    "rate_rows": RATE_ROWS.copy()})
    return out


@pytest.mark.parametrize("step, quarter", [
    (((0.05, 0.07), (0.06, 0.05)), ((0.06, 0.08), (0.07, 0.06))),   # a ratio near 1.2, tight: alpha held at 1/2
    (((0.04, 0.06), (0.05, 0.05)), ((0.06, 0.09), (0.075, 0.075))),  # 1.5 exactly: alpha = log2(1.5), se 0
    (((0.04, 0.06), (0.05, 0.05)), ((0.05, 0.12), (0.02, 0.09))),    # 1.4 but spread: one s.e. towards 2
    (((0.04, 0.06), (0.05, 0.05)), ((0.12, 0.18), (0.15, 0.15))),    # 3: the 1/n step itself
    (((-0.01, -0.02), (-0.01, 0.0)), ((0.01, 0.01), (0.0, 0.0))),   # the half fits did better: no growth
])
def test_pooled_rate_step_is_aitkens_step_with_the_exponent_held(step, quarter):
    rows = RATE_ROWS > 0
    per_seed = _per_seed(step, quarter)
    before = [{k: v.copy() for k, v in a.items()} for a in per_seed]
    diags = [{"fold": 0}, {"fold": 1}]
    got = pooled_rate_step(per_seed, diags, FOLD)
    # independently: the four (fold, seed) fits' sums, their pooled ratio and its s.e.
    c = np.array([2 * v for pair in step for v in pair])
    q = np.array([2 * v for pair in quarter for v in pair])
    if c.sum() > 0:
        ratio = q.sum() / c.sum()
        se = np.sqrt(4 / 3 * np.sum((q - ratio * c) ** 2)) / c.sum()
        assert (got["ratio"], got["ratio_se"]) == (pytest.approx(ratio), pytest.approx(se, abs=1e-12))
    else:
        ratio = se = np.inf
    factor = 1.0 / (min(max(ratio + se, 2 ** 0.5), 2.0) - 1.0)
    assert got["factor"] == pytest.approx(factor)
    for a, b in zip(per_seed, before):
        plain = b["r"] - b["corr"]
        assert np.allclose(a["r"][rows], plain[rows] + factor * b["corr"][rows])
        assert np.allclose(a["corr"][rows], factor * b["corr"][rows])
        assert np.array_equal(a["r"][~rows], b["r"][~rows])  # other folds' rows as they were
        assert "corr_quarter" not in a and "rate_rows" not in a
    assert all(d["rate_factor"] == pytest.approx(factor) for d in diags)


def test_too_few_fits_keep_the_1_over_n_step():
    # one fold's two seeds: a ratio read from them overshot; the 1/n step stays
    per_seed = _per_seed(((0.05, 0.05), (0.05, 0.05)), ((0.05, 0.05), (0.05, 0.05)))
    for a in per_seed:
        a["rate_rows"] = np.where(FOLD == 1, 0.0, RATE_ROWS)
    before = [a["r"].copy() for a in per_seed]
    assert pooled_rate_step(per_seed, [], FOLD)["factor"] == 1.0
    assert all(np.array_equal(a["r"], b) for a, b in zip(per_seed, before))


def test_no_quarter_fits_no_change():
    per_seed = [{"r": np.ones(3), "corr": np.full(3, 0.1)}]
    assert pooled_rate_step(per_seed, [], np.zeros(3, dtype=int)) is None
    assert np.array_equal(per_seed[0]["r"], np.ones(3))


def test_the_step_on_the_estimator_is_the_formula_on_its_own_rows():
    torch.set_num_threads(1)
    # classes made of clusters: the linear critic is misspecified and the folds fit the non-linear level
    task = LatentMixtureTask(k_classes=3, components=3, d=16, signal_dim=4, separation=1.0, spread=1.5, seed=4)
    z, f = task.sample(1200, seed=4)
    y, c = f["Y"], np.zeros(len(z), dtype=int)
    # the MLP form (the latent-cell level, which these folds choose, is this task's own posterior
    # form and learns at the 1/n rate: its ratio sits at the clip of 2, where the step is the 1/n one)
    est = {rate: ProbeEstimator(seeds=2, folds=3, pca=None, nonlinear_rate=rate, ladder=("linear", "nonlinear"))
           .estimate(z, y, c, pointwise=True) for rate in (True, False)}
    folds = est[True].diagnostics["folds"]
    assert any(d["level"] == "nonlinear" for d in folds)  # the case this step is for
    factor = folds[0]["rate_factor"]
    # the ratio one standard error towards the 1/n rate, clipped to [sqrt 2, 2] (`pooled_rate_step`)
    ratio = folds[0]["rate_ratio"] + folds[0]["rate_ratio_se"]
    assert factor == pytest.approx(1.0 / (min(max(ratio, 2 ** 0.5), 2.0) - 1.0))
    new, old = est[True].diagnostics["pointwise"], est[False].diagnostics["pointwise"]
    moved = ~np.isclose(new["values"], old["values"], rtol=0, atol=1e-12).all(axis=0)
    assert moved.any()
    # on the rows that moved: (factor - 1) times the 1/n step; the step itself scaled by the factor
    assert np.allclose(new["values"][:, moved] - old["values"][:, moved], (factor - 1) * old["corr"][:, moved])
    assert np.allclose(new["corr"][:, moved], factor * old["corr"][:, moved])
    assert np.array_equal(new["values"][:, ~moved], old["values"][:, ~moved])
    assert est[True].diagnostics["raw"][0] == pytest.approx(new["values"].mean(), abs=1e-12)
