"""The MI estimator interface: one Protocol and one result record.

A leaf module (imports nothing from matprobe) so peers and plug-ins can implement the
Protocol without importing torch or the rest of the package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class MIEstimate:
    """One estimate of I(Z;Y) or I(Z;Y|C), in `unit` (nats unless asked otherwise).

    `value` is the point estimate; [`ci_low`, `ci_high`] its `ci_level` interval.
    `h_upper` is the plug-in H(Y|C) of the sample, the largest value MI can take.
    `clipped`: the raw estimate exceeded `h_upper` and was set to it.
    `degenerate`: H(Y|C) = 0, so the term is exactly 0 and nothing was fitted.
    `strata`: for conditional terms, one dict per stratum of C (given, n, estimate,
    ci_low, ci_high, h_upper, note), so `matprobe check` can use per-stratum values.
    `diagnostics`: held-out curve, train/held-out gap, early-stop epoch, chosen penalty,
    per-seed values.
    `bound`: "two-sided" when the interval accounts for the estimator's bias (row sampling,
    learning-curve slack, spread over critic levels and seeds), so it is meant to cover the
    truth; "lower" when the bias cannot be bounded (a variational bound whose shortfall is
    unknown, or InfoNCE where log(batch) caps it): then only `ci_low` is a statement and
    `ci_high` is set to `h_upper` (the largest value MI can take, finite so JSON stays valid).
    `flags`: machine-readable warnings, each explained in `note`: "misspecified-linear" (a
    non-linear critic beat the linear one on held-out log-loss), "below-zero" (the estimate is
    below 0), "interval-below-zero" (the whole interval is below 0), "low-n" (too few rows per
    class for the interval to be trusted), "capped-log-batch" (InfoNCE at its log(batch) cap),
    "sparse-strata", "clipped".
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
    strata: list[dict[str, Any]] = field(default_factory=list)
    bound: str = "two-sided"
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class MIEstimator(Protocol):
    """estimate(z, y, c=None) -> MIEstimate.

    z: float array [n, d]; y: integer codes [n]; c: integer codes [n] of the conditioning
    stratum (the joint code of all conditioning factors) or None for I(Z;Y).
    """

    name: str

    def estimate(self, z: np.ndarray, y: np.ndarray, c: np.ndarray | None = None) -> MIEstimate: ...
