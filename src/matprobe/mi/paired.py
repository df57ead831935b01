"""The paired difference of two sets of per-row held-out terms on the same rows (`paired_difference`):
what `compare` reports between two checkpoints or layers, and what the control task's selectivity
is (`matprobe.mi.controls`). A leaf under `compare` and `controls`, so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr, ndtri  # the normal quantile (scipy.stats costs 1 s to import)

from matprobe.errors import EstimationError
from matprobe.mi.base import EXTRAPOLATION_SLACK
from matprobe.units import NATS, from_nats


@dataclass
class PairedDifference:
    """ΔI = I_A - I_B over shared rows, in `unit`; interval at `ci_level`; two-sided p."""

    delta: float
    ci_low: float
    ci_high: float
    ci_level: float
    p_value: float
    se: float
    n: int
    unit: str = NATS
    seed_deltas: list[float] = field(default_factory=list)
    slack: float = 0.0
    # how the interval is made: a normal (Wald) interval delta +- z * SE around the estimate,
    # SE from a stratified row bootstrap with the seed spread and the fold-fitting variance
    # added in quadrature (not a percentile or BCa interval of the bootstrap replicates)
    method: str = "normal interval Δ ± z·SE (SE: stratified paired row bootstrap, seed spread and fold variance in quadrature)"


def paired_difference(values_a, values_b, strata=None, corr_a=None, corr_b=None, *, folds=None,
                      units=None, ci_level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                      unit: str = NATS) -> PairedDifference:
    """Paired bootstrap of mean(values_a - values_b) over rows.

    values_a, values_b: pointwise terms [seeds, n] (or [n]) on the same rows, in nats.
    strata: conditioning codes [n]; rows are resampled within each stratum.
    corr_a, corr_b: optional learning-curve corrections [seeds, n] (probe); the difference
    of their means, times EXTRAPOLATION_SLACK, widens both ends.
    folds: optional fold id per row. Rows scored by one fold's fitted model share its fitting
    error, which a row bootstrap misses (held-out losses are correlated within a fold; Bengio &
    Grandvalet 2004). The between-fold variance of the fold means in excess of what row noise
    explains estimates that error's variance tau^2 per fold; tau^2 / k is added to the
    bootstrap variance (0 when the folds agree as well as row noise predicts).
    units: optional group per row (an image seen in several rows): where a stratum holds groups of
    several rows the bootstrap draws groups, each group's rows together, as the estimates' own
    intervals do (`MIEstimator._aggregate`); drawn by row, copies count as independent rows.
    """
    va = np.atleast_2d(np.asarray(values_a, dtype=np.float64))
    vb = np.atleast_2d(np.asarray(values_b, dtype=np.float64))
    if va.shape != vb.shape:
        raise EstimationError(f"pointwise terms differ in shape: {va.shape} vs {vb.shape}; "
                              "compare estimates made on the same rows with the same seeds")
    n = va.shape[1]
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
    diff = va - vb  # [seeds, n]
    row = diff.mean(axis=0)
    delta = float(row.mean())
    rng = np.random.default_rng([seed, 7])
    boot = np.zeros(n_boot)
    grouped = False
    for code in np.unique(strata):
        idx = np.flatnonzero(strata == code)
        vals, counts = row[idx], np.ones(len(idx))
        if units is not None:
            # one draw per group: the stratum's mean is the drawn groups' row sum over their row count
            _, unit_of_row = np.unique(np.asarray(units)[idx], return_inverse=True)
            unit_of_row = unit_of_row.reshape(-1)
            if unit_of_row.max(initial=-1) + 1 < len(idx):
                grouped = True
                vals, counts = np.bincount(unit_of_row, weights=vals), np.bincount(unit_of_row).astype(float)
        # chunks keep the [B, n_c] index matrix small at n = 20k
        for start in range(0, n_boot, 256):
            b = min(256, n_boot - start)
            pick = rng.integers(0, len(vals), size=(b, len(vals)))
            if len(vals) == len(idx):
                boot[start:start + b] += vals[pick].sum(axis=1) / n
            else:
                boot[start:start + b] += len(idx) / n * vals[pick].sum(axis=1) / counts[pick].sum(axis=1)
    fit_var = 0.0
    if folds is not None:
        folds = np.asarray(folds)
        ks = np.unique(folds)
        if len(ks) > 1:
            means = np.array([row[folds == f].mean() for f in ks])
            sizes = np.array([(folds == f).sum() for f in ks])
            row_var = np.mean([row[folds == f].var(ddof=1) / m for f, m in zip(ks, sizes)])
            fit_var = max(means.var(ddof=1) - row_var, 0.0) / len(ks)
    seed_deltas = diff.mean(axis=1)
    spread = seed_deltas.std(ddof=1) / np.sqrt(len(seed_deltas)) if len(seed_deltas) > 1 else 0.0
    se = float(np.sqrt(boot.var(ddof=1) + spread**2 + fit_var))
    slack = 0.0
    if corr_a is not None and corr_b is not None:
        slack = EXTRAPOLATION_SLACK * abs(float(np.mean(corr_a) - np.mean(corr_b)))
    z = ndtri(0.5 + ci_level / 2)
    drawn = "group (a group's rows drawn together)" if grouped else "row"
    lo, hi = delta - z * se - slack, delta + z * se + slack
    excess = max(abs(delta) - slack, 0.0)
    p = float(2 * ndtr(-excess / se)) if se > 0 else (1.0 if excess == 0 else 0.0)
    return PairedDifference(delta=from_nats(delta, unit), ci_low=from_nats(lo, unit),
                            ci_high=from_nats(hi, unit), ci_level=ci_level, p_value=min(p, 1.0),
                            se=from_nats(se, unit), n=n, unit=unit,
                            seed_deltas=[from_nats(float(v), unit) for v in seed_deltas],
                            slack=from_nats(slack, unit),
                            method=(f"normal interval Δ ± z·SE, SE from a stratified paired {drawn} "
                                    f"bootstrap ({n_boot} resamples) with the seed spread and fold "
                                    "variance in quadrature" + (", widened by the extrapolation slack"
                                                                if slack > 0 else "")))
