"""Rare classes: few rows, much of the label entropy (issue 22, forty-fifth session).

Under the 5% line of rows of the "small-cells" rule, K = 10 classes with four rare ones (2.9% of the
rows, 14% of H(Y)) read 13% low with two-sided intervals that missed. What the rows of small cells
can carry is at most their entropy, so from 5% of H(Y|C) the upper end is raised by it
(`small-cells-widened`). Truths here by Monte Carlo of the exact posterior, independent of matprobe.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from matprobe.mi.base import SMALL_CELL_SHARE, cell_surprise, lexicographic_cells
from matprobe.mi.registry import make_estimator

torch.set_num_threads(1)

# one class at 80%, five at 4%, four rare ones (1.2% to 0.5%), normalised
PRIORS = np.array([0.8] + [0.04] * 5 + [0.012, 0.008, 0.005, 0.005])
PRIORS = PRIORS / PRIORS.sum()


def _rare_task(draw: int, d: int = 64, separation: float = 2.0):
    rng = np.random.default_rng(500 + draw)
    basis = np.linalg.qr(rng.standard_normal((d, 8)))[0]
    directions = rng.standard_normal((len(PRIORS), 8))
    return separation * (directions / np.linalg.norm(directions, axis=1, keepdims=True)) @ basis.T


def _sample(means, n: int, seed: int):
    rng = np.random.default_rng(seed)
    counts = np.maximum(np.round(PRIORS * n).astype(int), 10)
    counts[0] += n - counts.sum()
    y = rng.permutation(np.repeat(np.arange(len(PRIORS)), counts))
    return (means[y] + rng.standard_normal((n, means.shape[1]))).astype(np.float32), y


def _truth(means, n_mc: int = 200_000, seed: int = 7) -> tuple[float, float]:
    """I(Z;Y) = H(Y) - E[-log p(y|z)] with the exact posterior; (value, Monte Carlo s.e.)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(PRIORS), size=n_mc, p=PRIORS)
    z = means[y] + rng.standard_normal((n_mc, means.shape[1]))
    logits = np.log(PRIORS)[None] + z @ means.T - 0.5 * (means ** 2).sum(1)[None]
    loss = logsumexp(logits, axis=1) - logits[np.arange(n_mc), y]
    return float(-(PRIORS * np.log(PRIORS)).sum() - loss.mean()), float(loss.std() / np.sqrt(n_mc))


def _entropy_of_small_rows(c, y, sub, threshold) -> tuple[float, float]:
    """Row by row: sum of -log p(y|c) (plug-in) over rows whose (c, y, sub) cell has fewer than
    `threshold` rows, and over all rows."""
    small = every = 0.0
    for i in range(len(y)):
        in_c = c == c[i]
        p = np.mean(y[in_c] == y[i])
        cell = in_c & (y == y[i]) & (sub == sub[i])
        every += -np.log(p)
        if cell.sum() < threshold:
            small += -np.log(p)
    return small, every


@pytest.mark.parametrize("seed", range(12))
def test_small_cell_entropy_is_the_rows_own_surprise(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(80, 400))
    c = rng.integers(0, int(rng.integers(1, 4)), n)
    y = np.minimum(rng.geometric(rng.uniform(0.2, 0.6), n) - 1, 5)  # long-tailed classes
    sub = rng.integers(0, int(rng.integers(1, 3)), n)
    inputs = int(rng.integers(5, 40))
    cell, (cs, cy, _) = lexicographic_cells([c, y, sub])
    counts = np.bincount(cell, minlength=len(cs))
    surprise = cell_surprise(counts, cs, cy)  # the small cells as the estimator takes them
    got = (surprise[counts < max(20, inputs)].sum(), surprise.sum())
    want = _entropy_of_small_rows(c, y, sub, max(20, inputs))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9)


def test_rare_classes_widen_the_upper_end_by_their_entropy_and_cover():
    # the linear level alone and one seed (time); the other checks still make some terms one-sided
    est = make_estimator("probe", seeds=1, folds=5, ladder=("linear",))
    covered = covered_unwidened = two_sided = 0
    draws = range(12)
    for draw in draws:
        means = _rare_task(draw)
        z, y = _sample(means, 2000, seed=draw)
        truth, se = _truth(means)
        e = est.estimate(z, y)
        counts = np.bincount(y)
        p = counts / counts.sum()
        assert p[counts < 65].sum() < SMALL_CELL_SHARE  # under the line by rows ...
        small = float((counts * -np.log(p))[counts < 65].sum())
        assert small / float((counts * -np.log(p)).sum()) >= SMALL_CELL_SHARE  # ... over it by entropy
        assert "small-cells" not in e.flags
        # said where it moved the upper end: not in a term one-sided for another reason
        assert ("small-cells-widened" in e.flags) == ("raised by it" in e.note) == (e.bound != "lower")
        if e.bound != "lower":  # two-sided: the upper end is the raw one plus the rows' entropy per row
            raw_high = e.diagnostics["raw"][2]
            assert e.ci_high == pytest.approx(min(raw_high + small / len(y), e.diagnostics["h_upper_limit"]), abs=1e-9)
            covered_unwidened += raw_high + 2 * se >= truth
            two_sided += 1
        covered += e.ci_low - 2 * se <= truth <= e.ci_high + 2 * se
    assert covered == len(draws)
    # without the slack the two-sided intervals missed (what the rule is for)
    assert covered_unwidened < two_sided
    assert two_sided >= 3


def test_a_stratum_of_rare_classes_gets_its_own_slack():
    # stratum 0: the rare-class mix; stratum 1: five balanced classes of the same means (no small
    # cells). The linear level alone, so that no check makes the term one-sided (the strata's
    # entries are two-sided only in a two-sided term)
    means = _rare_task(0)
    z0, y0 = _sample(means, 2000, seed=0)
    y1 = np.repeat(np.arange(5), 300)
    z1 = (means[y1] + np.random.default_rng(4).standard_normal((1500, 64))).astype(np.float32)
    z, y = np.concatenate([z0, z1]), np.concatenate([y0, y1])
    c = np.r_[np.zeros(2000, int), np.ones(1500, int)]
    e = make_estimator("probe", seeds=1, folds=5, ladder=("linear",)).estimate(z, y, c)
    assert e.bound == "two-sided", e.flags
    s0, s1 = e.strata
    counts = np.bincount(y0)
    p = counts / counts.sum()
    slack0 = float((counts * -np.log(p))[counts < 65].sum()) / 2000
    assert f"upper end raised by {slack0:.4f} nats" in s0.note and s0.bound == "two-sided"
    assert s0.ci_high >= s0.estimate + slack0 - 1e-9
    assert "raised" not in s1.note and s1.bound == "two-sided"
    # the term: its small cells' entropy is over 5% of H(Y|C), their rows under 5% of its rows
    h_rows = float((counts * -np.log(p)).sum()) + 1500 * np.log(5)
    assert slack0 * 2000 / h_rows > SMALL_CELL_SHARE and (counts[counts < 65].sum() / 3500) < SMALL_CELL_SHARE
    assert "small-cells-widened" in e.flags
