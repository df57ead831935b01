"""The exact (Clopper-Pearson) interval of a binomial proportion: one formula for every layer that
reports a share of right answers or errors (`store info` below `mi/`, `theory.pac` and `check`
above it), so the store does not import the theory layer."""

from __future__ import annotations

from scipy import stats


def clopper_pearson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided exact interval for k successes of n (0 <= k <= n, n >= 1; the callers check).

    >>> lo, hi = clopper_pearson_interval(0, 10)
    >>> lo, round(hi, 6)
    (0.0, 0.308497)
    """
    alpha = 1.0 - float(level)
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi
