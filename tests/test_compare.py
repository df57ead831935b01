"""Paired ΔI between two stores / two layers against exact MI, null calibration and refusals.

Ground truth: Y uniform binary and Z_1 | Y ~ N(±mu, 1) (other coordinates independent noise)
has I(Z;Y) = ln 2 - E_z[h(sigmoid(2 mu z))], computed here by quadrature (scipy), independent
of the estimators. With a stratum code C and mu depending on C, I(Z;Y|C) = sum_c p(c) I(mu_c).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import expit
from scipy.stats import norm

from matprobe.errors import EstimationError, StoreError
from matprobe.mi.compare import compare_arrays, compare_stores, paired_difference, parse_term
from matprobe.store import EmbeddingStore

torch.set_num_threads(1)

FAST = dict(penalties=(1e-4,), max_iter=15)  # d <= 3: one penalty, few L-BFGS steps suffice


def info_binary(mu: float) -> float:
    """I(Z;Y) in nats for Y ~ Bernoulli(1/2), Z | Y ~ N((2Y - 1) mu, 1)."""
    def integrand(z):
        p = expit(2 * mu * z)
        h = -(p * np.log(p) + (1 - p) * np.log1p(-p)) if 0 < p < 1 else 0.0
        return 0.5 * (norm.pdf(z, mu) + norm.pdf(z, -mu)) * h
    return float(np.log(2) - integrate.quad(integrand, -12, 12, limit=200)[0])


def conditional_sample(n, mus, rng, labels):
    """Z [n, 3] with Z_1 = mu_{M} (2T - 1) + noise, Z_2 = stratum offset + noise, given labels."""
    m, t = labels
    z = rng.standard_normal((n, 3)).astype(np.float32)
    z[:, 0] += np.asarray(mus)[m] * (2 * t - 1)
    z[:, 1] += 1.5 * (2 * m - 1)
    return z


def make_store(path, ids, m, t, features):
    return EmbeddingStore.from_arrays(path, ids, {"M": [f"m{v}" for v in m], "T": [f"t{v}" for v in t]},
                                      features, overwrite=True)


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    """Stores A (mu = 1.0, 0.8) and B (mu = 0.5, 0.8) on the same 2000 samples; B also holds A's Z."""
    root = tmp_path_factory.mktemp("cmp")
    rng = np.random.default_rng(11)
    n = 2000
    m, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
    ids = [f"q{i:05d}" for i in range(n)]
    za = conditional_sample(n, (1.0, 0.8), rng, (m, t))
    zb = conditional_sample(n, (0.5, 0.8), rng, (m, t))
    make_store(root / "a.h5", ids, m, t, {("8", "last"): za}).close()
    # B lists its samples in another order: compare aligns rows by id
    perm = rng.permutation(n)
    make_store(root / "b.h5", [ids[i] for i in perm], m[perm], t[perm],
               {("8", "last"): zb[perm], ("16", "last"): za[perm]}).close()
    # ... and the same store in A's order
    make_store(root / "b-same-order.h5", ids, m, t, {("8", "last"): zb, ("16", "last"): za}).close()
    truth = 0.5 * (info_binary(1.0) - info_binary(0.5))  # p(M = m) = 1/2 in the population
    return root, truth


def test_known_delta_is_covered_and_detected(two_stores):
    root, truth = two_stores
    comp = compare_stores(root / "a.h5", root / "b.h5", "T|M", layer="8", pool="last", seeds=2, pca=None,
                          n_boot=1000, **FAST)
    d = comp.difference
    assert comp.term == "I(Z;T|M)" and d.n == 2000 and d.unit == "nats"
    assert d.ci_low <= truth <= d.ci_high, (d.delta, d.ci_low, d.ci_high, truth)
    assert d.ci_low > 0 and d.p_value < 0.05  # ΔI ~ 0.13 nats is detectable at n = 2000
    # the paired difference is the difference of the two sides' (unclipped) estimates
    assert d.delta == pytest.approx(comp.side_a["estimate"] - comp.side_b["estimate"], abs=1e-9)


def test_two_layers_of_one_store_equal_two_stores(two_stores):
    """Layer 16 of B holds A's features: B/16 vs B/8 must reproduce A vs B exactly (same folds, seeds),
    where B lists the samples in A's order; rows follow A's order, so B's own order changes nothing."""
    root, _ = two_stores
    kw = dict(pool="last", seeds=2, pca=None, n_boot=300, **FAST)
    two = compare_stores(root / "a.h5", root / "b-same-order.h5", "T|M", layer="8", **kw)
    one = compare_stores(root / "b-same-order.h5", None, "T|M", layer="16", layer_b="8", **kw)
    assert one.difference.delta == pytest.approx(two.difference.delta, abs=1e-6)
    assert one.side_a["estimate"] == pytest.approx(two.side_a["estimate"], abs=1e-6)
    permuted = compare_stores(root / "a.h5", root / "b.h5", "T|M", layer="8", **kw)
    assert (permuted.difference.delta, permuted.side_b["estimate"]) == (two.difference.delta, two.side_b["estimate"])
    assert "B lists the samples in another order than A" in permuted.note
    assert "another order" not in two.note


def test_side_estimates_are_the_ones_mi_gives(two_stores):
    """A user found compare's side estimates differing from `mi`'s on the same store (compare folded
    by id string over the term alone; `mi` folds by the chain's factors over all its terms): each
    side is now `mi`'s own number, bit for bit, for the default chain and for a longer one."""
    from matprobe.mi.chain import run_store

    root, _ = two_stores
    kw = dict(seeds=2, folds=3, pca=None, **FAST)
    for term, factors in (("T|M", None), ("M", ["M", "T"])):
        comp = compare_stores(root / "a.h5", root / "b-same-order.h5", term, layer="8", pool="last", factors=factors,
                              n_boot=200, **kw)
        for side, path in ((comp.side_a, "a.h5"), (comp.side_b, "b-same-order.h5")):
            res, _ = run_store(root / path, factors or ["M", "T"], "8", "last", **kw)
            e = res.estimates("probe")[0 if term == "M" else 1].estimate
            assert (side["estimate"], side["ci_low"], side["ci_high"]) == (e.value, e.ci_low, e.ci_high)
    with pytest.raises(EstimationError, match=r"not a term of the chain over T,M .*--factors with M,T"):
        compare_stores(root / "a.h5", root / "b.h5", "T|M", layer="8", factors=["T", "M"], **kw)


def test_null_repeats_reject_at_most_7_percent():
    """100 null pairs (two independent draws of Z given the same labels): p < 0.05 in <= 7 of them.

    Cheap on purpose: n = 300, d = 2, one seed, one penalty, one thread, the linear level alone
    (its posterior is exact on these classes; with the whole ladder the same 4 rejections and SE
    ratio 1.149 against 1.147, at 2.3x the CPU: RESULTS.md, issue 22, thirty-seventh session).
    The SE must also match the spread of ΔI over the repeats (neither inflated nor too small).
    """
    rng = np.random.default_rng(2026)
    n, rejections, deltas, ses = 300, 0, [], []
    for r in range(100):
        y = rng.integers(0, 2, n)
        za = rng.standard_normal((n, 2))
        zb = rng.standard_normal((n, 2))
        za[:, 0] += 0.8 * (2 * y - 1)
        zb[:, 0] += 0.8 * (2 * y - 1)
        _, _, d = compare_arrays(za, zb, y, seeds=1, pca=None, gaussianize=False, n_boot=400, seed=r,
                                 ci_level=0.95, ladder=("linear",), additive_check=False, index_check=False, calibration_check=False, **FAST)
        # the interval excludes 0 exactly when p < 0.05 (it is the inverted test)
        assert (d.ci_low > 0 or d.ci_high < 0) == (d.p_value < 0.05)
        rejections += d.p_value < 0.05
        deltas.append(d.delta)
        ses.append(d.se)
    assert rejections <= 7, rejections
    ratio = np.mean(ses) / np.std(deltas, ddof=1)
    assert 0.8 <= ratio <= 1.3, ratio  # SD over 100 repeats is known to ~7%


def test_paired_bootstrap_se_matches_closed_form():
    """Without folds or seeds the bootstrap SE is the stratified SE sqrt(sum_c p_c^2 s_c^2 / n_c)."""
    rng = np.random.default_rng(5)
    n = 3000
    strata = rng.integers(0, 3, n)
    a = rng.normal(0.3, 1.0, n) + strata
    b = rng.normal(0.1, 0.5, n) + strata
    d = paired_difference(a, b, strata, n_boot=4000, ci_level=0.9)
    diff = a - b
    assert d.delta == pytest.approx(diff.mean(), abs=1e-12)
    se = np.sqrt(sum((np.mean(strata == s)) ** 2 * diff[strata == s].var() / np.sum(strata == s)
                     for s in range(3)))
    assert d.se == pytest.approx(se, rel=0.06)
    assert d.ci_high - d.ci_low == pytest.approx(2 * norm.ppf(0.95) * d.se, rel=1e-9)
    bits = paired_difference(a, b, strata, n_boot=4000, ci_level=0.9, unit="bits")
    assert bits.delta == pytest.approx(d.delta / np.log(2), rel=1e-12)


def test_pointwise_rows_average_to_each_seed_value():
    """Pointwise terms average to each seed's value (the seeds' half splits differ)."""
    from matprobe.mi.probe import ProbeEstimator

    rng = np.random.default_rng(3)
    n = 600
    m, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
    z = conditional_sample(n, (1.0, 0.3), rng, (m, t))
    est = ProbeEstimator(seeds=3, pca=None, **FAST)
    e = est.estimate(z, t, m, pointwise=True)
    pw = e.diagnostics["pointwise"]["values"]
    np.testing.assert_allclose(pw.mean(axis=1), e.diagnostics["seed_values"], rtol=0, atol=1e-12)
    assert len(set(np.round(e.diagnostics["seed_values"], 10))) == 3


def test_refusals_name_the_problem(tmp_path, two_stores):
    root, _ = two_stores
    rng = np.random.default_rng(0)
    n = 40
    m, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
    z = rng.standard_normal((n, 3)).astype(np.float32)
    ids = [f"q{i:05d}" for i in range(n)]
    make_store(tmp_path / "a.h5", ids, m, t, {("8", "last"): z}).close()
    make_store(tmp_path / "ids.h5", ids[:37] + ["x1", "x2", "x3"], m, t, {("8", "last"): z}).close()
    with pytest.raises(StoreError, match="3 ids only in A, 3 only in B"):
        compare_stores(tmp_path / "a.h5", tmp_path / "ids.h5", "T|M", layer="8")
    t2 = t.copy()
    t2[:5] = 1 - t2[:5]
    make_store(tmp_path / "lab.h5", ids, m, t2, {("8", "last"): z}).close()
    with pytest.raises(StoreError, match="label 5 of 40 samples differently for factor 'T'"):
        compare_stores(tmp_path / "a.h5", tmp_path / "lab.h5", "T|M", layer="8")
    make_store(tmp_path / "pool.h5", ids, m, t, {("8", "image"): z}).close()
    with pytest.raises(StoreError, match=r"pool.h5 \(B\): no features for layer '8', pool 'last'"):
        compare_stores(tmp_path / "a.h5", tmp_path / "pool.h5", "T|M", layer="8", pool="last")
    make_store(tmp_path / "deg.h5", ids, m, m, {("8", "last"): z}).close()  # T = M: H(T|M) = 0
    with pytest.raises(EstimationError, match="degenerate in store B only"):
        compare_stores(tmp_path / "a.h5", tmp_path / "deg.h5", "T|M", layer="8")
    with pytest.raises(StoreError, match="needs --layer-b or --pool-b"):
        compare_stores(tmp_path / "a.h5", tmp_path / "a.h5", "T|M", layer="8")
    with pytest.raises(EstimationError, match="one target"):
        parse_term("T,A|M")
    assert parse_term("I(Z;T|M,A)") == ("T", ["M", "A"]) and parse_term("M") == ("M", [])


def test_compare_cli_one_line_errors_and_json(two_stores, tmp_path):
    import json

    from typer.testing import CliRunner

    from matprobe.cli import app

    root, _ = two_stores
    runner = CliRunner(env={"COLUMNS": "200"})
    res = runner.invoke(app, ["compare", str(root / "a.h5"), str(root / "b.h5"), "--layer", "3"])
    assert res.exit_code == 2 and "error:" in res.output and "no features for layer '3'" in res.output
    out = tmp_path / "c.json"
    res = runner.invoke(app, ["compare", str(root / "b.h5"), "--term", "T|M", "--layer", "16", "--layer-b", "8",
                              "--pool", "last", "--pca", "0", "--seeds", "1", "--n-boot", "200",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "matprobe.compare" and doc["term"] == "I(Z;T|M)"
    assert f"{doc['difference']['delta']:+.4f}" in res.output


def test_a_side_with_constant_features_has_zero_terms_not_a_zero_difference(tmp_path, two_stores):
    """A layer whose features are the same for every prompt (the embedding layer's last token)
    against one that carries the term: compare read "ΔI = 0, p = 1, H(Y|C) = 0 on both sides" beside
    1.3 nats. The constant side's MI is 0 by definition, so ΔI is minus the other side's per-row mean,
    and it is detected; the other way round it changes sign; both constant: exactly 0."""
    root, truth = two_stores
    with EmbeddingStore.open(root / "b-same-order.h5") as st:
        ids, za = [str(i) for i in st.ids], st.read("16", "last")
        (m_codes, m_labels), (t_codes, t_labels) = st.factor("M"), st.factor("T")
    m = np.array([int(m_labels[c][1]) for c in m_codes])
    t = np.array([int(t_labels[c][1]) for c in t_codes])
    make_store(tmp_path / "s.h5", ids, m, t, {("embed", "last"): np.ones((len(ids), 3), np.float32),
                                              ("0", "last"): np.zeros((len(ids), 3), np.float32),
                                              ("8", "last"): za}).close()
    kw = dict(pool="last", seeds=2, pca=None, n_boot=300, **FAST)
    down = compare_stores(tmp_path / "s.h5", None, "T|M", layer="embed", layer_b="8", **kw)
    assert down.side_a["estimate"] == 0.0 and "constant-features" in down.side_a["flags"]
    one = compare_stores(root / "a.h5", root / "b-same-order.h5", "T|M", layer="8", **kw)
    # the informative side is A's features, estimated as `compare` of A's store gives them
    assert down.side_b["estimate"] == pytest.approx(one.side_a["estimate"], abs=1e-6)
    row_mean = -down.side_b["estimate"]  # the probe's estimate is its per-row terms' mean (not clipped here)
    assert down.difference.delta == pytest.approx(row_mean, abs=1e-6)
    assert down.difference.ci_high < 0 and down.difference.p_value < 1e-6
    # the population's I(Z;T|M) = (info(1.0) + info(0.8)) / 2 lies in -ΔI's interval
    population = 0.5 * (info_binary(1.0) + info_binary(0.8))
    assert -down.difference.ci_high <= population <= -down.difference.ci_low
    up = compare_stores(tmp_path / "s.h5", None, "T|M", layer="8", layer_b="embed", **kw)
    assert up.difference.delta == pytest.approx(-down.difference.delta, abs=1e-9)
    flat = compare_stores(tmp_path / "s.h5", None, "T|M", layer="embed", layer_b="0", **kw)
    assert (flat.difference.delta, flat.difference.p_value) == (0.0, 1.0)
    assert flat.difference.method == "exactly 0: constant features on both sides"
