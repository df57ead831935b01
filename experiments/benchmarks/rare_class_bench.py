"""Rare classes: Gaussian classes with one class at 80% of the rows and nine sharing the rest, down to
0.5% (the outside statistician's "extreme imbalance" family, forty-second session; RESULTS.md,
issue 22). The rare classes hold a few per cent of the rows but a much larger share of H(Y), so an
estimate low on them is low by more than their rows suggest.

Rows: the classes' counts fixed at their shares of n (stratified sampling). Truth: H(Y) - E[-log
p(y|z)] with the exact posterior (shared identity covariance), by Monte Carlo on `--n-mc` fresh
rows, its standard error beside it. Each draw: class means at `--separation` along random unit
vectors of an 8-dimensional signal subspace of R^d, Z = mean + N(0, I_d).

    python experiments/benchmarks/rare_class_bench.py --draws 20 --n 2000 --out rare.csv

prints coverage (two-sided covered, one-sided held) and the median |relative error|, and writes one
row per draw: estimate, interval, flags, the share of rows and of H(Y) in the critic's small cells.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.special import logsumexp

# one class at 80%, five at 3.9% (about 78 rows each at n = 2,000: above the critic's 65 inputs) and
# four rare ones (1.2% to 0.5%, 10-24 rows) holding 2.9% of the rows, under the 5% line of the
# "small-cells" rule by rows, and 14% of H(Y)
PRIORS = np.array([0.8] + [0.04] * 5 + [0.012, 0.008, 0.005, 0.005])


class RareClassTask:
    def __init__(self, draw: int, d: int = 64, separation: float = 2.0, signal_dim: int = 8):
        rng = np.random.default_rng(10_000 + draw)
        self.pi = PRIORS / PRIORS.sum()
        basis = np.linalg.qr(rng.standard_normal((d, signal_dim)))[0]
        directions = rng.standard_normal((len(self.pi), signal_dim))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        self.means = separation * directions @ basis.T  # [k, d]
        self.d = d

    def sample(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        # the classes' row counts fixed at their shares (at least 10, two per fold): a multinomial
        # count under 10 is a refusal, not an estimate
        counts = np.maximum(np.round(self.pi * n).astype(int), 10)
        counts[0] += n - counts.sum()
        y = rng.permutation(np.repeat(np.arange(len(self.pi)), counts))
        z = self.means[y] + rng.standard_normal((n, self.d))
        return z.astype(np.float32), y

    def truth(self, n_mc: int = 400_000, seed: int = 987_654, chunk: int = 100_000) -> tuple[float, float]:
        """(I(Z;Y) in nats, its Monte Carlo standard error)."""
        rng = np.random.default_rng(seed)
        h_y = float(-(self.pi * np.log(self.pi)).sum())
        losses = []
        for start in range(0, n_mc, chunk):
            m = min(chunk, n_mc - start)
            y = rng.choice(len(self.pi), size=m, p=self.pi)
            z = self.means[y] + rng.standard_normal((m, self.d))
            # log pi_k - |z - mu_k|^2 / 2, the |z|^2 term cancels in the posterior
            logits = np.log(self.pi)[None, :] + z @ self.means.T - 0.5 * (self.means ** 2).sum(axis=1)[None, :]
            losses.append(logsumexp(logits, axis=1) - logits[np.arange(m), y])
        loss = np.concatenate(losses)
        return h_y - float(loss.mean()), float(loss.std() / np.sqrt(n_mc))


def small_shares(y: np.ndarray, inputs: int, floor: int = 20) -> tuple[float, float]:
    """(share of rows, share of the label entropy) in classes with fewer rows than max(floor, inputs)."""
    counts = np.bincount(y)
    p = counts / counts.sum()
    small = (counts > 0) & (counts < max(floor, inputs))
    ent = np.where(counts > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return float(p[small].sum()), float(ent[small].sum() / ent.sum())


def run_draw(draw: int, n: int, d: int, separation: float, n_mc: int, seeds: int, folds: int) -> dict:
    import matprobe as mp

    task = RareClassTask(draw, d=d, separation=separation)
    z, y = task.sample(n, seed=draw)
    truth, se = task.truth(n_mc)
    t0 = time.process_time()
    res = mp.mi(z, {"Y": y}, seeds=seeds, folds=folds, progress=False)
    cpu = time.process_time() - t0
    e = res.terms["probe"][0][1]
    rows_share, entropy_share = small_shares(y, min(d, 64) + 1)
    one_sided = e.bound == "lower"
    return {"draw": draw, "n": n, "d": d, "separation": separation, "truth": truth, "truth_se": se,
            "estimate": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high, "h_upper": e.h_upper,
            "flags": ",".join(e.flags), "one_sided": one_sided,
            "covered": bool(e.ci_low - 2 * se <= truth <= e.ci_high + 2 * se),
            "rel_err": (e.value - truth) / truth, "small_rows_share": rows_share,
            "small_entropy_share": entropy_share, "cpu_s": round(cpu, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--first-draw", type=int, default=0)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--separation", type=float, default=2.0)
    ap.add_argument("--n-mc", type=int, default=400_000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    for draw in range(args.first_draw, args.first_draw + args.draws):
        rows.append(run_draw(draw, args.n, args.d, args.separation, args.n_mc, args.seeds, args.folds))
        r = rows[-1]
        print(f"draw {draw}: truth {r['truth']:.4f} est {r['estimate']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}] "
              f"{'covered' if r['covered'] else 'MISSED'} flags={r['flags'] or '-'} small rows "
              f"{r['small_rows_share']:.1%} entropy {r['small_entropy_share']:.1%} ({r['cpu_s']} s)", flush=True)
    df = pd.DataFrame(rows)
    if args.out:
        df.to_csv(args.out, index=False)
    two = df[~df["one_sided"]]
    one = df[df["one_sided"]]
    print(f"two-sided covered {int(two['covered'].sum())}/{len(two)}, one-sided held {int(one['covered'].sum())}/{len(one)}, "
          f"all {int(df['covered'].sum())}/{len(df)}; median |rel err| {df['rel_err'].abs().median():.1%}, "
          f"mean signed {df['rel_err'].mean():+.1%}")


if __name__ == "__main__":
    main()
