"""Conditional terms whose strata differ: a two-sided term with a one-sided stratum entry has its
upper end at the strata's upper ends weighted by their rows (`base._raise_to_one_sided_strata`,
flag "one-sided-strata"), and a stratum with enough validation rows is fitted at its own (dims,
penalty) cell of the linear path where that penalty is weaker than the shared one (`probe._LinearPath.cells`).

An outside study's family (issue 22, forty-first session): I(Z;Y|C), d = 64, strata of 50/30/20% of
the rows with P(Y = 1 | C) = 0.5/0.3/0.15, each stratum's classes apart by a Mahalanobis distance
along a direction of its own. The 20% stratum's minority cells hold fewer rows than the critic has
inputs, so its own entry is one-sided ("small-cells" within the stratum), while the term, with 3% of
its rows there, stayed two-sided: 13 of 39 two-sided intervals missed the truth, all below it, 8 of
them terms holding such a stratum (RESULTS.md, forty-first session, for the coverage measured).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from matprobe.mi import probe as probe_module
from matprobe.mi.interface import LOWER, TWO_SIDED, TermNames
from matprobe.mi.probe import ProbeEstimator, _LinearPath

torch.set_num_threads(1)

SHARES, POSITIVE = (0.5, 0.3, 0.2), (0.5, 0.3, 0.15)


def _binary_shift_mi(prior: float, delta: float) -> float:
    """I(Z;Y) in nats for Y ~ Bernoulli(prior), Z | Y ~ N(delta * Y, 1) (the whole information
    lies along the shift): H(Y) - E[H(Y | t)] by quadrature over t."""
    def h(p):
        return 0.0 if p <= 0.0 or p >= 1.0 else -(p * math.log(p) + (1 - p) * math.log1p(-p))

    def integrand(t):
        a, b = prior * stats.norm.pdf(t - delta), (1 - prior) * stats.norm.pdf(t)
        return (a + b) * h(a / (a + b)) if a + b > 0 else 0.0

    inner = integrate.quad(integrand, -12.0, delta + 12.0, limit=200, epsabs=1e-12)[0]
    return h(prior) - inner


def _draw(seed: int, n: int = 2000, d: int = 64):
    """Rows, labels, strata and the exact I(Z;Y|C) (nats) of one draw of the family above."""
    rng = np.random.default_rng(seed)
    c = rng.choice(3, size=n, p=SHARES)
    y = (rng.random(n) < np.asarray(POSITIVE)[c]).astype(np.int64)
    deltas = rng.uniform(0.0, 1.6, size=3)
    means = rng.normal(size=(3, d)) * 0.4
    directions = np.linalg.qr(rng.normal(size=(d, 3)))[0].T  # orthonormal, one per stratum
    z = rng.normal(size=(n, d)) + means[c] + (y * deltas[c])[:, None] * directions[c]
    truth = sum(s * _binary_shift_mi(p, dl) for s, p, dl in zip(SHARES, POSITIVE, deltas))
    return z.astype(np.float32), y, c, truth


def test_the_quadrature_truth_is_the_monte_carlo_one():
    # the truth by an independent route: the exact posterior's entropy over 400k fresh rows
    rng = np.random.default_rng(0)
    prior, delta = 0.15, 1.2
    y = rng.random(400_000) < prior
    t = rng.normal(size=y.size) + delta * y
    a, b = prior * stats.norm.pdf(t - delta), (1 - prior) * stats.norm.pdf(t)
    post = a / (a + b)
    h_post = -(post * np.log(post) + (1 - post) * np.log1p(-post))
    h_prior = -(prior * math.log(prior) + (1 - prior) * math.log1p(-prior))
    mc = h_prior - h_post.mean()
    se = h_post.std() / math.sqrt(y.size)
    assert abs(_binary_shift_mi(prior, delta) - mc) < 4 * se


def _entries_sum(est, n):
    return sum(e.ci_high * e.n for e in est.strata) / n


@pytest.mark.parametrize("seed", [6, 7])
def test_a_one_sided_stratum_raises_the_terms_upper_end_to_the_strata_sum(seed):
    z, y, c, truth = _draw(seed)
    est = ProbeEstimator().estimate(z, y, c, names=TermNames(target="Y", given="C"))
    small = [e for e in est.strata if e.bound == LOWER]
    assert [e.given for e in small] == ["2"]  # the 20% stratum of small minority cells
    assert "small-cells" not in est.flags and est.bound == TWO_SIDED
    assert "one-sided-strata" in est.flags
    assert "a stratum (2) read one-sided on its own" in est.note
    # the upper end is the row-weighted sum of the entries' upper ends, the one-sided stratum's
    # being its entropy cap; the estimate and the lower end are those of the term as before
    assert est.ci_high == pytest.approx(_entries_sum(est, len(y)), rel=1e-12)
    assert small[0].ci_high > small[0].h_upper
    assert est.ci_high > est.diagnostics["raw"][2]
    assert est.ci_low <= est.value < est.ci_high
    # these draws' two-sided intervals missed the truth before the raise (upper ends 0.0946 and
    # 0.0949 for truths of 0.1041 and 0.1015; 0.0791 and 0.0849 with the shared penalty cell)
    assert est.diagnostics["raw"][2] < truth <= est.ci_high


def test_two_sided_strata_leave_the_term_as_it_was():
    # balanced classes in every stratum: no stratum entry is one-sided, nothing is raised
    rng = np.random.default_rng(5)
    n, d = 2000, 16
    c = rng.choice(3, size=n, p=SHARES)
    y = rng.integers(0, 2, size=n)
    z = rng.normal(size=(n, d)) + (y * 0.8)[:, None] * np.eye(d)[c]
    est = ProbeEstimator(seeds=2).estimate(z.astype(np.float32), y, c)
    assert all(e.bound == TWO_SIDED for e in est.strata)
    assert "one-sided-strata" not in est.flags
    assert est.ci_high < _entries_sum(est, n)  # the term's own interval, narrower than the sum


def test_cells_exact():
    inf = np.inf
    # [dims, penalty (strongest first), strata]; stratum 0's best is (1, 2), a weaker penalty than
    # the shared cell's; stratum 1's is (0, 0), a stronger one; stratum 2's is (0, 2)
    vs = np.stack([np.array([[0.70, 0.60, 0.50], [0.65, 0.55, 0.40]]),
                   np.array([[0.30, 0.35, 0.40], [0.45, 0.50, inf]]),
                   np.array([[0.50, 0.40, 0.10], [0.90, 0.90, 0.90]])], axis=2)
    rows = np.array([50, 200, 49])  # the third has too few validation rows for a choice of its own

    def path(v, r):
        return _LinearPath([None] * v.shape[2], None, [1, 2], [1.0, 0.1, 0.01], np.zeros(v.shape[:2]), {}, v, r)

    # the shared cell (0, 1): stratum 0 takes its weaker own cell, stratum 1 keeps the shared one
    # (its own is stronger), stratum 2 has too few rows, then enough
    assert path(vs, rows).cells(0, 1) == [(1, 2), (0, 1), (0, 1)]
    assert path(vs, np.array([50, 200, 50])).cells(0, 1) == [(1, 2), (0, 1), (0, 2)]
    # at the weakest penalty no own cell is weaker; one stratum; too few rows everywhere: None
    assert path(vs, np.array([50, 200, 50])).cells(1, 2) is None
    assert path(vs[..., 1:2], rows[1:2]).cells(0, 1) is None
    assert path(vs, np.array([49, 49, 49])).cells(0, 1) is None
    # the gaps at each stratum's own cell are 0; a stratum at the shared cell keeps its gap
    np.testing.assert_allclose(path(vs, rows).stratum_gaps(0, 1, [(1, 2), (0, 1), (0, 1)]),
                               [0.0, 0.35 - 0.30, 0.40 - 0.10], atol=1e-15)


def test_strata_with_few_validation_rows_keep_the_shared_cell_bit_for_bit(monkeypatch):
    # three strata of about 150 rows: about 24 validation rows each, under OWN_CELL_VAL_ROWS
    rng = np.random.default_rng(1)
    n, d = 450, 8
    c = np.repeat(np.arange(3), n // 3)
    y = rng.integers(0, 2, size=n)
    z = (rng.normal(size=(n, d)) + (y * 0.9)[:, None] * np.eye(d)[c]).astype(np.float32)
    own = ProbeEstimator(seeds=2).estimate(z, y, c)
    assert all("stratum_cells" not in f for f in own.diagnostics["folds"])
    monkeypatch.setattr(probe_module, "OWN_CELL_VAL_ROWS", 10**9)
    shared = ProbeEstimator(seeds=2).estimate(z, y, c)
    assert (own.value, own.ci_low, own.ci_high) == (shared.value, shared.ci_low, shared.ci_high)


def test_strata_with_enough_rows_are_fitted_at_their_own_cells(monkeypatch):
    z, y, c, truth = _draw(1)
    own = ProbeEstimator(seeds=2).estimate(z, y, c)
    cells = [f["stratum_cells"] for f in own.diagnostics["folds"] if "stratum_cells" in f]
    assert cells, "every stratum chose the shared cell in every fold"
    # [stratum code, dims, penalty] per stratum; some fold fits two strata at different penalties,
    # and no stratum's own penalty is stronger than the fold's shared one
    assert any(len({penalty for _, _, penalty in fold}) > 1 for fold in cells)
    shared_penalty = [f["penalty"] for f in own.diagnostics["folds"] if "stratum_cells" in f]
    assert all(penalty <= p for fold, p in zip(cells, shared_penalty) for _, _, penalty in fold)
    assert all(sorted(code for code, _, _ in fold) == [0, 1, 2] for fold in cells)
    monkeypatch.setattr(probe_module, "OWN_CELL_VAL_ROWS", 10**9)
    shared = ProbeEstimator(seeds=2).estimate(z, y, c)
    assert all("stratum_cells" not in f for f in shared.diagnostics["folds"])
    # the fits differ (one draw says nothing of which is nearer: over the 40 draws of the outside
    # family the median relative error went from 37% to 31%, RESULTS.md)
    assert own.value != shared.value


def test_two_sided_intervals_cover_over_draws():
    # 20 draws of the family (n = 2,000): two-sided statements cover in at least 90% of them and
    # every one-sided one holds (16 of 17 and 3 of 3 measured; 10 of 14 and 6 of 6 before the raise
    # of the upper end and the strata's own cells, 50f6f26)
    two, covered, one, held = 0, 0, 0, 0
    for seed in range(20):
        z, y, c, truth = _draw(seed)
        est = ProbeEstimator().estimate(z, y, c)
        if est.bound == TWO_SIDED:
            two, covered = two + 1, covered + (est.ci_low <= truth <= est.ci_high)
        else:
            one, held = one + 1, held + (est.ci_low <= truth)
    assert held == one
    assert two >= 10 and covered >= 0.9 * two, (covered, two)
