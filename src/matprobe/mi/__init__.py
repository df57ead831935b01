"""MI estimators for the MAT chain rule (CrossMed §IV), validated on exact ground truth.

    from matprobe.mi import chain_terms
    res = chain_terms(z, {"M": m, "A": a, "T": t}, estimators=["probe", "ksg"], seeds=5)
    print(res.frame())

Estimators implement the `MIEstimator` Protocol (`matprobe.mi.interface`) and are found by
name in the registry (`register_estimator`, `make_estimator`, `available_estimators`).
"""

from matprobe.mi.chain import (
                               ChainResult,
                               TermSpec,
                               chain_terms,
                               estimate_terms,
                               results_json,
                               run_store,
                               write_results,
)
from matprobe.mi.interface import EstimatorTags, MIEstimate, MIEstimator, TermNames
from matprobe.mi.registry import available_estimators, estimator_tags, make_estimator, register_estimator

__all__ = ["ChainResult", "EstimatorTags", "MIEstimate", "MIEstimator", "TermNames", "TermSpec",
           "available_estimators", "chain_terms", "estimate_terms", "estimator_tags", "make_estimator",
           "register_estimator", "results_json", "run_store", "write_results"]


# `import matprobe as mp; mp.mi(store, factors="M,A,T")`: the package name is also the
# notebook API's verb, so the package is callable (matprobe.api.mi).
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        from matprobe.api import mi

        return mi(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
