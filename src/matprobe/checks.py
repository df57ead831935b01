"""Checks for values that can be nonsense, applied where the value enters (one line each).

Each function raises a `MatprobeError` subclass whose message names the value, where it came
from and the fix; callers add one call where the value first reaches the library.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from matprobe.errors import (
    ConfigError,
    DataError,
    EstimationError,
    MatprobeError,
    StatsError,
    StoreError,
    StoreUnavailable,
)
from matprobe.factors import FACTOR_ALIASES

MIN_RESAMPLES = 100


def check_fraction(value, name: str, *, what: str = "a fraction", low_open: bool = True,
                   high_open: bool = True, example: float = 0.95, error: type = MatprobeError) -> float:
    """The one check for levels, probabilities, fractions and rates: a number in (0, 1) or [0, 1].

    A value in (1, 100] is read as a percent given by mistake and the message names the
    fraction it most likely meant (`--level 95` -> 0.95), so the fix is in the error line.
    `error` is the MatprobeError subclass the caller's layer raises (BoundsError, StatsError).
    """
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"
    interval = f"{lo}0, 1{hi}"
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise error(f"{name} {value!r} is not a number; give {what} in {interval}, e.g. {example:g}") from None
    inside = np.isfinite(x) and (0.0 < x if low_open else 0.0 <= x) and (x < 1.0 if high_open else x <= 1.0)
    if inside:
        return x
    if np.isfinite(x) and 1.0 < x <= 100.0:
        raise error(f"{name} {x:g} is outside {interval}: {what} is not a percent; did you mean {x / 100:g}?")
    raise error(f"{name} {x:g} is outside {interval}; give {what} in {interval}, e.g. {example:g}")


def check_rate(value, name: str, *, what: str = "an error rate", error: type = MatprobeError) -> float:
    """An error rate or risk in [0, 1] (Fano's ε, PAC's empirical risk): 16.8 is refused naming 0.168."""
    return check_fraction(value, name, what=what, low_open=False, high_open=False, example=0.168, error=error)


def check_level(level: float, flag: str = "--level", error: type = MatprobeError) -> float:
    """An interval level in (0, 1); 95 (percent) gets the hint 0.95."""
    return check_fraction(level, flag, what="the interval level", example=0.95, error=error)


def check_pca(pca, flag: str = "--pca", error: type = MatprobeError) -> int | None:
    """PCA dimensions: >= 1, or 0 / None for no reduction (returned as None). flag: how the
    message names the value ("--pca", "[mi] pca =")."""
    if pca is None:
        return None
    if int(pca) < 0:
        raise error(f"{flag} {pca}: give a number of PCA dimensions >= 1, or 0 for none")
    return int(pca) or None  # 0 means no reduction, as on the command line


def check_probability(p: float, flag: str, *, closed: bool = False, example: float = 0.05,
                      error: type = MatprobeError) -> float:
    """A probability (delta, alpha) in (0, 1), or [0, 1] with closed=True."""
    return check_fraction(p, flag, what="a probability", low_open=not closed, high_open=not closed,
                          example=example, error=error)


def check_factors(names: Iterable[str], flag: str = "--factors") -> list[str]:
    """Factor names as given, refused when one is empty or names the same column twice (M and modality)."""
    names = [str(n).strip() for n in names]
    if not names or any(not n for n in names):
        raise MatprobeError(f"{flag} {','.join(names)!r}: give comma-separated factor names, e.g. M,A,T")
    seen: dict[str, str] = {}
    for n in names:
        col = FACTOR_ALIASES.get(n, n)
        if col in seen:
            same = f"{seen[col]} and {n}" if seen[col] != n else f"{n} twice"
            raise MatprobeError(f"{flag} {','.join(names)}: names the factor {col!r} more than once ({same}); "
                                "list each factor once, e.g. M,A,T")
        seen[col] = n
    return names


def check_store_path(path) -> None:
    """A store path that names a file: refused otherwise with the fix (`EmbeddingStore.open` calls
    this; the CLI calls it before importing torch, so a mistyped path is answered at once)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store; create it with `matprobe extract`")
    if path.is_dir():
        raise StoreUnavailable(f"{path} is a folder, not a store file; pass the .h5 file inside it, "
                               "or move the folder away")


def check_resamples(n: int, flag: str = "--n-boot", minimum: int = MIN_RESAMPLES) -> int:
    """A resample count large enough for an interval (a handful gives NaN or noise)."""
    if isinstance(n, float) and not float(n).is_integer():
        raise MatprobeError(f"{flag} {n}: give a whole number of resamples, e.g. 2000")
    if int(n) < minimum:
        raise MatprobeError(f"{flag} {n}: too few resamples for an interval; use at least {minimum} "
                            "(2000 is the default)")
    return int(n)


# ---------------------------------------------------------------------- MI sample sizes

RARE_CLASSES = ("refuse", "merge")  # what the MI chain does with classes of fewer than 2 rows per fold


def check_rare_classes(value: str, flag: str = "--rare-classes") -> str:
    """One of RARE_CLASSES, else one line naming them."""
    if value not in RARE_CLASSES:
        raise MatprobeError(f"{flag} {value!r}: use one of {', '.join(RARE_CLASSES)}")
    return value


def check_class_sizes(codes: Mapping[str, np.ndarray], folds: int, labels: Mapping[str, Any] | None = None,
                      source: str = "", remedy: str | None = None) -> None:
    """Every class of every factor needs >= 2 rows per fold, or held-out MI is not estimable.

    With fewer, whole training folds miss a class and the held-out log-loss (and so the
    estimate) goes far below 0, with an interval that can lie entirely below 0. remedy: what
    the refusal tells the user to do (default: the `mi` options that do it).
    """
    need = 2 * int(folds)
    for name, col in codes.items():
        col = np.asarray(col)
        values, counts = np.unique(col, return_counts=True)
        small = counts < need
        if small.any():
            i = int(np.flatnonzero(small)[np.argmin(counts[small])])
            cls = values[i].item() if hasattr(values[i], "item") else values[i]  # not np.int64(4)
            if labels and name in labels:
                try:
                    cls = labels[name][int(cls)]
                except (IndexError, ValueError, TypeError):
                    pass
            where = f"{source}: " if source else ""
            raise EstimationError(
                f"{where}factor {name!r} class {cls!r} has {int(counts[i])} row{'' if counts[i] == 1 else 's'}, fewer than 2 per fold for "
                f"--folds {folds} ({need} needed); held-out MI on so few rows is not estimable"
                + (f". {remedy}" if remedy else ": add samples, merge rare classes (--rare-classes merge does it, "
                   "flagging the terms), or lower --folds")
            )


def check_chain_intervals(result, source: str = "") -> None:
    """Refuse a chain whose estimate interval lies entirely below 0 (MI >= 0: estimator breakdown)."""
    entries = []
    for est, items in getattr(result, "terms", {}).items():
        entries.extend((term, est, e) for term, e in items)
    for est, d in getattr(result, "direct", {}).items():
        entries.append(("direct", est, d))
    for term, est, e in entries:
        hi = getattr(e, "ci_high", None)
        if hi is not None and np.isfinite(hi) and hi < 0:
            where = f"{source}: " if source else ""
            raise EstimationError(
                f"{where}{term} ({est}) has its whole interval below 0 ([{e.ci_low:.3g}, {hi:.3g}] on "
                f"{getattr(e, 'n_eval', '?')} rows); MI cannot be negative, so the estimator broke down on "
                "too few rows for the folds and strata: add samples, lower --folds or --pca"
            )


# ---------------------------------------------------------------------- significance input

_PROPORTION_NAME = re.compile(
    r"(acc|accuracy|f1|auc|auroc|ap|precision|recall|sensitivity|specificity|iou|ciou|miou|dice|"
    r"error|err|rate|percent|pct|%|exact|match|correct|bleu|rouge)", re.IGNORECASE)


# metrics that are fractions by definition (BLEU/ROUGE and "error" counts are often not)
_FRACTION_NAME = re.compile(
    r"(^|[^a-z])(acc|accuracy|ciou|miou|iou|dice|f1|auc|auroc|precision|recall|sensitivity|specificity)"
    r"($|[^a-z])", re.IGNORECASE)


def check_proportion_range(frame, source: str) -> None:
    """Refuse a value below 0 or above 100 of a metric whose name says it is a proportion in
    fractions or percent (accuracy, IoU, F1, ...: `_FRACTION_NAME`), naming its rows.

    frame: validated results (metric, value, _row). Without this, a negative accuracy passed
    unread by the unit check, which only judges metrics wholly inside [0, 100]."""
    for metric, rows in frame.groupby("metric", sort=False):
        if not _FRACTION_NAME.search(str(metric)):
            continue
        out = (rows["value"] < 0) | (rows["value"] > 100)
        if out.any():
            shown = ", ".join(str(r) for r in rows.loc[out, "_row"].tolist()[:5])
            raise StatsError(
                f"{source}: metric '{metric}' is a proportion but has values outside [0, 1] (or [0, 100] "
                f"in percent) at {shown}: e.g. {float(rows.loc[out, 'value'].iloc[0]):g}; fix those rows (a "
                "difference between runs is computed by `significance`, not given as the metric)")


def check_proportion_units(frame, source: str) -> None:
    """Refuse a proportion metric given partly in fractions (0-1) and partly in percent.

    frame: validated results (condition, metric, value, _row). Only metrics whose name says
    they are proportions (accuracy, F1, IoU, error rate, ...) and whose values all lie in
    [0, 100] are checked, row by row: a value above 1 is percent, one strictly between 0 and 1
    a fraction (0 and 1 read the same either way). One stray fraction among a condition's percent
    values (81, 0.84, 79) is refused as surely as a condition in the other unit.
    """
    for metric, rows in frame.groupby("metric", sort=False):
        if not _PROPORTION_NAME.search(str(metric)):
            continue
        values = rows["value"].to_numpy(dtype=float)
        if values.size == 0 or values.min() < 0 or values.max() > 100:
            continue
        percent, fraction = rows[values > 1], rows[(values > 0) & (values < 1)]
        if len(percent) and len(fraction):
            raise StatsError(
                f"{source}: metric '{metric}' mixes units: {_unit_rows(percent, 'percent (values above 1)')} "
                f"and {_unit_rows(fraction, 'fractions (values below 1)')}; put every row in one unit "
                "(divide the percent rows by 100) and rerun"
            )


def _unit_rows(rows, unit: str) -> str:
    """'condition 'Related' is in percent (values above 1): line 2 (60), ...' for a unit refusal."""
    conds = list(dict.fromkeys(map(str, rows["condition"])))
    who = (f"condition '{conds[0]}' is" if len(conds) == 1
           else "conditions " + ", ".join(f"'{c}'" for c in conds) + " are")
    shown = ", ".join(f"{r} ({v:g})" for r, v in zip(rows["_row"][:3], rows["value"][:3]))
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    return f"{who} in {unit} at {shown}{more}"


def percent_metrics(frame) -> dict[str, float]:
    """Accuracy-like metrics given wholly in percent (values in (1, 100]) -> their largest value."""
    out = {}
    for metric, rows in frame.groupby("metric", sort=False):
        values = rows["value"].to_numpy(dtype=float)
        if (_FRACTION_NAME.search(str(metric)) and values.size and values.min() >= 0
                and 1 < values.max() <= 100):
            out[str(metric)] = float(values.max())
    return out


def percent_notes(frame, source: str = "results", percent: bool = False, error=ValueError) -> list[str]:
    """Accuracy-like metrics in percent are refused unless `percent` says the table is in percent
    on purpose (as the published CrossMed and Med-MAT tables are); then a note per metric says
    that every difference and interval is in percentage points."""
    found = percent_metrics(frame)
    if found and not percent:
        metric, top = next(iter(found.items()))
        raise error(f"{source}: metric '{metric}' is in percent (values up to {top:g}), read as a fraction "
                    "it is impossible; divide the values by 100, or pass --percent (percent=True) to test "
                    "it in percentage points")
    return [f"metric '{metric}' is in percent (values up to {top:g}): its differences and intervals are in "
            "percentage points" for metric, top in found.items()]


# ---------------------------------------------------------------------- manifests

def check_vocabulary_header(header: Mapping[str, Any] | None, path, factors: Iterable[str]) -> dict:
    """The JSONL header's vocabulary: {factor: [labels]} for known factors only."""
    if header is None:
        return {}
    factors = list(factors)
    vocab = header.get("vocabulary", {})
    if vocab is None:
        return {}
    if not isinstance(vocab, dict):
        raise DataError(
            f"{path}: line 1 (header): 'vocabulary' is a {type(vocab).__name__}, not an object; write "
            '{"matprobe_manifest": 1, "vocabulary": {"modality": ["CT", ...], "anatomy": [...], "task": [...]}}'
        )
    allowed = list(factors) + ["label", "subset", "split"]
    for name, labels in vocab.items():
        if name not in allowed:
            close = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"use {', '.join(factors)}"
            raise DataError(f"{path}: line 1 (header): vocabulary names unknown factor {name!r}; {hint}")
        if not isinstance(labels, list) or not labels or not all(isinstance(v, str) and v.strip() for v in labels):
            raise DataError(f"{path}: line 1 (header): vocabulary[{name!r}] must be a non-empty list of "
                            "label strings")
    return dict(vocab)


def text_key(text: Any) -> str:
    """Text as matprobe compares labels and options written by hand: runs of spaces one space,
    case folded ('Right  lung' and 'right lung' are one text)."""
    return " ".join(str(text).split()).casefold()


def check_distinct_options(options: Iterable[str], where: str) -> None:
    """Two options with the same text make the answer ambiguous."""
    seen: dict[str, int] = {}
    for i, text in enumerate(options):
        key = text_key(text)
        if key in seen:
            letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            raise DataError(f"{where}: options {letters[seen[key]]} and {letters[i]} have the same text "
                            f"{text!r}; make every option distinct")
        seen[key] = i


def _norm_answer(text: Any) -> str:
    return " ".join(str(text).replace("_", " ").split()).strip(" .").casefold()


def check_answer_agrees(answer: Any, options: tuple[str, ...], index: int, where: str) -> None:
    """Med-MAT: `Answer` must be the text of the option `Answer-choice` points at, when it is an option."""
    target = _norm_answer(answer)
    texts = [_norm_answer(o) for o in options]
    if target in texts and texts[index] != target:
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        raise DataError(
            f"{where}: Answer {answer!r} is option {letters[texts.index(target)]} but Answer-choice is "
            f"{letters[index]} ({options[index]!r}); fix whichever is wrong"
        )


class TrackedTable(dict):
    """A config section that remembers which keys the loader asked for (`unread_keys`).

    The loader's own reads are the schema, so a key added to the loader is known at once and
    a misspelt key in the file (read by no one) is refused instead of silently ignored.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def track_sections(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Wrap every [section] table of a parsed TOML document in a `TrackedTable`."""
    return {k: TrackedTable(v) if isinstance(v, dict) else v for k, v in doc.items()}


def check_unread_keys(doc: Mapping[str, Any], where: str) -> None:
    """After loading: a key no loader read is unknown (misspelt); name it and the closest known key."""
    for section, table in doc.items():
        if not isinstance(table, TrackedTable):
            continue
        unknown = [k for k in table if k not in table.read]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(table.read), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(table.read))}"
            raise ConfigError(f"{where}: [{section}] has unknown key {unknown[0]!r}; {hint}")
