"""Issue 22 (thirteenth session): the quadratic check flags a linear critic that classes made of
clusters leave short, where the non-linear level's check on 64 inputs gained nothing.

`prep.quadratic_products` (the products of the leading columns, centred per stratum) are fitted
beside the fixed linear critic (`ProbeEstimator._gain_beside`, kind "quadratic"); a pooled gain
on the validation splits flags the term `misspecified-linear` (one-sided). The check only flags:
the estimate and its lower end are the same bits with the check on or off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi import make_estimator
from matprobe.mi.groundtruth import LatentMixtureTask
from matprobe.mi.prep import quadratic_products

torch.set_num_threads(1)


def test_quadratic_products_against_a_direct_computation():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6)).astype(np.float32) * [1, 2, 3, 4, 5, 6] + 7
    c = rng.integers(0, 3, 40)
    columns = np.array([1, 4, 5])
    got = quadratic_products(x, c, columns)
    assert got.shape == (40, 6) and got.dtype == np.float32
    expected = np.zeros((40, 6))
    for i in range(40):
        m = x[c == c[i]][:, columns].astype(np.float64).mean(0)  # the row's stratum mean
        v = x[i, columns] - m
        expected[i] = [v[0] * v[0], v[0] * v[1], v[0] * v[2], v[1] * v[1], v[1] * v[2], v[2] * v[2]]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # no strata: centred by the overall mean; every column by default
    whole = quadratic_products(x[:, :2])
    v = x[:, :2] - x[:, :2].mean(0)
    np.testing.assert_allclose(whole, np.c_[v[:, 0] ** 2, v[:, 0] * v[:, 1], v[:, 1] ** 2], rtol=1e-5, atol=1e-4)


def _clusters(seed):
    # 4 classes, each a mixture of 3 clusters, in d = 256 with anisotropic noise (PCA 64 applies):
    # the `mixture-aniso` family of the calibration benchmark's `--grid combined`
    return LatentMixtureTask(k_classes=4, components=3, d=256, signal_dim=8, separation=1.0, spread=1.5, seed=seed)


@pytest.mark.parametrize("draw", [0, 2])
def test_clusters_per_class_are_flagged_by_the_quadratic_check_only(draw):
    """Without the check the interval is two-sided and misses (the linear critic reads 15-17%
    low); with it the term is one-sided and covers, and the estimate is the same bits."""
    task = _clusters(100 + draw)
    z, f = task.sample(2000, seed=draw)
    truth = task.truth(100_000)["I(Z;Y)"][0]
    on = make_estimator("probe", seeds=2).estimate(z, f["Y"])
    off = make_estimator("probe", seeds=2, quadratic_check=False).estimate(z, f["Y"])
    assert "misspecified-linear" not in off.flags and off.ci_high < truth  # the miss the check is for
    assert "misspecified-linear" in on.flags and on.bound == "lower"
    assert on.ci_low <= truth <= on.ci_high
    assert (on.value, on.ci_low) == (off.value, off.ci_low)
    assert on.value < 0.9 * truth
    assert "products of its 8 leading feature columns" in on.note
    folds = [d for d in on.diagnostics["folds"] if d.get("seed", 0) == 0]
    gains = np.array([d["quadratic_gain"] for d in folds])
    ses = np.array([d["quadratic_gain_se"] for d in folds])
    # pooled as `_pooled_gain`: above 2 pooled s.e.; the non-linear level gained nothing
    assert gains.mean() > 2 * np.sqrt((ses**2).sum()) / len(ses)
    assert np.mean([d["level_gain"] for d in folds]) < 0.01


def test_gaussian_classes_with_a_shared_covariance_stay_two_sided():
    """Bayes logits linear in z: the products gain nothing, the intervals stay two-sided and
    cover, in three draws (the same task shape without the clusters)."""
    for seed in (1, 2, 3):
        task = LatentMixtureTask(k_classes=4, d=256, signal_dim=8, separation=1.0, seed=seed)
        z, f = task.sample(2000, seed=seed)
        truth = task.truth(100_000)["I(Z;Y)"][0]
        e = make_estimator("probe", seeds=2).estimate(z, f["Y"])
        assert "misspecified-linear" not in e.flags and e.bound != "lower"
        assert e.ci_low <= truth <= e.ci_high
        folds = [d for d in e.diagnostics["folds"] if d.get("seed", 0) == 0]
        assert all("quadratic_gain" in d for d in folds)


def test_the_check_is_recorded_in_the_fitting_settings():
    """Results made before the check (without it in their settings) are recomputed, not reused."""
    from matprobe.mi.chain import estimator_fitting

    fitting = estimator_fitting("probe", 5, 5, 64, 0.95, 0)
    assert fitting["quadratic_check"] is True and fitting["quadratic_columns"] == 8
    assert "quadratic check" in fitting
    assert estimator_fitting("probe", 5, 5, 64, 0.95, 0, quadratic_check=False)["quadratic_check"] is False
