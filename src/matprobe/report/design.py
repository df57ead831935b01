"""The report's "Design warnings": what the run's data or checkpoints cannot show.

Five things make numbers look like findings when they are not: a chain term whose target is
fixed by the factors before it (H(Y|C) = 0; shown as "not identifiable", never as 0.000), a
stratum whose items share one answer (its I(Z;Y) is 0 by construction), a checkpoint that
gives one option for (nearly) every item (its accuracy is that option's share of answers), a
factor fixed by the source data set (its MI counts the data set's identity as much as the factor),
and a held-out target of too few items for its accuracy and I(Z;Y | target) to be findings.
Beside them, what the data does to what is measured (image files the RGB conversion changes: more
than 8 bits per pixel, transparency; classes too small for the folds, merged for the MI). Kept
apart from `render.py` so the report's other sections do not change with it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

# the one-option rule and its threshold (ONE_OPTION_SHARE, re-exported for render.py) live in
# data.design, which `relate` reads too
from matprobe.data.design import ONE_OPTION_SHARE as ONE_OPTION_SHARE
from matprobe.data.design import answers_one_option, one_option_sentence, top_option
from matprobe.present.views import not_identifiable

# A held-out target's accuracy is a share of its n items' answers. Its 95% interval is at its widest
# at accuracy 0.5, +-1.96 * 0.5 / sqrt(n) (Wald); that is wider than +-0.2 (enough to hold chance
# and a model that reads the images alike) for n < (1.96 * 0.5 / 0.2)^2 = 24.01. So a target of
# fewer than 25 items is flagged: its I(Z;Y | target) is estimated on the same few rows. The n counted
# is the items scored (an answer right or wrong): an unanswered or unparseable one is no share of it.
HELDOUT_Z95 = 1.96
HELDOUT_HALF_WIDTH = 0.2
MIN_HELDOUT_ITEMS = math.ceil((HELDOUT_Z95 * 0.5 / HELDOUT_HALF_WIDTH) ** 2)  # 25


def term_cells(frame: pd.DataFrame) -> list:
    """The estimate column of a term table: the value, or "not identifiable: H(Y|C) = 0"."""
    degenerate = frame["degenerate"] if "degenerate" in frame else pd.Series(False, index=frame.index)
    return [not_identifiable(t) if bool(d) else v for t, v, d in zip(frame["term"], frame["estimate"], degenerate)]


def one_option_sentences(answers: dict[str, tuple]) -> list[str]:
    """The design warning of each checkpoint in `one_option_answers`' result (a 4th element: the held-out
    target whose items the count is of, the ones its accuracy is computed on)."""
    out = []
    for name, (letter, count, total, *target) in answers.items():
        out.append(one_option_sentence(name, letter, count, total) if not target else
                   f"checkpoint {name} answers option {letter} for {count} of the {total} items of its held-out "
                   f"target {target[0]} ({count / total:.0%}): its accuracy there is the share of those items "
                   f"whose answer is {letter}, not evidence that it reads the images")
    return out


def absent_stores(checkpoints: list, resolve) -> list[str]:
    """run.json's store paths (as resolved) of the checkpoints whose store file is not there and whose
    answers run.json does not record (`top_answer`): the warnings read from the answers cannot be checked."""
    out = []
    for ck in checkpoints:
        recorded = (getattr(ck, "extra", None) or {}).get("top_answer")
        if ck.store and not recorded and not Path(resolve(ck.store)).exists():
            out.append(str(resolve(ck.store)))
    return out


def store_record(store_path, target=None) -> dict:
    """What `run` writes into each checkpoint's run.json entry from its store, in one opening, so that
    the report needs no store to say it: {"top_answer": `top_answer`, "prompt": `prompt_of`}, and with
    the checkpoint's held-out (M, A, T) `target`, "target_answers": `_target_answers`; each None where
    the store cannot be read."""
    from matprobe.errors import MatprobeError
    from matprobe.store import EmbeddingStore

    keys = ("top_answer", "prompt") + (("target_answers",) if target else ())
    try:
        with EmbeddingStore.open(store_path) as st:
            out = {"top_answer": _top_answer(st), "prompt": _prompt(st)}
            if target:
                out["target_answers"] = _target_answers(st, target)
            return out
    except (MatprobeError, OSError):
        return dict.fromkeys(keys)


def top_answer(store_path) -> dict | None:
    """The option a store's checkpoint answers most, {"option", "count", "answered"} over the items
    with an answer; None where the store holds fewer than 10 answers or cannot be read."""
    return store_record(store_path)["top_answer"]


def prompt_of(store_path) -> dict | None:
    """The prompt a store's items were put to its checkpoint in, as its provenance records it: the
    template's name ("medmat-mcq-v1": the checkpoint's own chat template; "llava_v1", "mistral_instruct":
    LLaVA's conversation templates) and, where recorded, its conversation style; None where unreadable."""
    return store_record(store_path)["prompt"]


def _top_answer(st) -> dict | None:
    try:
        pred = np.asarray(st.answers()["pred"])
    except KeyError:
        return None
    return top_option(pred)  # the rule `relate` reads too (data.design)


def _target_answers(st, target) -> dict | None:
    """The option an open store's checkpoint answers most on the held-out target's items, the rows its
    accuracy is computed on (`pipeline.per_run_results`): `top_option` over the target's items with an
    answer, with "target", "n_options" (the most options an item there offers; None where the
    store records none) and "option_counts" ({options: items} over the target's scored items, those
    right or wrong, the ones its accuracy is a share of; keys as strings, JSON's; None where the store
    records no options): chance accuracy is the mean of 1/options over those items, not 1/the most
    (a user study's 20 four-option and 10 three-option items: 0.278, the report said 1/4 = 0.250);
    None where fewer than 10 target items have an answer."""
    try:
        answers = st.answers()
        pred = np.asarray(answers["pred"])
    except KeyError:
        return None
    frame = st.samples()
    rows = np.ones(len(frame), dtype=bool)
    for f, v in zip(("modality", "anatomy", "task"), target):
        rows &= (frame[f].astype(str) == str(v)).to_numpy() if f in frame else False
    rec = top_option(np.where(rows, pred, -1))
    if rec is None:
        return None
    ks = pd.to_numeric(frame["n_options"], errors="coerce") if "n_options" in frame else None
    k = ks[rows].max() if ks is not None else np.nan
    counts = None
    if ks is not None:
        correct = np.asarray(answers.get("correct", np.zeros(len(frame))))
        scored = ks[rows & (correct >= 0) & ks.notna().to_numpy() & (ks > 0).to_numpy()]
        if len(scored):
            values, n = np.unique(scored.astype(int).to_numpy(), return_counts=True)
            counts = {str(int(v)): int(c) for v, c in zip(values, n)}
    return {"target": [str(x) for x in target], **rec, "n_options": int(k) if pd.notna(k) and k > 0 else None,
            "option_counts": counts}


def _prompt(st) -> dict | None:
    tpl = st.provenance.get("prompt_template")
    if isinstance(tpl, dict) and tpl.get("name"):
        return {k: tpl[k] for k in ("name", "style", "text") if isinstance(tpl.get(k), str)}
    return {"name": str(tpl)} if tpl else None


def _checkpoint_target(ck) -> tuple | None:
    target = (getattr(ck, "extra", None) or {}).get("target")
    return tuple(str(x) for x in target) if target else None


def answer_records(checkpoints: list, resolve) -> dict[str, dict]:
    """{checkpoint name: {"top_answer": `top_answer`, "target_answers": `target_answers` on its held-out
    target (run.json's `target`)}}: read from each store in one opening where the store is there (the
    run's data), else, and where the store says nothing, as run.json records them (a committed or copied
    run without its stores). What `one_option_answers` and `target_options` read."""
    out = {}
    for ck in checkpoints:
        recorded = getattr(ck, "extra", None) or {}
        read = (store_record(resolve(ck.store), _checkpoint_target(ck))
                if ck.store and Path(resolve(ck.store)).exists() else {})
        out[ck.name] = {key: read.get(key) or recorded.get(key) for key in ("top_answer", "target_answers")}
    return out


def target_options(checkpoints: list, resolve, records: dict | None = None) -> dict[str, int | dict[int, int]]:
    """{checkpoint name: the number of options its held-out target's items offer} where the store
    (or run.json's `target_answers`) records it: an int where every scored item offers that many
    (chance accuracy is 1 / it), {options: items} where they differ (chance is the mean of 1/options
    over the items, `chance_of`). A run.json from before the per-item counts were recorded, whose
    store is not there, gives the most options an item offers, as an int.
    `records`: `answer_records` of the checkpoints where the caller has them."""
    records = answer_records(checkpoints, resolve) if records is None else records
    out: dict = {}
    for ck in checkpoints:
        rec = records[ck.name]["target_answers"]
        counts = {int(k): int(n) for k, n in ((rec or {}).get("option_counts") or {}).items() if int(n) > 0}
        if len(counts) > 1:
            out[ck.name] = counts
        elif counts:
            out[ck.name] = next(iter(counts))
        elif rec and rec.get("n_options"):
            out[ck.name] = int(rec["n_options"])
    return out


def chance_of(options: int | dict) -> float:
    """Chance accuracy on items offering `options` (`target_options`' value): 1/k for one count k,
    else the mean over the items of 1/(their options).

    >>> round(chance_of({4: 20, 3: 10}), 4), chance_of(4)
    (0.2778, 0.25)
    """
    if isinstance(options, dict):
        n = sum(options.values())
        return sum(c / k for k, c in options.items()) / n
    return 1 / int(options)


def one_option_answers(checkpoints: list, resolve, records: dict | None = None) -> dict[str, tuple]:
    """{checkpoint name: (the option, its answers, items answered[, its held-out target])} for the
    checkpoints whose answers are one option for >= 90% of the items with an answer: on the held-out
    target's items where that is known (`target_answers`: the store, else run.json), else on all
    its items (the store, else run.json's `top_answer`; neither: left out, and `absent_stores` says so).
    `records`: `answer_records` of the checkpoints where the caller has them."""
    records = answer_records(checkpoints, resolve) if records is None else records
    out = {}
    for ck in checkpoints:
        # first on the held-out target's items, the ones its accuracy is computed on: an audit's five of
        # six checkpoints answered one letter for 36 of the 36 target items, at most 75% of all 372, unflagged
        rec = records[ck.name]["target_answers"]
        if answers_one_option(rec):
            out[ck.name] = (rec["option"], int(rec["count"]), int(rec["answered"]), " / ".join(rec["target"]))
            continue
        rec = records[ck.name]["top_answer"]
        if answers_one_option(rec):
            out[ck.name] = (rec["option"], int(rec["count"]), int(rec["answered"]))
    return out


def scored_items(summary, strata) -> dict[tuple, tuple[int, str]]:
    """Per held-out target: (items scored, checkpoint) for the checkpoint holding it out that scored
    the fewest. Scored: the rows of the target's stratum in the checkpoint's check (`strata`, the
    report's frame), the items with an answer that is right or wrong; an unanswered or unparseable
    one informs no accuracy. A check with no such stratum scored none."""
    if strata is None or not len(strata) or not {"checkpoint", "stratum", "n"} <= set(strata):
        return {}
    n_by = {(str(c), str(s)): int(n) for c, s, n in zip(strata["checkpoint"], strata["stratum"], strata["n"])}
    out: dict[tuple, tuple[int, str]] = {}
    for ck in summary.checkpoints:
        target = tuple(str(x) for x in (ck.extra.get("target") or summary.target))
        n = n_by.get((ck.name, " / ".join(target)), 0)
        if target not in out or n < out[target][0]:
            out[target] = (n, ck.name)
    return out


def small_targets(summary, composition=None, strata=None) -> list[str]:
    """Held-out targets (run.json's `targets`, else `target`) with fewer than MIN_HELDOUT_ITEMS items
    scored: counted in run.json's composition (else `composition`, the report's frame for older
    runs), and of those the fewest that a checkpoint holding the target out answered so that they are
    scored (`strata`, its checks: `scored_items`); the accuracy is a share of the scored ones."""
    rows = summary.composition or ([] if composition is None else composition.to_dict(orient="records"))
    counts = {(str(r["modality"]), str(r["anatomy"]), str(r["task"])): int(r["n"]) for r in rows}
    scored = scored_items(summary, strata)
    out = []
    for target in summary.targets or [summary.target]:
        key = tuple(str(x) for x in target)
        n = counts.get(key)
        if n is None:  # a target not counted in the run's files: nothing to say
            continue
        k, checkpoint = scored.get(key, (n, None))
        k = min(k, n)
        if k >= MIN_HELDOUT_ITEMS:
            continue
        half = HELDOUT_Z95 * 0.5 / math.sqrt(k) if k else math.inf
        spans = f"about ±{half:.2f}" if k else "all of [0, 1]"
        items, answers = ("item", "answer") if n == 1 else ("items", "answers")
        if k == n:  # every item scored: the rows are the answers
            out.append(f"held-out target {' / '.join(target)} has {n} {items}, fewer than {MIN_HELDOUT_ITEMS}: its "
                       f"accuracy is a share of {n} {answers}, whose 95% interval spans {spans} "
                       f"(±{HELDOUT_HALF_WIDTH} needs {MIN_HELDOUT_ITEMS} items), and its I(Z;Y | target) is "
                       f"estimated on the same {n} row{'s' if n != 1 else ''}, so neither reads as a finding; add "
                       f"items to this triplet ({MIN_HELDOUT_ITEMS} or more) or hold out a larger one")
            continue
        mi = (f", and its I(Z;Y | target) is estimated on {n} row{'s' if n != 1 else ''}, so neither reads as a "
              "finding" if n < MIN_HELDOUT_ITEMS else ", so it does not read as a finding")
        out.append(f"held-out target {' / '.join(target)} has {n} {items}, of which checkpoint {checkpoint} has {k} "
                   f"scored (the other {n - k} unanswered or unparseable), fewer than {MIN_HELDOUT_ITEMS}: its "
                   f"accuracy is a share of {k} answer{'s' if k != 1 else ''}, whose 95% interval spans {spans} "
                   f"(±{HELDOUT_HALF_WIDTH} needs {MIN_HELDOUT_ITEMS} scored items){mi}; add items to this triplet "
                   f"({MIN_HELDOUT_ITEMS} or more scored) or see why the other answers are not scored")
    return out


def _one_answer_class_strata(st) -> list[str]:
    """The strata whose answers are one class (H(Y|s) = 0): in the data itself, or only once the MI
    merged the answer's rare classes (`rare_classes = "merge"` merges classes rare over the whole
    data: a study read "one answer class" of a stratum whose items had four answers)."""
    if not len(st) or "h_y" not in st:
        return []
    zero = st["h_y"] <= 1e-12
    own = st["h_y_unmerged"] if "h_y_unmerged" in st else pd.Series(np.nan, index=st.index)
    by_merge = zero & own.notna() & (own.fillna(0.0) > 1e-12)
    lines = []
    single = st.loc[zero & ~by_merge, "stratum"].drop_duplicates().tolist()
    if single:
        lines.append(f"{len(single)} stratum(s) have one answer class (H(Y|s) = 0): {'; '.join(single[:5])}"
                     f"{'; ...' if len(single) > 5 else ''}. There I(Z;Y|s) is 0 by construction and accuracy "
                     "only counts how often the model gives that answer")
    merged = st.loc[by_merge].drop_duplicates("stratum")
    if len(merged):
        shown = "; ".join(f"{r.stratum} (H(Y|s) = {r.h_y_unmerged:.3f} nats of its own answers)"
                          for r in merged.head(5).itertuples())
        lines.append(f"{len(merged)} stratum(s) have one answer class only once the MI's rare answer classes are "
                     f"merged ([mi] rare_classes = \"merge\" merges the classes rare over the whole data): {shown}"
                     f"{'; ...' if len(merged) > 5 else ''}. There the merged label's I(Z;Y|s) is 0 by construction "
                     "and says nothing of the answers themselves, which the accuracy scores; fewer rare classes "
                     "(more items, or fewer [mi] folds) keep them apart")
    return lines


def design_warnings(data, resolve) -> list[str]:
    """Every design warning for a loaded run (render.RunData, whose `one_option` holds the stores'
    one-option answers when it was loaded with them); `resolve` maps run.json paths to files."""
    lines = []
    terms = data.terms
    if "degenerate" in terms:
        for term in dict.fromkeys(terms.loc[terms["degenerate"].astype(bool), "term"]):
            lines.append(f"{term} is {not_identifiable(term)} in this data: its target is fixed by the factors it "
                         "is conditioned on, so the design cannot separate them; the term is left out of the "
                         "findings")
    lines.extend(_one_answer_class_strata(data.strata))
    answers = getattr(data, "one_option", None)
    if answers is None:
        answers = one_option_answers(data.summary.checkpoints, resolve)
    lines.extend(one_option_sentences(answers))
    if gone := absent_stores(data.summary.checkpoints, resolve):
        # a run copied without stores/ lost these warnings unsaid (a user study)
        lines.append(f"{len(gone)} of the {len(data.summary.checkpoints)} checkpoints' stores are not where run.json "
                     f"puts them (first: {gone[0]}): the warnings read from the stored answers (a checkpoint that "
                     "answers one option for nearly every item) were not checked for them; render the report where "
                     "the run's stores/ folder is")
    # a held-out target too small for its accuracy and I(Z;Y | target) to be findings
    lines.extend(small_targets(data.summary, getattr(data, "composition", None), getattr(data, "strata", None)))
    # factors fixed by the source data set, found by the pipeline on the manifest (data/design.py)
    lines.extend(data.summary.source_warnings)
    # image files the RGB conversion changes, classes merged for the MI (the pipeline's data step)
    lines.extend(data.summary.data_warnings)
    return lines
