"""Learning curve of the probe's critic levels on one ground-truth task (issue 22).

Where does the probe's shortfall at n = 2k come from on heavy-tailed classes: the critic family,
or the sample it learns from? One fold is fitted on the first n rows of a large sample for
growing n and scored on 20,000 further rows (so the scoring noise is small), with the linear
ladder alone and with the default ladder: the held-out value before ("raw") and after the
learning-curve step ("corrected"), relative to the truth. A family that holds the posterior
climbs to the truth as n grows; a misspecified one levels off below it.

    python experiments/benchmarks/learning_curve_bench.py --family student-t --draw 0

The task is the calibration benchmark's family draw (`calibration_bench.family_task`); the
features are the default label-free preprocessing, fitted once on all rows.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calibration_bench as cb  # noqa: E402

from matprobe.mi.prep import label_free_features  # noqa: E402
from matprobe.mi.probe import ProbeEstimator  # noqa: E402

torch.set_num_threads(1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="student-t")
    ap.add_argument("--draw", type=int, default=0)
    ap.add_argument("--ns", default="500,1000,2000,4000,8000,16000,32000", help="training rows of the fold")
    ap.add_argument("--n-eval", type=int, default=20_000)
    a = ap.parse_args(argv)
    ns = [int(v) for v in a.ns.split(",")]
    task, _ = cb.family_task(a.family, a.draw, 1024)
    truth = task.truth(100_000)["I(Z;Y)"][0]
    z, lab = task.sample(max(ns) + a.n_eval, seed=99)
    y = lab["Y"]
    x = label_free_features(z, 64, True, seed=0).astype(np.float32)
    x_ev, y_ev = x[-a.n_eval:], y[-a.n_eval:]
    zeros_ev = np.zeros(a.n_eval, dtype=np.int64)
    print(f"{a.family} draw {a.draw}: truth {truth:.4f} nats; relative error of the held-out value")
    print(f"{'ladder':10s} {'n':>6s} {'raw':>8s} {'corrected':>10s}  level")
    for ladder in (("linear",), ("linear", "nonlinear")):
        for n in ns:
            zeros = np.zeros(n, dtype=np.int64)
            out = ProbeEstimator(ladder=ladder).fit_fold_seeds(x[:n], y[:n], zeros, zeros, x_ev, y_ev, zeros_ev, [0])[0]
            r, step = out.arrays["r"], out.arrays["corr"]
            print(f"{ladder[-1]:10s} {n:6d} {(r - step).mean() / truth - 1:+8.1%} {r.mean() / truth - 1:+10.1%}  "
                  f"{out.diagnostics.get('level')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
