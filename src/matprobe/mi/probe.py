"""The variational probe bound I(Z;Y|C) >= H(Y|C) - CE(q), the default estimator.

Barber & Agakov (2003); as a probe, Pimentel et al. (2020) and V-information (Xu et al.
2020). For any q(y|z,c) the held-out mean of log q(y|z,c) - log p(y|c) lower-bounds the
MI in expectation; the better q, the tighter.

q is a softmax with one head per stratum c (docs/design.md §3: stratum-specific heads beat a
one-hot condition input) over *cells* (y, u), where u are optional finer sub-class labels
(the later factors of a chain), then marginalised over u:
q(y|z,c) = sum_u softmax_c(W_c z + b_c + log p(y,u|c))_{(y,u)}. A mixture of linear-softmax
posteriors is the exact posterior of class-conditional Gaussians with shared covariance,
which a single linear softmax is not when Y marginalises over sub-classes (docs/design.md §3:
a linear probe is misspecified for mixture posteriors).

Fitting, per fold. The objective is the mean training log-loss plus lam * |W|^2; it is a
sum of independent problems, one per stratum, so each stratum's head is fitted on its own
rows and its own cells (a softmax over every cell of every stratum costs (number of strata)
times more for the same optimum); the strata are padded into one L-BFGS batch. The penalty
lam is chosen on one validation split of the training folds by held-out log-loss, fitting the grid from the strongest penalty to the
weakest with warm starts and stopping once the validation loss rises (going on below the grid,
10x weaker per step, while a step gains significantly and the cells hold more rows than the
critic's inputs: classes separated along a thin direction of Z need large weights); then the
head is refitted on all training rows at that penalty.
The held-out fold is only scored. Seeds share the fold, so they share that refit (the same
convex problem has the same minimiser); each seed draws its own half split for the
learning-curve correction (below), which is what varies between seeds.
"""

from __future__ import annotations

import copy
import dataclasses
import operator

import numpy as np
import torch

from matprobe.mi.base import (
    MEAN,
    REQUESTED_PCA,
    SMALL_CELL_SHARE,
    CrossFitEstimator,
    FoldOutput,
    lexicographic_cells,
    one_blas_thread,
    small_cell_share,
)
from matprobe.mi.interface import TWO_SIDED, EstimatorTags
from matprobe.mi.lbfgs import minimize_lbfgsb
from matprobe.mi.prep import (
    block_scale_variance,
    group_leads,
    hinge_features,
    hinge_knots,
    log_abs_scale_weights,
    quadratic_products,
    radial_interaction,
    radially_damped,
    row_scale_variance,
    second_moment_basis,
    second_moment_features,
    shared_scale_weights,
)
from matprobe.mi.registry import register_estimator

NEG = -1e9  # log-mask for cells outside a row's stratum
# from this many cells per stratum the linear fit's gradient subtracts its one-hot at the target
# cells alone, below it as a dense array (the faster of the two there; the same bits either way)
SPARSE_ONEHOT_CELLS = 16
# from this many (row, cell) entries the fit's broadcasts along the cells run in torch, below it in
# numpy, whose per-call cost is lower (the same bits either way)
TORCH_BROADCAST_ELEMENTS = 1 << 15
# a stratum with this many validation rows or more is fitted at its own (dims, penalty) cell of the
# linear path where that cell's penalty is weaker than the one chosen on every stratum's rows
# (`_LinearPath.cells`)
OWN_CELL_VAL_ROWS = 50


def _same_array(a: np.ndarray) -> np.ndarray:
    """The array itself (the numpy counterpart of `torch.from_numpy` in `ProbeEstimator._train`)."""
    return a


def _cells(c, y, u):
    """Cell id per row and the (stratum, y) of each cell: the (c, y, u) rows' distinct values in
    lexicographic order (`base.lexicographic_cells`)."""
    cell, (cell_c, cell_y, _) = lexicographic_cells([c, y, u])
    return cell, cell_c, cell_y


def cell_layout(c_tr, y_tr, sub_tr, c_ev, y_ev):
    """Softmax cells of one fold and the log prior of each cell within its stratum.

    Returns (cell of each training row, stratum of each cell, label of each cell,
    {stratum: row of `off`}, off [strata, cells]: log training frequency of the cell in
    its stratum, NEG outside it). (c, y) pairs seen only in the held-out fold (rare
    classes) get a cell of their own with a pseudo-count, so their rows score a finite
    log q instead of -inf.
    """
    seen = set(zip(c_tr.tolist(), y_tr.tolist()))
    extra = sorted({(a, b) for a, b in zip(c_ev.tolist(), y_ev.tolist()) if (a, b) not in seen})
    c_all = np.concatenate([c_tr, np.array([e[0] for e in extra], dtype=np.int64)])
    y_all = np.concatenate([y_tr, np.array([e[1] for e in extra], dtype=np.int64)])
    u_all = np.concatenate([sub_tr, np.full(len(extra), -1, dtype=np.int64)])
    cell_all, cell_c, cell_y = _cells(c_all, y_all, u_all)
    cell_tr = cell_all[: len(c_tr)]
    n_cells = len(cell_c)
    strata = np.unique(np.concatenate([c_tr, c_ev]))
    s_index = {int(s): i for i, s in enumerate(strata)}
    counts = np.bincount(cell_tr, minlength=n_cells).astype(np.float64) + 0.5
    off = np.full((len(strata), n_cells), NEG)
    for s in strata:
        in_s = cell_c == s
        if in_s.any():
            off[s_index[int(s)], in_s] = np.log(counts[in_s] / counts[in_s].sum())
    return cell_tr, cell_c, cell_y, s_index, off


class _Stratum:
    """One stratum's rows, cells and prior, as float32 tensors (a design matrix with intercept)."""

    def __init__(self, rows_tr, rows_ev, x_tr, x_ev, cell_tr, cells, cell_y, off_row, y_ev, dev):
        self.rows_tr, self.rows_ev = rows_tr, rows_ev
        self.cells = cells  # global cell ids of this stratum's local cells
        self.k = len(cells)
        self.x_tr = _design(x_tr[rows_tr], dev)
        self.x_ev = _design(x_ev[rows_ev], dev)
        local = np.full(int(max(cells.max(initial=-1), cell_tr.max(initial=-1))) + 1, -1, dtype=np.int64)  # global -> local cell
        local[cells] = np.arange(len(cells))
        target = local[cell_tr[rows_tr]]
        if (target < 0).any():
            raise ValueError("a training row's cell is not among its stratum's cells")
        self.target = torch.as_tensor(target, device=dev)
        self.off = torch.as_tensor(off_row[cells], dtype=torch.float32, device=dev)
        self.cell_y = torch.as_tensor(cell_y[cells], device=dev)  # [k] label of each local cell
        self.tr_cell_y = self.cell_y[self.target]
        self.ev_mask = self.label_mask(torch.as_tensor(y_ev[rows_ev], device=dev))

    def label_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """[n, k] log-mask: 0 on the cells whose label is the row's label, NEG elsewhere."""
        return torch.where(self.cell_y[None, :] == labels[:, None], 0.0, NEG)


def _log_q_of_logits(logits: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
    """log q(y|z) per row from cell logits [n, k] and the row's label log-mask [n, k] (0 on the
    cells of its label, NEG elsewhere): the label's cells against all cells.

    Where every row's label has one cell (no sub-classes, one stratum's cells: the linear
    path's case) the label's logsumexp is that cell's logit, read by a maximum: logsumexp
    computes max + log(sum exp(x - max)), and with the other cells at NEG the sum is exactly 1,
    so the bits are the same at a fraction of the cost (the masked logsumexp was 3% of the chain
    benchmark's CPU time)."""
    masked = logits + y_mask
    if bool(((y_mask == 0).sum(-1) == 1).all()):
        return masked.amax(-1) - torch.logsumexp(logits, -1)
    return torch.logsumexp(masked, -1) - torch.logsumexp(logits, -1)


def _design(x, dev):
    x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=dev)
    return torch.cat([x, torch.ones(len(x), 1, device=dev)], dim=1)


@dataclasses.dataclass
class _LevelFit:
    """One representation of a fold fitted up to its chosen level (`ProbeEstimator._fit_levels`)."""

    x_tr: np.ndarray
    x_ev: np.ndarray
    strata: list
    problem: object  # the `_shared` key of these fits (None when nothing is shared)
    a: int  # the chosen (dims, penalty) cell of the path
    b: int
    lam: float
    sols: dict  # the path's solutions, by (a, b)
    w_full: list  # the chosen cell refitted on every training row
    base_ev: np.ndarray
    lq_ev: np.ndarray  # held-out log q of the linear level
    diag: dict
    head: object  # the ladder's non-linear level (`_MLPLadder`), None without one
    val_loss: float  # the chosen level's validation log-loss, nats per row
    # per stratum (in `strata` order): its own validation log-loss at the chosen (dims, penalty)
    # cell minus its lowest over the cells fitted (`_LinearPath.stratum_gaps`); 0 for one stratum
    stratum_gaps: np.ndarray | None = None
    # per stratum, the (dims, penalty) cell it is fitted at (`_LinearPath.cells`); None: (a, b) for all
    cells: list | None = None
    lams: list | None = None
    dim_grid: list | None = None

    @property
    def strata_cells(self) -> list:
        """Each stratum's (dims, penalty) cell."""
        return self.cells or [(self.a, self.b)] * len(self.strata)

    @property
    def path_solution(self) -> list:
        """Each stratum's linear solution on the fitting rows at its own cell."""
        if self.cells is None:
            return self.sols[(self.a, self.b)]
        return [self.sols[cell][i] for i, cell in enumerate(self.cells)]

    @property
    def cell_key(self) -> tuple:
        return _cell_key(self.a, self.b, self.cells)


def _cell_key(a: int, b: int, cells: list | None) -> tuple:
    """The chosen cells as a `_shared` key: (a, b), with every stratum's cell where they differ."""
    return (a, b) if cells is None else (a, b, tuple(cells))


@dataclasses.dataclass
class _LinearPath:
    """The linear level's (dims, penalty) path on one representation of a fold
    (`ProbeEstimator._linear_path`)."""

    strata: list
    problem: object  # the `_shared` key of these fits (None when nothing is shared)
    dim_grid: list
    lams: list
    val_ce: np.ndarray  # validation log-loss (nats per row) per (dims, penalty) cell; inf: not fitted
    sols: dict  # the solutions, by (dims index, penalty index)
    # [dims, penalty, strata]: each stratum's own validation log-loss (nats per row of the
    # stratum); inf: not fitted, or no validation rows in the stratum
    stratum_val_ce: np.ndarray | None = None
    stratum_val_rows: np.ndarray | None = None  # each stratum's validation rows

    def cells(self, a: int, b: int) -> list | None:
        """Each stratum's (dims, penalty) cell: its own best where it has OWN_CELL_VAL_ROWS
        validation rows or more and that cell's penalty is weaker than the shared one's, else the
        cell chosen on every stratum's rows together, (a, b). None where every stratum takes (a, b)
        (one stratum, or none with enough rows or a weaker best penalty).

        A penalty chosen on all strata together suits the large ones: an outside family (issue 22,
        forty-first session: strata of 50/30/20% of 2,000 rows, each with its own signal) read the
        term low, its two-sided intervals covering in 34 of 39 draws. Only a weaker penalty is taken:
        a stratum over-shrunk by the shared penalty reads low by more than its learning curve shows
        (shrinkage is not overfitting, which the half fit measures), while one that would take a
        stronger penalty of its own is fitted at the shared, weaker one, whose overfitting the learning
        curve sees and whose shortfall against its own best widens the upper end (`stratum_gaps`). At
        any own cell: 37 of 40, but a weak 1,000-row stratum of an older outside family (F2) read lower
        at its stronger own penalty and its entry covered 27 of 30 (30 of 30 shared); weaker only: 39
        of 39 and 30 of 30. Strata of 50-100 rows choose on 10-20 validation rows, and there their own
        choice read lower than the shared one (0.157 against 0.207, twenty-ninth session): they keep it."""
        vs, rows = self.stratum_val_ce, self.stratum_val_rows
        if vs is None or rows is None or vs.shape[2] < 2:
            return None
        out = []
        for i in range(vs.shape[2]):
            v = vs[:, :, i]
            cell = (int(a), int(b))
            if rows[i] >= OWN_CELL_VAL_ROWS and np.isfinite(v).any():
                ai, bi = np.unravel_index(int(np.argmin(v)), v.shape)
                if bi > b:  # penalties run strongest first: a later one is weaker
                    cell = (int(ai), int(bi))
            out.append(cell)
        return None if all(cell == (a, b) for cell in out) else out

    def stratum_gaps(self, a: int, b: int, cells: list | None = None) -> np.ndarray:
        """Per stratum, how much its validation log-loss at cell (a, b) exceeds its own best cell's
        (>= 0; 0 where it has no validation rows). The cell is chosen on every stratum's rows
        together, so a small stratum whose signal differs from the large ones' (a 100-row stratum
        of 0.29 nats among weak strata of 300-1,000 rows) is fitted at a penalty chosen for
        theirs."""
        vs = self.stratum_val_ce
        if vs is None or vs.shape[2] < 2:
            return np.zeros(0 if vs is None else vs.shape[2])
        own = vs.reshape(-1, vs.shape[2]).min(axis=0)
        at = vs[a, b] if cells is None else np.array([vs[ca, cb, i] for i, (ca, cb) in enumerate(cells)])
        ok = np.isfinite(own) & np.isfinite(at)
        gaps = np.zeros(vs.shape[2])
        gaps[ok] = np.maximum(at[ok] - own[ok], 0.0)
        return gaps

    @property
    def best_loss(self) -> float:
        return float(self.val_ce.min())


def _room(cell_counts: np.ndarray, width: int) -> bool:
    """Whether a critic of `width` features (plus its intercept) is determined in cells of
    `cell_counts` rows: fewer than SMALL_CELL_SHARE of the rows in cells with fewer rows than its
    inputs (the "small-cells" rule, `base.small_cell_share`, on the inputs alone: without its
    floor of LOW_N_PER_CLASS rows a 4-column critic's radial interaction, 10 inputs, fits cells of
    13 rows). Wider representations and penalty steps below the grid need it: in an
    underdetermined critic classes separate by chance (RESULTS.md, issue 22 twenty-ninth and
    thirtieth sessions)."""
    return small_cell_share(cell_counts, width + 1, floor=0) < SMALL_CELL_SHARE


# the validation gain (nats per row) a step of the penalty path below its grid must exceed, beside
# `ladder_z` standard errors (`_step_gains`); the ladder's ladder_min_gain scale
PENALTY_EXTEND_GAIN = 0.002


def _paired_gain(gains: np.ndarray) -> tuple[float, float]:
    """The mean of paired per-row gains (nats per row) and its standard error; (0, inf) for fewer
    than two rows. Every "gains significantly" check of the probe reads these two."""
    if len(gains) < 2:
        return 0.0, float("inf")
    return float(gains.mean()), float(gains.std(ddof=1) / np.sqrt(len(gains)))


def _step_gains(before: np.ndarray, after: np.ndarray, z: float) -> bool:
    """Whether a step of the penalty path lowered the validation log-loss by more than
    PENALTY_EXTEND_GAIN per row and by `z` standard errors of the paired per-row gains."""
    if len(before) < 2 or len(before) != len(after):
        return False
    gain, se = _paired_gain(before - after)
    return gain > max(PENALTY_EXTEND_GAIN, z * se)


# the knots of the index check's hinges: a step in the critic's score needs knots close together
INDEX_QUANTILES = tuple(np.round(np.linspace(0.05, 0.95, 10), 2))

# the critic ladder's levels: "linear" always; the MLP ("nonlinear") is checked against it, and the
# other non-linear forms are fitted where the MLP was chosen
LADDER_LEVELS = ("linear", "nonlinear", "latent", "elliptical")


class ProbeEstimator(CrossFitEstimator):
    name = "probe"
    kind = MEAN
    tags = EstimatorTags(uses_fold_plan=True, pointwise=True, conditional=True, subclasses=True, bound=TWO_SIDED,
                         critic_cells=True)
    tolerance_grad = 1e-6  # L-BFGS stops when every gradient entry is below this
    # ... or when a step changes the loss (nats per row) or any weight by less than this: at
    # 1e-5 estimates moved by <= 0.0002 nats against 1e-9 and the fits took 40% of the time
    # (n = 20k, d = 4096 chain, RESULTS.md)
    tolerance_change = 1e-5
    # L-BFGS history: 10 pairs cost 20% less time than 20 at the same optimum (max_iter 300);
    # max_iter 100 stopped short on nearly separable strata (a demo term at 0.17 nats that
    # converges to 0.53), so the default is 300 (RESULTS.md, issue 12)
    lbfgs_memory = 10

    def __init__(self, *args, penalties=(1e-5, 1e-4, 1e-3, 1e-2, 1e-1), penalties_below: int = 3,
                 max_iter: int = 300,
                 use_subclasses: bool = True, dims=(1.0,),
                 extrapolate: bool = True, ladder=LADDER_LEVELS, hidden: int = 64,
                 ladder_z: float = 2.0, ladder_min_gain: float = 0.002, mlp_epochs: int = 60,
                 mlp_patience: int = 10, mlp_lr: float = 3e-3, mlp_weight_decay: float = 1e-4,
                 rank: int = 8, mlp_batch: int = 512, ladder_rows: int = 4096, ladder_patience: int = 2,
                 max_row_scale_variance: float = 0.1, radial_damping: bool = True,
                 radial_offsets=(0.03125, 0.125, 0.5), block_scale_z: float = 3.0, radial_unmapped: bool = True,
                 radial_check: bool = True,
                 radial_columns: int = 16, quadratic_check: bool = True, quadratic_columns: int = 8,
                 quadratic_fit: bool = True, second_moment_check: bool = True, second_moment_directions: int = 4,
                 additive_check: bool = True, additive_columns: int = 8, additive_share: float = 0.25,
                 index_check: bool = True, index_directions: int = 2, calibration_check: bool = True,
                 hinge_min_share: float = 0.03,
                 nonlinear_rate: bool = True, latent_cells: int = 4,
                 latent_init: float = 0.5, latent_lr: float = 1e-2, latent_start: str = "kmeans",
                 elliptical_lr: float = 3e-3, elliptical_patience: int = 30, map_choice: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if int(latent_cells) != latent_cells or latent_cells < 1:
            raise ValueError(f"latent_cells={latent_cells!r}: give a whole number of copies per cell, 1 or more (default 4)")
        if not (np.isfinite(latent_init) and latent_init >= 0 and np.isfinite(latent_lr) and latent_lr > 0):
            raise ValueError(f"latent_init={latent_init!r}, latent_lr={latent_lr!r}: give latent_init >= 0 and latent_lr > 0")
        self.latent_cells, self.latent_init, self.latent_lr = int(latent_cells), float(latent_init), float(latent_lr)
        if latent_start not in ("kmeans", "random"):
            raise ValueError(f"latent_start={latent_start!r}: give 'kmeans' (the default) or 'random'")
        self.latent_start = latent_start
        if not (np.isfinite(elliptical_lr) and elliptical_lr > 0) or int(elliptical_patience) != elliptical_patience \
                or elliptical_patience < 1:
            raise ValueError(f"elliptical_lr={elliptical_lr!r}, elliptical_patience={elliptical_patience!r}: give a "
                             "positive learning rate and a whole number of epochs, 1 or more (defaults 0.003 and 30)")
        self.elliptical_lr, self.elliptical_patience = float(elliptical_lr), int(elliptical_patience)
        self.map_choice = bool(map_choice)
        unknown = [lvl for lvl in ladder if lvl not in LADDER_LEVELS]
        if unknown or "linear" not in ladder:
            raise ValueError(f"ladder={tuple(ladder)!r}: give 'linear' and any of "
                             f"{', '.join(repr(x) for x in LADDER_LEVELS[1:])} (default: all of them)")
        self.nonlinear_rate = nonlinear_rate
        self.ladder = tuple(ladder)
        self.hidden, self.ladder_z, self.ladder_min_gain = hidden, ladder_z, ladder_min_gain
        self.mlp_epochs, self.mlp_patience = mlp_epochs, mlp_patience
        self.mlp_lr, self.mlp_weight_decay, self.rank = mlp_lr, mlp_weight_decay, rank
        self.mlp_batch = mlp_batch
        self.ladder_rows = ladder_rows
        self.ladder_patience = ladder_patience
        self.max_row_scale_variance = max_row_scale_variance
        self.radial_damping = radial_damping
        self.radial_offsets = tuple(float(o) for o in radial_offsets)
        self.block_scale_z = block_scale_z
        self.radial_unmapped = radial_unmapped
        if not self.radial_offsets or not all(np.isfinite(o) and o > 0 for o in self.radial_offsets):
            raise ValueError(f"radial_offsets={radial_offsets!r}: give one or more positive offsets, e.g. (0.25, 0.5)")
        self.radial_check = radial_check
        self.radial_columns = radial_columns
        self.quadratic_check = quadratic_check
        self.quadratic_columns = quadratic_columns
        self.quadratic_fit = quadratic_fit
        self.second_moment_check = second_moment_check
        self.second_moment_directions = second_moment_directions
        self.additive_check = additive_check
        self.additive_columns = additive_columns
        self.additive_share = additive_share
        self.index_check = index_check
        self.index_directions = index_directions
        self.calibration_check = calibration_check
        self.hinge_min_share = hinge_min_share
        self.penalties = tuple(float(p) for p in penalties)
        if int(penalties_below) != penalties_below or penalties_below < 0:
            raise ValueError(f"penalties_below={penalties_below!r}: give a whole number of steps, 0 or more (default 3)")
        self.penalties_below = int(penalties_below)
        self.max_iter = max_iter
        self.use_subclasses = use_subclasses
        self.dims = tuple(dims)
        self.extrapolate = extrapolate

    def scheme(self) -> dict:
        return {"tolerance_change": self.tolerance_change, "tolerance_grad": self.tolerance_grad,
                "optimizer": f"L-BFGS-B (scipy), {self.lbfgs_memory} pairs",
                "fit": "per-stratum, penalty path, shared refit",
                "preconditioning": "features centred per stratum, scaled by sqrt(RMS^2 + 8 lam n / n_stratum)",
                "misspecification": "ladder, radial, quadratic, second-moment or additive gains pooled over folds, or the rows' scale variance "
                                     "(label-free); a misspecified term is one-sided; its note compares the linear critic "
                                     "with the label prior",
                "radial damping": "above max_row_scale_variance (kappa of the whole norm, or of the block of columns "
                                  f"that share the scale where it stands {self.block_scale_z:g} null s.d. above 0), "
                                  "features / (o + rho / median) and its 1 / (...) column, rho the squared norm or the "
                                  f"block's" + (" (also on the reduction without the quantile map, its block from the covariance of "
                                               "log |x|)" if self.radial_unmapped else "") + f", the radius and offset o of "
                                  f"{self.radial_offsets} whose linear path "
                                  "predicts the validation split best, kept where the chosen level's validation "
                                  "log-loss is lower",
                "radial check": f"interaction columns x_j u (the {self.radial_columns} leading columns) and u, u the "
                                "standardised log |x|^2, fitted beside the fixed linear critic; where they gain on the "
                                "validation split (ladder_z s.e. and ladder_min_gain, and more than the ladder's "
                                "non-linear level where it was chosen) the fold is also fitted on [x, x_j u, u], kept "
                                "where the chosen level's validation log-loss is lower",
                "quadratic check": f"products of the {self.quadratic_columns} leading columns (centred per stratum), "
                                   f"fitted beside the fixed linear critic on at most {self.ladder_rows} fitting rows; "
                                   "a gain on the validation split (ladder_z s.e. and ladder_min_gain, pooled over the "
                                   "folds) flags the term"
                                   + ("; where one fold's gain is significant (and above the ladder's non-linear "
                                      "level's where it was chosen) the fold is also fitted on [x, products], kept "
                                      "where the chosen level's validation log-loss is lower" if self.quadratic_fit
                                      else "; it fits no representation"),
                "second-moment check": f"products of the rows' projections on the {self.second_moment_directions} "
                                       "directions where the cells' second moments differ most (SAVE, from the "
                                       "fitting rows) and the whitened squared norm, fitted beside the fixed linear "
                                       f"critic on at most {self.ladder_rows} fitting rows; flags and fits as the "
                                       "quadratic check; not where that check multiplies every column "
                                       f"(d <= {self.quadratic_columns}), whose products span these",
                "additive check": f"hinges max(x_j - t, 0) of the {self.additive_columns} leading columns at their "
                                  "stratum's 10/30/50/70/90% quantiles, fitted beside the fixed linear critic on at "
                                  f"most {self.ladder_rows} fitting rows (the columns whose weight is at least "
                                  f"{self.additive_share:g} of the leading one's); flags and fits as the quadratic "
                                  "check",
                "index check": f"hinges of the linear critic's label scores along its {self.index_directions} "
                               "leading directions (a label's cells averaged) at their stratum's 5, 15, ..., 95% "
                               "quantiles, fitted beside it; flags and fits as the quadratic check",
                "calibration check": "hinges of the linear critic's own log-probabilities of its labels at their "
                                     "stratum's 10/30/50/70/90% quantiles, fitted beside it; flags as the quadratic "
                                     "check, fits no representation",
                "hinge checks' floor": f"the additive, index and calibration gains count (flag, fit) only above "
                                       f"{self.hinge_min_share:g} of the linear critic's validation reading",
                "latent cells": (f"where the ladder chose its non-linear level: each cell's linear head split into "
                                 f"{self.latent_cells} copies (logit: their log-mean-exp), started from "
                                 + ("k-means clusters of the cell's fitting rows" if self.latent_start == "kmeans"
                                    else "a random step") + ", fitted on every fitting row, kept where its validation "
                                 "log-loss is below the MLP level's" if "latent" in self.ladder else "not in the ladder"),
                "elliptical": (f"where the ladder chose its non-linear level: the linear heads minus a_cell b_cell "
                               f"log(1 + |P z - m_cell|^2 / b_cell), P of rank {self.rank} shared by the cells, from "
                               f"a = 0 by Adam at {self.elliptical_lr:g} with patience {self.elliptical_patience}, "
                               "kept where its validation log-loss is the lowest of the non-linear forms"
                               if "elliptical" in self.ladder else "not in the ladder"),
                "requested PCA": "where the fold plan raised its PCA, the requested size's features are fitted "
                                 "too; admitted where their ladder chose the non-linear level and the raised "
                                 "features' did not, kept where the chosen level's validation log-loss is lower"}

    def misspecification(self, diags: list[dict]) -> str | None:
        """The linear level is misspecified when most fold fits chose the non-linear level, or
        when the non-linear level's validation gains, pooled over the folds, exceed `ladder_z`
        pooled standard errors and `ladder_min_gain` nats per row. One fold's check is weak at
        n = 2k: on Student-t classes (K = 2, d = 128) the folds gained 0.010-0.032 nats each,
        most below their own 2 s.e., and the pooled gain stood 3-5 s.e. above 0 while the
        linear probe was 12-30% low (issue 22).

        Where the fitted linear level also predicted the validation rows worse than the label
        prior alone (W = 0), pooled over the folds, the sentence says so: the linear logits
        overfit outlying rows (heavy tails, massive coordinates), and an estimate near 0 there
        does not show independence. Such terms stay one-sided although nulls of these shapes
        are among them: a null and a small dependence look the same to the checks (MI 0.03-0.06
        nats beside massive coordinates, or with tails at nu = 1.2, read 0.00-0.02 at n = 2k), and
        judged against the prior the two-sided intervals missed 1-2 of 20 more (issue 22).

        Third, without labels: when the rows' squared scale varies (`prep.row_scale_variance`,
        median over the folds' training features, above `max_row_scale_variance`). Rows x = s g
        with a scale s shared by every coordinate (heavy, elliptical tails) have a Bayes
        posterior whose logits are the linear ones divided by s^2; at small MI the best linear
        critic then reads 1 / (E[s^2] E[s^-2]) of the truth, about 1 / (1 + kappa). There the
        ladder's check has no power: Student-t classes (nu = 2) with 0.03-0.08 nats read 40-50%
        of the truth at n = 2k, the non-linear level's pooled gain stood 1.3-2 s.e. above 0,
        and half the two-sided intervals missed (issue 22, `small-t2`). Such folds are also fitted
        on radially damped features (`fit_fold_seeds`), which recover much of that shortfall but
        not all of it at n = 2k, so the statement stays one-sided.

        Fourth, the radial check (`_gain_beside`, kind "radial"): weights that vary with the row's radius,
        fitted beside the fixed linear critic, gained on the validation splits, pooled over the
        folds as the ladder's gains are (or most folds kept the radial representation). Classes
        seen through a spiral (rows turned by an angle that grows with the radius) bend the
        posterior that way; the non-linear level's check missed it in 4 of 10 draws at n = 2k,
        whose two-sided intervals missed (issue 22, tenth session, `--grid spiral`).

        Fifth, the quadratic check (`_gain_beside`, kind "quadratic"): the products of the
        `quadratic_columns` leading columns, fitted beside the fixed linear critic, gained on the
        validation splits, pooled over the folds. Classes that are mixtures of clusters in
        d = 256 (PCA 64) at n = 2k: the linear probe read 15-25% low, the non-linear level's
        check gained nothing on 64 inputs, and 9 of 10 two-sided intervals missed; the products
        gained 0.03-0.11 nats per row in each fold (issue 22, thirteenth session, `mixture-aniso`).
        Where a fold's own gain is significant, the fold is also fitted on the products
        (`quadratic_fit`, `fit_fold_seeds`), which recovers part of the shortfall; the statement
        stays one-sided.

        Sixth, the second-moment check (`_gain_beside`, kind "second-moment"): as the quadratic
        one, on products of the rows' projections on the directions where the cells' second
        moments differ most (`prep.second_moment_basis`, from the fitting rows) and on the
        whitened squared norm. Classes with equal means and covariances that differ by a rotation
        in a 4-dim block (d = 32, n = 2k) gave the linear critic nothing to rank, the quadratic
        check's columns missed the block, and 4 of 6 terms of 0.09-0.16 nats read 0 with two-sided
        intervals [0, 0.01] (issue 22, thirty-first and thirty-second sessions).

        Seventh, the additive check (`_gain_beside`, kind "additive"): hinges of the strong leading
        columns at their strata's quantiles (`prep.hinge_features`). Laplace classes (independent
        coordinates) have log-likelihood ratios that level off outside the class means; the linear
        critic read 13-20% low at n = 2k and the checks above were silent in most draws. Eighth,
        the index check (kind "index"): the same hinges of the critic's own scores along its
        leading directions (`_critic_directions`): labels set by a linear score and flipped at
        random have a posterior that is a step in that score, read 20-30% low by the linear critic
        with two-sided intervals that missed. Ninth, the calibration check (kind "calibration"):
        hinges of the critic's own log-probabilities (`_critic_log_q`), where K = 4-5 classes cut
        by their argmax and flipped at random read 25-40% low (issue 22, forty-second session)."""
        # the level is chosen once per fold (its seeds share it): one level and one gain per fold
        first_seed = [d for d in diags if d.get("seed", 0) == 0]
        levels = [d["level"] for d in first_seed if d.get("level")]
        n_nonlin = sum(lv != "linear" for lv in levels)
        checks = [d for d in first_seed if d.get("level_gain_se") is not None]
        pooled, pooled_se, n_checks = _pooled_gain(first_seed, "level_gain", "level_gain_se")
        by_folds = bool(levels) and 2 * n_nonlin > len(levels)
        by_pool = pooled > self.ladder_min_gain and pooled > self.ladder_z * pooled_se
        # (kappa of the whole norm, of the block of columns that share the scale) per fold; the
        # block's is None where it did not stand clear of its null s.d.
        kappas = [(d["row_scale_variance"], -np.inf if d.get("row_scale_variance_block") is None
                   else d["row_scale_variance_block"])
                  for d in first_seed if d.get("row_scale_variance") is not None]
        scale_var = float(np.median([max(k) for k in kappas])) if kappas else 0.0
        on_block = any(block > whole for whole, block in kappas)
        by_scale = scale_var > self.max_row_scale_variance
        r_gains, r_ses, _ = _pooled_gain(first_seed, "radial_gain", "radial_gain_se")
        n_radial = sum(d.get("representation") == "radial interaction" for d in first_seed)
        by_radial = (2 * n_radial > len(first_seed)) or (r_gains > self.ladder_min_gain and r_gains > self.ladder_z * r_ses)
        q_gain, q_se, _ = _pooled_gain(first_seed, "quadratic_gain", "quadratic_gain_se")
        by_quadratic = q_gain > self.ladder_min_gain and q_gain > self.ladder_z * q_se
        s_gain, s_se, _ = _pooled_gain(first_seed, "second_moment_gain", "second_moment_gain_se")
        by_second = s_gain > self.ladder_min_gain and s_gain > self.ladder_z * s_se
        # the hinge checks count past a share of the linear critic's validation reading too
        lin_mis = [d["linear_val_mi"] for d in first_seed if d.get("linear_val_mi") is not None]
        hinge_floor = max(self.ladder_min_gain, self.hinge_min_share * float(np.mean(lin_mis)) if lin_mis else 0.0)
        a_gain, a_se, _ = _pooled_gain(first_seed, "additive_gain", "additive_gain_se")
        by_additive = a_gain > hinge_floor and a_gain > self.ladder_z * a_se
        i_gain, i_se, _ = _pooled_gain(first_seed, "index_gain", "index_gain_se")
        by_index = i_gain > hinge_floor and i_gain > self.ladder_z * i_se
        k_gain, k_se, _ = _pooled_gain(first_seed, "calibration_gain", "calibration_gain_se")
        by_calibration = k_gain > hinge_floor and k_gain > self.ladder_z * k_se
        if not (by_folds or by_pool or by_scale or by_radial or by_quadratic or by_second or by_additive or by_index
                or by_calibration):
            return None
        if by_calibration and not (by_folds or by_pool or by_radial or by_quadratic or by_second or by_additive
                                   or by_index):
            msg = ("the linear critic is misspecified: hinges of its own log-probabilities (max(log q - t, 0) at 5 "
                   "quantiles of each cell's), fitted beside it (a critic whose confidence can level off), improved "
                   f"its validation log-loss inside the training folds by {k_gain:.4f} +- {k_se:.4f} nats per row "
                   f"(mean over {len(first_seed)} folds)")
        elif by_index and not (by_folds or by_pool or by_radial or by_quadratic or by_second or by_additive):
            msg = (f"the linear critic is misspecified: hinges of its scores along its {self.index_directions} "
                   f"leading directions (max(s - t, 0) at 10 quantiles of each), fitted beside it (a critic that "
                   f"can level off along them), improved its validation log-loss inside the training folds by "
                   f"{i_gain:.4f} +- {i_se:.4f} nats per row (mean over {len(first_seed)} folds)")
        elif by_additive and not (by_folds or by_pool or by_radial or by_quadratic or by_second):
            msg = (f"the linear critic is misspecified: hinges of its {self.additive_columns} leading feature columns "
                   f"(max(x_j - t, 0) at 5 quantiles of each), fitted beside it (a critic piecewise linear in "
                   f"each of them), improved its validation log-loss inside the training folds by {a_gain:.4f} +- "
                   f"{a_se:.4f} nats per row (mean over {len(first_seed)} folds)")
        elif by_second and not (by_folds or by_pool or by_radial or by_quadratic):
            msg = (f"the linear critic is misspecified: products of the rows' projections on the "
                   f"{self.second_moment_directions} directions where the classes' second moments differ most, "
                   f"and the rows' squared norm, fitted beside it, improved its validation log-loss inside the "
                   f"training folds by {s_gain:.4f} +- {s_se:.4f} nats per row (mean over {len(first_seed)} folds): "
                   f"the classes differ beyond their means")
        elif by_quadratic and not (by_folds or by_pool or by_radial):
            msg = (f"the linear critic is misspecified: products of its {self.quadratic_columns} leading feature "
                   f"columns, fitted beside it (a critic quadratic in them), improved its validation log-loss "
                   f"inside the training folds by {q_gain:.4f} +- {q_se:.4f} nats per row (mean over "
                   f"{len(first_seed)} folds)")
        elif by_radial and not (by_folds or by_pool):
            msg = (f"the linear critic is misspecified: letting its weights vary with the row's radius (features "
                   f"x u and u, u the row's standardised log squared norm) improved its validation log-loss inside "
                   f"the training folds by {r_gains:.4f} +- {r_ses:.4f} nats per row (mean over "
                   f"{len(first_seed)} folds)")
        elif by_folds or by_pool:
            msg = (f"the linear critic is misspecified: a non-linear critic beat it on validation log-loss "
                   f"inside the training folds by {pooled:.4f} +- {pooled_se:.4f} nats per row (mean over "
                   f"{n_checks} folds; chosen in {n_nonlin} of {len(levels)} folds)")
        else:
            msg = (f"the linear critic is misspecified: the rows' squared scale varies with relative variance "
                   f"{scale_var:.2f} (label-free, on the critic's features"
                   + (", along the columns that share the scale (`prep.shared_scale_weights`)" if on_block else "")
                   + f"; 0 for Gaussian rows, above "
                   f"{self.max_row_scale_variance:g} here). Where the classes share such a scale (heavy, elliptical "
                   f"tails) the Bayes posterior is the linear one divided by the row's scale, and a linear critic "
                   f"reads about {scale_var / (1 + scale_var):.0%} short at small MI (kappa / (1 + kappa)); "
                   + (f"the non-linear critic's gain on the validation rows ({pooled:.4f} +- {pooled_se:.4f} nats per "
                      "row) was too small to show it at this n" if n_checks else
                      "no non-linear critic was checked (the ladder has no non-linear level)"))
        damped = sum(d.get("representation") == "radially damped" for d in first_seed)
        if damped:
            kept = [d for d in first_seed if d.get("representation") == "radially damped"]
            offset = "/".join(f"{o:g}" for o in sorted({d["radial_offset"] for d in kept}))
            n_block = sum(d["radial_radius"] == "block" for d in kept)
            n_unmapped = sum(d["radial_radius"] == "unmapped block" for d in kept)
            radius = ("squared norm" if not (n_block or n_unmapped) else
                      f"squared norm, or in {n_block + n_unmapped} of them over the columns that share the scale"
                      + (f" ({n_unmapped} on the features without the quantile map)" if n_unmapped else "") + ",")
            msg += (f"; the critic was fitted on radially damped features (each row over {offset} + its {radius} "
                    f"relative to the median) in {damped} of {len(first_seed)} folds, where they predicted the "
                    "validation rows better than the features themselves")
        if n_radial:
            msg += (f"; the critic was fitted with weights that vary with the row's radius in {n_radial} of "
                    f"{len(first_seed)} folds, where that predicted the validation rows better")
        # the wider representations, each where it predicted the validation rows better
        wider = {"quadratic products": f"its features and the products of its {self.quadratic_columns} leading columns",
                 "second-moment products": f"its features, the products of their projections on the "
                                           f"{self.second_moment_directions} directions where the classes' second "
                                           f"moments differ most and the squared norm",
                 "additive hinges": f"its features and the hinges of its {self.additive_columns} leading columns",
                 "index hinges": f"its features and the hinges of its scores along its {self.index_directions} "
                                 f"leading directions"}
        for representation, words in wider.items():
            n_kept = sum(d.get("representation") == representation for d in first_seed)
            if n_kept:
                msg += (f"; the critic was fitted on {words} in {n_kept} of {len(first_seed)} folds, where that "
                        "predicted the validation rows better")
        over_prior = [d.get("linear_over_prior") for d in checks]
        if over_prior and all(v is not None for v in over_prior) and np.mean(over_prior) < 0:
            msg += (f", and the fitted linear critic predicted those rows {-float(np.mean(over_prior)):.4f} nats per "
                    "row worse than the label frequencies alone: its weights fitted the fitting rows' noise "
                    "more than a signal it can use (outlying rows of heavy tails or massive coordinates do "
                    "this, and so does a dependence that is not linear in the features), so an estimate near 0 "
                    "here does not show independence")
        return msg

    def fit_fold(self, x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seed) -> FoldOutput:
        return self.fit_fold_seeds(x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, [seed])[0]

    # ------------------------------------------------------------------ fitting
    def _train_by_cell(self, strata, cells, w0, lams, dim_grid, d, dev, n_all, keep) -> list:
        """`_train` for strata each at its (dims, penalty) cell (`_LinearPath.cells`): one fit per
        group of strata that share a cell, at its penalty and dims; one fit of them all, as before
        strata had cells of their own, where every cell is the shared one. The strata's problems are
        independent and each is divided by n_all as in the joint objective, so a stratum's solution
        is the one the joint fit would give it at that penalty."""
        out = [None] * len(strata)
        for cell in dict.fromkeys(cells):
            idx = [i for i, c in enumerate(cells) if c == cell]
            ws = self._train([strata[i] for i in idx], [w0[i] for i in idx], lams[cell[1]], n_all, keep,
                             _prefix_mask(d, dim_grid[cell[0]], dev))
            for i, w in zip(idx, ws):
                out[i] = w
        return out

    def _train(self, strata: list[_Stratum], w0: list, lam: float, n_all: int, keep: np.ndarray | None,
               mask, row_offsets: list | None = None) -> list:
        """Minimise sum over strata of sum_{i kept} ce_i / n_all + lam |W_s|^2 from w0 (L-BFGS).
        row_offsets: per stratum, fixed logits [its training rows, k] added to each row's (a
        fitted critic that the new weights extend), or None.

        The strata's problems are independent; they are padded into one batch (rows with weight
        0, cells with log-prior NEG and no free weights) so small strata do not each pay the
        optimiser's per-step overhead. Dividing by the row count of all strata (not a stratum's)
        keeps them the pieces of one joint objective, whose penalty is chosen jointly. keep: bool
        over the fold's training rows (None = all).

        Solved by scipy's L-BFGS-B (compiled, driven without scipy's Python wrappers:
        mi/lbfgs.py) with the softmax gradient written out, in float64: on these small problems
        torch's Python L-BFGS and autograd overhead was 3/4 of the MI step's time
        (docs/estimators.md, "Fitting cost").
        """
        dev = mask.device
        cols = mask[:, 0].detach().cpu().numpy() > 0  # kept features and the intercept (last)
        rows = [np.arange(len(st.rows_tr)) if keep is None else np.flatnonzero(keep[st.rows_tr])
                for st in strata]
        m = max(1, max(len(r) for r in rows))
        k_max = max(st.k for st in strata)
        n_s, p = len(strata), int(cols.sum())
        x = np.empty((n_s, m, p), dtype=np.float32)  # the features are float32: an exact copy
        target = np.zeros((n_s, m), dtype=np.int64)
        weight = np.zeros((n_s, m))
        off = np.full((n_s, 1, k_max), NEG)
        free = np.zeros((n_s, 1, k_max))  # 1 on a stratum's own cells: padded cells stay at 0
        w_init = np.zeros((n_s, p, k_max))
        row_off = None if row_offsets is None else np.zeros((n_s, m, k_max), dtype=np.float32)
        for i, (st, r) in enumerate(zip(strata, rows)):
            xs = st.x_tr.detach().cpu().numpy()
            if cols.all():  # the rows gathered straight into place
                np.take(xs, r, axis=0, out=x[i, : len(r)])
            else:
                x[i, : len(r)] = np.take(xs, r, axis=0)[:, cols]
            x[i, len(r) :] = 0.0  # padded rows
            target[i, : len(r)] = st.target.cpu().numpy()[r]
            weight[i, : len(r)] = 1.0
            off[i, 0, : st.k] = st.off.cpu().numpy()
            if row_off is not None:
                row_off[i, : len(r), : st.k] = np.asarray(row_offsets[i], dtype=np.float32)[r]
            free[i, 0, : st.k] = 1.0
            w_init[i, :, : st.k] = np.asarray(w0[i].detach().cpu().numpy(), dtype=np.float64)[cols]
        penalised = free * np.r_[np.ones(p - 1), 0.0][None, :, None]  # the intercept is not penalised
        # preconditioning: each stratum's features centred and scaled over its rows (the
        # intercept absorbs the centring, each weight row the inverse scale, the penalty is
        # rescaled to stay lam |W|^2). The same problem and optimum in better-conditioned
        # coordinates: L-BFGS needed 58% fewer evaluations on the 20k x 4,096 chain, and at the
        # default tolerances ended nearer the exact optimum (RESULTS.md, issue 22). The scale is
        # sqrt(RMS^2 + kappa), the square root of the weight's data curvature (at most about
        # RMS^2 / 4 per row, times the stratum's share of rows) plus its penalty curvature 2 lam:
        # a column nearly constant within a stratum (a massive coordinate that marks the stratum)
        # scaled by its RMS alone would turn the penalty 1e10 times stiffer there, and L-BFGS
        # stopped at its starting point
        #
        # Any centre and scale give the same problem, so they are computed in float32 by BLAS
        # (a float64 copy for them was 2/3 of this setup: 0.3 CPU s of the 20k x 4,096 chain)
        n_real = np.maximum(weight.sum(axis=1), 1.0)[:, None]  # [n_s, 1]
        centre = np.zeros((n_s, p))
        sq = np.zeros((n_s, p))
        with one_blas_thread():  # as the fit below
            for i, r in enumerate(rows):  # the real rows only: padded rows stay 0
                xi = x[i, : len(r)]
                c_i = np.ones(len(r), dtype=np.float32) @ xi / np.float32(n_real[i, 0])
                c_i[-1] = 0.0  # the intercept column stays 1
                xi -= c_i
                centre[i] = c_i
                sq[i] = np.einsum("mp,mp->p", xi, xi)
        kappa = np.maximum(8.0 * lam * max(n_all, 1) / n_real, 1e-6)  # [n_s, 1]
        rms = np.sqrt(sq / n_real + kappa)
        rms[:, -1] = 1.0
        x /= rms[:, None, :].astype(np.float32)
        w_init[:, -1, :] += np.einsum("sp,spk->sk", centre, w_init)
        w_init *= rms[:, :, None]
        penalised = penalised / rms[:, :, None] ** 2
        # the products and the softmax in float32 (half the time of float64; the loss is summed
        # in float64): estimates moved by < 1e-4 nats on the benchmark tasks (RESULTS.md, issue 22)
        xt = x.transpose(0, 2, 1)
        off = off.astype(np.float32)
        if row_off is not None:
            off = off + row_off  # [n_s, m, k_max]; padded cells stay at NEG
        w32 = weight.astype(np.float32)
        scale = 1.0 / max(n_all, 1)
        # each row's target logit by one flat index (take_along_axis cost 5x more)
        target_flat = (np.arange(n_s * m) * k_max + target.reshape(-1))
        # the gradient's one-hot of the real rows' target cells (padded rows have weight 0): with
        # many cells subtracted at those cells alone (the same bits: subtracting 0 leaves every
        # other cell as it was), 40 against 104 us at 12,800 rows x 32 cells; with few cells a
        # dense subtraction is faster (5 against 28 us at 12,800 x 4; thirty-sixth session)
        if k_max >= SPARSE_ONEHOT_CELLS:
            onehot, target_real = None, target_flat[weight.reshape(-1) > 0]
        else:
            onehot = np.zeros((n_s, m, k_max), dtype=np.float32)
            np.put_along_axis(onehot, target[..., None], 1.0, axis=-1)
            onehot[weight == 0] = 0.0
        ones = np.ones((k_max, 1), dtype=np.float32)
        # two buffers reused by every evaluation (fresh arrays of this size cost page faults)
        logits_buf, e_buf = np.empty((n_s, m, k_max), dtype=np.float32), np.empty((n_s, m, k_max), dtype=np.float32)
        w_col = w32[..., None]
        # the broadcasts along the short last axis (the cells): on large problems by torch on views
        # of the same buffers (numpy's cost 2-3x more: 365 against 145 us at 12,800 rows x 32
        # cells), on small ones by numpy (torch's per-call overhead made a quick-demo store's chain
        # 4% slower); each element is one correctly rounded IEEE operation either way, so the bits
        # are the same
        # (in place by `operator`'s augmented assignments: numpy's `a += b` or torch's `add_`, with
        # no keyword handling, which small problems' evaluations would pay for)
        if logits_buf.size >= TORCH_BROADCAST_ELEMENTS:
            view, subtract = torch.from_numpy, torch.sub
        else:
            view, subtract = _same_array, np.subtract
        logits_t = torch.from_numpy(logits_buf)  # the row maximum's input (torch either way)
        logits_v, e_v, off_v = view(logits_buf), view(e_buf), view(off)
        onehot_v = None if onehot is None else view(onehot)

        def loss_and_grad(theta):
            w = theta.reshape(n_s, p, k_max)
            logits = np.matmul(x, w.astype(np.float32), out=logits_buf)
            operator.iadd(logits_v, off_v)
            # the row maximum by torch (vectorised over the short last axis; numpy's reduction
            # there was a third of the evaluation): a maximum is exact, so the bits are the same
            top = torch.amax(logits_t, dim=-1, keepdim=True).numpy()
            subtract(logits_v, view(top), out=e_v)
            e = np.exp(e_buf, out=e_buf)
            # the row sum by a matrix-vector product (BLAS): numpy's reduction over the short last
            # axis cost 6x more, a quarter of an evaluation (RESULTS.md, issue 22)
            z = e @ ones
            lse = top[..., 0] + np.log(z[..., 0])
            ce = lse - logits.reshape(-1).take(target_flat).reshape(n_s, m)
            loss = float((ce * w32).sum(dtype=np.float64)) * scale + lam * float((w * w * penalised).sum())
            resid = e  # e is not needed past here: the residual overwrites it
            operator.imul(e_v, view(w_col / z))
            if onehot_v is None:
                resid.reshape(-1)[target_real] -= np.float32(1.0)
            else:
                operator.isub(e_v, onehot_v)
            grad = (xt @ resid).astype(np.float64) * scale + 2.0 * lam * w * penalised
            return loss, (grad * free).ravel()

        # one BLAS thread: these matrices are small, and threaded BLAS inside the pipeline's
        # worker processes oversubscribed the cores (the quick demo's MI step took 14x longer)
        with one_blas_thread():
            theta = minimize_lbfgsb(loss_and_grad, w_init.ravel(), maxiter=self.max_iter, maxcor=self.lbfgs_memory,
                                    gtol=self.tolerance_grad, ftol=self.tolerance_change)
        w = theta.reshape(n_s, p, k_max) / rms[:, :, None]  # back to the features' own coordinates
        w[:, -1, :] -= np.einsum("sp,spk->sk", centre, w)
        out = []
        for i, st in enumerate(strata):
            full = np.zeros((len(cols), st.k), dtype=np.float32)
            full[cols] = w[i, :, : st.k]
            out.append(torch.as_tensor(full, device=dev))
        return out

    def _val_row_loss(self, fit: "_LevelFit", val: np.ndarray, dev) -> np.ndarray:
        """The chosen level's log-loss (nats) on each validation row, in the rows' order: the
        linear level at its chosen (dims, penalty) fitted on the fitting rows, or the non-linear
        head as chosen."""
        with torch.no_grad():
            if fit.diag["level"] == "nonlinear" and fit.head is not None:
                h = fit.head
                vr = torch.as_tensor(np.flatnonzero(val), device=dev)
                return -h._log_q(h.params, h.x_tr[vr], h.s_tr[vr], h.y_tr[vr]).double().cpu().numpy()
            out = np.full(len(val), np.nan)
            for st, w in zip(fit.strata, fit.path_solution):
                v = val[st.rows_tr]
                if v.any():
                    vt = torch.as_tensor(v, device=dev)
                    lq = self._log_q(st, w, st.x_tr[vt], st.label_mask(st.tr_cell_y[vt]))
                    out[st.rows_tr[v]] = -lq.double().cpu().numpy()
        return out[val]

    @staticmethod
    def _log_q(st: _Stratum, w, x1, y_mask):
        """log q(y|z,c) for rows of one stratum: cells of label y against all cells."""
        logits = x1 @ w + st.off
        return _log_q_of_logits(logits, y_mask)

    def fit_fold_seeds(self, x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seeds,
                       alternatives: dict | None = None, unmapped=None, unmapped_base=None) -> list[FoldOutput]:
        """One FoldOutput per seed; the seeds share the fold's penalty search and refit.

        unmapped_base: a callable giving (x_tr, x_ev) of the features without the quantile map
        (the `unmapped` rows), given where the plan reduced nothing (every coordinate kept): with
        `map_choice` (the default) the levels are fitted on both, and the features without the map
        are the fold's base, on which every check and representation below is made, only where
        they predict the validation split significantly better (`ladder_z` s.e. of the paired
        per-row gains, and `ladder_min_gain`); the choice and its gain are in the diagnostics'
        "base", "base_gain" and "base_gain_se".

        Where the rows' squared scale varies by more than `max_row_scale_variance` (heavy,
        elliptical tails: `prep.row_scale_variance` of the whole norm, or `prep.block_scale_variance`
        of the columns that share the scale where it stands `block_scale_z` null s.d. above 0;
        label-free) and `radial_damping` is on, the fold is also fitted on the radially damped
        features (`prep.radially_damped`), with the radius (whole norm or block) and offset
        (`radial_offsets`) whose linear path predicts the validation split best. With
        `radial_check` on, weights that vary with the row's radius are fitted beside the linear
        critic (`_gain_beside`); where they gain significantly, and more than the ladder's
        non-linear level gained where the ladder chose it, the fold is also fitted on
        `prep.radial_interaction`'s features. With `quadratic_check` on, the products of the
        leading columns are fitted beside the linear critic the same way; with `quadratic_fit`
        also on, where they gain significantly (and more than the non-linear level where the
        ladder chose it) the fold is also fitted on [x, products] (`prep.quadratic_products`).
        With `second_moment_check` on, the same for the products along the fitting rows' SAVE
        directions and the whitened squared norm (`prep.second_moment_features`); with
        `additive_check` and `index_check`, for hinges of the strong leading columns and of the
        critic's scores along its leading directions (`prep.hinge_features`); with
        `calibration_check`, hinges of the critic's own log-probabilities, a check only.
        alternatives ({name: (x_tr, x_ev)}, e.g. the requested PCA's features where the fold plan
        raised it) are fitted the same way, at both levels. Of the representations fitted, the
        one whose chosen level predicts the validation rows better is kept; the held-out fold is
        only scored."""
        dev = torch.device(self.device)
        if not self.use_subclasses:
            sub_tr = np.zeros_like(sub_tr)
        layout = cell_layout(c_tr, y_tr, sub_tr, c_ev, y_ev)
        cell_tr, cell_c = layout[0], layout[1]
        n_cells, n_tr = len(cell_c), len(y_tr)
        cell_rows = [np.flatnonzero(cell_tr == k) for k in range(n_cells)]
        # the validation split (one per fold) and each seed's half split, both stratified by cell
        # with groups (`row_groups`), each group on one side: else the level that memorises rows
        # wins on validation, and the learning curve's half holds nearly every item
        if self.row_groups is None:
            def split(rng, take):
                return _split_by_cell(cell_rows, n_tr, rng, take)
        else:
            def split(rng, take):
                return _split_by_group(cell_tr, self.row_groups, rng, take)
        val = split(np.random.default_rng([seeds[0], 0]), lambda m: m // 5)
        halves = [split(np.random.default_rng([seed, 1]), lambda m: (m + 1) // 2) for seed in seeds]
        fits = {"features": self._fit_levels(x_tr, x_ev, y_tr, c_tr, y_ev, c_ev, layout, val, seeds, dev)}
        base = {}
        if unmapped_base is not None and self.map_choice:
            # the per-coordinate quantile map bends Gaussian-like classes that differ along thin
            # directions of Z (or strata far apart): an outside-shaped family (random covariance,
            # 3 strata x 3 classes, d = 16) covered 8 of 10 two-sided, 20 of 20 without the map;
            # heavy tails need it (RESULTS.md, issue 22 thirtieth session). So where nothing was
            # reduced both are fitted, and the features without the map become the base only where
            # they predict the validation rows significantly better (`ladder_z` s.e. of the paired
            # per-row gains and `ladder_min_gain`): on near-tied Gaussian families the lower loss
            # alone picked by noise (scales at n <= 5k: median error 4.8% with the map, 6.2%
            # choosing by the lower loss; thirty-first session)
            u_tr, u_ev = unmapped_base()
            plain = self._fit_levels(u_tr, u_ev, y_tr, c_tr, y_ev, c_ev, layout, val, seeds, dev)
            gain, gain_se = _paired_gain(self._val_row_loss(fits["features"], val, dev)
                                         - self._val_row_loss(plain, val, dev))
            base = {"base": "quantile map", "val_loss_mapped": fits["features"].val_loss,
                    "val_loss_unmapped": plain.val_loss, "base_gain": gain, "base_gain_se": gain_se}
            if gain > self.ladder_min_gain and gain > self.ladder_z * gain_se:
                x_tr, x_ev, fits, base["base"] = u_tr, u_ev, {"features": plain}, "no quantile map"
                unmapped = None  # the radial damping's own unmapped candidate is the base itself now
        # kappa of the whole norm, and of the columns that share the scale: where a few of them do
        # (heavy tails on the signal beside a PCA's noise components, t-massive) the whole norm
        # dilutes it to 0.00-0.03 (RESULTS.md, issue 22 sixteenth session). The block's counts
        # only where it stands `block_scale_z` null s.d. above 0: with few columns and rows it
        # scatters (a store of 160 rows and 6 columns read 0.2 on Gaussian-like rows). One BLAS
        # thread, as in `_train`: these are small products, and a second thread's waiting counted
        # 2 CPU s on the chain benchmark (19% more) for 0.2 s of work
        with one_blas_thread():
            scale_var = row_scale_variance(x_tr, c_tr, seed=seeds[0])
            scale_var_block, block_null_sd = block_scale_variance(x_tr, c_tr, seed=seeds[0])
        block = scale_var_block if scale_var_block > self.block_scale_z * block_null_sd else None  # where it counts
        damping = {"row_scale_variance_block": block,
                   "row_scale_variance_block_raw": scale_var_block, "row_scale_variance_block_null_sd": block_null_sd}
        heavy = max(scale_var, -np.inf if block is None else block) > self.max_row_scale_variance
        if self.radial_damping and heavy:
            # the offset's best value is nu / median |x|^2 for Student-t rows (0.07 at nu = 1.2 to
            # over 1 at nu = 10, more where noise columns share the radius), and the radius is the
            # whole norm or the block's (`shared_scale_weights`, from every training row): one
            # linear path per (radius, offset), the lowest validation log-loss chooses (RESULTS.md,
            # issue 22 sixteenth session)
            radii = {"norm": (x_tr, x_ev, None), "block": (x_tr, x_ev, shared_scale_weights(x_tr, c_tr, seed=seeds[0]))}
            if unmapped is not None and self.radial_unmapped:
                # the same reduction without the quantile map, radius along the columns that share
                # the scale by the covariance of their log |x| (moments that exist at any tail): on
                # Student-t classes at nu = 1.2 seen through a rotation the family's median error
                # went from 23.5% to 13.0% (RESULTS.md, issue 22 nineteenth session)
                u_tr, u_ev = unmapped()
                radii["unmapped block"] = (u_tr, u_ev, log_abs_scale_weights(u_tr, c_tr, seed=seeds[0]))
            losses, best = {}, None  # only the best candidate's features and path are kept
            for radius, (r_tr, r_ev, weights) in radii.items():
                for offset in self.radial_offsets:
                    cand_tr, cand_ev = radially_damped(r_tr, r_ev, c_tr, c_ev, offset=offset, weights=weights)
                    path = self._linear_path(cand_tr, cand_ev, y_tr, c_tr, y_ev, c_ev, layout, val, seeds, dev)
                    losses[f"{radius} {offset:g}"] = path.best_loss
                    if best is None or path.best_loss < best[0]:  # on a tie the first: whole norm, smallest offset
                        best = (path.best_loss, radius, offset, cand_tr, cand_ev, path)
            _, radius, offset, xd_tr, xd_ev, path = best
            damping.update(radial_radius=radius, radial_offset=float(offset), radial_damping_losses=losses)
            fits["radially damped"] = self._fit_levels(xd_tr, xd_ev, y_tr, c_tr, y_ev, c_ev, layout, val, seeds, dev,
                                                       path=path)
        radial = {}
        # a representation wider than the features is fitted only where the critic's cells hold
        # more rows than its inputs (`_room`): in an underdetermined critic a validation gain of a
        # few thousandths of a nat chose 100 inputs on 190 training rows in one fold of three, and
        # features differing by 2e-7 (another extraction batch size) read 1.069 or 0.943 nats
        cell_counts = np.bincount(cell_tr, minlength=n_cells)

        # the checks below fit their extra weights on one subset of the fitting rows (at most
        # `ladder_rows`, as the non-linear level's check: at n = 20k all of them cost 6% of the
        # chain, the radial check's alone 4-6% of a sweep cell), drawn once for the fold
        check_rows = _fitting_rows(val, self.ladder_rows, seeds[0])
        # the columns that move the linear critic most, ranked once for the checks (ties in column order)
        weights = (_column_weights(fits["features"])
                   if self.radial_check or self.quadratic_check or self.additive_check else None)
        ranking = None if weights is None else np.argsort(-weights, kind="stable")
        if self.radial_check:
            columns = _leading_columns(ranking, self.radial_columns)
            xr_tr, xr_ev = radial_interaction(x_tr, x_ev, c_tr, c_ev, columns=columns)
            gain, se = self._gain_beside(fits["features"], xr_tr[:, x_tr.shape[1]:], val, check_rows, dev,
                                         "radial")
            radial = {"radial_gain": gain, "radial_gain_se": se}
            if self._earns_a_fit(fits["features"].diag, gain, se) and _room(cell_counts, xr_tr.shape[1]):
                fits["radial interaction"] = self._fit_levels(xr_tr, xr_ev, y_tr, c_tr, y_ev, c_ev, layout, val,
                                                              seeds, dev)
        # the representation fitting of both checks: (x, the rows, fitting context)
        context = (x_tr, x_ev, cell_counts, y_tr, c_tr, y_ev, c_ev, layout, val, check_rows, seeds, dev)
        quadratic = {}
        if self.quadratic_check:
            columns = _leading_columns(ranking, self.quadratic_columns)
            # Classes made of clusters read 15-19% low on the linear critic at n = 2k, 4-12% with
            # the products (RESULTS.md, issue 22 fourteenth session)
            quadratic = self._check_beside(
                "quadratic", "quadratic products", fits,
                lambda rows: quadratic_products(x_tr[rows], c_tr[rows], columns, centred_by=(x_tr, c_tr)),
                lambda: quadratic_products(x_ev, c_ev, columns, centred_by=(x_tr, c_tr)), context)
        second = {}
        # where the quadratic check multiplies every column its products span these features (up
        # to the centring), so the check would only repeat it
        if self.second_moment_check and not (self.quadratic_check and x_tr.shape[1] <= self.quadratic_columns):
            # the directions use the labels, so they come from the rows the check fits on, never
            # from the validation split that judges it
            basis = second_moment_basis(x_tr[check_rows], cell_tr[check_rows], c_tr[check_rows],
                                        q=self.second_moment_directions)
            second = self._check_beside(
                "second-moment", "second-moment products", fits,
                lambda rows: second_moment_features(x_tr[rows], c_tr[rows], basis),
                lambda: second_moment_features(x_ev, c_ev, basis), context)
        hinge_diag, hinge_floor = {}, -np.inf
        if self.additive_check or self.index_check or self.calibration_check:
            # the hinge checks' gains count only past a share of what the linear critic reads on
            # the validation rows: the per-coordinate quantile map bends Gaussian classes a little,
            # and hinges that undo it gained 0.008 nats per row on a 0.75-nat Gaussian task (1%,
            # inside its interval), which flagged well-specified tasks one-sided
            lin_mi = self._linear_validation_mi(fits["features"], val, dev)
            hinge_diag, hinge_floor = {"linear_val_mi": lin_mi}, max(self.ladder_min_gain, self.hinge_min_share * lin_mi)
        additive = {}
        if self.additive_check:
            # Laplace classes (independent coordinates, log-likelihood ratios that level off): the
            # linear critic read 13-20% low at n = 2k, its two-sided intervals covered 12 of 70,
            # and the checks above were silent in most draws (RESULTS.md, issue 22 forty-second
            # session); a critic piecewise linear in the leading columns reaches the truth within 1%
            columns = _strong_columns(weights, self.additive_columns, self.additive_share)
            knots = hinge_knots(x_tr, c_tr, columns)  # label-free: once for the check and the fit
            additive = self._check_beside(
                "additive", "additive hinges", fits,
                lambda rows: hinge_features(x_tr[rows], c_tr[rows], knots=knots),
                lambda: hinge_features(x_ev, c_ev, knots=knots), context, min_gain=hinge_floor)
        index = {}
        directions = _critic_directions(fits["features"], self.index_directions) if self.index_check else None
        if directions is not None and directions.shape[1]:  # none where every weight is 0
            # along the critic's own directions: where classes are cut by a linear score and their
            # labels flipped at random, the logits level off along it (a step, not a line)
            p_tr = x_tr @ directions
            p_knots = hinge_knots(p_tr, c_tr, quantiles=INDEX_QUANTILES)
            index = self._check_beside(
                "index", "index hinges", fits,
                lambda rows: hinge_features(p_tr[rows], c_tr[rows], knots=p_knots),
                lambda: hinge_features(x_ev @ directions, c_ev, knots=p_knots), context, min_gain=hinge_floor,
                share_key=_label_grouping(fits["features"]))  # the directions are the labels' scores
        calibration = {}
        if self.calibration_check:
            # the critic's own log-probabilities: where labels set by the argmax of K linear scores
            # are flipped at random the posterior is flat away from the class boundaries, and a
            # critic whose confidence grows without end reads 20-40% low (K = 4-5); hinges of each
            # label's log q let it level off. Labels, not cells: where a label has sub-class cells
            # the estimate reads its label's sum, and hinges of every cell's (48 in a sweep cell's
            # I(Z;M)) cost 18% of the chain. The fixed critic saw the check rows, so these columns
            # are a check only, never a representation (the held-out rows' would be out of sample)
            log_q = _critic_log_q(fits["features"], len(x_tr))
            q_knots = hinge_knots(log_q, c_tr)
            calibration = self._check_beside(
                "calibration", None, fits, lambda rows: hinge_features(log_q[rows], c_tr[rows], knots=q_knots), None,
                context, min_gain=hinge_floor, share_key=_label_grouping(fits["features"]))
        alternative_losses = {}  # {name: validation log-loss} of every alternative fitted
        for name, (xa_tr, xa_ev) in (alternatives or {}).items():
            # where the plan raised its PCA, the requested size's features may still predict better:
            # a non-linear level that gains on 70 inputs need not on 262 (t-massive at n = 20k:
            # validation log-loss 0.63-0.67 against 0.74-0.79). Only there: where both levels are
            # linear the validation split, fitted on 4/5 of the training rows, favours the smaller
            # representation that the refit on all of them does not (massive-decay: 1.09 against
            # 1.13 on validation, 0.993 against 1.046 nats held out; RESULTS.md, issue 22
            # fifteenth session)
            alt = self._fit_levels(xa_tr, xa_ev, y_tr, c_tr, y_ev, c_ev, layout, val, seeds, dev)
            alternative_losses[name] = alt.val_loss  # reported whether admitted or not
            if alt.diag["level"] == "nonlinear" and fits["features"].diag["level"] == "linear":
                fits[name] = alt
        # the lower validation log-loss; on a tie the features themselves (min keeps the first)
        representation = min(fits, key=lambda k: fits[k].val_loss)
        fit = fits[representation]
        fit.diag.update(row_scale_variance=scale_var, representation=representation, **damping, **radial,
                        **quadratic, **second, **additive, **index, **calibration, **base, **hinge_diag)
        losses = {**alternative_losses, **{k: v.val_loss for k, v in fits.items()}}
        if len(losses) > 1:
            fit.diag.update({_VAL_LOSS_KEY[k]: v for k, v in losses.items()})
        return self._fold_outputs(fit, y_tr, c_tr, y_ev, c_ev, layout, val, halves, seeds, dev)

    def pool_folds(self, per_seed: list[dict], diags: list[dict], fold: np.ndarray) -> None:
        """After every fold: the non-linear level's learning-curve exponent, pooled over the
        term's folds and seeds (`pooled_rate_step`)."""
        pooled_rate_step(per_seed, diags, fold)

    def _earns_a_fit(self, plain: dict, gain: float, se: float) -> bool:
        """Whether a check's gain over the linear critic (`_gain_beside`) earns its
        representation a fit of its own in this fold: significant (above `ladder_z` s.e. and
        `ladder_min_gain`) and, where the ladder chose its non-linear level, above that level's
        gain (there the level already bends, and a weaker candidate only adds the noise of
        choosing on the validation split: RESULTS.md, issue 22 tenth session)."""
        beaten = plain["level"] == "linear" or gain > plain.get("level_gain", 0.0)
        return beaten and gain > self.ladder_z * se and gain > self.ladder_min_gain

    def _check_beside(self, kind: str, name: str | None, fits: dict, extra_tr, extra_ev, context,
                      min_gain: float = -np.inf, share_key: tuple = ()) -> dict:
        """A check of extra columns beside the fixed linear critic (`_gain_beside`, on the fold's
        check rows: at most `ladder_rows` fitting rows) and, where this fold's gain earns it
        (`quadratic_fit`, `_earns_a_fit`, `_room`), the levels fitted on [x, extra] and added to
        `fits` as `name`. extra_tr: a callable giving the columns of the training rows it is
        given (int indices; each row's columns depend on that row alone); extra_ev: a callable
        giving the held-out rows' columns. name None: a check only (no representation is fitted;
        extra_ev is not called). min_gain: the least gain that earns the fit (the hinge checks'
        floor, `hinge_min_share`). share_key: what the columns depend on beyond the fold's
        softmax problem (`_shared`; for the index and calibration checks, the cells' labels). The
        check reads only its own rows and the validation split, so only those are made (at n =
        20k most of the columns' cost was rows no check read); every row only where the levels are
        fitted. Returns the gain and its s.e. under the kind's diagnostics keys."""
        x_tr, x_ev, cell_counts, y_tr, c_tr, y_ev, c_ev, layout, val, check_rows, seeds, dev = context
        read = np.flatnonzero(check_rows | val)
        part = extra_tr(read)
        columns = np.zeros((len(x_tr), part.shape[1]), dtype=part.dtype)  # rows no check reads stay 0
        columns[read] = part
        gain, se = self._gain_beside(fits["features"], columns, val, check_rows, dev, kind, share_key)
        if (name is not None and self.quadratic_fit and gain > min_gain
                and self._earns_a_fit(fits["features"].diag, gain, se)
                and _room(cell_counts, x_tr.shape[1] + part.shape[1])):
            fits[name] = self._fit_levels(np.concatenate([x_tr, extra_tr(np.arange(len(x_tr)))], axis=1),
                                          np.concatenate([x_ev, extra_ev()], axis=1), y_tr, c_tr, y_ev, c_ev,
                                          layout, val, seeds, dev)
        key = kind.replace("-", "_")
        return {f"{key}_gain": gain, f"{key}_gain_se": se}

    @staticmethod
    def _linear_validation_mi(plain: "_LevelFit", val, dev) -> float:
        """The fitted linear critic's mean gain in log-likelihood over the label prior on the
        validation split (nats per row): what it reads there."""
        total, rows = 0.0, 0
        with torch.no_grad():
            for st, w in zip(plain.strata, plain.path_solution):
                v = torch.as_tensor(val[st.rows_tr], device=dev)
                if not bool(v.any()):
                    continue
                mask = st.label_mask(st.tr_cell_y[v])
                linear = st.x_tr[v] @ w + st.off
                prior = st.off.expand_as(linear)
                total += float((_log_q_of_logits(linear, mask) - _log_q_of_logits(prior, mask)).sum())
                rows += int(v.sum())
        return total / rows if rows else 0.0

    def _gain_beside(self, plain: "_LevelFit", extra_tr, val, keep, dev, kind: str,
                     share_key: tuple = ()) -> tuple[float, float]:
        """A check of columns beside the linear critic: `extra_tr`, extra columns on the fold's
        training rows, added to the linear level's fitted critic (held fixed, fitted on the
        fitting rows at its chosen penalty): their weights are fitted on the fitting rows at the
        same penalty and the two critics compared on the validation split, row by row. Returns
        (mean gain in log-likelihood per validation row, nats; its s.e.). A convex fit by L-BFGS
        of a few columns.

        kind "radial": the interaction columns of `prep.radial_interaction` ((x - m_c) u for the
        leading columns, and u): the non-linear level's Adam check found the spiral's bend in few
        folds at n = 2k (issue 22, tenth session). kind "quadratic": `prep.quadratic_products` of
        the leading columns: the Adam check on 64 or 256 inputs found no gain where classes are
        mixtures of clusters (issue 22, thirteenth session).

        keep: bool over the training rows, those the extra weights are fitted on: the fold's check
        rows, at most `ladder_rows` fitting rows (`_fitting_rows`), as the non-linear level's check."""
        q = extra_tr.shape[1]
        strata, offsets, w0 = [], [], []
        with torch.no_grad():
            for st, w in zip(plain.strata, plain.path_solution):
                other = copy.copy(st)
                other.x_tr = _design(extra_tr[st.rows_tr], dev)
                strata.append(other)
                offsets.append((st.x_tr @ w).cpu().numpy())  # the fixed critic's logits (prior added by _train)
                w0.append(torch.zeros(q + 1, st.k, device=dev))
        n_fit = int(keep.sum())
        # two terms of one plan may share the softmax problem but not the columns (share_key)
        ws = self._shared((plain.problem, kind, *plain.cell_key, *share_key),
                          lambda: self._train(strata, w0, plain.lam, n_fit, keep, _prefix_mask(q, q, dev), offsets))
        diffs = []
        with torch.no_grad():
            for st, st_r, w_r, fixed in zip(plain.strata, strata, ws, offsets):
                v = torch.as_tensor(val[st.rows_tr], device=dev)
                if not bool(v.any()):
                    continue
                mask = st.label_mask(st.tr_cell_y[v])
                before = torch.as_tensor(fixed, device=dev)[v] + st.off
                after = before + st_r.x_tr[v] @ w_r
                diffs.append((_log_q_of_logits(after, mask) - _log_q_of_logits(before, mask)).cpu().numpy())
        return _paired_gain(np.concatenate(diffs) if diffs else np.zeros(0))

    def _linear_path(self, x_tr, x_ev, y_tr, c_tr, y_ev, c_ev, layout, val, seeds, dev) -> "_LinearPath":
        """The linear level's (dims, penalty) path on the validation split, fitted on the fitting
        rows: each cell's validation log-loss (nats per row) and solution."""
        cell_tr, cell_c, cell_y, s_index, off = layout
        # what every fit below depends on besides its penalty: identical in two terms of one plan
        # exactly when their softmax problems are (`_shared`); no digest when nothing is shared
        problem = (None if self.shared_fits is None
                   else _problem_key(x_tr, cell_tr, cell_c, c_tr, seeds, self.use_subclasses))
        strata = []
        for s in np.unique(c_tr):
            rows_tr = np.flatnonzero(c_tr == s)
            rows_ev = np.flatnonzero(c_ev == s)
            cells = np.flatnonzero(cell_c == s)
            strata.append(_Stratum(rows_tr, rows_ev, x_tr, x_ev, cell_tr, cells, cell_y,
                                   off[s_index[int(s)]], y_ev, dev))
        d = x_tr.shape[1]
        # grid over (number of leading PCA components kept, penalty): features are PCA scores in
        # decreasing variance, so a prefix is a nested lower-dimensional probe
        dim_grid = sorted({max(1, min(d, int(round(f * d)))) for f in self.dims})
        lams = sorted(self.penalties, reverse=True)  # strongest first: each fit warm-starts the next
        # below the grid's weakest penalty the path goes on (10x per step, `penalties_below` steps)
        # while a step still gains significantly on the validation split (`_step_gains`), and only
        # where the critic's cells hold more rows than its inputs: classes split along a thin
        # direction of Z need large weights (the grid's 1e-5 read 0.565-0.583 against 0.620, two-sided
        # intervals that missed), but in small cells the classes separate by chance, and on the
        # demo's 480-row stores weaker penalties read I(Z;task|modality,anatomy) 0.218 for 0.543
        n_grid = len(lams)
        if _room(np.bincount(cell_tr), d):
            lams += [lams[-1] * 0.1 ** (i + 1) for i in range(self.penalties_below)]
        n_fit = int((~val).sum())
        val_ce = np.full((len(dim_grid), len(lams)), np.inf)
        stratum_val_ce = np.full((len(dim_grid), len(lams), len(strata)), np.inf)
        sols: dict[tuple[int, int], list] = {}
        # each stratum's validation rows and their label masks (fixed along the penalty path)
        val_rows = [torch.as_tensor(val[st.rows_tr], device=dev) for st in strata]
        n_val = np.array([int(val[st.rows_tr].sum()) for st in strata])
        # strata that will choose their own cell (`_LinearPath.cells`): the path goes on past the
        # joint minimum while one of them still gains
        own = [i for i in range(len(strata)) if n_val[i] >= OWN_CELL_VAL_ROWS] if len(strata) > 1 else []
        val_x = [st.x_tr[v] for st, v in zip(strata, val_rows)]
        val_ymask = [st.label_mask(st.tr_cell_y[v]) for st, v in zip(strata, val_rows)]
        for a, k_dims in enumerate(dim_grid):
            mask = _prefix_mask(d, k_dims, dev)
            ws = [torch.zeros(d + 1, st.k, device=dev) for st in strata]
            row_ce = {}  # per validation row, at each penalty of this dims (for the steps below the grid)
            for b, lam in enumerate(lams):
                if b >= n_grid and not (n_grid >= 2 and _step_gains(row_ce[b - 2], row_ce[b - 1], self.ladder_z)):
                    break
                ws = self._shared((problem, "path", a, b),
                                  lambda ws=ws, lam=lam, mask=mask: self._train(strata, ws, lam, n_fit, ~val, mask))
                total = 0.0
                rows = []
                with torch.no_grad():
                    for i, st in enumerate(strata):
                        if len(val_ymask[i]):
                            lq = self._log_q(st, ws[i], val_x[i], val_ymask[i])
                            if len(lams) > n_grid:
                                rows.append(-lq.double().cpu().numpy())
                            part = -float(lq.sum())
                            total += part
                            stratum_val_ce[a, b, i] = part / len(val_ymask[i])
                if len(lams) > n_grid:  # only the steps below the grid read them
                    row_ce[b] = np.concatenate(rows) if rows else np.zeros(0)
                val_ce[a, b] = total / max(int(val.sum()), 1)
                sols[(a, b)] = ws
                if b and val_ce[a, b] > val_ce[a, b - 1] and all(
                        stratum_val_ce[a, b, i] > stratum_val_ce[a, b - 1, i] for i in own):
                    break  # past the minimum: weaker penalties overfit more (and cost more steps)
        return _LinearPath(strata, problem, dim_grid, lams, val_ce, sols, stratum_val_ce, n_val)

    def _fit_levels(self, x_tr, x_ev, y_tr, c_tr, y_ev, c_ev, layout, val, seeds, dev,
                    path: "_LinearPath | None" = None) -> "_LevelFit":
        """The linear level's (dims, penalty) path on the validation split (`_linear_path`, or
        `path` where it was already fitted on these features), its refit on every training row,
        and the ladder's check of the non-linear level (refitted on every fitting row when
        chosen), on one representation of the fold. Returns what `_fold_outputs` needs, and
        `val_loss`: the chosen level's validation log-loss (nats per row), fitted on every
        fitting row."""
        cell_tr, cell_c, cell_y, s_index, off = layout
        n_tr = len(y_tr)
        if path is None:
            path = self._linear_path(x_tr, x_ev, y_tr, c_tr, y_ev, c_ev, layout, val, seeds, dev)
        strata, problem, dim_grid, lams, val_ce, sols = (path.strata, path.problem, path.dim_grid, path.lams,
                                                          path.val_ce, path.sols)
        d = x_tr.shape[1]
        a, b = np.unravel_index(int(np.argmin(val_ce)), val_ce.shape)
        lam, k_dims = lams[b], dim_grid[a]
        # refit on all training rows (shared by the seeds), then each seed's half fit from it
        cells = path.cells(a, b)
        at = cells or [(a, b)] * len(strata)  # each stratum's cell
        w_path = [sols[cell][i] for i, cell in enumerate(at)]
        w_full = self._shared((problem, "refit", *_cell_key(a, b, cells)),
                              lambda: self._train_by_cell(strata, at, w_path, lams, dim_grid, d, dev, n_tr, None))
        base_ev = _log_marginal(y_tr, c_tr, y_ev, c_ev)
        base_tr = _log_marginal(y_tr, c_tr, y_tr, c_tr)
        # rows of a stratum with no training rows keep q = p(y|c): they contribute 0
        lq_ev = base_ev.copy()
        lq_tr = np.zeros(n_tr)
        with torch.no_grad():
            for st, w in zip(strata, w_full):
                if len(st.rows_ev):
                    lq_ev[st.rows_ev] = self._log_q(st, w, st.x_ev, st.ev_mask).cpu().numpy()
                lq_tr[st.rows_tr] = self._log_q(st, w, st.x_tr, st.label_mask(st.tr_cell_y)).cpu().numpy()
        diag = {"penalty": float(lam), "dims": int(k_dims),
                "heldout_curve": [float(v) if np.isfinite(v) else None for v in val_ce[a]],
                # the grid, with the steps below it that the path fitted
                "penalty_grid": [float(v) for i, v in enumerate(lams) if i < len(self.penalties)
                                 or np.isfinite(val_ce[:, i]).any()], "train_value": float(np.mean(lq_tr - base_tr)),
                "level": "linear"}
        val_loss = float(val_ce[a, b])
        if cells is not None:  # each stratum's validation loss at its own cell, over all validation rows
            diag["stratum_cells"] = [[int(code), dim_grid[ca], float(lams[cb])]
                                     for code, (ca, cb) in zip(np.unique(c_tr), cells)]
            vs, n_val = path.stratum_val_ce, path.stratum_val_rows
            val_loss = float(sum(vs[ca, cb, i] * n_val[i] for i, (ca, cb) in enumerate(cells) if n_val[i])
                             / max(int(n_val.sum()), 1))
        head = None
        if "nonlinear" in self.ladder:
            head = _MLPLadder(self, strata, w_path, cell_tr, cell_c, cell_y, s_index, off,
                              x_tr, y_tr, c_tr, val, seeds[0], dev)
            check = head.fit_and_compare(x_ev, y_ev, c_ev)
            diag.update(check)
            gain, gain_se = check["level_gain"], check["level_gain_se"]
            if gain > self.ladder_z * gain_se and gain > self.ladder_min_gain:
                diag["level"] = "nonlinear"
                # the check fitted at most `ladder_rows` rows with a short patience; the level as it
                # will be used is fitted on every fitting row, and that is what is compared
                head.refit_on_all_rows()
                val_loss = float(min(head.curve))
                if "latent" in self.ladder or "elliptical" in self.ladder:
                    head, val_loss = self._other_forms(head, val_loss, strata, w_path, layout, x_tr, y_tr,
                                                        c_tr, val, seeds, dev, diag)
        return _LevelFit(x_tr, x_ev, strata, problem, a, b, lam, sols, w_full, base_ev, lq_ev, diag, head,
                         val_loss, path.stratum_gaps(a, b, cells), cells, lams, dim_grid)

    def _other_forms(self, head, val_loss, strata, w_lin, layout, x_tr, y_tr, c_tr, val, seeds, dev, diag):
        """Where the non-linear level was chosen: the ladder's other non-linear forms
        (`_LatentCellLadder`, `_EllipticalLadder`), each fitted on every fitting row; the one with
        the lowest validation log-loss is kept (the MLP's on a tie). Returns the chosen head and its
        validation loss; `diag` records each form's loss and `nonlinear_form`."""
        cell_tr, cell_c, cell_y, s_index, off = layout
        diag["val_loss_mlp"], diag["nonlinear_form"] = val_loss, "mlp"
        for level, form in (("latent", _LatentCellLadder), ("elliptical", _EllipticalLadder)):
            if level not in self.ladder:
                continue
            other = form(self, strata, w_lin, cell_tr, cell_c, cell_y, s_index, off, x_tr, y_tr, c_tr, val,
                         seeds[0], dev)
            other.fit_on_all_rows()
            loss = float(min(other.curve))
            diag[f"val_loss_{level}"] = loss
            if loss < val_loss:
                diag["nonlinear_form"], head, val_loss = form.form_name, other, loss
        return head, val_loss

    def _fold_outputs(self, fit, y_tr, c_tr, y_ev, c_ev, layout, val, halves, seeds, dev) -> list[FoldOutput]:
        """Per-seed outputs of the chosen representation at its chosen level: the held-out terms
        and the learning-curve step."""
        cell_tr, cell_c, cell_y, s_index, off = layout
        x_tr, x_ev, strata, problem, head = fit.x_tr, fit.x_ev, fit.strata, fit.problem, fit.head
        w_full = fit.w_full
        base_ev, lq_ev, diag = fit.base_ev, fit.lq_ev, fit.diag
        if diag["level"] == "nonlinear":
            outs = head.fold_outputs(halves, x_ev, y_ev, c_ev, base_ev, lq_ev, diag, seeds)
            return self._finish_fold(outs, head, x_ev, y_ev, c_ev)
        gap_rows = None  # the same for every seed: the fold's fit, not a seed's half
        if fit.stratum_gaps is not None and fit.stratum_gaps.any():
            # what each stratum's own best cell gained over the shared one, on its validation rows:
            # its shortfall at a penalty chosen for the other strata, which its learning curve
            # (fitted at that penalty) does not show; it widens the upper end
            # (`base.CrossFitEstimator._aggregate`)
            gap_rows = np.zeros(len(y_ev))
            for st, g in zip(strata, fit.stratum_gaps):
                gap_rows[st.rows_ev] = g
            # [stratum code, gap] where > 0 (the strata in `_linear_path`'s order: np.unique(c_tr))
            diag["penalty_gaps"] = [[int(code), float(g)] for code, g in zip(np.unique(c_tr), fit.stratum_gaps)
                                    if g > 0]
        outs = []
        for seed, half in zip(seeds, halves):
            arrays = {}
            if self.extrapolate:
                # learning-curve bias correction: the held-out bound's shortfall shrinks like 1/n
                # (excess log-loss ~ params / 2n), so I ~ 2 I(n) - I(n/2) (Richardson step)
                n_half = int(half.sum())
                r_half = base_ev.copy()
                w_half = self._shared((problem, "half", *fit.cell_key, seed),
                                      lambda half=half, n_half=n_half: self._train_by_cell(
                                          strata, fit.strata_cells, w_full, fit.lams, fit.dim_grid, x_tr.shape[1],
                                          dev, n_half, half))
                for st, w_h in zip(strata, w_half):
                    if len(st.rows_ev):
                        with torch.no_grad():
                            r_half[st.rows_ev] = self._log_q(st, w_h, st.x_ev, st.ev_mask).cpu().numpy()
                arrays["r"] = 2.0 * lq_ev - r_half - base_ev
                # the extrapolation step per row; it also widens the interval (base.EXTRAPOLATION_SLACK)
                arrays["corr"] = lq_ev - r_half
            else:
                arrays["r"] = lq_ev - base_ev
            if gap_rows is not None:
                arrays["penalty_gap"] = gap_rows
            outs.append(FoldOutput(arrays=arrays, diagnostics=dict(diag)))
        if head is None and self._needs_critic:
            head = _MLPLadder(self, strata, fit.path_solution, cell_tr, cell_c, cell_y, s_index, off,
                              x_tr, y_tr, c_tr, val, seeds[0], dev)
        if head is not None and diag["level"] == "linear":
            head.params = head.linear_params()  # the critic of the chosen level, fitted on the same rows
        return self._finish_fold(outs, head, x_ev, y_ev, c_ev)

    def _shared(self, key, fit):
        """`fit()`, or its result when a term of the same fold plan already fitted the identical
        problem (`FoldPlan.fits`): the chain's I(Z;F_1), whose cells are the joint classes of
        every factor through its sub-classes, and the direct joint term share their penalty path,
        refit and half fits (issue 22: a quarter of the chain's fits, the same bits)."""
        cache = self.shared_fits
        if cache is None:
            return fit()
        if key not in cache:
            cache[key] = fit()
        return cache[key]

    # the critic estimators (neural.py) take the fold's chosen critic from here
    _needs_critic = False

    def _finish_fold(self, outs, head, x_ev, y_ev, c_ev):
        """Hook: the probe's outputs are final; critic estimators fine-tune `head` here."""
        return outs


# the diagnostics' name for each representation's validation log-loss
_VAL_LOSS_KEY = {"features": "val_loss_features", "radially damped": "val_loss_damped",
                 "radial interaction": "val_loss_radial", "quadratic products": "val_loss_quadratic",
                 "second-moment products": "val_loss_second_moment", "additive hinges": "val_loss_additive",
                 "index hinges": "val_loss_index",
                 REQUESTED_PCA: "val_loss_requested_pca"}


def _column_weights(fit: "_LevelFit") -> np.ndarray:
    """How much each feature column moves the fitted linear critic: the spread of the column's
    weights over the cells of its stratum, times the column's s.d. on the fitting rows, summed over
    the strata (the linear level's path solution, fitted without the validation split or the
    held-out fold)."""
    weight = sum(np.sqrt((w**2).sum(1)) for w in _centred_weights(fit))
    return weight * fit.x_tr.std(0)


def _centred_weights(fit: "_LevelFit") -> list:
    """Each stratum's linear path solution on the feature columns [d, its cells], centred over
    its cells (what moves one cell's logit against the others')."""
    d = fit.x_tr.shape[1]
    out = []
    for w in fit.path_solution:
        w = w.detach().cpu().numpy()[:d]
        out.append(w - w.mean(1, keepdims=True))
    return out


def _label_weights(fit: "_LevelFit") -> list:
    """Each stratum's linear path solution on the feature columns [d, its labels], centred over
    its labels: a label's cells averaged, each by its prior share of the label (what moves one
    label's score against the others'). Where each label has one cell, `_centred_weights` itself."""
    d = fit.x_tr.shape[1]
    out = []
    for st, w, centred in zip(fit.strata, fit.path_solution, _centred_weights(fit)):
        labels = torch.unique(st.cell_y)
        if len(labels) == st.k:  # one cell per label: the cells' weights, bit for bit
            out.append(centred)
            continue
        w = w.detach().cpu().numpy()[:d].astype(np.float64)
        prior = np.exp(st.off.detach().cpu().numpy().astype(np.float64))
        cell_y = st.cell_y.cpu().numpy()
        by_label = np.stack([w[:, cell_y == y] @ (prior[cell_y == y] / prior[cell_y == y].sum())
                             for y in labels.cpu().numpy()], axis=1)
        out.append((by_label - by_label.mean(1, keepdims=True)).astype(np.float32))
    return out


def _critic_directions(fit: "_LevelFit", r: int) -> np.ndarray:
    """The r directions [d, r] (float32; orthonormal on the columns scaled to unit s.d.) along
    which the fitted linear critic's label scores vary most: the leading left singular vectors of
    its weights, averaged over each label's cells and centred over each stratum's labels
    (`_label_weights`) and scaled by the columns' s.d., side by side over the strata; fewer where
    they span fewer. By labels, not cells: in a chain's I(Z;M) the cells are M's sub-classes by
    the later factors, whose directions led, and the check missed M's own step (label noise in
    M, an outside statistician's chains: 13 of 40 to 27 of 30 covered; forty-third session)."""
    sd = np.maximum(fit.x_tr.std(0), 1e-12)
    blocks = [w * sd[:, None] for w in _label_weights(fit)]
    u, sv, _ = np.linalg.svd(np.concatenate(blocks, axis=1), full_matrices=False)
    keep = int(min(r, np.sum(sv > 1e-6 * max(sv.max(initial=0.0), 1e-300))))
    return (u[:, :keep] / sd[:, None]).astype(np.float32)


def _critic_log_q(fit: "_LevelFit", n_tr: int) -> np.ndarray:
    """The fitted linear critic's log-probabilities of its labels on the fold's training rows
    (the path solution at the chosen cell, prior included; a label's cells summed, as
    log q(y|z, c) reads them): float32 [n_tr, the most labels of a stratum], a stratum's labels
    in its columns 0..L-1 in label order, 0 in the others. Where each label has one cell these are
    the cells' own log-probabilities, bit for bit (a logsumexp of one value is that value)."""
    labels = [torch.unique(st.cell_y) for st in fit.strata]  # sorted
    out = np.zeros((n_tr, max(len(lab) for lab in labels)), dtype=np.float32)
    with torch.no_grad():
        for st, w, lab in zip(fit.strata, fit.path_solution, labels):
            lq = torch.log_softmax(st.x_tr @ w + st.off, dim=1)
            if len(lab) == st.k:  # one cell per label: cells are ordered by label within a stratum
                out[st.rows_tr, : st.k] = lq.cpu().numpy()
                continue
            for j, y in enumerate(lab):
                out[st.rows_tr, j] = torch.logsumexp(lq[:, st.cell_y == y], dim=1).cpu().numpy()
    return out


def _label_grouping(fit: "_LevelFit") -> tuple:
    """Each stratum's cells' labels, hashable: what the index and calibration checks' columns depend
    on beyond the softmax problem (I(Z;M) of a chain and the direct joint term share their cells,
    not their labels)."""
    return tuple(st.cell_y.cpu().numpy().tobytes() for st in fit.strata)


def _strong_columns(weights: np.ndarray, q: int, share: float) -> np.ndarray:
    """Of the q leading columns by `weights`, those whose weight is at least `share` of the
    largest, sorted (at least the leading one)."""
    order = np.argsort(-weights, kind="stable")[:q]
    top = weights[order[0]] if len(order) else 0.0
    return np.sort(order[(weights[order] >= share * top) | (np.arange(len(order)) == 0)])


def _fitting_rows(val: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """The fold's fitting rows (not in the validation split `val`), at most `max_rows` of them (a
    random subset seeded by `seed`; None: all): a boolean mask over the training rows."""
    keep = ~val
    if max_rows is not None and keep.sum() > max_rows:
        chosen = np.random.default_rng([seed, 17]).choice(np.flatnonzero(keep), max_rows, replace=False)
        keep = np.zeros_like(keep)
        keep[chosen] = True
    return keep


def _leading_columns(ranking: np.ndarray, q: int) -> np.ndarray:
    """The q leading columns of a ranking (the columns, those that move the linear critic most
    first by `_column_weights`), sorted; all of them where q is at least their number."""
    return np.sort(ranking[:q])


def _pooled_gain(diags, key, se_key) -> tuple[float, float, int]:
    """(mean over the folds of a check's gain, its standard error sqrt(sum se_f^2) / F, F) from
    the folds' diagnostics, over the folds whose gain and s.e. are finite; (0, inf, 0) when none."""
    pairs = [(d[key], d[se_key]) for d in diags if d.get(se_key) is not None]
    pairs = [(g, s) for g, s in pairs if np.isfinite(g) and np.isfinite(s)]
    if not pairs:
        return 0.0, float("inf"), 0
    g, s = np.array(pairs, dtype=float).T
    return float(g.mean()), float(np.sqrt((s**2).sum())) / len(s), len(s)


class _Adam:
    """Adam (Kingma & Ba 2015) with torch.optim.Adam's defaults and update order. Written out
    because constructing a torch optimiser imports torch._dynamo (2.5 s in every fresh process:
    each `matprobe mi` call and each pipeline worker)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params, self.lr, self.betas, self.eps, self.t = list(params), lr, betas, eps, 0
        self.weight_decay = weight_decay  # L2 added to the gradient, as torch.optim.Adam (not AdamW)
        self.m = [torch.zeros_like(q) for q in self.params]
        self.v = [torch.zeros_like(q) for q in self.params]

    def zero_grad(self):
        for q in self.params:
            q.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)
        root_c2 = (1 - b2 ** self.t) ** 0.5
        live = [(q, m, v) for q, m, v in zip(self.params, self.m, self.v) if q.grad is not None]
        if not live:
            return
        if all(q.device.type == "cpu" for q, _, _ in live):
            # the same per-tensor operations in the same order, each list in one call (on the CPU
            # torch's _foreach_ ops loop over the tensors with the ops below): a quarter fewer
            # Python-to-torch calls per step of a small critic (thirty-third session, RESULTS.md)
            qs, ms, vs = (list(t) for t in zip(*live))
            gs = [q.grad for q in qs]
            if self.weight_decay:
                gs = torch._foreach_add(gs, qs, alpha=self.weight_decay)
            torch._foreach_lerp_(ms, gs, 1 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, root_c2)
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(qs, ms, denom, value=-step_size)
            return
        for q, m, v in live:  # an accelerator's fused _foreach_ kernels may round otherwise
            g = q.grad.add(q, alpha=self.weight_decay) if self.weight_decay else q.grad
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            q.addcdiv_(m, (v.sqrt() / root_c2).add_(self.eps), value=-step_size)


def _problem_key(x_tr, cell_tr, cell_c, c_tr, seeds, use_subclasses) -> str:
    """A digest of everything a fold's linear-level fits depend on besides the penalty: the
    features, each row's softmax cell and stratum, the cells' strata, and the seeds (which fix the
    validation and half splits); the labels the cells stand for do not enter the fits.

    SHA-256 of the arrays' own memory: where the CPU has SHA instructions it hashed the
    features twice as fast as BLAKE2b (3.0 against 5.7 ms for 16k x 65 float32; 1.3% of the
    20k x 4,096 chain went to this digest; thirty-sixth session)."""
    import hashlib

    h = hashlib.sha256()
    for arr in (x_tr, cell_tr, cell_c, c_tr, np.asarray(seeds)):
        arr = np.ascontiguousarray(arr)
        h.update(str((arr.dtype, arr.shape)).encode())
        h.update(arr)
    h.update(str(bool(use_subclasses)).encode())
    return h.hexdigest()


def _split_by_cell(cell_rows, n, rng, take):
    """Bool mask over n rows: in each cell, `take(cell size)` rows drawn by rng (cells in order)."""
    out = np.zeros(n, dtype=bool)
    for idx in cell_rows:
        idx = idx.copy()
        rng.shuffle(idx)
        out[idx[: take(len(idx))]] = True
    return out


def _split_by_group(cell_of_row, groups, rng, take):
    """Bool mask over the rows: `_split_by_cell` over the groups (each at its first row's cell),
    a group's rows all on the side of its first row."""
    lead, firsts = group_leads(groups)
    chosen = _split_by_cell([firsts[cell_of_row[firsts] == k] for k in range(int(cell_of_row.max()) + 1)],
                            len(cell_of_row), rng, take)
    return chosen[lead]


def _half_of(mask: np.ndarray, seed: int) -> np.ndarray:
    """A random half of the rows of `mask` (seeded): a seed's quarter split inside its half."""
    rows = np.flatnonzero(mask)
    keep = np.random.default_rng([seed, 2]).permutation(rows)[: (len(rows) + 1) // 2]
    out = np.zeros_like(mask)
    out[keep] = True
    return out


# the learning-curve ratio d(n/2 -> n/4) / d(n -> n/2) is 2^alpha for an excess log-loss falling like
# n^-alpha; alpha is held to [1/2, 1] (the slow and the parametric rate), so the step's factor
# 1 / (2^alpha - 1) lies in [1, 2.414]
_RATE_RATIO_RANGE = (2.0 ** 0.5, 2.0)
_RATE_MIN_FITS = 4  # (fold, seed) fits with a quarter fit below which the ratio is not read


def pooled_rate_step(per_seed: list[dict], diags: list[dict], fold: np.ndarray) -> dict | None:
    """Aitken's extrapolation on the rows whose folds fitted the non-linear level with a quarter
    fit (`corr_quarter`): the learning curve's ratio pooled over every such fold and seed of the
    term, I = I(n) + (I(n) - I(n/2)) / (ratio - 1), in place of the 1/n step I(n) + (I(n) - I(n/2)).
    The ratio is taken one standard error towards the 1/n rate (its spread over the (fold, seed)
    fits, each one draw of the fitted critics), and with fewer than `_RATE_MIN_FITS` such fits the
    1/n step stays: a step read from one fold's two seeds overshot by 5% where the 1/n one was 2%
    short. `r` and `corr` are rescaled in place (so the interval's extrapolation slack grows with
    the step) and the quarter arrays dropped; returns {ratio, ratio_se, factor} or None where no
    fold had them.

    Why only there: on four Gaussian families the linear level's ratio was 2.2-4.6 (its 1/n step
    holds), while the non-linear level needed 1.5-3.3 times its 1/n step at n = 2k (RESULTS.md,
    issue 22 twentieth session)."""
    if not per_seed or "corr_quarter" not in per_seed[0]:
        return None
    rows = per_seed[0]["rate_rows"] > 0  # the held-out rows of the folds that fitted a quarter
    fits = [rows & (fold == k) for k in np.unique(fold[rows])]  # each fold's rows: one fit per seed
    step = np.array([[a["corr"][m].sum() for m in fits] for a in per_seed]).ravel()
    quarter = np.array([[a["corr_quarter"][m].sum() for m in fits] for a in per_seed]).ravel()
    total = float(step.sum())
    if total > 0 and len(step) >= _RATE_MIN_FITS:
        ratio = float(quarter.sum()) / total
        resid = quarter - ratio * step
        ratio_se = float(np.sqrt(len(step) / (len(step) - 1) * np.sum(resid ** 2)) / total)
    else:
        ratio, ratio_se = float("inf"), float("inf")
    factor = 1.0 / (float(np.clip(ratio + ratio_se, *_RATE_RATIO_RANGE)) - 1.0)
    for arrays in per_seed:
        arrays["r"][rows] += (factor - 1.0) * arrays["corr"][rows]
        arrays["corr"][rows] *= factor
        del arrays["corr_quarter"], arrays["rate_rows"]
    for d in diags:
        d.update(rate_ratio=ratio, rate_ratio_se=ratio_se, rate_factor=float(factor))
    return {"ratio": ratio, "ratio_se": ratio_se, "factor": float(factor)}


def _mean_ce_grad(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d/d logits of the batch's mean cross-entropy, logsumexp(logits) - logits[target], as
    autograd's backward forms it (1 / B; logsumexp's softmax; the target's -1 scattered in), so
    with the same bits."""
    g_ce = torch.ones((), dtype=logits.dtype, device=logits.device) / len(logits)
    g_logits = g_ce * torch.exp(logits - torch.logsumexp(logits, -1)[:, None])
    return g_logits.scatter_add_(1, target[:, None], (-g_ce).expand(len(logits), 1))


def _prefix_mask(d, k_dims, dev):
    """[d + 1, 1] mask keeping the first k_dims features and the intercept (last row)."""
    mask = torch.zeros(d + 1, 1, device=dev)
    mask[:k_dims] = 1.0
    mask[d] = 1.0
    return mask


def _log_marginal(y_fit, c_fit, y, c):
    """log p(y|c) from label frequencies in the fitting rows, a 0.5 pseudo-count on each class of the
    stratum: those of its fitting rows and of the rows scored (the critic's cells, `cell_layout`).

    The support is the critic's: a pseudo-count on every class of the whole label (the classes of
    other strata too) spread the baseline's mass where the critic puts none, so the critic beat it
    on noise. With each stratum's own answer classes (a CrossMed-style label), I(Z;label|M,A,T) read
    0.29 nats, lower end 0.25, on pure noise (RESULTS.md, issue 22 twenty-seventh session)."""
    out = np.empty(len(y))
    k = int(max(y.max(), y_fit.max())) + 1
    for s in np.unique(c):
        sel_fit, sel = c_fit == s, c == s
        seen = np.bincount(y_fit[sel_fit], minlength=k)
        support = (seen > 0) | (np.bincount(y[sel], minlength=k) > 0)
        cnt = np.where(support, seen + 0.5, 0.0)
        out[sel] = np.log(cnt[y[sel]] / cnt.sum())
    return out


class _MLPLadder:
    """The ladder's non-linear level for one fold: elliptically scaled linear heads plus an MLP.

    logits(z, c)_cell = [z,1] W_cell / (1 + |[z,1] R|^2) + V_cell . gelu([z,1] U) + log prior(cell|c),
    cells of other strata masked out. The scaled term is the first-order form of the posterior
    of elliptical heavy-tailed class-conditionals with a shared scatter (Student-t: log p(z|y) =
    -(nu+k)/2 log(nu + |z - mu_y|^2), whose class differences are linear in z divided by
    nu + |z|^2); a plain MLP did not find it at n = 5k (Student-t task, K = 4, d = 32: MLP
    0.69 nats, this head 0.81, truth 0.83). The MLP term covers mixture class-conditionals
    (truth 1.29, linear 1.17, this level 1.24 at n = 5k). R has `rank` columns.
    The level nests the linear one: it starts at the linear level's fitted heads (fitted on
    the same rows, R ~ 0, V = 0) and Adam moves it only as far as the
    validation split rewards (early stop with patience, best state restored). The comparison
    with the linear level is paired, row by row, on that validation split, which is part of
    the training folds; the held-out fold is only scored.
    """

    def __init__(self, est, strata, w_lin, cell_tr, cell_c, cell_y, s_index, off, x_tr, y_tr, c_tr, val,
                 seed, dev):
        self.est, self.dev, self.val, self.seed = est, dev, val, seed
        n_cells = len(cell_c)
        d = x_tr.shape[1]
        w0 = torch.zeros(d + 1, n_cells, device=dev)
        for st, w in zip(strata, w_lin):
            w0[:, torch.as_tensor(st.cells, device=dev)] = w
        self.w0 = w0
        self.s_index = s_index
        self.off = torch.as_tensor(off, dtype=torch.float32, device=dev)  # [strata, cells]
        self.cell_y = torch.as_tensor(cell_y, device=dev)
        self.x_tr = _design(x_tr, dev)
        self.t_tr = torch.as_tensor(cell_tr, device=dev)
        self.s_tr = self._strata_of(c_tr)
        self.y_tr = torch.as_tensor(y_tr, device=dev)
        self.linear_val = None

    # the parameters Adam's weight decay acts on (the MLP's; the heads are held by early stopping)
    decayed = ("u", "v")

    form_name = "mlp"  # diagnostics' `nonlinear_form`
    # the estimator's settings this form is fitted with: Adam's step, and the epochs without gain
    # on the validation split before a fit stops
    lr_setting, patience_setting = "mlp_lr", "mlp_patience"

    @property
    def learning_rate(self) -> float:
        return getattr(self.est, self.lr_setting)

    @property
    def patience(self) -> int:
        return getattr(self.est, self.patience_setting)

    def _strata_of(self, c):
        """Each row's stratum index (`s_index`: {stratum code: index}), looked up per distinct code."""
        codes, inverse = np.unique(np.asarray(c), return_inverse=True)
        index = np.array([self.s_index[int(v)] for v in codes], dtype=np.int64)
        return torch.as_tensor(index[inverse.reshape(-1)], device=self.dev)

    def _new(self, seed, w_init=None):
        gen = torch.Generator().manual_seed(int(seed))
        d1 = self.x_tr.shape[1]
        h = self.est.hidden
        u = (torch.randn(d1, h, generator=gen) / np.sqrt(d1)).to(self.dev)
        r = (0.01 * torch.randn(d1, self.est.rank, generator=gen)).to(self.dev)
        return {"w": (self.w0 if w_init is None else w_init).clone().requires_grad_(True),
                "r": r.requires_grad_(True), "u": u.requires_grad_(True), "v": torch.zeros(h, self.w0.shape[1], device=self.dev,
                                                               requires_grad=True)}

    @staticmethod
    def _logits(p, x1, off_rows):
        scale = 1.0 + ((x1 @ p["r"]) ** 2).sum(1, keepdim=True)
        return (x1 @ p["w"]) / scale + torch.nn.functional.gelu(x1 @ p["u"]) @ p["v"] + off_rows

    @classmethod
    def _grads_by_autograd(cls, p, x1, off_rows, target, weight_decay) -> dict:
        """The gradient of the loss `_fit` minimises on a batch, by autograd: mean cross-entropy
        under `_logits` plus `weight_decay` |.|^2 on the `decayed` parameters. The definition
        `_grads` is held to (tests/test_written_out_grads.py), and the gradient of a form that
        writes none out. A parameter the loss does not reach gets None (Adam skips it)."""
        logits = cls._logits(p, x1, off_rows)
        ce = torch.logsumexp(logits, -1) - logits.gather(1, target[:, None])[:, 0]
        loss = ce.mean() + weight_decay * sum((p[k] ** 2).sum() for k in cls.decayed if k in p)
        return dict(zip(p, torch.autograd.grad(loss, list(p.values()), allow_unused=True)))

    # the form whose gradient `_grads` writes out; a subclass with other logits (another
    # form_name) keeps autograd
    grads_written_for = "mlp"

    @staticmethod
    @torch.no_grad()
    def _grads(p, x1, off_rows, target, weight_decay):
        """The gradient of a batch's mean cross-entropy under `_logits`, plus the weight decay on
        u and v, written out: the operations autograd's backward of `_fit`'s loss runs (each
        backward formula of torch's derivatives.yaml, matrix products in the same layouts), so
        the same bits without building a graph, at 0.67-0.72 of autograd's CPU time per step
        (batch 512; experiments/benchmarks/written_out_grads_bench.py);
        tests/test_written_out_grads.py holds it to autograd's bits."""
        x1t = x1.t()
        a = x1 @ p["r"]
        scale = 1.0 + (a ** 2).sum(1, keepdim=True)
        t1 = (x1 @ p["w"]) / scale
        hu = x1 @ p["u"]
        h = torch.nn.functional.gelu(hu)
        logits = t1 + h @ p["v"] + off_rows
        g_logits = _mean_ce_grad(logits, target)
        g_scale = (-g_logits * (t1 / scale)).sum(1, keepdim=True)  # the broadcast summed back
        g_hu = torch.ops.aten.gelu_backward(g_logits.mm(p["v"].t()), hu)
        decay = torch.as_tensor(weight_decay, dtype=x1.dtype, device=x1.device)
        return {"w": x1t.mm(g_logits / scale), "r": x1t.mm(g_scale * (2.0 * a)),
                "u": x1t.mm(g_hu) + (2.0 * p["u"]) * decay, "v": h.t().mm(g_logits) + (2.0 * p["v"]) * decay}

    def _log_q(self, p, x1, si, y):
        return self._log_q_rows(p, x1, *self._row_terms(si, y))

    def _row_terms(self, si, y):
        """Each row's log-prior over the cells and its label mask (fixed while a level is fitted)."""
        return self.off[si], torch.where(self.cell_y[None, :] == y[:, None], 0.0, NEG)

    def _log_q_rows(self, p, x1, off_rows, mask):
        with torch.no_grad():
            logits = self._logits(p, x1, off_rows)
            return _log_q_of_logits(logits, mask)

    def _fit(self, p, rows, val_rows, seed, patience=None):
        """Adam on `rows` (indices into the fold's training rows), early-stopped on `val_rows`
        after `patience` epochs without gain (default `mlp_patience`)."""
        est = self.est
        patience = self.patience if patience is None else patience
        opt = _Adam(list(p.values()), lr=self.learning_rate)
        rng = np.random.default_rng([seed, 5])
        xv = self.x_tr[val_rows]
        val_terms = self._row_terms(self.s_tr[val_rows], self.y_tr[val_rows])  # once, not per epoch
        best_rows = self._log_q_rows(p, xv, *val_terms)
        best = -float(best_rows.mean())
        best_state = {k: v.detach().clone() for k, v in p.items()}
        stale, curve = 0, [best]
        batch = est.mlp_batch
        written_out = self.grads_written_for == self.form_name
        for _epoch in range(est.mlp_epochs):
            perm = rows[rng.permutation(len(rows))]
            for start in range(0, len(perm), batch):
                b = torch.as_tensor(perm[start : start + batch], device=self.dev)
                # the batch's rows by index_select: the same copy as x_tr[b], at a third of its
                # cost on wide features (43 against 154 us for 512 x 257)
                x_b = torch.index_select(self.x_tr, 0, b)
                grads = (self._grads if written_out else self._grads_by_autograd)(
                    p, x_b, self.off[self.s_tr[b]], self.t_tr[b], est.mlp_weight_decay)
                for k, q in p.items():
                    q.grad = grads[k]
                opt.step()
            rows_v = self._log_q_rows(p, xv, *val_terms)
            v = -float(rows_v.mean())
            curve.append(v)
            # an improvement counts only beyond 1e-4 nats per row (a smaller one is noise here)
            if v < best - 1e-4:
                best, stale, best_rows = v, 0, rows_v
                best_state = {k: t.detach().clone() for k, t in p.items()}
            else:
                stale += 1
                if stale >= patience:
                    break
        # the best state's log q of each validation row (`fit_and_compare` reads it, not a rerun)
        self.best_val_log_q = best_rows
        return best_state, curve

    def linear_params(self):
        """The linear level in this parameterisation (R = U = V = 0)."""
        h, rank = self.est.hidden, self.est.rank
        d1, nc = self.w0.shape
        return {"w": self.w0.clone(), "r": torch.zeros(d1, rank, device=self.dev),
                "u": torch.zeros(d1, h, device=self.dev), "v": torch.zeros(h, nc, device=self.dev)}

    def fit_and_compare(self, x_ev, y_ev, c_ev) -> dict:
        """Fit the level on the training rows outside the validation split and compare it there,
        row by row: `level_gain`, the mean gain in log-likelihood per row over the linear level,
        with its standard error `level_gain_se` (the level's choice), and `linear_over_prior`,
        the linear level's mean gain over W = 0, the label prior alone (for the sentence of
        `ProbeEstimator.misspecification`).

        The check fits on at most `ladder_rows` of those rows (a random subset): on a linear task
        the check is all the level costs, and at n = 20k it was a quarter of the chain's time
        (issue 22); a non-linearity worth a level shows on 4,096 rows. The subset is drawn from
        the training rows only, so the held-out fold stays unseen. When the level is chosen it
        is refitted on every row (`refit_on_all_rows`)."""
        fit_rows, val_rows = np.flatnonzero(~self.val), np.flatnonzero(self.val)
        self.subsampled = len(fit_rows) > self.est.ladder_rows
        if self.subsampled:
            rng = np.random.default_rng([self.seed, 11])
            fit_rows = np.sort(rng.choice(fit_rows, self.est.ladder_rows, replace=False))
        # the check stops after `ladder_patience` epochs without gain (a level that helps shows
        # it sooner; on a linear task the epochs after the first are the check's whole cost)
        self.params, self.curve = self._fit(self._new(self.seed), fit_rows, val_rows, self.seed,
                                            patience=self.est.ladder_patience)
        self.partial = self.subsampled or self.est.ladder_patience < self.est.mlp_patience
        vr = torch.as_tensor(val_rows, device=self.dev)
        xv, sv, yv = self.x_tr[vr], self.s_tr[vr], self.y_tr[vr]
        off_rows, mask = self._row_terms(sv, yv)
        lq_lin = self._log_q_rows(self.linear_params(), xv, off_rows, mask)
        # the fitted level's rows as the fit scored them; the prior's logits are the row's
        # log-priors alone (every weight 0 adds exact zeros): the same bits as rerunning them
        lq_nl = self.best_val_log_q
        with torch.no_grad():
            lq_prior = _log_q_of_logits(off_rows, mask)
        diff = (lq_nl - lq_lin).cpu().numpy()
        if len(diff) < 2:
            return {"level_gain": 0.0, "level_gain_se": float("inf"), "linear_over_prior": 0.0}
        gain, se = _paired_gain(diff)
        return {"level_gain": gain, "level_gain_se": se, "linear_over_prior": float((lq_lin - lq_prior).mean())}

    def refit_on_all_rows(self):
        """After a check on a subset of rows or with a shorter patience: the chosen level
        fitted on all fitting rows with the level's own patience."""
        if getattr(self, "partial", False):
            self.fit_on_all_rows()

    def fit_on_all_rows(self):
        """The level fitted on every fitting row, early-stopped on the validation split with the
        level's own patience."""
        self.params, self.curve = self._fit(self._new(self.seed), np.flatnonzero(~self.val),
                                            np.flatnonzero(self.val), self.seed)
        self.partial = False

    def fold_outputs(self, halves, x_ev, y_ev, c_ev, base_ev, lq_lin_ev, diag, seeds=None):
        """Per-seed outputs at this level: held-out terms, learning-curve step, level gap; with
        `nonlinear_rate`, a fit on a quarter of the fitting rows beside each half fit, for the
        term's learning-curve exponent (`ProbeEstimator.pool_folds`)."""
        x1 = _design(x_ev, self.dev)
        se, ye = self._strata_of(c_ev), torch.as_tensor(y_ev, device=self.dev)
        lq_ev = self._log_q(self.params, x1, se, ye).cpu().numpy().astype(np.float64)
        fit = ~self.val
        val_rows = np.flatnonzero(self.val)
        diag = {**diag, "mlp_curve": [float(v) for v in self.curve]}
        outs = []
        for i, half in enumerate(halves):
            arrays = {"level_gap": lq_ev - lq_lin_ev}
            if self.est.extrapolate:
                # learning curve at this level: the same recipe on half of the fitting rows
                rows = np.flatnonzero(fit & half)
                p_half, _ = self._fit(self._new(self.seed + 7 * (i + 1)), rows, val_rows, self.seed + i)
                r_half = self._log_q(p_half, x1, se, ye).cpu().numpy().astype(np.float64)
                arrays["r"] = 2.0 * lq_ev - r_half - base_ev
                arrays["corr"] = lq_ev - r_half
                if self.est.nonlinear_rate and seeds is not None:
                    rows = np.flatnonzero(fit & _half_of(half, seeds[i]))
                    p_quarter, _ = self._fit(self._new(self.seed + 7 * (i + 1)), rows, val_rows, self.seed + i)
                    arrays["corr_quarter"] = r_half - self._log_q(p_quarter, x1, se, ye).cpu().numpy().astype(np.float64)
                    arrays["rate_rows"] = np.ones(len(lq_ev))  # marks this fold's rows for `pooled_rate_step`
            else:
                arrays["r"] = lq_ev - base_ev
            outs.append(FoldOutput(arrays=arrays, diagnostics=dict(diag)))
        return outs


class _LatentCellLadder(_MLPLadder):
    """The ladder's latent-cell level: each cell's linear head split into `latent_cells` heads,
    the cell's logit their log-mean-exp,

        logits(z, c)_cell = log (1/R) sum_r exp([z,1] W_{cell,r}) + log prior(cell|c).

    This is the exact posterior form where each class is a mixture of Gaussian clusters with a
    shared covariance (a cluster is a latent sub-cell: the form `use_subclasses` fits where
    the sub-cells are labelled). The MLP level approximates it and stayed 1-9% below the truth
    at n = 20k on four-cluster classes (mixture-4) with every fold on it (RESULTS.md, issue 22,
    twenty-second session). It starts at the linear level's heads, each copy moved towards a
    k-means cluster of its cell's rows (`_cluster_step`; identical copies would get identical
    gradients and never part); Adam (`latent_lr`) and early stopping as the MLP level. Tried
    only where the ladder chose the non-linear level, and kept only where it predicts the
    validation split better than the MLP level (`ProbeEstimator._other_forms`).
    """

    decayed = ()
    form_name = "latent cells"
    lr_setting = "latent_lr"

    def _new(self, seed, w_init=None):
        base = self.w0 if w_init is None else w_init
        step = self._cluster_step(seed)
        return {"w": (base[:, :, None] + step).requires_grad_(True)}

    def _cluster_step(self, seed) -> torch.Tensor:
        """[d + 1, cells, R]: each copy's start, relative to its cell's linear head: k-means
        clusters of the cell's fitting rows, copy r moved by the log-density difference of its
        cluster's mean m_r and the cell's mean m under unit covariance, [m_r - m, -(|m_r|^2 -
        |m|^2) / 2] times `latent_init` (from a small random step instead, the MLP level won more
        folds' validation splits on clustered classes: RESULTS.md, issue 22 twenty-second
        session). Cells with fewer than two fitting rows per copy keep a small random step."""
        gen = torch.Generator().manual_seed(int(seed))
        d1, n_cells = self.w0.shape
        r = self.est.latent_cells
        if self.est.latent_start == "random":
            return (self.est.latent_init / np.sqrt(d1)) * torch.randn(d1, n_cells, r, generator=gen).to(self.dev)
        step = (0.1 / np.sqrt(d1)) * torch.randn(d1, n_cells, r, generator=gen).to(self.dev)
        fit = torch.as_tensor(~self.val, device=self.dev)
        x = self.x_tr[:, :-1]
        for cell in range(n_cells):
            rows = torch.nonzero(fit & (self.t_tr == cell)).flatten()
            if len(rows) < 2 * r:
                continue
            xc = x[rows]
            centres = _kmeans(xc, r, gen)
            m = xc.mean(0)
            step[:-1, cell] += self.est.latent_init * (centres - m).T
            step[-1, cell] += -0.5 * self.est.latent_init * ((centres ** 2).sum(1) - (m ** 2).sum())
        return step

    def linear_params(self):
        """The linear level in this parameterisation (every copy the linear head)."""
        return {"w": self.w0[:, :, None].repeat(1, 1, self.est.latent_cells)}

    @staticmethod
    def _logits(p, x1, off_rows):
        w = p["w"]
        per_copy = (x1 @ w.reshape(w.shape[0], -1)).reshape(len(x1), w.shape[1], w.shape[2])
        return torch.logsumexp(per_copy, -1) - float(np.log(w.shape[2])) + off_rows

    grads_written_for = "latent cells"

    @staticmethod
    @torch.no_grad()
    def _grads(p, x1, off_rows, target, weight_decay):
        """`_logits`' gradient written out as autograd forms it (no weight decay at this level):
        each copy's share of its cell's gradient is its softmax weight within the cell."""
        w = p["w"]
        d1, n_cells, r = w.shape
        per_copy = (x1 @ w.reshape(d1, -1)).reshape(len(x1), n_cells, r)
        cell = torch.logsumexp(per_copy, -1)
        g_logits = _mean_ce_grad(cell - float(np.log(r)) + off_rows, target)
        g_copy = g_logits[:, :, None] * torch.exp(per_copy - cell[:, :, None])
        return {"w": x1.t().mm(g_copy.reshape(len(x1), n_cells * r)).reshape(d1, n_cells, r)}


class _EllipticalLadder(_MLPLadder):
    """The ladder's elliptical level: the linear heads plus, per cell, a function of the squared
    distance from the cell's centre in a projection shared by the cells,

        logits(z, c)_cell = [z,1] W_cell - a_cell b_cell log(1 + |P z - m_cell|^2 / b_cell) + log prior(cell|c),

    P: d x `rank`, a_cell real, b_cell > 0. This is the exact posterior form of elliptical
    Student-t classes with a shared scatter (P the scatter's inverse root on the signal, m the
    centres, a b = (nu + k) / 2, b = nu) and, as b -> inf, of Gaussian classes whose scales
    differ (-a |P z - m|^2: the quadratic discriminant of classes isotropic in the signal's
    subspace). The MLP level approximates the second and stayed 4-11% below the truth at
    n = 20k on classes that differ only in scale (scales-only; RESULTS.md, issue 22
    twenty-third session). It starts at the linear heads (a = 0; P random, m = 0, b = rank) and
    is fitted by Adam at `elliptical_lr` with `elliptical_patience` (slower and longer than the
    MLP: at the MLP's settings it won the validation split and gained nothing held out). Tried
    only where the ladder chose the non-linear level, kept where it predicts the validation split
    best (`ProbeEstimator._other_forms`).
    """

    decayed = ()
    form_name = "elliptical"
    lr_setting, patience_setting = "elliptical_lr", "elliptical_patience"

    def _new(self, seed, w_init=None):
        gen = torch.Generator().manual_seed(int(seed))
        d1, n_cells = self.w0.shape
        r = self.est.rank
        return {"w": (self.w0 if w_init is None else w_init).clone().requires_grad_(True),
                "p": (torch.randn(d1 - 1, r, generator=gen) / np.sqrt(d1 - 1)).to(self.dev).requires_grad_(True),
                "m": torch.zeros(r, n_cells, device=self.dev, requires_grad=True),
                "a": torch.zeros(n_cells, device=self.dev, requires_grad=True),
                "log_b": torch.full((n_cells,), float(np.log(r)), device=self.dev, requires_grad=True)}

    def linear_params(self):
        """The linear level in this parameterisation (a = 0)."""
        return {k: v.detach() for k, v in self._new(self.seed).items()}

    @staticmethod
    def _logits(p, x1, off_rows):
        pz = x1[:, :-1] @ p["p"]
        m = p["m"]
        sq = ((pz ** 2).sum(1, keepdim=True) - 2 * pz @ m + (m ** 2).sum(0)[None, :]).clamp_min(0.0)
        b = torch.exp(p["log_b"])
        return x1 @ p["w"] - p["a"] * b * torch.log1p(sq / b) + off_rows

    grads_written_for = "elliptical"

    @staticmethod
    @torch.no_grad()
    def _grads(p, x1, off_rows, target, weight_decay):
        """`_logits`' gradient written out as autograd forms it (no weight decay at this level):
        with t = log1p(q), q = sq / b and sq = |P z - m|^2 clamped at 0, the chain rule through
        a b t, each broadcast summed back over the rows, two uses of a tensor added."""
        xs = x1[:, :-1]
        pz = xs @ p["p"]
        m, a = p["m"], p["a"]
        two_pz = 2 * pz
        s = (pz ** 2).sum(1, keepdim=True) - two_pz @ m + (m ** 2).sum(0)[None, :]
        b = torch.exp(p["log_b"])
        ab = a * b
        q = s.clamp_min(0.0) / b
        log_term = torch.log1p(q)
        g_term = -_mean_ce_grad(x1 @ p["w"] - ab * log_term + off_rows, target)
        g_ab = (g_term * log_term).sum(0)
        g_q = (g_term * ab) / (q + 1)
        g_s = torch.where(s >= 0.0, g_q / b, 0.0)  # the clamp passes the gradient where s >= 0
        g_pm = -g_s
        g_m = two_pz.t().mm(g_pm) + g_s.sum(0, keepdim=True) * (2.0 * m)
        g_pz = g_pm.mm(m.t()) * 2 + g_s.sum(1, keepdim=True) * (2.0 * pz)
        return {"w": x1.t().mm(-g_term), "p": xs.t().mm(g_pz), "m": g_m, "a": g_ab * b,
                "log_b": (g_ab * a + (-g_q * (q / b)).sum(0)) * b}


def _kmeans(x: torch.Tensor, k: int, gen: torch.Generator, iters: int = 20) -> torch.Tensor:
    """[k, d] centres of Lloyd's k-means on the rows of x, seeded by k-means++ (D^2 sampling)."""
    n = len(x)
    centres = [x[int(torch.randint(n, (1,), generator=gen))]]
    for _ in range(1, k):
        d2 = torch.cdist(x, torch.stack(centres)).min(1).values ** 2
        centres.append(x[int(torch.multinomial((d2 + 1e-12).cpu(), 1, generator=gen))])
    c = torch.stack(centres)
    for _ in range(iters):
        label = torch.cdist(x, c).argmin(1)
        for j in range(k):
            members = x[label == j]
            if len(members):
                c[j] = members.mean(0)
    return c


register_estimator("probe", ProbeEstimator, ProbeEstimator.tags,
                   summary="per-stratum softmax probe with learning-curve bias correction (default)")
