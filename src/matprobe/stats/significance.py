"""Paired significance tests between training conditions (CrossMed Table IX and beyond).

Input is a tidy long table with one row per measurement::

    condition, target, seed, [item], metric, value

A *comparison* names two conditions ``a`` and ``b``; the paired difference is ``a - b``.
CrossMed's four comparisons (Sec. VI-E, Table IX: "paired t-test") are the default.

The unit of analysis decides what counts as one pair (docs/design.md §5: 20 seed x target
pairs can give p = 0.004 where 4 per-target means give 0.20), so it is always explicit:

- ``unit="target"``: values are averaged over seeds (and items) per target; one pair per target.
- ``unit="seed"``: one pair per (target, seed); seeds must carry the same labels in both
  conditions. Seeds nested in targets are not independent: prefer ``mixed=True``.
- ``unit="item"``: one pair per (target, seed, item).

Ratio metrics (cIoU = sum of intersections / sum of unions over images) are given at item
level as two metrics (``intersection`` and ``union`` by default) and recomputed as ratios of
sums at every aggregation level and in every bootstrap resample.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats

from matprobe.checks import (
    check_level,
    check_probability,
    check_proportion_range,
    check_proportion_units,
    check_resamples,
    percent_notes,
)
from matprobe.errors import RunsSpelledApart, StatsError, TooFewPairs

UNITS = ("target", "seed", "item")
KEY_COLUMNS = {"target": ["target"], "seed": ["target", "seed"], "item": ["target", "seed", "item"]}
# how a row's warning says which runs one condition lacks (the report quotes it to the row's end)
LEFT_OUT = "left out, unpaired (a run one condition lacks): "
LEFT_OUT_BEFORE = ("left out, unpaired by design: ",)  # the clause as runs before it wrote it
DEFAULT_RATIO_METRICS: dict[str, tuple[str, str]] = {"cIoU": ("intersection", "union")}


@dataclass(frozen=True)
class Comparison:
    """Paired comparison of condition ``a`` against condition ``b`` (difference ``a - b``)."""

    a: str
    b: str
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.a} vs {self.b}"


# CrossMed Sec. VI-E, Table IX (row order and wording as in the paper).
DEFAULT_CROSSMED_COMPARISONS: tuple[Comparison, ...] = (
    Comparison("Related", "Unrelated", "Related vs. Unrelated"),
    Comparison("Without Modality", "Related", "Without Modality vs. Related"),
    Comparison("Without Anatomy", "Related", "Without Anatomy vs. Related"),
    Comparison("Without Task", "Related", "Without Task vs. Related"),
)

RESULT_COLUMNS = [
    "comparison", "metric", "a", "b", "unit", "n_pairs", "mean_a", "mean_b", "mean_diff",
    "sd_diff", "ci_low", "ci_high", "ci_level", "t", "df", "p", "dz", "hedges_g", "d_av",
    "wilcoxon_p", "wilcoxon_method", "perm_p", "perm_method", "min_exact_p", "p_holm", "p_bh",
    "warning",
]


# --------------------------------------------------------------------------- input


def parse_comparison(text: str) -> Comparison:
    """``"A vs B"`` or ``"Name: A vs B"`` (a trailing dot after "vs" is allowed)."""
    name = ""
    body = text.strip()
    if ":" in body:
        name, body = (s.strip() for s in body.split(":", 1))
    parts = re.split(r"\s+vs\.?\s+", body)
    if len(parts) != 2 or not all(parts):
        raise StatsError(f"comparison {text!r}: write it as 'A vs B' (difference A - B), "
                         "optionally prefixed by 'Name: '")
    return Comparison(parts[0].strip(), parts[1].strip(), name)


def load_spec(path: str | Path) -> tuple[Comparison, ...]:
    """Comparisons from a file: JSON (list of {"a", "b", "name"} or of "A vs B" strings)
    or plain text, one ``[Name: ]A vs B`` per line (``#`` starts a comment)."""
    path = Path(path)
    if not path.exists():
        raise StatsError(f"{path}: spec file not found; pass an existing --spec file")
    text = path.read_text()
    out: list[Comparison] = []
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StatsError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if isinstance(items, dict):
            items = items.get("comparisons", [])
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(parse_comparison(item))
            elif isinstance(item, dict) and "a" in item and "b" in item:
                out.append(Comparison(str(item["a"]), str(item["b"]), str(item.get("name", ""))))
            else:
                raise StatsError(f"{path}: entry {i} must be 'A vs B' or {{\"a\": ..., \"b\": ...}}")
    else:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(parse_comparison(line))
    if not out:
        raise StatsError(f"{path}: no comparisons found; add lines like 'Related vs Unrelated'")
    return tuple(out)


def _lines(frame: pd.DataFrame, mask) -> str:
    rows = frame.loc[mask, "_row"].tolist()
    shown = ", ".join(str(r) for r in rows[:8])
    return shown + (f" (+{len(rows) - 8} more)" if len(rows) > 8 else "")


def validate_results(frame: pd.DataFrame, source: str = "results") -> pd.DataFrame:
    """Check columns and values; return a clean copy with a ``_row`` column naming where each row
    came from (its CSV line when read from a file, else ``row <index>``), for error messages.

    Idempotent: every test validates what it is given, so a frame validated once passes again
    unchanged (its ``_row`` names are kept), and no column marks a frame as "validated"."""
    frame = frame.copy()
    if "_row" not in frame.columns:
        frame["_row"] = [f"row {i}" for i in frame.index]
    required = ["condition", "target", "metric", "value"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        as_written = frame.attrs.get("as_written", {})
        have = [str(as_written.get(c, c)) for c in frame.columns if c != "_row"]
        wide = [str(as_written.get(c, c)) for c in frame.columns if c not in (*required, "seed", "item", "_row")
                and pd.to_numeric(frame[c], errors="coerce").notna().all()]
        from matprobe.conditions import condition_display_name

        # a table with one column per metric (acc, ciou) or per condition (Related, Unrelated): the
        # long form is one pandas call away
        per = ("condition" if "condition" in missing and any(condition_display_name(c) for c in wide)
               else "metric")
        ids = "the target and seed columns" if per == "condition" else "the condition, target and seed columns"
        hint = (f"; a table with a column per {per} ({', '.join(wide)}) is read in the long form, one row "
                f"per {per}: pandas.read_csv(FILE).melt(id_vars=[...{ids}], var_name='{per}', "
                "value_name='value'), the other columns renamed to condition, target, seed, metric"
                if per in missing and "value" in missing and wide else "")
        raise StatsError(f"{source}: missing column(s) {', '.join(missing)} (it has {', '.join(have) or 'none'}); "
                         f"expected condition, target, seed, [item], metric, value{hint}")
    if "seed" not in frame.columns:
        frame["seed"] = "0"  # one run per target: seed-level = target-level
    if "item" in frame:
        # A metric is measured per item or per run, never both: empty items mark run-level
        # metrics (e.g. accuracy) beside item-level ones (e.g. intersection/union).
        empty = frame["item"].isna() | (frame["item"].astype(str).str.strip() == "")
        frame["item"] = frame["item"].where(~empty, "").astype(str).str.strip()
        mixed = frame.assign(_e=empty).groupby("metric")["_e"].nunique()
        for metric in mixed[mixed > 1].index:
            bad = (frame.metric == metric) & empty
            raise StatsError(f"{source}: metric '{metric}' has item-level rows and rows with no "
                             f"item (e.g. {_lines(frame, bad)}); give every row an item or none")
    for col in ("condition", "target", "metric", "seed"):
        if frame[col].isna().any():
            raise StatsError(f"{source}: empty '{col}' at {_lines(frame, frame[col].isna())}; "
                             "fill it or drop those rows")
        frame[col] = frame[col].astype(str).str.strip()
    frame["seed"] = _integer_seeds(frame["seed"])
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = values.isna() & frame["value"].notna()
    if bad.any():
        raise StatsError(f"{source}: non-numeric value at {_lines(frame, bad)}; "
                         "values must be numbers")
    frame["value"] = values.astype(float)
    nan = ~np.isfinite(frame["value"])
    if nan.any():
        raise StatsError(f"{source}: NaN or infinite value at {_lines(frame, nan)}; "
                         "drop those rows or fill the value (a pair needs both values)")
    keys = ["condition", "target", "seed"] + (["item"] if "item" in frame else []) + ["metric"]
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        raise StatsError(f"{source}: duplicate rows for the same ({', '.join(keys)}) at "
                         f"{_lines(frame, dup)}; each measurement must appear once")
    check_proportion_range(frame, source)  # an accuracy below 0 or above 100 is no accuracy
    check_proportion_units(frame, source)  # percent in some rows, fractions in others
    return _drop_rederivable_ratios(frame, source)


def _integer_seeds(seeds: pd.Series) -> pd.Series:
    """Seeds a spreadsheet wrote as 0.0, 1.0 read as 0, 1 (so they pair with another file's 0, 1);
    any other seed labels as written."""
    numbers = pd.to_numeric(seeds, errors="coerce")
    if (numbers.isna().any() or not np.all(np.isfinite(numbers)) or not np.all(numbers == np.round(numbers))
            or np.abs(numbers).max() >= 2**53):  # beyond that a float is no exact integer
        return seeds
    return numbers.astype(np.int64).astype(str)


def _drop_rederivable_ratios(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """A run-level ratio (e.g. the pipeline's per-run cIoU) beside its item-level parts is
    checked against Σ num / Σ den of that run and dropped: the parts are what the tests and
    the item bootstrap resample (a ratio of sums, not a mean of ratios)."""
    if "item" not in frame:
        return frame
    for name, (num, den) in DEFAULT_RATIO_METRICS.items():
        measured = frame[(frame.metric == name) & (frame["item"] == "")]
        parts = frame[frame.metric.isin([num, den]) & (frame["item"] != "")]
        if measured.empty or parts.empty:
            continue
        sums = parts.groupby(["condition", "target", "seed", "metric"])["value"].sum().unstack("metric")
        for _, r in measured.iterrows():
            key = (r.condition, r.target, r.seed)
            if key not in sums.index or not np.isclose(r.value, sums.loc[key, num] / sums.loc[key, den],
                                                       rtol=1e-9, atol=1e-12):
                raise StatsError(f"{source}: '{name}' at {r._row} is not the sum of '{num}' over the "
                                 f"sum of '{den}' of its items; fix or drop the run-level row")
        frame = frame.drop(measured.index)
    return frame


RESULTS_FILE_COLUMNS = ("condition", "target", "seed", "item", "metric", "value")
# what per-run tables call the seed column: a training run is one seed
SEED_ALIASES = ("run", "replicate", "repeat", "rep")


def read_results(path: str | Path) -> pd.DataFrame:
    """Read and validate a tidy results CSV (condition, target, seed, [item], metric, value).

    Column names are read up to case and surrounding spaces (`Condition`, `value `), a `run`
    column is the seed where there is none, and a tab-separated file is read as one; lines that
    start with `#` are comments (a `#` inside a value is part of it). Each row's `_row` is its line
    in the file, comments and blank lines counted."""
    path = Path(path)
    if not path.exists():
        raise StatsError(f"{path}: results file not found")
    frame, rows = read_table_text(path, "condition,target,seed,metric,value")
    renames = column_renames(list(frame.columns), RESULTS_FILE_COLUMNS, {"seed": SEED_ALIASES})
    frame = frame.rename(columns=renames)
    frame.attrs["as_written"] = {new: old for old, new in renames.items()}  # for messages on the columns
    frame["_row"] = rows
    return validate_results(frame, source=str(path))


def read_table_text(path: Path, header: str) -> tuple[pd.DataFrame, list[str]]:
    """A CSV a researcher wrote (a byte-order mark, CRLF, tabs, `#` comment lines) as text columns,
    and each row's place in the file ('line 7', comments and blank lines counted). Refused with the
    fix: not UTF-8, separated by ';', a row with more fields than the header (a comma unquoted),
    empty; `header` is the header line the messages suggest."""
    import csv
    import io

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StatsError(f"{path}: not UTF-8 text (byte {exc.start}); export the table as CSV "
                         "(UTF-8, comma-separated)") from None
    numbered = [(i + 1, line) for i, line in enumerate(text.splitlines())
                if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise StatsError(f"{path}: the file is empty; give a CSV with a header line {header} and one row "
                         "per line")
    first = numbered[0][1]
    sep = "\t" if "\t" in first and "," not in first else ","
    if sep == "," and ";" in first and "," not in first:
        raise StatsError(f"{path}: separated by ';' (line {numbered[0][0]}: {first[:80]!r}); save it as CSV "
                         "with commas (Excel: CSV UTF-8 (Comma delimited), decimal point '.') and rerun")
    body = "\n".join(line for _, line in numbered)
    rows = list(csv.reader(io.StringIO(body), delimiter=sep))
    width = len(rows[0])
    for (lineno, _), row in zip(numbered[1:], rows[1:]):
        if len(row) > width and any(x.strip() for x in row[width:]):  # empty ones: a spreadsheet's trailing commas
            raise StatsError(f"{path}: line {lineno} has {len(row)} fields, the header {width}; a value "
                             "holding a comma must be in double quotes (\"CT,Lung,COVID\")")
    clean = io.StringIO()  # the rows cut to the header's width (their extra fields are empty)
    csv.writer(clean, delimiter=sep, lineterminator="\n").writerows(row[:width] for row in rows)
    try:
        frame = pd.read_csv(io.StringIO(clean.getvalue()), sep=sep, dtype=str, index_col=False)
    except pd.errors.ParserError as exc:
        raise StatsError(f"{path}: not a readable CSV ({exc})") from None
    if frame.empty:
        raise StatsError(f"{path}: a header but no rows; add one row per line under it")
    # a quoted value spanning lines shifts the numbering: count rows then
    lines = ([f"line {n}" for n, _ in numbered[1:]] if len(frame) == len(numbered) - 1
             else [f"row {i + 1}" for i in range(len(frame))])
    return frame, lines


def column_renames(columns: list, known, aliases: dict[str, tuple[str, ...]] | None = None) -> dict[str, str]:
    """Renames that make a header's columns the names a reader takes: case and spaces aside ('Condition ',
    'VALUE' for `known` names), and `aliases` ({name: other names}) where no column has the name itself
    (a `run` column as the seed, a paper's `p` as reported_p). A name two columns would take is left to
    the reader's own message."""
    found = {c: str(c).strip().casefold() for c in columns}
    names = {c: low for c, low in found.items() if low in known}
    for name, others in (aliases or {}).items():
        if name not in names.values():
            alias = next((c for c, low in found.items() if low in others), None)
            if alias is not None:
                names[alias] = name
    return {c: n for c, n in names.items() if c != n and list(names.values()).count(n) == 1}


# --------------------------------------------------------------------------- pairing


def active_ratios(frame: pd.DataFrame, ratio_metrics) -> dict[str, tuple[str, str]]:
    """Ratio metrics to derive here: both parts present and no measured metric of that name
    (a CSV that already holds per-run 'cIoU' values is used as is)."""
    present = set(frame.metric)
    return {name: pair for name, pair in (ratio_metrics or {}).items()
            if name not in present and set(pair) <= present}


def _has_items(frame: pd.DataFrame) -> bool:
    return "item" in frame and bool((frame["item"] != "").any())


def _metric_values(frame: pd.DataFrame, metric: str, ratio_metrics, keys,
                   source: str = "results") -> pd.DataFrame:
    """Values of ``metric`` aggregated to ``keys`` (mean; ratio of sums for ratio metrics).

    Returns columns keys + ["value", "_row"]."""
    if metric in ratio_metrics:
        num, den = ratio_metrics[metric]
        fine = ["target", "seed"] + (["item"] if _has_items(frame) else [])
        wide = frame[frame.metric.isin([num, den])].pivot_table(
            index=fine, columns="metric", values="value", aggfunc="first")
        rows = frame[frame.metric.isin([num, den])].groupby(fine)["_row"].first()
        wide = wide.join(rows)
        if num not in wide or den not in wide or wide[[num, den]].isna().any(axis=None):
            _check_ratio_parts(frame, metric, num, den, source)  # names the rows
        # Ratio of sums within each run (target, seed) or item; seeds then weigh equally in
        # a target mean, as for every other metric.
        level = keys if len(keys) >= 2 else ["target", "seed"]
        sums = wide.groupby(level).agg(num=(num, "sum"), den=(den, "sum"),
                                       _row=("_row", "first"))
        if (sums.den <= 0).any():
            where = ", ".join(f"{'/'.join(map(str, k)) if isinstance(k, tuple) else k} ({r})"
                              for k, r in sums._row[sums.den <= 0].head(5).items())
            raise StatsError(f"{source}: ratio metric '{metric}': '{den}' sums to 0 for "
                             f"{'/'.join(level)} {where}; cannot form the ratio there: drop "
                             "those rows or use a metric defined for empty masks")
        ratio = pd.DataFrame({"value": sums.num / sums.den, "_row": sums._row}).reset_index()
        if level == keys:
            return ratio
        return ratio.groupby(keys, as_index=False).agg(value=("value", "mean"),
                                                       _row=("_row", "first"))
    sub = frame[frame.metric == metric]
    # Average items within a seed first, then seeds within a target, so every seed weighs
    # the same in a target mean whatever its number of items.
    levels = ["target", "seed"] + (["item"] if _has_items(sub) else [])
    grouped = sub
    for depth in range(len(levels) - 1, len(keys) - 1, -1):
        grouped = grouped.groupby(levels[:depth], as_index=False).agg(
            value=("value", "mean"), _row=("_row", "first"))
    return grouped[keys + ["value", "_row"]]


def available_metrics(frame: pd.DataFrame, ratio_metrics=DEFAULT_RATIO_METRICS) -> list[str]:
    """Metrics in order of first appearance; ratio components are replaced by their ratio."""
    out: list[str] = []
    ratio_metrics = active_ratios(frame, ratio_metrics)
    parts = {p: name for name, pair in ratio_metrics.items() for p in pair}
    for m in dict.fromkeys(frame.metric):
        name = parts.get(m, m)
        if name not in out:
            out.append(name)
    return out


def _check_ratio_parts(frame: pd.DataFrame, metric: str, num: str, den: str, source: str) -> None:
    """A ratio metric's parts are counts of a part and its whole: never negative, and for
    cIoU's intersection and union never part > whole. Every item needs both parts."""
    parts = frame[frame.metric.isin([num, den])]
    neg = parts.value < 0
    if neg.any():
        raise StatsError(f"{source}: negative '{num}'/'{den}' at {_lines(parts, neg)}; ratio metric "
                         f"'{metric}' needs counts >= 0 (pixels); fix those rows")
    fine = ["condition", "target", "seed"] + (["item"] if _has_items(parts) else [])
    wide = parts.pivot_table(index=fine, columns="metric", values="value", aggfunc="first")
    rows = parts.groupby(fine + ["metric"])["_row"].first().unstack("metric")
    for col, other in ((num, den), (den, num)):
        if col not in wide:
            raise StatsError(f"{source}: ratio metric '{metric}' needs both '{num}' and '{den}' rows; "
                             f"'{col}' is absent (rows of '{other}': {_lines(parts, parts.index)})")
    for col, other in ((num, den), (den, num)):
        lacking = wide[col].isna()
        if lacking.any():
            shown = ", ".join(str(rows.loc[k, other]) for k in wide.index[lacking][:8])
            more = f" (+{int(lacking.sum()) - 8} more)" if lacking.sum() > 8 else ""
            raise StatsError(f"{source}: ratio metric '{metric}': '{other}' at {shown}{more} has no "
                             f"matching '{col}' row; every item needs both or neither")
    if {num, den} == {"intersection", "union"}:
        over = wide[num] > wide[den] * (1 + 1e-12)
        if over.any():
            shown = ", ".join(f"{rows.loc[k, num]} / {rows.loc[k, den]}" for k in wide.index[over][:5])
            raise StatsError(f"{source}: '{num}' exceeds '{den}' at {shown}; an intersection is part "
                             "of its union, so the two columns are swapped or wrong there")


def _check_item_sets(frame: pd.DataFrame, comparison: Comparison, components, unit: str,
                     source: str) -> None:
    """Above item level, per-item rows are averaged (or summed, for ratio metrics): both
    conditions must then cover the same items, or the two means are over different images."""
    sub = frame[frame.metric.isin(components) & (frame["item"] != "")]
    a = sub[sub.condition == comparison.a]
    b = sub[sub.condition == comparison.b]
    if a.empty or b.empty:
        return
    shared_seeds = set(zip(a.target, a.seed)) & set(zip(b.target, b.seed))
    for keys, restrict in ((["target", "seed", "item", "metric"], True),
                           (["target", "item", "metric"], False)):
        ka = a.drop_duplicates(keys).set_index(keys)["_row"]
        kb = b.drop_duplicates(keys).set_index(keys)["_row"]
        lonely = []
        for has, lacks, rows, other in ((comparison.a, comparison.b, ka, kb),
                                        (comparison.b, comparison.a, kb, ka)):
            for key in rows.index.difference(other.index):
                rec = dict(zip(keys, key))
                if restrict and (rec["target"], rec["seed"]) not in shared_seeds:
                    continue  # a seed run in one condition only is paired (or refused) by seed
                lonely.append(f"{', '.join(f'{k} {v!r}' for k, v in rec.items())} has '{has}' "
                              f"({rows[key]}) but no '{lacks}'")
        if lonely:
            more = f" (+{len(lonely) - 4} more)" if len(lonely) > 4 else ""
            raise StatsError(f"{source}: different items in the two conditions of "
                             f"'{comparison.label}' at unit {unit}: {'; '.join(lonely[:4])}{more}; "
                             "their means would be over different images: add the missing rows "
                             "or drop those items from both")


def paired_values(frame: pd.DataFrame, comparison: Comparison, metric: str, unit: str = "target",
                  ratio_metrics=DEFAULT_RATIO_METRICS, source: str = "results") -> pd.DataFrame:
    """Pairs for one comparison and metric: columns keys + ["a", "b"], sorted by key.

    Raises StatsError naming the rows for a missing condition or metric, unpaired keys or
    fewer than two pairs."""
    _check_unit(unit)
    return _paired_values(validate_results(frame, source), comparison, metric, unit, ratio_metrics, source)


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise StatsError(unit_refusal(unit, UNITS))


def unit_refusal(unit: str, allowed=("auto", *UNITS)) -> str:
    """The error of a unit of analysis not in `allowed`; an information unit (nats, bits) is
    told where it goes (--bits)."""
    text = f"unit {unit!r}: --unit here is the unit of analysis, one of {', '.join(allowed)}"
    if str(unit).lower() in ("bits", "nats", "bit", "nat"):
        text += ("; MI metrics are tested in the unit their name gives ('... nats', as `run` writes them): "
                 "add --bits for bits")
    return text


NATS_SUFFIX, BITS_SUFFIX = " nats", " bits"


def metrics_in_bits(frame: pd.DataFrame, source: str = "results") -> tuple[pd.DataFrame, str]:
    """The results with every MI metric named '... nats' (as `run` writes them) in bits: its
    values (and the ends of their intervals, where a run's results.csv gives them) divided by ln 2
    and its name '... bits'; and the sentence that says so. Differences,
    means and intervals scale by 1/ln 2; t, p and effect sizes do not change."""
    names = [m for m in dict.fromkeys(frame["metric"].astype(str)) if m.endswith(NATS_SUFFIX)]
    if not names:
        return frame, f"--bits: no metric named '... nats' in {source}; nothing converted"
    renamed = {m: m[: -len(NATS_SUFFIX)] + BITS_SUFFIX for m in names}
    clash = sorted(set(renamed.values()) & set(frame["metric"].astype(str)))
    if clash:
        raise StatsError(f"{source}: --bits would name {clash[0]!r}, which the results hold already; leave out "
                         "--bits or one of the two")
    frame = frame.copy()
    mask = frame["metric"].astype(str).isin(names)
    frame.loc[mask, "value"] = frame.loc[mask, "value"].astype(float) / math.log(2.0)
    for end in ("ci_low", "ci_high"):  # a run's results.csv gives each value's interval beside it
        if end in frame:
            frame.loc[mask, end] = pd.to_numeric(frame.loc[mask, end], errors="coerce") / math.log(2.0)
    frame["metric"] = frame["metric"].astype(str).replace(renamed)
    return frame, (f"--bits: {', '.join(renamed.values())} in bits (the results' nats divided by ln 2)")


def _paired_values(frame: pd.DataFrame, comparison: Comparison, metric: str, unit: str, ratio_metrics,
                   source: str) -> pd.DataFrame:
    """`paired_values` on a frame `validate_results` returned: the loops over comparisons and
    metrics validate their input once, not once per pair table."""
    _check_unit(unit)
    if unit == "item" and "item" not in frame:
        raise StatsError(f"{source}: unit 'item' needs an 'item' column; add it or use "
                         "--unit seed/target")
    keys = KEY_COLUMNS[unit]
    ratio_metrics = active_ratios(frame, ratio_metrics)
    present = sorted(frame.condition.unique())
    components = set(ratio_metrics.get(metric, (metric,)))
    sides = {}
    for side, cond in (("a", comparison.a), ("b", comparison.b)):
        if cond not in present:
            raise StatsError(f"{source}: condition '{cond}' (needed by '{comparison.label}') is "
                             f"absent; conditions present: {', '.join(present)}")
        sub = frame[(frame.condition == cond) & frame.metric.isin(components)]
        if sub.empty:
            other = comparison.b if side == "a" else comparison.a
            have = frame[(frame.condition == other) & frame.metric.isin(components)]
            where = f" (rows for '{other}': {_lines(have, have.index)})" if len(have) else ""
            raise TooFewPairs(f"{source}: metric '{metric}' is absent for condition '{cond}'"
                              f"{where}; add its rows or drop the metric", 0, f"no '{metric}' rows for '{cond}'")
        if metric in ratio_metrics:
            _check_ratio_parts(sub, metric, *ratio_metrics[metric], source)
        if unit == "item" and not _has_items(sub):
            raise StatsError(f"{source}: metric '{metric}' has no item-level rows for '{cond}'; "
                             "use --unit seed or --unit target for it")
        sides[side] = _metric_values(sub, metric, ratio_metrics, keys, source)
    if unit != "item" and _has_items(frame):
        _check_item_sets(frame, comparison, components, unit, source)
    merged = sides["a"].merge(sides["b"], on=keys, how="outer", suffixes=("_a", "_b"),
                              indicator=True)
    lonely = merged[merged._merge != "both"]
    # A run (target, seed) or target that one condition never had (three Related seeds, two
    # Without Task ones) has no partner by design: left out of this comparison and said. A run
    # that exists but lacks this metric's row is a hole in the table: refused.
    run_level = keys[:1] if unit == "target" else keys[:2]
    absent = [_absent_run(frame, comparison.b if r._merge == "left_only" else comparison.a, r, run_level)
              for _, r in lonely.iterrows()]
    holes = lonely[[not a for a in absent]]
    if len(holes):
        desc = []
        for _, r in holes.head(5).iterrows():
            key = ", ".join(f"{k} '{r[k]}'" for k in keys)
            has, lacks = ((comparison.a, comparison.b) if r._merge == "left_only"
                          else (comparison.b, comparison.a))
            row = r._row_a if r._merge == "left_only" else r._row_b
            desc.append(f"{key} has '{has}' ({row}) but no '{lacks}'")
        more = f" (+{len(holes) - 5} more)" if len(holes) > 5 else ""
        raise StatsError(f"{source}: unpaired rows for '{comparison.label}', {metric}, unit "
                         f"{unit}: {'; '.join(desc)}{more}; add the missing rows or drop them")
    left_out = []
    for _, r in lonely.iterrows():
        has, lacks = ((comparison.a, comparison.b) if r._merge == "left_only" else (comparison.b, comparison.a))
        run = ", ".join(f"{k} '{r[k]}'" for k in run_level)
        left_out.append(f"{run}: '{has}' only (no '{lacks}' run)")  # no line: one note for every metric
    merged = merged[merged._merge == "both"].rename(columns={"value_a": "a", "value_b": "b"})
    if len(merged) < 2:
        rows = ", ".join(str(r) for r in merged._row_a.tolist() + merged._row_b.tolist())
        apart = runs_spelled_apart(sides["a"], sides["b"], keys, comparison)
        error = RunsSpelledApart if apart else TooFewPairs
        raise error(f"{source}: only {len(merged)} pair for '{comparison.label}', {metric} (unit {unit}; rows "
                    f"{rows or 'none'}); a paired test needs at least 2" + (f"; {apart}" if apart else ""),
                    len(merged), apart or None)
    out = merged[keys + ["a", "b"]].sort_values(keys).reset_index(drop=True)
    out.attrs["left_out"] = list(dict.fromkeys(left_out))  # one per run, not per item
    if unit == "target" and "seed" in frame:
        out.attrs["seed_sets"] = _unequal_seed_sets(frame, comparison, components, out["target"])
    return out


def _unequal_seed_sets(frame: pd.DataFrame, comparison: Comparison, components, targets) -> list[str]:
    """At unit target each target's value is its seed mean per condition: the targets whose two
    conditions average other seeds (a Related seed without an Unrelated partner is in Related's mean
    at this unit, where --unit seed leaves it out and says so; a review found it silent)."""
    rows = frame[frame.metric.isin(components)]
    out = []
    for target in targets:
        sets = [sorted(set(map(str, rows.loc[(rows.condition == c) & (rows.target == target), "seed"])))
                for c in (comparison.a, comparison.b)]
        if sets[0] != sets[1]:
            out.append(f"target '{target}': '{comparison.a}' seeds {', '.join(sets[0])}, '{comparison.b}' seeds "
                       f"{', '.join(sets[1])}")
    return out


def runs_spelled_apart(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], comparison: Comparison) -> str:
    """Why two conditions' runs do not pair, where it is how they are written: a target written
    two ways ('CT, Lung, COVID' and 'CT,Lung,COVID'), or seeds numbered apart (0, 1, 2 and 10, 11,
    12); '' where each side simply has too few runs. A pair is one (target, seed) under both."""
    def fold(v: str) -> str:
        return "".join(v.split()).casefold()

    for key in keys:
        va, vb = list(dict.fromkeys(map(str, a[key]))), list(dict.fromkeys(map(str, b[key])))
        only_b = {fold(v): v for v in vb if v not in va}
        same = [(v, only_b[fold(v)]) for v in va if v not in vb and fold(v) in only_b]
        if same:
            x, y = same[0]
            return (f"'{comparison.a}' writes {key} {x!r} and '{comparison.b}' {y!r}, the same but for spaces or "
                    f"case: write it one way in both")
        if not set(va) & set(vb) and len(va) >= 2 and len(vb) >= 2:
            return (f"'{comparison.a}' has {key} {', '.join(va[:5])} and '{comparison.b}' {key} "
                    f"{', '.join(vb[:5])}, none in common: a pair is one run under both conditions, so give "
                    f"the runs the same {key} labels")
    return ""


def _absent_run(frame: pd.DataFrame, condition: str, row, level: list[str]) -> bool:
    """Whether `condition` has no row at all (any metric) for `row`'s run or target."""
    sub = frame[frame.condition == condition]
    for k in level:
        sub = sub[sub[k] == row[k]]
    return sub.empty


# --------------------------------------------------------------------------- tests


def min_exact_p(n_nonzero: int) -> float:
    """Smallest two-sided p an exact sign-flip or Wilcoxon signed-rank test can give with
    n non-zero differences: 2 / 2^n (all signs agree).

    Examples
    --------
    Five seeds can never reach p < 0.05 with an exact paired test:

    >>> from matprobe.stats.significance import min_exact_p
    >>> min_exact_p(5)
    0.0625
    """
    return min(1.0, 2.0 ** (1 - n_nonzero)) if n_nonzero > 0 else 1.0


def _integer_grid(x: np.ndarray, max_total: int = 2_000_000):
    """Scale at which all |x| are integers (1, 10, ..., 1e4), or None."""
    for scale in (1, 10, 100, 1000, 10000):
        y = x * scale
        if np.all(np.abs(y - np.round(y)) <= 1e-9 * np.maximum(1.0, np.abs(y))) and np.all(
                np.round(y) > 0):
            return np.round(y).astype(np.int64) if np.round(y).sum() <= max_total else None
    return None


def _half_sums(x: np.ndarray) -> np.ndarray:
    """All 2^len(x) signed sums of x."""
    sums = np.zeros(1)
    for v in x:
        sums = np.concatenate([sums + v, sums - v])
    return sums


def _signed_sum_p(weights: np.ndarray, signs: np.ndarray) -> float:
    """Exact two-sided p of |sum(signs * weights)| under independent fair sign flips, for
    positive integer weights: P(|S| >= |s_obs|) by dynamic programming over the sums."""
    total = int(weights.sum())
    obs = abs(int(np.sum(signs * weights)))
    # probs[k] = P(sum of the weights given a + sign == k); signed sum = 2k - total
    probs = np.zeros(total + 1)
    probs[0] = 1.0
    for g in weights:
        shifted = np.zeros_like(probs)
        shifted[g:] = probs[: total + 1 - g]
        probs = 0.5 * (probs + shifted)
    signed = 2 * np.arange(total + 1) - total
    return float(min(1.0, probs[np.abs(signed) >= obs].sum()))


WILCOXON_EXACT_MAX = 500  # non-zero pairs up to which the signed-rank p is enumerated exactly


def wilcoxon_signed_rank(diff) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p of the paired differences, and the variant used.

    Zero differences are dropped (Wilcoxon's method, scipy's default) and tied |d| get their
    average rank. Up to WILCOXON_EXACT_MAX non-zero pairs the p is exact and conditional on
    the observed ranks: every one of the 2^n sign assignments of the (mid)ranks is equally
    likely under H0 (enumerated by dynamic programming over twice the ranks, which are
    integers). scipy instead switches to a normal approximation without continuity
    correction when zeros or ties meet n >= 14, which can be off by a factor of several and
    fall below the exact floor 2^(1-n). Above the bound: the normal approximation with tie
    and continuity corrections, never below 2^(1-n). Returns (p, variant)."""
    d = np.asarray(diff, dtype=float)
    zeros = int(np.sum(d == 0))
    d = d[d != 0]
    n = d.size
    if n == 0:
        return math.nan, "no non-zero differences"
    ranks = stats.rankdata(np.abs(d))  # average ranks for ties
    ties = len(np.unique(ranks)) < n
    conditions = [f"{zeros} zero difference{'s' if zeros != 1 else ''} dropped"] if zeros else []
    if ties:
        conditions.append("tied ranks averaged")
    if n <= WILCOXON_EXACT_MAX:
        p = _signed_sum_p(np.round(2 * ranks).astype(np.int64), np.sign(d))
        name = "exact conditional" if conditions else "exact"
    else:
        r_plus = float(ranks[d > 0].sum())
        mean = n * (n + 1) / 4
        _, counts = np.unique(ranks, return_counts=True)
        var = n * (n + 1) * (2 * n + 1) / 24 - float(np.sum(counts**3 - counts)) / 48
        z = max(abs(r_plus - mean) - 0.5, 0.0) / math.sqrt(var)
        p = max(float(2 * stats.norm.sf(z)), min_exact_p(n))
        name = "normal approximation (tie- and continuity-corrected)"
    return min(p, 1.0), name + (f", {', '.join(conditions)}" if conditions else "")


def sign_flip_p(diff, max_exact: int = 40, n_resamples: int = 200_000,
                seed: int = 0) -> tuple[float, str]:
    """Two-sided permutation p of the mean paired difference under random sign flips.

    The t statistic is a monotone function of the mean under sign flips (the sum of squares
    is invariant), so this is also the permutation p of the paired t, and it equals
    scipy.stats.permutation_test(permutation_type="samples", n_resamples=inf). Exact for
    n <= ``max_exact`` by meet-in-the-middle (all 2^n sums as two sorted halves), exact for
    any n by dynamic programming over sums when the differences lie on a decimal grid
    (e.g. accuracies in whole percent), otherwise Monte Carlo with
    p = (1 + hits) / (1 + resamples). Returns (p, method)."""
    d = np.asarray(diff, dtype=float)
    d = d[d != 0]  # a zero difference flips to itself
    n = d.size
    if n == 0:
        return 1.0, "exact"
    grid = _integer_grid(np.abs(d)) if n > max_exact else None
    if grid is not None:
        return _signed_sum_p(grid, np.sign(d)), "exact"
    # ties up to rounding count as at least as extreme (as scipy does)
    tol = 1e-10 * np.abs(d).sum()
    threshold = abs(d.sum()) - tol
    if threshold <= 0:
        return 1.0, "exact"
    if n <= max_exact:
        left = _half_sums(d[: n // 2])
        right = np.sort(_half_sums(d[n // 2:]))
        # |l + r| >= threshold  <=>  r >= threshold - l  or  r <= -threshold - l
        upper = right.size - np.searchsorted(right, threshold - left, side="left")
        lower = np.searchsorted(right, -threshold - left, side="right")
        return float((upper.sum() + lower.sum()) / 2.0**n), "exact"
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_resamples, 10_000):
        m = min(10_000, n_resamples - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(m, n))
        hits += int(np.sum(np.abs(signs @ d) >= threshold))
    return (1 + hits) / (1 + n_resamples), f"monte carlo ({n_resamples} resamples)"


def hedges_correction(df: float) -> float:
    """Exact small-sample bias correction J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2))
    (Hedges 1981; Lakens 2013, Front. Psychol. 4:863, eq. 4 gives the approximation
    1 - 3 / (4 df - 1))."""
    if df <= 1:
        return float("nan")
    return float(math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2))
                 / math.sqrt(df / 2))


def constant_differences(a: np.ndarray, b: np.ndarray, sd: float) -> bool:
    """True when the paired differences are all equal, exactly or up to float rounding
    (0.3 - 0.2 and 0.4 - 0.3 differ by 1 ulp; their sd is ~2e-17, not a measured spread)."""
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    return sd <= 1e-12 * scale or sd == 0.0


def paired_test(a, b, ci_level: float = 0.95, perm_kwargs: dict | None = None) -> dict:
    """Paired statistics of ``a - b``: t, df, two-sided p, mean difference with its t
    interval, dz (mean / sd of differences), Hedges g (dz times J(n-1)), d_av (mean /
    sqrt((sd_a^2 + sd_b^2) / 2), the root mean square of the two sds, as pingouin's paired
    cohen_d, for comparison with tools that report it; Lakens 2013 eq. 10 divides by their
    arithmetic mean (sd_a + sd_b) / 2 instead), the
    Wilcoxon signed-rank p (`wilcoxon_signed_rank`, variant in ``wilcoxon_method``) and the
    sign-flip permutation p.

    When all differences are equal (sd 0, exactly or to rounding) there is no t-test: t, p,
    the interval, dz and g are NaN and ``sd_zero`` is True (the exact tests still apply)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    d = a - b
    n = d.size
    df = n - 1
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    sd_zero = constant_differences(a, b, sd)
    se = sd / math.sqrt(n)
    if sd_zero:
        t = p = half = dz = math.nan
    else:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), df))
        half = float(stats.t.ppf(0.5 + ci_level / 2, df) * se)
        dz = mean / sd
    sd_av = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    nonzero = int(np.count_nonzero(d))
    wilcoxon_p, wilcoxon_method = wilcoxon_signed_rank(d)
    perm_p, perm_method = sign_flip_p(d, **(perm_kwargs or {}))
    return {
        "n_pairs": n, "mean_a": float(a.mean()), "mean_b": float(b.mean()),
        "mean_diff": mean, "sd_diff": sd, "ci_low": mean - half, "ci_high": mean + half,
        "ci_level": ci_level, "t": float(t), "df": df, "p": p, "dz": dz,
        "hedges_g": dz * hedges_correction(df), "d_av": mean / sd_av if sd_av > 0 else math.nan,
        "wilcoxon_p": wilcoxon_p, "wilcoxon_method": wilcoxon_method,
        "perm_p": perm_p, "perm_method": perm_method,
        "min_exact_p": min_exact_p(nonzero), "n_nonzero": nonzero, "sd_zero": sd_zero,
    }


def adjust_p(p, method: str) -> np.ndarray:
    """Holm (step-down) or Benjamini-Hochberg adjusted p-values; NaNs stay NaN.

    Holm 1979: p_(i) * (m - i + 1), running max. BH 1995: p_(i) * m / i, running min from
    the top.

    Examples
    --------
    The values statsmodels' ``multipletests`` gives (methods "holm", "fdr_bh"):

    >>> from matprobe.stats.significance import adjust_p
    >>> adjust_p([0.01, 0.04, 0.03], "holm").round(6).tolist()
    [0.03, 0.06, 0.06]
    >>> adjust_p([0.01, 0.04, float("nan"), 0.03], "bh").round(6).tolist()
    [0.03, 0.04, nan, 0.04]
    """
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="mergesort")
    ranked = q[order]
    if method == "holm":
        adj = np.maximum.accumulate(ranked * (m - np.arange(m)))
    elif method in ("bh", "fdr_bh"):
        adj = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        raise StatsError(f"adjustment {method!r}: use 'holm' or 'bh'")
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def mixed_model_test(frame: pd.DataFrame, comparison: Comparison, metric: str,
                     ratio_metrics=DEFAULT_RATIO_METRICS, source: str = "results") -> dict:
    """Seed-level paired differences with a random intercept per target (seeds nested in
    targets), fitted by REML with statsmodels MixedLM. Returns the fixed intercept (mean
    difference), its SE, z, p and Wald interval. statsmodels reports z-tests, which are
    anti-conservative with few targets (docs/design.md §5)."""
    import statsmodels.formula.api as smf

    pairs = paired_values(frame, comparison, metric, "seed", ratio_metrics, source)
    pairs["diff"] = pairs.a - pairs.b
    n_targets = pairs.target.nunique()
    if n_targets < 2 or len(pairs) <= n_targets:
        raise StatsError(f"{source}: the mixed model for '{comparison.label}', {metric} needs "
                         "at least 2 targets and more than one seed in some target; "
                         f"got {n_targets} target(s), {len(pairs)} pairs; use --unit instead")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary / convergence chatter; reported in 'note'
        fit = smf.mixedlm("diff ~ 1", pairs, groups=pairs["target"]).fit(reml=True)
    est = float(fit.fe_params["Intercept"])
    se = float(fit.bse_fe["Intercept"])
    z = est / se
    ci = fit.conf_int().loc["Intercept"]
    return {"mixed_mean_diff": est, "mixed_se": se, "mixed_z": z,
            "mixed_p": float(2 * stats.norm.sf(abs(z))), "mixed_ci_low": float(ci[0]),
            "mixed_ci_high": float(ci[1]), "mixed_n_targets": n_targets,
            "mixed_var_target": float(fit.cov_re.iloc[0, 0]), "mixed_converged":
            bool(fit.converged)}


def item_ratio_label(metric: str, parts: tuple[str, str]) -> str:
    """Name of a ratio metric tested with one item per pair: the mean of per-item ratios
    (cIoU's intersection/union per image is that image's IoU, so the mean is mean IoU)."""
    return "mean IoU" if tuple(parts) == ("intersection", "union") else f"mean item {metric}"


def item_ratio_refusal(metric: str, parts: tuple[str, str]) -> str:
    return (f"metric '{metric}' at --unit item: one item per pair makes each value that item's "
            f"{parts[0]}/{parts[1]}, i.e. a test on {item_ratio_label(metric, parts)}, not on "
            f"{metric} (a ratio of sums over items); use --unit seed or target for {metric}, "
            "or --items for its paired item bootstrap")


def compare_conditions(results: pd.DataFrame,
                       comparisons=DEFAULT_CROSSMED_COMPARISONS,
                       unit: str | dict[str, str] = "target",
                       metrics: list[str] | None = None,
                       mixed: bool = False,
                       ci_level: float = 0.95,
                       family: str = "all",
                       ratio_metrics: dict[str, tuple[str, str]] | None = None,
                       reported_alpha: float = 0.05,
                       source: str = "results",
                       too_few: str = "raise") -> pd.DataFrame:
    """One row per (comparison, metric) with paired statistics (see ``RESULT_COLUMNS``).

    ``too_few="skip"``: a (comparison, metric) with fewer than two pairs is left out of the table
    instead of raising, and ``.attrs["untested"]`` says which, one sentence per comparison.

    ``unit`` is one unit of analysis, or one per metric ({metric: unit}, as
    `metric_units` chooses). Holm and BH adjustments are over the t-test p-values of the whole table
    (``family="all"``) or within each metric (``family="metric"``). A row's ``warning`` says
    when an exact test (sign flip, Wilcoxon) cannot reach ``reported_alpha`` with its n."""
    ratio_metrics = DEFAULT_RATIO_METRICS if ratio_metrics is None else ratio_metrics
    results = validate_results(results, source)  # idempotent: a validated frame passes unchanged
    ratio_metrics = active_ratios(results, ratio_metrics)
    comparisons = tuple(parse_comparison(c) if isinstance(c, str) else c for c in comparisons)
    if not comparisons:
        raise StatsError("no comparisons given; pass a spec or use the CrossMed default")
    asked = bool(metrics)
    metrics = list(metrics) if metrics else available_metrics(results, ratio_metrics)
    units = unit if isinstance(unit, dict) else dict.fromkeys(metrics, unit)
    if asked:
        for metric in metrics:
            if units.get(metric) == "item" and metric in ratio_metrics:
                raise StatsError(item_ratio_refusal(metric, ratio_metrics[metric]))
    rows, skipped, absent = [], {}, []
    for comp in comparisons:
        for metric in metrics:
            if metric not in ratio_metrics and metric not in set(results.metric):
                raise StatsError(f"{source}: metric '{metric}' not found; metrics present: "
                                 f"{', '.join(available_metrics(results, ratio_metrics))}")
            unit = units[metric]
            try:
                pairs = _paired_values(results, comp, metric, unit, ratio_metrics, source)
            except TooFewPairs as exc:
                if too_few != "skip":
                    raise
                if exc.reason:
                    absent.append(f"{comp.label}: not tested on {metric}, {exc.reason}")
                else:
                    skipped.setdefault(comp.label, {})[metric] = exc.n_pairs
                continue
            label, ratio_note = metric, ""
            if unit == "item" and metric in ratio_metrics:
                # one item's part/whole per pair: the test is on the mean of per-item ratios
                label = item_ratio_label(metric, ratio_metrics[metric])
                ratio_note = (f"'{label}' is the mean of per-item {'/'.join(ratio_metrics[metric])} "
                              f"ratios, not {metric} (a ratio of sums over items): test {metric} at "
                              "--unit seed or target, or its item bootstrap with --items")
            res = paired_test(pairs.a.to_numpy(), pairs.b.to_numpy(), ci_level)
            warn = []
            if res["min_exact_p"] > reported_alpha:
                warn.append(f"exact tests cannot reach p < {reported_alpha:g} with "
                            f"{res['n_nonzero']} non-zero pairs (min {res['min_exact_p']:.3g})")
            if res.pop("sd_zero"):
                warn.append(f"all {res['n_pairs']} differences equal {res['mean_diff']:.6g} (sd 0"
                            f"{'' if res['sd_diff'] == 0 else ' up to rounding'}): no t-test, "
                            "interval or dz; t and p are n/a")
            elif res["n_pairs"] == 2:  # df = 1: J(df) is undefined (hedges_correction), so g is n/a
                warn.append("Hedges' g needs 3 or more pairs (its small-sample correction J(df) is undefined at "
                            "df = 1): n/a")
            if unit == "seed" and 1 < pairs.target.nunique() < len(pairs):  # one target: its seeds are the replicates
                warn.append("seeds nested in targets are treated as independent pairs")
            if unit == "item" and "seed" in pairs and pairs.seed.nunique() > 1:
                # an item's runs under several seeds share its image: a study read "600 pairs, df 599" for
                # 200 items x 3 seeds (the items table's bootstrap and McNemar resample items instead)
                items = len(pairs.groupby(["target", "item"]))
                warn.append(f"{len(pairs)} (target, seed, item) rows of {items} items under {pairs.seed.nunique()} "
                            "seeds are treated as independent pairs (the --items bootstrap and McNemar count each "
                            "item once)")
            if ratio_note:
                warn.append(ratio_note)
            if pairs.attrs.get("seed_sets"):
                warn.append("each target's value is the mean of other seeds under the two conditions ("
                            + "; ".join(pairs.attrs["seed_sets"]) + "): --unit seed pairs the seeds both have")
            if pairs.attrs.get("left_out"):  # last: the report reads the clause to the row's end
                warn.append(LEFT_OUT + "; ".join(pairs.attrs["left_out"]))
            row = {"comparison": comp.label, "metric": label, "a": comp.a, "b": comp.b,
                   "unit": unit, **res, "warning": "; ".join(warn)}
            if mixed:
                row.update(mixed_model_test(results, comp, metric, ratio_metrics, source))
            rows.append(row)
    if family not in ("all", "metric"):
        raise StatsError(f"family {family!r}: use 'all' or 'metric'")
    untested = [untested_sentence(label, max(by_metric.values()), units[next(iter(by_metric))],
                                  () if len(by_metric) == len(metrics) else tuple(by_metric))
                for label, by_metric in skipped.items()] + absent
    if not rows:
        out = pd.DataFrame(columns=RESULT_COLUMNS)
        out.attrs["untested"] = untested
        return out
    out = pd.DataFrame(rows)
    groups = [out.index] if family == "all" else [g.index for _, g in out.groupby("metric")]
    out["p_holm"] = np.nan
    out["p_bh"] = np.nan
    for idx in groups:
        out.loc[idx, "p_holm"] = adjust_p(out.loc[idx, "p"], "holm")
        out.loc[idx, "p_bh"] = adjust_p(out.loc[idx, "p"], "bh")
    extra = [c for c in out.columns if c not in RESULT_COLUMNS]
    out = out[RESULT_COLUMNS + extra]
    out.attrs["untested"] = untested
    return out


def untested_sentence(label: str, n: int, unit: str, metrics=()) -> str:
    """A comparison (or its `metrics` only) left untested with `n` shared units, and the fix: what
    `compare_conditions(too_few="skip")` and `significance`'s defaults say."""
    what = "target(s)" if unit == "target" else "(target, seed) run(s)"
    which = f" on {', '.join(metrics)}" if metrics else ""
    return (f"{label}: not tested{which}, {n} {what} trained under both conditions (a paired test needs two): "
            "train the same seeds for each condition")


# --------------------------------------------------------------------------- item level


def mcnemar_items(results: pd.DataFrame, comparison: Comparison, metric: str,
                  source: str = "results") -> dict:
    """McNemar test on per-item correctness (values 0/1) over all paired (target, seed, item)
    rows: b = rows right under ``a`` only, c = right under ``b`` only. With one row per item,
    p = min(1, 2 * Binom(b + c, 1/2).cdf(min(b, c))) (McNemar 1947, exact binomial form); where
    items have several rows (seeds), the clustered statistic of Durkalski et al. (2003),
    (sum_i (b_i - c_i))^2 / sum_i (b_i - c_i)^2 against chi2(1), i over (target, item)."""
    return _mcnemar_items(validate_results(results, source), comparison, metric, source)


def _mcnemar_items(results: pd.DataFrame, comparison: Comparison, metric: str, source: str) -> dict:
    """`mcnemar_items` on a validated frame."""
    pairs = _paired_values(results, comparison, metric, "item", {}, source)
    vals = np.concatenate([pairs.a, pairs.b])
    if not np.all(np.isin(vals, (0.0, 1.0))):
        raise StatsError(f"{source}: McNemar needs 0/1 correctness per item for '{metric}'; "
                         "found other values")
    right_a_only = ((pairs.a == 1) & (pairs.b == 0)).astype(int)
    right_b_only = ((pairs.a == 0) & (pairs.b == 1)).astype(int)
    only_a, only_b = int(right_a_only.sum()), int(right_b_only.sum())
    k = only_a + only_b
    # an item's rows under several seeds are not independent pairs: the discordant counts are
    # summed per (target, item) and tested by the clustered McNemar statistic of Durkalski et al.
    # (2003), (sum_i (b_i - c_i))^2 / sum_i (b_i - c_i)^2 ~ chi2(1), which with one row per item
    # is McNemar's chi-square; one row per item keeps the exact binomial form
    per_item = (right_a_only - right_b_only).groupby([pairs.target, pairs.item]).sum()
    clustered = len(per_item) < len(pairs)
    if k == 0:
        p = 1.0
    elif clustered:
        denom = float((per_item ** 2).sum())
        p = 1.0 if denom == 0 else float(stats.chi2.sf(float(per_item.sum()) ** 2 / denom, 1))
    else:
        p = float(min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), k, 0.5)))
    return {"comparison": comparison.label, "metric": metric, "n_items": len(per_item), "n_rows": len(pairs),
            "only_a": only_a, "only_b": only_b, "mcnemar_p": p,
            "mcnemar_method": "clustered by item (Durkalski 2003)" if clustered else "exact binomial"}


def paired_bootstrap(results: pd.DataFrame, comparison: Comparison, metric: str,
                     ratio_metrics=DEFAULT_RATIO_METRICS, n_resamples: int = 2000,
                     ci_level: float = 0.95, method: str = "BCa", seed: int = 0,
                     source: str = "results") -> dict:
    """Paired bootstrap over items (images) of the difference ``metric(a) - metric(b)``.

    Items are resampled jointly in both conditions, each (target, item) with all its seeds' rows
    (a cluster bootstrap: n_items counts items, n_rows their rows); a ratio metric such as cIoU is
    recomputed as sum(numerator) / sum(denominator) in every resample (a mean of per-image
    ratios would be a different quantity). Uses scipy.stats.bootstrap(paired=True)."""
    if "item" not in results:
        raise StatsError(f"{source}: the paired bootstrap needs item-level rows (an 'item' column)")
    return _paired_bootstrap(validate_results(results, source), comparison, metric, ratio_metrics,
                             n_resamples, ci_level, method, seed, source)


def _paired_bootstrap(results: pd.DataFrame, comparison: Comparison, metric: str, ratio_metrics,
                      n_resamples: int, ci_level: float = 0.95, method: str = "BCa", seed: int = 0,
                      source: str = "results") -> dict:
    """`paired_bootstrap` on a validated frame with an item column."""
    ratio_metrics = active_ratios(results, ratio_metrics)
    if metric in ratio_metrics:
        num, den = ratio_metrics[metric]
        both = results[results.condition.isin([comparison.a, comparison.b])]
        _check_ratio_parts(both, metric, num, den, source)
        _check_item_sets(results, comparison, (num, den), "item", source)
        cols = {}
        for side, cond in (("a", comparison.a), ("b", comparison.b)):
            for part in (num, den):
                sub = results[(results.condition == cond) & (results.metric == part)]
                cols[(side, part)] = sub.set_index(["target", "seed", "item"])["value"]
        joined = pd.concat(cols, axis=1, join="outer")
        if joined.isna().any(axis=None) or joined.empty:
            raise StatsError(f"{source}: '{comparison.label}', {metric}: every item needs "
                             f"'{num}' and '{den}' in both conditions; some are missing")
        n_rows = len(joined)
        # an item's rows under several seeds are resampled together (its parts summed: the ratio of
        # sums over the resampled items is the same statistic)
        joined = joined.groupby(level=["target", "item"]).sum()
        arrays = [joined[(s, p)].to_numpy() for s in ("a", "b") for p in (num, den)]

        def statistic(na, da, nb, db, axis=-1):
            return na.sum(axis) / da.sum(axis) - nb.sum(axis) / db.sum(axis)
    else:
        pairs = _paired_values(results, comparison, metric, "item", ratio_metrics, source)
        n_rows = len(pairs)
        # an item's rows under several seeds are resampled together: its mean over them (the
        # seeds' rows of one image are not independent pairs)
        items = pairs.groupby(["target", "item"])[["a", "b"]].mean()
        arrays = [items.a.to_numpy(), items.b.to_numpy()]

        def statistic(xa, xb, axis=-1):
            return xa.mean(axis) - xb.mean(axis)
    estimate = float(statistic(*arrays))
    res = stats.bootstrap(arrays, statistic, paired=True, vectorized=True,
                          n_resamples=n_resamples, confidence_level=ci_level, method=method,
                          rng=np.random.default_rng(seed))
    return {"comparison": comparison.label, "metric": metric, "n_items": len(arrays[0]), "n_rows": n_rows,
            "estimate": estimate, "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "ci_level": ci_level,
            "method": f"paired bootstrap {method}, {n_resamples} resamples",
            "se": float(res.standard_error)}


def item_level_analysis(results: pd.DataFrame, comparisons=DEFAULT_CROSSMED_COMPARISONS,
                        metrics: list[str] | None = None, ratio_metrics=None,
                        n_resamples: int = 2000, seed: int = 0,
                        source: str = "results") -> pd.DataFrame:
    """Per comparison and metric: paired bootstrap interval over items and, for 0/1
    metrics, the exact McNemar p."""
    ratio_metrics = DEFAULT_RATIO_METRICS if ratio_metrics is None else ratio_metrics
    results = validate_results(results, source)  # idempotent: a validated frame passes unchanged
    ratio_metrics = active_ratios(results, ratio_metrics)
    comparisons = tuple(parse_comparison(c) if isinstance(c, str) else c for c in comparisons)
    # Only metrics measured per item can be resampled over items.
    item_rows = results[results["item"] != ""] if "item" in results else results.iloc[:0]
    with_items = available_metrics(item_rows, ratio_metrics)
    if metrics is None:
        metrics = with_items
    if not metrics:
        raise StatsError(f"{source}: --items: no item-level rows (an 'item' column with values; `run` writes "
                         "none for accuracy); the bootstrap and McNemar tests need per-item results: drop --items")
    if comparisons and "item" not in results:  # what paired_bootstrap refuses
        raise StatsError(f"{source}: the paired bootstrap needs item-level rows (an 'item' column)")
    missing = [m for m in metrics if m not in with_items]
    if missing:  # named here in --items' words (the per-metric refusal names --unit)
        have = f"; those with them: {', '.join(with_items)}" if with_items else ""
        raise StatsError(f"{source}: --items: metric '{missing[0]}' has no item-level rows (the bootstrap and McNemar "
                         f"need one row per item){have}; drop --items"
                         + (", or name those with --metric" if with_items else ""))
    rows = []
    for comp in comparisons:
        for metric in metrics:
            row = _paired_bootstrap(results, comp, metric, ratio_metrics, n_resamples, seed=seed, source=source)
            row["mcnemar_p"] = math.nan
            if metric not in ratio_metrics:
                vals = results.loc[results.metric == metric, "value"]
                if vals.isin((0.0, 1.0)).all():
                    mc = _mcnemar_items(results, comp, metric, source)
                    row["mcnemar_p"], row["mcnemar_method"] = mc["mcnemar_p"], mc["mcnemar_method"]
            rows.append(row)
    return pd.DataFrame(rows)


def analyze_file(results_path: str | Path, spec_path: str | Path | None = None,
                 unit: str = "target", mixed: bool = False, metrics: list[str] | None = None,
                 item_level: bool = False, n_resamples: int = 2000, family: str = "all",
                 alpha: float = 0.05, seed: int = 0, percent: bool = False) -> dict[str, pd.DataFrame]:
    """Everything ``matprobe significance`` shows: {"results": compare_conditions(...)} and,
    with ``item_level``, {"items": item_level_analysis(...)}."""
    check_probability(alpha, "--alpha", error=StatsError)
    if item_level:
        check_resamples(n_resamples, "--n-boot")
    frame = read_results(results_path)
    percent_notes(frame, str(results_path), percent, StatsError)
    comparisons = load_spec(spec_path) if spec_path else DEFAULT_CROSSMED_COMPARISONS
    out = {"results": compare_conditions(frame, comparisons, unit=unit, metrics=metrics,
                                         mixed=mixed, family=family, reported_alpha=alpha,
                                         source=str(results_path))}
    if item_level:
        out["items"] = item_level_analysis(frame, comparisons, metrics, n_resamples=n_resamples,
                                           seed=seed, source=str(results_path))
    return out


# --------------------------------------------------------------------------- defaults from the data


def condition_names_read(frame: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The frame with conditions written another way ('related', 'zero_overlap', 'wo_task') under
    the names `run` writes and Table IX's rows use ('Related', 'Zero-overlap', 'Without Task'), and
    a sentence saying which were read so; a name of the user's own is kept as it is, and so is one
    whose display name the frame already holds."""
    from matprobe.conditions import condition_display_name

    names = list(dict.fromkeys(frame["condition"].astype(str)))
    read = {n: d for n in names if (d := condition_display_name(n)) not in (None, n)}
    if not read:
        return frame, None
    merged = frame.assign(condition=frame["condition"].astype(str).replace(read))
    # 'related' beside 'Related' is one condition written two ways, unless both spellings hold a
    # row for the same measurement: then they are two and the user must say which is which
    keys = [k for k in ("condition", "target", "seed", "item", "metric") if k in merged]
    clash = merged.duplicated(keys, keep=False) & ~frame.duplicated(keys, keep=False)
    if clash.any():
        spellings = list(dict.fromkeys(frame.loc[clash, "condition"].astype(str)))
        raise StatsError(f"conditions {' and '.join(map(repr, spellings))} both read as "
                         f"{read.get(spellings[0], spellings[0])!r} and both have rows for the same runs "
                         f"({_lines(frame, clash)}); rename one of them")
    return merged, "conditions read as " + ", ".join(f"{n!r} = {d}" for n, d in read.items())


def _spec_names_read(comparisons, frame: pd.DataFrame) -> tuple:
    """A spec's condition names read as `condition_names_read` reads the table's, where the name as
    written is not in the table."""
    from matprobe.conditions import condition_display_name

    present = set(frame["condition"].astype(str))

    def name(x):
        read = condition_display_name(x)
        return read if x not in present and read in present else x

    return tuple(Comparison(name(c.a), name(c.b), c.name) for c in comparisons)


def related_comparisons(conditions) -> tuple[Comparison, ...]:
    """Related against each other condition, in the order given, each worded as CrossMed Table IX
    words its row where it has one ('Without Task vs. Related', the difference Without Task -
    Related), else 'Related vs. X'. `run` tests these; `significance` defaults to them.

    >>> [c.label for c in related_comparisons(["Related", "Unrelated", "Without Task", "Zero-overlap"])]
    ['Related vs. Unrelated', 'Without Task vs. Related', 'Related vs. Zero-overlap']
    """
    table_ix = {frozenset((c.a, c.b)): c for c in DEFAULT_CROSSMED_COMPARISONS}
    return tuple(table_ix.get(frozenset(("Related", other)), Comparison("Related", other, f"Related vs. {other}"))
                 for other in conditions if other != "Related")


def default_comparisons(frame: pd.DataFrame) -> tuple[tuple[Comparison, ...], str]:
    """The comparisons the data allow, and a sentence saying how they were chosen.

    With Related in the data: Related against every other condition (`related_comparisons`, what
    `run` tests), CrossMed Table IX's rows first in its order; else, with two conditions, that
    pair. Anything else needs a spec."""
    conds = list(dict.fromkeys(frame["condition"].astype(str)))
    present = set(conds)
    if "Related" in present and len(conds) > 1:
        table_ix = [x for c in DEFAULT_CROSSMED_COMPARISONS for x in (c.a, c.b) if x != "Related"]
        ordered = [c for c in table_ix if c in present] + [c for c in conds if c not in table_ix]
        comps = related_comparisons(ordered)
        in_table = [c for c in comps if c in DEFAULT_CROSSMED_COMPARISONS]
        others = [c.b for c in comps if c not in DEFAULT_CROSSMED_COMPARISONS]
        if not in_table:
            return comps, "Related against each other condition in the data"
        missing = sorted({x for c in DEFAULT_CROSSMED_COMPARISONS for x in (c.a, c.b)} - present)
        how = (f"CrossMed Table IX's comparisons present in the data ({len(in_table)} of "
               f"{len(DEFAULT_CROSSMED_COMPARISONS)}" + (f"; no condition {', '.join(map(repr, missing))}"
                                                         if missing else "") + ")")
        if others:
            how += f", and Related against the other conditions ({', '.join(others)})"
        return comps, how
    if len(conds) == 2:
        a, b = conds
        return (Comparison(a, b, f"{a} vs. {b}"),), f"the two conditions in the data ({a} - {b})"
    raise StatsError(f"conditions {', '.join(map(repr, conds))}: no default comparison fits (with no "
                     "'Related' condition the defaults need exactly two conditions); write one 'A vs B' "
                     "per line in a file and pass it with --spec")


def shared_units(frame: pd.DataFrame, a: str, b: str, keys=("target", "seed")) -> int:
    """How many units (distinct values of `keys`: runs, or targets) both conditions have rows for."""
    units = [set(map(tuple, frame.loc[frame["condition"] == c, list(keys)].astype(str).to_numpy().tolist()))
             for c in (a, b)]
    return len(units[0] & units[1])


def _testable(frame: pd.DataFrame, comparisons) -> tuple[tuple[Comparison, ...], list[str]]:
    """The default comparisons with at least two (target, seed) runs under both conditions, and a
    sentence per one left out (a condition trained on one seed beside another's three is a design,
    not a broken table). None left: the first one's own error says why."""
    unit = default_unit(frame)[0]  # the pairs the default unit makes: targets, or runs
    shared = {c: shared_units(frame, c.a, c.b, KEY_COLUMNS[unit]) for c in comparisons}
    keep = tuple(c for c in comparisons if shared[c] >= 2)
    if not keep:
        return tuple(comparisons), []
    return keep, [untested_sentence(c.label, shared[c], unit) for c in comparisons if c not in keep]


def default_unit(frame: pd.DataFrame) -> tuple[str, str]:
    """Unit of analysis the data allow: target when there are at least 2 targets, else seed."""
    n_targets = frame["target"].nunique() if "target" in frame else 0
    if n_targets >= 2:
        return "target", f"target ({n_targets} targets; seeds averaged)"
    n_seeds = frame["seed"].nunique() if "seed" in frame else 0
    return "seed", f"seed (one target, {n_seeds} seeds: each seed both conditions have is one pair)"


def metric_units(frame: pd.DataFrame, comparisons, metrics: list[str] | None = None,
                 ratio_metrics=DEFAULT_RATIO_METRICS, source: str = "results"
                 ) -> tuple[dict[str, str], list[str]]:
    """The automatic unit of analysis per metric, and sentences saying what was chosen.

    `default_unit` for the table; a metric measured on one target only (accuracy on a
    classification target beside cIoU on a segmentation one) is paired by seed; a metric
    with fewer than two pairs under its unit is left out, said in a note. Every metric
    left out is a StatsError naming the fix."""
    frame = validate_results(frame, source)  # once, not once per pair table
    ratio_metrics = active_ratios(frame, ratio_metrics)
    table_unit, how = default_unit(frame)
    metrics = list(metrics) if metrics else available_metrics(frame, ratio_metrics)
    units, by_seed, dropped, first_error = {}, [], [], None
    for metric in metrics:
        components = set(ratio_metrics.get(metric, (metric,)))
        n_targets = frame.loc[frame.metric.isin(components), "target"].nunique()
        unit = "seed" if table_unit == "target" and n_targets < 2 else table_unit
        testable = False
        for comp in comparisons:  # kept where one comparison has two pairs; the others are said
            try:
                _paired_values(frame, comp, metric, unit, ratio_metrics, source)
                testable = True
            except TooFewPairs as exc:
                first_error = first_error or exc
        if not testable:
            dropped.append(metric)
            continue
        units[metric] = unit
        if unit != table_unit:
            by_seed.append(metric)
    if not units:
        fix = ("" if isinstance(first_error, RunsSpelledApart)
               else ": train at least two seeds per condition (or hold out two targets)")
        raise StatsError(f"{first_error}; no metric has two pairs{fix}")
    notes = [f"unit of analysis: {how}"]
    if by_seed:
        notes.append(f"{', '.join(by_seed)}: measured on one target only, so paired by seed "
                     "(each seed of that target is one pair)")
    if dropped:
        notes.append(f"{', '.join(dropped)}: left out, no comparison has two pairs of it (a paired test "
                     "needs two)")
    return units, notes


@dataclass
class SignificanceResult:
    """`matprobe significance` as a typed result: the per-(comparison, metric) statistics
    (`results`, columns RESULT_COLUMNS), and how the defaults were chosen. `.frame()` is
    `results`; `.to_table()` Table IX (a `matprobe.present` Table: `mp.to_markdown(...)`
    renders it); `.tables()` all displays. With items=True, `.items` holds the item-level
    rows (`item_level_analysis`: per comparison and metric the paired bootstrap over items,
    n_items and n_rows, and for 0/1 metrics McNemar's p and its method); else None."""

    results: pd.DataFrame
    unit: str
    comparisons: tuple
    items: pd.DataFrame | None = None
    level: float = 0.95
    choices: list = None  # sentences: how the comparisons / unit were chosen
    source: str = ""

    def frame(self) -> pd.DataFrame:
        return self.results

    def notes(self) -> list[str]:
        from matprobe.present import significance as formatting

        return list(self.choices or []) + formatting.notes(self.results)

    def to_table(self):
        """Table IX layout: rows comparisons, columns metrics, paired t-test p-values."""
        from matprobe.present.views import significance_table

        return significance_table(self)

    def tables(self) -> list:
        from matprobe.present.views import significance_tables

        return significance_tables(self)

    def machine_tables(self) -> list:
        """The raw numbers for --format csv/json: every RESULT_COLUMNS column at full
        precision (interval as ci_low/ci_high with ci_level, the unit of analysis, the
        Wilcoxon and permutation variants), then the item-level rows if any."""
        from matprobe.present.views import significance_machine_tables

        return significance_machine_tables(self)

    def tables_for(self, fmt: str) -> list:
        """What `matprobe significance --format fmt` prints: raw numbers for csv/json, display
        tables otherwise."""
        return self.machine_tables() if fmt in ("csv", "json") else self.tables()


def significance(results, spec=None, *, unit: str | None = None, mixed: bool = False,
                 metrics: list[str] | None = None, item_level: bool = False, n_resamples: int = 2000,
                 family: str = "all", alpha: float = 0.05, level: float = 0.95, seed: int = 0,
                 percent: bool = False, bits: bool = False) -> SignificanceResult:
    """Paired tests between conditions. `results`: a tidy CSV path or DataFrame; `spec`: a
    spec file, a list of 'A vs B' strings / Comparisons, or None for the comparisons present
    in the data (`default_comparisons`); `unit`: target, seed, item or None (= `default_unit`);
    `percent`: accuracy-like metrics are in percent on purpose (else they are refused); `bits`: MI
    metrics named '... nats' tested in bits (`metrics_in_bits`)."""
    check_level(level, "--level", StatsError)  # before any reading: --level 95 names 0.95
    if unit is not None and unit not in ("auto", *UNITS):
        raise StatsError(unit_refusal(unit))
    check_probability(alpha, "--alpha", error=StatsError)
    if item_level:
        check_resamples(n_resamples, "--n-boot")
    if isinstance(results, (str, Path)):
        source = str(results)
        frame = read_results(results)
    else:
        source = "results"
        frame = validate_results(results.copy(), source)
    frame, read = condition_names_read(frame)  # 'zero_overlap' is Zero-overlap, as `run` names it
    choices = percent_notes(frame, source, percent, StatsError)  # refused, or said (matprobe.checks)
    if read:
        choices.insert(0, read)
    if bits:
        frame, said = metrics_in_bits(frame, source)
        choices.append(said)
        if metrics:  # --metric may name the metric as the results do ('... nats')
            metrics = [m[: -len(NATS_SUFFIX)] + BITS_SUFFIX if m.endswith(NATS_SUFFIX) else m for m in metrics]
    if spec is None:
        comparisons, how = default_comparisons(frame)
        choices.append(f"comparisons: {how}")
        comparisons, untested = _testable(frame, comparisons)
        choices.extend(untested)
    elif isinstance(spec, (str, Path)):
        comparisons = load_spec(spec)
    else:
        comparisons = tuple(parse_comparison(c) if isinstance(c, str) else c for c in spec)
    comparisons = _spec_names_read(comparisons, frame)
    asked = metrics  # --items tests these, or (None) the metrics with item rows
    if unit is None or unit == "auto":
        units, notes = metric_units(frame, comparisons, metrics, source=source)
        choices.extend(notes)
        metrics = list(units)
        per_metric = dict(units)
        kinds = list(dict.fromkeys(units.values()))
        unit = kinds[0] if len(kinds) == 1 else " / ".join(kinds)
    else:
        per_metric = unit
    # a (comparison, metric) that cannot be tested is left out and said; the others are tested
    res = compare_conditions(frame, comparisons, unit=per_metric, metrics=metrics, mixed=mixed, family=family,
                             reported_alpha=alpha, ci_level=level, source=source, too_few="skip")
    if res.empty:  # nothing testable: the first comparison's own error says why
        compare_conditions(frame, comparisons[:1], unit=per_metric, metrics=metrics, source=source)
        raise StatsError(f"{source}: no comparison could be tested: " + "; ".join(res.attrs["untested"]))
    choices.extend(res.attrs["untested"])
    items = None
    if item_level:
        items = item_level_analysis(frame, comparisons, asked, n_resamples=n_resamples, seed=seed,
                                    source=source)
    return SignificanceResult(res, unit, comparisons, items, level, choices, source)
