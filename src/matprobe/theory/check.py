"""`matprobe check`: Fano and PAC theory held against a model's observed answers and MI.

Reading (what is compared with what):

- Y is what the model answers: the index of the correct option (`answer_index`), or the
  store's `label` column when the MI results were computed with target ``label``. The
  model's answer is right or wrong per item (``answers/correct``, else pred == answer),
  so its error ε on Y is observed. Rows without a stored answer are left out.
- Per (M, A, T) stratum s: n_s, ε_s with its Clopper-Pearson interval, the plug-in
  H(Y | s) of the store's sample (`matprobe.data.entropy`; the same reference law the
  MI estimators clip against), and Î(Z;Y | s) from the MI results' ``strata`` entry
  with target label/answer and given {modality, anatomy, task}.
- K: Fano needs Ŷ and Y in one alphabet of K symbols. Mapping the model's answers that
  fall outside the K_s labels present in the stratum onto them cannot add errors, so
  K_s = max(2, |support of Y in s|) is valid and tighter than the number of options.
  (φ is then evaluated at min(ε, 1 - 1/K_s), where it is largest.) A stratum of
  segmentation items (options are candidate masks, CrossMed §III) is the K-way choice it
  is: K_s = its number of candidate masks (4 in CrossMed), the alphabet the model answers in.
- Error floor: Fano gives ε_s >= φ⁻¹(H(Y|s) - Î) (fano.fano_min_error). "yes" if the
  observed ε̂ respects it; "within CI" if only the Clopper-Pearson upper limit does
  against the floor at Î's ci_high; "NO" otherwise.
- MI floor: I(X;Y|s) >= H(Y|s) - φ(ε_s). "yes" if Î >= the point bound; "within CI" if
  Î's ci_high reaches the finite-sample bound (ε replaced by its one-sided upper limit at
  δ); "NO" otherwise. Fano bounds the information in whatever the answer is computed
  from; it transfers to Z only if the answer is a function of Z (e.g. Z is the full
  last hidden state). A "NO" then says the MI estimate is too low (or Z is not
  sufficient), not that the theory fails.
- Per-stratum statements each hold at level 1 - δ; they are not simultaneous.
- Aggregate (CrossMed eq. 8 with the correct conditioning): I(Z;Y|M,A) >= H(Y|M,A) -
  φ(ε), I(Z;Y|M,A,T) >= H(Y|M,A,T) - φ(ε) and the tighter stratum average
  Σ p_s max(0, H(Y|s) - φ(ε_s)); the paper's H(Y) - h(ε) - ε ln K is audited
  (`fano.audit_paper_fano`); an MI ``terms`` entry with the matching target and given
  is compared with them. When the MI results hold only the conditional term and no
  strata, per-stratum MI is left empty and the comparison happens here.
- PAC: the observed held-out error (split ``test`` when the store has one, else every
  answered row) with the test-set bound (binomial tail inversion); given the training
  risk, n and model size, the training-set bounds are listed beside it, flagged
  vacuous, and "contradicted" if below the held-out error's lower CP limit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from matprobe.checks import check_level
from matprobe.data.design import constant_factors, stratum_key
from matprobe.data.entropy import conditional_entropy, entropy
from matprobe.data.model import resolve_factor
from matprobe.defaults import DEFAULTS
from matprobe.errors import BoundsError, StoreError
from matprobe.mi.interface import NEAR_SATURATION, near_saturation, stratum_entry_one_sided
from matprobe.mi.merge import class_rows
from matprobe.theory import fano, pac
from matprobe.units import to_nats

MAT = ("modality", "anatomy", "task")
_ANSWER_TARGETS = ("answer", "answer_index")
_TARGETS = (*_ANSWER_TARGETS, "label")
_HELDOUT_SPLITS = ("test",)


def load_mi_results(path: str | Path, fingerprint: str | None = None) -> dict:
    """Read an MI results JSON and refuse one made on a different store."""
    path = Path(path)
    try:
        res = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(
            f"{path}: MI results file not found; write one with `matprobe mi --out`"
        ) from None
    except json.JSONDecodeError as exc:
        raise StoreError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); rerun `matprobe mi --out`"
        ) from None
    if not isinstance(res, dict) or res.get("kind") != "matprobe.mi":
        raise StoreError(f"{path}: not a matprobe MI results file (kind != 'matprobe.mi')")
    if fingerprint is not None and res.get("store_fingerprint") != fingerprint:
        got = str(res.get("store_fingerprint"))[:12]
        raise StoreError(
            f"{path}: MI results were computed on other store content (content id {got}…, "
            f"store {res.get('store')!r}) than the one checked ({fingerprint[:12]}…); "
            "rerun `matprobe mi --out` on this store to recompute"
        )
    return res


def _norm_target(t: str) -> str:
    t = resolve_factor(str(t))
    return "answer" if t in _ANSWER_TARGETS else t


def _mi_value(entry: dict, unit: str, h: float | None = None) -> dict:
    """An MI file's per-stratum entry in nats, with `bound` "lower" where only its lower end is a
    statement: the term it belongs to is one-sided (its note says "lower bound"), or the estimate
    sits at NEAR_SATURATION of the stratum's H(Y|s) `h` or more (the rule that makes a term
    one-sided, `mi.base`): with 20 rows a stratum's estimate clipped at its entropy had an
    "interval" [H, log K] that read as two-sided (a README-only user study, issue 22)."""
    out = {}
    for k in ("estimate", "ci_low", "ci_high"):
        v = entry.get(k)
        out[k] = None if v is None else to_nats(float(v), unit)
    out["ci_level"] = entry.get("ci_level")
    out["estimator"] = entry.get("estimator")
    note = str(entry.get("note") or "")
    saturated = near_saturation(out["estimate"], h)
    # the entry's own bound first: a near-saturated term's note need not say "lower bound"
    one_sided = stratum_entry_one_sided(note, entry.get("bound"))
    if one_sided or saturated:
        out["bound"] = "lower"
        out["note"] = "; ".join(part for part in (
            "the term is one-sided" if one_sided else "",
            f"near-saturated: at {NEAR_SATURATION:.0%} of H(Y|s) or more" if saturated else "") if part)
    return out


def _fano_phi(eps: float, k: int) -> float:
    return float(fano.fano_entropy_upper(min(eps, 1.0 - 1.0 / k), k))


def _at_least(value: float, bound: float) -> bool:
    """value >= bound up to float rounding: an error and a floor equal in exact arithmetic (12/18 and the
    floor of a 6/6/6 stratum, 2/3) can come out an ulp apart, and the error is then at the floor."""
    return value >= bound - 1e-12


def _status(point_ok: bool, ci_ok: bool) -> str:
    return "yes" if point_ok else ("within CI" if ci_ok else "NO")


def _answered(store) -> tuple[Any, np.ndarray]:
    frame = store.samples()
    correct = np.asarray(store.answers()["correct"]).astype(np.int64)  # stored, else pred == answer
    keep = (correct >= 0) & np.asarray(store.done, dtype=bool)
    for f in MAT:
        if f not in frame:
            raise StoreError(
                f"{store.path}: no {f} column; check needs modality, anatomy and task labels"
            )
        keep &= frame[f].notna().to_numpy()
    if not keep.any():
        raise StoreError(
            f"{store.path}: no rows with a stored answer (answers/pred or answers/correct); "
            "extract with answers before running check"
        )
    frame = frame.loc[keep].reset_index(drop=True)
    frame["_correct"] = correct[keep].astype(int)
    return frame, keep


def run_check(
    store_path: str | Path,
    mi_path: str | Path | dict | None = None,
    *,
    delta: float = DEFAULTS.delta,
    level: float = DEFAULTS.level,
    target: str | None = None,
    emp_risk: float | None = None,
    n_train: int | None = None,
    params: float | None = None,
    bits_per_param: float = 16.0,
    estimate_missing: bool = True,
    progress: bool = False,
    bits: float | None = None,
    heldout_target: tuple[str, str, str] | None = None,
    training: dict | None = None,
) -> "CheckResult":
    """Compute the check; returns a `CheckResult` (JSON via `.to_dict()`, kind "matprobe.check").

    All information is in nats. When the MI results hold no term for Y (e.g. they came from
    `mi --factors M,A,T`), I(Z;Y|M,A,T) per stratum is estimated here on the MI results'
    layer and pool with their settings (`estimate_missing=False` skips it and says how to
    get it). `bits` is the old name of `bits_per_param`. `heldout_target`: the (M, A, T) triplet
    the checkpoint was not trained on; where the store marks no split = test rows, the PAC
    section's held-out error is on its rows (without it: on every answered row, and said so).
    With the training-set PAC inputs, the pac section's "training" records them (params, bits per
    parameter, ln|H|, R̂, n) and `training`'s keys beside them ("rows": which rows R̂ is measured on,
    "bits_source": where the bits per parameter come from; defaults: as given).

    Stages: read the store and MI results (`_read_inputs`), pick Y (`_choose_target`), find or
    estimate its MI (`_target_mi`), then per stratum Fano against the error (`_stratum_rows`),
    the aggregate (`_aggregate`), and PAC against the held-out error (`_heldout_pac`).
    """
    if bits is not None:
        bits_per_param = bits
    delta = pac.check_delta(delta, "--delta")
    level = check_level(level, "--level", BoundsError)
    fingerprint, mi, mi_path, frame = _read_inputs(store_path, mi_path)
    mi_unit = (mi or {}).get("unit", "nats")
    constant = constant_factors(frame, MAT)  # a study of one task: its chain is given M, A only
    strata_mi, terms = _mi_entries(mi, constant)
    target, target_source, frame, y = _choose_target(target, strata_mi, terms, frame, store_path)
    stratum_mi, estimated, mi_unit = _target_mi(store_path, mi, target, strata_mi.get(target, {}), terms,
                                                mi_unit, estimate_missing, progress, constant)
    merged = _merged_target(mi, target)
    y_fano, withheld, y_own = _fano_target(y, merged)
    rows, per_stratum = _stratum_rows(frame, y_fano, stratum_mi, bool(terms), mi, mi_unit, delta, level, withheld,
                                      constant, y_unmerged=y_own)
    aggregate = _aggregate(frame, y_fano, per_stratum, terms, target, mi_unit, delta, level, withheld,
                           y_unmerged=y_own)
    doc = {
        "kind": "matprobe.check",
        "format_version": 1,
        "store": str(store_path),
        "store_fingerprint": fingerprint,
        "mi": None if mi_path is None else str(mi_path),
        "unit": "nats",
        "target": target,
        "target_source": target_source,
        "delta": delta,
        "level": level,
        "strata": rows,
        "aggregate": aggregate,
        "pac": _heldout_pac(frame, delta, level, emp_risk, n_train, params, bits_per_param, heldout_target,
                            training),
    }
    if estimated is not None:
        doc["estimated_here"] = {k: v for k, v in estimated.items() if k != "strata"}
    if merged:
        # "fano": which label Fano's columns are of ("merged": as the MI saw it; "unmerged": the
        # merge's class names did not match Y's, so Y's own, with no floor); "class_rows": the check's
        # rows in each merged class, to say which were under the minimum (`merge_words`)
        doc["merged_target"] = {**merged, "fano": "unmerged" if y_own is None else "merged",
                                "class_rows": class_rows(y, merged.get("classes") or [])}
    return CheckResult.from_dict(doc)


def _merged_target(mi, target: str) -> dict | None:
    """The MI results' merge of Y's rare classes (`chain_terms(rare_classes="merge")`), or None.
    Their Î is then of a function of Y, at most I(Z;Y|s): a lower bound on it, never an upper one,
    so it can show that the MI reaches Fano's bound but gives no error floor."""
    from matprobe.data.model import resolve_factor

    for name, record in ((mi or {}).get("merged_classes") or {}).items():
        if resolve_factor(name) == resolve_factor(target):
            return record
    return None


def _fano_target(y, merged: dict | None):
    """(the Y Fano's columns are of, the merge whose verdicts are withheld or None, Y itself where
    the first is merged or None). Fano's quantities are of Y as the MI saw it: Î of Y with rare
    classes merged is held against H, K and the bound of that merged label (a row read H(Y|s) =
    1.227 of 4 classes beside an interval capped at ln 3, the merged label's). The observed error,
    on Y itself, is at least the error on the merged label (a right answer is right on it too) and
    φ̄ does not fall as ε grows, so the bound and the floor hold for it. Where the merge's names are
    not Y's, Y's own columns with floors and 'NO' withheld (`_merged_verdicts`)."""
    y_merged = merged_y(y, merged)
    if y_merged is None:
        return y, merged, None
    return y_merged, None, y


def merged_y(y, record: dict | None) -> np.ndarray | None:
    """Y as the MI results saw it: the record's classes (`_merged_target`) one class, the others as
    they were, as integer codes (the partition is what the entropies need). None without a record, or
    where none of its classes is among Y's values (its names do not match Y's: nothing to merge by)."""
    if not record:
        return None
    names = np.asarray(y).astype(str)
    hit = np.isin(names, [str(c) for c in record.get("classes") or []])
    if not hit.any():
        return None
    codes = np.unique(names, return_inverse=True)[1].reshape(-1)
    return np.where(hit, -1, codes)


def _merged_verdicts(row: dict) -> None:
    """A row whose Î is of Y with rare classes merged, held against Y's own H and K (the merged
    classes' names did not match Y's): no error floor, and no 'NO' (the MI of Y itself may be
    larger); a 'yes' or 'within CI' still holds, since I(Z;Y|s) >= Î's."""
    row["error_floor"] = row["error_floor_lenient"] = row["error_respects_floor"] = None
    if row.get("mi_meets_bound") == "NO":
        row["mi_meets_bound"] = None


def _read_inputs(store_path, mi_path):
    """(store content id, MI results or None, their path or label, answered rows of the store)."""
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(store_path) as store:
        # a half-extracted store's answers are a part of the items, chosen by where extraction stopped
        store.require_complete("checking it")
        fingerprint = store.content_id  # MI files record the content id they were computed on
        if isinstance(mi_path, dict):  # an MI results document already in memory
            mi = mi_path
            if mi.get("store_fingerprint") not in (None, "", fingerprint):
                raise StoreError(f"the MI results were computed on a different store ({mi.get('store')!r}) "
                                 f"than the one checked ({store_path}); rerun mi on this store")
            mi_path = mi.get("source") or "(in memory)"
        else:
            mi = load_mi_results(mi_path, fingerprint) if mi_path is not None else None
        frame, _ = _answered(store)
    return fingerprint, mi, mi_path, frame


def _mi_entries(mi, constant=frozenset()):
    """({target: {given key: per-stratum entry given M, A, T}}, terms whose target is Y). An entry
    given all of M, A, T but the `constant` factors is one of those strata too (keys without them)."""
    strata_mi: dict[str, dict] = {}
    terms: list[dict] = []
    if mi is None:
        return strata_mi, terms
    for e in mi.get("strata", []) or []:
        given = e.get("given")
        if (
            _norm_target(e.get("target", "")) in ("answer", "label")
            and isinstance(given, dict)
            and {resolve_factor(k) for k in given} <= set(MAT)
            and {resolve_factor(k) for k in given} | constant == set(MAT)
        ):
            strata_mi.setdefault(_norm_target(e["target"]), {})[stratum_key(given, constant)] = e
    terms = [t for t in mi.get("terms", []) or [] if _norm_target(t.get("target", "")) in ("answer", "label")]
    return strata_mi, terms


def _choose_target(target, strata_mi, terms, frame, store_path):
    """Which Y: explicit, else the target the MI results carry, else the answer index.
    Returns (target, where it came from, the rows that have it, Y)."""
    found = set(strata_mi) | {_norm_target(t["target"]) for t in terms}
    if target is not None:
        target_source = "from --target"
    elif found == {"label"}:
        target, target_source = "label", "from the MI results"
    elif found:
        target, target_source = "answer", "from the MI results"
    elif "answer_index" in frame and (frame["answer_index"] >= 0).any():
        target, target_source = "answer", "the default"
    else:
        target, target_source = "label", "the default, as no answer index is stored"
    target = _norm_target(target)
    if target == "answer":
        if "answer_index" not in frame or (frame["answer_index"] < 0).all():
            raise StoreError(f"{store_path}: no answer_index stored; use --target label or store answers")
        frame = frame[frame["answer_index"] >= 0].reset_index(drop=True)
        return target, target_source, frame, frame["answer_index"].to_numpy()
    if target == "label":
        if "label" not in frame:
            raise StoreError(f"{store_path}: no label column for --target label")
        frame = frame[frame["label"].notna()].reset_index(drop=True)
        return target, target_source, frame, frame["label"].to_numpy()
    raise BoundsError(f"target {target!r} is unknown; use 'answer' or 'label'")


def _target_mi(store_path, mi, target, stratum_mi, terms, mi_unit, estimate_missing, progress,
               constant=frozenset()):
    """The per-stratum MI of Y: from the file, else estimated here (or the command that would).
    Returns (per-stratum entries, what was estimated here or None, the unit of the entries);
    appends an estimated term to `terms`."""
    if mi is None or stratum_mi or [t for t in terms if _norm_target(t["target"]) == target]:
        return stratum_mi, None, mi_unit
    if not estimate_missing:
        return stratum_mi, {"command": target_term_command(store_path, mi, target), "strata": []}, mi_unit
    estimated = estimate_target_term(store_path, mi, target, progress=progress)
    terms.append({"term": estimated["term"], "target": target, "given": list(MAT),
                  "estimator": estimated["settings"]["estimator"], "estimate": estimated["estimate"],
                  "ci_low": estimated["ci_low"], "ci_high": estimated["ci_high"],
                  "ci_level": estimated["settings"]["level"]})
    # estimated here in nats (the file holds no term for Y to mix with)
    return {stratum_key(e["given"], constant): e for e in estimated["strata"]}, estimated, "nats"


def _stratum_rows(frame, y, stratum_mi, have_terms, mi, mi_unit, delta, level, merged=None,
                  constant=frozenset(), y_unmerged=None):
    """One row per (M, A, T) stratum: error with its interval, Fano's MI lower bound, and the
    stratum's MI against it. Returns (rows, [(weight, H(Y|stratum), error, classes)]).
    `y_unmerged`: Y itself where `y` is Y with the MI's rare classes merged (each row then
    records Y's own entropy and classes too, as h_y_unmerged and classes_unmerged); `merged`: the
    MI's merge where `y` is Y itself (no floor, no 'NO': `_merged_verdicts`)."""
    n_total = len(frame)
    is_segmentation = (frame["option_masks"].notna().to_numpy() if "option_masks" in frame
                       else np.zeros(n_total, dtype=bool))
    correct = frame["_correct"].to_numpy()
    rows, per_stratum = [], []
    for key, idx in frame.groupby(list(MAT), sort=True).indices.items():
        ys = y[idx]
        n = len(idx)
        errors = int(n - correct[idx].sum())
        eps = errors / n
        lo, hi = pac.clopper_pearson(errors, n, level)
        eps_up = pac.test_set_bound(errors, n, delta)
        k = max(2, len(np.unique(ys)))
        basis = "Y's classes in the stratum"
        offered = None
        if "n_options" in frame:  # the options the items offered, where the store records them
            most = np.nanmax(np.asarray(frame["n_options"].iloc[idx], dtype=float), initial=-1.0)
            offered = int(most) if most > 0 else None
        segmentation = bool(is_segmentation[idx].all())
        if segmentation:  # the choice among the candidate masks
            k = max(2, int(frame["n_options"].to_numpy()[idx].max()))
            basis = "the candidate masks offered"
        elif offered and offered > k:
            # answers outside Y's K_s classes mapped onto them cannot add errors, so K_s holds (module doc)
            basis = f"Y's classes in the stratum (fewer than the {offered} options offered; valid, see the module doc)"
        if y_unmerged is not None and not segmentation:
            basis = basis.replace("Y's classes", "Y's classes, the MI's merged rare classes as one,", 1)
        h = entropy(ys)
        bound_point = h - _fano_phi(eps, k)
        bound_finite = h - _fano_phi(eps_up, k)
        given = dict(zip(MAT, map(str, key)))
        row: dict[str, Any] = {
            "given": given, "n": n, "errors": errors, "error": eps, "error_ci": [lo, hi],
            "error_upper": eps_up, "classes": k, "classes_basis": basis, "options": offered,
            "item_kind": "segmentation" if segmentation else "choice",
            "h_y": h, "fano_mi_lower": bound_point, "fano_mi_lower_finite": bound_finite,
            "mi": None, "mi_source": None, "error_floor": None, "error_floor_lenient": None,
            "error_respects_floor": None, "mi_meets_bound": None,
        }
        if y_unmerged is not None:  # Y itself beside Y as the MI saw it (the row's Fano columns)
            own = y_unmerged[idx]
            row["h_y_unmerged"] = entropy(own)
            row["classes_unmerged"] = k if segmentation else max(2, len(np.unique(own)))
        entry = stratum_mi.get(stratum_key(given, constant))
        if entry is not None and entry.get("estimate") is not None:
            v = _mi_value(entry, mi_unit, h)
            if v["ci_level"] is None:  # per-stratum entries of an MI file share its level
                v["ci_level"] = (mi or {}).get("ci_level") or ((mi or {}).get("settings") or {}).get("level")
            row["mi"], row["mi_source"] = v, "stratum"
            est = v["estimate"]
            ci_hi = v["ci_high"] if v["ci_high"] is not None else est
            floor = fano.fano_min_error(min(max(h - est, 0.0), math.log(k)), k)
            floor_len = fano.fano_min_error(min(max(h - ci_hi, 0.0), math.log(k)), k)
            row["error_floor"], row["error_floor_lenient"] = floor, floor_len
            row["error_respects_floor"] = _status(_at_least(eps, floor), _at_least(hi, floor_len))
            row["mi_meets_bound"] = _status(_at_least(est, bound_point), _at_least(ci_hi, bound_finite))
            if merged:
                _merged_verdicts(row)
        elif have_terms:
            row["mi_source"] = "term only (average over strata; compared in aggregate)"
        rows.append(row)
        per_stratum.append((n / n_total, h, eps, k))
    return rows, per_stratum


def _aggregate(frame, y, per_stratum, terms, target, mi_unit, delta, level, merged=None, y_unmerged=None):
    """All strata together, CrossMed eq. 8 with the correct conditioning, and each term for Y
    against the Fano bound of its conditioning set. `y`, `merged`, `y_unmerged`: as `_stratum_rows`."""
    n_total = len(frame)
    errors_all = int(n_total - frame["_correct"].sum())
    eps_all = errors_all / n_total
    k_all = max(2, len(np.unique(y)))
    cols = {f: frame[f].to_numpy() for f in MAT}
    h_y = entropy(y)
    h_y_ma = conditional_entropy(y, [cols["modality"], cols["anatomy"]])
    h_y_mat = conditional_entropy(y, [cols[f] for f in MAT])
    w = np.asarray([p[0] for p in per_stratum])
    h_s = np.asarray([p[1] for p in per_stratum])
    stratified = float(np.sum(w * np.maximum(h_s - [_fano_phi(e, k) for _, _, e, k in per_stratum], 0.0)))
    audit = fano.audit_paper_fano(h_y, h_y_ma, eps_all, k_all)
    phi_up = _fano_phi(pac.test_set_bound(errors_all, n_total, delta), k_all)
    aggregate: dict[str, Any] = {
        "n": n_total,
        "errors": errors_all,
        "error": eps_all,
        "error_ci": list(pac.clopper_pearson(errors_all, n_total, level)),
        "classes": k_all,
        "h_y": h_y,
        "h_y_given_ma": h_y_ma,
        "h_y_given_mat": h_y_mat,
        "fano_mi_lower_given_ma": h_y_ma - _fano_phi(eps_all, k_all),
        "fano_mi_lower_given_mat": h_y_mat - _fano_phi(eps_all, k_all),
        "fano_mi_lower_given_ma_finite": h_y_ma - phi_up,
        "fano_mi_lower_given_mat_finite": h_y_mat - phi_up,
        "fano_mi_lower_stratified": stratified,
        "paper_eq8": audit.paper,
        "paper_eq8_audit": audit.to_dict(),
        "terms": [],
    }
    if y_unmerged is not None:
        aggregate["h_y_unmerged"] = entropy(y_unmerged)
        aggregate["classes_unmerged"] = max(2, len(np.unique(y_unmerged)))
    for t in terms:
        if _norm_target(t["target"]) != target or t.get("estimate") is None:
            continue
        g = stratum_key(t.get("given", []))
        if g == tuple(sorted(("modality", "anatomy"))):
            ref, name = aggregate["fano_mi_lower_given_ma"], "H(Y|M,A) - φ(ε)"
            ref_finite = aggregate["fano_mi_lower_given_ma_finite"]
        elif g == tuple(sorted(MAT)):
            ref, name = max(stratified, aggregate["fano_mi_lower_given_mat"]), "stratum average"
            ref_finite = aggregate["fano_mi_lower_given_mat_finite"]
        else:
            continue
        v = _mi_value(t, mi_unit)
        ci_hi = v["ci_high"] if v["ci_high"] is not None else v["estimate"]
        verdict = _status(_at_least(v["estimate"], ref), _at_least(ci_hi, ref_finite))
        aggregate["terms"].append({"term": t.get("term"), "mi": v, "fano_mi_lower": ref,
                                   "fano_mi_lower_finite": ref_finite, "compared_with": name,
                                   "mi_meets_bound": None if merged and verdict == "NO" else verdict})
    return aggregate


def _heldout_pac(frame, delta, level, emp_risk, n_train, params, bits_per_param, heldout_target=None,
                 training=None):
    """The held-out error (split = test, else the held-out target's rows where it is given and
    answered, else all answered rows) with its test-set bound, and training-set PAC bounds held
    against it when their inputs are given."""
    n_total = len(frame)
    in_target = None
    if heldout_target is not None:
        in_target = np.ones(n_total, dtype=bool)
        for f, v in zip(MAT, heldout_target):
            in_target &= (frame[f].astype(str) == str(v)).to_numpy()
    if "split" in frame and frame["split"].isin(_HELDOUT_SPLITS).any():
        held = frame["split"].isin(_HELDOUT_SPLITS).to_numpy()
        held_note = "rows with split = test"
        if in_target is not None and np.array_equal(held, in_target):
            # a run's own split marks exactly the target's rows test: say which rows those are (a user's
            # own split = test rows are other rows, which `check` on their stores reports alike)
            held_note = (f"rows of the held-out target {' / '.join(map(str, heldout_target))} (split = test in "
                         "the store)")
    elif in_target is not None and in_target.any():
        # a study whose manifest has no split: the error on rows the checkpoint may have been
        # trained on is no held-out error (a README-only user study's report called all 180 rows,
        # 160 of them in training triplets, "the held-out target")
        held = in_target
        held_note = f"rows of the held-out target {' / '.join(map(str, heldout_target))} (no split = test in the store)"
    else:
        held = np.ones(n_total, dtype=bool)
        held_note = "all answered rows (no split = test in the store)"
    m = int(held.sum())
    k_err = int(m - frame["_correct"].to_numpy()[held].sum())
    held_lo, held_hi = pac.clopper_pearson(k_err, m, level)
    pac_out: dict[str, Any] = {
        "heldout": held_note,
        "m": m,
        "errors": k_err,
        "error": k_err / m,
        "error_ci": [held_lo, held_hi],
        "test_set_bound": pac.test_set_bound(k_err, m, delta),
        "bounds": [],
    }
    if emp_risk is not None or n_train is not None or params is not None:
        if emp_risk is None or n_train is None or params is None:
            raise BoundsError("training-set PAC bounds need --emp-risk, --n-train and --params together")
        # what the bounds were given, said with them (an audit read ln|H| = 5.966e6 nats as "doubled":
        # 268,992 parameters at 32 bits, the checkpoint's stored precision, not check's default 16)
        pac_out["training"] = {"params": float(params), "bits_per_param": float(bits_per_param),
                               "ln_h": pac.log_hypothesis_count(params, bits_per_param),
                               "emp_risk": float(emp_risk), "n_train": int(n_train),
                               "rows": "as given (--emp-risk, --n-train)", "bits_source": "as given (--bits-per-param)",
                               **(training or {})}
        for b in pac.pac_bounds(emp_risk, n_train, delta, params=params, bits=bits_per_param):
            d = b.to_dict()
            d["contradicted"] = bool(b.value < held_lo)
            pac_out["bounds"].append(d)
    return pac_out


OUT_KINDS = {".json": ""}  # what `write_check` writes (the CLI refuses other names before any work)


def write_check(result: "CheckResult | dict", out: str | Path) -> Path:
    """Write the check JSON atomically (temp name + rename)."""
    from matprobe.io import numpy_to_json, write_text_atomic

    doc = result.to_dict() if isinstance(result, CheckResult) else result
    return write_text_atomic(out, json.dumps(doc, indent=2, default=numpy_to_json) + "\n")


# ------------------------------------------------------------------ the Y term, when missing

_SEP = "\x1f"


def _mi_settings(mi: dict) -> dict:
    """Estimator settings of an MI results document (older files: the shared defaults)."""
    st = dict(mi.get("settings") or {})
    est = st.get("estimator") or next((t.get("estimator") for t in mi.get("terms", []) if t.get("estimator")),
                                      DEFAULTS.estimator)
    return {"estimator": est, "seeds": int(st.get("seeds", DEFAULTS.seeds)),
            "folds": int(st.get("folds", DEFAULTS.folds)),
            "pca": st.get("pca", DEFAULTS.pca), "level": float(st.get("level", DEFAULTS.level)),
            "seed": int(st.get("seed", DEFAULTS.seed))}


def target_term_command(store_path, mi: dict, target: str) -> str:
    """The `matprobe mi` command that writes I(Z;Y|M,A,T) for this check."""
    st = _mi_settings(mi)
    y = "Y" if target == "label" else "answer_index"
    pca = st["pca"] or 0
    return (f"matprobe mi {store_path} --factors M,A,T,{y} --layer {mi.get('layer')} --pool {mi.get('pool')} "
            f"--estimator {st['estimator']} --seeds {st['seeds']} --folds {st['folds']} --pca {pca} "
            f"--level {st['level']} --out mi.json")


def estimate_target_term(store_path, mi: dict, target: str, progress: bool = False) -> dict:
    """I(Z;Y | M,A,T) per (M, A, T) stratum on the MI results' layer and pool, with their
    settings: {"term", "layer", "pool", "settings", "strata": [per-stratum entries]} (nats)."""
    from matprobe.mi.chain import row_groups, store_groups
    from matprobe.store import EmbeddingStore

    layer, pool = mi.get("layer"), mi.get("pool")
    st = _mi_settings(mi)
    with EmbeddingStore.open(store_path) as store:
        try:
            layer, pool = store.resolve_feature(layer, pool)
        except StoreError:
            raise StoreError(f"{store_path}: the MI results name layer {layer!r}, pool {pool!r}, which "
                             f"this store lacks; run: {target_term_command(store_path, mi, target)}") from None
        frame = store.samples()
        z = store.read(str(layer), str(pool))
        # an image's rows in one fold, as `mi` keeps them (`chain.store_groups`)
        groups, groups_name = store_groups(frame, None, store_path)
    if target == "answer":
        y = frame["answer_index"].to_numpy() if "answer_index" in frame else np.full(len(frame), -1)
        keep = np.array(y >= 0)
    else:
        y = frame["label"].to_numpy() if "label" in frame else np.full(len(frame), None)
        keep = frame["label"].notna().to_numpy().copy() if "label" in frame else np.zeros(len(frame), bool)
    for f in MAT:
        keep &= frame[f].notna().to_numpy()
    if keep.sum() < 2:
        raise StoreError(f"{store_path}: no rows with Y = {target} to estimate I(Z;Y|M,A,T)")
    strata = np.array([_SEP.join(map(str, r)) for r in frame.loc[keep, list(MAT)].itertuples(index=False)])
    y = np.asarray(y[keep]).astype(str)
    est = _conditional_term(z[keep], strata, y, target, st, store_path, mi, progress,
                            *row_groups(z[keep], None if groups is None else groups[keep], groups_name))
    entries = []
    for s in est.strata:
        values = str(s.given["stratum"]).split(_SEP)
        entries.append({"target": target, "given": dict(zip(MAT, values)), "estimator": st["estimator"],
                        "n": s.n, "estimate": s.estimate, "ci_low": s.ci_low, "ci_high": s.ci_high,
                        "ci_level": est.ci_level, "h_upper": s.h_upper, "note": s.note})
    return {"term": f"I(Z;{target}|modality,anatomy,task)", "layer": str(layer), "pool": str(pool),
            "settings": st, "estimate": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high,
            "strata": entries}


def _conditional_term(z, strata, y, target: str, st: dict, store_path, mi: dict, progress: bool,
                      groups=None, groups_name: str = ""):
    """I(Z;Y | stratum) alone, on one fold plan stratified by (stratum, Y). The strata are
    conditions, never a target: a (M, A, T) triplet of a few rows is a small stratum, as
    `matprobe mi` treats it, where a chain over [stratum, Y] refused it as a class of the stratum
    factor with too few rows per fold. The same bits as that chain's second term otherwise.
    groups: a group per row kept in one fold (`chain.row_groups`), or None."""
    from matprobe.checks import check_class_sizes
    from matprobe.data.entropy import joint_codes
    from matprobe.mi import estimator_tags, make_estimator
    from matprobe.mi.chain import TermSpec, estimate_terms
    from matprobe.progress import track

    check_class_sizes({target: y}, st["folds"], source=str(store_path),
                      remedy=(f"Estimate the term with the rare classes merged and pass that file: "
                              f"{target_term_command(store_path, mi, target)} --rare-classes merge, then check "
                              "--mi mi.json; or check --no-estimate"))
    codes = {"stratum": np.unique(strata, return_inverse=True)[1].reshape(-1),
             target: np.unique(y, return_inverse=True)[1].reshape(-1)}
    name = st["estimator"]
    # pca 0 (how MI files record "no reduction") is read as none by every estimator
    est = make_estimator(name, seeds=st["seeds"], folds=st["folds"], pca=st["pca"], ci_level=st["level"],
                         seed=st["seed"])
    bar = track("check", 1, enabled=bool(progress), unit="estimates")
    with bar:
        [term] = estimate_terms(est, estimator_tags(name), z, codes, [TermSpec((target,), ("stratum",))],
                                plan_groups=joint_codes([codes["stratum"], codes[target]]),
                                raw={"stratum": strata, target: y}, progress=bar, groups=groups,
                                groups_name=groups_name)
    return term


# ------------------------------------------------------------------ typed result


@dataclass
class MIValue:
    """An MI estimate (nats) with its interval, as the check read it."""

    estimate: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float | None = None
    estimator: str | None = None
    # "lower": one-sided, only ci_low is a statement (ci_high is the entropy cap); None: two-sided
    bound: str | None = None
    note: str | None = None  # why it is one-sided

    @classmethod
    def from_dict(cls, d: dict | None) -> "MIValue | None":
        return None if d is None else cls(**{f.name: d.get(f.name) for f in fields(cls)})

    def to_dict(self) -> dict:
        # a two-sided value's file keeps the keys it always had
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("bound", "note") or getattr(self, f.name) is not None}


def _from(cls, d: dict, **convert):
    kw = {}
    for f in fields(cls):
        if f.name in d:
            kw[f.name] = convert[f.name](d[f.name]) if f.name in convert else d[f.name]
    extra = {k: v for k, v in d.items() if k not in {f.name for f in fields(cls)}}
    obj = cls(**kw)
    obj.extra = extra  # keys of newer/older files kept as they were
    return obj


def _to(obj, **convert) -> dict:
    out = {}
    for f in fields(obj):
        if f.name == "extra":
            continue
        v = getattr(obj, f.name)
        out[f.name] = convert[f.name](v) if f.name in convert else v
    out.update(getattr(obj, "extra", {}) or {})
    return out


@dataclass
class StratumCheck:
    """One (M, A, T) stratum: observed error, H(Y|s), Fano's floors, and the MI held against them."""

    given: dict
    n: int
    errors: int
    error: float
    error_ci: list
    error_upper: float
    classes: int
    h_y: float
    fano_mi_lower: float
    fano_mi_lower_finite: float
    mi: MIValue | None = None
    mi_source: str | None = None
    error_floor: float | None = None
    error_floor_lenient: float | None = None
    error_respects_floor: str | None = None
    mi_meets_bound: str | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "StratumCheck":
        return _from(cls, d, mi=MIValue.from_dict)

    def to_dict(self) -> dict:
        return _to(self, mi=lambda v: None if v is None else v.to_dict())


@dataclass
class TermCheck:
    """An MI chain term (averaged over strata) against the aggregate Fano bound."""

    term: str
    mi: MIValue
    fano_mi_lower: float
    fano_mi_lower_finite: float
    compared_with: str
    mi_meets_bound: str
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "TermCheck":
        return _from(cls, d, mi=MIValue.from_dict)

    def to_dict(self) -> dict:
        return _to(self, mi=lambda v: v.to_dict())


@dataclass
class AggregateCheck:
    """All answered rows: CrossMed eq. 8 with the correct conditioning, and its audit."""

    n: int
    errors: int
    error: float
    error_ci: list
    classes: int
    h_y: float
    h_y_given_ma: float
    h_y_given_mat: float
    fano_mi_lower_given_ma: float
    fano_mi_lower_given_mat: float
    fano_mi_lower_given_ma_finite: float
    fano_mi_lower_given_mat_finite: float
    fano_mi_lower_stratified: float
    paper_eq8: float
    paper_eq8_audit: dict
    terms: list = field(default_factory=list)
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "AggregateCheck":
        return _from(cls, d, terms=lambda ts: [TermCheck.from_dict(t) for t in ts])

    def to_dict(self) -> dict:
        return _to(self, terms=lambda ts: [t.to_dict() for t in ts])


@dataclass(frozen=True)
class CheckedBound(pac.Bound):
    """A training-set PAC bound as the check holds it against the held-out error: `contradicted`
    when the bound lies below the held-out error's lower confidence limit."""

    contradicted: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "CheckedBound":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class HeldoutCheck:
    """PAC: the observed held-out error, the test-set bound, and training-set bounds beside it."""

    heldout: str
    m: int
    errors: int
    error: float
    error_ci: list
    test_set_bound: float
    bounds: list[CheckedBound] = field(default_factory=list)
    # the training-set bounds' inputs: params, bits_per_param, ln_h, emp_risk, n_train, rows, bits_source
    training: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "HeldoutCheck":
        return _from(cls, d, bounds=lambda bs: [CheckedBound.from_dict(b) for b in bs])

    def to_dict(self) -> dict:
        doc = _to(self, bounds=lambda bs: [b.to_dict() for b in bs])
        if doc.get("training") is None:  # no training-set bounds (files written before it: none)
            doc.pop("training", None)
        return doc


@dataclass
class CheckResult:
    """`matprobe check` as a typed object. `.to_dict()` is the JSON file (kind
    "matprobe.check", unchanged keys); `CheckResult.from_dict` reads old and new files;
    `.frame()` is the per-stratum table; `.to_table(unit)` / `.tables(unit)` the displays."""

    store: str
    store_fingerprint: str
    mi: str | None
    target: str
    delta: float
    level: float
    strata: list
    aggregate: AggregateCheck
    pac: HeldoutCheck
    unit: str = "nats"
    target_source: str = ""
    estimated_here: dict | None = None
    merged_target: dict | None = None  # the MI results merged Y's rare classes (see _merged_target)
    kind: str = "matprobe.check"
    format_version: int = 1
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "CheckResult":
        return _from(cls, d, strata=lambda ss: [StratumCheck.from_dict(s) for s in ss],
                     aggregate=AggregateCheck.from_dict, pac=HeldoutCheck.from_dict)

    def to_dict(self) -> dict:
        doc = _to(self, strata=lambda ss: [s.to_dict() for s in ss], aggregate=lambda a: a.to_dict(),
                  pac=lambda p: p.to_dict())
        for key in ("target_source", "estimated_here", "merged_target"):
            if not doc.get(key):
                doc.pop(key, None)
        return doc

    @property
    def y_description(self) -> str:
        what = "the model's answer vs the correct option index" if self.target == "answer" else "the label column"
        return f"Y = {self.target} ({what}; {self.target_source or 'chosen by the check'})"

    def frame(self):
        """One row per stratum (nats): n, error with interval, H(Y|s), Î with interval, floors, verdicts."""
        import pandas as pd

        rows = []
        for s in self.strata:
            mi = s.mi or MIValue(None)
            rows.append({**s.given, "n": s.n, "errors": s.errors, "error": s.error,
                         "error_ci_low": s.error_ci[0], "error_ci_high": s.error_ci[1],
                         "classes": s.classes, "h_y": s.h_y, "mi": mi.estimate, "mi_ci_low": mi.ci_low,
                         "mi_ci_high": mi.ci_high, "error_floor": s.error_floor,
                         "error_respects_floor": s.error_respects_floor,
                         "fano_mi_lower": s.fano_mi_lower, "fano_mi_lower_finite": s.fano_mi_lower_finite,
                         "mi_meets_bound": s.mi_meets_bound})
        return pd.DataFrame(rows)

    def to_table(self, unit: str = "nats"):
        """Per-stratum table in `unit` (nats or bits)."""
        from matprobe.present.views import check_table

        return check_table(self, unit)

    def tables(self, unit: str = "nats") -> list:
        """Per-stratum table, aggregate terms and PAC bounds, in `unit`."""
        from matprobe.present.views import check_tables

        return check_tables(self, unit)


def load_check(path: str | Path) -> CheckResult:
    """Read a check JSON (any version written so far) as a CheckResult."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: cannot read a check result ({exc}); rerun `matprobe check`") from None
    if doc.get("kind") != "matprobe.check":
        raise StoreError(f"{path}: not a matprobe check file (kind != 'matprobe.check')")
    return CheckResult.from_dict(doc)
