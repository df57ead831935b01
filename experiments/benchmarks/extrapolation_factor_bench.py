"""How far the probe's learning-curve step falls short, per task family (issue 22).

The probe's default estimate is the held-out value at the fold's n training rows plus one
Richardson step, I(n) + (I(n) - I(n/2)), which is exact when the critic's excess log-loss falls
like 1/n. For each draw this runs the default estimator with and without the step
(`extrapolate=False`) on the same rows, recovers I(n/2) = 2 I(n) - I_corrected, and reports the
factor the step would need to reach the truth: (truth - I(n)) / (I(n) - I(n/2)). A factor near
1 says the 1/n rate holds; a factor f > 1 says the excess falls more slowly, like n^-alpha with
2^alpha = 1 + 1/f (f = 2.41 is n^-1/2).

    python experiments/benchmarks/extrapolation_factor_bench.py --families mixture-4,K50-t --draws 0:5 --n 2000 \
        --out experiments/benchmarks/extrapolation_factor_results.csv

Each row: the family draw of `calibration_bench.family_task`, its Monte-Carlo truth, the estimate
without the step (`plain`), with it (`corrected`), and the derived `half`, `step` and
`needed_factor`. Rows are appended as each draw finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calibration_bench as cb  # noqa: E402

from matprobe.mi import chain_terms  # noqa: E402

torch.set_num_threads(1)


def one_draw(family: str, draw: int, n: int, n_mc: int) -> dict:
    task, terms = cb.family_task(family, draw, 4096)
    z, f = task.sample(n, seed=draw)
    row = {"family": family, "draw": draw, "n": n, "term": terms[0], "truth": task.truth(n_mc)[terms[0]][0]}
    for name, extrapolate in (("corrected", True), ("plain", False)):
        res = chain_terms(z, f, order=list(task.names), seeds=5, folds=5, direct=False, difference=False, pca=64,
                          extrapolate=extrapolate)
        e = dict(res.terms["probe"])[terms[0]]
        raw = e.diagnostics.get("raw")  # before any clipping at 0 or at the entropy cap
        row[name] = float(raw[0]) if raw else float(e.value)
    row["half"] = 2 * row["plain"] - row["corrected"]
    row["step"] = row["plain"] - row["half"]
    row["needed_factor"] = (row["truth"] - row["plain"]) / row["step"] if row["step"] else float("nan")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", required=True, help="comma list of calibration_bench families")
    ap.add_argument("--draws", default="0:5", help="first:last+1")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--n-mc", type=int, default=200_000)
    ap.add_argument("--out", default=None, help="CSV to append rows to")
    a = ap.parse_args()
    first, stop = map(int, a.draws.split(":"))
    rows = []
    for family in a.families.split(","):
        for draw in range(first, stop):
            row = one_draw(family, draw, a.n, a.n_mc)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.out:
                pd.DataFrame([row]).to_csv(a.out, mode="a", header=not os.path.exists(a.out), index=False)
    df = pd.DataFrame(rows)
    df["rel_plain"] = (df["plain"] - df["truth"]) / df["truth"]
    df["rel_corrected"] = (df["corrected"] - df["truth"]) / df["truth"]
    print(df.groupby("family")[["rel_plain", "rel_corrected", "needed_factor"]].median().round(3).to_string())


if __name__ == "__main__":
    main()
