"""`compare` on items seen several times (issue 22, forty-sixth session): coverage of ΔI's interval.

Two families, each draw a new task:
- `copies`: 400 items with 3 labels (uniform), embedded twice in d = 16 (class means at 0.35 and
  0.22 x N(0, I) per coordinate, identity noise per item), each item seen 3 times as identical rows,
  rows shuffled. Truth of each side: the one-row MI by Monte Carlo of the exact posterior (200k
  rows, `tests/test_grouped_folds._truth`); ΔI's truth is their difference.
- `null-stores`: two stores (A: 16 columns, B: 2) of 300 items seen 3 times with 0.01 noise,
  modality independent of Z, the item in the image column (`tests/test_grouped_compare._null_stores`);
  ΔI = 0.

    PYTHONPATH=src python experiments/benchmarks/grouped_compare_bench.py --family copies --draws 24 --out F.csv
    PYTHONPATH=src python experiments/benchmarks/grouped_compare_bench.py --family copies --row-bootstrap ...

--row-bootstrap keeps the grouped folds but draws ΔI's bootstrap by row (what the group bootstrap
adds). Run it with another commit's `src` on PYTHONPATH to read that code (before the forty-sixth
session `compare` grouped nothing). One CSV line per draw, appended as each finishes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
torch.set_num_threads(1)


def copies_draw(draw: int) -> dict:
    from matprobe.mi.compare import compare_arrays
    from test_grouped_folds import _truth

    rng = np.random.default_rng(500 + draw)
    items, copies, d, k = 400, 3, 16, 3
    y_item = rng.integers(0, k, items)
    ma = rng.standard_normal((k, d)) * 0.35
    mb = rng.standard_normal((k, d)) * 0.22
    za_i, zb_i = ma[y_item] + rng.standard_normal((items, d)), mb[y_item] + rng.standard_normal((items, d))
    item = rng.permutation(np.repeat(np.arange(items), copies))
    za, zb, y = za_i[item].astype(np.float32), zb_i[item].astype(np.float32), y_item[item]
    ta, tb = _truth(ma)[0], _truth(mb)[0]
    t0 = time.process_time()
    sa, sb, dd = compare_arrays(za, zb, y)
    return {"truth_a": ta, "truth_b": tb, "truth": ta - tb, "a": sa["estimate"], "a_low": sa["ci_low"],
            "a_high": sa["ci_high"], "b": sb["estimate"], "delta": dd.delta, "ci_low": dd.ci_low,
            "ci_high": dd.ci_high, "cpu_s": time.process_time() - t0}


def null_stores_draw(draw: int) -> dict:
    from matprobe.mi.compare import compare_stores
    from test_grouped_compare import _null_stores

    folder = Path(tempfile.mkdtemp())
    a, b = _null_stores(folder, draw)
    t0 = time.process_time()
    comp = compare_stores(a, b, term="M", factors=["M"], seeds=1)
    d = comp.difference
    return {"truth_a": 0.0, "truth_b": 0.0, "truth": 0.0, "a": comp.side_a["estimate"], "a_low": comp.side_a["ci_low"],
            "a_high": comp.side_a["ci_high"], "b": comp.side_b["estimate"], "delta": d.delta, "ci_low": d.ci_low,
            "ci_high": d.ci_high, "cpu_s": time.process_time() - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=("copies", "null-stores"), default="copies")
    ap.add_argument("--draws", type=int, default=24)
    ap.add_argument("--first-draw", type=int, default=0)
    ap.add_argument("--row-bootstrap", action="store_true", help="grouped folds, ΔI's bootstrap by row")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.row_bootstrap:
        import matprobe.mi.compare as compare

        real = compare._paired_sides

        def by_row(*args, **kwargs):
            kwargs["units"] = None
            return real(*args, **kwargs)

        compare._paired_sides = by_row
    run = copies_draw if a.family == "copies" else null_stores_draw
    for draw in range(a.first_draw, a.first_draw + a.draws):
        row = {"family": a.family, "draw": draw, "row_bootstrap": a.row_bootstrap, **run(draw)}
        row["covered"] = bool(row["ci_low"] <= row["truth"] <= row["ci_high"])
        pd.DataFrame([row]).to_csv(a.out, mode="a", header=not Path(a.out).exists(), index=False)
        print(f"{a.family} {draw}: ΔI {row['delta']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] "
              f"truth {row['truth']:+.4f} covered {row['covered']}", flush=True)
    df = pd.read_csv(a.out)
    df = df[(df["family"] == a.family) & (df["row_bootstrap"] == a.row_bootstrap)]
    print(f"{a.family}: ΔI covered {int(df['covered'].sum())}/{len(df)}, median width "
          f"{(df['ci_high'] - df['ci_low']).median():.4f}, median |A - truth_A| / truth_A "
          f"{((df['a'] - df['truth_a']).abs() / df['truth_a'].where(df['truth_a'] > 0)).median():.3f}")


if __name__ == "__main__":
    main()
