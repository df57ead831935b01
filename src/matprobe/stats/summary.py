"""Paired tests from summary statistics (mean +- sd per condition, n pairs).

A paired p is not identifiable from the two means and sds alone: the sd of the differences
is sd_d^2 = sd_a^2 + sd_b^2 - 2 r sd_a sd_b and depends on the unknown correlation r between
the paired values (docs/design.md §5). This module reports the range of the paired p over
r, and for a reported p the r it implies. At r = 0 the paired t equals the equal-variance
two-sample t of ``scipy.stats.ttest_ind_from_stats`` (same n in both groups); only the
degrees of freedom differ (n - 1 paired, 2n - 2 independent).

Published numbers are rounded: a mean or sd written with k decimals lies within
±0.5·10^-k of the value it stands for, and so does a reported p (`half_unit`). The p range
and the implied r are therefore also given over every value within that rounding
(`p_range_within_rounding`, `implied_r_within_rounding`), and "no r gives p" is said only
when no r and no value within the rounding gives it.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas as pd
from scipy import stats

from matprobe.checks import _FRACTION_NAME, check_proportion_units, percent_metrics, percent_notes
from matprobe.errors import StatsError
from matprobe.stats.significance import min_exact_p, parse_comparison

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


def _split_reported(text) -> tuple[str, str]:
    """'< 0.001' -> ('<', '0.001'); '0.004' -> ('=', '0.004'); '' or NaN -> ('', '')."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return "", ""
    s = str(text).strip()
    if not s:
        return "", ""
    # as papers print it: 'p < 0.001', 'P=0.002', '≤0.001', '0.01*' (significance stars)
    s = re.sub(r"^[pP]\s*(?=[<=≤])", "", s).replace("≤", "<=").rstrip("*").strip()
    m = re.fullmatch(r"(<|<=|=)?\s*([0-9.eE+-]+)", s)
    if not m:
        raise StatsError(f"reported p {text!r}: write a number such as 0.004 or '< 0.001' (or leave the cell "
                         "empty where the paper gives none, as for 'n.s.')")
    return "<" if m.group(1) in ("<", "<=") else "=", m.group(2)


def parse_reported_p(text) -> tuple[float, str]:
    """'< 0.001' -> (0.001, '<'); '0.004' -> (0.004, '='); '' or NaN -> (nan, '')."""
    op, number = _split_reported(text)
    if not op:
        return math.nan, ""
    try:
        return float(number), op
    except ValueError:
        raise StatsError(f"reported p {text!r}: write a number such as 0.004 or '< 0.001'") from None


def exact_level_warning(n: int, p: float, shown: str = "") -> str:
    """Warn when exact tests (sign flip, Wilcoxon) on n pairs cannot go as low as ``p``."""
    floor = min_exact_p(n)
    if not math.isnan(p) and floor > p:
        return (f"an exact sign-flip or Wilcoxon test on {n} pairs cannot give p below "
                f"{floor:.3g}, so p {shown or f'= {p:g}'} can only come from a parametric test")
    return ""


# ---------------------------------------------------------------------- rounding of the inputs


def half_unit(value) -> float:
    """Half a unit in the last decimal a number is written with: the rounding it carries.

    A string counts its written decimals ('0.0140' has 4, so ±5e-05; '43' ±0.5; '1.5e-3'
    ±5e-05); a number those of its shortest repr (0.0141 -> ±5e-05; a computed mean such as
    0.1 + 0.2 carries ±5e-18). NaN for anything that is not a finite number.

    Examples
    --------
    >>> from matprobe.stats.summary import half_unit
    >>> half_unit("0.0141"), half_unit("0.0140"), half_unit("43"), half_unit(0.323)
    (5e-05, 5e-05, 0.5, 0.0005)
    """
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        text = str(int(value))
    else:
        try:
            text = repr(float(value))
        except (TypeError, ValueError):
            return math.nan
    try:
        exponent = Decimal(text).as_tuple().exponent
    except InvalidOperation:
        return math.nan
    return 0.5 * 10.0**exponent if isinstance(exponent, int) else math.nan


def _within(mean_a: float, sd_a: float, mean_b: float, sd_b: float, half) -> tuple:
    """(|diff| low, |diff| high, (sd_a low, high), (sd_b low, high)) over the values within
    ± half = (mean_a, sd_a, mean_b, sd_b) half-widths of the ones given."""
    h_ma, h_sa, h_mb, h_sb = half
    diff, slack = abs(mean_a - mean_b), h_ma + h_mb
    return (max(0.0, diff - slack), diff + slack, (max(0.0, sd_a - h_sa), sd_a + h_sa),
            (max(0.0, sd_b - h_sb), sd_b + h_sb))


def _p_of(diff: float, sd_d: float, n: int) -> float:
    """Two-sided paired p for |mean diff| ``diff`` and sd of the differences ``sd_d``."""
    if diff == 0:
        return 1.0
    if sd_d == 0:
        return 0.0
    return float(2 * stats.t.sf(diff * math.sqrt(n) / sd_d, n - 1))


def p_range_within_rounding(mean_a: float, sd_a: float, mean_b: float, sd_b: float, n: int,
                            half=(0.0, 0.0, 0.0, 0.0)) -> tuple[float, float]:
    """(largest, smallest) paired p over r in [-1, 1] and every mean and sd within ± ``half``
    (half-widths of mean_a, sd_a, mean_b, sd_b: their rounding, `half_unit`).

    p falls as |t| = |diff| sqrt(n) / sd_d rises, and sd_d runs from |sd_a - sd_b| (r = 1) to
    sd_a + sd_b (r = -1): the largest p has the smallest |diff| and both sds at the top of
    their rounding, the smallest p the largest |diff| and the sds as close as the rounding
    lets them be. With ``half`` zero this is `p_range_over_r`.

    Examples
    --------
    A difference of 0.045 with sds 0.0141 and 0.0212 on 2 pairs: at r = -1 the paired p is
    0.3224, below a reported 0.323 (0.3225 to 0.3235); the sds, rounded to 4 decimals, can be
    up to 0.00005 larger each, and the means' rounding can shrink the difference by up to
    0.0001, which lifts the largest p to 0.3238.

    >>> from matprobe.stats.summary import p_range_over_r, p_range_within_rounding
    >>> [round(p, 4) for p in p_range_over_r(0.4521, 0.0141, 0.4071, 0.0212, 2)]
    [0.3224, 0.0707]
    >>> half = (5e-05, 5e-05, 5e-05, 5e-05)
    >>> [round(p, 4) for p in p_range_within_rounding(0.4521, 0.0141, 0.4071, 0.0212, 2, half)]
    [0.3238, 0.0696]
    """
    _check(sd_a, sd_b, n)
    d_lo, d_hi, (a_lo, a_hi), (b_lo, b_hi) = _within(mean_a, sd_a, mean_b, sd_b, half)
    return _p_of(d_lo, a_hi + b_hi, n), _p_of(d_hi, max(0.0, a_lo - b_hi, b_lo - a_hi), n)


def _sd_d_range(r: float, sa: tuple, sb: tuple) -> tuple[float, float]:
    """(smallest, largest) sd of the differences at correlation r over sd_a in sa, sd_b in sb.
    sd_d^2 is a convex quadratic in (sd_a, sd_b) for |r| <= 1: its largest value is at a corner
    of the box, its smallest on an edge, where the one free sd is clipped to r times the other."""
    def var(x: float, y: float) -> float:
        return x * x + y * y - 2 * r * x * y

    high = max(var(x, y) for x in sa for y in sb)
    low = min([var(x, min(max(r * x, sb[0]), sb[1])) for x in sa]
              + [var(min(max(r * y, sa[0]), sa[1]), y) for y in sb])
    return math.sqrt(max(0.0, low)), math.sqrt(max(0.0, high))


def _edge(holds, first_true: bool) -> float:
    """Where a monotone condition on r in [-1, 1] changes: the smallest r where it holds
    (``first_true``: false below, true above) or the largest (true below, false above)."""
    lo, hi = -1.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if holds(mid) == first_true:
            hi = mid
        else:
            lo = mid
    return hi if first_true else lo


def implied_r_within_rounding(mean_a: float, sd_a: float, mean_b: float, sd_b: float, n: int,
                              p_low: float, p_high: float, half=(0.0, 0.0, 0.0, 0.0)
                              ) -> tuple[float, float]:
    """(lowest, highest) correlation r in [-1, 1] at which some means and sds within ± ``half``
    of those given make the paired t-test on n pairs give a p in [p_low, p_high] (a reported
    '= 0.323' is [0.3225, 0.3235], a '< 0.001' is [0, 0.001]); (nan, nan) when none does.

    At each r the values within the rounding give every |t| between the smallest |diff| over
    the largest sd_d and the largest |diff| over the smallest sd_d; both ends rise with r, so
    the r that reach [p_low, p_high] form one interval, found by bisection. With ``half`` zero
    and p_low = p_high = p both ends are `implied_r`.

    Examples
    --------
    >>> import math
    >>> from matprobe.stats.summary import implied_r, implied_r_within_rounding
    >>> math.isnan(implied_r(0.4521, 0.0141, 0.4071, 0.0212, 2, 0.323))  # as given: no r
    True
    >>> half = (5e-05, 5e-05, 5e-05, 5e-05)
    >>> lo, hi = implied_r_within_rounding(0.4521, 0.0141, 0.4071, 0.0212, 2, 0.3225, 0.3235, half)
    >>> round(lo, 3), round(hi, 3)
    (-1.0, -0.98)
    """
    _check(sd_a, sd_b, n)
    d_lo, d_hi, sa, sb = _within(mean_a, sd_a, mean_b, sd_b, half)
    t_lo = float(stats.t.isf(p_high / 2, n - 1)) if p_high < 1 else 0.0
    t_hi = float(stats.t.isf(p_low / 2, n - 1)) if p_low > 0 else math.inf
    root_n = math.sqrt(n)

    def small_enough(r: float) -> bool:  # some value gives p <= p_high (|t| >= t_lo)
        return d_hi * root_n >= t_lo * _sd_d_range(r, sa, sb)[0]

    def large_enough(r: float) -> bool:  # some value gives p >= p_low (|t| <= t_hi)
        return math.isinf(t_hi) or d_lo * root_n <= t_hi * _sd_d_range(r, sa, sb)[1]

    if not (small_enough(1.0) and large_enough(-1.0)):
        return math.nan, math.nan
    low = -1.0 if small_enough(-1.0) else _edge(small_enough, first_true=True)
    high = 1.0 if large_enough(1.0) else _edge(large_enough, first_true=False)
    return (low, high) if low <= high else (math.nan, math.nan)


def reported_p_bounds(text, rounding: bool = True) -> tuple[float, float]:
    """The p values a reported p stands for: '< 0.001' -> (0, 0.001); '0.323' -> (0.3225,
    0.3235), half a unit of its last written decimal either side (none with ``rounding``
    False); '' -> (nan, nan)."""
    p, op = parse_reported_p(text)
    if math.isnan(p):
        return math.nan, math.nan
    if op == "<":
        return 0.0, p
    half = half_unit(_split_reported(text)[1]) if rounding else 0.0
    return max(0.0, p - half), min(1.0, p + half)


def rounding_text(half, p_half: float = math.nan) -> str:
    """The rounding taken, in words: 'means and sds ±5e-05, reported p ±0.0005'."""
    if not any(half) and (math.isnan(p_half) or not p_half):
        return "none (the values are taken as exact)"
    if len(set(half)) == 1:
        parts = [f"means and sds ±{half[0]:g}"]
    else:
        parts = [f"{k} ±{h:g}" for k, h in zip(VALUE_COLUMNS, half)]
    if not math.isnan(p_half):
        parts.append(f"reported p ±{p_half:g}")
    return ", ".join(parts)


# ---------------------------------------------------------------------- the summary table

SUMMARY_COLUMNS = ["comparison", "metric", "mean_a", "sd_a", "mean_b", "sd_b", "n"]
VALUE_COLUMNS = ("mean_a", "sd_a", "mean_b", "sd_b")
UNITS = {"fraction": "fraction", "percent": "percentage points", "other": ""}


def _parse_rows(summary: pd.DataFrame, source: str, rounding: bool) -> list[dict]:
    """Each row's numbers (floats), n and the half-widths of its means and sds."""
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise StatsError(f"{source}: missing column(s) {', '.join(missing)}; expected "
                         f"{', '.join(SUMMARY_COLUMNS)}, [reported_p]")
    if summary.empty:
        raise StatsError(f"{source}: no rows; write one line per comparison and metric under the header")
    out = []
    for i, rec in summary.reset_index(drop=True).iterrows():
        where = f"{source}: line {i + 2}"
        try:
            vals = {k: float(rec[k]) for k in (*VALUE_COLUMNS, "n")}
        except (TypeError, ValueError):
            raise StatsError(f"{where}: mean_a, sd_a, mean_b, sd_b and n must be numbers") from None
        if any(math.isnan(v) for v in vals.values()):
            raise StatsError(f"{where}: empty mean, sd or n; fill all of them")
        _check(vals["sd_a"], vals["sd_b"], vals["n"], where)
        half = tuple(half_unit(rec[k]) if rounding else 0.0 for k in VALUE_COLUMNS)
        out.append({"rec": rec, "vals": vals, "n": int(vals["n"]), "half": half, "line": i + 2})
    return out


def _conditions(comparison) -> tuple[str, str]:
    try:
        comp = parse_comparison(str(comparison))
        return comp.a, comp.b
    except StatsError:
        return f"{comparison} (mean_a)", f"{comparison} (mean_b)"


def _units(rows: list[dict], source: str, percent: bool) -> tuple[list[str], list[str]]:
    """The unit of each row's mean difference and the notes on percent, with `significance`'s
    rule (matprobe.checks): an accuracy-like metric in percent is refused unless ``percent``,
    and one in percent in one condition and fractions in another always."""
    frame = pd.DataFrame([{"metric": str(r["rec"]["metric"]), "condition": cond, "_row": f"line {r['line']}",
                           "value": r["vals"][col]}
                          for r in rows for cond, col in zip(_conditions(r["rec"]["comparison"]),
                                                              ("mean_a", "mean_b"))],
                         columns=["metric", "condition", "_row", "value"])
    check_proportion_units(frame, source)
    notes = percent_notes(frame, source, percent, StatsError)  # refused, or said
    in_percent = set(percent_metrics(frame))
    units = [UNITS["percent"] if str(r["rec"]["metric"]) in in_percent else
             UNITS["fraction"] if _FRACTION_NAME.search(str(r["rec"]["metric"])) else UNITS["other"]
             for r in rows]
    return units, notes


def _reported_notes(row: dict, op: str, rep: float, flat: str, r_imp: float, r_range) -> list[str]:
    """What a reported p says about r, at the values as given and within their rounding."""
    if flat:
        return [f"implied r n/a: {flat}"]
    given = f"{row['p_min']:.3g} at r=1 to {row['p_max']:.3g} at r=-1"
    widened = f"{row['p_min_rounding']:.3g} to {row['p_max_rounding']:.3g}"
    spans = [f"p runs from {given}"]
    if widened != f"{row['p_min']:.3g} to {row['p_max']:.3g}":
        spans.append(f"from {widened} within the rounding")
    span, taken = f"({'; '.join(spans)})", f"({'; '.join([*spans, 'rounding taken: ' + row['rounding']])})"
    shown, (r_lo, r_hi) = row["reported_p"], r_range
    if math.isnan(r_lo):
        return [f"no r in [-1, 1] gives p {shown}, nor do any values within the rounding of the inputs {taken}"]
    if op == "<":
        if row["p_max_rounding"] < rep:
            return [f"every r in [-1, 1] gives p {shown} {span}"]
        if row["p_max"] < rep:
            return [f"every r in [-1, 1] gives p {shown} at the values as given, but within their rounding "
                    f"it needs r > {r_lo:.3f} {taken}"]
        if math.isnan(r_imp):
            return [f"p {shown}: no r gives it at the values as given; within their rounding, r > {r_lo:.3f} "
                    f"does {taken}"]
        return [f"p {shown} needs r > {r_imp:.3f}" + (f" (r > {r_lo:.3f} within the rounding)"
                                                      if f"{r_lo:.3f}" != f"{r_imp:.3f}" else "")]
    if math.isnan(r_imp):
        return [f"p {shown} lies outside the p range at the values as given but inside it within their "
                f"rounding, at r from {r_lo:.3f} to {r_hi:.3f} {taken}"]
    return []


def _summary_row(parsed: dict, unit: str, r_grid, rounding: bool) -> dict:
    rec, vals, n, half = parsed["rec"], parsed["vals"], parsed["n"], parsed["half"]
    args = (vals["mean_a"], vals["sd_a"], vals["mean_b"], vals["sd_b"], n)
    row = {"comparison": rec["comparison"], "metric": rec["metric"], "n": n,
           "mean_diff": vals["mean_a"] - vals["mean_b"], "unit": unit}
    for r in r_grid:
        row[f"p_r={r:g}"] = paired_t_from_summary(*args, r)["p"]
    row["p_max"], row["p_min"] = p_range_over_r(*args)
    row["p_max_rounding"], row["p_min_rounding"] = p_range_within_rounding(*args, half)
    row["p_independent"] = float(stats.ttest_ind_from_stats(
        vals["mean_a"], vals["sd_a"], n, vals["mean_b"], vals["sd_b"], n).pvalue)
    text = rec.get("reported_p", None)
    rep, op = parse_reported_p(text)
    row["reported_p"] = "" if math.isnan(rep) else (f"< {rep:g}" if op == "<" else f"= {rep:g}")
    r_imp = implied_r(*args, rep) if not math.isnan(rep) else math.nan
    flat = r_irrelevant(*args[:4])
    r_range = (math.nan, math.nan)
    if not math.isnan(rep) and not flat:
        r_range = implied_r_within_rounding(*args, *reported_p_bounds(text, rounding), half)
    row["implied_r"], (row["implied_r_low"], row["implied_r_high"]) = r_imp, r_range
    p_half = half_unit(_split_reported(text)[1]) if op == "=" and rounding else math.nan
    row["rounding"] = rounding_text(half, p_half)
    notes = []
    if not math.isnan(rep):
        notes = _reported_notes(row, op, rep, flat, r_imp, r_range)
        notes.append(exact_level_warning(n, rep, row["reported_p"]))
    row["min_exact_p"] = min_exact_p(n)
    row["warning"] = "; ".join(x for x in notes if x)
    return row


def _summarize(summary: pd.DataFrame, r_grid, source: str, percent: bool, rounding: bool
               ) -> tuple[pd.DataFrame, list[str]]:
    rows = _parse_rows(summary, source, rounding)
    units, notes = _units(rows, source, percent)
    return pd.DataFrame([_summary_row(r, u, r_grid, rounding) for r, u in zip(rows, units)]), notes


def summary_table(summary: pd.DataFrame, r_grid=R_GRID, source: str = "summary", percent: bool = False,
                  rounding: bool = True) -> pd.DataFrame:
    """For each row (comparison, metric, mean_a, sd_a, mean_b, sd_b, n, [reported_p]):
    the paired p at each r in ``r_grid``, the p range over r in [-1, 1] at the values as given
    (p_max, p_min) and over every value within their rounding (p_max_rounding, p_min_rounding;
    ``rounding`` False takes them as exact), the independent two-sample p (scipy
    ttest_ind_from_stats, df 2n - 2), the r implied by ``reported_p`` as given (a bound when it
    is '< x') and its range within the rounding (implied_r_low, implied_r_high), the unit of
    mean_diff, and a warning when no r gives the reported p or exact tests cannot reach it.

    Accuracy-like metrics in percent are refused unless ``percent`` (then their differences are
    in percentage points), as `significance` does.

    Means and sds given as strings (as `read_summary` reads them) carry their written decimals;
    numbers those of their shortest repr."""
    return _summarize(summary, r_grid, source, percent, rounding)[0]


@dataclass
class SummaryResult:
    """`matprobe significance-summary` as a typed result: one row per input row (`results`,
    the columns of `summary_table`), and the notes on units. `.frame()` is `results`;
    `.to_table()` the display with its glossary; `.notes()` what the rows' warnings say."""

    results: pd.DataFrame
    source: str = ""
    choices: list = field(default_factory=list)  # sentences: percent metrics, read as such

    def frame(self) -> pd.DataFrame:
        return self.results

    def notes(self) -> list[str]:
        from matprobe.present import significance as formatting

        return list(self.choices) + formatting.summary_notes(self.results)

    def to_table(self):
        """The display table: p over r (as given and within rounding), the two-sample p, the
        implied r; its footnotes say which test each p is and the rounding taken."""
        from matprobe.present import significance as formatting

        return formatting.summary_statistics_table(self.results)

    def tables(self) -> list:
        return [self.to_table()]

    def machine_tables(self) -> list:
        """The raw numbers for --format csv/json (every column at full precision)."""
        from matprobe.present import significance as formatting

        return [formatting.summary_statistics_table(self.results, "csv")]

    def tables_for(self, fmt: str) -> list:
        return self.machine_tables() if fmt in ("csv", "json") else self.tables()


def summarize(summary, *, percent: bool = False, rounding: bool = True, r_grid=R_GRID,
              source: str | None = None) -> SummaryResult:
    """`summary_table` of a CSV path (read by `read_summary`, so every number keeps its written
    decimals) or a DataFrame, as a `SummaryResult`."""
    if isinstance(summary, (str, Path)):
        source = source or str(summary)
        summary = read_summary(summary)
    source = source or "summary"
    table, notes = _summarize(summary, r_grid, source, percent, rounding)
    return SummaryResult(table, source, notes)


def read_summary(path: str | Path) -> pd.DataFrame:
    """The summary CSV, its means, sds and reported p as written (strings): their decimals
    are the rounding `summary_table` takes into account."""
    from matprobe.stats.significance import column_renames, read_table_text

    path = Path(path)
    if not path.exists():
        raise StatsError(f"{path}: summary file not found")
    frame, _ = read_table_text(path, "comparison,metric,mean_a,sd_a,mean_b,sd_b,n")
    # a paper's table calls the reported p just p
    return frame.rename(columns=column_renames(list(frame.columns), (*SUMMARY_COLUMNS, "reported_p"),
                                               {"reported_p": ("p", "p_value", "p-value", "pvalue")}))
