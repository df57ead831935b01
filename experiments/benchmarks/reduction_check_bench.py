"""The reduction's residual test on the calibration grids' draws (issue 22, eleventh session).

    python experiments/benchmarks/reduction_check_bench.py CSV D_MASSIVE OUT [FAMILIES]

For every draw of a committed calibration CSV with d > 64 (where PCA-64 reduces), redraws the
task and sample exactly as `calibration_bench.py` did, builds the chain's fold plan, and runs
`mi.reduction_check` for each scored term; the test never changes an estimate, so what the flag
`pca-dropped-signal` would do is decided from the CSV's estimate and upper end
(`ResidualTest.verdict`, as `MIEstimatorBase.estimate` does): nothing, a raised upper end, or a
one-sided interval; `covered_after` applies it to the CSV's interval. Writes one row per term
(z, gain, fire, one_sided, slack, covered, covered_after) to OUT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration_bench import family_task, read  # noqa: E402

from matprobe.data.entropy import joint_codes  # noqa: E402
from matprobe.mi.base import make_plan  # noqa: E402

torch.set_num_threads(1)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    csv, d_massive, out = argv[0], int(argv[1]), argv[2]
    df = read(csv)
    df = df[df["d"] > 64]
    if len(argv) > 3:
        df = df[df["family"].isin(argv[3].split(","))]
    rows = []
    for (fam, draw, n), g in df.groupby(["family", "draw", "n"], sort=False):
        task, _ = family_task(fam, int(draw), d_massive)
        z, f = task.sample(int(n), seed=int(draw))
        codes = {k: np.unique(v, return_inverse=True)[1] for k, v in f.items()}
        order = list(task.names)
        groups = joint_codes([codes[k] for k in order])
        plan = make_plan(z, groups, 5, 64, True, 0)
        plan.transformed(z, 0)
        for j, name in enumerate(order):
            term = g[g["term"].str.startswith(f"I(Z;{name}")]
            if not len(term):
                continue
            r = term.iloc[0]
            c = joint_codes([codes[k] for k in order[:j]]) if j else None
            t = plan.residual.test(codes[name], c, np.ones(len(z), bool), groups=groups)
            v = t.verdict(r["estimate"], r["ci_high"])
            high = r["h_upper"] if v is not None and v.one_sided else r["ci_high"] + (v.slack if v else 0.0)
            se = r["truth_se"]
            after = bool(r["ci_low"] - 2 * se <= r["truth"] <= min(high, r["h_upper"]) + 2 * se)
            rows.append(dict(family=fam, draw=draw, n=n, term=r["term"], truth=r["truth"], estimate=r["estimate"],
                             ci_low=r["ci_low"], ci_high=r["ci_high"], flags=r["flags"], z=t.z, gain=t.gain,
                             fire=v is not None, one_sided=bool(v and v.one_sided), slack=v.slack if v else 0.0,
                             covered=r["covered"], covered_after=after))
            print(f"{fam} {draw} {n} {r['term']} z={t.z:.1f} gain={t.gain:.4f} fire={v is not None} "
                  f"one_sided={bool(v and v.one_sided)} covered {r['covered']} -> {after}", flush=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
