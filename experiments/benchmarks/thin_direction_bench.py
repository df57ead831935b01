"""Classes separated along thin directions of Z: a family whose shape the calibration grid did not
choose (issue 22, thirtieth session). Three strata M, three classes Y per stratum, Z in d = 16 with
a shared covariance A A^T, A = I + G / sqrt(d) (G standard normal: a random covariance with some
eigenvalues near 0, so classes can differ along directions of little variance), class means of
s.d. `signal` / sqrt(2) per coordinate, strata offset by `sep` along random directions. The truth
I(Z;Y|M) is a 200k-draw Monte Carlo mean of the exact log posterior ratio (numpy only).

    python experiments/benchmarks/thin_direction_bench.py --draws 10 --sep 0 30 --out thin.csv

Each row: draw, sep, n, the truth and the default chain's I(Z;Y|M) with its interval and flags,
whether it covers, and the smallest eigenvalue of A A^T.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys

import numpy as np
import torch
from scipy.special import logsumexp

from matprobe.mi import chain_terms


def draw_task(seed: int, d: int = 16, k: int = 3, strata: int = 3, signal: float = 0.4, sep: float = 0.0):
    rng = np.random.default_rng(seed)
    offsets = rng.standard_normal((strata, d))
    offsets *= sep / np.linalg.norm(offsets, axis=1, keepdims=True)
    offsets[0] = 0.0
    means = rng.standard_normal((strata, k, d)) * signal / np.sqrt(2)
    a = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)

    def sample(n, r):
        m, y = r.integers(0, strata, n), r.integers(0, k, n)
        return offsets[m] + means[m, y] + r.standard_normal((n, d)) @ a.T, m, y

    def truth(n_mc=200_000):
        z, m, y = sample(n_mc, np.random.default_rng(seed + 10**6))
        precision = np.linalg.inv(a @ a.T)
        diff = z[:, None, :] - offsets[m][:, None, :] - means[m]
        ll = -0.5 * np.einsum("nkd,de,nke->nk", diff, precision, diff)
        return float(np.mean(ll[np.arange(n_mc), y] - logsumexp(ll, axis=1) + np.log(k)))

    return sample, truth, float(np.linalg.eigvalsh(a @ a.T)[0])


@contextlib.contextmanager
def csv_appender(path, fields):
    """Yields write(row): rows appended to the CSV at `path`, its header written only when the file
    is new, each row flushed as it is written (a stopped run keeps every finished row)."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        if new:
            writer.writeheader()

        def write(row):
            writer.writerow(row)
            fh.flush()

        yield write


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--sep", type=float, nargs="+", default=[0.0, 30.0])
    ap.add_argument("--out", default="thin_direction_results.csv")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    fields = ["draw", "sep", "n", "truth", "estimate", "ci_low", "ci_high", "bound", "flags", "covered", "min_eig"]
    with csv_appender(args.out, fields) as write:
        for sep in args.sep:
            for draw in range(args.draws):
                sample, truth, min_eig = draw_task(draw, sep=sep)
                z, m, y = sample(args.n, np.random.default_rng(draw))
                t = truth()
                (_, _), (_, e) = chain_terms(z, {"M": m, "Y": y}).terms["probe"]
                row = dict(draw=draw, sep=sep, n=args.n, truth=t, estimate=e.value, ci_low=e.ci_low, ci_high=e.ci_high,
                           bound=e.bound, flags=";".join(e.flags), covered=e.ci_low <= t <= e.ci_high, min_eig=min_eig)
                write(row)
                print(f"sep {sep:g} draw {draw}: truth {t:.4f} est {e.value:.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}] "
                      f"{e.bound} {','.join(e.flags)} {'covers' if row['covered'] else 'MISSES'}", file=sys.stderr)


if __name__ == "__main__":
    main()
