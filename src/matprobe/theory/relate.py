"""Information against behaviour: per (M, A, T) stratum MI vs the model's stored accuracy.

For each checkpoint (store) and each (modality, anatomy, task) stratum s with enough answered
rows: Î(Z;Y | s) (Y = the label column or the answer index; the conditional estimator's
per-stratum entries), the model's accuracy on s with its Clopper-Pearson interval, the
plug-in H(Y | s) and the Fano accuracy ceiling 1 - φ⁻¹(H(Y|s) - Î) (Cover & Thomas 2006,
Thm 2.10.1; `matprobe.theory.fano`), with K_s = max(2, classes of Y in s) as `matprobe check`
uses. Across all (checkpoint, stratum) points: Spearman's rank correlation of Î with
accuracy, a percentile bootstrap interval drawing whole strata, and a p-value from permuting whole strata
(`stratum_permutation_test`: the points of one stratum or one checkpoint are not independent, so
scipy's p, which counts every point as one, is far too small). A Fano curve
(accuracy ceiling against I for a reference K and H) is returned for plotting.

Caveat: Fano bounds what any decoder of Z could reach; the model answers from its full
state, so the ceiling is a reference, not a law, unless Z is what the answer is read from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from matprobe.data.design import answers_one_option, one_option_sentence, top_option
from matprobe.data.entropy import conditional_entropy, joint_codes
from matprobe.defaults import DEFAULTS
from matprobe.errors import EstimationError, MatprobeError, StoreError
from matprobe.mi.chain import TermSpec, estimate_terms, row_groups, store_groups
from matprobe.mi.compare import _feature_key
from matprobe.mi.registry import estimator_tags, make_estimator
from matprobe.proportions import clopper_pearson_interval
from matprobe.theory.fano import fano_min_error
from matprobe.units import NATS, check_unit, from_nats

MAT = ("modality", "anatomy", "task")


@dataclass
class Relation:
    points: pd.DataFrame  # one row per (checkpoint, stratum)
    spearman: float
    ci_low: float
    ci_high: float
    ci_level: float
    p_value: float
    n_points: int
    fano_curve: list[dict[str, float]] = field(default_factory=list)
    reference: dict[str, Any] = field(default_factory=dict)
    unit: str = NATS
    notes: list[str] = field(default_factory=list)
    # how p_value was computed (`stratum_permutation_test`): over how many strata and checkpoints,
    # the arrangements counted, whether all were enumerated
    p_method: str = ""
    n_strata: int = 0
    n_checkpoints: int = 0
    n_permutations: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["points"] = json_records(self.points)
        out["kind"] = "matprobe.relate"
        out["format_version"] = 1
        return out

    def frame(self) -> pd.DataFrame:
        """The points, one row per (checkpoint, stratum), with the MI interval's bound and the unit, as
        `relate --format csv` writes them."""
        from matprobe.present.views import relation_frame

        return relation_frame(self)

    def to_table(self):
        """The `matprobe relate` display table (matprobe.present.Table)."""
        from matprobe.present.views import relation_table

        return relation_table(self)


def json_records(df: pd.DataFrame) -> list[dict]:
    import json

    return json.loads(df.to_json(orient="records"))


def fano_accuracy_ceiling(mi: float, h: float, k: int) -> float:
    """Largest accuracy Fano allows for Y with H(Y|s) = h nats and I(Z;Y|s) = mi nats."""
    mi = min(max(mi, 0.0), h)
    return 1.0 - fano_min_error(max(h - mi, 0.0), k)


MIN_DEFINED_RESAMPLES = 0.95  # the share of bootstrap resamples that must have a rank correlation


def spearman_with_interval(x, y, level: float = 0.95, n_boot: int = 2000, seed: int = 0, clusters=None):
    """(rho, ci_low, ci_high, p): percentile bootstrap; p from scipy (which counts every point as
    independent). `clusters`: each point's cluster (its stratum): the bootstrap then draws whole
    clusters with replacement, all of a drawn cluster's points together, since points sharing a
    stratum are alike and a bootstrap over points made the interval too narrow in the same way
    scipy's p is too small (`stratum_permutation_test`); without it, over (x, y) pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        raise EstimationError(f"rank correlation needs at least 3 (checkpoint, stratum) points, got {len(x)}; "
                              "add checkpoints or lower --min-stratum")
    res = stats.spearmanr(x, y)
    rho, p = float(res.statistic), float(res.pvalue)
    rng = np.random.default_rng([seed, 31])
    if clusters is None:
        idx = rng.integers(0, len(x), size=(n_boot, len(x)))
        boot = _rank_correlations(x[idx], y[idx])
    else:
        codes = pd.factorize(pd.Series(list(clusters), dtype=object))[0]
        members = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)]
        draws = rng.integers(0, len(members), size=(n_boot, len(members)))
        if len({len(m) for m in members}) == 1:  # every stratum at every checkpoint: one array
            idx = np.stack(members)[draws].reshape(n_boot, -1)
            boot = _rank_correlations(x[idx], y[idx])
        else:
            boot = np.array([_rank_correlations(x[i][None], y[i][None])[0]
                             for i in (np.concatenate([members[k] for k in row]) for row in draws)])
    # resamples with a constant column have no rank correlation; where more than a few have none, the
    # rest are the draws that kept the few points that vary, and their quantiles no interval (a study
    # read [-0.545, -0.154] beside p = 1, 15 of its 16 MIs tied at 0): none is given then
    defined = np.isfinite(boot)
    if defined.mean() < MIN_DEFINED_RESAMPLES:
        return rho, float("nan"), float("nan"), p
    lo, hi = np.quantile(boot[defined], [(1 - level) / 2, (1 + level) / 2])
    return rho, float(lo), float(hi), p


def _rank_correlations(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of xs, ys [B, n] (average ranks); NaN where a row is constant."""
    rx = stats.rankdata(xs, axis=1)
    ry = stats.rankdata(ys, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    return np.where(den > 0, (rx * ry).sum(1) / np.where(den > 0, den, 1), np.nan)


# all arrangements of the strata are enumerated up to 8 strata (8! = 40320); more are sampled
ENUMERATE_MAX = 40320
N_PERMUTATIONS = 9999
PERMUTATION_CHUNK = 2048


def stratum_permutation_test(x, y, strata, checkpoints, n_perm: int = N_PERMUTATIONS, seed: int = 0,
                             enumerate_max: int = ENUMERATE_MAX) -> dict[str, Any]:
    """Two-sided p of Spearman's rho(x, y) over (checkpoint, stratum) points that respects their clusters.

    The points of one stratum (over the checkpoints) and of one checkpoint (over the strata) are not
    independent, so scipy's p, which counts each point as one, is far too small. Here y's stratum
    identities are permuted, the same permutation in every checkpoint: y'(c, s) = y(c, pi(s)). Each
    stratum's y values travel together (its dependence over the checkpoints is kept) and stay in their
    checkpoint (a shift common to a checkpoint is kept), so under "the strata's y are exchangeable
    given x" (no relation of a stratum's information with its accuracy) every arrangement is equally
    likely and the p is exact. rho is recomputed (average ranks) over the pairs present after the
    permutation; a stratum missing at a checkpoint leaves its pairs out.

    All S! arrangements are enumerated where S! <= `enumerate_max` (p = share with |rho| >= the
    observed |rho|, the identity among them: at least 1 / S!); else `n_perm` uniform draws with
    p = (1 + hits) / (1 + n_perm). Returns {"p_value", "n_strata", "n_checkpoints", "n_permutations" (the
    arrangements counted, the identity among them: 1 / it is the smallest p), "exact", "method"}.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    s_codes, s_names = pd.factorize(pd.Series(list(strata), dtype=object))
    c_codes, c_names = pd.factorize(pd.Series(list(checkpoints), dtype=object))
    n_s, n_c = len(s_names), len(c_names)
    if len(set(zip(c_codes.tolist(), s_codes.tolist()))) != len(x):
        raise EstimationError("a (checkpoint, stratum) pair appears twice among the points")
    xm, ym = np.full((n_c, n_s), np.nan), np.full((n_c, n_s), np.nan)
    xm[c_codes, s_codes], ym[c_codes, s_codes] = x, y
    exact = math.factorial(n_s) <= enumerate_max
    if exact:
        import itertools

        perms = np.array(list(itertools.permutations(range(n_s))), dtype=np.int64).reshape(-1, n_s)
    else:
        rng = np.random.default_rng([seed, 37])
        perms = np.vstack([np.arange(n_s), rng.permuted(np.tile(np.arange(n_s), (n_perm, 1)), axis=1)])
    rhos = np.concatenate([_permuted_rhos(xm, ym, perms[i:i + PERMUTATION_CHUNK])
                           for i in range(0, len(perms), PERMUTATION_CHUNK)])
    observed = rhos[0]  # the first arrangement is the identity, enumerated or not
    # NaN (a constant column) counts as no hit; the identity is one of the hits, so that with draws the
    # share is (1 + hits among the draws) / (1 + n_perm)
    hits = int((np.abs(rhos) >= abs(observed) - 1e-10).sum())
    p = hits / len(perms) if np.isfinite(observed) else float("nan")
    count = (f"all {len(perms)} arrangement{'s' if len(perms) != 1 else ''}" if exact
             else f"the observed and {n_perm} random arrangements")
    method = (f"permutation of the {n_s} strata's identities, the same across the {n_c} checkpoint"
              f"{'s' if n_c != 1 else ''} ({count})")
    return {"p_value": float(p), "n_strata": n_s, "n_checkpoints": n_c, "n_permutations": int(len(perms)),
            "exact": bool(exact), "method": method}


def _permuted_rhos(xm: np.ndarray, ym: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Spearman's rho of xm with ym's columns permuted by each row of `perms` (C x S matrices, NaN where
    a point is missing), over the pairs present in both."""
    n_p = len(perms)
    xs = np.broadcast_to(xm.reshape(1, -1), (n_p, xm.size))
    ys = ym[:, perms].transpose(1, 0, 2).reshape(n_p, -1)  # (perm, C * S)
    ok = np.isfinite(xs) & np.isfinite(ys)
    rx = stats.rankdata(np.where(ok, xs, np.nan), axis=1, nan_policy="omit")
    ry = stats.rankdata(np.where(ok, ys, np.nan), axis=1, nan_policy="omit")
    rx, ry = np.where(ok, rx, 0.0), np.where(ok, ry, 0.0)
    n = ok.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = rx.sum(1) / n, ry.sum(1) / n
        dx, dy = np.where(ok, rx - mx[:, None], 0.0), np.where(ok, ry - my[:, None], 0.0)
        den = np.sqrt((dx**2).sum(1) * (dy**2).sum(1))
        return np.where((den > 0) & (n >= 3), (dx * dy).sum(1) / den, np.nan)


def _answered(st, path, answers=None) -> np.ndarray:
    """Per row: 1 correct, 0 wrong, -1 no stored answer (answers/correct, else pred == answer);
    `answers`: the store's `answers()` where read already."""
    out = np.asarray((answers or st.answers())["correct"]).astype(np.int64)  # the store's one rule
    if not (out >= 0).any():
        raise StoreError(f"{path}: no stored answers (answers/correct or answers/pred); extract with "
                         "--answers to relate MI to accuracy")
    return out


def relate(stores, *, target: str = "label", layer=None, pool=None, estimator: str = DEFAULTS.estimator,
           seeds: int = DEFAULTS.seeds, folds: int = DEFAULTS.folds, pca: int | None = DEFAULTS.pca,
           level: float = DEFAULTS.level, n_boot: int = DEFAULTS.n_boot,
           min_stratum: int = 30, seed: int = 0, unit: str = NATS, **estimator_kwargs) -> Relation:
    """MI vs accuracy per (checkpoint, M-A-T stratum), their Spearman correlation and a Fano curve."""
    from matprobe.checks import check_level, check_resamples
    from matprobe.store_checks import check_same_records_paths

    unit = check_unit(unit)
    check_level(level), check_resamples(n_boot)  # --level 95, --n-boot 0 (matprobe.checks)
    if isinstance(min_stratum, bool) or not isinstance(min_stratum, (int, np.integer)) or min_stratum < 0:
        raise MatprobeError(f"--min-stratum {min_stratum}: give a number of rows >= 0 (strata with fewer answered "
                         "rows are left out of the correlation), e.g. 30")
    rows, notes = [], []
    check_same_records_paths(stores)  # one dataset's records in every store (matprobe.provenance)
    labels = _checkpoint_labels(stores)
    # the strata's sizes need labels only: a --min-stratum that leaves too few points is refused
    # before any estimation, not after it
    read = {str(path): _read_labels(path, target, layer, pool) for path in stores}
    sizes = []
    for y, correct, cols, _, _ in read.values():
        c, _ = _answered_strata(y, correct, cols)
        sizes += np.unique(c, return_counts=True)[1].tolist()
    _require_points(sizes, min_stratum)
    # a checkpoint answering one option for nearly every item: the report's design warning (data.design)
    notes += [one_option_sentence(labels[p], top["option"], top["count"], top["answered"])
              + f"; here each stratum's accuracy is likewise how often {top['option']} is its correct answer"
              for p, (*_, top) in read.items() if answers_one_option(top)]
    for path in stores:
        y, correct, cols, key, _ = read[str(path)]
        ckpt = labels[str(path)]
        c, keep = _answered_strata(y, correct, cols)
        z, (groups, groups_name) = _read_z(path, key)
        yk, zk, ck = y[keep], z[keep], correct[keep]
        groups, groups_name = row_groups(zk, None if groups is None else groups[keep], groups_name)
        names = {}
        for code in np.unique(c):
            r = np.flatnonzero(c == code)[0]
            names[int(code)] = {f: cols[f][1][cols[f][0][keep][r]] for f in MAT}
        est = make_estimator(estimator, seeds=seeds, folds=folds, pca=pca, seed=seed, unit=NATS,
                             ci_level=level, min_stratum=min_stratum, **estimator_kwargs)
        # I(Z;Y|M,A,T) through the shared term loop; folds stratified by (Y, stratum)
        codes = {target: yk, **{f: cols[f][0][keep] for f in MAT}}
        e = estimate_terms(est, estimator_tags(estimator), zk, codes, [TermSpec((target,), MAT)],
                           plan_groups=joint_codes([yk, c]), groups=groups, groups_name=groups_name)[0]
        for code, entry in zip(np.unique(c).tolist(), e.strata):
            sel = c == code
            n_s = int(sel.sum())
            k_correct = int(ck[sel].sum())
            ys = yk[sel]
            h = conditional_entropy(ys)
            k_s = max(2, int(np.unique(ys).size))
            lo, hi = clopper_pearson_interval(k_correct, n_s, level)
            mi = float(entry.estimate)
            rows.append({"checkpoint": str(ckpt), "store": str(path), **names[code], "n": n_s,
                         "mi": from_nats(mi, unit), "mi_ci_low": from_nats(entry.ci_low, unit),
                         "mi_ci_high": from_nats(entry.ci_high, unit), "h": from_nats(h, unit),
                         "classes": k_s, "accuracy": k_correct / n_s, "acc_ci_low": lo, "acc_ci_high": hi,
                         "fano_acc_max": fano_accuracy_ceiling(mi, h, k_s),
                         # the ceiling is increasing in I: Î's interval maps onto the ceiling's
                         "fano_acc_max_ci_low": fano_accuracy_ceiling(float(entry.ci_low), h, k_s),
                         "fano_acc_max_ci_high": fano_accuracy_ceiling(float(entry.ci_high), h, k_s),
                         "sparse": n_s < min_stratum, "note": entry.note})
    # the same quantity as `mi`'s and `check`'s per-stratum entries, not the same number (a study read
    # 0.700 here against their 0.227 on small strata)
    notes.append("each stratum's Î is estimated here on its answered rows, with folds stratified by (Y, stratum), "
                 "not with the chain's folds `mi` and `check` use: on small strata the two can differ by more than "
                 "fold noise usually does")
    return _relation(pd.DataFrame(rows), notes, min_stratum, level, n_boot, seed, unit)


def interval_p_disagreement(lo: float, hi: float, p: float, level: float, n_strata: int) -> str:
    """The note where rho's interval and its p say different things at the same level (one excludes
    0, the other does not): with few strata the percentile bootstrap of whole strata is narrow (it
    draws from the strata seen), while the permutation p holds exactly where the strata are
    exchangeable under no relation. "" where they agree or the interval is undefined. (A user's
    study read "[-0.471, -0.001], p = 0.649" on 11 strata.)

    >>> interval_p_disagreement(-0.471, -0.001, 0.649, 0.95, 11)[:61]
    'the interval excludes 0 but p = 0.649 >= 0.05: with 11 strata'
    >>> interval_p_disagreement(-0.3, 0.2, 0.4, 0.95, 11)
    ''
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    alpha = 1.0 - level
    excludes = lo > 0 or hi < 0
    if excludes == (p < alpha):
        return ""
    said = (f"the interval excludes 0 but p = {p:.3g} >= {alpha:.2g}" if excludes
            else f"p = {p:.3g} < {alpha:.2g} but the interval holds 0")
    return (f"{said}: with {n_strata} strata the bootstrap of whole strata is approximate (it redraws only "
            "the strata seen), while the permutation p is exact where strata are exchangeable under no "
            "relation: read the p")


def _relation(points: pd.DataFrame, notes: list[str], min_stratum: int, level: float, n_boot: int, seed: int,
              unit: str) -> Relation:
    """`relate`'s result from its points: Spearman's rho over the strata not sparse, its bootstrap
    interval, the strata-permutation p and the Fano curve."""
    used = points[~points["sparse"]]
    if len(used) < len(points):
        notes.append(f"{len(points) - len(used)} sparse strata (n < {min_stratum}) left out of the correlation")
    # the p: whole strata permuted, the interval: whole strata resampled (the points are clustered
    # by stratum and by checkpoint)
    strata = list(zip(*(used[f].astype(str) for f in MAT)))
    rho, lo, hi, _ = spearman_with_interval(used["mi"], used["accuracy"], level, n_boot, seed, clusters=strata)
    if len(set(strata)) < 2:
        # every resample of whole strata draws the one stratum: the interval would be [rho, rho]
        lo = hi = float("nan")
        notes.append(f"no interval for rho: its {len(used)} points fall in one stratum, and whole strata are what the "
                     "bootstrap resamples (and the p permutes), so nothing varies; lower --min-stratum or add items "
                     "so that two strata or more are used")
    elif not np.isfinite(lo):
        notes.append(f"no interval for rho: more than {1 - MIN_DEFINED_RESAMPLES:.0%} of the resamples of whole "
                     f"strata ({len(set(strata))} strata) hold one MI or one accuracy value only (ties: "
                     f"{int((used['mi'] == used['mi'].mode().iloc[0]).sum())} of {len(used)} MIs equal), so they "
                     "have no rank correlation; the p-value (strata permuted) still holds")
    perm = stratum_permutation_test(used["mi"], used["accuracy"], strata, used["checkpoint"], seed=seed)
    disagree = interval_p_disagreement(lo, hi, perm["p_value"], level, perm["n_strata"])
    if disagree:
        notes.append(disagree)
    k_ref = int(used["classes"].mode().iloc[0])
    h_ref = float(used.loc[used["classes"] == k_ref, "h"].mean())
    h_nats = h_ref * (math.log(2) if unit == "bits" else 1.0)
    curve = [{"mi": from_nats(i, unit), "fano_acc_max": fano_accuracy_ceiling(i, h_nats, k_ref)}
             for i in np.linspace(0.0, h_nats, 41)]
    return Relation(points=points, spearman=rho, ci_low=lo, ci_high=hi, ci_level=level, p_value=perm["p_value"],
                    n_points=len(used), fano_curve=curve, reference={"classes": k_ref, "h": h_ref},
                    unit=unit, notes=notes, p_method=perm["method"], n_strata=perm["n_strata"],
                    n_checkpoints=perm["n_checkpoints"], n_permutations=perm["n_permutations"])


def _answered_strata(y, correct, cols):
    """(joint M-A-T code per kept row, the kept-row mask): rows with a stored answer, a target and
    every factor's label."""
    keep = (correct >= 0) & (y >= 0)
    for f in MAT:
        keep &= cols[f][0] >= 0
    return joint_codes([cols[f][0][keep] for f in MAT]), keep


def _require_points(sizes, min_stratum: int) -> None:
    """Refuse a --min-stratum that leaves fewer than 3 (checkpoint, stratum) points of the correlation,
    saying what the strata hold and the setting that would keep 3."""
    used = sum(n >= min_stratum for n in sizes)
    if used < 3 <= len(sizes):
        largest = sorted((int(n) for n in sizes), reverse=True)[:3]
        raise EstimationError(
            f"rank correlation needs at least 3 (checkpoint, stratum) points; {used} of {len(sizes)} have "
            f"--min-stratum {min_stratum} answered rows (the largest strata hold {', '.join(map(str, largest))}): "
            f"add checkpoints or data, or lower --min-stratum (--min-stratum {largest[-1]} keeps "
            f"{sum(n >= largest[-1] for n in sizes)}; MI and accuracy on fewer rows are noisier)")


def _checkpoint_labels(stores) -> dict[str, str]:
    """Each store's checkpoint name, alike over the stores (`store.checkpoint_labels`)."""
    from matprobe.store import EmbeddingStore, checkpoint_labels

    provenances = {}
    for path in stores:
        with EmbeddingStore.open(path) as st:
            provenances[str(path)] = st.provenance
    return checkpoint_labels(provenances)


def _read_labels(path, target, layer, pool):
    """(Y, correct per row, {factor: (codes, names)}, the (layer, pool) key to read Z at, the option it
    answers most (`data.design.top_option`)) of one store for `relate`, checked complete and holding
    that layer and pool; Z itself is read per store when its term is estimated (`_read_z`), so the
    stores' features are not held together."""
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(path) as st:
        st.require_complete("relating MI to accuracy")
        key = _feature_key(st, path, layer, pool, "store")
        answers = st.answers()
        correct = _answered(st, path, answers)
        cols = {}
        for f in MAT:
            try:
                cols[f] = st.factor(f)
            except StoreError:
                raise StoreError(f"{path}: no {f} column; relating MI to accuracy per (M, A, T) stratum "
                                 "needs modality, anatomy and task labels") from None
        if target in ("answer", "answer_index"):
            y = st.samples()["answer_index"].to_numpy().astype(np.int64)
        else:
            try:
                y = st.factor(target)[0]
            except StoreError:
                raise StoreError(f"{path}: no label column {target!r} for --target; use 'label', "
                                 "'answer' or one of " + ", ".join(st.label_columns())) from None
        return y, correct, cols, key, top_option(answers["pred"])


def _read_z(path, key) -> tuple[np.ndarray, tuple[np.ndarray | None, str]]:
    """One store's features at the (layer, pool) `_read_labels` resolved, and its rows' groups where
    an image repeats (`chain.store_groups`: an image's rows in one fold, as `mi` keeps them)."""
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(path) as st:
        return st.read(*key), store_groups(st.samples(), None, path)


OUT_KINDS = {".json": "everything", ".csv": "the points"}  # what `write_relation` writes


def write_relation(rel: Relation, out) -> None:
    import json

    from matprobe.io import atomic_path, check_out_suffix

    out = check_out_suffix(out, OUT_KINDS, EstimationError)
    with atomic_path(out, suffix=out.suffix) as tmp:
        if out.suffix.lower() == ".csv":  # the columns of `relate --format csv`: the bound and the unit too
            rel.frame().to_csv(tmp, index=False)
        else:
            tmp.write_text(json.dumps(rel.to_dict(), indent=1, default=float))
