"""The calibration benchmark's families whose folds have fewer than 2 training rows per coordinate
of Z (`base.FOLD_PCA_ROWS_PER_COORDINATE`; at n = 2k: d = 1,024-4,096), where the reduction's
residual test takes each fold's residual against a PCA of its training rows alone
(`prep.fold_kept_bases`). One JSON line per scored term
(`calibration_bench.run_draw`: estimate, interval, bound, flags, truth, pca_used, cpu_s); run it
on two trees (PYTHONPATH) and compare.

    python experiments/benchmarks/fold_residual_families.py --draws 10 --out fold_residual_families.jsonl
    python experiments/benchmarks/fold_residual_families.py --families massive,small-massive,under-wide \
        --d-massive 1024 --out fold_residual_families_d1024.jsonl
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import calibration_bench as cb  # noqa: E402

FAMILIES = "massive-decay,t-massive,massive-many,under-wide-4,massive"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=FAMILIES)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--d-massive", type=int, default=4096, help="Z's width in the massive family")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.out, "w") as fh:
        for family in args.families.split(","):
            for draw in range(args.draws):
                for row in cb.run_draw(family, draw, args.n, args.d_massive, 5, 200_000, 0.95):
                    fh.write(json.dumps({k: v.item() if hasattr(v, "item") else v for k, v in row.items()}) + "\n")
                fh.flush()


if __name__ == "__main__":
    main()
