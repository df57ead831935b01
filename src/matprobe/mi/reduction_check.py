"""Did the label-free reduction leave label information out? A cross-fitted test on its residual.

The estimators see Z through `prep.label_free_reduction`: PCA-64 of the normal scores plus the
massive coordinates. By data processing they estimate I(f(Z);Y|C) <= I(Z;Y|C), and when the
labels move Z along directions of lower variance than the PCA keeps (signal under anisotropic
noise, or d/n large), the reduction drops the signal and every estimate reads far too low with
a narrow interval (RESULTS.md, issue 22 eleventh session: truth 0.553 nats, probe 0.0002
[0.0000, 0.0033] at n = 20k).

The test asks whether the class means of the residual r = x - Q Q^T x (x the PCA's input, Q an
orthonormal basis of what the features keep) differ within the strata. For each fold f, the
directions w_{c,k} = m_{c,k} - m_c come from the training rows' residual means (cell (c, k)
and stratum c); the held-out rows are projected on them, B_ik = <r_i, w_{c_i,k}>, and with
D_ik = B_ik minus its mean over the held-out rows of the stratum,

    T = sum_i D_{i, y_i}  = sum_k n_k <mean of r over held-out class k - over stratum, w_{c,k}>,

a cross-fitted between-class scatter. If the residual's distribution does not depend on Y
given C, its held-out rows are exchangeable over their labels, so T has mean 0 given the
training rows and the held-out labels, and its permutation variance is (Hoeffding's
combinatorial central limit theorem for a linear rank statistic; the row and column means of
the score matrix are 0 here)

    Var T = 1/(n_c - 1) sum_i sum_k n_k M_ik^2,   M_ik = D_ik - sum_k' (n_k' / n_c) D_ik'.

The folds' statistics are not independent: each fold's held-out rows are training rows of the
others. With K equal folds and a_f the held-out class-mean deviations of fold f, T_f is about
1/(K-1) sum_{f' != f} <a_f, a_f'>, so sum_f T_f = 2/(K-1) sum_{f < f'} <a_f, a_f'>, whose
variance under the null is twice the sum of the folds' own (conditional) variances, for any K;
z = sum_f T_f / sqrt(2 sum_f Var T_f). Summing the variances alone gave z a standard deviation of
1.43 in simulation (tests). The test is one-sided (a shift makes T positive); its size is
measured by simulation in the tests.

The PCA is fitted on every row, the held-out ones too, so its directions lean toward the
sample's own class means: where the kept components carry the signal, the held-out rows'
residual shifts point against the training rows' and T falls below 0 (z down to -21 on the
calibration grid's massive family, RESULTS.md). The test is conservative there, never liberal.

Where a fold has fewer than 2 training rows per coordinate of Z, the leaning is strong enough to hide
what the reduction drops: the sample's class-mean direction then carries noise of about d / n per
class against the signal, the PCA of every row takes that noisy direction whole, and the held-out
residual shows no shift even where much of the population's separation lies outside the kept
components (an outside family, two Gaussian classes in d = 4,096 at n = 2k with isotropic noise:
40-57% of |dm|^2 outside the kept components, z -0.7 to 0.4, the estimates 10-17% low with
two-sided intervals missing; RESULTS.md issue 22 forty-seventh session). There each fold's
residual is taken against the PCA of its training rows alone (`fold_bases`), which has not seen
the held-out rows: the test then asks what a reduction loses on rows it was not fitted on.

`gain` turns the held-out shifts into nats, to say whether a significant residual matters: per
class, p_k / 2 times the squared mean of D_{i,k} over its held-out rows (counted where it is
positive, along the training direction, and less its sampling variance) over the within-class
variance of B_k, summed over classes and strata, weighted by
their rows: the small-signal information 1/2 sum_k p_k |mu_k - mu|^2 / s.d.^2 of Gaussian
classes, read along each class's own direction (for two classes, 1/2 p (1 - p) (shift /
s.d.)^2). It is a Gaussian approximation of what a linear read of these directions adds, not a
bound.

The cost at n = 20k, d = 4,096 is three float32 products of the [d, n] input with [n, G] (G the
plan's finest label cells), once per fold plan; each term then works on [n, G] projections.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from matprobe.mi.interface import ONE_SIDED

# rows the test uses at most (a fixed random subset beyond): its cost at d = 4,096 grows with them
MAX_ROWS = 8192
# a term is flagged "pca-dropped-signal" when its one-sided z is at least REDUCTION_Z and its gain
# at least REDUCTION_MIN_GAIN nats per row; the interval's upper end then gains REDUCTION_SLACK x
# the gain (the loss was up to 2x the gain where measured, RESULTS.md issue 22 eleventh session),
# or, where the gain exceeds REDUCTION_TWO_SIDED_SHARE of the estimate (the reduction lost much of
# the signal and the gain, read along noisy directions, no longer bounds what it lost), the
# interval is one-sided
REDUCTION_Z = 3.0
REDUCTION_MIN_GAIN = 1e-3
REDUCTION_SLACK = 2.0
REDUCTION_TWO_SIDED_SHARE = 0.1


@dataclass
class ResidualTest:
    """The reduction's residual test for one term (see the module docstring).

    z: the standardised cross-fitted statistic (one-sided: large = the residual's class means
    differ); statistic and variance: T summed over the folds and its null variance; gain: the Gaussian
    approximation of the information in the residual's class-mean directions, nats per row;
    rows: held-out rows used; kept: the reduction's kept dimensions; dim: Z's."""

    z: float
    statistic: float
    variance: float
    gain: float
    rows: int
    kept: int
    dim: int

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def dropped(self) -> bool:
        """Whether the reduction left label information out (z >= REDUCTION_Z and the gain at
        least REDUCTION_MIN_GAIN nats per row): the flag `pca-dropped-signal`."""
        return self.z >= REDUCTION_Z and self.gain >= REDUCTION_MIN_GAIN

    def verdict(self, value: float, upper: float, advice: str | None = None) -> "ReductionVerdict | None":
        """What the test means for an estimate `value` (nats) with upper end `upper`: None where
        the reduction kept the labels' information, else the flag's note, the slack added to the
        upper end and whether only the lower end is a statement (module constants). advice: the
        note's closing words (default: what to rerun with)."""
        if not self.dropped:
            return None
        said = (f"the label-free reduction to {self.kept} of {self.dim} dimensions left label information out: "
                f"the class means of what it drops differ on held-out rows (z = {self.z:.1f}; about "
                f"{self.gain:.4f} nats per row along their directions)")
        # at d = 4,096 a larger --pca was the better remedy: --pca 256 read a draw 0.4% low in 11 CPU s,
        # --pca 0 read it 19% low in 428 CPU s (too few rows per class for 4,097 inputs; RESULTS.md)
        if advice is None:
            advice = ("; rerun with a larger --pca (e.g. 4 x), or with --pca 0 (every coordinate) where Z has few "
                      "coordinates for its rows per class")
        if self.gain > REDUCTION_TWO_SIDED_SHARE * max(value, 0.0):
            return ReductionVerdict(True, 0.0, said + f", more than {REDUCTION_TWO_SIDED_SHARE:.0%} of the estimate, "
                                    "so " + ONE_SIDED + advice)
        slack = REDUCTION_SLACK * self.gain
        return ReductionVerdict(False, slack, said + f", so the upper end is raised by {REDUCTION_SLACK:g} x that, "
                                f"{slack:.4f} nats" + advice)


@dataclass
class ReductionVerdict:
    """`ResidualTest.verdict`: only the lower end a statement (one_sided), or the upper end
    raised by `slack` nats; `note` says which and why."""

    one_sided: bool
    slack: float
    note: str


class ResidualProjections:
    """The held-out rows' projections on the training rows' residual cell sums, per fold.

    x_t: the PCA's input [d, n] (`LabelFreeReduction.pca_input`); basis: [d, q] orthonormal
    (`kept_basis`); fold: fold id per row; fold_bases: {fold id: basis} to take a fold's residual
    against instead (`prep.fold_kept_bases`: the PCA of its training rows alone, where they are
    fewer than 2 per coordinate, `base.FOLD_PCA_ROWS_PER_COORDINATE`; module docstring);
    max_rows: beyond this many rows the test runs on a
    fixed random subset of them (`rows`; seeded by `seed`), whose columns are copied out at
    once: x_t itself is not kept (at n = 20k, d = 4,096 it is 328 MB, the copy 134 MB).
    `test(y, c, active)` runs the test for one term.
    Projections are computed once per grouping of the rows (by default the term's own cells;
    `groups` of finer cells, e.g. the joint code of every factor of a chain, serve every term
    whose cells are unions of them).

    >>> rng = np.random.default_rng(0)
    >>> n, d = 3000, 40
    >>> y = rng.integers(0, 2, n)
    >>> x = rng.standard_normal((n, d)).astype(np.float32)
    >>> x[:, 39] += 0.5 * y  # the labels shift the last coordinate only
    >>> fold = np.arange(n) % 5
    >>> kept = torch.eye(d)[:, :39]  # a reduction that keeps the first 39 coordinates
    >>> t = ResidualProjections(torch.from_numpy(x.T.copy()), kept, fold).test(y, None, np.ones(n, bool))
    >>> bool(t.z > 5), round(t.gain, 2)  # 1/2 p(1-p) (0.5 / 1)^2 = 0.03
    (True, 0.03)
    >>> ResidualProjections(torch.from_numpy(x.T.copy()), torch.eye(d), fold).test(y, None, np.ones(n, bool)).z
    0.0
    """

    def __init__(self, x_t: torch.Tensor, basis: torch.Tensor, fold: np.ndarray,
                 max_rows: int | None = MAX_ROWS, seed: int = 0, fold_bases: dict | None = None):
        self.basis = basis
        self.fold_bases = fold_bases or {}  # {fold id: the basis its residual is taken against}
        self.fold = np.asarray(fold)
        self.dim = int(x_t.shape[0])
        n = len(self.fold)
        rows = np.arange(n)
        if max_rows is not None and n > max_rows:  # a fixed random subset: the test's cost is capped
            rows = np.sort(np.random.default_rng([seed, 4241]).choice(n, max_rows, replace=False))
        self.rows = rows
        self._blocks = _fold_blocks(x_t, rows, self.fold[rows])  # x_t itself is not kept
        self._cache: dict = {}

    def _projections(self, groups: np.ndarray) -> tuple[np.ndarray, int, list]:
        """(group codes, G, per fold (held-out rows, [rows, G] float64 projections on the
        training rows' residual sums of each group, the training rows per group)), over the
        test's rows (`self.rows`)."""
        key = (groups.shape, groups.tobytes())
        if key in self._cache:
            return self._cache[key]
        codes = np.unique(groups, return_inverse=True)[1].reshape(-1)
        n_groups = int(codes.max(initial=-1)) + 1
        blocks = self._blocks
        dev = blocks[0][1].device
        sums, counts = [], []
        for held, x in blocks:  # [d, G] per fold: the held-out rows' sum per group
            onehot = torch.zeros(len(held), n_groups, dtype=x.dtype, device=dev)
            onehot[torch.arange(len(held), device=dev), torch.as_tensor(codes[held], device=dev)] = 1.0
            sums.append(x @ onehot)
            counts.append(np.bincount(codes[held], minlength=n_groups))
        sums_all, counts_all = sum(sums), sum(counts)
        folds = []
        for (held, x), sums_held, counts_held in zip(blocks, sums, counts):
            sums_tr = sums_all - sums_held
            # only the residual of each sum: what the kept basis spans is in the features already
            basis = self.fold_bases.get(int(self.fold[held[0]]), self.basis)
            sums_tr -= basis @ (basis.T @ sums_tr)
            proj = (x.T @ sums_tr).double().cpu().numpy()  # <x_i, S_g> = <r_i, S_g>: S_g is residual
            folds.append((held, proj, counts_all - counts_held))
        self._cache[key] = (codes, n_groups, folds)
        return self._cache[key]

    def test(self, y, c, active, groups: np.ndarray | None = None) -> ResidualTest:
        """The residual test of I(Z;Y|C) over the `active` rows (strata with one class left out).
        groups: finer cells whose unions are the term's (stratum, class) cells (faster when the
        projections are shared); when they are not, the term's own cells are used."""
        y = np.unique(np.asarray(y), return_inverse=True)[1].reshape(-1)
        c = np.zeros(len(y), dtype=np.int64) if c is None else np.unique(np.asarray(c), return_inverse=True)[1].reshape(-1)
        active = np.asarray(active, dtype=bool)
        cell = np.unique(c * (int(y.max()) + 1) + y, return_inverse=True)[1].reshape(-1)
        if groups is None or not _refines(np.asarray(groups)[active], cell[active]):
            groups = cell
        codes, n_groups, folds = self._projections(np.asarray(groups))
        # each group's (stratum, class) cell, among the active rows
        group_cell = np.full(n_groups, -1)
        group_cell[codes[active]] = cell[active]
        cell_stratum = np.zeros(int(cell.max()) + 1, dtype=np.int64)
        cell_stratum[cell] = c
        ok = group_cell >= 0
        to_cell = np.zeros((n_groups, len(cell_stratum)))  # group -> its cell (the fold-invariant sums)
        to_cell[np.flatnonzero(ok), group_cell[ok]] = 1.0
        to_stratum = _indicator(cell_stratum)  # cell -> its stratum
        total_t = total_var = gain = 0.0
        rows = 0
        for held, proj, counts_tr in folds:
            n_cell = counts_tr @ to_cell
            n_str = n_cell @ to_stratum
            # projections on the training rows' cell and stratum means of the residual
            on_cell_sum = proj @ to_cell
            on_cell = on_cell_sum / np.maximum(n_cell, 1.0)
            on_str = on_cell_sum @ to_stratum / np.maximum(n_str, 1.0)
            h_act = active[held]
            h_cell, h_str = cell[held][h_act], cell_stratum[cell[held][h_act]]
            on_cell, on_str = on_cell[h_act], on_str[h_act]
            for s in np.unique(h_str):
                rows_s = h_str == s
                cells_s = np.flatnonzero((cell_stratum == s) & (n_cell > 0))
                if rows_s.sum() < 3 or len(cells_s) < 2:
                    continue
                b = on_cell[rows_s][:, cells_s] - on_str[rows_s, s][:, None]  # B_ik
                d_ = b - b.mean(axis=0)  # D_ik
                lab = np.searchsorted(cells_s, h_cell[rows_s])
                known = np.isin(h_cell[rows_s], cells_s)
                n_s = int(rows_s.sum())
                n_k = np.bincount(lab[known], minlength=len(cells_s)).astype(float)
                total_t += float(d_[np.flatnonzero(known), lab[known]].sum())
                m = d_ - d_ @ (n_k / n_s)[:, None]
                total_var += float((m**2 * n_k[None, :]).sum()) / (n_s - 1)
                gain += n_s * _gain(d_, b, lab, known, n_k, n_s)
                rows += n_s
        total_var *= 2.0  # the folds' statistics share rows (module docstring)
        z = total_t / np.sqrt(total_var) if total_var > 0 else 0.0
        return ResidualTest(float(z), total_t, total_var, float(gain / max(rows, 1)), rows,
                            int(self.basis.shape[1]), self.dim)


def _fold_blocks(x_t: torch.Tensor, rows: np.ndarray, fold: np.ndarray) -> list:
    """[(a fold's rows, ascending; their columns of x_t [d, rows] (a view))], from one gather of
    the rows' columns ordered by fold: 0.08 s for 8k of 20k columns at d = 4,096 by numpy
    (torch.index_select: 0.29 s; one gather per fold: 0.2 s)."""
    order = np.lexsort((rows, fold))
    rows, fold = rows[order], fold[order]
    if x_t.device.type == "cpu":
        x = torch.from_numpy(np.take(x_t.numpy(), rows, axis=1))
    else:
        x = x_t.index_select(1, torch.as_tensor(rows, device=x_t.device))
    bounds = np.flatnonzero(np.r_[True, fold[1:] != fold[:-1], True])
    return [(rows[a:b], x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _indicator(codes: np.ndarray) -> np.ndarray:
    out = np.zeros((len(codes), int(codes.max(initial=-1)) + 1))
    out[np.arange(len(codes)), codes] = 1.0
    return out


def _refines(groups: np.ndarray, cell: np.ndarray) -> bool:
    """Whether every group lies within one cell."""
    groups = np.unique(groups, return_inverse=True)[1].reshape(-1)
    pairs = np.unique(groups * (int(cell.max(initial=0)) + 1) + cell)
    return len(np.unique(groups)) == len(pairs)


def _gain(d_, b, lab, known, n_k, n_s) -> float:
    """The Gaussian small-signal information of the held-out class shifts, nats per row."""
    total = 0.0
    for k in range(d_.shape[1]):
        mine = known & (lab == k)
        if n_k[k] < 2 or n_k[k] >= n_s:
            continue
        p = n_k[k] / n_s
        shift = float(d_[mine, k].mean())
        within = np.concatenate([b[mine, k] - b[mine, k].mean(), b[~mine, k] - b[~mine, k].mean()])
        var = float(within.var()) * n_s / max(n_s - 2, 1)
        if var <= 0:
            continue
        # a shift against the training direction carries nothing a critic fitted there can use (the
        # in-sample PCA pulls held-out shifts that way: module docstring); E shift^2 = true^2 + its
        # sampling variance
        excess = max(shift, 0.0) ** 2 - var * (1.0 - p) / (p * n_s)
        total += 0.5 * p * max(excess, 0.0) / var
    return total
