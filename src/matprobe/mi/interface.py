"""The MI estimator contract: one Protocol, its capability tags and one result record.

A leaf module (imports nothing from matprobe) so peers and plug-ins can implement the
Protocol without importing torch or the rest of the package. Every caller in matprobe
(`chain_terms`, `sweep`, `compare`, `relate`, `matprobe mi`) uses an estimator only through
this Protocol and its `EstimatorTags`; what an estimator can do is read from the tags, never
from its name. Estimators are found by name in `matprobe.mi.registry`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

TWO_SIDED = "two-sided"  # the interval brackets the true value (up to its level)
LOWER = "lower"  # the estimate is a lower bound on the true value; only its lower end is a bound

# an estimate at or above this share of H(Y|C) gets a one-sided interval (flag "near-saturated")
NEAR_SATURATION = 0.9


def near_saturation(value, cap) -> bool:
    """Whether an estimate sits at NEAR_SATURATION of its entropy cap or above (a cap of 0 or
    a missing value: no). The one rule behind the flag, and what every reader of an estimate
    (a stratum's, a comparison's side, a report's mean) holds it to.

    >>> near_saturation(1.0, 1.09), near_saturation(0.9, 1.09), near_saturation(0.0, 0.0)
    (True, False, False)
    """
    return value is not None and cap is not None and cap > 0 and value >= NEAR_SATURATION * cap


def stratum_entry_one_sided(note, bound=None) -> bool:
    """Whether a stratum's entry of a one-sided term says so: its `bound` "lower" where recorded, else
    its note ("lower bound: ci_high is H(Y|C=c)'s upper confidence limit", `StratumEstimate.note`). A
    reader holds a stratum's interval one-sided where this is true or `near_saturation` of its
    H(Y|s) (`check`, `relate`).

    >>> stratum_entry_one_sided("lower bound: ci_high is ..."), stratum_entry_one_sided("clipped", "lower")
    (True, True)
    """
    return bound == "lower" or "lower bound" in str(note or "")

# what a one-sided interval states, said in each reason that makes an estimate one-sided
ONE_SIDED = "only the lower end is a statement (MI is at least ci_low); ci_high is H(Y|C)'s upper confidence limit"
# Settings every registered factory is called with (it may ignore any of them); anything else
# the user passes is estimator-specific and may be refused by the factory.
COMMON_PARAMS = ("seeds", "folds", "pca", "gaussianize", "ci_level", "unit", "seed", "min_stratum", "device")


@dataclass(frozen=True)
class EstimatorTags:
    """What an estimator can do; callers branch on these, never on the estimator's name.

    uses_fold_plan: `estimate` accepts a shared fold plan (`plan=`) made by the estimator's
        own `fold_plan(z, groups, fold=None)`, so the terms of one chain (and the two sides
        of a comparison) use the same folds and the same cached preprocessing.
    pointwise: `estimate(..., pointwise=True)` puts per-row held-out terms in
        `diagnostics["pointwise"]` (see `MIEstimator.estimate`); paired comparisons need it.
    conditional: `estimate` handles c natively (per stratum); otherwise callers estimate
        I(Z;Y|C) = sum_c p(c) I(Z;Y|C=c) by calling it once per stratum of C.
    subclasses: `estimate` uses `sub=` (finer labels, e.g. the later factors of a chain).
    bound: TWO_SIDED or LOWER (a variational lower bound whose bias is not bounded).
    critic_cells: the estimate comes from a critic fitted over (stratum, class[, sub-class])
        cells, whose rows per input decide whether its shortfall is bounded (the "small-cells"
        flag); a k-NN estimator has no such cells, and the flag and its note are not its.
    """

    uses_fold_plan: bool = False
    pointwise: bool = False
    conditional: bool = False
    subclasses: bool = False
    bound: str = TWO_SIDED
    critic_cells: bool = False

    def __post_init__(self):
        if self.bound not in (TWO_SIDED, LOWER):
            raise ValueError(f"bound must be {TWO_SIDED!r} or {LOWER!r}, got {self.bound!r}")


@dataclass(frozen=True)
class TermNames:
    """Names used in messages and per-stratum entries: the target, the conditioning set, and
    optionally {stratum code: description} (e.g. {"modality": "CT", "anatomy": "Lung"})."""

    target: str = "y"
    given: str = "condition"
    strata: dict[int, Any] | None = None


@dataclass
class StratumEstimate:
    """One stratum's entry of a conditional term: I(Z;Y|C=c) with its interval, in the term's unit.

    `given`: the stratum, as {factor: label} for chain terms (else its code as text); `h_upper`:
    the plug-in H(Y|C=c), at which the estimate and `ci_low` are clipped; `ci_high` is capped at
    the stratum's population entropy's upper confidence limit (`data.entropy.conditional_entropy_upper`),
    and is that limit where the entry is one-sided (`bound` "lower": the term is, or the stratum's
    own estimate is near saturation, or its critic cells are small); `note`: "sparse", "clipped",
    "lower bound" with its reason, or why it is exactly 0 (one class of Y in the stratum)."""

    given: Any
    n: int
    estimate: float
    ci_low: float
    ci_high: float
    h_upper: float
    note: str = ""
    bound: str = TWO_SIDED

    @classmethod
    def of(cls, entry: "StratumEstimate | dict[str, Any]") -> "StratumEstimate":
        """An entry as an estimator or a results file gives it: this type, or a dict with its fields
        (a plug-in estimator may return dicts; extra keys such as a file's target are ignored)."""
        if isinstance(entry, cls):
            return entry
        return cls(**{f.name: entry[f.name] for f in fields(cls) if f.name in entry})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MIEstimate:
    """One estimate of I(Z;Y) or I(Z;Y|C), in `unit` (nats unless asked otherwise).

    `value` is the point estimate; [`ci_low`, `ci_high`] its `ci_level` interval.
    `h_upper` is the plug-in H(Y|C) of the sample, the largest value MI can take.
    `clipped`: the raw estimate exceeded `h_upper` or fell below 0 and was set to it.
    `degenerate`: H(Y|C) = 0, so the term is exactly 0 and nothing was fitted.
    `strata`: for conditional terms, one `StratumEstimate` per stratum of C (given, n, estimate,
    ci_low, ci_high, h_upper, note), so `matprobe check` can use per-stratum values (an
    estimator may return dicts with those keys: the term loop converts them).
    `diagnostics`: held-out curve, train/held-out gap, early-stop epoch, chosen penalty,
    per-seed values; `diagnostics["pointwise"]` when asked for (see `MIEstimator`); for chain
    terms of a pointwise estimator, `diagnostics["pointwise_summary"]` (`mi.pointwise`).
    `bound`: "two-sided" when the interval accounts for the estimator's bias (row sampling,
    learning-curve slack, spread over critic levels and seeds), so it is meant to cover the
    truth; "lower" when the bias cannot be bounded (a variational bound whose shortfall is
    unknown, or InfoNCE where log(batch) caps it): then only `ci_low` is a statement and
    `ci_high` is set to the upper confidence limit of the population H(Y|C), at least
    `h_upper` (`data.entropy.conditional_entropy_upper`: the largest value MI can take, at the
    interval's level; finite so JSON stays valid). Every `ci_high` is at most that limit.
    `flags`: machine-readable warnings, each explained in `note`: "misspecified-linear" (a
    non-linear critic beat the linear one on validation log-loss, in most folds or pooled over
    them: the shortfall is not bounded, `bound` set to "lower"), "below-zero" (the estimate is
    below 0), "interval-below-zero" (the whole interval is below 0), "low-n" (too few rows per
    class for the interval to be trusted), "capped-log-batch" (InfoNCE at its log(batch) cap),
    "sparse-strata", "clipped" (the raw estimate exceeded H(Y|C) and was set to it; a clip at 0 is
    flagged "below-zero" instead, while the attribute `clipped` is true for either), "small-cells" (>= 5% of rows in (stratum, class) cells with fewer
    rows than the critic's inputs: bias not bounded, `bound` set to "lower"), "small-cells-widened"
    (under 5% of rows but >= 5% of the label entropy H(Y|C) in such cells, as rare classes hold it:
    the upper end raised by that entropy, the most those rows can carry), "near-saturated" (the
    estimate is >= 90% of H(Y|C): `bound` "lower" too), "pca-dropped-signal" (the label-free
    reduction's residual carries label information at the size the fold plan settled on after
    raising it, `FoldPlan.settle_reduction` and `mi.reduction_check`: the upper end raised by
    twice the measured loss, or `bound` "lower" where the loss is over 10% of the estimate), "one-sided-strata"
    (a two-sided term with a stratum whose own entry is one-sided: its upper end raised to the strata's
    upper ends weighted by their rows, that stratum's being its entropy limit), "constant-features"
    (Z carries no information: 0 exactly, nothing fitted). Estimates and lower ends below 0 are
    clipped at 0 (the attribute `clipped` is then set too, the flag "clipped" is not: it names the
    cap; the raw numbers are in diagnostics["raw"]).
    """

    value: float
    ci_low: float
    ci_high: float
    ci_level: float
    unit: str
    n_train: int
    n_eval: int
    estimator: str
    params: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    h_upper: float = float("nan")
    clipped: bool = False
    degenerate: bool = False
    note: str = ""
    strata: list[StratumEstimate] = field(default_factory=list)
    bound: str = "two-sided"
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class MIEstimator(Protocol):
    """An MI estimator as every matprobe caller uses it.

    estimate(z, y, c=None, *, sub=None, plan=None, names=None, pointwise=False) -> MIEstimate
      z: float array [n, d]; y: integer codes [n]; c: integer codes [n] of the conditioning
      stratum (the joint code of all conditioning factors) or None for I(Z;Y).
      The keywords are optional context; an estimator ignores those its `tags` do not claim:
      sub: finer labels [n] (tags.subclasses); plan: a fold plan from its own `fold_plan`
      (tags.uses_fold_plan); names: a `TermNames` for messages and strata entries;
      pointwise: return per-row terms (tags.pointwise) as diagnostics["pointwise"] =
      {"values": float [seeds, n] whose row mean is each seed's estimate in nats (rows of
      one-class strata are 0), "corr": optional [seeds, n] bias corrections already included
      in "values" (their mean sets how far a paired interval is widened)}.
    params() -> dict: everything that changes the numbers (sweeps hash it to resume safely).
    tags: EstimatorTags; name: the registered name.
    """

    name: str
    tags: EstimatorTags

    def estimate(self, z: np.ndarray, y: np.ndarray, c: np.ndarray | None = None, *,
                 sub: np.ndarray | None = None, plan: Any = None, names: TermNames | None = None,
                 pointwise: bool = False) -> MIEstimate: ...

    def params(self) -> dict[str, Any]: ...
