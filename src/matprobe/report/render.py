"""`matprobe report RUN_DIR`: report.md, a self-contained report.html and figures (PNG + SVG).

The report is built from the run directory's files alone (run.json, MI results, check
results, results.csv, significance.csv), never from the pipeline's code, so a run directory
that was copied or moved (or committed without its data, checkpoints and stores) can be
re-reported. Its summary answers four questions with numbers taken from those files: which
MAT factor Z encodes most; whether Related training raised I(Z;T|M,A) (and the answer
information on the target) over Unrelated; whether observed errors respect Fano; whether the
Related–Unrelated difference is significant.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from matprobe.conditions import condition_name
from matprobe.data.splits import relation
from matprobe.errors import ReportError
from matprobe.io import strict_json_value, write_text_atomic
from matprobe.mi.chain import ChainResult
from matprobe.mi.controls import BASELINE_COLUMNS, baseline_columns
from matprobe.mi.interface import near_saturation
from matprobe.mi.pointwise import summary_of
from matprobe.present import Column, Table, to_html, to_markdown
from matprobe.report import figures
from matprobe.report.design import (
    MIN_HELDOUT_ITEMS,
    ONE_OPTION_SHARE,
    answer_records,
    chance_of,
    design_warnings,
    one_option_answers,
    small_targets,
    target_options,
    term_cells,
)
from matprobe.report.settings import fine_tuned_here, unused_settings
from matprobe.rundir import RunSummary, resolve_run_path, stale_significance
from matprobe.stats.significance import LEFT_OUT, LEFT_OUT_BEFORE, adjust_p, shared_units
from matprobe.theory.check import CheckResult, MIValue


# ------------------------------------------------------------------------------ loading
@dataclass
class RunData:
    run: Path
    summary: RunSummary
    terms: pd.DataFrame
    strata: pd.DataFrame
    pac: pd.DataFrame
    results: pd.DataFrame
    significance: pd.DataFrame | None
    composition: pd.DataFrame | None
    unit: str = "nats"
    mi_level: float | None = None
    error_level: float | None = None
    sources: pd.DataFrame | None = None  # I(Z;M), I(Z;source|M), I(Z;source), I(Z;M|source) per checkpoint
    # pointwise information of the main chain's terms per stratum and its extreme items (issue 25)
    pointwise: pd.DataFrame | None = None
    pointwise_items: pd.DataFrame | None = None
    # a check whose MI merged the answer's rare classes (theory.check._merged_target): no error floor
    merged_answer: bool = False
    y_targets: tuple = ()  # what the checks took as Y: "label" (the label column) and/or "answer" (the index)
    # the checkpoints whose stores answer one option for nearly every item (design.one_option_answers),
    # read once for the design warnings and the summary's accuracy lines
    one_option: dict | None = None
    # the number of options each checkpoint's held-out target items offer (design.target_options): an
    # int where every item offers that many, {options: items} where they differ (design.chance_of)
    options: dict | None = None
    # per checkpoint, the training-set PAC bounds' inputs its check records (check.HeldoutCheck.training),
    # None where it records none; and the bounds' notes ("ln|H| = ... nats, n = ...") of older checks
    pac_inputs: dict | None = None


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ReportError(f"{path}: a JSON {type(doc).__name__}, not the object matprobe writes; rerun the "
                              "pipeline step that writes it (`matprobe run` resumes)")
        return doc
    except FileNotFoundError:
        raise ReportError(f"{path} is missing; rerun the pipeline (`matprobe run` / `matprobe demo`)") from None
    except json.JSONDecodeError as exc:  # truncated (a killed writer, a full disk) or hand-edited
        raise ReportError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); the file "
                          "is truncated or was edited: rerun the pipeline step that writes it "
                          "(`matprobe run` resumes)") from None


def _read_check(path: Path) -> CheckResult:
    """A check file as its typed result (`theory.check.CheckResult`), with the report's errors."""
    doc = _read_json(path)
    if doc.get("kind") != "matprobe.check":
        raise ReportError(f"{path}: not a matprobe check file (kind {doc.get('kind')!r}); rerun the pipeline's "
                          "check step (`matprobe run` resumes)")
    try:
        return CheckResult.from_dict(doc)
    except (TypeError, KeyError, IndexError) as exc:  # a field missing or of the wrong shape
        raise ReportError(f"{path}: not a complete check result ({exc}); rerun the pipeline's check step "
                          "(`matprobe run` resumes)") from None


def _read_summary(path: Path) -> RunSummary:
    """run.json as its typed `RunSummary`, with the report's errors."""
    doc = _read_json(path)
    if doc.get("kind") != "matprobe.run":
        raise ReportError(f"{path} is not a matprobe run summary")
    try:
        return RunSummary.from_dict(doc)
    except TypeError as exc:  # a required entry missing
        raise ReportError(f"{path}: not a complete run summary ({exc}); rerun the pipeline (`matprobe run` "
                          "resumes)") from None


def run_targets(summary: RunSummary) -> list[tuple]:
    """Every held-out target triplet of the run, the main one (run.json's `target`) first, then the
    others of `targets` and any a checkpoint names that neither lists, in their order."""
    out = [tuple(str(x) for x in summary.target)]
    for t in [*(summary.targets or []), *(ck.extra.get("target") for ck in summary.checkpoints)]:
        if t and tuple(str(x) for x in t) not in out:
            out.append(tuple(str(x) for x in t))
    return out


def checkpoint_target(summary: RunSummary, ck) -> tuple:
    """The held-out triplet of one checkpoint: its own in run.json, else the run's main target."""
    return tuple(str(x) for x in (ck.extra.get("target") or summary.target))


def triplet_label(triplet) -> str:
    return " / ".join(str(x) for x in triplet)


def composition_by_target(counts: pd.DataFrame, targets: list[tuple]) -> pd.DataFrame:
    """The composition once per held-out target (column `target`, its label): each triplet's relation
    to that target (CrossMed §III), `held_out` where the triplet is any of the run's held-out targets
    and `other_target` where it is one that other checkpoints hold out. The rows keep `counts`' order."""
    trips = [(str(m), str(a), str(t)) for m, a, t in zip(counts["modality"], counts["anatomy"], counts["task"])]
    parts = []
    for target in targets:
        part = counts[["modality", "anatomy", "task", "n"]].copy()
        part["target"] = triplet_label(target)
        part["relation"] = [relation(trip, target) for trip in trips]
        part["held_out"] = [trip in targets for trip in trips]
        part["other_target"] = [trip in targets and trip != target for trip in trips]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _composition(run: Path, summary: RunSummary, targets: list[tuple]) -> pd.DataFrame | None:
    """Samples per (M, A, T), from run.json (format 2) or, for older runs, the manifest; `relation`
    to the main target (the first of `targets`), `held_out` where a triplet is any of them. The
    held-out targets come first (in their order), then the others by relation to the main one."""
    if summary.composition:
        counts = pd.DataFrame(summary.composition)
    else:
        manifest = resolve_run_path(run, summary.manifest, summary) if summary.manifest else None
        if manifest is not None and manifest.exists():
            from matprobe.data import load_dataset

            frame = load_dataset(manifest).frame()
            counts = frame.groupby(["modality", "anatomy", "task"]).size().rename("n").reset_index()
        elif summary.checkpoints:
            # a format-1 run without its data/: the check results count every answered sample per stratum
            check = _read_check(resolve_run_path(run, summary.checkpoints[0].check, summary))
            counts = pd.DataFrame([{**s.given, "n": s.n} for s in check.strata])
        else:
            return None
    trips = [(str(m), str(a), str(t)) for m, a, t in zip(counts["modality"], counts["anatomy"], counts["task"])]
    counts["relation"] = [relation(trip, targets[0]) for trip in trips]
    counts["held_out"] = [trip in targets for trip in trips]
    # one target: target, related, unrelated, zero-overlap (as before); several: every target first
    order = {"related": 1, "unrelated": 2, "zero-overlap": 3}
    rank = [targets.index(trip) if trip in targets else len(targets) - 1 + order.get(rel, 4)
            for trip, rel in zip(trips, counts["relation"])]
    return counts.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)


def _tables(summary: RunSummary, resolve) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """results.csv and significance.csv (None where the run has none), refused where results.csv was
    replaced after the run beside the significance.csv computed from the old one."""
    results = resolve(summary.results)
    sig = resolve(summary.significance) if summary.significance else None
    stale = stale_significance(summary, results, sig)
    if stale:
        raise ReportError(stale)
    return pd.read_csv(results), (pd.read_csv(sig) if sig is not None else None)


def load_run(run_dir: str | Path) -> RunData:
    run = Path(run_dir)
    summary = _read_summary(run / "run.json")

    def resolve(p: str) -> Path:
        return resolve_run_path(run, p, summary)

    term_rows, strata_rows, pac_rows, pointwise_rows, item_rows = [], [], [], [], []
    pac_inputs: dict = {}
    units, mi_levels, err_levels = set(), set(), set()
    merged_answer = False
    y_targets: dict = {}
    for ck in summary.checkpoints:
        cond = condition_name(ck.condition)
        base = {"checkpoint": ck.name, "condition": cond, "seed": ck.seed}
        target = checkpoint_target(summary, ck)  # its own held-out triplet (a run may have several)
        for lp, mi_path in ck.mi.items():
            res = ChainResult.from_json(_read_json(resolve(mi_path)))  # typed: MIEstimate per term
            units.add(res.unit)
            layer, _, pool = lp.partition("/")
            for est, items in res.terms.items():
                for term, e in items:
                    mi_levels.add(e.ci_level)
                    term_rows.append({**base, "layer_pool": lp, "layer": layer, "pool": pool, "term": term,
                                      "estimator": est, "estimate": e.value, "ci_low": e.ci_low,
                                      "ci_high": e.ci_high, "h_upper": e.h_upper, "n": e.n_eval,
                                      # degenerate here: H(Y|C) = 0, not identifiable. A constant Z is
                                      # estimated (exactly 0, flagged), not a design that cannot tell
                                      "main": mi_path == ck.main_mi,
                                      "degenerate": e.degenerate and "constant-features" not in e.flags,
                                      "constant_features": "constant-features" in e.flags,
                                      "bound": e.bound, "flags": ",".join(e.flags),
                                      **_baseline_fields(e.diagnostics)})
                    per_item = summary_of(e)
                    if per_item is not None and mi_path == ck.main_mi:
                        _pointwise_rows(per_item, {**base, "term": term}, pointwise_rows, item_rows)
        check = _read_check(resolve(ck.check))
        merged_answer = merged_answer or bool(check.merged_target)
        y_targets[check.target] = None
        err_levels.add(check.level)
        for s in check.strata:
            g = s.given
            mi = s.mi or MIValue(np.nan, np.nan, np.nan)
            strata_rows.append({
                **base, "stratum": f"{g.get('modality')} / {g.get('anatomy')} / {g.get('task')}",
                "is_target": (g.get("modality"), g.get("anatomy"), g.get("task")) == target,
                "n": s.n, "error": s.error, "err_low": s.error_ci[0], "err_high": s.error_ci[1],
                # + 0.0: check files written before entropy() dropped the sign hold -0.0 for one class
                "h_y": s.h_y + 0.0, "h_y_unmerged": s.extra.get("h_y_unmerged"), "classes": s.classes,
                "mi": mi.estimate, "mi_low": mi.ci_low, "mi_high": mi.ci_high,
                "mi_bound": mi.bound,
                "error_floor": s.error_floor, "error_floor_lenient": s.error_floor_lenient,
                "fano_mi_lower": s.fano_mi_lower, "fano_mi_lower_finite": s.fano_mi_lower_finite,
                "error_respects_floor": s.error_respects_floor, "mi_meets_bound": s.mi_meets_bound,
            })
        p = check.pac
        obs = {**base, "error": p.error, "err_low": p.error_ci[0], "err_high": p.error_ci[1], "m": p.m,
               "heldout_rows": p.heldout}
        pac_rows.append({**obs, "bound": "test-set (held-out)", "value": p.test_set_bound, "vacuous": False})
        for b in p.bounds:
            pac_rows.append({**obs, "bound": b.name, "value": b.value, "vacuous": b.vacuous})
        notes = [str(b.note).split(";")[0] for b in p.bounds if str(b.note).startswith("ln|H|")]
        pac_inputs[ck.name] = p.training or ({"note": notes[0]} if notes else None)
    if len(units) > 1:
        raise ReportError(f"{run}: the MI results mix units {sorted(units)}; rerun `matprobe mi` in one unit")
    results, sig = _tables(summary, resolve)
    mi_levels.discard(None)
    err_levels.discard(None)
    answers = answer_records(summary.checkpoints, resolve)  # each store opened once for both
    return RunData(run, summary, pd.DataFrame(term_rows), pd.DataFrame(strata_rows), pd.DataFrame(pac_rows),
                   results, sig, _composition(run, summary, run_targets(summary)), unit=units.pop() if units else "nats",
                   mi_level=max(mi_levels) if len(mi_levels) == 1 else None,
                   error_level=max(err_levels) if len(err_levels) == 1 else None,
                   sources=_source_terms(summary, resolve),
                   pointwise=pd.DataFrame(pointwise_rows) if pointwise_rows else None,
                   merged_answer=merged_answer, y_targets=tuple(y_targets),
                   one_option=one_option_answers(summary.checkpoints, resolve, answers),
                   options=target_options(summary.checkpoints, resolve, answers), pac_inputs=pac_inputs,
                   pointwise_items=pd.DataFrame(item_rows) if item_rows else None)


# what Y is, by the check's target (theory.check._choose_target): the report said "the answer" for
# both, and an own study whose options are shuffled per item has two different variables there
Y_WORDS = {"label": "the label column (the correct answer's class)",
           "answer": "the correct option's position (the answer index)"}


def y_words(data) -> str:
    """What Y is in this run's per-stratum and I(Z;Y | target) numbers, from its check files."""
    targets = tuple(getattr(data, "y_targets", ()) or ())
    if len(targets) == 1:
        return Y_WORDS.get(targets[0], f"the column {targets[0]}")
    if targets:
        return "per checkpoint " + " or ".join(Y_WORDS.get(t, t) for t in targets) + " (its check file says which)"
    return "the answer"


def _group_label(given: dict) -> str:
    return " / ".join(str(v) for v in given.values())


def _pointwise_rows(summary, base: dict, rows: list, items: list) -> None:
    """One row per (checkpoint, term, stratum) of a term's pointwise summary, and one per listed item."""
    fixed = set()
    for g in summary.groups:
        rows.append({**base, "group": _group_label(g.given), "n": g.n, "mean": g.mean,
                     "contribution": g.contribution, "positive": g.positive, "all_zero": g.all_zero})
        if g.all_zero:
            fixed.add(_group_label(g.given))
    for end, listed in (("lowest", summary.lowest), ("highest", summary.highest)):
        # results written before the summary left them out list items of a stratum with one class
        # (0 by definition, read by no critic): not items the critic reads worst or best
        listed = [e for e in listed if _group_label(e.given) not in fixed]
        for rank, e in enumerate(listed):
            items.append({**base, "end": end, "rank": rank, "id": e.id if e.id is not None else e.row,
                          "group": _group_label(e.given), "value": e.value})


def _source_terms(summary: RunSummary, resolve) -> pd.DataFrame | None:
    """Per checkpoint with a source column: the chains (modality, source) and (source, modality) the
    pipeline estimated at its main cell, as rows (checkpoint, term, estimate, interval, degenerate)."""
    rows = []
    for ck in summary.checkpoints:
        for order, path in ck.source_mi.items():
            res = ChainResult.read(resolve(path))
            for term, e in res.estimates():
                rows.append({"checkpoint": ck.name, "order": order, "term": term, "estimate": e.value,
                             "ci_low": e.ci_low, "ci_high": e.ci_high, "h_upper": e.h_upper,
                             "degenerate": e.degenerate, "bound": e.bound})
    return pd.DataFrame(rows) if rows else None


def _baseline_fields(diagnostics: dict) -> dict:
    """A term's control task, codelength and permutation null (matprobe.mi.controls/codelength), as
    columns; NaN where the MI step did not compute them."""
    found = baseline_columns(diagnostics)
    return {c: found.get(c, np.nan) for c in BASELINE_COLUMNS}


# ------------------------------------------------------------------------------ findings
def _ci(lo: float, hi: float) -> str:
    return f"[{lo:.3f}, {hi:.3f}]"


def _interval_cell(lo: float, hi: float, bound) -> str:
    """An MI interval's cell: two-sided [lo, hi]; one-sided "≥ lo" where only its lower end is a
    statement (bound "lower": its upper end is the entropy cap)."""
    return f"≥ {lo:.3f} (one-sided)" if bound == "lower" else _ci(lo, hi)


def _mi_intervals(terms: pd.DataFrame) -> list[str]:
    """A term's interval cell (`_interval_cell`); empty for a term the design cannot identify."""
    return ["" if d else _interval_cell(lo, hi, b)
            for lo, hi, d, b in zip(terms["ci_low"], terms["ci_high"], terms["degenerate"], terms["bound"])]


def findings(data: RunData) -> dict:
    """The numbers behind the summary's four answers (also written to findings.json)."""
    out: dict = {}
    degenerate = data.terms["degenerate"].astype(bool) if "degenerate" in data.terms else False
    main = data.terms[data.terms["main"] & ~degenerate]  # H(Y|C) = 0: no finding (report/design.py)
    # the chain's own order (first appearance), not the alphabet's: "label" is the chain's last term
    per_term = main.groupby("term", sort=False).agg(estimate=("estimate", "mean"), h_upper=("h_upper", "mean"),
                                        n_ckpt=("checkpoint", "nunique")).reset_index()
    factor_terms = per_term[~per_term["term"].str.contains("label")]
    factor_rows = main[~main["term"].str.contains("label")]
    if factor_terms.empty:  # every factor term is 0 by the design (H = 0)
        out["most_encoded"] = {"term": None, "why": "by-design"}
    elif "constant_features" in factor_rows and factor_rows["constant_features"].astype(bool).all():
        out["most_encoded"] = {"term": None, "why": "constant-features"}  # Z the same for every item
    else:
        ranked = factor_terms.sort_values("estimate", ascending=False)
        best = ranked.iloc[0]
        out["most_encoded"] = {"term": best["term"], "mean_estimate_nats": float(best["estimate"]),
                               "mean_h_upper_nats": float(best["h_upper"]),
                               "all_terms": {r.term: float(r.estimate) for r in per_term.itertuples()}}
        if len(ranked) > 1:
            # the runner-up's estimate within the leader's interval (its lower end, mean over the
            # checkpoints): the leader is not told apart from it
            runner = ranked.iloc[1]
            low = float(main.loc[main["term"] == best["term"], "ci_low"].mean())
            if float(runner["estimate"]) >= low:
                out["most_encoded"]["not_told_apart_from"] = {"term": runner["term"],
                                                              "mean_estimate_nats": float(runner["estimate"]),
                                                              "leader_mean_ci_low_nats": low}
        # factor terms within 10% of their caps (means over the checkpoints): Z determines each there,
        # so their order is their entropies' (a README-only study: three factor terms at their caps,
        # the one of the largest entropy called "most encoded")
        out["most_encoded"]["at_cap"] = [r.term for r in factor_terms.itertuples()
                                         if near_saturation(r.estimate, r.h_upper)]
        # their intervals' lower ends: only where every checkpoint's is within 10% of its cap too does Z
        # determine the factor (a user study's lower ends went down to 63% of the cap under "Z determines")
        out["most_encoded"]["at_cap_lower_ends"] = {
            t: _lowest_lower_end(factor_rows[factor_rows["term"] == t]) for t in out["most_encoded"]["at_cap"]}
    by_cond = main.groupby(["term", "condition"])["estimate"].mean().unstack()
    out["term_by_condition"] = {t: {c: float(v) for c, v in row.items()} for t, row in by_cond.iterrows()}
    st = data.strata.dropna(subset=["mi"])
    out["fano"] = {
        "strata": int(len(st)),
        "error_respects_floor": {k: int(v) for k, v in st["error_respects_floor"].value_counts().items()},
        "mi_meets_bound": {k: int(v) for k, v in st["mi_meets_bound"].value_counts().items()},
    }
    out["target_accuracy"] = _accuracy_findings(data.results)
    if data.significance is not None:
        family = _holm_family(data.significance)
        out["significance"] = [
            {"comparison": r["comparison"], "metric": r["metric"], "mean_diff": float(r["mean_diff"]),
             "ci": [float(r["ci_low"]), float(r["ci_high"])], "t": float(r["t"]), "df": float(r["df"]),
             "p": float(r["p"]), "p_holm": float(r["p_holm"]), "n_pairs": int(r["n_pairs"]),
             "perm_p": float(r["perm_p"]), "warning": "" if pd.isna(r.get("warning")) else str(r["warning"]),
             "unit": str(r.get("unit", "seed")),
             # how many tests the Holm adjustment of p_holm was over, and which: "all" the rows or those of
             # its "metric" (None where that cannot be told)
             "holm_family": family[i][0], "holm_family_of": family[i][1],
             # the exact tests' smallest p, as the significance step computed it: 2^(1 - n) for n
             # non-zero differences (zero ones do not flip); files from before it was written: all pairs
             **_exact_floor(r)}
            for i, (_, r) in enumerate(data.significance.iterrows())
        ]
    return out


def _lowest_lower_end(rows: pd.DataFrame) -> dict:
    """Of one term's rows (one per checkpoint), the lowest interval lower end as a share of its cap:
    {"checkpoint", "ci_low_nats", "h_upper_nats", "share", "all_near_cap"} (`all_near_cap`: every
    checkpoint's lower end within 10% of its cap, `near_saturation`); a lower end that is missing
    counts as not near the cap, and with none at all the share is None."""
    low = pd.to_numeric(rows["ci_low"], errors="coerce")
    cap = pd.to_numeric(rows["h_upper"], errors="coerce")
    share = (low / cap.where(cap > 0)).astype(float)
    every = bool(len(rows)) and all(near_saturation(lo, h) for lo, h in zip(low, cap))
    if share.notna().sum() == 0:
        return {"checkpoint": None, "ci_low_nats": None, "h_upper_nats": None, "share": None, "all_near_cap": False}
    i = share.idxmin()
    return {"checkpoint": str(rows.loc[i, "checkpoint"]), "ci_low_nats": float(low[i]), "h_upper_nats": float(cap[i]),
            "share": float(share[i]), "all_near_cap": every}


def _holm_family(sig: pd.DataFrame) -> list[tuple[int | None, str | None]]:
    """Per significance.csv row, (how many tests its Holm-adjusted p, `p_holm`, was adjusted over, over
    what: "all" or "metric"). The file does not say which family `matprobe significance` used
    (`--family all`, the pipeline's: every row with a p; `--family metric`: the rows of its metric),
    so each is recomputed and the one that gives the file's p_holm is taken; (None, None) where
    neither does (a hand-edited file) or the row has no p."""
    none = [(None, None)] * len(sig)
    if "p_holm" not in sig or "p" not in sig or sig.empty:
        return none
    p = pd.to_numeric(sig["p"], errors="coerce").to_numpy(dtype=float)
    held = pd.to_numeric(sig["p_holm"], errors="coerce").to_numpy(dtype=float)
    tested = ~np.isnan(p)

    def agrees(adjusted: np.ndarray, rows: np.ndarray) -> bool:
        return bool(np.allclose(adjusted[rows], held[rows], rtol=1e-9, atol=1e-12, equal_nan=True))

    if agrees(adjust_p(p, "holm"), np.ones(len(p), dtype=bool)):
        return [(int(tested.sum()), "all") if t else (None, None) for t in tested]
    metric = sig["metric"].astype(str).to_numpy() if "metric" in sig else np.array([""] * len(p))
    out: list[tuple[int | None, str | None]] = list(none)
    for m in dict.fromkeys(metric):
        rows = metric == m
        if not agrees(_holm_within(p, rows), rows):
            return none
        for i in np.flatnonzero(rows & tested):
            out[i] = (int((tested & rows).sum()), "metric")
    return out


def _holm_within(p: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Holm-adjusted p over the `rows` alone (NaN elsewhere)."""
    out = np.full(len(p), np.nan)
    out[rows] = adjust_p(p[rows], "holm")
    return out


def _accuracy_findings(results: pd.DataFrame) -> dict:
    """Held-out accuracy per condition: mean, sd and how many runs. On one target the runs are its
    seeds (`n_seeds`); on several they are (target, seed) runs (`n_runs`), with each target's own
    mean, sd and seeds under `by_target`."""
    rows = results[results["metric"] == "accuracy"]

    def stats(frame: pd.DataFrame, count: str) -> dict:
        acc = frame.groupby("condition")["value"].agg(["mean", "std", "count"])
        return {c: {"mean": float(r["mean"]), "sd": float(r["std"]) if r["count"] > 1 else None,
                    count: int(r["count"])} for c, r in acc.iterrows()}

    targets = list(dict.fromkeys(rows["target"])) if "target" in rows else []
    if len(targets) < 2:
        return stats(rows, "n_seeds")
    out = stats(rows, "n_runs")
    for t in targets:
        for c, v in stats(rows[rows["target"] == t], "n_seeds").items():
            out[c].setdefault("runs", "(target, seed)")
            out[c].setdefault("by_target", {})[str(t).replace(",", " / ")] = v
    return out


def _exact_floor(row) -> dict:
    """{"min_exact_p", "n_nonzero"} of a significance.csv row (`stats.significance.min_exact_p`)."""
    n = int(row["n_pairs"])
    nonzero = int(row["n_nonzero"]) if pd.notna(row.get("n_nonzero", np.nan)) else n
    floor = float(row["min_exact_p"]) if pd.notna(row.get("min_exact_p", np.nan)) else 2.0 ** (1 - n)
    return {"min_exact_p": floor, "n_nonzero": nonzero}


def _pairs_phrase(s: dict) -> str:
    """'n pairs', or 'k non-zero of n pairs' where some differences are 0 (they cannot flip)."""
    n, k = int(s["n_pairs"]), int(s["n_nonzero"])
    return f"{n} pairs" if k == n else f"{k} non-zero of {n} pairs"


def _exact_floor_note(s: dict) -> str:
    """Where too few non-zero pairs leave the exact sign-flip test unable to reach p < 0.05 (its
    smallest p is 2^(1 - n) for n of them), what it gives: a small t-test p then rests on
    normality alone."""
    if s["min_exact_p"] < 0.05 or not np.isfinite(s.get("perm_p", np.nan)):
        return ""
    return (f"; the exact sign-flip test gives p = {s['perm_p']:.3g}, and with {_pairs_phrase(s)} it cannot go "
            f"below {s['min_exact_p']:.3g}, so a smaller p rests on the t-test's normality assumption")


def _at_cap_caveat(leader: str, at_cap: list[str], lows: dict | None) -> str:
    """What the most-encoded line says where its leader's mean estimate sits within 10% of its entropy
    cap (with the other factor terms that do): "Z determines" a factor only where every checkpoint's
    interval lower end is within 10% of the cap too (`findings`' at_cap_lower_ends; None: not known,
    findings from before they were recorded); elsewhere the point estimates are near the cap but the
    lower ends, the one side of a near-cap interval that is a statement, are said (a user study:
    "Z determines each of them" over lower ends at 63% and 32% of their caps)."""
    others = [t for t in at_cap if t != leader]
    as_others = f", as {' and '.join(others)} {'does' if len(others) == 1 else 'do'}" if others else ""
    short = [t for t in at_cap if lows is not None and not (lows.get(t) or {}).get("all_near_cap")]
    if not short:
        return (" It sits within 10% of its entropy cap" + as_others + ": Z determines "
                + ("each of them" if others else "it") + " (the question text may name " + ("them" if others else "it")
                + "), so " + ("this ranks their entropies, not how well Z encodes them." if others else
                              "its value is its entropy, not a measure of how well Z encodes it."))
    determined = [t for t in at_cap if t not in short]
    out = (" Its point estimate sits within 10% of its entropy cap" + as_others + " (means over the checkpoints), "
           "but near its cap an estimate is one-sided: only its interval's lower end is a statement.")
    if determined:
        out += (f" Z determines {' and '.join(determined)}: every checkpoint's lower end "
                + ("for it" if len(determined) == 1 else "for each") + " is within 10% of the cap too.")
    said, went = [], False
    for t in short:
        low = lows.get(t) or {}
        if low.get("share") is None:
            said.append(f"for {t} no lower end is recorded")
        else:
            said.append(f"for {t}{'' if went else ' the lower ends go down'} to {low['share']:.0%} of its cap "
                        f"({low['ci_low_nats']:.3f} of {low['h_upper_nats']:.3f} nats, {low['checkpoint']})")
            went = True
    out += (" " + "; ".join(said)[0].upper() + "; ".join(said)[1:] + ", so "
            + ("this estimate does not show" if len(short) == 1 else "these estimates do not show")
            + f" that Z determines {'it' if len(short) == 1 else 'them'}.")
    return out + (" Near their caps the point estimates rank the terms' entropies, not how well Z encodes them."
                  if others else " Its point estimate is about its entropy, not a measure of how well Z encodes it.")


def _most_encoded_line(m: dict) -> str:
    """The summary's first answer; where no factor term can be compared, why."""
    if m.get("term") is None:
        why = ("at each checkpoint's main layer and pool Z is the same for every item (flag constant-features), "
               "so every term is exactly 0; choose another layer or pool ([extract] layers, pools)"
               if m.get("why") == "constant-features" else
               "every factor's term is exactly 0 by the design (each factor is fixed by the ones before it "
               "in the chain, H = 0)")
        return f"**Which MAT factor is most encoded?** None can be told apart: {why}."
    tie = m.get("not_told_apart_from")
    caveat = "" if not tie else (
        f" It is not told apart from {tie['term']} ({tie['mean_estimate_nats']:.3f} nats), whose estimate lies within "
        f"its interval (lower end {tie['leader_mean_ci_low_nats']:.3f} nats on average), so these estimates do not "
        "rank the two.")
    at_cap = m.get("at_cap") or []
    if m["term"] in at_cap:
        caveat += _at_cap_caveat(m["term"], at_cap, m.get("at_cap_lower_ends"))
    return (f"**Which MAT factor is most encoded?** {m['term']}, {m['mean_estimate_nats']:.3f} nats on average "
            f"over the checkpoints (its entropy cap is {m['mean_h_upper_nats']:.3f} nats).{caveat} All chain terms "
            "(mean over checkpoints, nats): " + "; ".join(f"{k} = {v:.3f}" for k, v in m["all_terms"].items())
            + ".")


def _left_out(s: dict) -> str:
    """'left out, unpaired (...): ...' where a condition lacks runs the other has, else ''."""
    warning = s.get("warning", "")
    at = max(warning.find(clause) for clause in (LEFT_OUT, *LEFT_OUT_BEFORE))
    return warning[at:] if at >= 0 else ""


def _untested(results: pd.DataFrame, a: str, b: str) -> str:
    """' (no paired test: ...)' where the two conditions share fewer than two (target, seed) runs."""
    shared = shared_units(results, a, b)
    return (f" (no paired test: {shared} (target, seed) run(s) under both conditions, a paired test needs two)"
            if shared < 2 else "")


def _paired_means(results: pd.DataFrame, a: str, b: str, metric: str, unit: str) -> tuple[float, float]:
    """The two conditions' means over the pairs the test used (their difference is its Δ): the
    (target, seed) runs both have, or with unit target each target's seed mean, targets both have."""
    rows = results[(results["metric"] == metric) & results["condition"].isin([a, b])]
    if "item" in rows:
        rows = rows[rows["item"].isna()]
    keys = ["target"] if unit == "target" else ["target", "seed"]
    wide = rows.pivot_table(index=keys, columns="condition", values="value", aggfunc="mean")
    both = wide.reindex(columns=[a, b]).dropna()
    return float(both[a].mean()), float(both[b].mean())


def _one_option_note(data: RunData, a: str, b: str, one_option: dict) -> str:
    """The sentence an accuracy comparison needs where its checkpoints answer one option for nearly
    every item (Design warnings): their accuracies are that option's share of the target's answers
    (a README-only user study's summary compared 0.300 with 0.200 from four such checkpoints)."""
    compared = [ck.name for ck in data.summary.checkpoints if condition_name(ck.condition) in (a, b)]
    stuck = [n for n in compared if n in one_option]
    if not stuck:
        return ""
    who = ("Every checkpoint compared answers" if len(stuck) == len(compared) else
           f"{len(stuck)} of the {len(compared)} checkpoints compared ({', '.join(stuck)}) answer")
    # a 4th element: counted on the held-out target's items, the ones the accuracy is computed on
    items = "the held-out target's items" if all(len(one_option[n]) > 3 for n in stuck) else "the items"
    return (f" {who} one option for {ONE_OPTION_SHARE:.0%} or more of {items} (Design warnings): these "
            "accuracies are shares of that option among the target's answers, not evidence that the models "
            "read the images.")


def _chance(data: RunData, a: str, b: str) -> str:
    """'chance 1/4 = 0.250': chance accuracy on the compared checkpoints' held-out target items
    (`RunData.options`); '' where no store or run.json records their options. An audit's summary
    compared 0.269 with 0.231 without saying that 4 options put chance at 0.250. Where the items
    offer different numbers of options, chance is the mean over them of 1/(their options), not 1/the
    most (a user study: 20 four-option and 10 three-option items, 0.278, read "1/4 = 0.250")."""
    compared = [ck for ck in data.summary.checkpoints if condition_name(ck.condition) in (a, b)]
    res = data.results
    if "target" in res:  # the checkpoints whose held-out target has an accuracy (not a segmentation target's)
        scored = set(res.loc[res["metric"] == "accuracy", "target"].astype(str))
        compared = [ck for ck in compared if ",".join(checkpoint_target(data.summary, ck)) in scored] or compared
    found = [(data.options or {}).get(ck.name) for ck in compared]
    found = [o for o in found if o is not None]
    if not found:
        return ""
    if all(isinstance(o, int) for o in found):  # every item of each target: one number of options
        ks = sorted(set(found))
        if len(ks) == 1:
            return f"chance 1/{ks[0]} = {1 / ks[0]:.3f}"
        return f"chance {1 / ks[-1]:.3f}–{1 / ks[0]:.3f}: 1/{ks[-1]} to 1/{ks[0]} by the options the items offer"
    shapes = {tuple(sorted(o.items())) if isinstance(o, dict) else ((int(o), None),) for o in found}
    if len(shapes) == 1:  # the same items' options for every checkpoint compared
        counts = found[0]
        n = sum(counts.values())
        parts = [f"{c} with {k}" for k, c in sorted(counts.items(), key=lambda kc: -kc[0])]
        parts[0] += " options"
        return (f"chance {chance_of(counts):.3f}, the mean of 1/options over the {n} items, "
                f"{', '.join(parts[:-1])} and {parts[-1]}")
    chances = sorted({round(chance_of(o), 12) for o in found})
    return (f"chance {chances[0]:.3f}–{chances[-1]:.3f} by checkpoint, each the mean of 1/options over its "
            "held-out target's items")


def _accuracy_line(s: dict, results: pd.DataFrame, note: str = "", chance: str = "") -> str:
    """The summary's answer for one comparison of held-out accuracy (a significance row); `note`
    (`_one_option_note`) is said after the verdict, `chance` (`_chance`) after the accuracies."""
    a, b = s["comparison"].split(" vs. ", 1)
    mean_a, mean_b = _paired_means(results, a, b, "accuracy", s["unit"])
    n = s["n_pairs"]
    pairs = (f"{n} targets, each the mean of its seeds, paired by target" if s["unit"] == "target" else
             f"{n} seeds each, paired by seed" if results.loc[results["metric"] == "accuracy", "target"].nunique() < 2 else
             f"{n} (target, seed) pairs")
    on = [str(t).replace(",", " / ") for t in dict.fromkeys(results.loc[results["metric"] == "accuracy", "target"])]
    where = f"the held-out targets ({'; '.join(on)})" if len(on) > 1 else "the held-out target"
    head = (f"**Is the {a}–{b} difference significant?** Accuracy on {where}: "
            f"{a} {mean_a:.3f}, {b} {mean_b:.3f} ({'; '.join(filter(None, (chance, pairs, _left_out(s))))}), "
            f"Δ = {s['mean_diff']:.3f}. ")
    if not np.isfinite(s["t"]) or not np.isfinite(s["p"]):
        return head + ("Every paired difference is the same, so the t-test is degenerate (zero variance) and "
                       f"says nothing; the exact sign-flip test gives p = {s['perm_p']:.3g}: not significant.") + note
    return head + _t_test_verdict(s) + (
        f" The exact sign-flip test gives p = {s['perm_p']:.3g}; with {_pairs_phrase(s)} it cannot go "
        f"below {s['min_exact_p']:.3g}, so any verdict here rests on the t-test's normality assumption.") + note


def _t_test_verdict(s: dict) -> str:
    """The t-test of a significance row and its verdict at α = 0.05, which is Holm's: the p and the
    interval of the row are unadjusted, the verdict is on the Holm-adjusted p over the Significance
    section's tests, and the sentence says so (a user study read "p = 0.0489, Holm-adjusted 0.293
    (95% CI of Δ [-0.428, -0.005]): not significant", an interval excluding 0 beside the verdict)."""
    n = s.get("holm_family")
    tests = (f"{s['metric']} tests" if s.get("holm_family_of") == "metric" else "tests")
    over = f"over the {n} {tests} of the Significance section" if n else "over the tests of the Significance section"
    if n == 1:  # the only test of its family: Holm leaves its p as it is
        word = "Significant" if s["p"] < 0.05 else "Not significant"
        only = f"only {s['metric']} test" if s.get("holm_family_of") == "metric" else "only test"
        return (f"Paired t-test t({s['df']:.0f}) = {s['t']:.2f}, p = {s['p']:.3g} (95% CI of Δ {_ci(*s['ci'])}). "
                f"{word} at α = 0.05 (the Significance section's {only}, so Holm's adjustment leaves p as it is).")
    head = (f"Paired t-test t({s['df']:.0f}) = {s['t']:.2f}, p = {s['p']:.3g} and 95% CI of Δ {_ci(*s['ci'])}, "
            f"both unadjusted; Holm-adjusted {over}, p = {s['p_holm']:.3g}. ")
    if s["p_holm"] < 0.05:
        return head + "Significant at α = 0.05 after Holm's adjustment."
    if s["p"] >= 0.05:
        return head + "Not significant at α = 0.05, unadjusted or after Holm's adjustment."
    return head + ("Not significant at α = 0.05 after Holm's adjustment; taken alone, unadjusted, this test "
                   "would be significant (its p below 0.05, its interval excluding 0).")


def _paired_units(s: dict) -> str:
    """What a significance row paired: "2 targets (each the mean of its seeds)" at unit target, else
    "6 (target, seed) pairs"."""
    n = int(s["n_pairs"])
    if s.get("unit") == "target":
        return f"{n} target{'s' if n != 1 else ''} (each the mean of its seeds)"
    return f"{n} (target, seed) pairs"


def _some_below_cap(runs: list[tuple[str, float, float]], what: str) -> str:
    """'' where every (name, value, cap) sits within 10% of its cap (`near_saturation`), else how many
    do and the lowest: 'but only 5 of the 6 checkpoints are individually (the lowest, Unrelated seed 2,
    at 82% of it)' (it read "but 5 of the 6 checkpoints are", which a user study found garbled)."""
    at = [near_saturation(v, h) for _, v, h in runs]
    if all(at):
        return ""
    name, v, h = min(runs, key=lambda r: r[1] / r[2] if r[2] > 0 else np.inf)
    k = sum(at)
    some = (f"none of the {len(runs)} {what} is" if k == 0 else
            f"only {k} of the {len(runs)} {what} {'is' if k == 1 else 'are'}")
    return f"but {some} individually (the lowest, {name}, at {v / h:.0%} of it)"


def _y_summary_line(data: RunData, sig: dict) -> str | None:
    """The summary's line on I(Z;Y | target), Related against Unrelated (None without both)."""
    y_key = "I(Z;Y|target) nats"
    # the means are over the same rows as the paired test: every held-out target's checkpoints
    y_rows = data.results[data.results["metric"] == y_key]
    y = y_rows.groupby("condition")["value"].mean()
    if not {"Related", "Unrelated"} <= set(y.index):
        return None
    s = sig.get(("Related vs. Unrelated", y_key))
    if s:  # over the pairs the test used, as its Δ is
        y = pd.Series(dict(zip(("Related", "Unrelated"),
                               _paired_means(data.results, "Related", "Unrelated", y_key, s["unit"]))))
    test = (f"; Δ = {s['mean_diff']:.3f} nats, "
            + (f"95% CI {_ci(*s['ci'])}, p = {s['p']:.3g}{_exact_floor_note(s)}" if np.isfinite(s["t"]) else
               "the same in every pair (t-test undefined)")
            + f", paired over {_paired_units(s)}"
            + (f"; {_left_out(s)}" if _left_out(s) else "")) if s else _untested(data.results, "Related", "Unrelated")
    names = [t.replace(",", " / ") for t in dict.fromkeys(y_rows["target"])]
    targets, plural = "; ".join(names), "s" if len(names) > 1 else ""
    merged = (" (the answer's rare classes merged into one for the MI: each value is at most the answer's "
              "own information)" if data.merged_answer else "")
    # a held-out target too small to be a finding (Design warnings) is said here too, beside the p
    small = len(small_targets(data.summary, getattr(data, "composition", None), getattr(data, "strata", None)))
    few = "" if not small else (
        f" {'The held-out target has' if len(names) == 1 else f'{small} of the held-out targets ' + ('has' if small == 1 else 'have')} fewer "
        f"than {MIN_HELDOUT_ITEMS} scored items (Design warnings), so this comparison does not read as a finding.")
    # as the I(Z;T|M,A) line: a comparison of two values at their cap says nothing about the conditions
    tgt = data.strata[data.strata["is_target"]] if len(data.strata) and "is_target" in data.strata else None
    cap = float(tgt["h_y"].mean()) if tgt is not None and len(tgt) else float("nan")
    at_cap = ""
    if near_saturation(min(y["Related"], y["Unrelated"]), cap):
        # each run against its own target's cap: an audit's summary said "in every checkpoint" of
        # means within 10% where one checkpoint sat at 82% of the cap
        caps = tgt.groupby("stratum")["h_y"].mean() if tgt is not None else pd.Series(dtype=float)
        pairs = y_rows[y_rows["condition"].isin(["Related", "Unrelated"])]
        runs = [(f"{c} seed {sd}" + (f" on {t.replace(',', ' / ')}" if len(names) > 1 else ""), float(v),
                 float(caps.get(str(t).replace(",", " / "), cap)))
                for c, t, sd, v in zip(pairs["condition"], pairs["target"], pairs["seed"], pairs["value"])]
        some = _some_below_cap(runs, "checkpoints")
        at_cap = (f" Both are within 10% of its cap H(Y | target) = {cap:.3f} nats: Y is read off Z there in "
                  "every checkpoint, and this comparison cannot separate the conditions." if not some else
                  f" Both means are within 10% of its cap H(Y | target) = {cap:.3f} nats, {some}: near the "
                  "cap this comparison has little room to separate the conditions.")
    return (f"Information about Y, {y_words(data)}, inside the held-out target{plural} "
            f"({targets}), I(Z;Y | target), mean over their {'paired ' if s and _left_out(s) else ''}checkpoints: Related "
            f"{y['Related']:.3f} vs "
            f"Unrelated {y['Unrelated']:.3f} nats{merged}{test}.{few}{at_cap}")


def summary_lines(data: RunData, f: dict, one_option: dict | None = None) -> list[str]:
    """The summary's answers; `one_option`: `design.one_option_answers` of the run's checkpoints
    (default: the run's, `RunData.one_option`)."""
    if one_option is None:
        one_option = data.one_option or {}
    lines = [_most_encoded_line(f["most_encoded"])]
    tbc = f["term_by_condition"]
    t_term = next((t for t in tbc if t.startswith("I(Z;task|")), None)
    sig = {(s["comparison"], s["metric"]): s for s in f.get("significance", [])}
    if t_term and {"Related", "Unrelated"} <= set(tbc[t_term]):
        r, u = tbc[t_term]["Related"], tbc[t_term]["Unrelated"]
        s = sig.get(("Related vs. Unrelated", f"{t_term} nats"))
        if s:  # the means over the pairs the test used, whose difference is its Δ (a checkpoint without a
            # partner moved the all-checkpoint means to the other side of Δ in a user study)
            r, u = _paired_means(data.results, "Related", "Unrelated", f"{t_term} nats", s["unit"])
        test = (f" (paired over {_paired_units(s)}: Δ = {s['mean_diff']:.3f} nats, "
                + (f"95% CI {_ci(*s['ci'])}, t({s['df']:.0f}) = {s['t']:.2f}, p = {s['p']:.3g}"
                   f"{_exact_floor_note(s)})"
                   if np.isfinite(s["t"]) else "the same in every pair, so the t-test is undefined)")
                + (f" ({_left_out(s)})" if _left_out(s) else "")) if s else _untested(data.results, "Related", "Unrelated")
        main = data.terms[data.terms["main"] & (data.terms["term"] == t_term)]
        cap = float(main["h_upper"].max())
        at_cap = near_saturation(min(r, u), cap)
        both = main[main["condition"].isin(["Related", "Unrelated"])]
        runs = [(str(c), float(v), float(h)) for c, v, h in zip(both["checkpoint"], both["estimate"], both["h_upper"])]
        some = _some_below_cap(runs, "checkpoints") if at_cap else ""
        lines.append(f"**Did Related training raise I(Z;T|M,A) over Unrelated?** Related {r:.3f} vs "
                     f"Unrelated {u:.3f} nats{test}; its cap H(T|M,A) is {cap:.3f} nats."
                     + ("" if not at_cap else
                        " Both are within 10% of the cap: when the question text names the task, every "
                        "checkpoint's Z carries it and this term cannot separate the conditions." if not some else
                        f" Both means are within 10% of the cap, {some}: near the cap this term has little "
                        "room to separate the conditions."))
    y_line = _y_summary_line(data, sig)
    if y_line:
        lines.append(y_line)
    fa = f["fano"]
    resp = fa["error_respects_floor"]
    meets = fa["mi_meets_bound"]
    floors = sum(resp.get(k, 0) for k in ("yes", "within CI", "NO"))
    unshown = fa["strata"] - floors
    no_floor = ("where the answer's rare classes were merged for the MI, Î is at most the MI of the answer "
                "itself and implies no floor")
    if floors == 0 and unshown and data.merged_answer:  # "in 0, ... in 0, and not in 0" said nothing
        floor_words = f"no cell has an error floor implied by Î ({no_floor})"
    else:
        floor_words = (f"the observed error respects the floor implied by Î in {resp.get('yes', 0)}, only "
                       f"within the intervals in {resp.get('within CI', 0)}, and not in {resp.get('NO', 0)}"
                       + (f" (no floor in {unshown}: {no_floor})" if unshown and data.merged_answer else ""))
    lines.append(
        f"**Do the observed errors respect Fano?** Over {fa['strata']} (checkpoint, stratum) cells, "
        + floor_words + f"; Î meets the information Fano demands of the observed error in {meets.get('yes', 0)} "
        f"(within CI {meets.get('within CI', 0)}, no {meets.get('NO', 0)}).")
    # every comparison the run tested, in its order: Related vs. Unrelated, and Table IX's ablation rows
    lines += [_accuracy_line(s, data.results, _one_option_note(data, *comparison.split(" vs. ", 1), one_option),
                             _chance(data, *comparison.split(" vs. ", 1)))
              for (comparison, metric), s in sig.items() if metric == "accuracy" and " vs. " in comparison]
    lines.extend(_ciou_lines(data, sig))
    return lines


# ------------------------------------------------------------------------------ glossary
def _pct(level: float | None, default: str = "") -> str:
    return f"{level:.0%}" if level is not None else default


UNEXPLAINED = "a column of the run's result files (no description recorded for it)"


def _baseline_glossary(u: str) -> dict[str, str]:
    """The columns of the baselines table (control task, codelength, permutation null)."""
    return {
        f"control Î ({u})": "the same estimate for the control task: labels drawn from the factor's frequencies in "
                            "each stratum, fixed per image, so they mean nothing (Hewitt & Liang 2019); clipped to "
                            "[0, the cap] as Î is",
        f"selectivity ({u})": "Î minus the control task's Î on the same rows, folds and seeds, with its paired "
                              "interval: the information beyond what the probe finds in meaningless labels. Both "
                              "clipped as shown, so Î - control Î = selectivity; the interval is the paired one of "
                              "the per-row terms, bounded by Î's own (a selectivity claims no more than Î)",
        "online code (bits)": "prequential codelength of the factor given Z: blocks of rows sent with a probe fitted "
                              "on the rows sent before them (Voita & Titov 2020)",
        "uniform code (bits)": "the codelength with every row sent by the uniform code over its stratum's classes",
        "compression": "uniform code / online code: above 1, the probe extracts the factor from Z; about 1, it cannot",
        f"excess over null ({u})": "Î minus the mean Î (clipped as Î is) over labels permuted within the "
                                   "conditioning strata: at most Î",
        "permutation p": "(1 + permuted Î at least the observed) / (1 + permutations): the permutation test's p-value",
    }


def _pointwise_glossary(data: RunData) -> dict[str, str]:
    """The columns of the pointwise tables (one set per training condition)."""
    if data.pointwise is None or data.pointwise.empty:
        return {}
    u = data.unit
    g = {"stratum or class": "the items' conditioning stratum (for a term without one: the factor's class)",
         "end": "lowest: the items whose embedding points the critic away from their label most; highest: the "
                "items it reads best",
         "item id": "the sample id of the item (the store's id column)",
         f"checkpoints (of {data.pointwise['checkpoint'].nunique()})":
             "how many checkpoints list the item among their lowest (or highest) pointwise values",
         f"pointwise ({u})": "the item's pointwise information, log q(y|z,c) − log p(y|c) of the held-out critic, "
                             "averaged over the checkpoints that list it"}
    for cond in dict.fromkeys(data.pointwise["condition"]):
        g[f"contribution ({u}), {cond}"] = (f"the stratum's share of the term, n_s / n × its mean pointwise "
                                            f"information, averaged over the {cond} checkpoints; a term's "
                                            "contributions add up to its estimate before clipping")
        g[f"mean per item ({u}), {cond}"] = f"mean pointwise information of the stratum's items ({cond} checkpoints)"
        g[f"items > 0, {cond}"] = (f"share of the stratum's items whose pointwise information is above 0 ({cond} "
                                   "checkpoints)")
    return g


# what each training condition's split holds (data.splits.in_training), for the glossary
CONDITION_MEANINGS = {
    "related": "triplets sharing two of M, A, T with the held-out target",
    "unrelated": "sharing at most one",
    "zero-overlap": "sharing none",
    "any-overlap": "sharing one or two (Med-MAT's All Related, its Fig. 4)",
    "leave-one-out": "every triplet but the held-out target",
    "without-modality": "the Related triplets that differ from the target in modality (sharing anatomy and task)",
    "without-anatomy": "the Related triplets that differ from the target in anatomy (sharing modality and task)",
    "without-task": "the Related triplets that differ from the target in task (sharing modality and anatomy)",
}


def _conditions_present(data) -> list[str]:
    """The run's condition keys in CONDITION_MEANINGS order (Related and Unrelated where none is known)."""
    present = {ck.condition for ck in data.summary.checkpoints}
    keys = [c for c in CONDITION_MEANINGS if c in present]
    return keys or ["related", "unrelated"]


N_WORDS = "number of samples (for the MI table: rows of the store; for the Fano table: samples in the stratum"


def _results_glossary(data: RunData) -> dict[str, str]:
    """The per-run results table's interval columns (`_results_shown`), where its results.csv has them."""
    if not {"ci_low", "ci_high"} <= set(data.results.columns):
        return {}
    # cIoU's words only where the run has segmentation items (a study without them read of cIoU here)
    ciou = bool(data.results["metric"].astype(str).str.contains("ciou", case=False).any())
    return {
        "n": N_WORDS + "; for the per-run results: the rows the value is over, an MI term's evaluation rows, "
                       "accuracy's answered target items" + (", cIoU's segmentation items)" if ciou else ")"),
        "value interval": "the value's interval as the run computed it (results.csv's ci_low, ci_high): an MI "
                          "row's from its MI results file, \"≥ x (one-sided)\" where only the lower end is a "
                          "statement (the upper is the entropy limit); accuracy's exact Clopper–Pearson interval "
                          "of its right answers of n"
                          + ("; empty for cIoU, of which the run estimates no interval (`matprobe significance "
                             "--items` bootstraps its paired differences over items)" if ciou else ""),
        "interval level": "the level of the value's interval",
    }


def _step_time_glossary(data: RunData) -> dict[str, str]:
    """The step-time table's columns where the run directory saw more than one `run`."""
    return {"this run (s)": "wall time of the step in the run that wrote this report (a rerun reuses finished "
                            "stores and MI files)",
            f"all {data.summary.runs} runs (s)": "wall time of the step summed over every `run` in this run "
                                                 "directory, this one included: what the study cost"}


def _pairing_words(data: RunData, short: bool = False) -> str:
    """How the run's comparisons pair checkpoints, from significance.csv's unit column (a run with two
    held-out targets pairs targets, each the mean of its seeds; its glossary said 'by seed')."""
    units = [] if data.significance is None or "unit" not in data.significance else \
        list(dict.fromkeys(str(u) for u in data.significance["unit"].dropna()))
    words = {"target": "held-out target (each the mean of its seeds)", "seed": "training seed", "item": "item"}
    said = " or ".join(words.get(u, u) for u in units) or words["seed"]
    return f"here: a {said}" if short else f"the comparisons pair checkpoints by {said}"


def glossary(data: RunData) -> dict[str, str]:
    """What every column header of the report's tables means (the report lists the ones it used)."""
    u = data.unit
    mi_lvl = _pct(data.mi_level, "the MI results'")
    err_lvl = _pct(data.error_level, "the check's")
    g = {
        "checkpoint": "the fine-tuned model (its name in run.json)",
        "condition": "the training split the checkpoint was fine-tuned on (" + "; ".join(
            f"{condition_name(c)}: {CONDITION_MEANINGS[c]}" for c in _conditions_present(data)) + "; CrossMed §III)",
        "term": "the mutual-information chain term: I(Z;X|C) is the information the embedding Z holds about "
                "factor X beyond the conditioning factors C",
        f"Î ({u})": "the estimated information (cross-fitted probe bound on held-out folds)",
        **_baseline_glossary(u),
        f"Î {mi_lvl} interval": f"{mi_lvl} interval of Î, over folds and seeds; \"≥ x (one-sided)\": the MI is at "
                                "least x, where the estimator's shortfall cannot be bounded (flags small-cells, "
                                "near-saturated, misspecified-linear, pca-dropped-signal; README, "
                                "docs/estimators.md)",
        f"cap H ({u})": "plug-in conditional entropy H(X|C) of the sample: no estimate may exceed it",
        "n": N_WORDS + ")",
        "stratum": "Modality / Anatomy / Task of the samples in this row",
        f"H(Y|s) ({u})": f"entropy of Y ({y_words(data)}) within the stratum, the most Z can know about it there",
        "ε": "observed error rate of the model's answers in the stratum",
        f"ε {err_lvl} CI": f"{err_lvl} Clopper–Pearson interval of ε",
        f"Î(Z;Y|s) ({u})": f"estimated information about Y ({y_words(data)}) in Z within the stratum",
        "ε floor at Î / at upper": "smallest error Fano allows given Î, and given the interval's upper end",
        "ε respects floor": "'yes' if ε ≥ the floor at Î; 'within CI' if only ε's upper limit reaches the "
                            "floor at Î's upper end; 'NO' otherwise",
        f"I needed at ε / at upper ({u})": "least information Fano demands for the observed error ε, and for "
                                           "ε's one-sided upper limit (0: at that error Fano demands nothing)",
        "Î meets it": "'yes' if Î ≥ the information needed at ε; 'within CI' if only Î's upper end reaches it at "
                      "ε's upper limit; 'NO' otherwise (Î too low, or the answer is not a function of Z)",
        "bound": "the risk bound: test-set (binomial tail inversion on held-out answers) or a training-set bound",
        "bound on risk": "the bound's value for the true error rate; ≥ 1 says nothing",
        "vacuous": "whether the bound is ≥ 1 (no information)",
        "held-out error": "observed error on the held-out answers the bounds are held against",
        f"held-out error {err_lvl} CI": f"{err_lvl} Clopper–Pearson interval of the held-out error",
        "held-out n": "number of held-out answers",
        "held-out rows": "which answers are held out: the store's split = test rows, else the held-out target's "
                         "rows (a manifest without a split), else every answered row (said so)",
        "target": "the held-out (M, A, T) triplet the results refer to",
        "item": "the segmentation item (sample id) of an item-level row; empty for run-level rows",
        "seed": f"training seed of the checkpoint; {_pairing_words(data)}",
        "metric": "what `value` measures: accuracy on the held-out target, a chain term at the main layer "
                  f"({u}), or I(Z;Y|target), the answer information inside the held-out target ({u})",
        "value": "the metric's value for this checkpoint",
        "package": "software package",
        "version": "its version when the run was made",
        "setting": "a pipeline setting (config section of run.json)",
        "configured value": "the setting's value in this run",
        "step": "a pipeline step",
        "seconds": "wall time of the step",
        **_step_time_glossary(data),
        "Comparison": "which two conditions are compared (the first minus the second)",
        "Metric": "the per-run metric compared (see `metric`)",
        "Unit": f"the unit of analysis that forms one pair ({_pairing_words(data, short=True)})",
        "Mean diff": "mean of the paired differences, first condition minus second",
        "95% CI": "95% t interval of the mean paired difference",
        "t": "paired t statistic",
        "df": "degrees of freedom of the t-test (pairs − 1)",
        "p": "two-sided p-value of the paired t-test, unadjusted",
        "dz": "standardised mean difference of the pairs (mean / sd of the differences)",
        "g": "Hedges' g (bias-corrected standardised difference)",
        "Wilcoxon p": "two-sided p of the Wilcoxon signed-rank test",
        "Perm. p": "two-sided p of the exact sign-flip permutation test (cannot go below 2^(1−n))",
        "Holm p": "t-test p adjusted by Holm over the table's rows",
        "BH p": "t-test p adjusted by Benjamini–Hochberg (false discovery rate) over the table's rows",
        "layer/pool": "the layer (0-based decoder block output) and the token pooling the MI was measured at",
    }
    g.update(_pointwise_glossary(data))
    g.update(_results_glossary(data))
    from matprobe.present.significance import table_ix_column, variant_glossary

    g.update(variant_glossary())  # the p columns name their variant: "Perm. p (exact)", ...

    for metric in data.results["metric"].unique():  # Table IX columns are the metrics
        g[str(metric)] = f"paired t-test p-value (unadjusted) for the metric `{metric}`"
        g[table_ix_column(metric)] = g[str(metric)]
    return g


def _ciou_lines(data: RunData, sig: dict) -> list[str]:
    """cIoU (Σ I / Σ U per run) on segmentation targets, Related vs Unrelated."""
    runs = data.results[data.results["metric"] == "cIoU"]
    if runs.empty:
        return []
    out = []
    s = sig.get(("Related vs. Unrelated", "cIoU"))
    for target, sub in runs.groupby("target"):
        if s and runs["target"].nunique() == 1:  # the means over the pairs the test used: Δ is their difference
            a, b = _paired_means(data.results, "Related", "Unrelated", "cIoU", s["unit"])
            pairs = "; ".join(filter(None, (f"{s['n_pairs']} seeds each", _left_out(s))))
            parts = f"Related {a:.3f}, Unrelated {b:.3f} ({pairs})"
        else:
            by = sub.groupby("condition")["value"].agg(["mean", "count"])
            parts = ", ".join(f"{c} {r['mean']:.3f} ({int(r['count'])} seeds)" for c, r in by.iterrows())
        test = (f"; paired by seed Δ = {s['mean_diff']:.3f}, 95% CI {_ci(*s['ci'])}, t({s['df']:.0f}) = "
                f"{s['t']:.2f}, p = {s['p']:.3g}") if s and np.isfinite(s["t"]) else ""
        out.append(f"**Segmentation target ({target.replace(',', ' / ')}):** cIoU = Σ intersection / Σ union "
                   f"over its items (each a choice among four candidate masks): {parts}{test}.")
    return out


# ------------------------------------------------------------------------------ rendering
def _cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.3f}"
    if v is None:
        return ""
    return str(v)


def _empty_column(col: pd.Series) -> bool:
    return all(_cell(v) == "" for v in col)


def _report_table(frame: pd.DataFrame) -> Table:
    """A report table in the table model: every cell formatted by `_cell` (3 decimals, blank when absent)."""
    return Table.from_frame(frame, columns=[Column(str(c), fmt=_cell, missing="") for c in frame.columns])


def _md_inline_to_html(text: str) -> str:
    esc = html.escape(text)
    esc = re.sub(r"`(.+?)`", r"<code>\1</code>", esc)
    esc = re.sub(r"\[(.+?)\]\((#[\w-]+)\)", r'<a href="\2">\1</a>', esc)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", esc)


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


class Doc:
    """Blocks rendered both to Markdown and to self-contained HTML (figures inlined as base64).

    Level-2 headings make the table of contents; tables are numbered and captioned, and the
    headers they use are collected for the glossary.
    """

    TOC = "\0toc\0"

    def __init__(self, run: Path):
        self.run = run
        self.md: list[str] = []
        self.html: list[str] = []
        self.sections: list[str] = []
        self.columns: list[str] = []
        self.n_tables = 0

    def heading(self, text: str, level: int = 2) -> None:
        if level == 2:
            self.sections.append(text)
        self.md.append("#" * level + " " + text)
        self.html.append(f'<h{level} id="{slug(text)}">{html.escape(text)}</h{level}>')

    def toc(self) -> None:
        self.md.append(self.TOC)
        self.html.append(self.TOC)

    def para(self, text: str) -> None:
        self.md.append(text)
        self.html.append(f"<p>{_md_inline_to_html(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        self.md.append("\n".join(f"- {i}" for i in items))
        self.html.append("<ul>" + "".join(f"<li>{_md_inline_to_html(i)}</li>" for i in items) + "</ul>")

    def table(self, frame: pd.DataFrame, caption: str) -> None:
        # a column with no value in any row says nothing (e.g. `item` in a study without
        # segmentation items): left out of the table, and so of the glossary
        frame = frame[[c for c in frame.columns if not _empty_column(frame[c])]]
        self.n_tables += 1
        label = f"**Table {self.n_tables}.** {caption}"
        self.para(label)
        self.columns += [str(c) for c in frame.columns if str(c) not in self.columns]
        table = _report_table(frame)
        self.md.append(to_markdown(table, title=False, footnotes=False, align=False).rstrip("\n"))
        self.html.append(to_html(table, title=False, footnotes=False, compact=True))

    def figure(self, rel: str, caption: str) -> None:
        svg = Path(rel).with_suffix(".svg").as_posix()
        self.md.append(f"![{caption.split('.')[0]}]({rel})\n\n*{caption}* ([SVG]({svg}))")
        data = base64.b64encode((self.run / rel).read_bytes()).decode()
        self.html.append(f'<figure><img alt="{html.escape(rel)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def markdown(self) -> str:
        toc = "**Contents:** " + " · ".join(f"[{s}](#{slug(s)})" for s in self.sections)
        return "\n\n".join(toc if b == self.TOC else b for b in self.md) + "\n"

    def html_page(self, title: str) -> str:
        toc = ('<nav><strong>Contents</strong><ol>'
               + "".join(f'<li><a href="#{slug(s)}">{html.escape(s)}</a></li>' for s in self.sections)
               + "</ol></nav>")
        # tables wrap inside their cells rather than run past the page (checked in a browser by the tests)
        style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;"
                 "line-height:1.45}"
                 "table{border-collapse:collapse;margin:0.4em 0 1.2em;font-size:0.8em;max-width:100%}"
                 "td,th{border:1px solid #bbb;padding:2px 5px;text-align:right;overflow-wrap:anywhere}"
                 "th{background:#eee}td:first-child,th:first-child{text-align:left}"
                 "img{max-width:100%}figcaption{font-size:0.88em;color:#444;margin-top:0.3em}"
                 "figure{margin:1.2em 0}code{overflow-wrap:anywhere}dt{font-weight:bold}"
                 "nav ol{columns:2}")
        body = "\n".join(toc if b == self.TOC else b for b in self.html)
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>" + body + "</body></html>\n")


def _flatten(prefix: str, value) -> list[tuple[str, str]]:
    if isinstance(value, dict) and value:
        return [kv for k, v in value.items() for kv in _flatten(f"{prefix}.{k}" if prefix else k, v)]
    return [(prefix, json.dumps(value))]


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Write figures, report.md, report.html and findings.json into the run directory.

    Sections in order: summary, dataset (with design warnings), MI chain and by layer, information
    vs behaviour with Fano, PAC, significance, per-run results, provenance, glossary."""
    data = load_run(run_dir)
    run = data.run
    fig_dir = run / "figures"
    found = findings(data)
    # strict JSON (no bare NaN: a p-value that could not be computed is null), for any parser
    write_text_atomic(run / "findings.json", json.dumps(strict_json_value(found), indent=2, allow_nan=False))
    doc = Doc(run)
    target = "; ".join(triplet_label(t) for t in run_targets(data.summary))
    mi_lvl = _pct(data.mi_level, "the MI results'")
    err_lvl = _pct(data.error_level, "the check's")
    doc.heading("matprobe report", 1)
    doc.para(header_line(data, mi_lvl, err_lvl))
    doc.toc()
    doc.heading("Summary")
    doc.bullets(summary_lines(data, found))

    _dataset_section(doc, data, fig_dir)
    _mi_sections(doc, data, fig_dir, mi_lvl)
    _baselines_section(doc, data, fig_dir)
    _pointwise_section(doc, data, fig_dir)
    _sources_section(doc, data)
    _fano_section(doc, data, fig_dir, mi_lvl, err_lvl)
    _pac_section(doc, data, fig_dir, err_lvl)
    _significance_section(doc, data)
    _results_section(doc, data)
    _provenance_section(doc, data)
    _glossary_section(doc, data)
    md_path, html_path = run / "report.md", run / "report.html"
    write_text_atomic(md_path, doc.markdown())
    write_text_atomic(html_path, doc.html_page(f"matprobe report: {target}"))
    return {"markdown": md_path, "html": html_path, "figures": fig_dir, "findings": run / "findings.json"}


def header_line(data, mi_lvl: str, err_lvl: str) -> str:
    """The report's first line: checkpoints, samples and every held-out target (with several, how many
    checkpoints hold each out), the unit and the intervals' levels."""
    summary = data.summary
    targets = run_targets(summary)
    if len(targets) == 1:
        held = f"held-out target triplet **{triplet_label(targets[0])}**"
    else:
        per = [sum(checkpoint_target(summary, ck) == t for ck in summary.checkpoints) for t in targets]
        held = f"{len(targets)} held-out target triplets, " + ", ".join(
            f"**{triplet_label(t)}** ({k} checkpoint{'' if k == 1 else 's'})" for t, k in zip(targets, per))
    return (f"{len(summary.checkpoints)} checkpoints, {summary.n_samples} samples, {held}. Information is in "
            f"{data.unit}; intervals are {mi_lvl} for MI estimates, {err_lvl} for error rates and 95% for mean "
            "differences. Every column is explained in the [Glossary](#glossary).")


def training_counts(summary: RunSummary) -> str:
    """The training rows per condition ("related 75, unrelated 156"); where run.json records them for
    several held-out targets, per target ("for A related 75, unrelated 156; for B ...")."""
    by_target = summary.train_sizes_by_target or {}
    if len(by_target) < 2:
        return ", ".join(f"{k} {v}" for k, v in summary.train_sizes.items())
    return "; ".join(f"for {str(t).replace(',', ' / ')} " + ", ".join(f"{k} {v}" for k, v in sizes.items())
                     for t, sizes in by_target.items())


def _composition_figure(doc: Doc, data, fig_dir: Path) -> None:
    """The composition figure: one panel per held-out target where the run has several."""
    targets = run_targets(data.summary)
    counts = data.composition if len(targets) == 1 else composition_by_target(data.composition, targets)
    cap = figures.composition(counts, fig_dir / "composition.png")
    doc.figure("figures/composition.png", cap)


def _dataset_section(doc: Doc, data, fig_dir: Path) -> None:
    """The dataset's composition, training sizes and the design warnings."""
    run = data.run
    doc.heading("Dataset")
    if data.composition is not None:
        _composition_figure(doc, data, fig_dir)
    else:
        doc.para("The run records no dataset composition and its manifest is not here.")
    sizes = data.summary.train_sizes
    if sizes:
        counts = training_counts(data.summary)
        basis = data.summary.train_rows
        if basis == "equalised":
            tiny = ""
            if fine_tuned_here(data.summary) and data.summary.config.get("demo_data") is False:
                # the user's own data through the demo's toy fine-tuning ([train] without [[checkpoints]])
                steps = data.summary.config.get("train_steps")
                tiny = (" The checkpoints are tiny random-initialised LLaVA models that this run fine-tuned on "
                        f"these rows ([train]{f', {steps} steps' if steps else ''}): a trial of the whole path on "
                        "your data; their numbers say nothing about a real model.")
            doc.para(f"Training samples per condition (equalised): {counts}.{tiny}")
        else:  # checkpoints trained elsewhere: say what the run assumed, not a training set
            which = ("the rows of each condition's training triplets that the manifest marks split = train"
                     if basis == "split" else "every row of each condition's training triplets (the manifest "
                     "marks no split = train rows)")
            trained = (data.pac["bound"] != "test-set (held-out)").any() if len(data.pac) else False
            doc.para(f"Training rows per condition, as this run takes them: {counts} ({which}). The checkpoints "
                     "were trained elsewhere, on what matprobe cannot see; "
                     + ("only the training-set PAC bounds' training error is measured on these rows."
                        if trained else "no number in this report is measured on them (the training-set PAC "
                        "bounds, which would be, need each checkpoint's parameter count and training error)."))

    warnings = design_warnings(data, lambda p: resolve_run_path(run, p, data.summary))
    if warnings:  # what the data or checkpoints cannot show (report/design.py)
        doc.heading("Design warnings")
        doc.bullets(warnings)



# the flags that make an interval one-sided (mi.interface.MIEstimate), as a reader needs them said
ONE_SIDED_REASONS = {
    "misspecified-linear": "a non-linear critic beat the linear one on the validation rows, so the linear "
                           "critic is wrong for these data and its shortfall is not bounded",
    "small-cells": "many rows sit in critic cells with fewer rows than the critic has inputs, where the "
                   "shortfall is not bounded",
    "near-saturated": "the estimate is within 10% of its entropy cap, where the shortfall is not bounded",
    "pca-dropped-signal": "the label-free reduction left label information out",
    "capped-log-batch": "InfoNCE is capped at log(batch)",
}


def one_sided_reasons(terms: pd.DataFrame) -> str:
    """Why this run's one-sided intervals are one-sided: each reason with the terms it holds for
    (counted over checkpoints), from the terms' flags; "" where every interval is two-sided."""
    lower = terms[(terms["bound"] == "lower") & ~terms["degenerate"].astype(bool)]
    if lower.empty:
        return ""
    flags = (lower["flags"] if "flags" in lower else pd.Series("", index=lower.index)).str.split(",")
    parts, order = [], list(dict.fromkeys(terms["term"]))  # the chain's order
    for flag, why in ONE_SIDED_REASONS.items():
        has = lower[flags.apply(lambda f, flag=flag: flag in f)]
        if len(has):
            counts = has.groupby("term").size()
            parts.append(f"{flag} ({why}): " + ", ".join(
                f"{t} at {counts[t]} of {int((terms['term'] == t).sum())} checkpoints" for t in order if t in counts))
    none = lower[~flags.apply(lambda f: bool(set(f) & set(ONE_SIDED_REASONS)))]
    if len(none):
        parts.append(f"the estimator's own bound (its estimates are lower bounds by construction): {len(none)} term{'s' if len(none) != 1 else ''}")
    return (f"{len(lower)} of {len(terms)} intervals above are one-sided (≥ x: only the lower end is a "
            "statement). Why, from the terms' flags (a term can have several): " + "; ".join(parts) + ".")


def _mi_sections(doc: Doc, data, fig_dir: Path, mi_lvl: str) -> None:
    """The MI chain at the main layer/pool, and every layer/pool when there are several."""
    u = data.unit
    main = data.terms[data.terms["main"]]
    main_lp = ", ".join(dict.fromkeys(main["layer_pool"]))
    doc.heading("MI chain")
    cap = figures.mi_chain_bars(data.terms, fig_dir / "mi_chain.png", level=data.mi_level)
    doc.figure("figures/mi_chain.png", cap)
    tbl = pd.DataFrame({
        "checkpoint": main["checkpoint"], "condition": main["condition"], "term": main["term"],
        f"Î ({u})": term_cells(main), f"Î {mi_lvl} interval": _mi_intervals(main),
        f"cap H ({u})": main["h_upper"], "n": main["n"]})
    doc.table(tbl, f"The MI chain per checkpoint at layer/pool {main_lp}, with {mi_lvl} intervals and the "
                   "entropy that caps each term.")
    why = one_sided_reasons(main)
    if why:
        doc.para(why)

    layers = data.terms.groupby("pool")["layer"].nunique()
    if (layers > 1).any():
        doc.heading("MI by layer")
        cap = figures.mi_by_layer(data.terms, fig_dir / "mi_by_layer.png", level=data.mi_level)
        doc.figure("figures/mi_by_layer.png", cap)
        every = data.terms.sort_values(["checkpoint", "term", "layer_pool"], kind="stable")
        doc.table(pd.DataFrame({
            "checkpoint": every["checkpoint"], "term": every["term"], "layer/pool": every["layer_pool"],
            f"Î ({u})": term_cells(every),
            f"Î {mi_lvl} interval": _mi_intervals(every)}),
            f"Every chain term at every layer/pool the run measured ({mi_lvl} intervals).")



def _baselines_section(doc: Doc, data, fig_dir: Path) -> None:
    """Control tasks, online codelength and permutation nulls of the main chain, when the MI step made them."""
    main = data.terms[data.terms["main"]] if "main" in data.terms else data.terms
    have = [c for c in ("selectivity", "compression", "p_perm") if c in main and main[c].notna().any()]
    if not have:
        return
    u = data.unit
    doc.heading("Baselines: control tasks and codelength")
    cap = figures.baselines(main, fig_dir / "baselines.png")
    doc.figure("figures/baselines.png", cap)
    if "degenerate" in main and main["degenerate"].any():  # H(Y|C) = 0: nothing to compare, no numbers shown
        main = main.copy()
        main.loc[main["degenerate"].astype(bool), list(BASELINE_COLUMNS)] = np.nan

    def cells(col):
        return ["" if pd.isna(v) else v for v in main[col]]

    table = {"checkpoint": main["checkpoint"], "term": main["term"], f"Î ({u})": term_cells(main)}
    if "selectivity" in have:
        table[f"control Î ({u})"] = cells("control")
        table[f"selectivity ({u})"] = ["" if pd.isna(v) else f"{v:.3f} {_ci(lo, hi)}" for v, lo, hi in
                                        zip(main["selectivity"], main["selectivity_low"], main["selectivity_high"])]
    if "compression" in have:
        table["online code (bits)"] = cells("online_bits")
        table["uniform code (bits)"] = cells("uniform_bits")
        table["compression"] = cells("compression")
    if "p_perm" in have:
        table[f"excess over null ({u})"] = cells("excess")
        table["permutation p"] = cells("p_perm")
    doc.table(pd.DataFrame(table),
              "What each chain term holds beyond labels that mean nothing, and how easily a probe extracts it: the "
              "control task (labels drawn from the factor's frequencies in each stratum, fixed per image, probed the "
              "same way; selectivity = Î minus the control's Î, both clipped to [0, the cap] as shown, so the columns "
              "add up, with the paired interval of the per-row terms bounded by Î's own), the online codelength of the "
              "factor given Z (bits; compression = uniform / online), and the permutation null where it was run "
              "(excess = Î minus the mean of the null estimates clipped the same way; its p ranks the unclipped "
              "estimate among the unclipped null estimates).")


def _pointwise_section(doc: Doc, data, fig_dir: Path) -> None:
    """Which strata and which items carry each chain term at the main cell (pointwise information)."""
    pw = data.pointwise
    if pw is None or pw.empty:
        return
    u = data.unit
    doc.heading("Where the information sits: pointwise information per stratum")
    first = str(pw["term"].iloc[0])
    doc.para("Each item's pointwise information is the held-out critic's log q(y|z,c) − log p(y|c) "
             "(pointwise V-information, Ethayarajh et al. 2022, with the conditioning factors given), averaged over "
             "seeds; its mean over the items is the term's estimate before clipping. Grouped by the term's "
             f"conditioning stratum (by the factor's class for {first}), the contributions n_s / n × mean_s add up "
             "to the term: they show which strata the information comes from. Items below 0 are ones whose "
             "embedding points the critic away from their label. The probe's values include its learning-curve "
             "step, so one item's value can lie beyond the entropy cap; the means per stratum are the quantities to "
             "read. Item-level values for every item: `matprobe mi STORE --pointwise FILE.csv`.")
    cap = figures.pointwise_strata(pw, fig_dir / "pointwise.png", unit=u)
    doc.figure("figures/pointwise.png", cap)
    conds = list(dict.fromkeys(pw["condition"]))
    keys = ["term", "group"]
    table = pw.groupby(keys, sort=False).agg(n=("n", "max")).reset_index()
    for cond in conds:
        sub = pw[pw["condition"] == cond].groupby(keys, sort=False)
        stats = sub.agg(contribution=("contribution", "mean"), mean=("mean", "mean"), positive=("positive", "mean"),
                        all_zero=("all_zero", "all")).reindex(pd.MultiIndex.from_frame(table[keys]))
        fixed = stats["all_zero"].fillna(False).astype(bool).to_numpy()
        table[f"contribution ({u}), {cond}"] = stats["contribution"].to_numpy()
        table[f"mean per item ({u}), {cond}"] = stats["mean"].to_numpy()
        # a stratum with one class is 0 by definition, not a finding about its items
        table[f"items > 0, {cond}"] = ["one class: 0" if z else (f"{v:.0%}" if pd.notna(v) else "")
                                       for v, z in zip(stats["positive"], fixed)]
    doc.table(table.rename(columns={"group": "stratum or class"}),
              f"Pointwise information per stratum at the main layer/pool, averaged over each condition's "
              f"checkpoints: each stratum's contribution to the term ({u}; a term's contributions add up to its "
              "estimate before clipping), the mean per item, and the share of items above 0.")
    items = data.pointwise_items
    if items is None or items.empty:
        return
    n_ck = pw["checkpoint"].nunique()
    listed = (items.groupby(["term", "end", "id", "group"], sort=False)
              .agg(listed_by=("checkpoint", "nunique"), value=("value", "mean")).reset_index())

    def most_listed(end: str, lowest_first: bool) -> pd.DataFrame:
        sub = listed[listed["end"] == end].sort_values(["listed_by", "value"], ascending=[False, lowest_first],
                                                       kind="stable")
        return sub.groupby("term", sort=False).head(3)

    top = pd.concat([most_listed("lowest", True), most_listed("highest", False)])
    order = {t: i for i, t in enumerate(dict.fromkeys(pw["term"]))}
    top = top.assign(_t=top["term"].map(order)).sort_values(["_t", "end"], ascending=[True, False], kind="stable")
    k = int(items["rank"].max()) + 1
    doc.table(pd.DataFrame({"term": top["term"], "end": top["end"], "item id": top["id"],
                            "stratum or class": top["group"],
                            f"checkpoints (of {n_ck})": top["listed_by"],
                            f"pointwise ({u})": top["value"]}),
              f"The items each term's critic reads worst (lowest) and best (highest): how many checkpoints place the "
              f"item among their {k} lowest or highest, and its mean pointwise information over those checkpoints.")


def _sources_section(doc: Doc, data) -> None:
    """Modality against the source data set, when the manifest names sources (issue 25)."""
    src = data.sources
    if src is None or src.empty:
        return
    u = data.unit
    mi_lvl = _pct(data.mi_level, "the MI results'")
    doc.heading("Modality and source data set")
    # one row per checkpoint and term; the conditional ones say how much each holds beyond the other
    doc.table(pd.DataFrame({"checkpoint": src["checkpoint"], "term": src["term"], f"Î ({u})": term_cells(src),
                            f"Î {mi_lvl} interval": _mi_intervals(src), f"cap H ({u})": src["h_upper"]}),
              "Modality against the data set each item came from (the manifest's source column), at each "
              "checkpoint's main layer/pool: I(Z;source|modality) is what Z holds about the source beyond "
              "modality (scanner, site, preprocessing), I(Z;modality|source) what it holds about modality "
              "beyond the source. Where every source holds one modality the latter is not identifiable: "
              "then I(Z;modality) cannot be told from the source's identity.")
    said = _source_sentences(src, u, data.terms[data.terms["main"]] if "main" in data.terms else data.terms)
    if said:
        doc.para(" ".join(said))


def _source_sentences(src: pd.DataFrame, u: str, main: pd.DataFrame | None = None) -> list[str]:
    """What Table "Modality and source" says that its rows do not: how much of modality's entropy the
    source fixes (a partial confound is as real as a full one), and how far apart its two chains
    put I(Z;modality,source) (each term a lower bound: the smaller sum is short by at least the gap).
    A README-only study had modality 80% from one source each and chains 1.14 against 1.46 nats."""
    out = []
    cap = src.groupby("term")["h_upper"].mean()
    h_m, h_m_s = cap.get("I(Z;modality)"), cap.get("I(Z;modality|source)")
    if h_m is not None and h_m_s is not None and h_m > 0:
        fixed = 1.0 - h_m_s / h_m
        if fixed >= 0.5:
            out.append(f"The source fixes {fixed:.0%} of modality's entropy (H(modality|source) = {h_m_s:.3f} of "
                       f"H(modality) = {h_m:.3f} {u}): most of what I(Z;modality) measures could be the source's "
                       "identity (scanner, site, preprocessing), and only I(Z;modality|source) is modality beyond "
                       "it.")
    wide = src.pivot_table(index="checkpoint", columns="term", values="estimate", aggfunc="first")
    need = ["I(Z;modality)", "I(Z;source|modality)", "I(Z;source)", "I(Z;modality|source)"]
    if all(t in wide for t in need):
        one = wide[need[0]] + wide[need[1]]
        two = wide[need[2]] + wide[need[3]]
        gap = (one - two).abs()
        if ck := _widest_gap(gap):
            out.append(f"The two chains estimate the same I(Z;modality,source) and differ by up to "
                       f"{float(gap.max()):.3f} {u} ({ck}: {float(one[ck]):.3f} through modality first, "
                       f"{float(two[ck]):.3f} through the source first): the same quantity estimated twice, so the "
                       "gap is estimation error in one chain or both"
                       + ("; each term here is a lower bound, so the smaller sum falls short by at least the gap."
                          if (src["bound"] == "lower").all() else "."))
    if main is not None and len(main) and "I(Z;modality)" in wide:
        # a README-only study read related-s0's I(Z;modality) 1.182 in the MI chain, 1.295 here, unsaid
        chain = main[main["term"] == "I(Z;modality)"].groupby("checkpoint")["estimate"].first()
        both = chain.index.intersection(wide.index)
        gap = (chain[both] - wide.loc[both, "I(Z;modality)"]).abs()
        if ck := _widest_gap(gap):
            out.append(f"I(Z;modality) is estimated in two chains, here and in the MI chain, and the two differ by "
                       f"up to {float(gap.max()):.3f} {u} ({ck}: {float(wide.loc[ck, 'I(Z;modality)']):.3f} here, "
                       f"{float(chain[ck]):.3f} there): each chain stratifies its folds by all its factors and gives "
                       "the critic its later factors as sub-classes, so one MI has an estimate per chain, each with "
                       "its own interval.")
    return out


def _widest_gap(gap: pd.Series, worth_saying: float = 0.05) -> str | None:
    """The checkpoint where two estimates of one MI (`gap`: their |difference| per checkpoint) differ
    most, where that is more than `worth_saying` (in the report's unit); else None."""
    if len(gap) and float(gap.max()) > worth_saying:
        return str(gap.idxmax())
    return None


def _fano_section(doc: Doc, data, fig_dir: Path, mi_lvl: str, err_lvl: str) -> None:
    """MI against accuracy, and Fano's inequality per (checkpoint, stratum)."""
    u = data.unit
    with_mi = data.strata.dropna(subset=["mi"])
    doc.heading("Information vs behaviour")
    if with_mi.empty:  # no figure to draw: say why instead of failing the whole report
        doc.para("No (checkpoint, stratum) cell has an estimate of I(Z;Y | stratum): the MI results hold no term "
                 "for the answer given modality, anatomy and task (their factors end before the answer, or "
                 "condition it on fewer factors while the others vary). `matprobe check STORE --mi FILE` "
                 "estimates it when the file has no term for the answer; `[mi] factors` ending in \"label\" "
                 "gives it in a run.")
    else:
        cap = figures.mi_vs_accuracy(with_mi, fig_dir / "mi_vs_accuracy.png")
        doc.figure("figures/mi_vs_accuracy.png", cap)

    doc.heading("Fano's inequality against observed errors")
    doc.para(f"Y is {y_words(data)}: the observed error ε is the checkpoint's, and H(Y|s) and Î(Z;Y|s) are of "
             "that variable within each (M, A, T) stratum.")
    if not with_mi.empty:
        cap = figures.fano_curve(with_mi, fig_dir / "fano.png")
        doc.figure("figures/fano.png", cap)
    st = data.strata

    def pair(a, b) -> list[str]:
        return ["" if pd.isna(x) else f"{x:.3f} / {y:.3f}" for x, y in zip(a, b)]

    def needed(a, b) -> list[str]:
        # H(Y|s) - φ(ε) below 0 demands nothing (I >= 0 holds anyway): "0", not a negative amount
        return ["" if pd.isna(x) else f"{max(x, 0.0):.3f} / {max(y, 0.0):.3f}" for x, y in zip(a, b)]

    doc.table(pd.DataFrame({
        "checkpoint": st["checkpoint"], "stratum": st["stratum"], "n": st["n"], f"H(Y|s) ({u})": st["h_y"],
        "ε": st["error"], f"ε {err_lvl} CI": [_ci(lo, hi) for lo, hi in zip(st["err_low"], st["err_high"])],
        f"Î(Z;Y|s) ({u})": st["mi"],
        f"Î {mi_lvl} interval": ["" if pd.isna(lo) else _interval_cell(lo, hi, b)
                                 for lo, hi, b in zip(st["mi_low"], st["mi_high"], st["mi_bound"])],
        "ε floor at Î / at upper": pair(st["error_floor"], st["error_floor_lenient"]),
        "ε respects floor": st["error_respects_floor"],
        f"I needed at ε / at upper ({u})": needed(st["fano_mi_lower"], st["fano_mi_lower_finite"]),
        "Î meets it": st["mi_meets_bound"]}),
        "Fano's inequality per (checkpoint, stratum): the observed error against the floor Î implies, and Î "
        "against the information the observed error demands, each with its interval. Per-stratum statements "
        "hold each at its own level, not simultaneously.")



def _pac_section(doc: Doc, data, fig_dir: Path, err_lvl: str) -> None:
    """PAC bounds beside each checkpoint's held-out error."""
    doc.heading("PAC bounds against observed error")
    cap = figures.pac_bounds(data.pac, fig_dir / "pac.png")
    doc.figure("figures/pac.png", cap)
    pac = data.pac
    doc.table(pd.DataFrame({
        "checkpoint": pac["checkpoint"], "bound": pac["bound"], "bound on risk": pac["value"],
        "vacuous": pac["vacuous"], "held-out error": pac["error"],
        f"held-out error {err_lvl} CI": [_ci(lo, hi) for lo, hi in zip(pac["err_low"], pac["err_high"])],
        "held-out n": pac["m"], "held-out rows": pac["heldout_rows"]}),
        "PAC bounds on each checkpoint's true error rate beside its observed held-out error.")
    if said := _pac_inputs_sentence(data.pac_inputs or {}):
        doc.para(said)


def _pac_inputs_sentence(inputs: dict) -> str:
    """What the training-set bounds were given: parameter count, bits per parameter, ln|H| and R̂ with
    the rows it is measured on, beside CrossMed's Theorem 1 (an audit read ln|H| = 5.966e6 nats as
    doubled: 268,992 parameters at the 32 bits the checkpoint stores, where `check` defaults to 16)."""
    given = {k: v for k, v in inputs.items() if v}
    if not given:
        return ""
    recorded = {k: v for k, v in given.items() if "params" in v}
    if not recorded:
        notes = sorted({str(v.get("note", "")) for v in given.values()})
        return ("The training-set bounds' inputs are not recorded in these check files (written before they were): "
                f"their notes say {'; '.join(notes)} (ln|H| = parameters × bits per parameter × ln 2); rerun the "
                "check to have the parameter count, bits per parameter and the empirical risk R̂ said here.")
    sizes = {(v["params"], v["bits_per_param"], v["ln_h"], v.get("params_source", ""), v.get("bits_source", ""))
             for v in recorded.values()}

    def size(params, bits, ln_h, p_src, b_src):
        return (f"{params:,.0f} parameters" + (f" ({p_src})" if p_src else "") + f" at {bits:g} bits per parameter"
                + (f" ({b_src})" if b_src else "") + f", ln|H| = {ln_h:.4g} nats")

    if len(sizes) == 1:
        head = "The training-set bounds take ln|H| = parameters × bits × ln 2 with " + size(*sizes.pop())
    else:
        head = ("The training-set bounds take ln|H| = parameters × bits × ln 2 with, per checkpoint, "
                + "; ".join(f"{k}: " + size(v["params"], v["bits_per_param"], v["ln_h"], v.get("params_source", ""),
                                           v.get("bits_source", "")) for k, v in recorded.items()))
    rows = sorted({str(v.get("rows", "")) for v in recorded.values()})
    risks = "; ".join(f"{k} {v['emp_risk']:.3f} (n = {v['n_train']})" for k, v in recorded.items())
    return (f"{head}. The empirical risk R̂ is each checkpoint's error on {' / '.join(rows)}: {risks}. CrossMed's "
            "Theorem 1 (eq. 2–3) measures R̂_MA on the n Related training samples that share (M, A) with the test "
            "instance and does not say how |H| is counted; here R̂ is over all of a checkpoint's training rows, "
            "and |H| counts the bit patterns its stored weights can take.")



def _significance_section(doc: Doc, data) -> None:
    """CrossMed's Table IX layout and every comparison in full."""
    doc.heading("Significance")
    if data.significance is not None:
        from matprobe.present.significance import detail_table, table_ix

        sig = data.significance
        units = list(dict.fromkeys(map(str, sig["unit"]))) if "unit" in sig else ["seed"]
        if len(units) == 1:
            pairs = f"Pairs: {units[0]}s."
        else:  # per metric, as `matprobe significance` pairs them: say which metric has which
            by = {u: [m for m, v in zip(sig["metric"], sig["unit"]) if str(v) == u] for u in units}
            pairs = "Pairs: " + "; ".join(
                f"{'targets, each the mean of its seeds' if u == 'target' else u + 's'} for "
                f"{', '.join(dict.fromkeys(by[u]))}" for u in units) + "."
        doc.table(table_ix(sig).reset_index(),
                  f"p-values of the paired t-test (two-sided, unadjusted; '< 0.001' below 0.001), one row per "
                  f"comparison and one column per metric, in CrossMed's Table IX layout. {pairs}")
        doc.table(detail_table(sig),
                  "Every comparison in full: the mean paired difference with its 95% interval, effect sizes, "
                  "and the p-values of the t-test, the Wilcoxon signed-rank test and the exact sign-flip test, "
                  "with Holm and Benjamini–Hochberg adjustments over the rows.")
        doc.para("With few pairs, exact tests cannot reach small p (at best 2^(1−n) with n pairs).")
        left_out = {c: _left_out({"warning": "" if pd.isna(w) else str(w)})
                    for c, w in zip(sig["comparison"], sig.get("warning", pd.Series([""] * len(sig))))}
        for comparison, clause in left_out.items():
            if clause:  # a condition trained on fewer seeds (or targets): the pairs are the runs both have
                doc.para(f"{comparison}: {clause}.")
        if said := _capped_metrics_sentence(data, sig):
            doc.para(said)
        n_targets = data.results["target"].nunique() if "target" in data.results else 0
        nested = sig.get("warning", pd.Series([""] * len(sig))).fillna("").astype(str).str.contains(
            "seeds nested in targets")  # a metric on several targets paired by seed (`--unit seed`, older runs)
        if n_targets >= 2 and bool(nested.any()):
            # what significance.csv's warning column says, where a reader of the tables sees it
            doc.para(f"The pairs are (target, seed): the seeds of one held-out target share it, so these tests "
                     f"treat seeds nested in {n_targets} targets as independent pairs. The target-level tests: "
                     "`matprobe significance results.csv` (its default with two or more targets: one pair per "
                     "target, seeds averaged) or `--mixed` (a random intercept per target).")
    else:
        doc.para("Not computed: the run needs Related and another condition with at least two (target, seed) runs "
                 "under both (the design warnings say which comparison lacked them).")



def _capped_metrics_sentence(data, sig: pd.DataFrame) -> str:
    """The MI metrics of the table whose compared conditions both sit at their entropy cap (their mean
    estimate within 10% of the mean cap, `near_saturation`): there the estimates are one-sided and a p
    compares lower bounds pressed against the cap, not the checkpoints (`compare` gives no p; a study's
    report showed p = 0.046 on such a term, uncaveated). Only where both sit at the cap itself (to
    0.05%) does a p compare the caps' rounding (an audit's report said so of values at 92-94%)."""
    main = data.terms[data.terms["main"]] if "main" in data.terms else data.terms
    if main.empty:
        return ""
    capped: dict[str, str] = {}
    for r in sig.itertuples():
        term = str(r.metric).removesuffix(" nats").removesuffix(" bits")
        rows = main[main["term"] == term]
        if rows.empty or r.metric in capped:
            continue
        sides = [rows[rows["condition"] == c] for c in (r.a, r.b)]
        if not all(len(x) and near_saturation(float(x["estimate"].mean()), float(x["h_upper"].mean())) for x in sides):
            continue
        shares = [float(x["estimate"].mean()) / float(x["h_upper"].mean()) for x in sides]
        where = f"{r.a} at {shares[0]:.1%}, {r.b} at {shares[1]:.1%} of it, means over their checkpoints"
        if min(shares) >= 0.9995:  # the cap itself, to rounding
            capped[str(r.metric)] = (f"{r.metric}: both conditions' estimates sit at the term's entropy cap ({where}), "
                                     "where Z determines the factor in every checkpoint; a p there compares the caps' "
                                     "rounding, not the checkpoints")
        else:
            capped[str(r.metric)] = (f"{r.metric}: both conditions' estimates sit within 10% of the term's entropy cap "
                                     f"({where}); an estimate that reaches 90% of its cap is one-sided (flag "
                                     "near-saturated: only its lower end is a statement) and at most "
                                     f"{1 - min(shares):.1%} of the cap is left to differ in, so a p compares lower "
                                     "bounds pressed against the cap, not how much the checkpoints' Z carries")
    if not capped:
        return ""
    return "; ".join(capped.values()) + " (`matprobe compare` gives no p for such a term)."


# results.csv's interval columns (`pipeline.RESULTS_COLUMNS`), which a run written before them lacks
RESULTS_INTERVAL = ("ci_low", "ci_high", "ci_level", "bound", "n")


def _results_shown(results: pd.DataFrame) -> pd.DataFrame:
    """results.csv's rows as the per-run table shows them: its interval columns, where the run wrote
    them, as one interval cell (`_interval_cell`: "≥ x (one-sided)" where bound is lower), its level
    and n; a results.csv without them as it is."""
    if not {"ci_low", "ci_high"} <= set(results.columns):
        return results
    shown = results.drop(columns=[c for c in RESULTS_INTERVAL if c in results])
    bounds = results["bound"] if "bound" in results else pd.Series("", index=results.index)
    shown["value interval"] = ["" if pd.isna(lo) or (pd.isna(hi) and b != "lower") else _interval_cell(lo, hi, b)
                               for lo, hi, b in zip(results["ci_low"], results["ci_high"], bounds)]
    if "ci_level" in results:
        shown["interval level"] = ["" if pd.isna(v) else f"{float(v):.0%}" for v in results["ci_level"]]
    if "n" in results:
        shown["n"] = ["" if pd.isna(v) else str(int(v)) for v in results["n"]]
    return shown


def _results_section(doc: Doc, data) -> None:
    """The tidy per-run results (item-level rows stay in results.csv), each value with its interval
    where the run wrote one (`_results_shown`)."""
    doc.heading("Per-run results")
    caption = "The tidy per-run results (results.csv) the comparisons were computed from."
    if "item" in data.results and data.results["item"].notna().any():
        n_items = int(data.results["item"].notna().sum())
        doc.para(f"Run-level rows; the {n_items} item-level rows (intersection / union per segmentation item) "
                 "are in results.csv.")
        doc.table(_results_shown(data.results[data.results["item"].isna()].drop(columns=["item"])), caption)
    else:
        doc.table(_results_shown(data.results), caption)



def _provenance_section(doc: Doc, data) -> None:
    """Source commit, package versions, numerics, step times and configuration."""
    doc.heading("Provenance")
    env = data.summary.environment
    if env:
        src = env.get("source") or {}
        commit = src.get("commit")
        doc.para("matprobe source: " + (f"git commit `{commit}`" + (" with modified files" if src.get("modified")
                                                                      else "")
                                        if commit else "not a git checkout (commit unknown)") + ".")
        versions = env.get("versions") or {}
        doc.table(pd.DataFrame({"package": list(versions), "version": [v or "not installed" for v in
                                                                         versions.values()]}),
                  "Software the run was made with. "
                  + ("The demo's numbers" if data.summary.config.get("demo_data") is not False else "Its numbers")
                  + " are reproducible for these versions (pinned in constraints.txt), not across them.")
        if (env.get("numerics") or {}).get("portable"):
            doc.para("Numerics: portable (the kernels every x86-64 CPU has, one thread; docs/design.md §6): "
                     "on the CPU model this ran on, these versions give the same numbers whatever kernels it "
                     "could dispatch; another CPU model can give other digits (measured: AMD against Intel).")
    else:
        doc.para("Software versions and commit: not recorded (the run predates run.json format 2).")
    if said := _prompt_sentence(data.summary):
        doc.para(said)
    # the report's own rendering is left out: the pipeline records it only after writing the
    # report, so including it would make a re-report differ from the original
    secs = {k: v for k, v in data.summary.seconds.items() if k != "report"}
    runs, spent = data.summary.runs, data.summary.seconds_all_runs
    if secs and runs > 1 and spent:
        doc.table(pd.DataFrame({"step": list(secs), "this run (s)": [f"{float(v):.1f}" for v in secs.values()],
                                f"all {runs} runs (s)": [f"{float(spent.get(k, v)):.1f}" for k, v in secs.items()]}),
                  f"Wall time per pipeline step (the report's own rendering not included), of this run and of all "
                  f"{runs} runs in this run directory: a rerun takes finished stores and MI files as they are, so "
                  "its own times are what checking them cost, not what the study cost.")
    elif secs:
        doc.table(pd.DataFrame({"step": list(secs), "seconds": [f"{float(v):.1f}" for v in secs.values()]}),
                  "Wall time per pipeline step (the report's own rendering not included).")
    # only the settings the run used: given checkpoints fine-tune nothing, a manifest builds no demo data
    unused, why = unused_settings(data.summary)
    cfg = [(k, v) for k, v in _flatten("", data.summary.config) if k != "out" and k.split(".")[0] not in unused]
    doc.table(pd.DataFrame(cfg, columns=["setting", "configured value"]), "The run's configuration.")
    if why:
        doc.para(why)



def _prompt_sentence(summary) -> str:
    """Which prompt template the items were put to each checkpoint in (run.json's `prompt`, from the
    stores' provenance): a study's LLaVA-Med report never said its prompt was mistral_instruct."""
    by_name: dict[str, list[str]] = {}
    for ck in summary.checkpoints:
        rec = (getattr(ck, "extra", None) or {}).get("prompt")
        if rec and rec.get("name"):
            by_name.setdefault(str(rec["name"]), []).append(ck.name)
    if not by_name:
        return ""

    def what(name: str) -> str:
        return ("matprobe's multiple-choice prompt (the question, its option lines 'A: text' and \"Answer with the "
                "option's letter from the given choices directly.\") in each checkpoint's own chat template"
                if name == "medmat-mcq-v1" else f"LLaVA's conversation template {name}")

    if len(by_name) == 1:
        name = next(iter(by_name))
        return f"Prompt: {what(name)} (`{name}`), for every checkpoint."
    return "Prompts: " + "; ".join(f"{what(n)} (`{n}`) for {', '.join(names)}" for n, names in by_name.items()) + "."


def _glossary_section(doc: Doc, data) -> None:
    """Every column of the tables above, explained."""
    doc.heading("Glossary")
    words = glossary(data)
    # a column nobody explained still gets a line (a report never fails for its glossary);
    # tests/test_study_grid.py checks that the columns matprobe writes all have their own entry
    doc.table(pd.DataFrame({"column": doc.columns, "meaning": [words.get(c, UNEXPLAINED) for c in doc.columns]}),
              "Every column of the tables above.")
