"""Baselines for a chain term: how much would the same estimator find in labels that mean nothing?

A permutation null (issue 25) answers it for I(Z;Y|C): the labels Y are permuted *within* each
stratum of C (within M for I(Z;A|M), within (M, A) for I(Z;T|M,A)), so every permuted data set
keeps Z, C and the class counts of Y in each stratum while Y ⊥ Z | C holds exactly. The term is
re-estimated on each with the same estimator, folds and label-free preprocessing (the fold plan
is shared, so the preprocessing is fitted once). Under H0: Y ⊥ Z | C the observed data and the
permuted ones are exchangeable, so

    p = (1 + #{null estimates >= observed}) / (1 + B)

is a valid p-value for any estimator (Phipson & Smyth 2010), and the excess, observed minus the
null mean, says how much of the estimate a probe would find in meaningless labels (the baseline
Hewitt & Liang 2019 ask for). The statistic is the raw (unclipped) estimate: the reported value is
clipped at 0, which would tie every null estimate below 0.

Sub-class labels (the later factors a chain offers the probe) are permuted with Y, row for row,
so the pairs (Y, sub-class) stay as they were and both are independent of Z given C.

>>> import numpy as np
>>> c = np.array([0, 0, 0, 1, 1, 1, 1])
>>> order = permute_within(c, np.random.default_rng(0))
>>> sorted(order[:3].tolist()), sorted(order[3:].tolist())  # rows only move within their stratum
([0, 1, 2], [3, 4, 5, 6])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from matprobe.errors import EstimationError
from matprobe.mi.interface import MIEstimate


@dataclass
class PermutationNull:
    """The permutation null of one term: B estimates on within-stratum permuted labels."""

    observed: float  # the term's raw estimate (unclipped), in `unit`
    null: list[float]  # the raw estimates on the permuted data sets, in `unit`
    p_value: float  # (1 + #{null >= observed}) / (1 + B)
    null_mean: float
    null_sd: float
    excess: float  # observed - null mean: the estimate beyond what meaningless labels give
    unit: str
    permutations: int
    seed: int
    within: str = ""  # the conditioning factors the labels were permuted within ("" = all rows)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def permute_within(c: np.ndarray | None, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Row order [n] that permutes rows within each stratum of c (all rows when c is None)."""
    if c is None:
        return rng.permutation(int(n))
    c = np.asarray(c)
    order = np.arange(len(c))
    for code in np.unique(c):
        rows = np.flatnonzero(c == code)
        order[rows] = rows[rng.permutation(len(rows))]
    return order


def raw_value(e: MIEstimate) -> float:
    """The estimate before it was clipped at 0 (and at H(Y|C)), in its unit."""
    raw = (e.diagnostics or {}).get("raw")
    return float(raw[0]) if raw else float(e.value)


def permutation_null(fit, y, c=None, *, sub=None, observed: MIEstimate, permutations: int = 19,
                     seed: int = 0, within: str = "") -> PermutationNull:
    """The permutation null of I(Z;Y|C) (see the module docstring).

    fit(y, sub) -> MIEstimate: the observed estimate's estimator on the same Z, C, folds and
    preprocessing (`chain.estimate_terms` passes one sharing its fold plan). B = `permutations`
    estimates, each costing what the observed one did; p can be no smaller than 1 / (1 + B).
    """
    if int(permutations) < 1:
        raise EstimationError(f"--permutations {permutations}: give at least 1 (19 gives p down to 0.05)")
    y = np.asarray(y)
    c = None if c is None else np.asarray(c)
    sub = None if sub is None else np.asarray(sub)
    rng = np.random.default_rng([int(seed), 2_019])
    null = []
    for _ in range(int(permutations)):
        order = permute_within(c, rng, len(y))
        null.append(raw_value(fit(y[order], None if sub is None else sub[order])))
    null_arr = np.asarray(null)
    obs = raw_value(observed)
    notes = []
    if observed.degenerate:
        notes.append("the term is exactly 0 (" + (observed.note or "degenerate") + "): the null is 0 too")
    return PermutationNull(
        observed=obs, null=null_arr.tolist(),
        p_value=float((1 + np.sum(null_arr >= obs)) / (1 + len(null_arr))),
        null_mean=float(null_arr.mean()), null_sd=float(null_arr.std(ddof=1)) if len(null_arr) > 1 else 0.0,
        excess=float(obs - null_arr.mean()), unit=observed.unit, permutations=len(null_arr), seed=int(seed),
        within=within, notes=notes)
