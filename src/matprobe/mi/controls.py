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
from matprobe.units import from_nats


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


# ---------------------------------------------------------------------- control tasks (selectivity)
# Hewitt & Liang (2019): give every item a label that means nothing, drawn from the real labels'
# distribution in its stratum, fixed per item (per image when several rows share one), and probe
# it the same way. What the probe finds there is what it can find without the factor being
# encoded: capacity to memorise items seen in training (rows of one image on both sides of a
# fold), class imbalance, estimator bias. Selectivity = I(Z;Y|C) - I(Z;Y_control|C), estimated
# on the same rows, folds and seeds, with the paired interval of `matprobe.mi.compare`.


@dataclass
class ControlTask:
    """The control task of one term and the selectivity of the real target over it."""

    control: float  # the control target's estimate (raw, unclipped), in `unit`
    control_ci: tuple[float, float]
    selectivity: float  # estimate - control estimate (raw values), in `unit`
    ci_low: float
    ci_high: float
    ci_level: float
    p_value: float  # two-sided, selectivity = 0 (the paired interval inverted)
    unit: str
    seed: int
    groups: str = "row"  # what a control label is fixed per: "row" or the name of the grouping column
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def control_labels(y: np.ndarray, c: np.ndarray | None, rng: np.random.Generator,
                   groups: np.ndarray | None = None) -> np.ndarray:
    """A control label per row: drawn from y's frequencies in the row's stratum, one draw per
    group (rows of one group share it; default: every row its own group)."""
    y = np.asarray(y)
    c = np.zeros(len(y), dtype=np.int64) if c is None else np.asarray(c)
    groups = np.arange(len(y)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    out = np.empty(len(y), dtype=y.dtype)
    for code in np.unique(c):
        rows = np.flatnonzero(c == code)
        values, counts = np.unique(y[rows], return_counts=True)
        first = {}
        for r in rows:  # one draw per group within the stratum, in row order (deterministic)
            g = int(groups[r])
            if g not in first:
                first[g] = values[rng.choice(len(values), p=counts / counts.sum())]
            out[r] = first[g]
    return out


def control_task(fit, y, c=None, *, observed: MIEstimate, folds=None, groups=None,
                 group_name: str = "row", seed: int = 0, n_boot: int = 2000) -> ControlTask:
    """The control task of I(Z;Y|C) and the selectivity (see above).

    fit(y, sub, pointwise=True) -> MIEstimate on the same Z, C, folds and seeds as `observed`,
    which must carry pointwise terms (diagnostics["pointwise"]); sub-classes are not offered to
    the control (they would tie it to the real labels). folds: the fold id per row, for the
    interval's fold variance.
    """
    from matprobe.mi.paired import paired_difference

    pw = (observed.diagnostics or {}).get("pointwise")
    if pw is None:
        raise EstimationError("the control task's selectivity needs the term's per-row terms: estimate it "
                              "with pointwise=True")
    rng = np.random.default_rng([int(seed), 4_242])
    y_ctrl = control_labels(np.asarray(y), None if c is None else np.asarray(c), rng, groups)
    ctrl = fit(y_ctrl, None, pointwise=True)
    pc = ctrl.diagnostics["pointwise"]
    diff = paired_difference(pw["values"], pc["values"], strata=c, corr_a=pw.get("corr"), corr_b=pc.get("corr"),
                             folds=folds, ci_level=observed.ci_level, n_boot=n_boot, seed=seed)
    # paired_difference works in nats on the per-row terms; the estimates' raw values carry the unit
    return ControlTask(control=raw_value(ctrl), control_ci=(float(ctrl.ci_low), float(ctrl.ci_high)),
                       selectivity=float(from_nats(diff.delta, observed.unit)),
                       ci_low=float(from_nats(diff.ci_low, observed.unit)),
                       ci_high=float(from_nats(diff.ci_high, observed.unit)), ci_level=diff.ci_level, p_value=diff.p_value,
                       unit=observed.unit, seed=int(seed), groups=group_name,
                       notes=[diff.method])


# ---------------------------------------------------------------------- as table columns
# A term's baselines as columns (ChainResult.frame, sweep tables, the report), in this order; the
# first six are information (the estimate's unit), the rest bits, a ratio and a p-value.
BASELINE_COLUMNS = ("p_perm", "null_mean", "excess", "control", "selectivity", "selectivity_low",
                    "selectivity_high", "online_bits", "uniform_bits", "compression")
_INFORMATION = {"null_mean", "excess", "control", "selectivity", "selectivity_low", "selectivity_high"}


def baseline_columns(diagnostics: dict | None, convert=None) -> dict:
    """The permutation null, control task and online codelength in an estimate's diagnostics as
    {column: value} (only those that were computed). `convert` maps the information-valued ones
    (e.g. nats to a table's unit)."""
    d = diagnostics or {}
    out = {}
    if d.get("permutation"):
        p = d["permutation"]
        out.update(p_perm=p["p_value"], null_mean=p["null_mean"], excess=p["excess"])
    if d.get("control"):
        c = d["control"]
        out.update(control=c["control"], selectivity=c["selectivity"], selectivity_low=c["ci_low"],
                   selectivity_high=c["ci_high"])
    if d.get("codelength"):
        c = d["codelength"]
        out.update(online_bits=c["online_bits"], uniform_bits=c["uniform_bits"], compression=c["compression"])
    if convert is not None:
        out = {k: convert(v) if k in _INFORMATION else v for k, v in out.items()}
    return out
