"""The variational probe bound I(Z;Y|C) >= H(Y|C) - CE(q), the default estimator.

Barber & Agakov (2003); as a probe, Pimentel et al. (2020) and V-information (Xu et al.
2020). For any q(y|z,c) the held-out mean of log q(y|z,c) - log p(y|c) lower-bounds the
MI in expectation; the better q, the tighter.

q is a softmax with one head per stratum c (DESIGN.md §3: stratum-specific heads beat a
one-hot condition input) over *cells* (y, u), where u are optional finer sub-class labels
(the later factors of a chain), then marginalised over u:
q(y|z,c) = sum_u softmax_c(W z + b + log p(y,u|c))_{(y,u)}. A mixture of linear-softmax
posteriors is the exact posterior of class-conditional Gaussians with shared covariance,
which a single linear softmax is not when Y marginalises over sub-classes (DESIGN.md §3:
a linear probe is misspecified for mixture posteriors).

The L2 penalty is chosen on a validation split of the training folds by held-out log-loss,
then the model is refitted on all training rows; the held-out fold is only scored.
All penalties of the grid are fitted at once as one batched L-BFGS problem.
"""

from __future__ import annotations

import numpy as np
import torch

from matprobe.mi.base import MEAN, CrossFitEstimator, FoldOutput

NEG = -1e9  # log-mask for cells outside a row's stratum


def _cells(c, y, u):
    """Cell id per row and the (stratum, y) of each cell."""
    trip = np.stack([c, y, u], axis=1)
    uniq, cell = np.unique(trip, axis=0, return_inverse=True)
    return cell.reshape(-1), uniq[:, 0], uniq[:, 1]


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


class ProbeEstimator(CrossFitEstimator):
    name = "probe"
    kind = MEAN

    def __init__(self, *args, penalties=(1e-5, 1e-4, 1e-3, 1e-2, 1e-1), max_iter: int = 100,
                 use_subclasses: bool = True, dims=(1.0,),
                 extrapolate: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.penalties = tuple(float(p) for p in penalties)
        self.max_iter = max_iter
        self.use_subclasses = use_subclasses
        self.dims = tuple(dims)
        self.extrapolate = extrapolate

    def params(self) -> dict:
        return {**super().params(), "penalties": list(self.penalties), "max_iter": self.max_iter,
                "use_subclasses": self.use_subclasses, "dims": list(self.dims),
                "extrapolate": self.extrapolate}

    def fit_fold(self, x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seed) -> FoldOutput:
        rng = np.random.default_rng(seed)
        dev = torch.device(self.device)
        if not self.use_subclasses:
            sub_tr = np.zeros_like(sub_tr)
        cell_tr, cell_c, cell_y, s_index, off = cell_layout(c_tr, y_tr, sub_tr, c_ev, y_ev)
        n_cells = len(cell_c)
        # validation split inside the training folds, stratified by cell
        val = np.zeros(len(cell_tr), dtype=bool)
        for k in range(n_cells):
            idx = np.flatnonzero(cell_tr == k)
            rng.shuffle(idx)
            val[idx[: len(idx) // 5]] = True
        fit = ~val

        def tens(a):
            return torch.as_tensor(a, dtype=torch.float32, device=dev)

        def design(x):
            return torch.cat([tens(x), torch.ones(len(x), 1, device=dev)], dim=1)

        def row_off(c):
            return tens(off[[s_index[int(v)] for v in c]])

        y_mask = np.full((int(max(y_tr.max(), y_ev.max())) + 1, n_cells), NEG)
        for k in range(n_cells):
            y_mask[cell_y[k], k] = 0.0
        y_mask = tens(y_mask)

        def log_q_y(w, x1, offs, y):
            logits = x1 @ w + offs  # [L, n, cells]
            return torch.logsumexp(logits + y_mask[y], dim=-1) - torch.logsumexp(logits, dim=-1)

        def train(w0, lam, mask, rows):
            x1 = design(x_tr[rows])
            offs = row_off(c_tr[rows])
            target = torch.as_tensor(cell_tr[rows], device=dev)
            w = w0.clone().requires_grad_(True)
            lam_t = tens(lam)[:, None, None]
            opt = torch.optim.LBFGS([w], lr=1.0, max_iter=self.max_iter, history_size=20,
                                    tolerance_grad=1e-6, tolerance_change=1e-9,
                                    line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                logits = x1 @ (w * mask) + offs
                ce = torch.logsumexp(logits, -1) - logits.gather(
                    -1, target.expand(len(lam), -1)[..., None])[..., 0]
                loss = ce.mean(dim=1).sum() + (lam_t * w[:, :-1] ** 2).sum()
                loss.backward()
                return loss

            opt.step(closure)
            return w.detach()

        d = x_tr.shape[1]
        # grid over (penalty, number of leading PCA components kept): features are PCA
        # scores in decreasing variance, so a prefix is a nested lower-dimensional probe
        dim_grid = sorted({max(1, min(d, int(round(f * d)))) for f in self.dims})
        grid = [(lam_, k_) for k_ in dim_grid for lam_ in self.penalties]
        lam = np.array([g[0] for g in grid])
        mask = torch.zeros(len(grid), d + 1, 1, device=dev)
        for i, (_, k_) in enumerate(grid):
            mask[i, :k_] = 1.0
            mask[i, d] = 1.0  # intercept
        w = train(torch.zeros(len(grid), d + 1, n_cells, device=dev), lam, mask, fit)
        w = w * mask
        with torch.no_grad():
            lq_val = log_q_y(w, design(x_tr[val]), row_off(c_tr[val]), torch.as_tensor(y_tr[val], device=dev))
        val_ce = (-lq_val.mean(dim=1)).cpu().numpy()
        best = int(np.argmin(val_ce))
        w_best = train(w[best : best + 1], lam[best : best + 1], mask[best : best + 1],
                       np.ones(len(y_tr), dtype=bool)) * mask[best : best + 1]
        with torch.no_grad():
            lq_ev = log_q_y(w_best, design(x_ev), row_off(c_ev), torch.as_tensor(y_ev, device=dev))[0].cpu().numpy()
            lq_tr = log_q_y(w_best, design(x_tr), row_off(c_tr), torch.as_tensor(y_tr, device=dev))[0].cpu().numpy()
        r_half = None
        if self.extrapolate:
            # learning-curve bias correction: the held-out bound's shortfall shrinks like 1/n
            # (excess log-loss ~ params / 2n), so I ~ 2 I(n) - I(n/2) (Richardson step)
            half = np.zeros(len(y_tr), dtype=bool)
            for k in range(n_cells):
                idx = np.flatnonzero(cell_tr == k)
                rng.shuffle(idx)
                half[idx[: (len(idx) + 1) // 2]] = True
            w_half = train(w_best, lam[best : best + 1], mask[best : best + 1], half)
            with torch.no_grad():
                r_half = log_q_y(w_half * mask[best : best + 1], design(x_ev), row_off(c_ev),
                                 torch.as_tensor(y_ev, device=dev))[0].cpu().numpy().astype(np.float64)
        # baseline log p(y|c) from the training rows' label frequencies
        base_ev = _log_marginal(y_tr, c_tr, y_ev, c_ev)
        base_tr = _log_marginal(y_tr, c_tr, y_tr, c_tr)
        return FoldOutput(
            arrays={"r": (lq_ev.astype(np.float64) if r_half is None
                          else 2.0 * lq_ev.astype(np.float64) - r_half) - base_ev,
                    # the extrapolation step per row; half of it widens the interval
                    **({} if r_half is None else {"corr": lq_ev.astype(np.float64) - r_half})},
            diagnostics={"penalty": float(lam[best]), "dims": int(grid[best][1]), "heldout_curve": val_ce.tolist(),
                         "train_value": float(np.mean(lq_tr - base_tr))},
        )


def _log_marginal(y_fit, c_fit, y, c):
    """log p(y|c) from label frequencies in the fitting rows (0.5 pseudo-count)."""
    out = np.empty(len(y))
    for s in np.unique(c):
        sel_fit = c_fit == s
        k = int(max(y.max(), y_fit.max())) + 1
        cnt = np.bincount(y_fit[sel_fit], minlength=k) + 0.5
        sel = c == s
        out[sel] = np.log(cnt[y[sel]] / cnt.sum())
    return out
