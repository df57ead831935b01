"""Rank-deficient rows: Z = G A with G ~ N(0, I_r) and A [r, d] Gaussian (rows in an r-dim subspace of
Z), Y = 1[G w + e > 0], e ~ N(0, 1) (a probit on one direction of the subspace). Truth by quadrature:
I(Z;Y) = log 2 - E h(Phi(s)), s ~ N(0, |w|^2), nats. Default `mp.mi` on each draw; one CSV row per draw
(estimate, interval, bound, flags, truth, whether it holds).

    python experiments/benchmarks/rank_deficient_bench.py --draws 20 --out rank_deficient.csv
    python experiments/benchmarks/rank_deficient_bench.py --draws 10 --rounding bfloat16 --out rank_deficient_bf16.csv
"""
from __future__ import annotations

import argparse
import csv
import time

import numpy as np
from scipy import integrate, stats


def truth(sigma: float) -> float:
    def integrand(s):
        p = stats.norm.cdf(s)
        h = -(p * np.log(p) if p > 0 else 0.0) - ((1 - p) * np.log(1 - p) if p < 1 else 0.0)
        return h * stats.norm.pdf(s, scale=sigma)
    eh, _ = integrate.quad(integrand, -12 * sigma, 12 * sigma, limit=400)
    return float(np.log(2) - eh)


def draw(seed: int, n: int, d: int, r: int, w_scale: float, rounding: str = "float32"):
    rng = np.random.default_rng([seed, d, r])
    g = rng.standard_normal((n, r))
    w = w_scale * rng.standard_normal(r) / np.sqrt(r)
    y = (g @ w + rng.standard_normal(n) > 0).astype(int)
    z = (g @ rng.standard_normal((r, d))).astype(np.float32)
    if rounding != "float32":  # stored at a lower precision (a model run in bf16 or fp16), read as float32
        import torch

        z = torch.from_numpy(z).to(getattr(torch, rounding)).float().numpy()
    return z, y, truth(float(np.linalg.norm(w)))


def main() -> None:
    import torch

    import matprobe as mp

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--shapes", default="256x5,256x10,1024x10,1024x30", help="d x r, comma-separated")
    ap.add_argument("--w-scale", type=float, default=2.0, help="|w| about this (a probit slope)")
    ap.add_argument("--rounding", default="float32", choices=("float32", "bfloat16", "float16"),
                    help="the precision the rows are stored at before matprobe reads them as float32")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.out, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["d", "r", "n", "draw", "truth", "estimate", "ci_low", "ci_high", "bound", "flags", "holds", "cpu_s"])
        for shape in args.shapes.split(","):
            d, r = map(int, shape.split("x"))
            for k in range(args.draws):
                z, y, t = draw(k, args.n, d, r, args.w_scale, args.rounding)
                t0 = time.process_time()
                e = mp.mi(z, {"Y": y}, progress=False).terms["probe"][0][1]
                holds = e.ci_low <= t and (e.bound == "lower" or t <= e.ci_high)
                out.writerow([d, r, args.n, k, f"{t:.5f}", f"{e.value:.5f}", f"{e.ci_low:.5f}", f"{e.ci_high:.5f}",
                              e.bound, ";".join(e.flags), int(holds), f"{time.process_time() - t0:.1f}"])
                fh.flush()


if __name__ == "__main__":
    main()
