"""Critic-based variational bounds: MINE (DV), NWJ, InfoNCE and SMILE.

The critic is an MLP trunk with one output per (stratum, class): g(z)_{c,y}. For a discrete
Y the marginal term is taken exactly over p(y|c) instead of shuffling (docs/design.md §3):
    DV:    I >= E[g_y] - log E_z sum_y p(y|c) e^{g_y}      (Donsker & Varadhan; MINE, CrossMed eq. 6)
    NWJ:   I >= E[g_y] - e^{-1} E_z sum_y p(y|c) e^{g_y}   (Nguyen, Wainwright & Jordan 2010)
    SMILE: DV with e^{g} clipped to [e^-tau, e^tau] in the partition term (Song & Ermon 2020)
    InfoNCE: E[g_y - log mean_j e^{g(z)_{y_j}}] over batches of the same stratum, <= log batch
             (van den Oord et al. 2018).
MINE trains DV with the moving-average gradient correction of Belghazi et al. (2018) §3.2:
the denominator of grad log E[e^g] is replaced by an exponential moving average.
Training early-stops on the bound over a validation split of the training folds; the
held-out fold is only scored with the restored best-on-validation critic.

mine, nwj and smile (WarmCriticEstimator) run on the probe's machinery and start from the
critic its ladder chose (issue 12: a critic trained from scratch was 8-91% low on tasks where
the probe was within 4%); infonce keeps the MLP critic trained from scratch (CriticEstimator)
and reports a one-sided interval.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from matprobe.mi.base import DV, MEAN, CrossFitEstimator, FoldOutput
from matprobe.mi.interface import LOWER, EstimatorTags
from matprobe.mi.probe import NEG, ProbeEstimator, _Adam
from matprobe.mi.registry import register_estimator


class _Critic(nn.Module):
    def __init__(self, d, n_out, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_out))

    def forward(self, x):
        return self.net(x)


class CriticEstimator(CrossFitEstimator):
    """Shared training loop; `bound` picks the objective (mine, nwj, infonce, smile)."""

    bound = "mine"
    tags = EstimatorTags(uses_fold_plan=True, pointwise=True, conditional=True, bound=LOWER,
                         critic_cells=True)

    def __init__(self, *args, hidden: int = 128, epochs: int = 60, batch: int = 256, lr: float = 1e-3,
                 patience: int = 8, ema: float = 0.01, tau: float = 5.0, weight_decay: float = 1e-4,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.hidden, self.epochs, self.batch, self.lr = hidden, epochs, batch, lr
        self.patience, self.ema, self.tau, self.weight_decay = patience, ema, tau, weight_decay

    def scheme(self) -> dict:
        return {"objective": self.bound}

    # per-row terms of the bound for rows (a = g_y, lb = log sum_y p(y|c) e^{g_y})
    def _terms(self, g, y, logp, clip=False):
        a = g.gather(1, y[:, None])[:, 0]
        if clip:
            g = g.clamp(-self.tau, self.tau)
        lb = torch.logsumexp(g + logp, dim=1)
        return a, lb

    def _value(self, a, lb, strata_rows):
        """Bound over a set of rows, per stratum weighted by its share of rows."""
        n = len(a)
        total = a.new_zeros(())
        for rows in strata_rows:
            aa, ll = a[rows], lb[rows]
            if self.bound in ("mine", "dv", "smile"):
                v = aa.mean() - (torch.logsumexp(ll, 0) - np.log(len(rows)))
            elif self.bound == "nwj":
                v = (aa - torch.exp(ll - 1.0)).mean()
            else:
                raise ValueError(self.bound)
            total = total + v * (len(rows) / n)
        return total

    def _nce_rows(self, gfull, y, c, rng, batch):
        """Per-row InfoNCE terms: negatives are the labels of other rows of the same stratum/batch."""
        out = torch.zeros(len(y), device=gfull.device)
        for s in torch.unique(c):
            idx = torch.nonzero(c == s)[:, 0]
            idx = idx[torch.as_tensor(rng.permutation(len(idx)), device=idx.device)]
            for start in range(0, len(idx), batch):
                b = idx[start : start + batch]
                scores = gfull[b][:, y[b]]  # [B, B]: critic of row i at label of row j
                out[b] = scores.diagonal() - (torch.logsumexp(scores, 1) - np.log(len(b)))
        return out

    def fit_fold(self, x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seed) -> FoldOutput:
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        dev = torch.device(self.device)
        strata = np.unique(np.concatenate([c_tr, c_ev]))
        s_index = {int(s): i for i, s in enumerate(strata)}
        k = int(max(y_tr.max(), y_ev.max())) + 1
        # exact log p(y|c) per stratum from training frequencies (0.5 pseudo-count)
        logp = np.full((len(strata), k), -np.inf)
        for s in strata:
            ys = y_tr[c_tr == s]
            cnt = np.bincount(ys, minlength=k).astype(float)
            present = cnt > 0
            logp[s_index[int(s)], present] = np.log(cnt[present] / cnt.sum())
        val = np.zeros(len(y_tr), dtype=bool)
        for g in np.unique(c_tr * k + y_tr):
            idx = np.flatnonzero(c_tr * k + y_tr == g)
            rng.shuffle(idx)
            val[idx[: len(idx) // 5]] = True
        fit = ~val

        def prep(x, y, c):
            si_np = np.array([s_index[int(v)] for v in c], dtype=np.int64)
            return (torch.as_tensor(x, dtype=torch.float32, device=dev), torch.as_tensor(y, device=dev),
                    torch.as_tensor(si_np, device=dev),
                    torch.as_tensor(logp[si_np], dtype=torch.float32, device=dev))

        xf, yf, sf, lpf = prep(x_tr[fit], y_tr[fit], c_tr[fit])
        xv, yv, sv, lpv = prep(x_tr[val], y_tr[val], c_tr[val])
        xe, ye, se, lpe = prep(x_ev, y_ev, c_ev)
        critic = _Critic(xf.shape[1], len(strata) * k, self.hidden).to(dev)
        # torch.optim.Adam's update, written out (constructing a torch optimiser imports torch._dynamo)
        opt = _Adam(critic.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def head(x, si):
            return critic(x).view(len(x), len(strata), k)[torch.arange(len(x), device=x.device), si]

        def rows_by_stratum(si):
            return [torch.nonzero(si == s)[:, 0] for s in torch.unique(si)]

        def evaluate(x, y, si, lp):
            with torch.no_grad():
                g = head(x, si)
                if self.bound == "infonce":
                    return float(self._nce_rows(g, y, si, np.random.default_rng(0), self.batch).mean())
                a, lb = self._terms(g, y, lp, clip=self.bound == "smile")
                return float(self._value(a, lb, rows_by_stratum(si)))

        ema_val = None
        best, best_state, best_epoch, stale = -np.inf, None, 0, 0
        curve = []
        n_fit = len(yf)
        for epoch in range(self.epochs):
            perm = torch.as_tensor(rng.permutation(n_fit), device=dev)
            for start in range(0, n_fit, self.batch):
                b = perm[start : start + self.batch]
                if len(b) < 2:
                    continue
                g = head(xf[b], sf[b])
                if self.bound == "infonce":
                    loss = -self._nce_rows(g, yf[b], sf[b], rng, self.batch).mean()
                else:
                    a, lb = self._terms(g, yf[b], lpf[b], clip=self.bound == "smile")
                    if self.bound == "mine":
                        # Belghazi et al. 2018 §3.2: grad of log E[e^g] uses an EMA denominator
                        batch_mean = torch.exp(lb).mean()
                        ema_val = batch_mean.detach() if ema_val is None else \
                            (1 - self.ema) * ema_val + self.ema * batch_mean.detach()
                        loss = -(a.mean() - batch_mean / ema_val)
                    else:
                        loss = -self._value(a, lb, rows_by_stratum(sf[b]))
                opt.zero_grad()
                loss.backward()
                opt.step()
            v = evaluate(xv, yv, sv, lpv)
            curve.append(v)
            if v > best + 1e-4:
                best, best_epoch, stale = v, epoch, 0
                best_state = {kk: t.clone() for kk, t in critic.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is not None:
            critic.load_state_dict(best_state)
        with torch.no_grad():
            g = head(xe, se)
            if self.bound == "infonce":
                arrays = {"r": self._nce_rows(g, ye, se, rng, self.batch).cpu().numpy().astype(np.float64)}
            elif self.bound == "nwj":
                a, lb = self._terms(g, ye, lpe)
                arrays = {"r": (a - torch.exp(lb - 1.0)).cpu().numpy().astype(np.float64)}
            else:
                a, lb = self._terms(g, ye, lpe, clip=self.bound == "smile")
                arrays = {"a": a.cpu().numpy().astype(np.float64), "lb": lb.cpu().numpy().astype(np.float64)}
        train_value = evaluate(xf, yf, sf, lpf)
        return FoldOutput(arrays=arrays, diagnostics={"heldout_curve": curve, "early_stop_epoch": best_epoch,
                                                      "train_value": train_value})


class InfoNCEEstimator(CriticEstimator):
    """InfoNCE with an MLP critic. Its bound can never exceed log(batch) (van den Oord et al.
    2018), and its shortfall below the MI is not bounded, so its interval is one-sided
    (bound = "lower"); where the estimate nears log(batch) the cap binds and is flagged."""

    name, bound, kind = "infonce", "infonce", MEAN

    def estimate(self, *args, **kwargs):
        res = super().estimate(*args, **kwargs)
        cap = float(np.log(self.batch))
        note = f"InfoNCE is a lower bound capped at log(batch) = {cap:.3f} nats"
        if not res.degenerate and res.value >= 0.8 * cap:
            res.flags.append("capped-log-batch")
            note += "; the estimate is near the cap, so the cap binds: the MI may be much larger"
        res.note = "; ".join(x for x in (res.note, note) if x)
        return res


class WarmCriticEstimator(ProbeEstimator):
    """MINE / NWJ / SMILE on the probe's machinery (same folds, preprocessing, critic ladder).

    Per fold, the probe's ladder picks and fits a critic level on the training rows outside its
    validation split; q(y|z,c) of that fit gives the warm start
        g_y(z) = l_y(z) - o(z) - log p(y|c),
    where l_y are the level's label logits (trainable, initialised at the fit) and o(z) =
    logsumexp_y l_y(z) of the initial fit (a fixed feature). At the start g = log q(y|z,c)/p(y|c),
    the form of the optimum of every bound here (docs/design.md §3), where DV and NWJ (at g + 1)
    equal the probe's bound; the objective then trains it further:
        mine:  DV with the moving-average gradient of Belghazi et al. (2018) §3.2;
        smile: DV with e^g clipped to [e^-tau, e^tau] in the partition term (Song & Ermon 2020);
        nwj:   E[g_y] - e^-1 E_z sum_y p(y|c) e^{g_y}, critic g + 1 (Nguyen et al. 2010).
    Early stopping: on the bound over the validation split, smoothed over epochs (an
    exponential average, so one noisy epoch neither stops training nor is kept), the best
    smoothed epoch's critic restored. The held-out fold is only scored. The learning-curve
    (Richardson) step of the probe's chosen level is added per row, and widens the interval,
    as for the probe.
    """

    name, objective, kind = "mine", "mine", DV
    _needs_critic = True

    def __init__(self, *args, critic_epochs: int = 30, critic_patience: int = 4, critic_lr: float = 1e-3,
                 critic_batch: int = 512, ema: float = 0.01, tau: float = 5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.critic_epochs, self.critic_patience, self.critic_lr = critic_epochs, critic_patience, critic_lr
        self.critic_batch, self.ema, self.tau = critic_batch, ema, tau

    def scheme(self) -> dict:
        return {**super().scheme(), "objective": self.objective, "warm_start": "probe ladder critic"}

    def _finish_fold(self, outs, head, x_ev, y_ev, c_ev):
        from matprobe.mi.probe import _design

        dev = head.dev
        k = int(max(int(head.cell_y.max()), int(np.max(y_ev)), int(head.y_tr.max()))) + 1
        lab = torch.where(head.cell_y[:, None] == torch.arange(k, device=dev)[None, :], 0.0, NEG)  # [cells, k]
        logp_s = torch.logsumexp(head.off[:, :, None] + lab[None], 1).clamp_min(NEG)  # [strata, k] log p(y|c)
        p0 = {kk: v.detach().clone() for kk, v in head.params.items()}
        shift = 1.0 if self.objective == "nwj" else 0.0

        cell_of = cell_of_label(head.off, lab)

        def labels(p, x1, si):
            return label_logits(head._logits(p, x1, head.off[si]), si, lab, cell_of)

        def offset(x1, si):
            """o(z) = logsumexp_y of the initial fit's label logits: fixed, so computed once per row set."""
            with torch.no_grad():
                return torch.logsumexp(labels(p0, x1, si), 1, keepdim=True)

        def critic(p, x1, si, o):
            return labels(p, x1, si) - o - logp_s[si] + shift

        def terms(p, x1, si, y, o):
            g = critic(p, x1, si, o)
            a = g.gather(1, y[:, None])[:, 0]
            if self.objective == "smile":
                g = g.clamp(-self.tau, self.tau)
            return a, torch.logsumexp(g + logp_s[si], 1)

        def value(a, lb, si):
            """The bound over rows, per stratum weighted by its rows."""
            if self.objective == "nwj":
                return float((a - torch.exp(lb - 1.0)).mean())
            total = 0.0
            for s_ in torch.unique(si):
                m = si == s_
                total += float(a[m].mean() - (torch.logsumexp(lb[m], 0) - np.log(int(m.sum())))) * int(m.sum())
            return total / len(a)

        val_rows = torch.as_tensor(np.flatnonzero(head.val), device=dev)
        fit_rows = np.flatnonzero(~head.val)
        xv, sv, yv = head.x_tr[val_rows], head.s_tr[val_rows], head.y_tr[val_rows]
        o_tr = offset(head.x_tr, head.s_tr)
        o_v = o_tr[val_rows]
        p = {kk: v.clone().requires_grad_(True) for kk, v in p0.items()}
        opt = _Adam(p.values(), lr=self.critic_lr)  # torch.optim.Adam's update; no torch._dynamo import
        rng = np.random.default_rng([int(fit_rows.size), 9])
        with torch.no_grad():
            start = value(*terms(p, xv, sv, yv, o_v), sv)
        best_state, smooth, best_smooth, stale, curve = p0, start, start, 0, [start]
        ema_val = None
        for _epoch in range(self.critic_epochs):
            perm = fit_rows[rng.permutation(len(fit_rows))]
            for b0 in range(0, len(perm), self.critic_batch):
                b = torch.as_tensor(perm[b0 : b0 + self.critic_batch], device=dev)
                if len(b) < 2:
                    continue
                a, lb = terms(p, head.x_tr[b], head.s_tr[b], head.y_tr[b], o_tr[b])
                if self.objective == "nwj":
                    loss = -(a - torch.exp(lb - 1.0)).mean()
                elif self.objective == "mine":
                    # Belghazi et al. 2018 §3.2: the gradient of log E[e^g] with the batch mean in
                    # its denominator replaced by an exponential moving average (less biased)
                    batch_mean = torch.exp(lb).mean()
                    ema_val = batch_mean.detach() if ema_val is None else \
                        (1 - self.ema) * ema_val + self.ema * batch_mean.detach()
                    loss = -(a.mean() - batch_mean / ema_val)
                else:
                    loss = -(a.mean() - torch.logsumexp(lb, 0) + np.log(len(b)))
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                v = value(*terms(p, xv, sv, yv, o_v), sv)
            curve.append(v)
            smooth = 0.5 * smooth + 0.5 * v
            if smooth > best_smooth + 1e-4:
                best_smooth, stale = smooth, 0
                best_state = {kk: t.detach().clone() for kk, t in p.items()}
            else:
                stale += 1
                if stale >= self.critic_patience:
                    break
        x1 = _design(x_ev, dev)
        se = head._strata_of(c_ev)
        with torch.no_grad():
            a, lb = terms(best_state, x1, se, torch.as_tensor(y_ev, device=dev), offset(x1, se))
        a, lb = a.cpu().numpy().astype(np.float64), lb.cpu().numpy().astype(np.float64)
        new = []
        for out in outs:
            arrays = {kk: v for kk, v in out.arrays.items() if kk in ("corr", "level_gap")}
            corr = out.arrays.get("corr", 0.0)
            if self.kind == DV:
                arrays["a"], arrays["lb"] = a + corr, lb
            else:
                arrays["r"] = a - np.exp(lb - 1.0) + corr
            diag = {**out.diagnostics, "critic_curve": [float(v) for v in curve],
                    "critic_gain": float(best_smooth - start)}
            new.append(FoldOutput(arrays=arrays, diagnostics=diag))
        return new


def cell_of_label(off: torch.Tensor, lab: torch.Tensor) -> torch.Tensor | None:
    """[strata, labels] the one cell of each label in each stratum (-1: none), or None when a
    stratum has a label with several cells (sub-classes). off: [strata, cells] log-priors, NEG
    outside the stratum; lab: [cells, labels] 0 where the cell has the label, NEG elsewhere."""
    member = (off > NEG / 2)[:, :, None] & (lab == 0)[None]  # [strata, cells, labels]
    count = member.sum(1)
    if bool((count > 1).any()):
        return None
    return torch.where(count > 0, member.float().argmax(1), -1)


def label_logits(logits: torch.Tensor, si: torch.Tensor, lab: torch.Tensor,
                 cell_of: torch.Tensor | None) -> torch.Tensor:
    """[rows, labels] logsumexp over each label's cells of the rows' cell logits (NEG-masked
    outside each row's stratum).

    With one cell per label (`cell_of`) this is a gather: the logsumexp of one finite value and
    values near NEG is that value exactly (exp(NEG) is 0 in float32), so the bits are the same at
    a fraction of the cost (the [rows, cells, labels] logsumexp was half of the warm critics'
    fine-tuning at K = 14). A label without a cell in the row's stratum gets NEG (the logsumexp
    gives about NEG too; either way e^g is 0).
    """
    if cell_of is None:
        return torch.logsumexp(logits[:, :, None] + lab[None], 1)
    idx = cell_of[si]
    return torch.where(idx >= 0, logits.gather(1, idx.clamp_min(0)), NEG)


class MINEEstimator(WarmCriticEstimator):
    name, objective, kind = "mine", "mine", DV


class NWJEstimator(WarmCriticEstimator):
    name, objective, kind = "nwj", "nwj", MEAN


class SMILEEstimator(WarmCriticEstimator):
    name, objective, kind = "smile", "smile", DV


for _cls, _summary in ((MINEEstimator, "Donsker-Varadhan bound with MINE's moving-average gradient, warm-started "
                                       "from the probe ladder's critic"),
                       (NWJEstimator, "Nguyen-Wainwright-Jordan bound, warm-started from the probe ladder's critic"),
                       (InfoNCEEstimator, "InfoNCE critic bound (at most log batch; one-sided interval)"),
                       (SMILEEstimator, "SMILE: DV with a clipped partition term, warm-started from the probe's critic")):
    register_estimator(_cls.name, _cls, _cls.tags, summary=_summary)
