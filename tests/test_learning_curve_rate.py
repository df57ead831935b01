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


def _per_seed(step, quarter, rate_rows):
    rng = np.random.default_rng(0)
    out = []
    for s in range(2):
        plain = rng.normal(0.3, 0.1, 6)
        corr = np.where(rate_rows, step[s], 0.02)
        out.append({"r": plain + corr, "corr": corr.copy(), "level_gap": np.zeros(6),
                    "corr_quarter": np.where(rate_rows, quarter[s], 0.0), "rate_rows": rate_rows.astype(float)})
    return out


@pytest.mark.parametrize("step, quarter, ratio", [
    ((0.05, 0.07), (0.06, 0.09), 1.25),   # below sqrt(2): held at alpha = 1/2
    ((0.04, 0.06), (0.06, 0.09), 1.5),    # alpha = log2(1.5)
    ((0.04, 0.06), (0.12, 0.18), 3.0),    # above 2: held at alpha = 1, the 1/n step itself
    ((-0.01, -0.02), (0.01, 0.01), None),  # the half fit did better: no step growth
])
def test_pooled_rate_step_is_aitkens_step_with_the_exponent_held(step, quarter, ratio):
    rate_rows = np.array([True, True, True, True, False, False])
    per_seed = _per_seed(step, quarter, rate_rows)
    before = [{k: v.copy() for k, v in a.items()} for a in per_seed]
    diags = [{"fold": 0}, {"fold": 1}]
    got = pooled_rate_step(per_seed, diags)
    # the pooled ratio: sum over seeds and rows of the quarter differences over the half ones
    expected_ratio = (sum(4 * q for q in quarter) / sum(4 * s for s in step)) if sum(step) > 0 else np.inf
    assert got["ratio"] == pytest.approx(expected_ratio)
    factor = 1.0 / (min(max(expected_ratio, 2 ** 0.5), 2.0) - 1.0)
    assert got["factor"] == pytest.approx(factor)
    if ratio is not None:
        assert expected_ratio == pytest.approx(ratio)
    for a, b in zip(per_seed, before):
        plain = b["r"] - b["corr"]
        assert np.allclose(a["r"][rate_rows], plain[rate_rows] + factor * b["corr"][rate_rows])
        assert np.allclose(a["corr"][rate_rows], factor * b["corr"][rate_rows])
        assert np.array_equal(a["r"][~rate_rows], b["r"][~rate_rows])  # other folds' rows as they were
        assert "corr_quarter" not in a and "rate_rows" not in a
    assert all(d["rate_factor"] == pytest.approx(factor) for d in diags)


def test_no_quarter_fits_no_change():
    per_seed = [{"r": np.ones(3), "corr": np.full(3, 0.1)}]
    assert pooled_rate_step(per_seed, []) is None
    assert np.array_equal(per_seed[0]["r"], np.ones(3))


def test_the_step_on_the_estimator_is_the_formula_on_its_own_rows():
    torch.set_num_threads(1)
    # classes made of clusters: the linear critic is misspecified and the folds fit the non-linear level
    task = LatentMixtureTask(k_classes=3, components=3, d=16, signal_dim=4, separation=1.0, spread=1.5, seed=4)
    z, f = task.sample(1200, seed=4)
    y, c = f["Y"], np.zeros(len(z), dtype=int)
    est = {rate: ProbeEstimator(seeds=2, folds=3, pca=None, nonlinear_rate=rate).estimate(z, y, c, pointwise=True)
           for rate in (True, False)}
    folds = est[True].diagnostics["folds"]
    assert any(d["level"] == "nonlinear" for d in folds)  # the case this step is for
    factor = folds[0]["rate_factor"]
    assert factor == pytest.approx(1.0 / (min(max(folds[0]["rate_ratio"], 2 ** 0.5), 2.0) - 1.0))
    new, old = est[True].diagnostics["pointwise"], est[False].diagnostics["pointwise"]
    moved = ~np.isclose(new["values"], old["values"], rtol=0, atol=1e-12).all(axis=0)
    assert moved.any()
    # on the rows that moved: (factor - 1) times the 1/n step; the step itself scaled by the factor
    assert np.allclose(new["values"][:, moved] - old["values"][:, moved], (factor - 1) * old["corr"][:, moved])
    assert np.allclose(new["corr"][:, moved], factor * old["corr"][:, moved])
    assert np.array_equal(new["values"][:, ~moved], old["values"][:, ~moved])
    assert est[True].diagnostics["raw"][0] == pytest.approx(new["values"].mean(), abs=1e-12)
