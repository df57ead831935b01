"""The report's "Design warnings": what the run's data or checkpoints cannot show.

Four things make numbers look like findings when they are not: a chain term whose target is
fixed by the factors before it (H(Y|C) = 0; shown as "not identifiable", never as 0.000), a
stratum whose items share one answer (its I(Z;Y) is 0 by construction), a checkpoint that
gives one option for (nearly) every item (its accuracy is that option's share of answers), and a
factor fixed by the source data set (its MI counts the data set's identity as much as the factor).
Beside them, what the data does to what is measured (image files the RGB conversion changes: more
than 8 bits per pixel, transparency; classes too small for the folds, merged for the MI). Kept
apart from `render.py` so the report's other sections do not change with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from matprobe.present.views import not_identifiable

# a checkpoint answering one option for at least this share of its items is flagged
ONE_OPTION_SHARE = 0.9
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def term_cells(frame: pd.DataFrame) -> list:
    """The estimate column of a term table: the value, or "not identifiable: H(Y|C) = 0"."""
    degenerate = frame["degenerate"] if "degenerate" in frame else pd.Series(False, index=frame.index)
    return [not_identifiable(t) if bool(d) else v for t, v, d in zip(frame["term"], frame["estimate"], degenerate)]


def one_option_checkpoints(checkpoints: list, resolve) -> list[str]:
    """Checkpoints whose stored answers are one option for >= 90% of the items with an answer."""
    from matprobe.errors import MatprobeError
    from matprobe.store import EmbeddingStore

    out = []
    for ck in checkpoints:
        path = ck.store
        if not path:
            continue
        try:
            store_path = resolve(path)
            if not Path(store_path).exists():
                continue  # a committed run without its stores: nothing to read
            with EmbeddingStore.open(store_path) as st:
                pred = np.asarray(st.answers()["pred"])
        except (MatprobeError, OSError, KeyError):
            continue
        pred = pred[pred >= 0]
        if pred.size < 10:
            continue
        values, counts = np.unique(pred, return_counts=True)
        top = int(np.argmax(counts))
        share = counts[top] / pred.size
        if share >= ONE_OPTION_SHARE:
            letter = LETTERS[int(values[top])] if 0 <= int(values[top]) < len(LETTERS) else str(values[top])
            out.append(f"checkpoint {ck.name} answers option {letter} for {int(counts[top])} of {pred.size} "
                       f"items ({share:.0%}): its accuracy is the share of items whose answer is {letter}, not "
                       "evidence that it reads the images")
    return out


def design_warnings(data, resolve) -> list[str]:
    """Every design warning for a loaded run (render.RunData); `resolve` maps run.json paths to files."""
    lines = []
    terms = data.terms
    if "degenerate" in terms:
        for term in dict.fromkeys(terms.loc[terms["degenerate"].astype(bool), "term"]):
            lines.append(f"{term} is {not_identifiable(term)} in this data: its target is fixed by the factors it "
                         "is conditioned on, so the design cannot separate them; the term is left out of the "
                         "findings")
    st = data.strata
    if len(st) and "h_y" in st:
        single = st.loc[st["h_y"] <= 1e-12, "stratum"].drop_duplicates().tolist()
        if single:
            lines.append(f"{len(single)} stratum(s) have one answer class (H(Y|s) = 0): {'; '.join(single[:5])}"
                         f"{'; ...' if len(single) > 5 else ''}. There I(Z;Y|s) is 0 by construction and accuracy "
                         "only counts how often the model gives that answer")
    lines.extend(one_option_checkpoints(data.summary.checkpoints, resolve))
    # factors fixed by the source data set, found by the pipeline on the manifest (data/design.py)
    lines.extend(data.summary.source_warnings)
    # image files the RGB conversion changes, classes merged for the MI (the pipeline's data step)
    lines.extend(data.summary.data_warnings)
    return lines
