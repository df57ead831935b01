"""Paired comparison of one MI term between two stores (checkpoints) or two layers of one store.

The papers' claim is comparative (CrossMed §VI, Table IX: Related-trained checkpoints encode
more of the held-out triplet than Unrelated-trained ones), so the difference is estimated on
the *same* samples: both sides use the same folds and seeds, every held-out row gets a
pointwise term on each side (its row mean is the estimate, `base.pointwise_terms`), and

    ΔI = I_A - I_B = mean_i (r_A,i - r_B,i)

has a paired bootstrap over rows (resampled within strata of the conditioning set, so p(c)
stays fixed as in the estimators' own intervals; rows of one item, an image seen in several rows,
drawn together, and kept in one fold on both sides, as `mi` keeps them). The interval is a normal (Wald) interval
Δ ± z·SE around the estimate, whose SE is the bootstrap SE (not a percentile or BCa interval), with the seed spread added in quadrature and, for the probe, the difference of the
two sides' learning-curve corrections times EXTRAPOLATION_SLACK added to both ends (the same
slack the single estimates carry); the p-value inverts that same interval, so p < 1 - level exactly when the
interval excludes 0.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from matprobe.checks import check_class_sizes, check_factors, check_level, check_rare_classes, check_resamples
from matprobe.data.entropy import conditional_entropy, joint_codes
from matprobe.defaults import DEFAULTS
from matprobe.errors import EstimationError, StoreError
from matprobe.factors import FACTOR_ALIASES
from matprobe.mi.base import plan_folds
from matprobe.mi.chain import (
    TermSpec,
    chain_specs,
    estimate_terms,
    grouped_plan_folds,
    merge_rare_classes,
    merged_classes_phrase,
    store_groups,
    term_name,
)
from matprobe.mi.interface import LOWER, NEAR_SATURATION, near_saturation
from matprobe.mi.paired import PairedDifference, paired_difference  # noqa: F401 (public here too)
from matprobe.mi.prep import identical_rows, joined_groups
from matprobe.mi.registry import estimator_tags, make_estimator
from matprobe.store_checks import check_same_records_paths
from matprobe.units import NATS, check_unit, from_nats


@dataclass
class Comparison:
    """One term compared on shared samples: each side's estimate and the paired ΔI.

    side_a, side_b: plain dicts (keys such as "estimate", "ci_low", "ci_high", "bound", as JSON
    writes them: ``c.side_a["estimate"]``); difference: a `PairedDifference` with attributes
    (``c.difference.delta``, ``.ci_low``, ``.ci_high``, ``.p_value``); `.frame()` gives all three
    as tidy rows."""

    term: str
    side_a: dict[str, Any]
    side_b: dict[str, Any]
    difference: PairedDifference
    estimator: str
    seeds: int
    folds: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = "matprobe.compare"
        out["format_version"] = 1
        return out

    def frame(self):
        """Tidy rows: side A, side B and their paired difference "A - B" (its estimate ΔI), each with
        ci_low / ci_high, bound, p (the difference's), n and unit, as `compare --format csv` writes them."""
        from matprobe.present.views import comparison_frame

        return comparison_frame(self)

    def to_table(self):
        """The `matprobe compare` display table (matprobe.present.Table), its note among the footnotes."""
        from matprobe.present.views import comparison_table

        return comparison_table(self)


def parse_term(term: str) -> tuple[str, list[str]]:
    """'T|M,A', 'I(Z;T|M,A)' or 'M' -> (target, [given...])."""
    text = term.strip()
    m = re.fullmatch(r"I\(\s*Z\s*;(.*)\)", text)
    if m:
        text = m.group(1)
    target, _, given = text.partition("|")
    target = target.strip()
    given_l = [g.strip() for g in given.split(",") if g.strip()]
    if not target or "," in target:
        raise EstimationError(f"--term {term!r}: write one target and its conditioning set, e.g. 'T|M,A'")
    if "|" in given:
        raise EstimationError(f"--term {term!r}: one '|' separates the target from its conditioning set; "
                              "write e.g. 'T|M,A'")
    odd = [g for g in [target, *given_l] if re.search(r"[;()|]", g)]
    if odd or (given.strip() and any(not g.strip() for g in given.split(","))):
        raise EstimationError(f"--term {term!r}: {', '.join(map(repr, odd)) or 'an empty name'} is not a label "
                              "column name; write the target and its conditioning set as 'T|M,A'")
    if target in given_l:
        raise EstimationError(f"--term {term!r}: the target {target!r} is also conditioned on; drop it from the set")
    return target, given_l


def compare_arrays(z_a, z_b, y, c=None, *, estimator: str = DEFAULTS.estimator, seeds: int = DEFAULTS.seeds,
                   folds: int = DEFAULTS.folds, pca: int | None = DEFAULTS.pca, seed: int = DEFAULTS.seed,
                   sub=None, ci_level: float = DEFAULTS.level, n_boot: int = DEFAULTS.n_boot, unit: str = NATS,
                   groups=None, groups_name: str = "the groups given",
                   **estimator_kwargs) -> tuple[dict, dict, PairedDifference]:
    """I(Z_A;Y|C) vs I(Z_B;Y|C) on the same rows, with the same folds and seeds.

    groups: a group per row (an image, an item seen several times): each group's rows stay in one
    fold, on one side of the splits inside it, and are drawn together by the paired bootstrap.
    Default: rows identical in Z_A or in Z_B are one group.
    Returns (side A summary, side B summary, PairedDifference). Each summary holds the
    estimator's own value and interval. The estimator must be tagged `pointwise`.
    """
    check_unit(unit)
    y = np.asarray(y)
    n = len(y)
    if len(z_a) != n or len(z_b) != n:
        raise EstimationError(f"Z_A has {len(z_a)} rows, Z_B {len(z_b)}, labels {n}: pass the same rows")
    c_arr = np.zeros(n, dtype=np.int64) if c is None else np.unique(np.asarray(c), return_inverse=True)[1].ravel()
    # one fold assignment for both sides, stratified by (y, c) as make_plan does
    strata = joint_codes([np.unique(y, return_inverse=True)[1].ravel(), c_arr])
    tags = estimator_tags(estimator)
    codes = {"y": y, "c": c_arr} if c is not None else {"y": y}
    if sub is not None:
        codes["sub"] = np.asarray(sub)
    spec = TermSpec(("y",), ("c",) if c is not None else (), ("sub",) if sub is not None else ())
    groups, groups_name = _comparison_groups(z_a, z_b, groups, groups_name)
    fold, units = _shared_folds(strata, groups, groups_name, folds, seed)
    sides = []
    for z in (z_a, z_b):
        est = make_estimator(estimator, seeds=seeds, folds=folds, pca=pca, seed=seed, ci_level=ci_level,
                             unit=NATS, **estimator_kwargs)
        # without groups the plan is over the given folds, as ever (the same bits); with them the
        # plan draws the same grouped folds itself and keeps the groups for the splits inside a fold
        grouped = {"fold": fold} if groups is None else {"plan_groups": strata, "groups": groups,
                                                          "groups_name": groups_name}
        sides.append(estimate_terms(est, tags, z, codes, [spec], pointwise=True, **grouped)[0])
    # the between-fold fitting variance exists only where folds were fitted
    return _paired_sides(*sides, c_arr, fold if tags.uses_fold_plan else None, ci_level=ci_level, n_boot=n_boot,
                         seed=seed, unit=unit, units=units if tags.uses_fold_plan else groups)


def _comparison_groups(z_a, z_b, groups, groups_name: str):
    """(a group per row, what they are) of a comparison: the groups given (their length checked by
    `chain.grouped_plan_folds`), or rows identical in Z_A or in Z_B (one item seen several times), or
    (None, name) where none repeat."""
    if groups is not None:
        return np.asarray(groups), groups_name
    joined = joined_groups(identical_rows(np.asarray(z_a)), identical_rows(np.asarray(z_b)))
    return joined, "identical rows of Z_A or Z_B"


def _shared_folds(strata, groups, groups_name: str, folds: int, seed: int):
    """(the fold id per row both sides' plans use, the groups the paired bootstrap draws or None):
    `estimate_terms`' grouped folds where they apply (`chain.grouped_plan_folds`), else its plan's."""
    if groups is not None:
        fold, _ = grouped_plan_folds(strata, groups, groups_name, folds, seed)
        if fold is not None:
            return fold, groups
    return plan_folds(strata, folds, seed), None


def _paired_sides(a, b, c_arr, fold, *, ci_level, n_boot, seed, unit,
                  units=None) -> tuple[dict, dict, PairedDifference]:
    """(A's summary, B's summary, the paired ΔI of their per-row terms) of two estimates of one term
    on the same rows, folds and seeds; exactly 0 where the term is degenerate (H(Y|C) = 0)."""
    summaries = [_summary(e, unit) for e in (a, b)]
    constant = ["constant-features" in e.flags for e in (a, b)]
    if (a.degenerate and not constant[0]) or (b.degenerate and not constant[1]) or all(constant):
        why = "constant features on both sides" if all(constant) else "H(Y|C) = 0 on both sides"
        zero = PairedDifference(0.0, 0.0, 0.0, ci_level, 1.0, 0.0, len(c_arr), unit, method=f"exactly 0: {why}")
        return summaries[0], summaries[1], zero
    # a side whose features are constant (a layer whose last token is the same in every prompt) has
    # MI 0 by definition: its per-row terms are 0 (it read "ΔI = 0, p = 1" beside 1.3 nats on the other side)
    pa, pb = (_zero_terms(b.diagnostics["pointwise"]) if constant[0] else a.diagnostics["pointwise"],
              _zero_terms(a.diagnostics["pointwise"]) if constant[1] else b.diagnostics["pointwise"])
    diff = paired_difference(pa["values"], pb["values"], c_arr, pa.get("corr"), pb.get("corr"),
                             folds=fold, units=units, ci_level=ci_level, n_boot=n_boot, seed=seed, unit=unit)
    if both_saturated(*summaries):
        # two terms at their caps differ by the caps' rounding, not by the checkpoints: ΔI and its
        # interval stay, but a p would read as a finding (a study's p 4.5e-44 for ΔI = 2.8e-05 nats)
        diff.p_value = None
    return summaries[0], summaries[1], diff


def _zero_terms(other: dict) -> dict:
    """The per-row terms of a side whose MI is 0 by definition, shaped as the other side's."""
    out = {"values": np.zeros_like(np.asarray(other["values"], dtype=np.float64))}
    if other.get("corr") is not None:
        out["corr"] = np.zeros_like(np.asarray(other["corr"], dtype=np.float64))
    return out


def near_saturated(side: dict) -> bool:
    """A side's estimate is at its entropy cap: flagged `near-saturated`, or at NEAR_SATURATION
    of H(Y|C) or more (`mi.interface.NEAR_SATURATION`)."""
    return "near-saturated" in (side.get("flags") or ()) or near_saturation(side.get("estimate"), side.get("h_upper"))


def both_saturated(side_a: dict, side_b: dict) -> bool:
    """Both sides at their entropy caps: the term cannot separate the checkpoints, so the paired
    ΔI gets no p (`PairedDifference.p_value` None)."""
    return near_saturated(side_a) and near_saturated(side_b)


SATURATED_NOTE = ("both sides at their entropy caps (estimates at {share} of H(Y|C) or more): the term cannot "
                  "separate the checkpoints, so ΔI (with its interval) is the difference of the caps' "
                  "shortfalls and has no p (p n/a)")


def _summary(e, unit) -> dict:
    return {"estimate": from_nats(e.value, unit), "ci_low": from_nats(e.ci_low, unit),
            "ci_high": from_nats(e.ci_high, unit), "ci_level": e.ci_level,
            "bound": e.bound, "h_upper": from_nats(e.h_upper, unit), "clipped": e.clipped,
            "degenerate": e.degenerate, "note": e.note, "flags": list(e.flags)}


# ---------------------------------------------------------------------- stores

def _feature_key(st, path, layer, pool, role):
    """The one layer/pool resolution (`EmbeddingStore.resolve_feature`), B's flags named for B."""
    from matprobe.store import resolve_feature

    return resolve_feature(st.feature_keys(), layer, pool, st.provenance, f"{path} ({role})",
                           ("--layer-b", "--pool-b") if role == "B" else ("--layer", "--pool"))


def _narrow_default(path, order: list[str], used: int) -> str:
    """Which later factor of `mi`'s default chain `order` (past the term's `used` ones) the store
    lacks as a column, or holds with one class (`mi` refuses both); "" where it holds them all."""
    from matprobe.store import EmbeddingStore

    later = order[used:]
    if not later:
        return ""
    try:
        with EmbeddingStore.open(path) as st:
            for name in later:
                try:
                    codes, _ = st.factor(name)
                except StoreError:
                    return name
                if np.unique(codes[codes >= 0]).size < 2:
                    return name
    except (OSError, StoreError):
        return ""  # said by load_side, with the store's own error
    return ""


def load_side(path, factors: list[str], layer, pool, role="A", groups: str | None = None):
    """(ids, {factor: labels as str}, {factor: (the store's label codes, its vocabulary)}, Z,
    meta, (a group per row or None, what the groups are): `chain.store_groups` with `groups`) of
    one store side, rows in store order (codes -1: no label)."""
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(path) as st:
        layer, pool = _feature_key(st, path, layer, pool, role)
        done = st.done
        if not done.all():
            raise StoreError(f"{path} ({role}): {int((~done).sum())} of {st.n} rows have no features yet; "
                             "finish the extraction (rerun `matprobe extract`) before comparing")
        labels, codes_by = {}, {}
        for name in factors:
            try:
                codes, vocab = st.factor(name)
            except StoreError:
                raise StoreError(f"{path} ({role}): no label column {name!r}; have "
                                 f"{', '.join(st.label_columns())}") from None
            voc = np.asarray(list(vocab) + [""], dtype=object)  # code -1 (missing) -> ""
            labels[name] = voc[codes].astype(str)
            codes_by[name] = (codes, tuple(vocab))
        z = st.read(layer, pool)
        meta = {"store": str(path), "fingerprint": st.content_id, "layer": layer, "pool": pool}
        ids = st.ids.astype(str)
        grouping = store_groups(st.samples(), groups, path)
    return ids, labels, codes_by, z, meta, grouping


def align(ids_a, ids_b, path_a, path_b) -> np.ndarray:
    """Row order of B that matches A's ids; refuses differing samples, with counts."""
    set_a, set_b = set(ids_a.tolist()), set(ids_b.tolist())
    if set_a != set_b:
        only_a, only_b = len(set_a - set_b), len(set_b - set_a)
        raise StoreError(f"{path_a} and {path_b} hold different samples: {only_a} ids only in A, "
                         f"{only_b} only in B (of {len(set_a)} and {len(set_b)}); compare stores "
                         "extracted from the same dataset file")
    pos_b = {v: i for i, v in enumerate(ids_b.tolist())}
    return np.array([pos_b[v] for v in ids_a.tolist()], dtype=np.int64)


def check_same_labels(ids, labels_a, labels_b, path_a, path_b) -> None:
    """Both sides must label every shared sample alike (same dataset), else one line with counts."""
    for name in labels_a:
        la, lb = labels_a[name], labels_b[name]
        bad = np.flatnonzero(la != lb)
        if bad.size:
            i = int(bad[0])
            raise StoreError(f"{path_a} and {path_b} label {bad.size} of {len(la)} samples differently "
                             f"for factor {name!r} (first: id {str(ids[i])!r}: {str(la[i])!r} vs {str(lb[i])!r}); "
                             "they come from different datasets: compare stores extracted from one items file")


def _term_codes(labels, target, given, keep):
    y = np.unique(labels[target][keep], return_inverse=True)[1].ravel()
    c = joint_codes([np.unique(labels[g][keep], return_inverse=True)[1].ravel() for g in given]) if given else None
    return y, c


def compare_stores(store_a, store_b=None, term: str = "T|M,A", *, layer=None, pool=None,
                   layer_b=None, pool_b=None, factors=None, estimator: str = DEFAULTS.estimator,
                   seeds: int = DEFAULTS.seeds, folds: int = DEFAULTS.folds, pca: int | None = DEFAULTS.pca,
                   ci_level: float = DEFAULTS.level, n_boot: int = DEFAULTS.n_boot, unit: str = NATS,
                   seed: int = 0, rare_classes: str = "refuse", groups: str | None = None,
                   **estimator_kwargs) -> Comparison:
    """ΔI of one term between two stores, or between two (layer, pool) keys of one store.

    The term is estimated as `mi` estimates it, within the chain over `factors` (default: `mi`'s
    default chain M, A, T where the term is one of its terms, 'M', 'A|M' or 'T|M,A'; else the
    term's conditioning set, then its target: 'Y|M,A,T' in the chain M, A, T, Y), with that chain's
    fold plan: rows in A's order (B's aligned to them by id) and A's label codes. So side A's
    estimate is the one `mi STORE_A --factors ...` gives with the same seeds, folds and PCA,
    and side B's is `mi`'s on B wherever B lists the samples in A's order with A's vocabulary
    (stores extracted from one dataset file do); `Comparison.note` says when B's order differs.

    store_b None (or the same path) with layer_b/pool_b compares two layers of store_a;
    layer_b/pool_b default to layer/pool. Refuses differing sample ids (with counts),
    differing labels, a missing layer/pool on either side, a term that is not one of the
    chain's, and a term that is degenerate (H(Y|C) = 0) on one side only. rare_classes: classes
    with fewer than 2 rows per fold are refused ("refuse", as `mi` does) or merged into one per
    factor ("merge", as `mi --rare-classes merge` does, said in the note).
    groups: a sample column of A whose rows are one item (`mi --groups`); default, as `mi`: A's image
    column (each image one item), else rows identical in Z_A or in Z_B. A group's rows stay
    in one fold on both sides, and the paired bootstrap draws groups.
    """
    check_level(ci_level, "ci_level"), check_resamples(n_boot)  # ci_level 95, --n-boot 0 (matprobe.checks)
    check_rare_classes(rare_classes)
    target, given = parse_term(term)
    order = chain_order(target, given, factors)
    narrowed = factors is None and _narrow_default(store_a, order, len(given) + 1)
    if narrowed:  # `mi`'s default chain needs a column A lacks (or has one class of): the term's own
        order = [*given, target]
    store_b = store_a if store_b is None else store_b
    ids_a, lab_a, codes_a, z_a, meta_a, (group_of_row, groups_name) = load_side(store_a, order, layer, pool, "A",
                                                                                 groups)
    same_store = str(store_b) == str(store_a)
    if same_store and layer_b is None and pool_b is None:
        raise StoreError(f"{store_a}: comparing a store with itself needs --layer-b or --pool-b "
                         "(two layers or pools of one store)")
    # B's defaults are A's request, resolved on B (`-1` is B's own last block)
    lb_key = layer if layer_b is None else layer_b
    pb_key = pool if pool_b is None else pool_b
    ids_b, lab_b, _, z_b, meta_b, _ = load_side(store_b, order, lb_key, pb_key, "B")
    # rows in A's order (`mi`'s on A), B's aligned to them: the folds are those of `mi` on A
    order_b = align(ids_a, ids_b, store_a, store_b)
    b_reordered = not np.array_equal(order_b, np.arange(len(order_b)))
    z_b = z_b[order_b]
    lab_b = {k: v[order_b] for k, v in lab_b.items()}
    keep = np.ones(len(ids_a), dtype=bool)
    for name in order:
        keep &= (lab_a[name] != "") & (lab_b[name] != "")  # rows missing a label take no part (as in `mi`)
    _refuse_one_class_target(lab_a, keep, target, given, order, store_a)
    # degeneracy first: it names the problem more precisely than the label check below
    h = [conditional_entropy(*_term_codes(lab, target, given, keep)) for lab in (lab_a, lab_b)]
    if (h[0] <= 1e-12) != (h[1] <= 1e-12):
        which, path = ("A", store_a) if h[0] <= 1e-12 else ("B", store_b)
        cond = f"H({target}|{','.join(given)})" if given else f"H({target})"
        raise EstimationError(f"term {term_name(target, given)} is degenerate in store {which} only ({path}: "
                              f"{cond} = 0 there, {max(h):.4f} nats in the other); the stores do not share "
                              "the conditioning set: compare stores of the same dataset")
    check_same_labels(ids_a, lab_a, lab_b, store_a, store_b)
    check_same_records_paths([store_a, store_b])  # same records, not only the same ids and labels
    side_a, side_b, diff, merged = compare_chain_arrays(
        z_a[keep], z_b[keep], {f: codes_a[f][0][keep] for f in order}, order, len(given),
        labels={f: codes_a[f][1] for f in order}, estimator=estimator,
        seeds=seeds, folds=folds, pca=pca, seed=seed, ci_level=ci_level, n_boot=n_boot, unit=unit,
        rare_classes=rare_classes, groups=None if group_of_row is None else group_of_row[keep],
        groups_name=groups_name, **estimator_kwargs)
    side_a.update(meta_a)
    side_b.update(meta_b)
    note = "" if keep.all() else f"{int((~keep).sum())} rows without a {'/'.join(order)} label left out"
    if b_reordered:
        note = (note + "; " if note else "") + (
            "B lists the samples in another order than A: its rows were aligned to A's, so its folds are "
            "those of `mi` on A, and its estimate can differ from `mi`'s on B by fold noise")
    if narrowed:
        note = (note + "; " if note else "") + (
            f"estimated within the chain {','.join(order)}, not `mi`'s default {','.join(DEFAULTS.factors)}, "
            f"whose factor {narrowed} store A does not hold as a column of two classes or more")
    if h[0] <= 1e-12:
        note = (note + "; " if note else "") + "H(Y|C) = 0 on both sides: ΔI is exactly 0"
    for name, entry in merged.items():
        note = (note + "; " if note else "") + f"rare classes merged on both sides ({merged_classes_phrase(name, entry)})"
    saturated = diff.p_value is None  # both sides at their caps (compare_chain_arrays)
    clipped = [(tag, side) for tag, side in (("A", side_a), ("B", side_b)) if side.get("clipped")]
    if clipped:
        # ΔI is the paired difference of the per-row terms, whose means are the raw estimates: a side shown
        # at its cap, or at 0 (clipped), then differs from the estimate ΔI uses (a study read A 0.3967,
        # B 0.3967, ΔI +0.0742; another A 0.5427, B 0.0000, ΔI +0.8174, B's raw estimate -0.2747)
        from matprobe.present import shown_difference

        shown = shown_difference(side_a, side_b)
        how = [f"{tag}'s raw estimate " + ("fell below 0 and is shown as 0" if "below-zero" in (side.get("flags") or ())
                                          else "exceeded its entropy cap and is shown clipped")
               for tag, side in clipped]
        note = (note + "; " if note else "") + (
            f"{' and '.join(how)}: ΔI {diff.delta:+.4f} {unit} is the difference of the raw estimates (the "
            f"per-row terms'), the shown estimates differ by {shown:+.4f}")
        # two MIs within their caps differ by at most the larger cap: a raw estimate below 0 (the critic
        # predicting worse than the label frequencies) can push the raw difference past it
        most = side_a["h_upper"] if diff.delta > 0 else side_b["h_upper"]
        if abs(diff.delta) > most:  # a p would read as a finding about the MIs (a study's p 0.03)
            diff.p_value = None
            note += (f"; |ΔI| exceeds {most:.4f} {unit}, the most two MIs within their caps can differ by here: "
                     "it is the critics' difference, not the MIs', and has no p (p n/a)")
    if saturated:
        note = (note + "; " if note else "") + SATURATED_NOTE.format(share=f"{NEAR_SATURATION:.0%}")
    if estimator_tags(estimator).bound == LOWER:
        note = (note + "; " if note else "") + (f"{estimator} gives lower bounds: ΔI compares two lower "
                                                "bounds, not the true MIs")
    else:
        one_sided = [tag for tag, side in (("A", side_a), ("B", side_b)) if side["bound"] == LOWER]
        if one_sided:
            # a one-sided side's shortfall is not bounded, so neither is the difference's error
            which = " and ".join(one_sided)
            note = (note + "; " if note else "") + (
                f"{which}'s estimate{'s are' if len(one_sided) > 1 else ' is'} one-sided (the estimator's "
                "shortfall is not bounded there): ΔI" + (" and its p" if diff.p_value is not None else "")
                + " compare" + ("s" if diff.p_value is None else "") + " the estimates, and the true ΔI may "
                "differ by more than its interval")
    return Comparison(term=term_name(target, given), side_a=side_a, side_b=side_b, difference=diff,
                      estimator=estimator, seeds=seeds, folds=folds, note=note)


def _refuse_one_class_target(labels: dict, keep, target: str, given: list[str], order: list[str], path) -> None:
    """A term whose target has one class (a study of one task, compared on the default T|M,A) is 0 by
    definition: refused naming the class and a term the store can compare."""
    classes = np.unique(labels[target][keep])
    if classes.size != 1:
        return
    varied = [f for f in order if f != target and np.unique(labels[f][keep]).size > 1]
    hint = (f" (e.g. --term {varied[-1]}|{','.join(varied[:-1])})" if len(varied) > 1
            else f" (e.g. --term {varied[0]})" if varied else "")
    raise EstimationError(f"term {term_name(target, given)}: {target} has one class ({str(classes[0])!r}) in {path}, "
                          f"so the term is 0 by definition; compare a term whose target varies with --term{hint}")


def chain_order(target: str, given: list[str], factors=None) -> list[str]:
    """The chain whose term `target | given` is compared: `factors` (names as given to `mi
    --factors`); by default `mi`'s own default chain (M, A, T) where the term is one of its terms,
    so `compare --term M` reads the number `mi` and `sweep` give at the same settings (the chain
    sets which rows take part and the folds' strata), else the conditioning set then the target.
    Refuses a term that is not one of that chain's terms I(Z;F_j|F_1..F_j-1).

    >>> chain_order("T", ["M", "A"])
    ['M', 'A', 'T']
    >>> chain_order("M", [])  # as `mi`: I(Z;M) within the chain M, A, T
    ['M', 'A', 'T']
    >>> chain_order("label", ["M", "A", "T"])
    ['M', 'A', 'T', 'label']
    >>> chain_order("A", ["M"], ["M", "A", "T"])
    ['M', 'A', 'T']
    >>> chain_order("task", ["M", "A"], "modality,anatomy,task,label")  # names or their letters
    ['modality', 'anatomy', 'task', 'label']
    """
    if factors is None:
        default = [FACTOR_ALIASES.get(f, f) for f in DEFAULTS.factors]
        j = len(given)
        if j < len(default) and [FACTOR_ALIASES.get(f, f) for f in [*given, target]] == default[:j + 1]:
            return [*given, target, *DEFAULTS.factors[j + 1:]]  # the term's own spelling, `mi`'s chain
        return [*given, target]
    order = check_factors(factors.split(",") if isinstance(factors, str) else factors)
    column = [FACTOR_ALIASES.get(f, f) for f in order]  # M and modality name one column
    want = FACTOR_ALIASES.get(target, target)
    j = column.index(want) if want in column else -1
    if j < 0 or column[:j] != [FACTOR_ALIASES.get(g, g) for g in given]:
        chain = " + ".join(term_name(t, order[:i]) for i, t in enumerate(order))
        raise EstimationError(f"--term {term_name(target, given)} is not a term of the chain over "
                              f"{','.join(order)} ({chain}); give one of those terms, or --factors with "
                              f"{','.join([*given, target])} in this order")
    return order


def compare_chain_arrays(z_a, z_b, codes: dict, order: list[str], index: int, *, labels: dict | None = None,
                         estimator: str = DEFAULTS.estimator, seeds: int = DEFAULTS.seeds,
                         folds: int = DEFAULTS.folds, pca: int | None = DEFAULTS.pca, seed: int = DEFAULTS.seed,
                         ci_level: float = DEFAULTS.level, n_boot: int = DEFAULTS.n_boot, unit: str = NATS,
                         rare_classes: str = "refuse", groups=None, groups_name: str = "the groups given",
                         **estimator_kwargs) -> tuple[dict, dict, PairedDifference, dict]:
    """The chain's term `index` over `order` on Z_A and Z_B, estimated exactly as `chain_terms`
    estimates it (its terms, fold plan and reduction, `chain_specs`), with the same folds and
    seeds on both sides, and the paired ΔI of its per-row terms.

    codes: {factor: label codes [n]} shared by both sides (missing labels already left out);
    labels: {factor: vocabulary of the codes}, to name merged classes.
    groups: as `compare_arrays` (default: rows identical in Z_A or in Z_B).
    Returns (side A summary, side B summary, PairedDifference, {factor: merge} of rare classes).
    """
    check_unit(unit)
    n = len(z_a)
    if len(z_b) != n or any(len(codes[f]) != n for f in order):
        raise EstimationError(f"Z_A has {n} rows, Z_B {len(z_b)}: pass the same rows and one label per row")
    merged = {}
    if rare_classes == "merge":
        codes, labels, merged = merge_rare_classes(dict(codes), order, folds, labels)
    # a class missing from training folds sends held-out estimates far below 0 (`chain_terms`' check)
    check_class_sizes({f: np.asarray(codes[f]) for f in order}, folds, labels)
    raw = {f: np.asarray(codes[f]) for f in order}  # the store's codes, named by `labels` in the notes
    # as `chain_terms` encodes them: the same codes, so the same joint strata and folds
    codes = {f: np.unique(np.asarray(codes[f]), return_inverse=True)[1].reshape(-1) for f in order}
    specs = chain_specs(order)
    all_joint = joint_codes([codes[f] for f in order])
    tags = estimator_tags(estimator)
    groups, groups_name = _comparison_groups(z_a, z_b, groups, groups_name)
    sides = []
    for z in (z_a, z_b):
        est = make_estimator(estimator, seeds=seeds, folds=folds, pca=pca, seed=seed, ci_level=ci_level,
                             unit=NATS, **estimator_kwargs)
        sides.append(estimate_terms(est, tags, z, codes, specs, plan_groups=all_joint, pointwise=True, only=index,
                                    raw=raw, labels=labels, groups=groups, groups_name=groups_name)[0])
    given = order[:index]
    c_arr = joint_codes([codes[g] for g in given]) if given else np.zeros(n, dtype=np.int64)
    c_arr = np.unique(c_arr, return_inverse=True)[1].reshape(-1)
    # the plan's folds (stratified by every factor of the chain, groups kept), where folds were fitted
    fold, units = _shared_folds(all_joint, groups, groups_name, folds, seed)
    if not tags.uses_fold_plan:
        fold, units = None, groups
    return (*_paired_sides(*sides, c_arr, fold, ci_level=ci_level, n_boot=n_boot, seed=seed, unit=unit,
                           units=units), merged)


OUT_KINDS = {".json": ""}  # what `write_comparison` writes


def write_comparison(comp: Comparison, out) -> None:
    """Write the comparison as JSON (atomic)."""
    import json

    from matprobe.io import check_out_suffix, write_text_atomic

    out = check_out_suffix(out, OUT_KINDS, EstimationError)
    write_text_atomic(out, json.dumps(comp.to_dict(), indent=2, default=float))
