"""Paired tests from summary statistics (mean +- sd per condition, n pairs).

A paired p is not identifiable from the two means and sds alone: the sd of the differences
is sd_d^2 = sd_a^2 + sd_b^2 - 2 r sd_a sd_b and depends on the unknown correlation r between
the paired values (docs/design.md §5). This module reports the range of the paired p over
r, and for a reported p the r it implies. At r = 0 the paired t equals the equal-variance
two-sample t of ``scipy.stats.ttest_ind_from_stats`` (same n in both groups); only the
degrees of freedom differ (n - 1 paired, 2n - 2 independent).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
from scipy import stats

from matprobe.errors import StatsError
from matprobe.stats.significance import min_exact_p

R_GRID = (-1.0, 0.0, 0.5, 0.9)


def _check(sd_a: float, sd_b: float, n: int, what: str = "summary") -> None:
    if not (sd_a >= 0 and sd_b >= 0):
        raise StatsError(f"{what}: standard deviations must be >= 0 (got {sd_a}, {sd_b})")
    if n < 2 or int(n) != n:
        raise StatsError(f"{what}: n must be an integer >= 2 pairs (got {n})")


def sd_of_difference(sd_a: float, sd_b: float, r: float) -> float:
    """sd of a - b when corr(a, b) = r: sqrt(sd_a² + sd_b² - 2 r sd_a sd_b).

    Examples
    --------
    >>> from matprobe.stats.summary import sd_of_difference
    >>> sd_of_difference(3.0, 4.0, 0.0)
    5.0
    >>> sd_of_difference(2.0, 2.0, 1.0)
    0.0
    """
    return math.sqrt(max(0.0, sd_a**2 + sd_b**2 - 2 * r * sd_a * sd_b))


def paired_t_from_summary(mean_a: float, sd_a: float, mean_b: float, sd_b: float, n: int,
                          r: float, df: float | None = None) -> dict:
    """Paired t and two-sided p for ``a - b`` from summary statistics at correlation ``r``.

    ``df`` defaults to n - 1 (paired); pass 2n - 2 to get the independent-samples p.

    Examples
    --------
    Means 1 and 0, both sds 1, r = 0.5 (so the differences have sd 1), 10 pairs:
    t = 1 / (1 / sqrt 10) on 9 df, as `scipy.stats.ttest_1samp` gives for any 10 differences
    with mean 1 and sd 1.

    >>> from matprobe.stats.summary import paired_t_from_summary
    >>> res = paired_t_from_summary(1.0, 1.0, 0.0, 1.0, n=10, r=0.5)
    >>> round(res["t"], 6), res["df"], round(res["p"], 6)
    (3.162278, 9, 0.011508)
    """
    _check(sd_a, sd_b, n)
    if not -1.0 <= r <= 1.0:
        raise StatsError(f"correlation r={r} is outside [-1, 1]")
    df = n - 1 if df is None else df
    diff = mean_a - mean_b
    sd_d = sd_of_difference(sd_a, sd_b, r)
    if sd_d == 0:
        t = math.copysign(math.inf, diff) if diff else math.nan
    else:
        t = diff / (sd_d / math.sqrt(n))
    p = float(2 * stats.t.sf(abs(t), df)) if not math.isnan(t) else math.nan
    return {"mean_diff": diff, "sd_diff": sd_d, "r": r, "t": t, "df": df, "p": p}


def p_range_over_r(mean_a: float, sd_a: float, mean_b: float, sd_b: float, n: int,
                   r_low: float = -1.0, r_high: float = 1.0) -> tuple[float, float]:
    """(largest, smallest) paired p for r in [r_low, r_high]. sd_d shrinks as r grows, so p
    is monotone non-increasing in r and the extremes sit at the ends."""
    p_max = paired_t_from_summary(mean_a, sd_a, mean_b, sd_b, n, r_low)["p"]
    p_min = paired_t_from_summary(mean_a, sd_a, mean_b, sd_b, n, r_high)["p"]
    return p_max, p_min


def r_irrelevant(mean_a: float, sd_a: float, mean_b: float, sd_b: float) -> str:
    """Why the paired p does not depend on r ('' when it does): with no mean difference p = 1
    at every r (t = 0; at the one r where sd_d = 0 it is undefined), and with one sd 0 the
    sd of the differences is the other sd whatever r is."""
    if mean_a == mean_b:
        return "the means are equal, so p = 1 at every r where it is defined"
    if sd_a == 0 or sd_b == 0:
        return "one sd is 0, so the sd of the differences does not depend on r"
    return ""


def implied_r(mean_a: float, sd_a: float, mean_b: float, sd_b: float, n: int,
              p: float) -> float:
    """Correlation r at which the paired t-test on n pairs gives two-sided ``p``.

    Solves t = |diff| sqrt(n) / sd_d for sd_d with t = t_{n-1}.isf(p / 2), then
    r = (sd_a^2 + sd_b^2 - sd_d^2) / (2 sd_a sd_b). NaN when no r in [-1, 1] gives p,
    and when p does not depend on r (`r_irrelevant`)."""
    _check(sd_a, sd_b, n)
    if not 0 < p <= 1:
        raise StatsError(f"reported p={p} must be in (0, 1]")
    diff = abs(mean_a - mean_b)
    if r_irrelevant(mean_a, sd_a, mean_b, sd_b):
        return math.nan
    t_needed = float(stats.t.isf(p / 2, n - 1))
    sd_d = diff * math.sqrt(n) / t_needed if t_needed > 0 else math.inf
    r = (sd_a**2 + sd_b**2 - sd_d**2) / (2 * sd_a * sd_b)
    return r if -1.0 - 1e-12 <= r <= 1.0 + 1e-12 else math.nan


def parse_reported_p(text) -> tuple[float, str]:
    """'< 0.001' -> (0.001, '<'); '0.004' -> (0.004, '='); '' or NaN -> (nan, '')."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return math.nan, ""
    s = str(text).strip()
    if not s:
        return math.nan, ""
    m = re.fullmatch(r"(<|<=|=)?\s*([0-9.eE+-]+)", s)
    if not m:
        raise StatsError(f"reported p {text!r}: write a number such as 0.004 or '< 0.001'")
    return float(m.group(2)), "<" if m.group(1) in ("<", "<=") else "="


def exact_level_warning(n: int, p: float, shown: str = "") -> str:
    """Warn when exact tests (sign flip, Wilcoxon) on n pairs cannot go as low as ``p``."""
    floor = min_exact_p(n)
    if not math.isnan(p) and floor > p:
        return (f"an exact sign-flip or Wilcoxon test on {n} pairs cannot give p below "
                f"{floor:.3g}, so p {shown or f'= {p:g}'} can only come from a parametric test")
    return ""


SUMMARY_COLUMNS = ["comparison", "metric", "mean_a", "sd_a", "mean_b", "sd_b", "n"]


def summary_table(summary: pd.DataFrame, r_grid=R_GRID, source: str = "summary") -> pd.DataFrame:
    """For each row (comparison, metric, mean_a, sd_a, mean_b, sd_b, n, [reported_p]):
    the paired p at each r in ``r_grid``, the p range over r in [-1, 1], the independent
    two-sample p (scipy ttest_ind_from_stats), the r implied by ``reported_p`` (a bound when
    it is '< x') and a warning when exact tests cannot reach the reported level."""
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise StatsError(f"{source}: missing column(s) {', '.join(missing)}; expected "
                         f"{', '.join(SUMMARY_COLUMNS)}, [reported_p]")
    rows = []
    for i, rec in summary.reset_index(drop=True).iterrows():
        where = f"{source}: line {i + 2}"
        try:
            vals = {k: float(rec[k]) for k in ("mean_a", "sd_a", "mean_b", "sd_b", "n")}
        except (TypeError, ValueError):
            raise StatsError(f"{where}: mean_a, sd_a, mean_b, sd_b and n must be numbers") from None
        if any(math.isnan(v) for v in vals.values()):
            raise StatsError(f"{where}: empty mean, sd or n; fill all of them")
        n = vals["n"]
        _check(vals["sd_a"], vals["sd_b"], n, where)
        n = int(n)
        args = (vals["mean_a"], vals["sd_a"], vals["mean_b"], vals["sd_b"], n)
        row = {"comparison": rec["comparison"], "metric": rec["metric"], "n": n,
               "mean_diff": vals["mean_a"] - vals["mean_b"]}
        for r in r_grid:
            row[f"p_r={r:g}"] = paired_t_from_summary(*args, r)["p"]
        row["p_max"], row["p_min"] = p_range_over_r(*args)
        row["p_independent"] = float(stats.ttest_ind_from_stats(
            vals["mean_a"], vals["sd_a"], n, vals["mean_b"], vals["sd_b"], n).pvalue)
        rep, op = parse_reported_p(rec.get("reported_p", None))
        row["reported_p"] = "" if math.isnan(rep) else (f"< {rep:g}" if op == "<" else
                                                        f"= {rep:g}")
        r_imp = implied_r(*args, rep) if not math.isnan(rep) else math.nan
        row["implied_r"] = r_imp
        notes = []
        if not math.isnan(rep):
            span = f"(p runs from {row['p_min']:.3g} at r=1 to {row['p_max']:.3g} at r=-1)"
            flat = r_irrelevant(vals["mean_a"], vals["sd_a"], vals["mean_b"], vals["sd_b"])
            if flat:
                notes.append(f"implied r n/a: {flat}")
            elif op == "<" and row["p_max"] < rep:
                notes.append(f"every r in [-1, 1] gives p {row['reported_p']} {span}")
            elif math.isnan(r_imp):
                notes.append(f"no r in [-1, 1] gives p {row['reported_p']} {span}")
            elif op == "<":
                notes.append(f"p {row['reported_p']} needs r > {r_imp:.3f}")
            notes.append(exact_level_warning(n, rep, row["reported_p"]))
        row["min_exact_p"] = min_exact_p(n)
        row["warning"] = "; ".join(x for x in notes if x)
        rows.append(row)
    return pd.DataFrame(rows)


def read_summary(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise StatsError(f"{path}: summary file not found")
    try:
        return pd.read_csv(path, comment="#", dtype={"reported_p": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise StatsError(f"{path}: not a readable CSV ({exc})") from None
