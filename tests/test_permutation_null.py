"""Issue 25: the permutation null of a chain term (matprobe.mi.controls): labels permuted within the
conditioning strata, p-values uniform on null tasks (Kolmogorov-Smirnov over 200 replicates), the
p-value and null summaries equal to a computation written out here, and what `mi` writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from matprobe.mi import chain_terms, make_estimator
from matprobe.mi.chain import TermSpec, estimate_terms
from matprobe.mi.controls import permutation_null, permute_within
from matprobe.mi.interface import MIEstimate
from matprobe.mi.registry import estimator_tags

torch.set_num_threads(1)
# a cheap probe: one penalty, the linear level, no learning-curve step, none of the checks beside
# the linear critic and no choice of representation (the null's validity does not depend on the
# estimator: any statistic computed the same way on exchangeable data gives uniform p; the checks
# were 60% of the uniformity test's time)
CHEAP = dict(seeds=1, folds=2, pca=None, ladder=("linear",), extrapolate=False, penalties=(1e-2,),
             radial_check=False, quadratic_check=False, second_moment_check=False, radial_damping=False,
             map_choice=False, additive_check=False, index_check=False, calibration_check=False)


def test_permutations_move_rows_only_within_strata_and_keep_label_pairs():
    rng = np.random.default_rng(0)
    c = rng.integers(0, 4, 500)
    y, sub = rng.integers(0, 3, 500), rng.integers(0, 5, 500)
    order = permute_within(c, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(500))  # a permutation of the rows
    assert np.array_equal(c[order], c)  # every row's stratum is kept
    for s in range(4):
        rows = np.flatnonzero(c == s)
        pairs = sorted(zip(y[rows].tolist(), sub[rows].tolist()))
        assert sorted(zip(y[order][rows].tolist(), sub[order][rows].tolist())) == pairs
    assert not np.array_equal(order, np.arange(500))


def _fake_estimate(value):
    return MIEstimate(value=max(value, 0.0), ci_low=0.0, ci_high=1.0, ci_level=0.95, unit="nats", n_train=0,
                      n_eval=0, estimator="fake", params={}, diagnostics={"raw": (value, 0.0, 1.0)})


def test_p_value_and_null_summary_equal_a_written_out_permutation_test():
    # a statistic written out here (class-mean gap of z within strata), so the null is known exactly
    rng = np.random.default_rng(2)
    n = 120
    c = rng.integers(0, 3, n)
    y = rng.integers(0, 2, n)
    z = rng.standard_normal(n) + 0.3 * y

    def stat(yy):
        return float(np.mean([z[(c == s) & (yy == 1)].mean() - z[(c == s) & (yy == 0)].mean() for s in range(3)]))

    observed = _fake_estimate(stat(y))
    res = permutation_null(lambda yy, ss: _fake_estimate(stat(yy)), y, c, observed=observed, permutations=49, seed=7)
    # the same permutations, drawn here from the same generator
    gen = np.random.default_rng([7, 2_019])
    null = []
    for _ in range(49):
        order = np.arange(n)
        for s in np.unique(c):
            rows = np.flatnonzero(c == s)
            order[rows] = rows[gen.permutation(len(rows))]
        null.append(stat(y[order]))
    null = np.array(null)
    assert res.null == pytest.approx(null.tolist(), abs=0)
    assert res.p_value == (1 + (null >= stat(y)).sum()) / 50
    # the excess is on the reported scale: clipped estimate minus the mean clipped null estimate
    assert res.null_mean == pytest.approx(np.maximum(null, 0).mean())
    assert res.excess == pytest.approx(max(stat(y), 0) - np.maximum(null, 0).mean())
    assert res.null_mean_raw == pytest.approx(null.mean()) and res.excess_raw == pytest.approx(stat(y) - null.mean())
    assert res.null_sd == pytest.approx(null.std(ddof=1))
    # the raw value is the statistic: a negative observed value is not clipped to 0 before comparing
    neg = permutation_null(lambda yy, ss: _fake_estimate(stat(yy)), y, c, observed=_fake_estimate(-1.0),
                           permutations=9, seed=1)
    assert neg.observed == -1.0 and neg.p_value == 1.0


def _null_replicate(rep, permutations):
    """I(Z;A|M) on a task where A depends on M and Z depends on M, but A is independent of Z given M."""
    rng = np.random.default_rng(1000 + rep)
    n = 160
    m = rng.integers(0, 2, n)
    a = (rng.random(n) < 0.25 + 0.5 * m).astype(np.int64)
    z = np.stack([m + 0.7 * rng.standard_normal(n), rng.standard_normal(n)], 1).astype(np.float32)
    est = make_estimator("probe", **CHEAP)
    e = estimate_terms(est, estimator_tags("probe"), z, {"M": m, "A": a}, [TermSpec(("A",), ("M",))],
                       permutations=permutations, permutation_seed=rep)[0]
    return e.diagnostics["permutation"]["p_value"]


@pytest.mark.slow
def test_p_values_are_uniform_on_null_tasks():
    p = np.array([_null_replicate(rep, 9) for rep in range(200)])
    # with B = 9, p takes the values k / 10, each with probability 1/10 under the null, so
    # P(p <= k / 10) = k / 10 exactly: each count below a level is Binomial(200, k / 10) (two-sided
    # binomial tests, Bonferroni over the 9 levels). A KS test against the continuous U(0, 1) sat at
    # its 1% critical value by the discrete law alone (distance 0.1 against 0.115) and failed on a
    # first level 8 counts above its mean (28 of 200, binomial p 0.07)
    counts_below = [int((p <= k / 10 + 1e-9).sum()) for k in range(1, 10)]
    levels = [stats.binomtest(c, len(p), k / 10).pvalue for k, c in zip(range(1, 10), counts_below)]
    assert min(levels) > 0.01 / 9, (counts_below, levels)
    # and the discrete law itself: each level about 20 times (chi-square, 10 cells)
    counts = np.bincount(np.round(p * 10).astype(int) - 1, minlength=10)
    assert stats.chisquare(counts).pvalue > 0.01, counts


def test_a_real_dependence_gets_the_smallest_p_and_a_positive_excess():
    rng = np.random.default_rng(5)
    n = 300
    m = rng.integers(0, 2, n)
    a = rng.integers(0, 2, n)
    z = np.stack([m + 0.5 * rng.standard_normal(n), a + 0.5 * rng.standard_normal(n)], 1).astype(np.float32)
    res = chain_terms(z, {"M": m, "A": a}, direct=False, difference=False, permutations=9, **CHEAP)
    frame = res.frame().set_index("term")
    for term in ("I(Z;M)", "I(Z;A|M)"):
        assert frame.loc[term, "p_perm"] == pytest.approx(0.1)  # 1 / (1 + B): no null estimate reaches it
        assert frame.loc[term, "excess"] > 0.2
    perm = res.terms["probe"][1][1].diagnostics["permutation"]
    assert perm["within"] == "M" and perm["permutations"] == 9 and len(perm["null"]) == 9


def test_mi_cli_writes_the_null_and_shows_its_columns(tmp_path):
    from conftest import mi_cli_on_synthetic_store

    res, doc, _ = mi_cli_on_synthetic_store(tmp_path, "--permutations", 4, seed=1, n=240, modality_shift=1.5)
    assert doc["settings"]["permutations"] == 4
    perms = [t["permutation"] for t in doc["terms"]]
    assert [p["within"] for p in perms] == ["", doc["factors"][0]]  # I(Z;A|M): permuted within M
    assert all(len(p["null"]) == 4 and p["p_value"] in (0.2, 0.4, 0.6, 0.8, 1.0) for p in perms)
    assert perms[0]["p_value"] == 0.2  # modality is in Z
    assert "perm. p" in res.output and "excess over null" in res.output and "4 permutations" in res.output


def test_excess_is_never_above_the_cap_nor_positive_for_a_term_that_reads_0():
    # study4 (issue 26): I(Z;modality) read 1.026 of a 1.090 cap, its raw null estimates averaged -0.548,
    # and raw minus raw gave an "excess over null" of 1.575 nats, above any information the term can hold;
    # I(Z;label|M,A,T) read 0 (raw -0.217) with an excess of 1.354 over nulls averaging -1.571
    cap = 1.090

    def est(raw):
        return MIEstimate(value=min(max(raw, 0.0), cap), ci_low=0.0, ci_high=cap, ci_level=0.95, unit="nats",
                          n_train=0, n_eval=0, estimator="fake", params={}, diagnostics={"raw": (raw, 0.0, cap)})

    y, c = np.arange(20) % 2, np.zeros(20, dtype=int)
    nulls = iter([-0.10, -0.18, -0.40, -0.90, 0.06, -1.15, -0.03, -0.85, -1.54, -0.97] * 2)
    res = permutation_null(lambda yy, ss: est(next(nulls)), y, c, observed=est(1.026), permutations=10, seed=0)
    assert res.null_mean == pytest.approx(0.006) and res.excess == pytest.approx(1.020)
    assert res.excess <= cap and res.excess_raw == pytest.approx(1.026 + 0.606)  # the raw gap is kept, by name
    below = permutation_null(lambda yy, ss: est(next(nulls)), y, c, observed=est(-0.217), permutations=10, seed=0)
    assert below.p_value == pytest.approx(5 / 11)  # ranked on the raw statistic, as before
    assert below.excess == pytest.approx(-0.006) and below.excess <= 0  # the term reads 0: no excess claimed
    assert "below 0 (the term reads 0)" in below.notes[0]
