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
Hewitt & Liang 2019 ask for). The p-value's statistic is the raw (unclipped) estimate: the reported
value is clipped at 0, which would tie every null estimate below 0. The excess is on the reported
scale, the clipped estimate minus the mean of the clipped null estimates: raw null estimates lie far
below 0 (a probe fitted to meaningless labels predicts held-out rows worse than their frequencies),
so raw minus raw is no amount of information (it exceeded the term's entropy cap, and was positive
for terms that read 0). Clipped minus clipped is at most the estimate, so at most H(Y|C); the raw
one is kept as `excess_raw`.

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
    null: list[float]  # the raw estimates on the permuted data sets, in `unit` (the p-value's statistic)
    p_value: float  # (1 + #{null >= observed}) / (1 + B), on the raw estimates
    null_mean: float  # mean of the null estimates as reported (clipped to [0, H(Y|C)] like the term's)
    null_sd: float  # s.d. of the raw null estimates (`null`)
    excess: float  # reported estimate - null_mean: at most the estimate (so at most its cap), 0 when it reads 0
    unit: str
    permutations: int
    seed: int
    within: str = ""  # the conditioning factors the labels were permuted within ("" = all rows)
    notes: list[str] = field(default_factory=list)
    null_mean_raw: float | None = None  # mean of `null`
    excess_raw: float | None = None  # observed - null_mean_raw: a test statistic's gap, not information

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
    null, shown = [], []
    for _ in range(int(permutations)):
        order = permute_within(c, rng, len(y))
        e = fit(y[order], None if sub is None else sub[order])
        null.append(raw_value(e))
        shown.append(float(e.value))  # clipped by the estimator as the term's own value is
    null_arr = np.asarray(null)
    obs = raw_value(observed)
    p = float((1 + np.sum(null_arr >= obs)) / (1 + len(null_arr)))
    null_mean = float(np.mean(shown))
    notes = []
    if observed.degenerate:
        notes.append("the term is exactly 0 (" + (observed.note or "degenerate") + "): the null is 0 too")
    elif obs < 0 and p < 1:
        notes.append(f"the raw estimate {obs:.4g} is below 0 (the term reads 0) yet above {np.sum(null_arr < obs)} "
                     f"of {len(null_arr)} null estimates: p ranks it against the null, but it measures no "
                     "information (excess on the reported scale)")
    return PermutationNull(
        observed=obs, null=null_arr.tolist(), p_value=p, null_mean=null_mean,
        null_sd=float(null_arr.std(ddof=1)) if len(null_arr) > 1 else 0.0,
        excess=float(observed.value) - null_mean, unit=observed.unit, permutations=len(null_arr), seed=int(seed),
        within=within, notes=notes, null_mean_raw=float(null_arr.mean()),
        excess_raw=float(obs - null_arr.mean()))


# ---------------------------------------------------------------------- control tasks (selectivity)
# Hewitt & Liang (2019): give every item a label that means nothing, drawn from the real labels'
# distribution in its stratum, fixed per item (per image when several rows share one), and probe
# it the same way. What the probe finds there is what it can find without the factor being
# encoded: capacity to memorise items seen in training (rows of one image on both sides of a
# fold), class imbalance, estimator bias. Selectivity = I(Z;Y|C) - I(Z;Y_control|C), estimated
# on the same rows, folds and seeds, with the paired interval of `matprobe.mi.compare`.
#
# Both sides on the reported scale: the selectivity is the term's reported (clipped) estimate minus
# the control's reported (clipped) estimate, so `estimate - control = selectivity`. The paired
# interval is computed on the raw per-row terms (where a probe on meaningless labels reads far
# below 0, so a term that itself reads 0 could show a raw difference well above 0) and then bounded
# by what the information can be: I(Z;Y|C) - I(Z;Y_ctrl|C) is at most I(Z;Y|C) and at least
# -I(Z;Y_ctrl|C), so the interval's low end is at most the term's own ci_low (and at least minus the
# control's ci_high) and its high end at most the term's ci_high (its cap). A selectivity never
# claims more than the term does. The raw difference and interval are kept (`*_raw`).


@dataclass
class ControlTask:
    """The control task of one term and the selectivity of the real target over it."""

    control: float  # the control target's estimate as reported (clipped to [0, H(Y|C)]), in `unit`
    control_ci: tuple[float, float]
    selectivity: float  # estimate - control, both as reported (clipped), in `unit`
    ci_low: float  # the paired interval, bounded by the term's own interval (see above)
    ci_high: float
    ci_level: float
    p_value: float  # two-sided, selectivity = 0 (the paired interval inverted; >= 1 - level when bounded to 0)
    unit: str
    seed: int
    groups: str = "row"  # what a control label is fixed per: "row" or the name of the grouping column
    notes: list[str] = field(default_factory=list)
    control_raw: float | None = None  # the control's raw (unclipped) estimate
    selectivity_raw: float | None = None  # raw estimate - raw control (the mean per-row difference)
    ci_low_raw: float | None = None  # the paired interval of the raw per-row differences
    ci_high_raw: float | None = None

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
                 group_name: str = "row", seed: int = 0, n_boot: int = 2000, units=None) -> ControlTask:
    """The control task of I(Z;Y|C) and the selectivity (see above).

    fit(y, sub, pointwise=True) -> MIEstimate on the same Z, C, folds and seeds as `observed`,
    which must carry pointwise terms (diagnostics["pointwise"]); sub-classes are not offered to
    the control (they would tie it to the real labels). folds: the fold id per row, for the
    interval's fold variance. units: the groups the folds kept together (`FoldPlan.units`), drawn
    whole by the selectivity's paired bootstrap; None: rows.
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
                             folds=folds, units=units, ci_level=observed.ci_level, n_boot=n_boot, seed=seed)
    # paired_difference works in nats on the per-row terms; the estimates' raw values carry the unit
    raw_delta, raw_lo, raw_hi = (float(from_nats(v, observed.unit)) for v in (diff.delta, diff.ci_low, diff.ci_high))
    sel, lo, hi, p, notes = bounded_selectivity(observed, ctrl, raw_lo, raw_hi, diff.p_value, diff.ci_level)
    return ControlTask(control=float(ctrl.value), control_ci=(float(ctrl.ci_low), float(ctrl.ci_high)),
                       selectivity=sel, ci_low=lo, ci_high=hi, ci_level=diff.ci_level, p_value=p,
                       unit=observed.unit, seed=int(seed), groups=group_name, notes=[diff.method, *notes],
                       control_raw=raw_value(ctrl), selectivity_raw=raw_delta, ci_low_raw=raw_lo, ci_high_raw=raw_hi)


def bounded_selectivity(observed: MIEstimate, ctrl: MIEstimate, raw_lo: float, raw_hi: float, raw_p: float,
                        ci_level: float) -> tuple[float, float, float, float, list[str]]:
    """The selectivity on the reported scale: (point, low, high, p, notes) from the two estimates and
    the raw paired interval (see the comment above `ControlTask`).

    >>> def est(v, raw, lo, hi):
    ...     return MIEstimate(value=v, ci_low=lo, ci_high=hi, ci_level=0.95, unit="nats", n_train=0, n_eval=0,
    ...                       estimator="x", params={}, diagnostics={"raw": (raw, lo, hi)})
    >>> # the term reads 0 (raw -0.2), the control reads 0 (raw -0.8): the raw interval [0.02, 1.1] is no finding
    >>> bounded_selectivity(est(0.0, -0.2, 0.0, 1.2), est(0.0, -0.8, 0.0, 1.3), 0.02, 1.1, 0.04, 0.95)[:4]
    (0.0, 0.0, 1.1, 0.05)
    """
    sel = float(observed.value) - float(ctrl.value)
    lo = max(min(raw_lo, float(observed.ci_low)), -float(ctrl.ci_high))
    hi = min(raw_hi, float(observed.ci_high))
    lo, hi = min(lo, sel), max(hi, sel)
    notes, p = [], float(raw_p)
    if (raw_lo > 0 and lo <= 0) or (raw_hi < 0 and hi >= 0):
        p = max(p, round(1.0 - float(ci_level), 12))
        notes.append(f"the raw paired interval [{raw_lo:.4g}, {raw_hi:.4g}] excludes 0, but the term reads "
                     f"{float(observed.value):.4g} (raw {raw_value(observed):.4g}) and the control "
                     f"{float(ctrl.value):.4g} (raw {raw_value(ctrl):.4g}): a selectivity claims no more than the "
                     "term's own interval, so it is bounded to it")
    elif lo != raw_lo or hi != raw_hi:
        notes.append(f"bounded by the term's own interval and the control's (raw paired interval "
                     f"[{raw_lo:.4g}, {raw_hi:.4g}])")
    return sel, float(lo), float(hi), p, notes


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
