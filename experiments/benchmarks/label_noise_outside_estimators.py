"""Label noise at n = 2k read by estimators written outside matprobe (issue 22, forty-sixth session).

Y is the argmax of K linear scores of Z ~ N(0, I_d) (weights N(0, 0.8^2)), flipped to another class
at random with probability eps; truth I(Z;Y) by Monte Carlo of the exact posterior (400k rows). Each
estimator is cross-fitted (5 folds) and reads the mean held-out log q(y|z) - log p(y):
- `sklearn`: scikit-learn's logistic regression, C chosen on an inner split of the training rows;
- `isotonic`: an isotonic map of y on that critic's score (K = 2), the direction from all training
  rows; `isotonic-split`: the direction and the map from separate halves;
- `floored`: a logistic critic with a fitted floor, q = (1 - e) softmax(W z) + e / K (the label-noise
  model, which holds the truth as the weights grow), L-BFGS with the penalty chosen on an inner split.
The question: is matprobe's shortfall on these families its own, or the sample's at this n?

    python experiments/benchmarks/label_noise_outside_estimators.py --k 2 --eps 0.3 --n 2000 --draws 6
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

torch.set_num_threads(1)


def draw_task(seed: int, n: int, k: int, d: int, eps: float):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.8, (d, k))

    def sample(m, r):
        z = r.standard_normal((m, d))
        top = (z @ w).argmax(1)
        other = (top + r.integers(1, k, m)) % k
        return z, np.where(r.uniform(size=m) < eps, other, top), top

    z, y, _ = sample(n, rng)
    zz, yy, tt = sample(400_000, np.random.default_rng(seed + 999))
    p = np.where(yy == tt, 1 - eps, eps / (k - 1))
    py = np.bincount(yy, minlength=k) / len(yy)
    return z.astype(np.float32), y, float(np.mean(np.log(p) - np.log(py[yy])))


def _log_q(xa, w, g, k, floor):
    ls = torch.log_softmax(xa @ w, 1)
    if not floor:
        return ls
    e = torch.sigmoid(g)
    return torch.logaddexp(torch.log1p(-e) + ls, torch.log(e / k).expand_as(ls))


def _fit_floored(x, y, k, lam, start=None):
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    xa = torch.cat([x, torch.ones(len(x), 1)], 1)
    w = torch.zeros(x.shape[1] + 1, k) if start is None else start[0].clone()
    g = torch.tensor([-3.0]) if start is None else start[1].clone()
    w.requires_grad_(True), g.requires_grad_(True)
    opt = torch.optim.LBFGS([w, g], max_iter=300, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -_log_q(xa, w, g, k, True)[torch.arange(len(y)), y].mean() + lam * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), g.detach()


def _log_prior(y_tr, y_ev, k):
    py = (np.bincount(y_tr, minlength=k) + 0.5) / (len(y_tr) + 0.5 * k)
    return np.log(py[y_ev])


def estimates(z, y, k, seed: int) -> dict[str, float]:
    n = len(y)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(np.arange(n) % 5)
    out = {name: np.zeros(n) for name in ("sklearn", "isotonic", "isotonic-split", "floored")}
    for f in range(5):
        tr, ev = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        inner = np.random.default_rng([seed, f]).uniform(size=len(tr)) < 0.3
        fit_rows, val_rows = tr[~inner], tr[inner]
        base = _log_prior(y[tr], y[ev], k)
        best_c = max((0.01, 0.1, 1.0, 10.0), key=lambda c: LogisticRegression(C=c, max_iter=2000).fit(
            z[fit_rows], y[fit_rows]).predict_log_proba(z[val_rows])[np.arange(len(val_rows)), y[val_rows]].mean())
        model = LogisticRegression(C=best_c, max_iter=2000).fit(z[tr], y[tr])
        out["sklearn"][ev] = model.predict_log_proba(z[ev])[np.arange(len(ev)), y[ev]] - base
        if k == 2:
            iso = IsotonicRegression(y_min=0.02, y_max=0.98, out_of_bounds="clip")
            p = iso.fit(model.decision_function(z[tr]), y[tr]).predict(model.decision_function(z[ev]))
            out["isotonic"][ev] = np.where(y[ev] == 1, np.log(p), np.log(1 - p)) - base
            half = np.random.default_rng([seed, f, 1]).uniform(size=len(tr)) < 0.5
            direction = LogisticRegression(C=best_c, max_iter=2000).fit(z[tr[~half]], y[tr[~half]])
            p = iso.fit(direction.decision_function(z[tr[half]]), y[tr[half]]).predict(direction.decision_function(z[ev]))
            out["isotonic-split"][ev] = np.where(y[ev] == 1, np.log(p), np.log(1 - p)) - base
        best, start = (np.inf, None), None
        for lam in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):  # strongest first, each fit warm-starting the next
            start = _fit_floored(z[fit_rows], y[fit_rows], k, lam, start)
            xa = torch.cat([torch.as_tensor(z[val_rows]), torch.ones(len(val_rows), 1)], 1)
            loss = -_log_q(xa, *start, k, True)[torch.arange(len(val_rows)), torch.as_tensor(y[val_rows])].mean().item()
            best = min(best, (loss, lam))
        w = _fit_floored(z[tr], y[tr], k, best[1])
        xa = torch.cat([torch.as_tensor(z[ev]), torch.ones(len(ev), 1)], 1)
        out["floored"][ev] = _log_q(xa, *w, k, True)[torch.arange(len(ev)), torch.as_tensor(y[ev])].numpy() - base
    return {name: float(v.mean()) for name, v in out.items() if k == 2 or not name.startswith("isotonic")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--draws", type=int, default=6)
    a = ap.parse_args(argv)
    for draw in range(a.draws):
        z, y, truth = draw_task(draw, a.n, a.k, a.d, a.eps)
        got = estimates(z, y, a.k, draw)
        print(f"draw {draw}: truth {truth:.4f}; " + ", ".join(f"{k} {v:.4f} ({v / truth:.2f})" for k, v in got.items()),
              flush=True)


if __name__ == "__main__":
    main()
