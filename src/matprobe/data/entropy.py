"""Exact empirical entropies of discrete columns (plug-in estimates of the sample's law).

These are the H upper limits of the MI chain: I(Z;Y|C) <= H(Y|C), with H taken over
the empirical distribution of the labels actually in the store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from matprobe.units import NATS, from_nats


def joint_codes(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Integer code per row for the tuple of values across `columns` (0..n_groups-1)."""
    if len(columns) == 0:
        raise ValueError("joint_codes needs at least one column")
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ValueError("columns have different lengths: " + ", ".join(str(len(c)) for c in columns))
    codes = [np.unique(np.asarray(c), return_inverse=True)[1].reshape(-1) for c in columns]
    sizes = [int(k.max()) + 1 if n else 1 for k in codes]
    if float(np.prod(sizes, dtype=np.float64)) < 2.0**62:
        # one integer per row, k_0 * (K_1 ... K_m) + ... + k_m: its order is the rows'
        # lexicographic order, so the codes are those of np.unique(axis=0) on the stacked codes,
        # at a 1-D unique's cost (40x less at n = 20k; the chain computes dozens of these)
        key = np.zeros(n, dtype=np.int64)
        for k, size in zip(codes, sizes):
            key = key * size + k
        return np.unique(key, return_inverse=True)[1].reshape(-1)
    return np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)[1].reshape(-1)


def _as_columns(c) -> list[np.ndarray]:
    if c is None:
        return []
    if isinstance(c, np.ndarray) and c.ndim == 1:
        return [c]
    if isinstance(c, np.ndarray) and c.ndim == 2:
        return [c[:, j] for j in range(c.shape[1])]
    return [np.asarray(col) for col in c]


def entropy(y, unit: str = NATS) -> float:
    """Plug-in entropy H(Y) of a discrete column.

    Parameters
    ----------
    y : array_like
        One label per row (any hashable values).
    unit : {"nats", "bits"}, default "nats"

    Returns
    -------
    float
        -Σ p log p over the label frequencies p, in `unit`.

    Examples
    --------
    Two labels in equal shares carry ln 2 nats (1 bit); shares 1/2, 1/4, 1/4 carry 1.5 bits:

    >>> import math
    >>> from matprobe.data.entropy import entropy
    >>> entropy([0, 0, 1, 1]) == math.log(2)
    True
    >>> entropy(["CT", "CT", "MRI", "X-ray"], unit="bits")
    1.5
    """
    y = np.asarray(y)
    if y.size == 0:
        raise ValueError("entropy of an empty column is undefined")
    _, counts = np.unique(y, return_counts=True)
    p = counts / counts.sum()
    p = p[p > 0]  # 0 log 0 = 0; numpy only, so loading data does not import scipy (a second at start-up)
    # + 0.0: one class gives -(1 log 1) = -0.0, which tables print as "-0.000"
    return from_nats(float(-(p * np.log(p)).sum()) + 0.0, unit)


def conditional_entropy(y, c=None, unit: str = NATS) -> float:
    """Plug-in H(Y|C) = H(Y, C) - H(C); `c` is one column, a 2-D array or a list of columns.

    Examples
    --------
    A label independent of C keeps all its entropy; a label C determines has none left:

    >>> import numpy as np
    >>> from matprobe.data.entropy import conditional_entropy
    >>> y = np.array([0, 1, 0, 1])
    >>> round(conditional_entropy(y, np.array([0, 0, 1, 1])), 6)  # ln 2
    0.693147
    >>> conditional_entropy(y, np.array([5, 6, 5, 6]))
    0.0
    """
    cols = _as_columns(c)
    if not cols:
        return entropy(y, unit)
    y = np.asarray(y)
    h_joint = entropy(joint_codes([y, *cols]))
    h_cond = entropy(joint_codes(cols))
    return from_nats(max(h_joint - h_cond, 0.0), unit)


def conditional_entropy_upper(y, c=None, level: float = 0.95, unit: str = NATS) -> float:
    """An upper confidence limit for the population H(Y|C) from a sample of (y, c): the plug-in
    estimate plus the Miller-Madow bias term, sum over strata of (K_c - 1) / (2 n) (Miller 1955),
    plus z standard errors, where z is the normal quantile at 1 - (1 - level) / 2 and the
    standard error is the s.d. of -log p(y_i | c_i) over the rows divided by sqrt(n) (the
    delta method, Basharin 1959); at most the largest log K_c, K_c the labels seen in stratum c.

    The plug-in H(Y|C) is the sample's, and it falls short of the population's by its bias and
    its noise: with imbalanced classes near saturation the truth was above it (RESULTS.md,
    issue 22 thirteenth session), so an interval capped there could not cover.

    Examples
    --------
    Equal shares: the plug-in is ln 2 already, the limit stays at most ln 2 (two labels seen):

    >>> import math
    >>> conditional_entropy_upper([0, 1] * 50) == math.log(2)
    True
    >>> round(conditional_entropy_upper([0] * 90 + [1] * 10), 4)  # plug-in 0.3251
    0.4599
    """
    from statistics import NormalDist  # the standard library's: this module stays free of scipy

    y = np.asarray(y)
    cols = _as_columns(c)
    strata = joint_codes(cols) if cols else np.zeros(len(y), dtype=np.int64)
    cells = joint_codes([y, strata])
    n = len(y)
    n_cell = np.bincount(cells)
    n_stratum = np.bincount(strata)
    cell_stratum = np.zeros(len(n_cell), dtype=np.int64)
    cell_stratum[cells] = strata
    # -log p(y | c) per row, from the cell and stratum counts
    surprise = np.log(n_stratum[strata]) - np.log(n_cell[cells])
    plug_in = float(surprise.mean())
    labels_per_stratum = np.bincount(cell_stratum, minlength=len(n_stratum))
    bias = float((labels_per_stratum - 1).sum()) / (2 * n)
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    se = float(surprise.std(ddof=1)) / np.sqrt(n) if n > 1 else 0.0
    ceiling = float(np.log(labels_per_stratum.max()))
    return from_nats(float(min(plug_in + bias + z * se, ceiling)), unit)

