"""The MAT chain rule, I(Z;M,A,T) = I(Z;M) + I(Z;A|M) + I(Z;T|M,A) (CrossMed §IV, eq. 5).

`chain_terms` estimates each term with stratified conditional critics, the direct joint term,
and, as a cross-check, each conditional term as the chain-rule difference
I(Z;Y,C) - I(Z;C) (Hewitt et al. 2021). `run_store` does the same from an embedding store
and `write_results` writes the MI results JSON/CSV of docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from matprobe.data.entropy import joint_codes
from matprobe.defaults import DEFAULTS
from matprobe.errors import EstimationError
from matprobe.io import numpy_to_json
from matprobe.mi.base import make_plan
from matprobe.mi.interface import MIEstimate
from matprobe.units import NATS

DEFAULT_ESTIMATOR = DEFAULTS.estimator


def make_estimator(name: str, **kwargs):
    """Estimator by name: probe, mine, nwj, infonce, smile, ksg."""
    from matprobe.mi.knn import KSGEstimator
    from matprobe.mi.neural import InfoNCEEstimator, MINEEstimator, NWJEstimator, SMILEEstimator
    from matprobe.mi.probe import ProbeEstimator

    table = {"probe": ProbeEstimator, "mine": MINEEstimator, "nwj": NWJEstimator,
             "infonce": InfoNCEEstimator, "smile": SMILEEstimator, "ksg": KSGEstimator}
    if name not in table:
        raise EstimationError(f"unknown estimator {name!r}; use one of {', '.join(table)}")
    if name == "ksg":
        kwargs = {k: v for k, v in kwargs.items() if k != "pca" or v is not None}
        kwargs.pop("seeds", None)
    return table[name](**kwargs)


def term_name(target: str, given: list[str]) -> str:
    return f"I(Z;{target}|{','.join(given)})" if given else f"I(Z;{target})"


@dataclass
class ChainResult:
    """Chain terms (per estimator), the direct joint term, and chain-difference cross-checks."""

    factors: list[str]
    terms: dict[str, list[tuple[str, MIEstimate]]] = field(default_factory=dict)  # estimator -> [(term, est)]
    direct: dict[str, MIEstimate] = field(default_factory=dict)  # estimator -> I(Z;all)
    difference: dict[str, list[float]] = field(default_factory=dict)  # estimator -> chain differences
    unit: str = NATS
    settings: dict = field(default_factory=dict)  # estimator settings used (seeds, folds, pca, level, seed)
    meta: dict = field(default_factory=dict)  # store, fingerprint, layer, pool when read from a store

    def frame(self) -> pd.DataFrame:
        """Tidy table: one row per (term, estimator), plus the direct term and the sum."""
        rows = []
        for est, items in self.terms.items():
            for j, (term, e) in enumerate(items):
                rows.append({"term": term, "target": self.factors[j], "given": ",".join(self.factors[:j]),
                             "estimator": est, "estimate": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high,
                             "ci_level": e.ci_level, "h_upper": e.h_upper, "n": e.n_eval,
                             "chain_difference": self.difference.get(est, [np.nan] * len(items))[j],
                             "clipped": e.clipped, "degenerate": e.degenerate, "note": e.note,
                             "unit": e.unit})
            total = sum(e.value for _, e in items)
            d = self.direct.get(est)
            rows.append({"term": "sum of terms", "target": "", "given": "", "estimator": est,
                         "estimate": total, "ci_low": np.nan, "ci_high": np.nan, "ci_level": np.nan,
                         "h_upper": sum(e.h_upper for _, e in items), "n": items[0][1].n_eval,
                         "chain_difference": np.nan, "clipped": False, "degenerate": False,
                         "note": "", "unit": self.unit})
            if d is not None:
                rows.append({"term": term_name(",".join(self.factors), []), "target": ",".join(self.factors),
                             "given": "", "estimator": est, "estimate": d.value, "ci_low": d.ci_low,
                             "ci_high": d.ci_high, "ci_level": d.ci_level, "h_upper": d.h_upper,
                             "n": d.n_eval, "chain_difference": np.nan, "clipped": d.clipped,
                             "degenerate": d.degenerate, "note": d.note, "unit": d.unit})
        return pd.DataFrame(rows)

    def to_table(self):
        """The `matprobe mi` display table (matprobe.present.Table): one row per term and estimator."""
        from matprobe.present import Column, Table

        level = self.settings.get("level")
        lvl = f"{level:.0%}" if level else "CI"
        unit = self.unit
        cols = [Column("term", "term", description="MI term: I(Z;target|given)"),
                Column("estimator", "estimator", description="MI estimator"),
                Column("estimate", "estimate", unit, "point estimate", ".3f"),
                Column("interval", f"{lvl} interval", unit, f"{lvl} interval of the estimate", ".3f"),
                Column("h_upper", "H limit", unit, "entropy of the target given the conditioning set "
                       "(largest possible value)", ".3f"),
                Column("chain_difference", "chain diff.", unit,
                       "the term as a chain-rule difference I(Z;Y,C) - I(Z;C) (cross-check)", ".3f"),
                Column("note", "note", description="estimator notes")]
        where = ""
        if self.meta:
            where = f", {self.meta.get('store')} layer {self.meta.get('layer')} pool {self.meta.get('pool')}"
        st = self.settings
        table = Table(cols, title=f"MI chain ({unit}){where}")
        if st:
            table.footnotes.append(f"{st.get('seeds')} seeds x {st.get('folds')} folds, PCA "
                                   f"{st.get('pca') or 'none'}, {lvl} intervals, seed {st.get('seed')}")
        for r in self.frame().itertuples():
            table.add_row(term=r.term, estimator=r.estimator, estimate=r.estimate,
                          interval=(r.ci_low, r.ci_high), h_upper=r.h_upper,
                          chain_difference=r.chain_difference, note=r.note)
        return table

    def agreement(self) -> dict[str, dict]:
        """Per term: spread (max - min) of the estimators' values and whether all intervals overlap."""
        out = {}
        names = list(self.terms)
        if not names:
            return out
        for j in range(len(self.factors)):
            ests = [self.terms[n][j][1] for n in names]
            term = self.terms[names[0]][j][0]
            overlap = max(e.ci_low for e in ests) <= min(e.ci_high for e in ests)
            out[term] = {"spread": max(e.value for e in ests) - min(e.value for e in ests),
                         "intervals_overlap": bool(overlap)}
        return out


def chain_terms(z, factors: dict[str, np.ndarray], order: list[str] | None = None,
                estimators: list[str] | tuple[str, ...] = (DEFAULT_ESTIMATOR,), seeds: int = DEFAULTS.seeds,
                folds: int = DEFAULTS.folds, pca: int | None = DEFAULTS.pca, unit: str = DEFAULTS.unit,
                direct: bool = True, difference: bool = True, ci_level: float = DEFAULTS.level,
                seed: int = DEFAULTS.seed, labels: dict[str, tuple] | None = None, progress=False,
                **estimator_kwargs) -> ChainResult:
    """Estimate every term of the chain over `order` (default: dict order) with each estimator.

    z: [n, d] features; factors: {name: labels [n]} (any label column can be a factor).
    labels: optional {name: vocabulary} to name strata in per-stratum entries.
    progress: True for a progress display per estimated term (`matprobe.progress`), or a
    `matprobe.progress.Progress` to advance. Defaults come from `matprobe.defaults.DEFAULTS`.
    Returns a ChainResult (`.frame()` gives the tidy table).
    """
    order = list(order or factors)
    missing = [f for f in order if f not in factors]
    if missing:
        raise EstimationError(f"factor {missing[0]!r} not given; available: {', '.join(factors)}")
    n = len(z)
    codes = {}
    for name in order:
        col = np.asarray(factors[name])
        if len(col) != n:
            raise EstimationError(f"factor {name!r} has {len(col)} labels but Z has {n} rows; pass one per row")
        codes[name] = np.unique(col, return_inverse=True)[1].reshape(-1)
        if codes[name].max(initial=0) == 0:
            raise EstimationError(f"factor {name!r} has one class; I(Z;{name}) is 0 by definition: drop it")
    all_joint = joint_codes([codes[f] for f in order])
    result = ChainResult(factors=order, unit=unit,
                         settings={"estimators": list(estimators), "seeds": seeds, "folds": folds, "pca": pca,
                                   "level": ci_level, "seed": seed})
    from contextlib import nullcontext

    from matprobe.progress import Progress, track

    n_steps = len(estimators) * (len(order) + int(direct or difference)
                                 + (max(len(order) - 2, 0) if difference else 0))
    external = isinstance(progress, Progress)
    bar = progress if external else track("mi", n_steps, enabled=bool(progress), unit="estimates")
    with (nullcontext() if external else bar):
        _chain_loop(result, z, codes, order, all_joint, factors, labels, estimators, seeds, folds, pca,
                    unit, direct, difference, ci_level, seed, estimator_kwargs, bar)
    return result


def _chain_loop(result, z, codes, order, all_joint, factors, labels, estimators, seeds, folds, pca, unit,
                direct, difference, ci_level, seed, estimator_kwargs, bar):
    plan = None
    for est_name in estimators:
        est = make_estimator(est_name, seeds=seeds, folds=folds, pca=pca, unit=unit, ci_level=ci_level,
                             seed=seed, **estimator_kwargs)
        if est_name != "ksg" and (plan is None or plan.pca != est.pca):
            # one fold plan for the whole chain, stratified by all factors: PCA runs once per fold
            plan = make_plan(z, all_joint, folds, est.pca, est.gaussianize, seed)
        items = []
        for j, target in enumerate(order):
            given = order[:j]
            c = joint_codes([codes[g] for g in given]) if given else None
            later = order[j + 1:]
            sub = joint_codes([codes[f] for f in later]) if later else None
            names = _stratum_names(given, factors, labels, c) if given else None
            bar.update(description=f"{est_name}: {term_name(target, given)}")
            e = est.estimate(z, codes[target], c, sub=sub, plan=plan, y_name=target,
                             c_name=",".join(given) or "condition", stratum_names=names)
            items.append((term_name(target, given), e))
            bar.advance()
        result.terms[est_name] = items
        prefix = {0: items[0][1].value}
        if direct or difference:
            bar.update(description=f"{est_name}: {term_name(','.join(order), [])}")
            d = est.estimate(z, all_joint, None, plan=plan, y_name=",".join(order))
            bar.advance()
            result.direct[est_name] = d
            prefix[len(order) - 1] = d.value
        if difference and len(order) > 2:
            for j in range(1, len(order) - 1):
                jc = joint_codes([codes[f] for f in order[: j + 1]])
                later = order[j + 1:]
                sub = joint_codes([codes[f] for f in later])
                prefix[j] = est.estimate(z, jc, None, sub=sub, plan=plan).value
                bar.advance(description=f"{est_name}: chain differences")
        if difference:
            result.difference[est_name] = [prefix[0]] + [prefix[j] - prefix[j - 1]
                                                         for j in range(1, len(order))]


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
                 pool: str = "") -> dict:
    """The MI results document of docs/ARCHITECTURE.md (one entry per term and estimator)."""
    terms, strata = [], []
    for est, items in result.terms.items():
        for j, (term, e) in enumerate(items):
            terms.append({"term": term, "target": result.factors[j], "given": result.factors[:j],
                          "estimator": est, "estimate": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high,
                          "ci_level": e.ci_level, "h_upper": e.h_upper, "n": e.n_eval,
                          "clipped": e.clipped, "degenerate": e.degenerate, "note": e.note,
                          "chain_difference": result.difference.get(est, [None] * len(items))[j]})
            if j > 0:
                for s in e.strata:
                    strata.append({"target": result.factors[j], "given": s["given"], "estimator": est,
                                   "n": s["n"], "estimate": s["estimate"], "ci_low": s["ci_low"],
                                   "ci_high": s["ci_high"], "h_upper": s["h_upper"], "note": s["note"]})
    direct = {}
    for est, d in result.direct.items():
        direct = {"term": term_name(",".join(result.factors), []), "estimator": est, "estimate": d.value,
                  "ci_low": d.ci_low, "ci_high": d.ci_high, "ci_level": d.ci_level, "h_upper": d.h_upper,
                  "n": d.n_eval, "sum_of_terms": sum(e.value for _, e in result.terms[est])}
        break  # the first estimator's direct term (the default one when listed first)
    return {"kind": "matprobe.mi", "format_version": 1, "store": store, "store_fingerprint": fingerprint,
            "layer": layer, "pool": pool, "unit": result.unit, "factors": result.factors,
            "ci_level": result.settings.get("level"), "settings": result.settings,
            "terms": terms, "strata": strata, "direct": direct,
            "direct_all": [{"estimator": k, "estimate": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high}
                           for k, v in result.direct.items()],
            "agreement": result.agreement()}


def check_out_path(out) -> None:
    """Refuse an --out name we cannot write before any estimation is spent."""
    from pathlib import Path

    if Path(out).suffix.lower() not in (".json", ".csv"):
        raise EstimationError(f"--out {out}: use a .json or .csv file name")


def write_results(result: ChainResult, out, **meta) -> None:
    """Write `.json` (the results document) or `.csv` (the tidy table) atomically."""
    from pathlib import Path

    from matprobe.io import atomic_path

    out = Path(out)
    if out.suffix.lower() not in (".json", ".csv"):
        raise EstimationError(f"--out {out}: use a .json or .csv file name")
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


def run_store(path, factors: list[str], layer: str, pool: str, **kwargs) -> tuple[ChainResult, dict]:
    """chain_terms on one (layer, pool) of an embedding store; returns (result, metadata)."""
    from matprobe.errors import StoreError
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(path) as st:
        keys = [(str(k[0]), str(k[1])) for k in st.feature_keys()]
        if (str(layer), str(pool)) not in keys:
            raise StoreError(f"{path}: no features for layer {layer!r}, pool {pool!r}; stored: "
                             + ", ".join(f"{a}/{b}" for a, b in keys))
        cols, vocab = {}, {}
        for name in factors:
            try:
                codes, labels = st.factor(name)
            except (KeyError, ValueError) as exc:
                raise StoreError(f"{path}: factor {name!r} is not a label column of this store ({exc}); "
                                 "use one of the store's sample columns") from None
            cols[name], vocab[name] = np.asarray(codes), tuple(labels)
        z = st.read(layer, pool)
        meta = {"store": str(path), "fingerprint": st.fingerprint, "layer": str(layer), "pool": str(pool)}
    for name in factors:
        if (cols[name] < 0).any():
            keep = cols[name] >= 0
            z = z[keep]
            cols = {k: v[keep] for k, v in cols.items()}
    result = chain_terms(z, cols, order=factors, labels=vocab, **kwargs)
    result.meta = dict(meta)
    return result, meta
