"""The notebook API: one call per step, typed results, the shared defaults.

    import matprobe as mp
    res = mp.mi("related-s0.h5", factors="M,A,T")       # ChainResult
    res.frame(); print(mp.to_markdown(res.to_table()))
    chk = mp.check("related-s0.h5", mi=res)              # CheckResult
    sig = mp.significance("results.csv")                  # SignificanceResult
    mp.bounds.fano(error=0.168, classes=4)                # FanoBounds

`matprobe/__init__.py` imports these lazily, so `import matprobe` stays fast.
"""

from __future__ import annotations

from pathlib import Path

from matprobe.defaults import DEFAULTS


def _names(value) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def default_feature(store_path, layer=None, pool=None) -> tuple[str, str]:
    """(layer, pool) to use, resolved as every command resolves them
    (`EmbeddingStore.resolve_feature`: the last decoder block and pool "last" by default,
    negative layers from the end)."""
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(store_path) as st:
        return st.resolve_feature(layer, pool)


def mi(store, factors="M,A,T", layer=None, pool=None, *, estimator=DEFAULTS.estimator,
       seeds: int = DEFAULTS.seeds, folds: int = DEFAULTS.folds, pca: int | None = DEFAULTS.pca,
       level: float = DEFAULTS.level, unit: str = DEFAULTS.unit, progress: bool = False,
       device: str = "cpu", **kwargs):
    """The MI chain over `factors` ("M,A,T" or a list) on a store's (layer, pool); the same
    numbers as `matprobe mi` with the same settings. `store` may also be an array Z, with
    `factors` a dict {name: labels}. Returns a ChainResult (`.frame()`, `.to_table()`)."""
    from matprobe.mi.chain import chain_terms, run_store

    ests = _names(estimator)
    kw = dict(estimators=ests, seeds=seeds, folds=folds, pca=pca or None, ci_level=level, unit=unit,
              progress=progress, **kwargs)
    if device != "cpu":
        kw["device"] = device
    if isinstance(factors, dict):
        return chain_terms(store, factors, **kw)
    layer, pool = default_feature(store, layer, pool)
    result, _meta = run_store(store, _names(factors), layer, pool, **kw)
    return result


def check(store, mi=None, *, target: str | None = None, delta: float = DEFAULTS.delta,
          level: float = DEFAULTS.level, estimate_missing: bool = True, progress: bool = False, **kwargs):
    """Fano and PAC against the store's answers and the MI results (a path, a ChainResult from
    `mi`, or None). Returns a CheckResult (`.frame()`, `.to_table()`, `.to_dict()`)."""
    from matprobe.mi.chain import ChainResult, results_json
    from matprobe.theory.check import run_check

    if isinstance(mi, ChainResult):
        meta = mi.meta or {}
        mi = results_json(mi, store=str(meta.get("store", store)), fingerprint=meta.get("fingerprint", ""),
                          layer=str(meta.get("layer", "")), pool=str(meta.get("pool", "")))
    return run_check(store, mi, target=target, delta=delta, level=level, estimate_missing=estimate_missing,
                     progress=progress, **kwargs)


def significance(results, spec=None, *, unit: str | None = None, level: float = DEFAULTS.level, **kwargs):
    """Paired tests between conditions (`results`: tidy CSV path or DataFrame); comparisons and
    unit of analysis default to what the data allow. Returns a SignificanceResult."""
    from matprobe.stats.significance import significance as run

    return run(results, spec, unit=unit, level=level, **kwargs)


def open_store(path: str | Path, mode: str = "r"):
    """An EmbeddingStore (use as a context manager)."""
    from matprobe.store import EmbeddingStore

    return EmbeddingStore.open(path, mode)
