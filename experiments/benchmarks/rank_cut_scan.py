"""Does the label-free reduction cut the PCA at a numerical rank (`prep.numerical_rank`) on the
calibration benchmark's families? Three draws of every family at n = 2k (and 20k with `--n20k`),
both reductions (with and without the quantile map); per line: family, n, draw, d, "cut" or "ok",
and per reduction (components kept, asked, the largest consecutive variance ratio among the
leading components, the last component's variance over a median coordinate's).

    python experiments/benchmarks/rank_cut_scan.py --n20k > rank_cut_scan_i22_s47.log
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import calibration_bench as cb  # noqa: E402

from matprobe.mi import prep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n20k", action="store_true", help="n = 20k as well as 2k")
    args = ap.parse_args()
    torch.set_num_threads(1)
    families = (list(cb.FAMILIES) + list(cb.EXTRA_FAMILIES) + list(cb.UNDER_FAMILIES) + list(cb.COMBINED_FAMILIES)
                + list(cb.NULL_FAMILIES) + list(cb.SPIRAL_FAMILIES))
    calls = []
    numerical_rank = prep.numerical_rank

    def recorded(v, m, raw=None, seed=0, gap=prep.RANK_GAP):
        k = numerical_rank(v, m, raw, seed, gap)
        v = np.asarray(v.cpu() if hasattr(v, "cpu") else v, float)
        calls.append((k, len(v), round(float(np.max(v[:-1] / v[1:])), 1), round(float(v[-1] / m), 3)))
        return k

    prep.numerical_rank = recorded
    for family in families:
        for n in (2000, 20000) if args.n20k else (2000,):
            for draw in range(3):
                task, _ = cb.family_task(family, draw, 1024)
                z, _ = task.sample(n, seed=draw)
                calls.clear()
                for gaussianize in (True, False):
                    prep.label_free_reduction(z, 64, gaussianize, seed=0)
                cut = any(k < asked for k, asked, _, _ in calls)
                print(family, n, draw, z.shape[1], "cut" if cut else "ok", calls, flush=True)


if __name__ == "__main__":
    main()
