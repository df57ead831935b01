"""MI estimators for the MAT chain rule (CrossMed §IV), validated on exact ground truth.

    from matprobe.mi import chain_terms
    res = chain_terms(z, {"M": m, "A": a, "T": t}, estimators=["probe", "ksg"], seeds=5)
    print(res.frame())
"""

from matprobe.mi.chain import ChainResult, chain_terms, make_estimator, results_json, run_store, write_results
from matprobe.mi.interface import MIEstimate, MIEstimator

__all__ = ["ChainResult", "MIEstimate", "MIEstimator", "chain_terms", "make_estimator", "results_json",
           "run_store", "write_results"]
