"""Issue 22 (thirty-second session): the second-moment check finds classes that differ beyond
their means, where the linear critic has nothing to rank and the quadratic check's columns miss.

An outside statistician's family (equal-mean classes whose covariances differ by a rotation in a
4-dim block, d = 32, n = 2k) read 0 with two-sided intervals [0, 0.01] for truths of 0.09-0.16
nats. `prep.second_moment_basis` (SAVE directions from the fold's fitting rows) and
`prep.second_moment_features` (products along them, and the whitened squared norm) are fitted
beside the fixed linear critic (`ProbeEstimator._gain_beside`, kind "second-moment"); a pooled
gain flags the term `misspecified-linear` (one-sided), and where a fold's gain is significant
the fold is also fitted on them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.special import logsumexp
from scipy.stats import ortho_group

from matprobe.mi import make_estimator
from matprobe.mi.prep import second_moment_basis, second_moment_features

torch.set_num_threads(1)


def test_two_equal_classes_directions_are_the_generalised_eigenvectors():
    """With two equal-sized classes of equal means, whitening by the pooled covariance makes
    I - V_0 = -(I - V_1) up to a common scale, so SAVE's directions are the generalised
    eigenvectors of the classes' second moments (scipy.linalg.eigh(S_1, S_0)), ordered by
    how far their eigenvalue lies from 1 in the whitened scale."""
    rng = np.random.default_rng(5)
    d, n = 6, 3000
    turn = ortho_group.rvs(d, random_state=rng)
    cells = np.arange(n) % 2
    x = rng.standard_normal((n, d))
    x[cells == 1] *= [3.0, 0.2, 1.5, 1.0, 1.0, 1.0]
    x = x @ turn.T + 4.0
    basis = second_moment_basis(x, cells, q=3)
    xc = x - x.mean(0)
    s0 = xc[cells == 0].T @ xc[cells == 0] / (n // 2)
    s1 = xc[cells == 1].T @ xc[cells == 1] / (n // 2)
    w, v = scipy.linalg.eigh(s1, s0)
    # the whitened second moment of class 1 along v_i is 2 w_i / (1 + w_i): ranked by its distance from 1
    order = np.argsort(-np.abs(2 * w / (1 + w) - 1))
    for got, want in zip(basis.directions.T, v[:, order[:3]].T):
        cos = abs(got @ want) / np.linalg.norm(got) / np.linalg.norm(want)
        assert cos > 1 - 1e-8


def test_features_against_a_direct_computation():
    rng = np.random.default_rng(6)
    x_tr = rng.standard_normal((200, 5)) * [1, 2, 3, 1, 1] + 2
    c_tr = rng.integers(0, 2, 200)
    basis = second_moment_basis(x_tr, rng.integers(0, 3, 200), c_tr, q=2)
    x_ev = rng.standard_normal((7, 5))
    c_ev = np.array([0, 1, 0, 1, 0, 5, 5])  # stratum 5 has no fitting rows: the overall mean
    got = second_moment_features(x_ev, c_ev, basis)
    assert got.shape == (7, 4) and got.dtype == np.float32
    cov = sum(np.cov(x_tr[c_tr == s].T, bias=True) * (c_tr == s).sum() for s in (0, 1)) / (len(x_tr) - 1)
    for i in range(7):
        own = c_tr == c_ev[i]
        v = x_ev[i] - (x_tr[own] if own.any() else x_tr).mean(0)
        p = v @ basis.directions
        want = [p[0] * p[0], p[0] * p[1], p[1] * p[1], v @ np.linalg.solve(cov, v)]  # radius: Mahalanobis
        np.testing.assert_allclose(got[i], want, rtol=2e-4, atol=1e-4)


def test_a_constant_column_is_dropped_not_blown_up():
    rng = np.random.default_rng(7)
    x = np.c_[rng.standard_normal((500, 3)), np.full(500, 2.5)]
    basis = second_moment_basis(x, rng.integers(0, 2, 500), q=4)
    assert basis.whiten.shape == (4, 3) and np.isfinite(basis.directions).all()
    assert np.allclose(basis.directions[3], 0.0)


def _rotated_covariance(seed, d=32, k=3, block=4, spread=0.7):
    """Equal-mean classes; class y's covariance in a block of 4 random coordinates is R_y diag(lam) R_y^T."""
    rng = np.random.default_rng(seed)
    coords = np.sort(rng.choice(d, block, replace=False))
    lam = np.exp(spread * rng.standard_normal(block))
    roots = np.stack([ortho_group.rvs(block, random_state=rng) * np.sqrt(lam) for _ in range(k)])

    def sample(n, r):
        y = r.integers(0, k, n)
        z = r.standard_normal((n, d))
        z[:, coords] = np.einsum("nb,ncb->nc", r.standard_normal((n, block)), roots[y])
        return z, y

    def truth(n_mc):  # the exact log posterior ratio, averaged
        z, y = sample(n_mc, np.random.default_rng(seed + 10**6))
        b = z[:, coords]
        ll = np.stack([-0.5 * np.einsum("nb,bc,nc->n", b, np.linalg.inv(r @ r.T), b)
                       - 0.5 * np.linalg.slogdet(r @ r.T)[1] for r in roots], 1)
        return float(np.mean(ll[np.arange(n_mc), y] - logsumexp(ll, axis=1) + np.log(k)))

    return sample, truth


@pytest.mark.parametrize("draw", [3, 4])
def test_equal_mean_classes_are_no_longer_a_confident_null(draw):
    """Without the check the interval is two-sided at 0 and misses the truth (the false null an
    outside study found); with it the term is one-sided, holds, and reads above 0."""
    sample, truth_of = _rotated_covariance(draw)
    z, y = sample(2000, np.random.default_rng([draw, 1]))
    truth = truth_of(100_000)
    off = make_estimator("probe", seeds=2, second_moment_check=False).estimate(z, y)
    on = make_estimator("probe", seeds=2).estimate(z, y)
    assert off.bound == "two-sided" and off.ci_high < truth  # the miss the check is for
    assert on.bound == "lower" and "misspecified-linear" in on.flags and on.ci_low <= truth
    assert on.value > off.value + 0.02
    folds = [f for f in on.diagnostics["folds"] if f.get("seed", 0) == 0]
    gains = np.array([f["second_moment_gain"] for f in folds])
    ses = np.array([f["second_moment_gain_se"] for f in folds])
    assert gains.mean() > 2 * np.sqrt((ses**2).sum()) / len(ses)  # the pooled rule that flagged it
    for f in folds:  # a fold fitted on the features kept them where they predicted its validation rows better
        if "val_loss_second_moment" in f:
            assert (f["representation"] == "second-moment products") == (
                f["val_loss_second_moment"] < min(v for k, v in f.items() if k.startswith("val_loss_")
                                                  and k != "val_loss_second_moment"))


def test_classes_that_differ_only_in_their_means_are_not_flagged_by_it():
    """Gaussian classes with a shared covariance: the linear critic is the Bayes one, and the
    check's pooled gain stays below its rule on each of 4 draws."""
    for seed in range(4):
        rng = np.random.default_rng(seed)
        means = rng.standard_normal((3, 16)) * 0.15
        y = rng.integers(0, 3, 1500)
        mix = ortho_group.rvs(16, random_state=rng) * rng.uniform(0.5, 2.0, 16)  # well conditioned: no saturation
        z = means[y] + rng.standard_normal((1500, 16)) @ mix
        est = make_estimator("probe", seeds=1).estimate(z, y)
        folds = [f for f in est.diagnostics["folds"] if f.get("seed", 0) == 0]
        gains = np.array([f["second_moment_gain"] for f in folds])
        ses = np.array([f["second_moment_gain_se"] for f in folds])
        assert not (gains.mean() > 0.002 and gains.mean() > 2 * np.sqrt((ses**2).sum()) / len(ses)), seed
        assert all(f["representation"] != "second-moment products" for f in folds)



def test_the_check_is_recorded_in_the_fitting_settings():
    """Stored results made before the check (without it in their settings) are recomputed, not reused."""
    from matprobe.mi.chain import estimator_fitting

    fitting = estimator_fitting("probe", 5, 5, 64, 0.95, 0)
    assert fitting["second_moment_check"] is True and fitting["second_moment_directions"] == 4
    assert "4 directions where the cells' second moments differ most" in fitting["second-moment check"]
    assert estimator_fitting("probe", 5, 5, 64, 0.95, 0, second_moment_check=False)["second_moment_check"] is False
