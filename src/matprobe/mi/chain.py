"""The MAT chain rule, I(Z;M,A,T) = I(Z;M) + I(Z;A|M) + I(Z;T|M,A) (CrossMed §IV, eq. 5).

`chain_terms` estimates each term with stratified conditional critics, the direct joint term,
and, as a cross-check, each conditional term as the chain-rule difference
I(Z;Y,C) - I(Z;C) (Hewitt et al. 2021). `run_store` does the same from an embedding store
and `write_results` writes the MI results JSON/CSV of docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from matprobe.checks import check_class_sizes, check_factors, check_level, check_pca, check_rare_classes
from matprobe.data.entropy import conditional_entropy, joint_codes
from matprobe.defaults import DEFAULTS
from matprobe.errors import EstimationError, MatprobeError, StoreError
from matprobe.io import numpy_to_json
from matprobe.mi.base import FoldPlan
from matprobe.mi.controls import baseline_columns
from matprobe.mi.interface import LOWER, EstimatorTags, MIEstimate, MIEstimator, StratumEstimate, TermNames
from matprobe.mi.merge import merge_words
from matprobe.mi.pointwise import PointwiseSummary, summarise_pointwise
from matprobe.mi.prep import grouped_folds, identical_rows
from matprobe.mi.registry import available_estimators, estimator_tags, make_estimator
from matprobe.units import NATS, from_nats, to_nats

DEFAULT_ESTIMATOR = DEFAULTS.estimator
# the diagnostics a term entry of the results document carries (written and read back)
TERM_DIAGNOSTICS = ("permutation", "control", "codelength", "reduction_residual", "requested_reduction_residual",
                    "reduction", "h_upper_limit")


_NUM = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
# the estimators write their notes in nats; a phrase that quotes numbers in nats, and the one whose
# second number carries no unit ("raw estimate X nats exceeded H(Y|C) = Y; clipped")
_NATS_PHRASE = re.compile(rf"raw estimate ({_NUM}) nats exceeded (H\(Y(?:\|C)?\)) = ({_NUM})"
                          rf"|\[({_NUM}), ({_NUM})\] nats|({_NUM}) \+- ({_NUM}) nats|({_NUM}) nats")


def note_in_unit(note: str, unit: str, known=()) -> str:
    """An estimator's note with its numbers in nats written in `unit` (same decimals), so that
    every number in a `--unit bits` output is in bits. `known`: exact values in `unit` (the term's
    H(Y|C), its estimate) that a number may be the rounding of; such a number is written from the
    exact value, not from its rounding. Idempotent: converted numbers say "bits".

    >>> note_in_unit("estimate at 100% of H(Y|C) = 1.0905 nats: near saturation", "bits")
    'estimate at 100% of H(Y|C) = 1.5733 bits: near saturation'
    >>> note_in_unit("estimate at 100% of H(Y|C) = 1.0905 nats: near saturation", "bits", [1.5732448])
    'estimate at 100% of H(Y|C) = 1.5732 bits: near saturation'
    >>> note_in_unit("raw estimate 0.8728 nats exceeded H(Y|C) = 0.8531; clipped", "bits")
    'raw estimate 1.2592 bits exceeded H(Y|C) = 1.2308; clipped'
    >>> note_in_unit("estimate at 99.7% of H(Y) = 0.6931 nats: near saturation", "bits")
    'estimate at 99.7% of H(Y) = 0.9999 bits: near saturation'
    """
    if not note or from_nats(1.0, unit) == 1.0:
        return note

    def conv(text: str) -> str:
        decimals = len(text.partition(".")[2]) if "e" not in text.lower() else None
        value = from_nats(float(text), unit)
        if decimals is not None:
            exact = [k for k in known if k == k and abs(to_nats(k, unit) - float(text)) <= 0.5 * 10**-decimals]
            value = exact[0] if exact else value
        return f"{value:.{decimals}f}" if decimals is not None else f"{value:.4g}"

    def sub(m: re.Match) -> str:
        g = m.groups()
        if g[0] is not None:
            return f"raw estimate {conv(g[0])} {unit} exceeded {g[1]} = {conv(g[2])}"
        if g[3] is not None:
            return f"[{conv(g[3])}, {conv(g[4])}] {unit}"
        if g[5] is not None:
            return f"{conv(g[5])} +- {conv(g[6])} {unit}"
        return f"{conv(g[7])} {unit}"

    return _NATS_PHRASE.sub(sub, note)


def term_name(target: str, given: list[str]) -> str:
    return f"I(Z;{target}|{','.join(given)})" if given else f"I(Z;{target})"


@dataclass(frozen=True)
class TermSpec:
    """One term I(Z; targets | given); `sub` are finer factors offered to estimators tagged
    `subclasses` as mixture sub-classes (in a chain: the factors after the target)."""

    targets: tuple[str, ...]
    given: tuple[str, ...] = ()
    sub: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return term_name(",".join(self.targets), list(self.given))


def chain_specs(order, direct: bool = True, difference: bool = True) -> list[TermSpec]:
    """The terms `chain_terms` estimates over `order`, in its order: the chain's terms (each
    offered the later factors as sub-classes), then the direct joint term (`direct` or
    `difference`) and the prefixes I(Z;F_1..F_j) whose differences cross-check the conditional
    terms (`difference`; Hewitt et al. 2021). One fold plan's reduction is settled on all of
    them, so a term's estimate depends on the whole list (`compare` reuses it to match `mi`).

    >>> [s.name for s in chain_specs(["M", "A", "T"])]
    ['I(Z;M)', 'I(Z;A|M)', 'I(Z;T|M,A)', 'I(Z;M,A,T)', 'I(Z;M,A)']
    >>> [s.name for s in chain_specs(["M"])]
    ['I(Z;M)']
    """
    order = list(order)
    specs = [TermSpec((t,), tuple(order[:j]), tuple(order[j + 1:])) for j, t in enumerate(order)]
    if (direct or difference) and len(order) > 1:  # of one factor the direct term is the chain's term
        specs.append(TermSpec(tuple(order)))
    prefixes = range(1, len(order) - 1) if difference else range(0)
    specs += [TermSpec(tuple(order[: j + 1]), (), tuple(order[j + 1:])) for j in prefixes]
    return specs


def _joint(codes: dict[str, np.ndarray], names) -> np.ndarray | None:
    if not names:
        return None
    return codes[names[0]] if len(names) == 1 else joint_codes([codes[f] for f in names])


@contextmanager
def _without_reduction_check(plan):
    """The fold plan without its reduction test (`mi.reduction_check`) for the baselines' fits:
    the test is about the observed labels, never changes an estimate, and on permuted or control
    labels would cost new projections per copy (about 0.1-0.2 s each at 20k x 4,096)."""
    saved = getattr(plan, "residual", None)
    if saved is not None:
        plan.residual = None
    try:
        yield
    finally:
        if saved is not None:
            plan.residual = saved


def estimate_terms(est: MIEstimator, tags: EstimatorTags, z, codes: dict[str, np.ndarray],
                   specs: list[TermSpec], *, plan_groups: np.ndarray | None = None,
                   fold: np.ndarray | None = None, pointwise: bool = False,
                   raw: dict[str, np.ndarray] | None = None,
                   labels: dict[str, tuple] | None = None, progress=None, permutations: int = 0,
                   permute_first: int | None = None, permutation_seed: int = 0,
                   codelength: bool = False, controls: bool = False,
                   control_groups: np.ndarray | None = None, only: int | None = None,
                   groups: np.ndarray | None = None, groups_name: str = "the groups given") -> list[MIEstimate]:
    """Every term in `specs` with one estimator: the loop `chain_terms`, `sweep`, `compare` and
    `relate` share. only: estimate `specs[only]` alone (the list holds that one estimate), with the
    fold plan's reduction settled on every spec as ever, so it is the number the whole list gives.

    codes: {factor: integer codes [n]}. An estimator tagged `uses_fold_plan` gets one fold
    plan for all the terms (PCA runs once per fold), stratified by `plan_groups` (default: the
    joint code of every factor in `codes`) or over the given `fold` ids. An estimator without
    native conditional support is run once per stratum (`conditional_by_strata`).
    raw/labels: the factors' original values and vocabularies, to name strata.
    progress: a `matprobe.progress.Progress` advanced once per term.
    permutations: B > 0 adds each term's permutation null (`matprobe.mi.controls`) to its
    diagnostics["permutation"], for the first `permute_first` specs (default: all); the null
    shares the term's folds and preprocessing and costs B times the term.
    codelength: add the online codelength of each of those terms (`matprobe.mi.codelength`, the
    default probe's critic on the plan's features) to diagnostics["codelength"].
    controls: add each of those terms' control task and selectivity (`matprobe.mi.controls`) to
    diagnostics["control"]; control labels are fixed per `control_groups` (e.g. image), else per row.
    groups: a group per row (an image, an item seen several times; `groups_name` says what, in
    the note): the fold plan keeps each group's rows in one fold (`prep.grouped_folds`). Without
    it, every row is its own group. Where every group is one row, the plan is as before.
    """
    if pointwise and not tags.pointwise:
        raise EstimationError(f"estimator {est.name!r} cannot return per-row terms, which paired "
                              "comparisons and --pointwise need; use an estimator tagged pointwise "
                              f"({', '.join(n for n in available_estimators() if estimator_tags(n).pointwise)})")
    plan = None
    grouped_note = None
    if tags.uses_fold_plan:
        if plan_groups is None and fold is None:
            plan_groups = joint_codes(list(codes.values()))
        if fold is None:
            fold, grouped_note = grouped_plan_folds(plan_groups, groups, groups_name, est.folds, est.seed)
        plan = est.fold_plan(z, plan_groups, fold=fold)
        if fold is not None and grouped_note is not None:
            plan.groups = np.asarray(plan_groups)  # the residual tests' strata, as in a plan built from them
            plan.units = np.asarray(groups)
        if isinstance(plan, FoldPlan):  # one reduction for every term, settled on all of them
            plan.settle_reduction(z, [(_joint(codes, spec.targets), _joint(codes, spec.given)) for spec in specs])
    out = []
    for spec in (specs if only is None else specs[only:only + 1]):
        y = _joint(codes, spec.targets)
        c = _joint(codes, spec.given)
        sub = _joint(codes, spec.sub) if tags.subclasses else None
        strata = _stratum_names(list(spec.given), raw or codes, labels, c) if spec.given else None
        names = TermNames(target=",".join(spec.targets), given=",".join(spec.given) or "condition",
                          strata=strata)
        if progress is not None:
            progress.update(description=f"{est.name}: {spec.name}")
        def fit(yy, ss, c=c, names=names, pointwise=False):
            if c is None or tags.conditional:
                return est.estimate(z, yy, c, sub=ss, plan=plan, names=names, pointwise=pointwise)
            return conditional_by_strata(est, z, yy, c, sub=ss, names=names, pointwise=pointwise)

        in_scope = permute_first is None or len(out) < permute_first
        # per-item values are a by-product of a pointwise estimator's fit: kept for the summary
        # per stratum (which strata and items carry the term), then dropped unless asked for
        e = fit(y, sub, pointwise=pointwise or (in_scope and tags.pointwise))
        e.strata = [StratumEstimate.of(entry) for entry in e.strata]  # a plug-in may give dicts
        if in_scope and "pointwise" in (e.diagnostics or {}):
            groups = c if c is not None else y
            group_names = strata if c is not None else _stratum_names(list(spec.targets), raw or codes, labels, y)
            e.diagnostics["pointwise_summary"] = summarise_pointwise(
                e.diagnostics["pointwise"]["values"], groups, group_names,
                by=list(spec.given or spec.targets), unit=e.unit)
        if controls and in_scope and tags.pointwise:
            from matprobe.mi.controls import control_task

            with _without_reduction_check(plan):
                ctrl = control_task(fit, y, c, observed=e, folds=None if plan is None else plan.fold,
                                    groups=control_groups, group_name="row" if control_groups is None else "image",
                                    seed=permutation_seed, units=getattr(plan, "units", None))
            e.diagnostics = {**(e.diagnostics or {}), "control": ctrl.to_dict()}
        if not pointwise and e.diagnostics:
            e.diagnostics.pop("pointwise", None)
        if permutations and in_scope:
            from matprobe.mi.controls import permutation_null

            with _without_reduction_check(plan):
                null = permutation_null(fit, y, c, sub=sub, observed=e, permutations=permutations,
                                        seed=permutation_seed, within=",".join(spec.given))
            e.diagnostics = {**(e.diagnostics or {}), "permutation": null.to_dict()}
        if codelength and plan is not None and in_scope:
            from matprobe.mi.codelength import online_codelength, probe_predictor

            code = online_codelength(probe_predictor(seed=getattr(est, "seed", 0), device=getattr(est, "device", "cpu")),
                                     plan.transformed(z, 0), y, c, sub=sub, seed=permutation_seed,
                                     groups=getattr(plan, "units", None))
            e.diagnostics = {**(e.diagnostics or {}), "codelength": code.to_dict()}
        if grouped_note is not None:
            e.note = "; ".join(part for part in (e.note, grouped_note) if part)
        out.append(e)
        if progress is not None:
            progress.advance()
    return out


def conditional_by_strata(est: MIEstimator, z, y, c, *, sub=None, names: TermNames | None = None,
                          pointwise: bool = False) -> MIEstimate:
    """I(Z;Y|C) = sum_c p(c) I(Z;Y|C=c) from an estimator of I(Z;Y) alone, one call per stratum.

    Strata are disjoint sets of rows, so their errors are independent: the interval's half-widths
    on each side add in quadrature with weights p(c) (exact for normal intervals). Strata with one
    class of Y contribute exactly 0 and are not fitted.
    """
    names = names or TermNames()
    z, y, c = np.asarray(z), np.asarray(y), np.asarray(c)
    n = len(y)
    h = conditional_entropy(y, c)
    fits, entries = [], []
    for code in np.unique(c):
        sel = c == code
        given = names.strata.get(int(code), str(code)) if names.strata else str(code)
        ys = y[sel]
        if np.unique(ys).size < 2:
            entries.append(StratumEstimate(given, int(sel.sum()), 0.0, 0.0, 0.0, 0.0,
                                           "one class in this stratum: exactly 0"))
            continue
        e = est.estimate(z[sel], np.unique(ys, return_inverse=True)[1].reshape(-1), None,
                         sub=None if sub is None else np.asarray(sub)[sel],
                         names=TermNames(target=names.target), pointwise=pointwise)
        fits.append((sel, e))
        entries.append(StratumEstimate(given, int(sel.sum()), e.value, e.ci_low, e.ci_high, e.h_upper, e.note))
    unit = fits[0][1].unit if fits else NATS
    params = fits[0][1].params if fits else est.params()
    level = fits[0][1].ci_level if fits else float("nan")
    result = MIEstimate(value=0.0, ci_low=0.0, ci_high=0.0, ci_level=level, unit=unit, n_train=0, n_eval=n,
                        estimator=est.name, params=params, h_upper=from_nats(h, unit), strata=entries)
    if not fits:
        result.degenerate = True
        result.note = "H(Y|C) = 0: every stratum has one class, so the term is exactly 0"
        return result
    w = np.array([sel.sum() / n for sel, _ in fits])
    v = np.array([e.value for _, e in fits])
    below = np.array([e.value - e.ci_low for _, e in fits])
    above = np.array([e.ci_high - e.value for _, e in fits])
    result.value = float(w @ v)
    result.ci_low = result.value - float(np.sqrt(np.sum((w * below) ** 2)))
    result.ci_high = result.value + float(np.sqrt(np.sum((w * above) ** 2)))
    result.n_train = int(sum(e.n_train for _, e in fits))
    result.clipped = any(e.clipped for _, e in fits)
    notes = ["estimated per stratum of C (the estimator has no native conditional support)"]
    notes += [f"{s.given}: {s.note}" for s in entries if s.note]
    result.note = "; ".join(notes)
    result.diagnostics = {"per_stratum": True}
    if pointwise:
        seeds = {e.diagnostics["pointwise"]["values"].shape[0] for _, e in fits}
        if len(seeds) != 1:
            raise EstimationError(f"estimator {est.name!r} returned per-row terms for different numbers "
                                  f"of seeds across strata ({sorted(seeds)}); it must use the same seeds")
        values = np.zeros((seeds.pop(), n))
        for sel, e in fits:
            values[:, sel] = e.diagnostics["pointwise"]["values"]
        result.diagnostics["pointwise"] = {"values": values}
    return result


class ChainTerm(NamedTuple):
    """One chain term of one estimator: its name (e.g. "I(Z;A|M)") and its estimate."""

    term: str
    estimate: MIEstimate


@dataclass
class ChainResult:
    """Chain terms (per estimator), the direct joint term, and chain-difference cross-checks."""

    factors: list[str]
    terms: dict[str, list[ChainTerm]] = field(default_factory=dict)  # estimator -> its terms in chain order
    direct: dict[str, MIEstimate] = field(default_factory=dict)  # estimator -> I(Z;all)
    difference: dict[str, list[float]] = field(default_factory=dict)  # estimator -> chain differences
    unit: str = NATS
    settings: dict = field(default_factory=dict)  # estimator settings used (seeds, folds, pca, level, seed)
    meta: dict = field(default_factory=dict)  # store, fingerprint, layer, pool when read from a store
    row_ids: list | None = None  # the store's sample ids of the rows used (run_store), for per-item output
    # {factor: {"classes", "rows", "need"}} where rare_classes="merge" merged a factor's rare classes
    merged_classes: dict = field(default_factory=dict)

    def estimates(self, estimator: str | None = None) -> list[ChainTerm]:
        """One estimator's terms in chain order (default: the first estimator, the one a results
        file lists first); [] when there are none."""
        if estimator is None:
            return next(iter(self.terms.values()), [])
        return self.terms[estimator]

    def pointwise_frame(self, labels: dict[str, list] | None = None) -> pd.DataFrame:
        """Pointwise information per item: one row per (item, term, estimator) with the held-out
        critic's log q(y|z,c) - log p(y|c) averaged over seeds (learning-curve step included for the
        probe), in the result's unit. Its mean over a term's items is the term's estimate before
        clipping, and over a stratum's items that stratum's entry: which items carry the information.
        `labels`: optional {factor: value per row} columns to add. Needs `pointwise=True`."""
        rows = []
        for est, items in self.terms.items():
            for term, e in items:
                pw = (e.diagnostics or {}).get("pointwise")
                if pw is None:
                    raise EstimationError("no per-item terms in this result: estimate with pointwise=True")
                values = np.asarray(pw["values"]).mean(axis=0)
                ids = self.row_ids if self.row_ids is not None else list(range(len(values)))
                rows.append(pd.DataFrame({"id": ids, **(labels or {}), "term": term, "estimator": est,
                                          "pointwise": from_nats(values, self.unit), "unit": self.unit}))
        return pd.concat(rows, ignore_index=True)

    def write_pointwise_csv(self, path) -> list[str]:
        """`pointwise_frame` written to a CSV file (`matprobe mi --pointwise FILE.csv`), atomically.
        Returns a sentence per term whose items' mean (its raw estimate) is not the reported
        estimate, which was clipped (a study read a mean of 0.769 beside a term of 0.732)."""
        from pathlib import Path

        from matprobe.io import atomic_path

        frame = self.pointwise_frame()
        with atomic_path(Path(path)) as tmp:
            frame.to_csv(tmp, index=False)
        notes = []
        means = frame.groupby(["term", "estimator"], sort=False)["pointwise"].mean()
        for est, items in self.terms.items():
            for term, e in items:
                raw = float(means.get((term, est), np.nan))
                if e.clipped and np.isfinite(raw) and abs(raw - e.value) > 5e-5:
                    notes.append(f"{term} ({est}): its items average {raw:.4f} {self.unit}, the raw estimate; the "
                                 f"term reads {e.value:.4f}, clipped to [0, its cap]")
        return notes

    def frame(self) -> pd.DataFrame:
        """Tidy table: one row per (term, estimator), plus the direct term and the sum."""
        rows = []
        for est, items in self.terms.items():
            for j, (term, e) in enumerate(items):
                rows.append({"term": term, "target": self.factors[j], "given": ",".join(self.factors[:j]),
                             "estimator": est, "estimate": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high,
                             "ci_level": e.ci_level, "bound": e.bound, "h_upper": e.h_upper, "n": e.n_eval,
                             "chain_difference": self.difference.get(est, [np.nan] * len(items))[j],
                             "clipped": e.clipped, "degenerate": e.degenerate, "note": note_in_unit(e.note, e.unit, (e.h_upper, e.value)),
                             "flags": ",".join(e.flags), "unit": e.unit, **baseline_columns(e.diagnostics)})
            total = sum(e.value for _, e in items)
            d = self.direct.get(est)
            rows.append({"term": "sum of terms", "target": "", "given": "", "estimator": est,
                         "estimate": total, "ci_low": np.nan, "ci_high": np.nan, "ci_level": np.nan,
                         "bound": "", "h_upper": sum(e.h_upper for _, e in items), "n": items[0].estimate.n_eval,
                         "chain_difference": np.nan, "clipped": False, "degenerate": False,
                         "note": chain_rule_note(total, d, ",".join(self.factors)) if len(self.factors) > 1 else "",
                         "flags": "", "unit": self.unit})
            if d is not None and len(self.factors) > 1:  # of one factor it is the term above
                rows.append({"term": term_name(",".join(self.factors), []), "target": ",".join(self.factors),
                             "given": "", "estimator": est, "estimate": d.value, "ci_low": d.ci_low,
                             "ci_high": d.ci_high, "ci_level": d.ci_level, "bound": d.bound, "h_upper": d.h_upper,
                             "n": d.n_eval, "chain_difference": np.nan, "clipped": d.clipped,
                             "degenerate": d.degenerate, "note": note_in_unit(d.note, d.unit, (d.h_upper, d.value)),
                             "flags": ",".join(d.flags),
                             "unit": d.unit})
        return pd.DataFrame(rows)

    def to_table(self):
        """The `matprobe mi` display table (matprobe.present.Table): one row per term and estimator."""
        from matprobe.present.views import chain_table

        return chain_table(self)

    @classmethod
    def from_json(cls, doc: dict) -> "ChainResult":
        """The result a results document (`results_json`, `matprobe mi --out FILE.json`) was written
        from, as typed objects: each term an `MIEstimate` with its strata, flags, bound and baselines
        (control task, codelength, permutation null). Training-only internals (per-row terms, fold
        diagnostics, estimator parameters) are not in the file and come back empty.

        >>> import numpy as np
        >>> from matprobe.mi import chain_terms
        >>> rng = np.random.default_rng(0)
        >>> m = rng.integers(0, 2, 300)
        >>> res = chain_terms(np.c_[m + 0.3 * rng.standard_normal(300)], {"M": m}, seeds=1, folds=2, pca=None,
        ...                   direct=False, difference=False)
        >>> back = ChainResult.from_json(results_json(res))
        >>> back.estimates("probe")[0].estimate.value == res.estimates("probe")[0].estimate.value
        True
        """
        if doc.get("kind") != "matprobe.mi":
            raise EstimationError(f"not an MI results document (kind {doc.get('kind')!r}); give the JSON that "
                                  "`matprobe mi --out FILE.json` writes")
        factors = list(doc["factors"])
        unit = doc.get("unit", NATS)
        terms: dict[str, list[ChainTerm]] = {}
        difference: dict[str, list] = {}
        for t in doc["terms"]:
            strata = [StratumEstimate.of(s) for s in doc.get("strata", [])
                      if s["target"] == t["target"] and s["estimator"] == t["estimator"]]
            extra = {k: t[k] for k in TERM_DIAGNOSTICS if t.get(k)}
            if t.get("pointwise_summary"):
                extra["pointwise_summary"] = PointwiseSummary.from_dict(t["pointwise_summary"])
            terms.setdefault(t["estimator"], []).append(ChainTerm(t["term"], _estimate_from_entry(t, unit, strata, extra)))
            difference.setdefault(t["estimator"], []).append(t.get("chain_difference"))
        direct = {}
        d = doc.get("direct") or {}
        if d:
            direct[d["estimator"]] = _estimate_from_entry(d, unit, [], {})
        for extra_direct in doc.get("direct_all", []):
            if extra_direct["estimator"] not in direct:
                direct[extra_direct["estimator"]] = _estimate_from_entry(
                    {**extra_direct, "ci_level": doc.get("ci_level"), "n": 0}, unit, [], {})
        meta = {k: doc.get(k) for k in ("store", "layer", "pool") if doc.get(k)}
        if doc.get("store_fingerprint"):
            meta["fingerprint"] = doc["store_fingerprint"]
        return cls(factors=factors, terms=terms, direct=direct,
                   difference={k: v for k, v in difference.items() if any(x is not None for x in v)},
                   unit=unit, settings=dict(doc.get("settings") or {}), meta=meta,
                   merged_classes=dict(doc.get("merged_classes") or {}))

    @classmethod
    def read(cls, path) -> "ChainResult":
        """`from_json` of a results file."""
        import json
        from pathlib import Path

        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise EstimationError(f"{path}: cannot read MI results ({exc}); give the JSON that "
                                  "`matprobe mi --out FILE.json` writes") from None
        return cls.from_json(doc)

    def agreement(self) -> dict[str, dict]:
        """Per term: spread (max - min) of the estimators' values and whether all intervals overlap."""
        out = {}
        names = list(self.terms)
        if not names:
            return out
        for j in range(len(self.factors)):
            ests = [self.terms[n][j].estimate for n in names]
            term = self.terms[names[0]][j].term
            overlap = max(e.ci_low for e in ests) <= min(e.ci_high for e in ests)
            out[term] = {"spread": max(e.value for e in ests) - min(e.value for e in ests),
                         "intervals_overlap": bool(overlap)}
        return out


def merge_rare_classes(factors: dict, order: list[str], folds: int, labels: dict | None = None):
    """Each factor's classes with fewer than 2 rows per fold (too few to be in every training
    fold, `checks.check_class_sizes`) merged into one class, so that the chain can be estimated
    on every row. Where the merged class is still that small, the factor's smallest other class
    joins it. Returns (factors, labels, merged): the factors as integer codes into the new
    labels, and {factor: {"classes": [merged class names], "rows": n, "need": 2 * folds,
    "class_rows": {class: its rows}}} (`merge.merge_words` says it in words).

    A term whose target is merged estimates I(Z; f(Y) | C) for the map f that merges, which by
    the data processing inequality is at most I(Z; Y | C); a term conditioned on a merged factor
    conditions on the coarser strata (`mark_merged_terms` says so on each term).

    >>> y = np.array(["a"] * 8 + ["b"] * 6 + ["c"] * 3 + ["d"] * 2)
    >>> f, lab, merged = merge_rare_classes({"Y": y}, ["Y"], folds=2)  # 4 rows needed
    >>> lab["Y"], f["Y"].tolist()[-6:], merged["Y"]["rows"]
    (('a', 'b', 'rare classes (2: c, d)'), [1, 2, 2, 2, 2, 2], 5)
    >>> merge_rare_classes({"Y": y}, ["Y"], folds=3)[1]["Y"]  # c and d (5 rows) still short of 6: b joins
    ('a', 'rare classes (3: b, c, d)')
    """
    need = 2 * int(folds)
    factors, labels, merged = dict(factors), dict(labels or {}), {}
    for name in order:
        col = np.asarray(factors[name])
        values, codes, counts = np.unique(col, return_inverse=True, return_counts=True)
        codes = codes.reshape(-1)
        names = [str(labels[name][int(v)]) if name in labels else str(v) for v in values]
        rare = counts < need
        if not rare.any():
            continue
        if counts[rare].sum() < need and (~rare).sum() > 1:  # still too small: its smallest neighbour joins
            rare[np.flatnonzero(~rare)[np.argmin(counts[~rare])]] = True
        members = [names[i] for i in np.flatnonzero(rare)]
        shown = ", ".join(members[:3]) + (f", … ({len(members) - 3} more)" if len(members) > 3 else "")
        kept = np.flatnonzero(~rare)
        new_code = np.full(len(values), len(kept))
        new_code[kept] = np.arange(len(kept))
        factors[name] = new_code[codes]
        labels[name] = tuple(names[i] for i in kept) + (f"rare classes ({len(members)}: {shown})",)
        merged[name] = {"classes": members, "rows": int(counts[rare].sum()), "need": need,
                        "class_rows": {names[i]: int(counts[i]) for i in np.flatnonzero(rare)}}
    return factors, labels, merged


def missing_labels(labels) -> np.ndarray:
    """Rows whose label is missing: None, NaN, pandas' NA, or an empty string (what a table's
    empty cell reads as). A store marks them itself (code -1, `run_store` leaves those rows out).

    >>> missing_labels(["CT", None, float("nan"), "", "MRI"]).tolist()
    [False, True, True, True, False]
    >>> missing_labels(np.array([0.0, np.nan, 2.0])).tolist()
    [False, True, False]
    """
    arr = np.asarray(labels).reshape(-1)
    if arr.dtype.kind in "iub":
        return np.zeros(len(arr), dtype=bool)
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind in "US":
        return arr == arr.dtype.type()
    col = arr.astype(object)
    absent = pd.isna(pd.Series(col)).to_numpy(dtype=bool)
    return absent | np.array([isinstance(v, str) and v == "" for v in col], dtype=bool)


def merged_classes_phrase(name: str, record: dict) -> str:
    """`merge_rare_classes`' record of one factor in words (`merge.merge_words`): which classes were
    under the minimum and which joined them, with their rows where the record holds them (records
    written before it did are said without rows)."""
    return merge_words(name, record, record.get("class_rows"))


def mark_merged_terms(result: "ChainResult") -> None:
    """Flag and explain each term that involves a factor whose rare classes were merged."""
    merged = result.merged_classes
    if not merged:
        return
    for items in result.terms.values():
        for j, (_, e) in enumerate(items):
            target, given = result.factors[j], result.factors[:j]
            notes = []
            if target in merged:
                notes.append(f"rare classes merged ({merged_classes_phrase(target, merged[target])}): this is "
                             f"I(Z; {target} with them merged | ...), at most the term for {target} itself "
                             "(data processing)")
            for g in given:
                if g in merged:
                    notes.append(f"conditioned on {g} with its {len(merged[g]['classes'])} rare classes merged")
            if notes:
                e.flags = [*e.flags, "merged-rare-classes"]
                e.note = "; ".join(part for part in (e.note, *notes) if part)
    for d in result.direct.values():
        if any(f in merged for f in result.factors):
            d.flags = [*d.flags, "merged-rare-classes"]
            d.note = "; ".join(part for part in (d.note, "factors with rare classes merged: "
                                                 + ", ".join(merged)) if part)


def chain_settings(estimators, seeds, folds, pca, level, seed, permutations=0, codelength=False,
                   controls=False, unit: str = DEFAULTS.unit, **estimator_kwargs) -> dict:
    """The settings a chain records (`ChainResult.settings`, the results document's "settings"): what a
    rerun must match to reuse a result. Baselines appear only when on; "fitting" holds each
    estimator's full parameters (its fitting scheme included), so a result fitted another way (by
    another version of matprobe) is recomputed, not reused."""
    fitting = {name: estimator_fitting(name, seeds, folds, pca, level, seed, unit, **estimator_kwargs)
               for name in estimators}
    return {"estimators": list(estimators), "seeds": seeds, "folds": folds, "pca": pca, "level": level,
            "seed": seed, **({"permutations": int(permutations)} if permutations else {}),
            **({"codelength": True} if codelength else {}), **({"controls": True} if controls else {}),
            "fitting": fitting}


def estimator_fitting(name, seeds, folds, pca, level, seed, unit: str = DEFAULTS.unit, **estimator_kwargs) -> dict:
    """An estimator's `params()` as the results file stores them (JSON values: lists, not tuples)."""
    est = make_estimator(name, seeds=seeds, folds=folds, pca=pca, unit=unit, ci_level=level, seed=seed,
                         **estimator_kwargs)
    return json.loads(json.dumps(est.params(), default=str))


GROUPED_ROWS = "share a group with another row"  # in the note of a term whose folds kept groups together
# a store's rows of one image are one group where an image is in several rows (several questions on
# one image): else a critic that memorises the image reads its labels on the held-out rows
IMAGE_GROUPS = "rows of one image"
IDENTICAL_ROWS = "identical rows of Z"  # the groups where nothing says what an item is (`row_groups`)


def image_column(samples: pd.DataFrame) -> np.ndarray | None:
    """A store's image path per row (`EmbeddingStore.samples()`), or None where it has none on some row."""
    images = samples.get("image")
    return images.astype(str).to_numpy() if images is not None and images.notna().all() else None


def repeated_images(images: np.ndarray | None) -> np.ndarray | None:
    """`images` (`image_column`, of the rows used) where some image is in several rows, else None:
    whether terms read before the grouping must be recomputed (`image_facts`)."""
    return images if images is not None and len(np.unique(images)) < len(images) else None


def chain_rule_note(total: float, direct: MIEstimate | None, factors: str) -> str:
    """The sum-of-terms row's note: the chain rule makes the terms' sum the joint term I(Z;factors),
    so their estimates' gap is estimation error, said against the joint term's own interval. "" where
    the joint term was not estimated.

    >>> e = MIEstimate(value=1.66, ci_low=1.41, ci_high=2.30, ci_level=0.95, unit="nats", n_train=0, n_eval=9,
    ...                estimator="probe", bound="lower")
    >>> chain_rule_note(1.595, e, "M,A,T")
    'by the chain rule the sum is I(Z;M,A,T) (next row), estimated on its own at 1.6600 nats: the sum differs by -0.0650 nats, inside its interval (at least 1.4100)'
    """
    if direct is None:
        return ""
    gap = total - direct.value
    one_sided = direct.bound == LOWER
    inside = direct.ci_low <= total and (one_sided or total <= direct.ci_high)
    span = f"at least {direct.ci_low:.4f}" if one_sided else f"[{direct.ci_low:.4f}, {direct.ci_high:.4f}]"
    return (f"by the chain rule the sum is {term_name(factors, [])} (next row), estimated on its own at "
            f"{direct.value:.4f} {direct.unit}: the sum differs by {gap:+.4f} {direct.unit}, "
            + (f"inside its interval ({span})" if inside else
               f"outside its interval ({span}): the terms or the joint estimate are off by more than their "
               "intervals say"))


def store_groups(samples: pd.DataFrame, column: str | None, path) -> tuple[np.ndarray | None, str]:
    """(a group per store row, what the groups are) as `mi`, `sweep`, `compare`, `relate` and `check`
    read a store: the sample column `column` (`--groups`), else the image column (each image one
    item; where no image repeats, every row its own group), else (None, ""): the estimators then
    group identical rows of Z. The image column says what an item is: identical features of distinct
    images are a feature that does not see the image (a question pooled at the embedding layer, its
    text shared by many items), not copies of one item; grouped, 20 question templates that fix the
    task read I(Z;task) 0 for log 2."""
    if column is not None:
        if column not in samples or samples[column].isna().any():
            raise StoreError(f"{path}: --groups {column!r} is not a sample column with a value on every row; "
                             f"sample columns: {', '.join(map(str, samples.columns))}")
        return samples[column].astype(str).to_numpy(), f"rows of one {column}"
    images = image_column(samples)
    if images is None:
        return None, ""
    return images, IMAGE_GROUPS


def row_groups(z, groups=None, groups_name: str = "the groups given") -> tuple[np.ndarray | None, str]:
    """(a group per row, what they are) for `estimate_terms`: the groups given (a sample column, a
    store's images, cut to the rows of z), else identical rows of z (one item seen several
    times, kept in one fold), else (None, groups_name)."""
    if groups is None:
        groups, groups_name = identical_rows(np.asarray(z)), IDENTICAL_ROWS
    return groups, groups_name


def image_facts(path, factors) -> tuple[bool, bool]:
    """(the store at `path` has an image column, some image is in several of the rows a chain over
    `factors` reads, each labelled for every factor): what `stale_grouping` checks a result's notes
    against. (False, False) where the store cannot be read."""
    from matprobe.store import EmbeddingStore

    try:
        with EmbeddingStore.open(path) as st:
            images = image_column(st.samples())
            if images is None:
                return False, False
            keep = np.ones(len(images), dtype=bool)
            for name in factors:
                try:
                    keep &= np.asarray(st.factor(name)[0]) >= 0  # rows without this label take no part
                except (KeyError, ValueError, MatprobeError):
                    continue  # a factor the store lacks: its chain is refused, not read before grouping
    except (OSError, MatprobeError):
        return False, False
    return True, repeated_images(images[keep]) is not None


def stale_grouping(facts: tuple[bool, bool], estimator: str, notes) -> str | None:
    """Why terms read from a store (its `image_facts`; the terms' `notes`) were grouped otherwise
    than `mi` groups them now, or None. `run` and a resumed `sweep` recompute such terms:
    - some image is in several rows and no note says GROUPED_ROWS: read before an image's rows were
      kept in one fold (issue 22, forty-fifth session), each held-out row had its copies among the
      fitting rows;
    - the store has an image column and a note grouped IDENTICAL_ROWS: read before the image column
      said what an item is (forty-sixth session), identical features of distinct images were kept
      together (20 question templates that fix the task read I(Z;task) 0 for log 2).
    None for an estimator that fits no folds."""
    has_images, images_repeat = facts
    if not estimator_tags(estimator).uses_fold_plan:
        return None
    notes = [str(n or "") for n in notes]
    if images_repeat and not any(GROUPED_ROWS in n for n in notes):
        return "an image's rows are now kept in one fold"
    if has_images and any(GROUPED_ROWS in n and IDENTICAL_ROWS in n for n in notes):
        return "identical features of distinct images are now read row by row"
    return None


def grouped_plan_folds(strata, groups, groups_name: str, k: int, seed: int):
    """The folds of a plan over `k` folds and `seed` (an estimator's) that keeps groups together:
    (fold ids keeping each group of several rows in one fold, the note saying so), or (None,
    None) where every group is one row (the plan's own folds, the same bits as before), or (None,
    a note saying why not) where grouped folds would put a label cell's rows all in one fold."""
    if groups is None:
        return None, None
    groups = np.asarray(groups)
    if len(groups) != len(strata):
        raise EstimationError(f"groups has {len(groups)} entries but Z has {len(strata)} rows; pass one per row")
    sizes = np.unique(groups, return_counts=True)[1]
    # every group one row: nothing to keep together; fewer groups than folds (constant features
    # are one group of every row): no held-out estimate by group, and the plan's own folds stay
    if sizes.max(initial=1) < 2 or len(sizes) < k:
        return None, None
    # the draws of `plan_folds` (base.make_plan): one seed, the same rotation per stratum
    strata = np.asarray(strata)
    fold = grouped_folds(strata, groups, k, np.random.default_rng([seed, 7919]))
    several = sizes[sizes > 1]
    # each label cell of several rows must reach two folds, or a fold holds every row of that cell
    # out with none to fit on (a small study's cell of one image: a term's fitting rows were empty)
    _, cell = np.unique(strata, return_inverse=True)
    cell = cell.reshape(-1)
    pairs = np.unique(np.stack([cell, fold]), axis=1)
    folds_per_cell = np.bincount(pairs[0], minlength=cell.max() + 1)
    rows_per_cell = np.bincount(cell)
    unsplit = np.flatnonzero((rows_per_cell >= 2) & (folds_per_cell < 2))
    if len(unsplit):
        return None, (f"{int(several.sum())} rows {GROUPED_ROWS} ({len(several)} groups of 2 or more, {groups_name}), "
                      f"but {len(unsplit)} label cell{'s' if len(unsplit) > 1 else ''} of several rows would then lie "
                      "in one fold: the folds are by row, and a held-out row's copies may be among the fitting rows "
                      "(more groups per cell avoid it)")
    note = (f"{int(several.sum())} rows {GROUPED_ROWS} ({len(several)} groups of 2 or more, "
            f"{groups_name}): each group's rows are in one fold and on one side of the splits inside it, and "
            "the bootstrap draws groups, so no held-out row has a copy among the fitting rows")
    return fold, note


def chain_terms(z, factors: dict[str, np.ndarray], order: list[str] | None = None,
                estimators: list[str] | tuple[str, ...] = (DEFAULT_ESTIMATOR,), seeds: int = DEFAULTS.seeds,
                folds: int = DEFAULTS.folds, pca: int | None = DEFAULTS.pca, unit: str = DEFAULTS.unit,
                direct: bool = True, difference: bool = True, ci_level: float = DEFAULTS.level,
                seed: int = DEFAULTS.seed, labels: dict[str, tuple] | None = None, pointwise: bool = False,
                progress=False, permutations: int = 0, codelength: bool = False, controls: bool = False,
                control_groups=None, rare_classes: str = "refuse", groups=None,
                groups_name: str = "the groups given", **estimator_kwargs) -> ChainResult:
    """Estimate every term of the chain over `order` (default: dict order) with each estimator.

    z: [n, d] features; factors: {name: labels [n]} (any label column can be a factor).
    labels: optional {name: vocabulary} to name strata in per-stratum entries.
    pointwise: keep per-row terms in each estimate's diagnostics["pointwise"].
    progress: True for a progress display per estimated term (`matprobe.progress`), or a
    `matprobe.progress.Progress` to advance. Defaults come from `matprobe.defaults.DEFAULTS`.
    permutations: B > 0 adds each chain term's permutation null (labels permuted within the
    conditioning strata, same folds and preprocessing; `matprobe.mi.controls`): p-value, null
    mean and the excess over it. Costs B times the chain terms.
    codelength: each chain term's online (prequential) codelength in bits, the uniform one and
    their ratio (`matprobe.mi.codelength`; the default probe's critic, computed with the first
    estimator that uses a fold plan). Costs about two fold fits per term.
    controls: each chain term's control task (labels drawn from the target's frequencies in each
    stratum, fixed per `control_groups`, e.g. image paths, else per row) and the selectivity
    estimate - control with its paired interval (`matprobe.mi.controls`). Costs one more estimate
    per term.
    groups: a group per row (an image, a patient, an item seen several times): each group's rows
    stay in one fold, so no held-out row has a copy among the fitting rows (`groups_name` names
    them in the note). Without it, identical rows of z are grouped.
    rare_classes: "refuse" (default) refuses a factor with a class of fewer than 2 rows per fold;
    "merge" merges such classes into one per factor (`merge_rare_classes`), flags the terms
    involved ("merged-rare-classes") and lists the merges in `ChainResult.merged_classes`.
    Returns a ChainResult (`.frame()` gives the tidy table).
    """
    order = check_factors(list(order or factors))  # M,M,T and M,modality are one factor twice
    check_rare_classes(rare_classes, "rare_classes")
    check_level(ci_level, "ci_level")
    pca = check_pca(pca, error=EstimationError)  # 0 means no reduction (it used to keep 0 components)
    for est_name in estimators:
        estimator_tags(est_name)  # an unknown name is refused before any work
    missing = [f for f in order if f not in factors]
    if missing:
        raise EstimationError(f"factor {missing[0]!r} not given; available: {', '.join(factors)}")
    shape = np.shape(z)
    if len(shape) != 2:
        raise EstimationError(f"Z has shape {shape}: give a 2-D array, one row per sample and one column per feature "
                              "(one feature: z[:, None]; more axes: z.reshape(len(z), -1))")
    n = len(z)
    for name in order:
        absent = missing_labels(factors[name])
        if absent.any():
            raise EstimationError(
                f"factor {name!r} has {int(absent.sum())} missing label{'s' if absent.sum() != 1 else ''} (None, NaN or "
                f"empty; first: row {int(np.flatnonzero(absent)[0])}): drop those rows from Z and every factor "
                "(keep = ~mask; z[keep], labels[keep]), or give them a class of their own")
    merged = {}
    if rare_classes == "merge":
        factors, labels, merged = merge_rare_classes(factors, order, folds, labels)
    codes = {}
    for name in order:
        col = np.asarray(factors[name])
        if len(col) != n:
            raise EstimationError(f"factor {name!r} has {len(col)} labels but Z has {n} rows; pass one per row")
        codes[name] = np.unique(col, return_inverse=True)[1].reshape(-1)
        if codes[name].max(initial=0) == 0:
            raise EstimationError(f"factor {name!r} has one class; I(Z;{name}) is 0 by definition: drop it")
    check_class_sizes({f: np.asarray(factors[f]) for f in order}, folds, labels)  # rows per class vs folds
    specs = chain_specs(order, direct, difference)
    groups, groups_name = row_groups(z, groups, groups_name)
    # one fold plan per estimator for the whole chain, stratified by all factors
    all_joint = joint_codes([codes[f] for f in order])
    result = ChainResult(factors=order, unit=unit,
                         settings=chain_settings(estimators, seeds, folds, pca, ci_level, seed, permutations,
                                                 codelength, controls, unit, **estimator_kwargs),
                         merged_classes=merged)
    from contextlib import nullcontext

    from matprobe.progress import Progress, track

    external = isinstance(progress, Progress)
    bar = progress if external else track("mi", len(estimators) * len(specs), enabled=bool(progress),
                                          unit="estimates")
    k = len(order)
    with (nullcontext() if external else bar):
        for est_name in estimators:
            est = make_estimator(est_name, seeds=seeds, folds=folds, pca=pca, unit=unit, ci_level=ci_level,
                                 seed=seed, **estimator_kwargs)
            ests = estimate_terms(est, estimator_tags(est_name), z, codes, specs, plan_groups=all_joint,
                                  pointwise=pointwise, raw=factors, labels=labels, progress=bar,
                                  permutations=permutations, permute_first=k, permutation_seed=seed,
                                  controls=controls, control_groups=control_groups,
                                  groups=groups, groups_name=groups_name,
                                  codelength=codelength and not any(
                                      "codelength" in (e.diagnostics or {})
                                      for items in result.terms.values() for _, e in items))
            items = [ChainTerm(spec.name, e) for spec, e in zip(specs[:k], ests[:k])]
            result.terms[est_name] = items
            if direct or difference:  # of one factor: the chain's term itself (not estimated twice)
                result.direct[est_name] = ests[k] if len(ests) > k else items[0].estimate
            if difference:
                prefix = ([items[0].estimate.value] + [e.value for e in ests[k + 1:]]
                          + [result.direct[est_name].value])
                result.difference[est_name] = [prefix[0]] + [prefix[j] - prefix[j - 1] for j in range(1, k)]
    mark_merged_terms(result)
    return result


def _stratum_names(given, raw, labels, c):
    """{stratum code: {factor: label}} from the raw columns (vocabulary codes or strings)."""
    out = {}
    for code in np.unique(c):
        row = np.flatnonzero(c == code)[0]
        names = {}
        for g in given:
            v = np.asarray(raw[g])[row]
            names[g] = labels[g][int(v)] if labels and g in labels else (v.item() if hasattr(v, "item") else v)
        out[int(code)] = names
    return out


def results_json(result: ChainResult, *, store: str = "", fingerprint: str = "", layer: str = "",
                 pool: str = "", numerics: dict | None = None) -> dict:
    """The MI results document of docs/ARCHITECTURE.md (one entry per term and estimator).
    numerics: the computing process's `numerics.numerics_summary()` (portable or not, CPU model)."""
    terms, strata = [], []
    for est, items in result.terms.items():
        for j, (term, e) in enumerate(items):
            terms.append({"term": term, "target": result.factors[j], "given": result.factors[:j],
                          "estimator": est, "estimate": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high,
                          "ci_level": e.ci_level, "h_upper": e.h_upper, "n": e.n_eval,
                          "clipped": e.clipped, "degenerate": e.degenerate, "note": note_in_unit(e.note, e.unit, (e.h_upper, e.value)),
                          "flags": list(e.flags), "bound": e.bound,
                          "chain_difference": result.difference.get(est, [None] * len(items))[j],
                          **{key: e.diagnostics[key] for key in TERM_DIAGNOSTICS if (e.diagnostics or {}).get(key)},
                          **({"pointwise_summary": e.diagnostics["pointwise_summary"].to_dict(result.row_ids)}
                             if (e.diagnostics or {}).get("pointwise_summary") else {})})
            if j > 0:
                for s in e.strata:
                    entry = s.to_dict()  # the file's key order: target, given, estimator, then the rest
                    strata.append({"target": result.factors[j], "given": entry.pop("given"), "estimator": est,
                                   **entry})
    direct = {}
    for est, d in result.direct.items():
        direct = {"term": term_name(",".join(result.factors), []), "estimator": est, "estimate": d.value,
                  "ci_low": d.ci_low, "ci_high": d.ci_high, "ci_level": d.ci_level, "h_upper": d.h_upper,
                  "n": d.n_eval, "clipped": d.clipped, "degenerate": d.degenerate,
                  "note": note_in_unit(d.note, d.unit, (d.h_upper, d.value)),
                  "flags": list(d.flags), "bound": d.bound,
                  "sum_of_terms": sum(e.value for _, e in result.terms[est])}
        break  # the first estimator's direct term (the default one when listed first)
    return {"kind": "matprobe.mi", "format_version": 1, "store": store, "store_fingerprint": fingerprint,
            "layer": layer, "pool": pool, "unit": result.unit, "factors": result.factors,
            "ci_level": result.settings.get("level"), "settings": result.settings,
            **({"numerics": numerics} if numerics else {}),
            "terms": terms, "strata": strata, "direct": direct,
            "direct_all": [{"estimator": k, "estimate": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high}
                           for k, v in result.direct.items()],
            "agreement": result.agreement(),
            **({"merged_classes": result.merged_classes} if result.merged_classes else {})}


def _estimate_from_entry(t: dict, unit: str, strata: list, extra: dict) -> MIEstimate:
    """An `MIEstimate` from one term entry of a results document."""
    return MIEstimate(value=t["estimate"], ci_low=t["ci_low"], ci_high=t["ci_high"], ci_level=t.get("ci_level"),
                      unit=unit, n_train=0, n_eval=t.get("n", 0), estimator=t["estimator"],
                      diagnostics=dict(extra), h_upper=t.get("h_upper", float("nan")),
                      clipped=bool(t.get("clipped", False)), degenerate=bool(t.get("degenerate", False)),
                      note=t.get("note", ""), strata=strata, bound=t.get("bound") or "two-sided",
                      flags=list(t.get("flags") or []))


OUT_KINDS = {".json": "", ".csv": ""}  # what `write_results` writes


def check_out_path(out) -> None:
    """Refuse an --out name we cannot write before any estimation is spent."""
    from matprobe.io import check_out_suffix

    check_out_suffix(out, OUT_KINDS, EstimationError)


def write_results(result: ChainResult, out, **meta) -> None:
    """Write `.json` (the results document) or `.csv` (the tidy table) atomically."""
    from pathlib import Path

    from matprobe.io import atomic_path

    check_out_path(out)
    out = Path(out)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".json":
            tmp.write_text(json.dumps(results_json(result, **meta), indent=2, default=_jsonable))
        else:
            result.frame().to_csv(tmp, index=False)


def _jsonable(o):
    """numpy values as numbers; anything else as its string (parameters such as tuples of names)."""
    try:
        return numpy_to_json(o)
    except TypeError:
        return str(o)


def run_store(path, factors: list[str], layer: str | None = None, pool: str | None = None,
              **kwargs) -> tuple[ChainResult, dict]:
    """chain_terms on one (layer, pool) of an embedding store; returns (result, metadata).
    layer/pool None = the defaults, negative layers from the end (`EmbeddingStore.resolve_feature`).
    groups: as `chain_terms`, or the name of a sample column; default: the image column
    (`store_groups`)."""
    from matprobe.store import EmbeddingStore

    factors = check_factors(factors)  # refused before the store is read
    check_level(kwargs.get("ci_level", DEFAULTS.level), "ci_level")
    with EmbeddingStore.open(path) as st:
        layer, pool = st.resolve_feature(layer, pool)
        cols, vocab = {}, {}
        for name in factors:
            try:
                codes, labels = st.factor(name)
            except (KeyError, ValueError) as exc:
                raise StoreError(f"{path}: factor {name!r} is not a label column of this store ({exc}); "
                                 "use one of the store's sample columns") from None
            cols[name], vocab[name] = np.asarray(codes), tuple(labels)
        st.require_complete("estimating MI")
        z = st.read(layer, pool)
        meta = {"store": str(path), "fingerprint": st.content_id, "layer": str(layer), "pool": str(pool)}
        row_ids = np.asarray(st.ids).astype(str)
        samples = st.samples()
        images = image_column(samples)
        if kwargs.get("groups") is None or isinstance(kwargs["groups"], str):
            groups, name = store_groups(samples, kwargs.get("groups"), path)
            if groups is not None:
                kwargs["groups"], kwargs["groups_name"] = groups, name
        if kwargs.get("controls") and kwargs.get("control_groups") is None and images is not None:
            # control labels fixed per image: rows of one image share theirs (Hewitt & Liang 2019)
            kwargs["control_groups"] = images
    n_rows = len(z)
    unlabelled = {name: int((cols[name] < 0).sum()) for name in factors}
    for name in factors:
        if (cols[name] < 0).any():
            keep = cols[name] >= 0
            z = z[keep]
            cols = {k: v[keep] for k, v in cols.items()}
            row_ids = row_ids[keep]
            for key in ("control_groups", "groups"):
                if kwargs.get(key) is not None:
                    kwargs[key] = np.asarray(kwargs[key])[keep]
    meta["n_rows"], meta["n_used"] = n_rows, len(z)
    if len(z) < n_rows:  # rows without a label for some factor cannot enter any term
        missing = ", ".join(f"{k} {v}" for k, v in unlabelled.items() if v)
        meta["note"] = (f"{len(z)} of {n_rows} rows used: {n_rows - len(z)} have no label for "
                        f"{'/'.join(factors)} (unlabelled per factor: {missing})")
    # a null (interval below 0, constant features) is a result: clipped and flagged by the
    # estimator, written like any other (issue 22), never refused
    result = chain_terms(z, cols, order=factors, labels=vocab, **kwargs)
    # the process that computed (a portable child's, where asked): numbers reproduce to the bit
    # only with the same numerics on the same CPU model
    from matprobe.numerics import numerics_summary

    meta["numerics"] = numerics_summary()
    result.meta = dict(meta)
    result.row_ids = row_ids.tolist()
    return result, meta
