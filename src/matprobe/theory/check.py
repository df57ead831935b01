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
from pathlib import Path
from typing import Any

import numpy as np

from matprobe.data.entropy import conditional_entropy, entropy
from matprobe.data.model import resolve_factor
from matprobe.errors import BoundsError, StoreError
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
            f"{path}: MI results were computed on a different store (fingerprint {got}…, "
            f"store {res.get('store')!r}) than the one checked ({fingerprint[:12]}…); "
            "rerun `matprobe mi` on this store"
        )
    return res


def _given_key(given) -> tuple:
    if isinstance(given, dict):
        return tuple(sorted((resolve_factor(k), str(v)) for k, v in given.items()))
    return tuple(sorted(resolve_factor(g) for g in given or ()))


def _norm_target(t: str) -> str:
    t = resolve_factor(str(t))
    return "answer" if t in _ANSWER_TARGETS else t


def _mi_value(entry: dict, unit: str) -> dict:
    out = {}
    for k in ("estimate", "ci_low", "ci_high"):
        v = entry.get(k)
        out[k] = None if v is None else to_nats(float(v), unit)
    out["ci_level"] = entry.get("ci_level")
    out["estimator"] = entry.get("estimator")
    return out


def _fano_phi(eps: float, k: int) -> float:
    return float(fano.fano_entropy_upper(min(eps, 1.0 - 1.0 / k), k))


def _status(point_ok: bool, ci_ok: bool) -> str:
    return "yes" if point_ok else ("within CI" if ci_ok else "NO")


def _answered(store) -> tuple[Any, np.ndarray]:
    frame = store.samples()
    ans = store.answers()
    pred = np.asarray(ans["pred"]).astype(np.int64)
    corr = np.asarray(ans["correct"]).astype(np.int64)
    answer_index = (
        frame["answer_index"].to_numpy() if "answer_index" in frame else np.full(len(frame), -1)
    )
    correct = np.where(
        corr >= 0, corr, np.where((pred >= 0) & (answer_index >= 0), pred == answer_index, -1)
    )
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
    mi_path: str | Path | None = None,
    *,
    delta: float = 0.05,
    level: float = 0.95,
    target: str | None = None,
    emp_risk: float | None = None,
    n_train: int | None = None,
    params: float | None = None,
    bits: float = 16.0,
) -> dict:
    """Compute the check table; returns a JSON-ready dict (kind "matprobe.check"). All in nats."""
    from matprobe.store import EmbeddingStore

    delta = pac.check_delta(delta)
    if not 0.0 < float(level) < 1.0:
        raise BoundsError(f"level = {level} is outside (0, 1); use e.g. 0.95")
    with EmbeddingStore.open(store_path) as store:
        fingerprint = store.fingerprint
        mi = load_mi_results(mi_path, fingerprint) if mi_path is not None else None
        frame, _ = _answered(store)

    mi_unit = (mi or {}).get("unit", "nats")
    strata_mi: dict[tuple, dict] = {}
    terms: list[dict] = []
    if mi is not None:
        for e in mi.get("strata", []) or []:
            given = e.get("given")
            if (
                _norm_target(e.get("target", "")) in ("answer", "label")
                and isinstance(given, dict)
                and {resolve_factor(k) for k in given} == set(MAT)
            ):
                strata_mi.setdefault(_norm_target(e["target"]), {})[_given_key(given)] = e
        terms = [
            t
            for t in mi.get("terms", []) or []
            if _norm_target(t.get("target", "")) in ("answer", "label")
        ]

    # which Y: explicit, else the target the MI results carry, else the answer index
    if target is None:
        found = set(strata_mi) | {_norm_target(t["target"]) for t in terms}
        target = "label" if found == {"label"} else "answer"
    target = _norm_target(target)
    if target == "answer":
        if "answer_index" not in frame or (frame["answer_index"] < 0).all():
            raise StoreError(
                f"{store_path}: no answer_index stored; use --target label or store answers"
            )
        frame = frame[frame["answer_index"] >= 0].reset_index(drop=True)
        y = frame["answer_index"].to_numpy()
    elif target == "label":
        if "label" not in frame:
            raise StoreError(f"{store_path}: no label column for --target label")
        frame = frame[frame["label"].notna()].reset_index(drop=True)
        y = frame["label"].to_numpy()
    else:
        raise BoundsError(f"target {target!r} is unknown; use 'answer' or 'label'")
    stratum_mi = strata_mi.get(target, {})

    n_total = len(frame)
    is_segmentation = (frame["option_masks"].notna().to_numpy() if "option_masks" in frame
                       else np.zeros(n_total, dtype=bool))
    rows = []
    weights, h_s, eps_s, k_s = [], [], [], []
    for key, idx in frame.groupby(list(MAT), sort=True).indices.items():
        ys = y[idx]
        n = len(idx)
        errors = int(n - frame["_correct"].to_numpy()[idx].sum())
        eps = errors / n
        lo, hi = pac.clopper_pearson(errors, n, level)
        eps_up = pac.test_set_bound(errors, n, delta)
        k = max(2, len(np.unique(ys)))
        segmentation = bool(is_segmentation[idx].all())
        if segmentation:  # the choice among the candidate masks
            k = max(2, int(frame["n_options"].to_numpy()[idx].max()))
        h = entropy(ys)
        bound_point = h - _fano_phi(eps, k)
        bound_finite = h - _fano_phi(eps_up, k)
        given = dict(zip(MAT, map(str, key)))
        row: dict[str, Any] = {
            "given": given,
            "n": n,
            "errors": errors,
            "error": eps,
            "error_ci": [lo, hi],
            "error_upper": eps_up,
            "classes": k,
            "item_kind": "segmentation" if segmentation else "choice",
            "h_y": h,
            "fano_mi_lower": bound_point,
            "fano_mi_lower_finite": bound_finite,
            "mi": None,
            "mi_source": None,
            "error_floor": None,
            "error_floor_lenient": None,
            "error_respects_floor": None,
            "mi_meets_bound": None,
        }
        entry = stratum_mi.get(_given_key(given))
        if entry is not None and entry.get("estimate") is not None:
            v = _mi_value(entry, mi_unit)
            row["mi"], row["mi_source"] = v, "stratum"
            est = v["estimate"]
            ci_hi = v["ci_high"] if v["ci_high"] is not None else est
            floor = fano.fano_min_error(min(max(h - est, 0.0), math.log(k)), k)
            floor_len = fano.fano_min_error(min(max(h - ci_hi, 0.0), math.log(k)), k)
            row["error_floor"], row["error_floor_lenient"] = floor, floor_len
            row["error_respects_floor"] = _status(eps >= floor, hi >= floor_len)
            row["mi_meets_bound"] = _status(est >= bound_point, ci_hi >= bound_finite)
        elif terms:
            row["mi_source"] = "term only (average over strata; compared in aggregate)"
        rows.append(row)
        weights.append(n / n_total)
        h_s.append(h)
        eps_s.append(eps)
        k_s.append(k)

    # aggregate, CrossMed eq. 8 with the correct conditioning
    errors_all = int(n_total - frame["_correct"].sum())
    eps_all = errors_all / n_total
    k_all = max(2, len(np.unique(y)))
    cols = {f: frame[f].to_numpy() for f in MAT}
    h_y = entropy(y)
    h_y_ma = conditional_entropy(y, [cols["modality"], cols["anatomy"]])
    h_y_mat = conditional_entropy(y, [cols[f] for f in MAT])
    w = np.asarray(weights)
    stratified = float(
        np.sum(w * np.maximum(np.asarray(h_s) - [_fano_phi(e, k) for e, k in zip(eps_s, k_s)], 0.0))
    )
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
    for t in terms:
        if _norm_target(t["target"]) != target or t.get("estimate") is None:
            continue
        g = _given_key(t.get("given", []))
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
        aggregate["terms"].append(
            {
                "term": t.get("term"),
                "mi": v,
                "fano_mi_lower": ref,
                "fano_mi_lower_finite": ref_finite,
                "compared_with": name,
                "mi_meets_bound": _status(v["estimate"] >= ref, ci_hi >= ref_finite),
            }
        )

    # PAC against the observed held-out error
    if "split" in frame and frame["split"].isin(_HELDOUT_SPLITS).any():
        held = frame["split"].isin(_HELDOUT_SPLITS).to_numpy()
        held_note = "rows with split = test"
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
            raise BoundsError(
                "training-set PAC bounds need --emp-risk, --n-train and --params together"
            )
        for b in pac.pac_bounds(emp_risk, n_train, delta, params=params, bits=bits):
            d = b.to_dict()
            d["contradicted"] = bool(b.value < held_lo)
            pac_out["bounds"].append(d)

    return {
        "kind": "matprobe.check",
        "format_version": 1,
        "store": str(store_path),
        "store_fingerprint": fingerprint,
        "mi": None if mi_path is None else str(mi_path),
        "unit": "nats",
        "target": target,
        "delta": delta,
        "level": level,
        "strata": rows,
        "aggregate": aggregate,
        "pac": pac_out,
    }


def write_check(result: dict, out: str | Path) -> Path:
    """Write the check JSON atomically (temp name + rename)."""
    from matprobe.io import numpy_to_json, write_text_atomic

    return write_text_atomic(out, json.dumps(result, indent=2, default=numpy_to_json) + "\n")
