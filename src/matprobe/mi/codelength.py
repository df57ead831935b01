"""Online (prequential) codelength of a chain term's labels given Z (Voita & Titov 2020, issue 25).

How easy is the information to extract? Transmit the labels Y of n rows in blocks: the first block
with the uniform code over the classes of its stratum, each later block with the critic fitted on
every row sent before it (the same estimator the term uses, features from the same label-free
preprocessing). The total is the online codelength in bits; the uniform codelength (every row sent
with the uniform code) over it is the compression. A term whose information a probe finds only
with many rows has a long online code even when its MI estimate is the same.

Block schedule (Voita & Titov 2020, §3): the first 0.1%, 0.2%, 0.4%, 0.8%, 1.6%, 3.2%, 6.25%,
12.5%, 25% and 50% of the rows, then all, in a fixed random order (seeded), with every block
boundary moved so that each training prefix holds at least `min_first` rows (a probe cannot be
fitted on a handful). For I(Z;Y|C) the code is conditional on C: the uniform code is log2 of the
number of classes of Y in the row's stratum, and the critic is the per-stratum probe. Where the
term's folds keep groups together (an image seen in several rows), the rows are sent group by group
and the schedule counts groups (`online_codelength`'s `groups`).

>>> import numpy as np
>>> block_ends(1000, min_first=20)
[20, 32, 62, 125, 250, 500, 1000]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from matprobe.errors import EstimationError

# fractions of the rows at which blocks end (Voita & Titov 2020, section 3)
SCHEDULE = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)

# predict(x_train, y_train, c_train, sub_train, x_eval, c_eval, y_eval[, groups_tr=...]) -> log q(y_eval | x_eval,
# c_eval), nats; groups_tr (the training rows' groups) only where the rows are grouped
Predictor = Callable[..., np.ndarray]


@dataclass
class OnlineCodelength:
    """The online code of one term's labels, in bits."""

    online_bits: float
    uniform_bits: float
    compression: float  # uniform / online
    block_ends: list[int]
    block_bits: list[float]  # bits of each block (the first with the uniform code)
    n: int
    seed: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def block_ends(n: int, min_first: int = 20, schedule=SCHEDULE) -> list[int]:
    """Row counts at which the blocks end: `schedule` x n, at least `min_first`, increasing, ending at n."""
    ends = []
    for frac in schedule:
        end = min(n, max(int(min_first), int(round(frac * n))))
        if not ends or end > ends[-1]:
            ends.append(end)
    if ends[-1] != n:
        ends.append(n)
    return ends


def classes_per_stratum(y: np.ndarray, c: np.ndarray | None) -> np.ndarray:
    """Per row: the number of classes of Y in its stratum (all rows when c is None)."""
    if c is None:
        return np.full(len(y), len(np.unique(y)))
    out = np.empty(len(y), dtype=np.int64)
    for code in np.unique(c):
        rows = c == code
        out[rows] = len(np.unique(y[rows]))
    return out


def online_codelength(predict: Predictor, x, y, c=None, *, sub=None, seed: int = 0, min_first: int = 20,
                      schedule=SCHEDULE, groups=None) -> OnlineCodelength:
    """The online codelength of y given x (and c): see the module docstring.

    predict: fits a critic on the training rows and returns log q(y|x, c) in nats for the rows
    to encode (`probe_predictor` gives the default probe's).
    groups: a group per row (an image seen in several rows) or None: the rows are sent group by
    group in a random order of the groups, the schedule counts groups and each block ends where a
    group ends, so no row is coded by a critic fitted on its own copies (sent by row, 300 items seen
    3 times compressed 1.22-1.38 where 900 distinct items compressed 0.95-1.17); `predict` then gets
    the training rows' groups as `groups_tr`, for the splits inside its fit.
    """
    y = np.asarray(y)
    n = len(y)
    if n < 2 * min_first:
        raise EstimationError(f"online codelength needs at least {2 * min_first} rows (got {n}); add samples")
    c = None if c is None else np.asarray(c)
    rng = np.random.default_rng([int(seed), 31_337])
    notes = []
    group = None
    if groups is None or len(np.unique(np.asarray(groups))) == n:
        order = rng.permutation(n)
        ends = block_ends(n, min_first, schedule)
    else:
        group = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
        sent = rng.permutation(group.max() + 1)  # the groups in sending order (by row: the rows')
        place = np.empty_like(sent)
        place[sent] = np.arange(len(sent))  # each group's place in that order
        order = np.argsort(place[group], kind="stable")
        # the schedule counts groups (items), each block ending where its last group's rows end:
        # counted in rows, the first blocks fitted on 7 items seen 3 times cost 3x their bits
        bounds = np.cumsum(np.bincount(place[group]))  # rows sent by the end of each group
        # a study of few items seen many times (the rows pass the check above): the first block
        # holds half the groups rather than refuse a code the rows allow
        first = min(int(min_first), len(bounds) // 2)
        ends = [int(bounds[e - 1]) for e in block_ends(len(bounds), first, schedule)]
        notes.append("rows sent group by group (a group's rows in one block)" + (
            f"; the first block holds {first} groups, fewer than {min_first}: only {len(bounds)} groups"
            if first < min_first else ""))
        group = group[order]
    x, y = np.asarray(x)[order], y[order]
    c = None if c is None else c[order]
    sub = None if sub is None else np.asarray(sub)[order]
    log2_k = np.log2(classes_per_stratum(y, c))
    bits = [float(log2_k[: ends[0]].sum())]
    for start, end in zip(ends[:-1], ends[1:]):
        tr, ev = slice(0, start), slice(start, end)
        lq = predict(x[tr], y[tr], None if c is None else c[tr], None if sub is None else sub[tr],
                     x[ev], None if c is None else c[ev], y[ev], **({} if group is None else {"groups_tr": group[tr]}))
        bits.append(float(-np.sum(lq) / math.log(2)))
    online = float(sum(bits))
    uniform = float(log2_k.sum())
    return OnlineCodelength(online_bits=online, uniform_bits=uniform,
                            compression=uniform / online if online > 0 else float("inf"),
                            block_ends=ends, block_bits=bits, n=n, seed=int(seed), notes=notes)


def probe_predictor(**params) -> Predictor:
    """log q(y|x, c) of the default probe's critic fitted on the training rows (the ladder as in the
    term, no learning-curve step: a code needs the critic's own probabilities): its per-row held-out
    terms plus log p(y|c) of the training rows. `params`: the probe's keywords (e.g. seed, penalties)."""
    from matprobe.mi.probe import ProbeEstimator, _log_marginal

    estimator = ProbeEstimator(**{**params, "extrapolate": False, "seeds": 1})

    def predict(x_tr, y_tr, c_tr, sub_tr, x_ev, c_ev, y_ev, groups_tr=None):
        c_tr = np.zeros(len(y_tr), dtype=np.int64) if c_tr is None else c_tr
        c_ev = np.zeros(len(y_ev), dtype=np.int64) if c_ev is None else c_ev
        sub_tr = np.zeros(len(y_tr), dtype=np.int64) if sub_tr is None else sub_tr
        estimator.row_groups = groups_tr  # a group's rows on one side of the splits inside the fit
        try:
            out = estimator.fit_fold_seeds(x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, [estimator.seed])[0]
        finally:
            estimator.row_groups = None
        # r = log q - log p(y|c), p from the training rows' frequencies (0.5 pseudo-count)
        return out.arrays["r"] + _log_marginal(y_tr, c_tr, y_ev, c_ev)

    return predict
