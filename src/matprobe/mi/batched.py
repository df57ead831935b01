"""The default probe estimator with the seeds of a fold fitted in one pass (issue 7).

`ProbeEstimator` fits one seed at a time: per fold, a batched L-BFGS over the penalty grid,
a refit at the chosen penalty and a half-data refit for the learning-curve correction. The
seeds of one fold share the fold, its preprocessing and its rows; they differ only in the
random validation and half splits. Here those splits become 0/1 row weights, so with
`stack_seeds` every seed's grid, refit and half fit are stacked on the leading (batch) axis
of one L-BFGS problem each (three optimiser runs per fold instead of three per fold and seed).

The stacked objective is a sum of independent convex problems (L2-penalised log-loss), so
its minimiser is each problem's own; the splits are drawn from the same per-seed generators
as `ProbeEstimator.fit_fold`, so each seed sees the same rows. Results agree with the
one-seed-at-a-time path to optimiser tolerance, not bit for bit.

Measured (RESULTS.md, sweep): stacking pays where L-BFGS's per-step overhead dominates (small
n and d); at n >= 2000 with 64 PCA dims the stacked run takes as many steps as the slowest
seed and is no faster, so `stack_seeds` is off by default and the seeds run one after
another inside the fold loop. What five seeds in one run save over five runs is the folds'
preprocessing (quantile-to-normal and PCA), which they share.
"""

from __future__ import annotations

import numpy as np
import torch

from matprobe.mi.base import FoldOutput
from matprobe.mi.probe import NEG, ProbeEstimator, _log_marginal, cell_layout


class BatchedProbeEstimator(ProbeEstimator):
    """`ProbeEstimator` whose seeds train together; same parameters, same output."""

    name = "probe"
    # stack the seeds' grid fits in one L-BFGS run (True) or fit them one after another inside
    # the fold loop (False); which is faster depends on size (RESULTS.md, sweep)
    stack_seeds = False

    def _run_folds(self, z, y, c, sub, active, plan):
        n = len(y)
        per_seed: list[dict[str, np.ndarray]] = [{} for _ in range(self.seeds)]
        diags = []
        for f in range(plan.k):
            x = plan.transformed(z, f)
            tr = active & (plan.fold != f)
            ev = active & (plan.fold == f)
            if not ev.any():
                continue
            # the same per-seed generator seeds as CrossFitEstimator._run_folds
            seeds = [1000 * (self.seed + s) + f for s in range(self.seeds)]
            outs = self.fit_fold_seeds(x[tr], y[tr], c[tr], sub[tr], x[ev], y[ev], c[ev], seeds)
            for s, out in enumerate(outs):
                for key, val in out.arrays.items():
                    per_seed[s].setdefault(key, np.zeros(n))[ev] = val
                diags.append({"seed": s, "fold": f, **out.diagnostics})
        return per_seed, diags

    def fit_fold_seeds(self, x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seeds) -> list[FoldOutput]:
        """One FoldOutput per seed; the seeds' fits share each L-BFGS run."""
        dev = torch.device(self.device)
        if not self.use_subclasses:
            sub_tr = np.zeros_like(sub_tr)
        # cells and priors as ProbeEstimator.fit_fold (they do not depend on the seed)
        cell_tr, cell_c, cell_y, s_index, off = cell_layout(c_tr, y_tr, sub_tr, c_ev, y_ev)
        n_cells = len(cell_c)
        n_tr = len(cell_tr)
        cell_rows = [np.flatnonzero(cell_tr == k) for k in range(n_cells)]
        # per-seed validation and half splits, drawn in the same order as fit_fold draws them
        val_masks, half_masks = [], []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            val = np.zeros(n_tr, dtype=bool)
            for idx in cell_rows:
                idx = idx.copy()
                rng.shuffle(idx)
                val[idx[: len(idx) // 5]] = True
            half = np.zeros(n_tr, dtype=bool)
            if self.extrapolate:
                for idx in cell_rows:
                    idx = idx.copy()
                    rng.shuffle(idx)
                    half[idx[: (len(idx) + 1) // 2]] = True
            val_masks.append(val)
            half_masks.append(half)

        def tens(a):
            return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)

        def design(x):
            return torch.cat([tens(x), torch.ones(len(x), 1, device=dev)], dim=1)

        x1_tr = design(x_tr)
        x1_ev = design(x_ev)
        offs_tr = tens(off[[s_index[int(v)] for v in c_tr]])
        offs_ev = tens(off[[s_index[int(v)] for v in c_ev]])
        target = torch.as_tensor(cell_tr, device=dev)
        y_mask = np.full((int(max(y_tr.max(), y_ev.max())) + 1, n_cells), NEG)
        for k in range(n_cells):
            y_mask[cell_y[k], k] = 0.0
        y_mask = tens(y_mask)
        y_tr_t = torch.as_tensor(y_tr, device=dev)
        y_ev_t = torch.as_tensor(y_ev, device=dev)

        def log_q_y(w, x1, offs, y):
            logits = x1 @ w + offs  # [E, n, cells]
            return torch.logsumexp(logits + y_mask[y], dim=-1) - torch.logsumexp(logits, dim=-1)

        def train(w0, lam, mask, weights):
            """Stacked fits: element e minimises its weighted mean log-loss + lam_e |w_e|^2."""
            wts = tens(weights)  # [E, n_tr] of 0/1
            wts = wts / wts.sum(dim=1, keepdim=True)
            w = w0.clone().requires_grad_(True)
            lam_t = tens(lam)[:, None, None]
            opt = torch.optim.LBFGS([w], lr=1.0, max_iter=self.max_iter, history_size=20,
                                    tolerance_grad=1e-6, tolerance_change=1e-9,
                                    line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                logits = x1_tr @ (w * mask) + offs_tr
                ce = torch.logsumexp(logits, -1) - logits.gather(
                    -1, target.expand(len(lam), -1)[..., None])[..., 0]
                loss = (ce * wts).sum() + (lam_t * w[:, :-1] ** 2).sum()
                loss.backward()
                return loss

            opt.step(closure)
            return w.detach()

        d = x_tr.shape[1]
        dim_grid = sorted({max(1, min(d, int(round(f * d)))) for f in self.dims})
        grid = [(lam_, k_) for k_ in dim_grid for lam_ in self.penalties]
        g_n, s_n = len(grid), len(seeds)
        lam = np.array([g[0] for g in grid] * s_n)  # element e = seed (e // g_n), grid point (e % g_n)
        mask_g = torch.zeros(g_n, d + 1, 1, device=dev)
        for i, (_, k_) in enumerate(grid):
            mask_g[i, :k_] = 1.0
            mask_g[i, d] = 1.0  # intercept
        mask = mask_g.repeat(s_n, 1, 1)
        fit_w = np.repeat(np.stack([~v for v in val_masks]), g_n, axis=0)
        # every seed's grid starts from zeros, as in fit_fold. (A warm start from a fit on all
        # training rows leaks the validation rows into the penalty choice: measured here, it
        # picked the weakest penalty and drove I(Z;T|M,A) to -3.6 nats with PCA 64, n = 2000.)
        w0 = torch.zeros(g_n, d + 1, n_cells, device=dev)
        if self.stack_seeds:
            w = train(w0.repeat(s_n, 1, 1), lam, mask, fit_w) * mask
        else:
            w = torch.cat([train(w0, lam[:g_n], mask_g, fit_w[s * g_n:(s + 1) * g_n]) * mask_g
                           for s in range(s_n)])
        with torch.no_grad():
            lq_all = log_q_y(w, x1_tr, offs_tr, y_tr_t).cpu().numpy()  # [E, n_tr]
        best, val_curves = [], []
        for s in range(s_n):
            v = val_masks[s]
            ce = -lq_all[s * g_n:(s + 1) * g_n][:, v].mean(axis=1)
            val_curves.append(ce)
            best.append(s * g_n + int(np.argmin(ce)))
        best = np.array(best)
        mask_b = mask[best]
        w_best = train(w[best], lam[best], mask_b, np.ones((s_n, n_tr), dtype=bool)) * mask_b
        with torch.no_grad():
            lq_ev = log_q_y(w_best, x1_ev, offs_ev, y_ev_t).cpu().numpy().astype(np.float64)
            lq_tr = log_q_y(w_best, x1_tr, offs_tr, y_tr_t).cpu().numpy()
        r_half = None
        if self.extrapolate:
            # learning-curve (Richardson) correction, as in ProbeEstimator.fit_fold
            w_half = train(w_best, lam[best], mask_b, np.stack(half_masks)) * mask_b
            with torch.no_grad():
                r_half = log_q_y(w_half, x1_ev, offs_ev, y_ev_t).cpu().numpy().astype(np.float64)
        base_ev = _log_marginal(y_tr, c_tr, y_ev, c_ev)
        base_tr = _log_marginal(y_tr, c_tr, y_tr, c_tr)
        outs = []
        for s in range(s_n):
            arrays = {"r": (lq_ev[s] if r_half is None else 2.0 * lq_ev[s] - r_half[s]) - base_ev}
            if r_half is not None:
                arrays["corr"] = lq_ev[s] - r_half[s]
            b = int(best[s] - s * g_n)
            outs.append(FoldOutput(arrays=arrays, diagnostics={
                "penalty": float(grid[b][0]), "dims": int(grid[b][1]),
                "heldout_curve": val_curves[s].tolist(),
                "train_value": float(np.mean(lq_tr[s] - base_tr))}))
        return outs
