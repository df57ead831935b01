"""Classes merged for the MI (`matprobe.mi.chain.merge_rare_classes`) said in words: which were
under the minimum, which joined them to reach it, with their rows (`run`'s warning, `check`'s note, the notes of the chain's terms and of `compare`)."""

from __future__ import annotations

import numpy as np


def merge_words(name: str, record: dict, rows_of: dict | None = None, shown: int = 6) -> str:
    """A merge of `merge_rare_classes` (its record: {"classes", "rows", "need"}) in words, naming the
    classes below the minimum apart from a class that joined them so that the merged class reaches
    it (the rule's "smallest other class"), each with its rows from `rows_of` ({class: rows}, `class_rows`):

    >>> print(merge_words("label", {"classes": ["down", "left"], "rows": 14, "need": 6}, {"down": 11, "left": 3}))
    label: 'left' (3 rows) is under 6; merged with 'down' (11 rows), the smallest other class,
    so the merged class reaches 6 (14 rows)

    Where `rows_of` is missing or does not add up to the record's rows (other rows), the classes
    are named without rows and without telling which joined."""
    classes = [str(c) for c in record.get("classes") or []]
    rows, need = record.get("rows"), record.get("need")

    def listed(cs, with_rows=True):
        text = ", ".join(f"{c!r}" + (f" ({_rows(rows_of[c])})" if with_rows else "") for c in cs[:shown])
        return text + (f", … ({len(cs) - shown} more)" if len(cs) > shown else "")

    counts_ok = (rows_of is not None and all(c in rows_of for c in classes)
                 and sum(int(rows_of[c]) for c in classes) == rows and need is not None)
    if not counts_ok:
        return (f"{name}: {len(classes)} classes ({listed(classes, False)}; {rows} rows) merged into one, "
                f"the classes with fewer than {need} rows and, where those are still fewer, the smallest other class")
    under = [c for c in classes if rows_of[c] < need]
    joined = [c for c in classes if rows_of[c] >= need]
    text = f"{name}: {listed(under)} {'is' if len(under) == 1 else 'are'} under {need}"
    if joined:
        return (text + f"; merged with {listed(joined)}, the smallest other class, so the merged class reaches "
                f"{need} ({rows} rows)")
    return text + (f"; merged into one class ({rows} rows)" if len(under) > 1 else f" ({rows} rows)")


def _rows(n) -> str:
    return f"{int(n)} row{'' if int(n) == 1 else 's'}"


def class_rows(y, classes) -> dict:
    """{class: rows of Y in it} for the named classes (compared as text, as merge records name them)."""
    names, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
    have = dict(zip(names.tolist(), counts.tolist()))
    return {str(c): int(have.get(str(c), 0)) for c in classes}
