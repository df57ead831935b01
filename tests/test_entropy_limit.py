"""The upper confidence limit of H(Y|C) that caps every MI interval's upper end (issue 22,
thirteenth session): the sample's plug-in H(Y|C) falls short of the population's, and with
imbalanced classes near saturation the true MI lay above it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy
from scipy.stats import norm

from matprobe.data.entropy import conditional_entropy, conditional_entropy_upper

LEVEL = 0.95


def _direct_limit(y, c, level):
    """The limit written out stratum by stratum (plug-in from scipy, Miller-Madow, delta-method s.e.)."""
    n = len(y)
    plug_in, bias, surprise, ceiling = 0.0, 0.0, np.empty(n), 0.0
    for s in np.unique(c):
        rows = np.flatnonzero(c == s)
        labels, counts = np.unique(y[rows], return_counts=True)
        plug_in += len(rows) / n * scipy_entropy(counts / counts.sum())
        bias += (len(labels) - 1) / (2 * n)
        ceiling = max(ceiling, math.log(len(labels)))
        for lab, cnt in zip(labels, counts):
            surprise[rows[y[rows] == lab]] = -math.log(cnt / len(rows))
    se = surprise.std(ddof=1) / math.sqrt(n)
    return min(plug_in + bias + norm.ppf(1 - (1 - level) / 2) * se, ceiling), plug_in


@pytest.mark.parametrize("level", [0.9, 0.95])
def test_the_limit_against_a_direct_computation(level):
    rng = np.random.default_rng(1)
    y = rng.choice(5, 700, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    c = rng.integers(0, 3, 700)
    y[c == 2] = rng.choice(2, int((c == 2).sum()))  # a stratum with fewer labels
    want, plug_in = _direct_limit(y, c, level)
    assert conditional_entropy(y, c) == pytest.approx(plug_in, abs=1e-12)
    assert conditional_entropy_upper(y, c, level) == pytest.approx(want, abs=1e-12)
    assert conditional_entropy_upper(y.astype(str), [c], level) == pytest.approx(want, abs=1e-12)  # any labels
    # bits: the same limit / ln 2
    assert conditional_entropy_upper(y, c, level, unit="bits") == pytest.approx(want / math.log(2), abs=1e-12)


def test_the_limit_never_passes_the_largest_log_k():
    assert conditional_entropy_upper([0, 1, 2] * 30) == pytest.approx(math.log(3))
    assert conditional_entropy_upper(np.zeros(50, dtype=int)) == 0.0


@pytest.mark.parametrize("shape", ["imbalanced-8", "conditional"])
def test_coverage_of_the_population_entropy(shape):
    """Over 1,000 samples the limit lies above the population H(Y|C) in about 97.5% of them
    (one-sided at level 0.95); the plug-in alone does far less often."""
    rng = np.random.default_rng(7)
    if shape == "imbalanced-8":  # the shares of `saturated-imbalanced` (imbalance 0.5), n = 2k
        p = np.exp(-0.5 * np.arange(8))
        p /= p.sum()
        strata_p, label_p, n = np.array([1.0]), [p], 2000
    else:  # two strata with different label laws, n = 1k
        strata_p, label_p, n = np.array([0.7, 0.3]), [np.array([0.6, 0.3, 0.1]), np.array([0.9, 0.05, 0.05])], 1000
    truth = float(sum(w * scipy_entropy(q) for w, q in zip(strata_p, label_p)))
    above_limit = above_plug_in = 0
    reps = 1000
    for _ in range(reps):
        c = rng.choice(len(strata_p), n, p=strata_p)
        y = np.empty(n, dtype=np.int64)
        for s, q in enumerate(label_p):
            y[c == s] = rng.choice(len(q), int((c == s).sum()), p=q)
        above_limit += conditional_entropy_upper(y, c, LEVEL) >= truth
        above_plug_in += conditional_entropy(y, c) >= truth
    # nominal 97.5%: binomial s.d. 0.5% over 1,000 samples
    assert 0.955 <= above_limit / reps <= 0.995, above_limit
    assert above_plug_in / reps < 0.6, above_plug_in


def test_strata_and_seeds_are_capped_at_their_own_limits():
    """A conditional term's strata (what `matprobe check` reads) and its seeds are capped as the
    term is (fourteenth session): the upper end at the stratum's own entropy limit, computed
    here from the stratum's labels alone (`_direct_limit`), and where the term is one-sided
    (classes that differ only in scale: `misspecified-linear`) the strata are one-sided too."""
    from matprobe.mi import make_estimator
    from matprobe.mi.groundtruth import LatentMixtureTask

    task = LatentMixtureTask(k_classes=3, d=6, signal_dim=4, separation=0.0, scale_spread=0.7, seed=1)
    z, f = task.sample(1500, seed=1)
    c = np.random.default_rng(5).integers(0, 2, len(z))
    e = make_estimator("probe", seeds=1).estimate(z, f["Y"], c)
    assert e.bound == "lower" and "misspecified-linear" in e.flags
    assert len(e.strata) == 2
    for code, s in zip((0, 1), e.strata):
        y_c = f["Y"][c == code]
        limit, plug_in = _direct_limit(y_c, np.zeros(len(y_c)), LEVEL)
        assert s.h_upper == pytest.approx(plug_in, rel=1e-12)
        assert s.ci_high == pytest.approx(limit, rel=1e-9) and s.ci_high > s.h_upper
        assert 0.0 <= s.ci_low <= s.estimate <= s.h_upper and "lower bound" in s.note
    limit = e.diagnostics["h_upper_limit"]
    assert all(hi == limit and lo <= e.h_upper for lo, hi in e.diagnostics["seed_intervals"])
    # a two-sided term: its strata's upper ends are the bootstrap's, under the same limits
    gauss = LatentMixtureTask(k_classes=3, d=6, signal_dim=4, separation=1.0, seed=2)
    z, f = gauss.sample(1500, seed=2)
    e = make_estimator("probe", seeds=1).estimate(z, f["Y"], c)
    assert e.bound == "two-sided"
    for code, s in zip((0, 1), e.strata):
        y_c = f["Y"][c == code]
        limit, _ = _direct_limit(y_c, np.zeros(len(y_c)), LEVEL)
        assert s.ci_low <= s.estimate <= s.ci_high < limit and "lower bound" not in s.note


def _codes_by_stacked_unique(columns):
    """The joint codes as np.unique(axis=0) gives them on the stacked per-column codes."""
    stacked = np.stack([np.unique(np.asarray(c), return_inverse=True)[1] for c in columns], axis=1)
    return np.unique(stacked, axis=0, return_inverse=True)[1].reshape(-1)


def test_joint_codes_are_the_lexicographic_codes_of_the_rows():
    """`joint_codes` packs each row's column codes into one integer (fourteenth session: 11x
    faster at n = 20k); its codes must be those of the rows' lexicographic order, as
    np.unique(axis=0) numbers them, for ints, floats and strings, and past 2^62 (where it falls
    back to np.unique(axis=0) itself)."""
    from matprobe.data.entropy import joint_codes

    rng = np.random.default_rng(1)
    for _ in range(200):
        n, m = int(rng.integers(1, 2000)), int(rng.integers(1, 4))
        columns = []
        for kind in rng.integers(0, 3, m):
            k = int(rng.choice([1, 2, 3, 7, 300, 5000]))
            v = rng.integers(-k, k, n)
            columns.append([v, v.astype(str), v * 0.5][kind])
        np.testing.assert_array_equal(joint_codes(columns), _codes_by_stacked_unique(columns))
    wide = [rng.permutation(20_000) for _ in range(5)]  # 20,000^5 > 2^62 possible rows
    np.testing.assert_array_equal(joint_codes(wide), _codes_by_stacked_unique(wide))
    assert joint_codes([np.array([3, 1, 3]), np.array(["b", "a", "a"])]).tolist() == [2, 0, 1]
