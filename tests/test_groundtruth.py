"""Ground-truth samplers: exact MI checked against quadrature and structural identities."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from matprobe.data.entropy import conditional_entropy, joint_codes
from matprobe.mi.groundtruth import chain_task, single_factor_task


def test_single_factor_truth_matches_quadrature():
    # d = k = 1: I(Z;Y) = sum_y p_y ∫ N(z; mu_y, 1) log(N(z; mu_y, 1) / p(z)) dz, by quadrature
    task = single_factor_task(3, d=1, signal_dim=1, separation=1.5, imbalance=0.4, seed=5)
    _, prob, mean = task._structure
    mu = mean[:, 0]

    def integrand(z, y):
        mix = sum(p * norm.pdf(z, m, 1.0) for p, m in zip(prob, mu))
        return norm.pdf(z, mu[y], 1.0) * np.log(norm.pdf(z, mu[y], 1.0) / mix)

    exact = sum(prob[y] * integrate.quad(integrand, -15, 15, args=(y,), limit=200)[0] for y in range(3))
    value, se = task.truth(n_mc=400_000)["I(Z;Y)"]
    assert se < 0.003
    assert abs(value - exact) < 4 * se


def test_chain_truth_identities_and_degenerate_stratum():
    task = chain_task((2, 3, 3), d=32, signal_dim=6, separations=(1.0, 0.8, 0.8), degenerate=True, seed=2)
    t = task.truth(n_mc=200_000)
    h = task.entropies()
    terms = [t["I(Z;M)"], t["I(Z;A|M)"], t["I(Z;T|M,A)"]]
    # chain rule: the terms add up to the direct joint MI (same MC draws, so to rounding)
    assert sum(v for v, _ in terms) == pytest.approx(t["I(Z;M,A,T)"][0], abs=1e-9)
    for (v, _se), hv in zip(terms, h.values()):
        assert 0 < v < hv
    # the degenerate stratum (M=0, A=0) has one task class: H(T | M=0, A=0) = 0 in the sample
    z, f = task.sample(20_000, seed=1)
    sel = (f["M"] == 0) & (f["A"] == 0)
    assert sel.sum() > 0 and np.unique(f["T"][sel]).size == 1
    # sampled label law matches the exact entropies (plug-in SE ~ 1/sqrt(n))
    assert conditional_entropy(f["A"], f["M"]) == pytest.approx(h["H(A|M)"], abs=0.03)
    assert conditional_entropy(f["T"], joint_codes([f["M"], f["A"]])) == pytest.approx(h["H(T|M,A)"], abs=0.03)
    assert z.shape == (20_000, 32) and z.dtype == np.float32


def test_zero_separation_gives_zero_mi():
    task = chain_task((2, 2, 3), d=8, signal_dim=4, separations=(1.0, 1.0, 0.0), seed=1)
    v, se = task.truth(n_mc=100_000)["I(Z;T|M,A)"]
    assert v == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("transform", ["sinh", "cubic"])
def test_transforms_are_monotone_and_keep_labels(transform):
    lin = chain_task((2, 2, 2), d=16, signal_dim=4, seed=3)
    non = chain_task((2, 2, 2), d=16, signal_dim=4, seed=3, transform=transform)
    z0, f0 = lin.sample(500, seed=4)
    z1, f1 = non.sample(500, seed=4)
    for name in f0:
        assert np.array_equal(f0[name], f1[name])
    # same draws through a strictly increasing per-coordinate map: ranks are preserved
    assert np.array_equal(np.argsort(z0[:, 0]), np.argsort(z1[:, 0]))
    assert non.truth(50_000) == lin.truth(50_000)


def test_high_dimensional_embedding_is_orthogonal():
    task = single_factor_task(2, d=4096, signal_dim=16, seed=0)
    u = task._embedding
    assert np.allclose(u.T @ u, np.eye(16), atol=1e-5)
    z, _ = task.sample(300, seed=0)
    # the noise lives in the orthogonal complement with unit variance per direction
    resid = z - (z @ u) @ u.T
    assert np.var(resid) == pytest.approx((4096 - 16) / 4096, rel=0.02)


@pytest.mark.parametrize("seed,speed", [(1, 0.5), (7, 2.0), (12, 3.0)])
def test_spiral_rotates_each_row_by_its_own_angle_in_one_plane(seed, speed):
    # the map z' = o + R(theta)(z - o), theta = speed |z - o|^2 / d, checked piece by piece against
    # the base sample: off the plane nothing moves, the radius is kept, and the in-plane angle turned
    # (atan2, independently of the code's cos/sin) is theta modulo 2 pi; the inverse undoes it
    from matprobe.mi.groundtruth import LatentMixtureTask, SpiralTask

    base = LatentMixtureTask(k_classes=4, d=16, signal_dim=6, separation=1.5, seed=seed)
    task = SpiralTask(base, speed=speed)
    z0, f0 = base.sample(400, seed=2)
    z1, f1 = task.sample(400, seed=2)
    assert np.array_equal(f0["Y"], f1["Y"])
    o = base._embedding[3]
    c0, c1 = z0.astype(np.float64) - o, z1.astype(np.float64) - o
    e = task._plane
    assert np.allclose(e @ e.T, np.eye(2), atol=1e-12)
    off0, off1 = c0 - (c0 @ e.T) @ e, c1 - (c1 @ e.T) @ e
    assert np.allclose(off0, off1, atol=1e-5)
    assert np.allclose(np.linalg.norm(c0, axis=1), np.linalg.norm(c1, axis=1), rtol=1e-5)
    turned = np.arctan2(c1 @ e[1], c1 @ e[0]) - np.arctan2(c0 @ e[1], c0 @ e[0])
    theta = speed * (c0**2).sum(1) / 16
    gap = np.angle(np.exp(1j * (turned - theta)))  # the difference modulo 2 pi, in (-pi, pi]
    assert np.abs(gap).max() < 1e-4
    assert theta.max() - theta.min() > 0.5 * speed  # the angle really varies across rows
    assert np.allclose(task.invert(z1), z0, atol=1e-4)
    # the plane is that of the class centres: their projections on it keep most of their spread
    cls, prob, mean = base._structure
    centres = mean @ base._embedding[0].T
    centres -= centres.mean(0)
    kept = np.linalg.norm(centres @ e.T) ** 2 / np.linalg.norm(centres) ** 2
    assert kept > 0.5
    # every MI term and pointwise log-ratio is the base task's (MI is invariant under the map)
    assert task.truth(20_000) == base.truth(20_000)
    assert np.array_equal(task.oracle_terms(300, seed=2)["I(Z;Y)"], base.oracle_terms(300, seed=2)["I(Z;Y)"])
