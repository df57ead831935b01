"""Dependence outside the class means: two families whose shape an outside statistician chose
(issue 22, thirty-first session), where the default probe read confident false nulls.

- "rotated-covariance": K = 3 equal-mean classes in d dims; Z is N(0, I) except a block of
  `--block` (default 4) random coordinates where class y has covariance R_y diag(lambda) R_y^T, R_y a random rotation
  per class, log lambda ~ N(0, `spread`^2). With `--rotate` the whole space is also turned by one
  random rotation (the block then touches every coordinate). Truth: a 200k-draw Monte Carlo mean
  of the exact log posterior ratio in the block (numpy only).
- "norm-threshold": Z ~ N(0, I_d), Y = 1{|Z|^2 > t} flipped with probability `flip`, t the median
  of chi^2_d scaled by a per-draw factor. Truth in closed form: H(Y) - H_b(flip).

    python experiments/benchmarks/second_moment_bench.py --family rotated-covariance --d 16 32 \
        --draws 10 --n 2000 --out second_moment.csv

`--no-second-moment-check` runs the probe as it was before that check (the thirty-first session's
default). Each row: family, draw, d, n, rotate, the truth and the default probe's I(Z;Y) with its interval,
bound and flags, and whether the statement holds (two-sided: truth inside; one-sided: truth above
its low end).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import chi2, ortho_group

from matprobe.mi import chain_terms

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from thin_direction_bench import csv_appender  # noqa: E402


def _entropy_nats(p):
    p = np.clip(p, 1e-300, 1.0)
    return float(-(p * np.log(p)).sum())


def rotated_covariance(seed: int, d: int, k: int = 3, block: int = 4, spread: float = 0.7, rotate: bool = False):
    rng = np.random.default_rng(seed)
    coords = np.sort(rng.choice(d, block, replace=False))
    lam = np.exp(spread * rng.standard_normal(block))
    roots = [ortho_group.rvs(block, random_state=rng) * np.sqrt(lam) for _ in range(k)]  # R_y diag(sqrt lam)
    turn = ortho_group.rvs(d, random_state=rng) if rotate else np.eye(d)

    def sample_block(n, r, y):
        e = r.standard_normal((n, block))
        return np.einsum("nb,ncb->nc", e, np.stack(roots)[y])

    def sample(n, r):
        y = r.integers(0, k, n)
        z = r.standard_normal((n, d))
        z[:, coords] = sample_block(n, r, y)
        return z @ turn.T, y

    def truth(n_mc=200_000):
        r = np.random.default_rng(seed + 10**6)
        y = r.integers(0, k, n_mc)
        b = sample_block(n_mc, r, y)
        ll = []
        for root in roots:
            cov = root @ root.T
            prec = np.linalg.inv(cov)
            ll.append(-0.5 * np.einsum("nb,bc,nc->n", b, prec, b) - 0.5 * np.linalg.slogdet(cov)[1])
        ll = np.stack(ll, 1)
        return float(np.mean(ll[np.arange(n_mc), y] - logsumexp(ll, axis=1) + np.log(k)))

    return sample, truth


def norm_threshold(seed: int, d: int, flip: float = 0.1):
    rng = np.random.default_rng(seed)
    t = chi2.ppf(rng.uniform(0.3, 0.7), d)
    q = chi2.sf(t, d)

    def sample(n, r):
        z = r.standard_normal((n, d))
        y = ((z**2).sum(1) > t).astype(int)
        y = np.where(r.uniform(size=n) < flip, 1 - y, y)
        return z, y

    def truth():
        p1 = (1 - flip) * q + flip * (1 - q)
        return _entropy_nats(np.array([p1, 1 - p1])) - _entropy_nats(np.array([flip, 1 - flip]))

    return sample, truth


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["rotated-covariance", "norm-threshold"], default="rotated-covariance")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--first-draw", type=int, default=0)
    ap.add_argument("--n", type=int, nargs="+", default=[2000])
    ap.add_argument("--d", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--rotate", action="store_true", help="rotated-covariance: turn the whole space as well")
    ap.add_argument("--block", type=int, default=4, help="rotated-covariance: the block's dimension (default 4)")
    ap.add_argument("--no-second-moment-check", action="store_true",
                    help="the probe without its second-moment check (the code before it, for comparison)")
    ap.add_argument("--label", default="", help="a free-text column naming the code measured")
    ap.add_argument("--out", default="second_moment_results.csv")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    kwargs = {"second_moment_check": False} if args.no_second_moment_check else {}
    fields = ["family", "draw", "d", "n", "block", "rotate", "truth", "estimate", "ci_low", "ci_high", "bound", "flags",
              "holds", "code"]
    with csv_appender(args.out, fields) as write:
        for n in args.n:
            for d in args.d:
                for draw in range(args.first_draw, args.first_draw + args.draws):
                    if args.family == "rotated-covariance":
                        sample, truth = rotated_covariance(draw, d, block=args.block, rotate=args.rotate)
                    else:
                        sample, truth = norm_threshold(draw, d)
                    z, y = sample(n, np.random.default_rng([draw, 1]))
                    t = truth()
                    (_, e), = chain_terms(z, {"Y": y}, **kwargs).terms["probe"]
                    holds = (e.ci_low <= t <= e.ci_high) if e.bound == "two-sided" else e.ci_low <= t
                    row = dict(family=args.family, draw=draw, d=d, n=n, block=args.block if args.family == "rotated-covariance" else "",
                               rotate=args.rotate, truth=t, estimate=e.value,
                               ci_low=e.ci_low, ci_high=e.ci_high, bound=e.bound, flags=";".join(e.flags),
                               holds=holds, code=args.label)
                    write(row)
                    print(f"{args.family} d {d} n {n} draw {draw}: truth {t:.4f} est {e.value:.4f} "
                          f"[{e.ci_low:.4f}, {e.ci_high:.4f}] {e.bound} {','.join(e.flags)} "
                          f"{'holds' if holds else 'FAILS'}", file=sys.stderr)


if __name__ == "__main__":
    main()
