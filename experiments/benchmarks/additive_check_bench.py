"""Coverage and error of I(Z;Y) on two shapes whose Bayes logits level off (issue 22, forty-second
session): the code under test is whatever `matprobe` imports (run it twice with PYTHONPATH set to
two checkouts to compare them, as RESULTS.md does).

  laplace-e1    : 2 balanced classes 1.0 apart along 1 of 32 coordinates, iid Laplace noise (unit variance)
  laplace-e1s2  : the same, 2.0 apart
  laplace-k4    : 1.0 apart along each of 4 coordinates
  laplace-k4s07 : 0.7 apart along each of 4 coordinates
  laplace-k8    : 0.5 apart along each of 8 coordinates
  laplace-k4-rot: laplace-k4 seen through a random rotation of the 32 coordinates (a new one per draw)
  noise-K2/K3/K4: Gaussian rows (d = 32), Y the argmax of a random linear score (a new one per
                  draw) flipped to a uniform other class with probability 0.1 / 0.2 / 0.3

Truths: Laplace by Monte Carlo on 2M rows of the exact log-likelihood ratio (the rotation changes
nothing); label noise in closed form given P(Y), itself by Monte Carlo on 2M rows. Default `mp.mi`
settings, n = 2,000.

    PYTHONPATH=src python experiments/benchmarks/additive_check_bench.py --family laplace-k4 --draws 20 --out k4.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import matprobe as mp

B = 1 / np.sqrt(2)  # Laplace scale of unit variance
LAPLACE = {"laplace-e1": [1.0], "laplace-e1s2": [2.0], "laplace-k4": [1.0] * 4, "laplace-k4s07": [0.7] * 4,
           "laplace-k8": [0.5] * 8, "laplace-k4-rot": [1.0] * 4}
NOISE = {"noise-K2": (2, 0.1), "noise-K3": (3, 0.2), "noise-K4": (4, 0.3)}
D = 32


def laplace_truth(shift, m=2_000_000, seed=0) -> float:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, m)
    z = rng.laplace(0, B, (m, len(shift))) + y[:, None] * shift
    llr = ((np.abs(z) - np.abs(z - shift)) / B).sum(1)
    return float(np.log(2) - np.mean(np.logaddexp(0, -(2 * y - 1) * llr)))


def laplace_draw(family, draw, n):
    shift = np.asarray(LAPLACE[family])
    rng = np.random.default_rng(100 + draw)
    y = rng.integers(0, 2, n)
    z = rng.laplace(0, B, (n, D))
    z[:, : len(shift)] += y[:, None] * shift
    if family.endswith("-rot"):
        q, _ = np.linalg.qr(np.random.default_rng(7 + draw).normal(size=(D, D)))
        z = z @ q
    return z.astype(np.float32), y


def noise_draw(family, draw, n, m=2_000_000):
    k, eps = NOISE[family]
    a = np.random.default_rng(5000 + draw).normal(size=(D, k))
    rng = np.random.default_rng(100 + draw)
    z = rng.normal(size=(n, D))
    y0 = np.argmax(z @ a, 1)
    y = np.where(rng.random(n) < eps, (y0 + rng.integers(1, k, n)) % k, y0)
    p0 = np.bincount(np.argmax(np.random.default_rng(0).normal(size=(m, D)) @ a, 1), minlength=k) / m
    py = (1 - eps) * p0 + eps * (1 - p0) / (k - 1)
    truth = float(-(py * np.log(py)).sum() + (1 - eps) * np.log(1 - eps) + eps * np.log(eps / (k - 1)))
    return z.astype(np.float32), y, truth


def run(family: str, draws: int, n: int, out: Path) -> list[dict]:
    torch.set_num_threads(1)
    done = {json.loads(line)["draw"] for line in out.read_text().splitlines()} if out.exists() else set()
    truth = laplace_truth(np.asarray(LAPLACE[family])) if family in LAPLACE else None
    for draw in range(draws):
        if draw in done:
            continue
        if family in LAPLACE:
            z, y = laplace_draw(family, draw, n)
            t = truth
        else:
            z, y, t = noise_draw(family, draw, n)
        start = time.process_time()
        e = mp.mi(z, factors={"Y": y.astype(str)}, progress=False).terms["probe"][0][1]
        row = {"family": family, "draw": draw, "n": n, "truth": t, "estimate": e.value, "ci_low": e.ci_low,
               "ci_high": e.ci_high, "bound": e.bound, "flags": e.flags,
               "holds": bool(e.ci_low <= t <= e.ci_high), "cpu_s": round(time.process_time() - start, 2)}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return [json.loads(line) for line in out.read_text().splitlines()]


def summary(rows: list[dict]) -> str:
    two = [r for r in rows if r["bound"] != "lower"]
    one = [r for r in rows if r["bound"] == "lower"]
    errs = [abs(r["estimate"] - r["truth"]) / r["truth"] for r in rows]
    signed = [(r["estimate"] - r["truth"]) / r["truth"] for r in rows]
    return (f"{rows[0]['family']}: truth {rows[0]['truth']:.4f} (first draw); two-sided covered "
            f"{sum(r['holds'] for r in two)}/{len(two)}, one-sided held {sum(r['holds'] for r in one)}/{len(one)}; "
            f"median |error| {statistics.median(errs):.1%}, mean signed {statistics.mean(signed):+.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=[*LAPLACE, *NOISE], required=True)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, one per draw; draws already there are skipped")
    a = ap.parse_args()
    print(summary(run(a.family, a.draws, a.n, a.out)))


if __name__ == "__main__":
    main()
