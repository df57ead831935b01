"""The probe's spread over independent samples of one task against the efficiency bound (issue 22).

`groundtruth.efficient_se` claims no regular estimator that learns the densities from n rows has a
standard error below sd(pointwise log-ratio) / sqrt(n). This holds one task of a calibration family
fixed (task seed = the family's draw), draws `--reps` independent samples at each n, runs the
default chain estimator on each, and reports per n: the spread of the estimates and of the oracle
(the mean of the exact pointwise log-ratios on the same rows) in units of the efficient s.e., the
mean signed error, the RMSE in those units, and the coverage of the 95% intervals over the samples.

    python experiments/benchmarks/efficiency_bench.py --family small --draws 0,1 --reps 40
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from calibration_bench import family_task  # noqa: E402

from matprobe.mi import chain_terms  # noqa: E402
from matprobe.mi.groundtruth import efficient_se  # noqa: E402

torch.set_num_threads(1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="small")
    ap.add_argument("--draws", default="0,1", help="comma list of task draws (task seed = 100 + draw)")
    ap.add_argument("--ns", default="2000,5000,20000")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--n-mc", type=int, default=200_000)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    rows = []
    for draw in (int(x) for x in a.draws.split(",")):
        task, terms = family_task(a.family, draw, 1024)
        truth = task.truth(a.n_mc)
        for n in (int(x) for x in a.ns.split(",")):
            eff = efficient_se(task, n, a.n_mc)
            t0 = time.process_time()
            for rep in range(a.reps):
                seed = 1000 + rep  # samples the calibration grid does not use
                z, f = task.sample(n, seed=seed)
                res = chain_terms(z, f, order=list(task.names), seeds=5, folds=5, ci_level=0.95, direct=False,
                                  difference=False)
                oracle = task.oracle_terms(n, seed=seed)
                for name, e in res.terms["probe"]:
                    if name in terms:
                        rows.append({"family": a.family, "draw": draw, "n": n, "rep": rep, "term": name,
                                     "truth": truth[name][0], "eff_se": eff[name], "estimate": e.value,
                                     "oracle": float(oracle[name].mean()), "ci_low": e.ci_low,
                                     "ci_high": e.ci_high})
            print(f"draw {draw} n={n}: {a.reps} samples in {time.process_time() - t0:.0f} CPU-s", flush=True)
    df = pd.DataFrame(rows)
    if a.out:
        df.to_csv(a.out, index=False)
    out = []
    for (draw, n, term), g in df.groupby(["draw", "n", "term"]):
        se, t = g["eff_se"].iloc[0], g["truth"].iloc[0]
        out.append({"draw": draw, "n": n, "term": term, "truth": t, "eff_se": se,
                    "sd_estimate/eff_se": g["estimate"].std(ddof=1) / se,
                    "sd_oracle/eff_se": g["oracle"].std(ddof=1) / se,
                    "mean_err/eff_se": (g["estimate"].mean() - t) / se,
                    "rmse/eff_se": float(np.sqrt(((g["estimate"] - t) ** 2).mean())) / se,
                    "coverage": float(((g["ci_low"] <= t) & (t <= g["ci_high"])).mean())})
    print(pd.DataFrame(out).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
