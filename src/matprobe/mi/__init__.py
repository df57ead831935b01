"""MI estimators for the MAT chain rule (CrossMed §IV), validated on exact ground truth.

    from matprobe.mi import chain_terms
    res = chain_terms(z, {"M": m, "A": a, "T": t}, estimators=["probe", "ksg"], seeds=5)
    print(res.frame())

Estimators implement the `MIEstimator` Protocol (`matprobe.mi.interface`) and are found by
name in the registry (`register_estimator`, `make_estimator`, `available_estimators`).
"""

# Names load on first use, so importing the package costs nothing (`import matprobe` imports
# it to bind `matprobe.mi` to the API verb, see matprobe/__init__.py).
_LAZY = {
    **{name: "matprobe.mi.chain" for name in ("ChainResult", "ChainTerm", "TermSpec", "chain_terms", "estimate_terms",
                                               "results_json", "run_store", "write_results")},
    **{name: "matprobe.mi.interface" for name in ("EstimatorTags", "MIEstimate", "MIEstimator", "StratumEstimate",
                                                   "TermNames")},
    **{name: "matprobe.mi.registry" for name in ("available_estimators", "estimator_tags", "make_estimator",
                                                  "register_estimator")},
}

__all__ = ["ChainResult", "ChainTerm", "EstimatorTags", "MIEstimate", "MIEstimator", "StratumEstimate", "TermNames",
           "TermSpec",
           "available_estimators", "chain_terms", "estimate_terms", "estimator_tags", "make_estimator",
           "register_estimator", "results_json", "run_store", "write_results"]



def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'matprobe.mi' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
