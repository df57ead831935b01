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
