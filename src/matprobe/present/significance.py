"""Render significance results: Table IX layout, detail tables, terminal / CSV / Markdown /
LaTeX output chosen by the output file's suffix."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from matprobe.errors import StatsError
from matprobe.io import atomic_path

SUFFIXES = (".csv", ".md", ".tex")

# Columns of the detail table, in display order, with headers.
DETAIL_COLUMNS = {
    "comparison": "Comparison", "metric": "Metric", "unit": "Unit", "n_pairs": "n",
    "mean_diff": "Mean diff", "ci": "95% CI", "t": "t", "df": "df", "p": "p",
    "dz": "dz", "hedges_g": "g", "wilcoxon_p": "Wilcoxon p", "perm_p": "Perm. p",
    "p_holm": "Holm p", "p_bh": "BH p",
}


def format_p(p: float, digits: int = 3) -> str:
    """p as CrossMed Table IX prints it: '< 0.001' below 0.001, else three decimals."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    floor = 10.0**-digits
    return f"< {floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"


def _num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, (int,)) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e6
                                  and digits == 0):
        return str(int(x))
    return f"{x:.{digits}g}" if abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-3) else \
        f"{x:.{digits}f}"


def shared_decimals(value) -> int:
    """Decimals of a value and its interval, one rule for both: three, or as many as show three
    significant digits of a value below 0.001 (0.000408 [-0.001349, 0.002165], never
    0.000408 [-0.001, 0.002])."""
    try:
        x = abs(float(value))
    except (TypeError, ValueError):
        return 3
    if not math.isfinite(x) or x == 0 or x >= 1e-3:
        return 3
    return min(2 - math.floor(math.log10(x)), 15)


def _fixed(x, decimals: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{float(x):.{decimals}f}"


def value_and_interval(value, low, high) -> tuple[str, str]:
    """(value, "[low, high]") with the same decimals (`shared_decimals` of the value)."""
    d = shared_decimals(value)
    return _fixed(value, d), f"[{_fixed(low, d)}, {_fixed(high, d)}]"


# CrossMed's Table IX heads its columns by task: classification items are scored by accuracy,
# segmentation items (a choice among four candidate masks) by cIoU
TABLE_IX_COLUMNS = {"accuracy": "Classification (accuracy)", "cIoU": "Segmentation (cIoU)"}


def table_ix_column(metric: str) -> str:
    """The Table IX column head of a metric (the metric's own name when CrossMed has none)."""
    return TABLE_IX_COLUMNS.get(str(metric), str(metric))


def table_ix(results: pd.DataFrame, value: str = "p") -> pd.DataFrame:
    """Table IX layout: rows comparisons (input order), columns metrics (headed as CrossMed
    does: Classification (accuracy), Segmentation (cIoU)), cells ``value`` (default the paired
    t-test p) formatted as the paper does."""
    if results.empty:
        raise StatsError("no results to tabulate")
    comps = list(dict.fromkeys(results.comparison))
    metrics = list(dict.fromkeys(results.metric))
    cells = results.set_index(["comparison", "metric"])[value]
    table = pd.DataFrame(index=pd.Index(comps, name="Comparison"), columns=metrics, dtype=object)
    for c in comps:
        for m in metrics:
            v = cells.get((c, m), math.nan)
            table.loc[c, m] = format_p(v) if value.startswith("p") or value.endswith("_p") \
                else _num(v)
    return table.rename(columns=table_ix_column)


def _short_method(method: str) -> str:
    """'exact', 'exact conditional, ...' -> 'exact'; 'monte carlo (N resamples)' -> 'Monte
    Carlo, N draws'; 'normal approximation (...)' -> 'normal approx.'."""
    m = str(method)
    if m.startswith("monte carlo"):
        draws = "".join(ch for ch in m if ch.isdigit())
        return f"Monte Carlo, {draws} draws" if draws else "Monte Carlo"
    if m.startswith("normal"):
        return "normal approx."
    if m.startswith("exact conditional"):
        return "exact conditional"
    return "exact" if m.startswith("exact") else m


def method_header(head: str, methods) -> tuple[str, bool]:
    """The header of a p column computed in one of several ways: ``head (variant)`` when
    every row used the same variant (then ``False``), else ``head`` and ``True`` (each cell
    then names its own variant)."""
    kinds = {_short_method(m) for m in methods if isinstance(m, str) and m}
    if len(kinds) == 1:
        return f"{head} ({kinds.pop()})", False
    return head, len(kinds) > 1


VARIANT_MEANINGS = {
    "exact": "exact: all 2^n sign assignments enumerated",
    "exact conditional": "exact conditional: zero differences dropped, tied ranks averaged, all 2^n "
                         "sign assignments of the observed ranks enumerated",
    "normal approx.": "normal approximation with tie and continuity corrections (over 500 non-zero pairs)",
}


def variant_glossary(draws: int = 200_000) -> dict[str, str]:
    """Meaning of every header `detail_table` can give the Wilcoxon and permutation p columns."""
    base = {"Wilcoxon p": "two-sided p of the Wilcoxon signed-rank test (zeros dropped; never below 2^(1−n))",
            "Perm. p": "two-sided p of the sign-flip permutation test of the mean difference"}
    out = dict(base)
    for head, text in base.items():
        for variant, how in VARIANT_MEANINGS.items():
            out[f"{head} ({variant})"] = f"{text}; {how}"
    out[f"Perm. p (Monte Carlo, {draws} draws)"] = (
        f"{base['Perm. p']}; Monte Carlo estimate from {draws} random sign flips, p = (1 + hits) / (1 + draws)")
    return out


def detail_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per (comparison, metric): the statistics beside Table IX, as display strings. The
    Wilcoxon and permutation p columns name their variant (exact, exact conditional, Monte
    Carlo with its draw count, normal approximation) in the header or, when rows differ,
    in each cell."""
    out = pd.DataFrame()
    level = results["ci_level"].iloc[0] if "ci_level" in results else 0.95
    variants = {"wilcoxon_p": "wilcoxon_method", "perm_p": "perm_method"}
    shown = [value_and_interval(v, lo, hi) for v, lo, hi in zip(results.mean_diff, results.ci_low, results.ci_high)]
    for col, head in DETAIL_COLUMNS.items():
        if col == "ci":
            out[f"{level:.0%} CI"] = [ci for _, ci in shown]
        elif col == "mean_diff":
            out[head] = [v for v, _ in shown]
        elif col in variants and variants[col] in results:
            methods = results[variants[col]].tolist()
            head, per_cell = method_header(head, methods)
            out[head] = [format_p(v) + (f" ({_short_method(m)})" if per_cell and not
                                        (isinstance(v, float) and math.isnan(v)) else "")
                         for v, m in zip(results[col], methods)]
        elif col in ("p", "wilcoxon_p", "perm_p", "p_holm", "p_bh"):
            out[head] = [format_p(v) for v in results[col]]
        elif col in ("n_pairs", "df"):
            out[head] = [str(int(v)) for v in results[col]]
        elif col in ("comparison", "metric", "unit"):
            out[head] = results[col].astype(str).tolist()
        else:
            out[head] = [_num(v) for v in results[col]]
    if "mixed_p" in results:
        out["Mixed z"] = [_num(v) for v in results.mixed_z]
        out["Mixed p"] = [format_p(v) for v in results.mixed_p]
    return out


def split_detail(shown: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detail table in two narrower parts (a terminal, a page): effects, then p-values. The unit of
    analysis is in the tables' title; its column stays where the metrics have different ones."""
    p_cols = [c for c in shown.columns if c.endswith(" p") or " p (" in c or c in ("p", "Mixed z")]
    keep = ["Comparison", "Metric"]
    one_unit = "Unit" in shown and shown["Unit"].nunique() <= 1
    return shown.drop(columns=p_cols + (["Unit"] if one_unit else []), errors="ignore"), shown[keep + p_cols]


def _rows_by(results: pd.DataFrame, values_of) -> dict[str, list[str]]:
    """{value: the rows ("comparison, metric") it is given for}, in the rows' order; `values_of(row)`
    lists a row's values."""
    rows: dict[str, list[str]] = {}
    for _, r in results.iterrows():
        for value in values_of(r):
            rows.setdefault(value, []).append(f"{r['comparison']}, {r['metric']}")
    return rows


def notes(results: pd.DataFrame) -> list[str]:
    by_text = _rows_by(results, lambda r: [t for t in str(r.get("warning") or "").split("; ") if t])
    lines = [f"{'all rows' if len(where) == len(results) else '; '.join(where)}: {text}"
             for text, where in by_text.items()]
    methods = sorted(set(results.get("perm_method", [])))
    if methods:
        lines.append("permutation p: sign flips of the paired differences, " + ", ".join(methods)
                     + ("; a Monte Carlo p is (1 + hits) / (1 + draws), not exact"
                        if any(m.startswith("monte carlo") for m in methods) else ""))
    by_variant = _rows_by(results, lambda r: [m] if isinstance(m := r.get("wilcoxon_method"), str) and m else [])
    if by_variant:
        # each variant with the rows it applies to where they differ: "exact; no non-zero
        # differences" read as if no row had a non-zero difference
        parts = [m if len(by_variant) == 1 else f"{m} ({'; '.join(where)})" for m, where in sorted(by_variant.items())]
        lines.append("Wilcoxon signed-rank p: " + "; ".join(parts) + " (an exact p is never below "
                     "2^(1-n) for n non-zero pairs)")
    if "mixed_p" in results and results["mixed_p"].notna().any():
        # statsmodels' MixedLM refers z to N(0, 1): with 2 or 3 targets its p ran 8 orders of magnitude
        # below the target-level t-test's on the same differences (a review's 1.6e-10 against 0.024)
        k = sorted({int(v) for v in results.get("mixed_n_targets", pd.Series(dtype=float)).dropna()})
        lines.append("mixed model (--mixed): its p is a z-test (statsmodels' MixedLM, REML), anti-conservative with "
                     f"few targets ({', '.join(map(str, k)) or 'few'} here): read it beside the target-level t-test, "
                     "not instead of it")
        if "mixed_converged" in results:
            bad = results[results["mixed_converged"].eq(False)]  # NaN where no fit was made
            where = [f"{c}, {m}" for c, m in zip(bad["comparison"], bad["metric"])]
            if where:
                lines.append(f"{'; '.join(where)}: the mixed model did not converge: its numbers are not a fit")
    return lines


def markdown(table: pd.DataFrame, index: bool = True) -> str:
    """A display frame as a GFM table (every cell, headers included, `|`-escaped)."""
    from matprobe.present import Table, to_markdown

    return to_markdown(Table.from_frame(table, index=index), title=False).rstrip("\n")


def latex(table: pd.DataFrame, caption: str = "", index: bool = True) -> str:
    """A display frame as a LaTeX table environment (every cell escaped)."""
    from matprobe.present import Table, to_latex

    return to_latex(Table.from_frame(table, title=caption, index=index)).rstrip("\n")


TABLE_IX_CAPTION = "Statistical significance (p-values) for key comparisons (paired t-test)."


def table_ix_title(unit: str) -> str:
    """The Table IX caption (CrossMed's) with the unit of analysis."""
    return f"{TABLE_IX_CAPTION} Unit of analysis: {unit}."


def _output_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise StatsError(f"{path}: unknown output type '{suffix}'; use one of "
                         f"{', '.join(SUFFIXES)}")
    return suffix


def significance_tables(results: pd.DataFrame, unit: str, items: pd.DataFrame | None = None) -> list:
    """The display tables of `matprobe significance` (and of its --out FILE.md|.tex): Table IX
    (captioned as CrossMed's, with the unit of analysis), the paired differences, their p-values,
    then the item level if any."""
    from matprobe.present import Column, Table

    shown = table_ix(results)
    cols = [Column("Comparison", "Comparison", description="first vs. second condition (difference = first - second)")]
    cols += [Column(str(m), str(m), "p", f"two-sided paired t-test p-value for {m}") for m in shown.columns]
    out = [Table.from_frame(shown, index=True, columns=cols, title=table_ix_title(unit))]
    effects, p_values = split_detail(detail_table(results))
    wil_head = method_header("Wilcoxon p", results.get("wilcoxon_method", []))[0]
    perm_head = method_header("Perm. p", results.get("perm_method", []))[0]
    desc = {"n": ("count", "pairs"), "Mean diff": ("metric", "mean of the paired differences (first - second)"),
            "t": ("", "paired t statistic"), "df": ("", "degrees of freedom"),
            "dz": ("", "Cohen's dz: mean difference / sd of the differences"),
            "g": ("", "Hedges' g (dz with small-sample correction)"),
            "p": ("p", "two-sided paired t-test"),
            wil_head: ("p", "Wilcoxon signed-rank test (zeros dropped; exact conditional on "
                            "tied ranks up to 500 non-zero pairs)"),
            perm_head: ("p", "sign-flip permutation test of the mean difference (exact, or "
                             "Monte Carlo with the draw count shown)"),
            "Holm p": ("p", "Holm-adjusted over the family"), "BH p": ("p", "Benjamini-Hochberg adjusted")}

    def described(frame):
        return [Column(str(c), str(c), *desc.get(str(c), ("", ""))) for c in frame.columns]

    out += [Table.from_frame(effects, columns=described(effects), title="Paired differences (first - second condition)"),
            Table.from_frame(p_values, columns=described(p_values), title="p-values (two-sided; Holm/BH over the family)")]
    if items is not None:
        out.append(Table.from_frame(item_table(items), title="Item level"))
    return out


def significance_machine_tables(results: pd.DataFrame, unit: str, items: pd.DataFrame | None = None) -> list:
    """The raw numbers of `matprobe significance --format csv|json` (and of its --out FILE.csv):
    every result column at full precision, then the item-level rows if any."""
    from matprobe.present import Table

    out = [Table.from_frame(results, title=f"paired tests, unit of analysis: {unit}")]
    if items is not None:
        out.append(Table.from_frame(items, title="item level (paired bootstrap, McNemar)"))
    return out


def _result_of(results, extra: dict[str, pd.DataFrame] | None):
    """(display tables, machine table, note lines) of a `SignificanceResult`, or of its results
    frame alone (then the unit is the frame's, the notes those the frame carries)."""
    from matprobe.present import Table

    if isinstance(results, pd.DataFrame):
        frame, items, lines = results, None, notes(results)
        unit = " / ".join(dict.fromkeys(map(str, frame["unit"]))) if "unit" in frame else ""
    else:
        frame, items, unit, lines = results.results, results.items, results.unit, results.notes()
    tables = significance_tables(frame, unit, items)
    for title, extra_frame in (extra or {}).items():
        if not any(t.title == title for t in tables):
            tables.append(Table.from_frame(extra_frame, title=title))
    return tables, significance_machine_tables(frame, unit)[0], [f"note: {n}" for n in lines]


def write_output(results, path: str | Path, extra: dict[str, pd.DataFrame] | None = None) -> Path:
    """Write by suffix what `matprobe significance --format` prints: .csv its `--format csv` (every
    number, the shortest repr of each float), .md its `--format markdown`, .tex its `--format latex`
    (the same captions, tables and notes). `results`: a `SignificanceResult` (or its results
    frame). Written to a temporary name and renamed, so a failure leaves nothing behind."""
    from matprobe.present import document, to_csv

    path = Path(path)
    suffix = _output_suffix(path)
    tables, machine, lines = _result_of(results, extra)
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            tmp.write_text(to_csv(machine))
        else:
            tmp.write_text(document(tables, "markdown" if suffix == ".md" else "latex", lines))
    return path


def item_table(items: pd.DataFrame) -> pd.DataFrame:
    """Display strings for item_level_analysis output."""
    level = items["ci_level"].iloc[0] if len(items) else 0.95
    shown = [value_and_interval(v, lo, hi) for v, lo, hi in zip(items.estimate, items.ci_low, items.ci_high)]
    rows = items["n_rows"] if "n_rows" in items else items.n_items
    # "80 (240 rows)" where items have several seeds' rows: both tests count each item once
    counts = [f"{int(k)}" + (f" ({int(r)} rows)" if int(r) != int(k) else "") for k, r in zip(items.n_items, rows)]
    mc_method = items["mcnemar_method"] if "mcnemar_method" in items else [None] * len(items)
    return pd.DataFrame({
        "Comparison": items.comparison, "Metric": items.metric,
        "Items": counts,
        "Difference": [v for v, _ in shown],
        f"{level:.0%} CI": [ci for _, ci in shown],
        "McNemar p": [format_p(v) + (" (clustered by item)" if isinstance(m, str) and m.startswith("clustered") else "")
                      for v, m in zip(items.mcnemar_p, mc_method)],
        "Method": items.method + [" over items with their seeds" if int(r) != int(k) else ""
                                  for k, r in zip(items.n_items, rows)],
    })


def _mean_diff_column(table: pd.DataFrame) -> tuple[str, list[str]]:
    """The mean difference with its unit: in the header when every row has the same one
    (``Mean diff (fraction)``, ``Mean diff (percentage points)``), else in each cell."""
    units = [str(u) if isinstance(u, str) else "" for u in table.get("unit", [""] * len(table))]
    if len(set(units)) == 1:
        return f"Mean diff ({units[0] or 'metric unit'})", [_num(v) for v in table.mean_diff]
    return "Mean diff", [_num(v) + (f" ({u})" if u else "") for v, u in zip(table.mean_diff, units)]


def _p_span(low, high) -> str:
    return f"{format_p(low)} .. {format_p(high)}"


def _r_span(row) -> str:
    """The implied r within rounding: 'lo .. hi', 'none' when no r gives the reported p,
    '' without one, 'n/a' when p does not depend on r."""
    if not row.reported_p:
        return ""
    if math.isnan(row.implied_r_low):
        return "n/a" if str(row.warning).startswith("implied r n/a") else "none"
    return f"{_num(row.implied_r_low)} .. {_num(row.implied_r_high)}"


SUMMARY_TWO_SAMPLE = "Two-sample p (df 2n-2)"


def summary_display(table: pd.DataFrame, with_warning: bool = True, grid: bool = True
                    ) -> pd.DataFrame:
    """Display strings for summary.summary_table output. Every p column names its test: the
    paired t-test (df n-1) at a correlation r, over r, over r and the rounding of the inputs;
    the two-sample t-test of independent samples (df 2n-2)."""
    head, diffs = _mean_diff_column(table)
    shown = pd.DataFrame({"Comparison": table.comparison, "Metric": table.metric,
                          "n": table.n.astype(str), head: diffs})
    for col in [c for c in table.columns if c.startswith("p_r=")]:
        if grid:
            shown[f"Paired p (r={col[4:]})"] = [format_p(v) for v in table[col]]
    shown["Paired p over r"] = [_p_span(lo, hi) for lo, hi in zip(table.p_min, table.p_max)]
    shown["Paired p over r, within rounding"] = [_p_span(lo, hi) for lo, hi in
                                                 zip(table.p_min_rounding, table.p_max_rounding)]
    shown[SUMMARY_TWO_SAMPLE] = [format_p(v) for v in table.p_independent]
    shown["Reported p"] = table.reported_p
    shown["Implied r"] = [_num(v) for v in table.implied_r]
    shown["Implied r within rounding"] = [_r_span(row) for row in table.itertuples()]
    shown["Min exact p"] = [_num(v) for v in table.min_exact_p]
    if with_warning:
        shown["Warning"] = table.warning
    return shown


def summary_glossary(table: pd.DataFrame) -> list[str]:
    """Footnotes of the summary display: which test each p is, the unit of the mean
    difference, and the rounding taken."""
    given = [u if isinstance(u, str) else "" for u in table.get("unit", [])]
    units = [f"{u}s" if u == "fraction" else u for u in sorted(set(given) - {""})]
    if "" in given:
        units.append("the metric's own unit (not a proportion by its name)")
    lines = ["Mean diff: mean_a - mean_b" + (f", in {' or '.join(units)}" if units else ""),
             "Paired p: two-sided paired t-test on the n pairs (df n-1) from the means and sds, at a "
             "correlation r of the pairs; over r: its range for r in [-1, 1] (largest at r=-1, smallest "
             "at r=1); within rounding: over r and every mean and sd within their rounding",
             f"{SUMMARY_TWO_SAMPLE}: Student's t-test of two independent samples of n each (equal "
             "variances, scipy ttest_ind_from_stats), not a paired p, so it can lie outside the paired "
             "range; the paired p at r=0 has the same t on n-1 df (p_r=0 in --format csv/json)",
             "Implied r: the r at which the paired p equals the reported p (for '< x': the r above which "
             "it is below x); within rounding: every r that values within the rounding allow, none "
             "when no r gives it even then",
             "Min exact p: the smallest p an exact sign-flip or Wilcoxon test on n pairs can give, 2^(1-n)"]
    taken = list(dict.fromkeys(table.get("rounding", [])))
    if len(taken) == 1:
        lines.append(f"rounding taken (half a unit of the last written decimal): {taken[0]}")
    elif taken:
        lines.append("rounding taken (half a unit of the last written decimal): " + "; ".join(
            f"{r.comparison}, {r.metric}: {r.rounding}" for r in table.itertuples()))
    return lines


def summary_notes(table: pd.DataFrame) -> list[str]:
    """Each row's warning, as `matprobe significance-summary` prints it."""
    return [f"{r.comparison}, {r.metric}: {r.warning}" for r in table.itertuples() if r.warning]


SUMMARY_TITLE = "Paired p from summary statistics (r: unknown correlation of the pairs)"


def summary_statistics_table(table: pd.DataFrame, fmt: str = "table"):
    """`matprobe significance-summary`'s display: the raw numbers for csv/json, else display
    strings with `summary_glossary` as footnotes."""
    from matprobe.present import Table

    if fmt in ("csv", "json"):
        return Table.from_frame(table, title=SUMMARY_TITLE)
    shown = summary_display(table, with_warning=False, grid=False)
    return Table.from_frame(shown, title=SUMMARY_TITLE, footnotes=summary_glossary(table))


def write_frame(numeric: pd.DataFrame, shown: pd.DataFrame, path: str | Path,
                title: str = "") -> Path:
    """Write a single table by suffix: the numbers to .csv, the display strings to .md/.tex."""
    path = Path(path)
    suffix = _output_suffix(path)
    with atomic_path(path) as tmp:
        if suffix == ".csv":  # as --format csv writes it: the shortest repr of each float
            from matprobe.present import Table, to_csv

            tmp.write_text(to_csv(Table.from_frame(numeric)))
        elif suffix == ".md":
            tmp.write_text((f"**{title}**\n\n" if title else "") + markdown(shown, False) + "\n")
        else:
            tmp.write_text(latex(shown, title, False) + "\n")
    return path
