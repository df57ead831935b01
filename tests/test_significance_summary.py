"""Summary-statistics mode: paired p from mean +- sd and n, over the unknown correlation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from matprobe.errors import StatsError
from matprobe.stats.summary import (
    implied_r,
    p_range_over_r,
    paired_t_from_summary,
    parse_reported_p,
    summary_table,
)


def sample(n=12, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(10, 2, n)
    b = 0.7 * a + rng.normal(2, 1.5, n)
    return a, b


def test_matching_correlation_reproduces_ttest_rel():
    a, b = sample()
    r = np.corrcoef(a, b)[0, 1]
    res = paired_t_from_summary(a.mean(), a.std(ddof=1), b.mean(), b.std(ddof=1), len(a), r)
    ref = stats.ttest_rel(a, b)
    assert res["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    # and the reported p implies the sample's correlation
    back = implied_r(a.mean(), a.std(ddof=1), b.mean(), b.std(ddof=1), len(a), ref.pvalue)
    assert back == pytest.approx(r, rel=1e-8)


def test_zero_correlation_reproduces_ttest_ind_from_stats():
    m1, s1, m2, s2, n = 83.2, 1.8, 80.1, 2.1, 6
    ref = stats.ttest_ind_from_stats(m1, s1, n, m2, s2, n, equal_var=True)
    res = paired_t_from_summary(m1, s1, m2, s2, n, r=0.0, df=2 * n - 2)
    assert res["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    paired = paired_t_from_summary(m1, s1, m2, s2, n, r=0.0)
    assert paired["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert paired["df"] == n - 1
    assert paired["p"] == pytest.approx(2 * stats.t.sf(abs(ref.statistic), n - 1), rel=1e-12)


def test_range_over_r_is_at_the_ends():
    args = (5.0, 2.0, 4.0, 3.0, 8)
    p_max, p_min = p_range_over_r(*args)
    grid = [paired_t_from_summary(*args, r)["p"] for r in np.linspace(-1, 1, 41)]
    assert p_max == pytest.approx(max(grid), rel=1e-12) and p_min == pytest.approx(min(grid))
    assert np.all(np.diff(grid) <= 1e-15)  # p falls as r rises
    # at r = -1 the sd of differences is sd_a + sd_b (closed form)
    t = (5.0 - 4.0) / ((2.0 + 3.0) / math.sqrt(8))
    assert p_max == pytest.approx(2 * stats.t.sf(t, 7), rel=1e-12)


def test_summary_table_bound_and_exact_level_warning():
    frame = pd.DataFrame([
        {"comparison": "Related vs. Unrelated", "metric": "accuracy", "mean_a": 83.2,
         "sd_a": 1.8, "mean_b": 48.7, "sd_b": 2.1, "n": 3, "reported_p": "< 0.001"},
        {"comparison": "x", "metric": "score", "mean_a": 1.0, "sd_a": 1.0, "mean_b": 0.0,
         "sd_b": 1.0, "n": 20, "reported_p": "0.9"},
        {"comparison": "y", "metric": "accuracy", "mean_a": 83.2, "sd_a": 1.8, "mean_b": 48.7,
         "sd_b": 2.1, "n": 10, "reported_p": "< 0.001"},
    ])
    out = summary_table(frame, percent=True)  # accuracy in percent, as CrossMed gives it
    row = out.iloc[0]
    r_star = implied_r(83.2, 1.8, 48.7, 2.1, 3, 0.001)
    assert row.implied_r == pytest.approx(r_star)
    assert paired_t_from_summary(83.2, 1.8, 48.7, 2.1, 3, r_star)["p"] == pytest.approx(0.001)
    assert f"needs r > {r_star:.3f}" in row.warning
    assert "3 pairs cannot give p below 0.25" in row.warning  # 2^(1-3)
    assert row.p_independent == pytest.approx(
        stats.ttest_ind_from_stats(83.2, 1.8, 3, 48.7, 2.1, 3).pvalue, rel=1e-12)
    # p = 0.9 with n = 20, d = 1, sds 1 needs sd_d = sqrt(20) / t_19(0.45) > 2 = sd_a + sd_b,
    # i.e. r < -1: no correlation gives it
    assert math.isnan(out.iloc[1].implied_r)
    assert "no r in [-1, 1]" in out.iloc[1].warning
    # with 10 pairs even r = -1 (sd_d = 3.9) gives p far below 0.001: every r is consistent
    assert out.iloc[2].p_max < 0.001 and "every r in [-1, 1]" in out.iloc[2].warning
    assert "10 pairs" in out.iloc[2].warning  # 2^(1-10) = 0.00195 > 0.001


def test_summary_bad_input():
    with pytest.raises(StatsError, match="missing column"):
        summary_table(pd.DataFrame({"comparison": ["a"], "metric": ["m"]}))
    bad = pd.DataFrame([{"comparison": "a", "metric": "m", "mean_a": 1, "sd_a": 1,
                         "mean_b": 0, "sd_b": 1, "n": 1}])
    with pytest.raises(StatsError, match="line 2: n must be an integer >= 2"):
        summary_table(bad)
    with pytest.raises(StatsError, match="reported p"):
        parse_reported_p("about 0.01")
    assert parse_reported_p("< 0.001") == (0.001, "<")
