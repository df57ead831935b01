"""Coverage of I(Z;Y|C) and of its strata's entries on two families of strata that differ (issue 22,
forty-first session): the code under test is whatever `matprobe` imports (run it twice with
PYTHONPATH set to two checkouts to compare them, as RESULTS.md does).

  shares  : strata of 50/30/20% of n rows, P(Y=1|C) = 0.5/0.3/0.15, d = 64, each stratum's classes
            apart by U(0, 1.6) along a direction of its own (`tests/test_one_sided_strata._draw`).
  f2      : strata of 100/300/600/1,000 rows, balanced classes, separations 1.8/0/0.9/0.5 along each
            stratum's own axis, d = 16 (the twenty-eighth session's outside family F2, rebuilt).

Truths by quadrature (`tests/test_one_sided_strata._binary_shift_mi`). Default `mp.mi` settings.

    PYTHONPATH=src python experiments/benchmarks/conditional_strata_bench.py --family f2 --draws 30 --out f2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
import matprobe as mp  # noqa: E402
from test_one_sided_strata import _binary_shift_mi, _draw  # noqa: E402

F2_SIZES, F2_SEPARATIONS = (100, 300, 600, 1000), (1.8, 0.0, 0.9, 0.5)


def f2_draw(draw: int):
    rng = np.random.default_rng(1000 + draw)
    c = np.repeat(np.arange(4), F2_SIZES)
    y = (rng.random(len(c)) < 0.5).astype(np.int64)
    z = rng.normal(size=(len(c), 16))
    for k, sep in enumerate(F2_SEPARATIONS):
        m = c == k
        z[m, k] += y[m] * sep
    truth_c = [_binary_shift_mi(0.5, s) if s > 0 else 0.0 for s in F2_SEPARATIONS]
    truth = sum(n * t for n, t in zip(F2_SIZES, truth_c)) / sum(F2_SIZES)
    return z.astype(np.float32), y, c, truth, truth_c


def run(family: str, draws: int) -> list[dict]:
    rows = []
    for draw in range(draws):
        if family == "f2":
            z, y, c, truth, truth_c = f2_draw(draw)
        else:
            z, y, c, truth = _draw(draw)
            truth_c = None
        res = mp.mi(z, factors={"C": c.astype(str), "Y": y.astype(str)}, progress=False)
        term = next(e for name, e in res.terms["probe"] if name.startswith("I(Z;Y|"))
        strata = {str(s.given["C"] if isinstance(s.given, dict) else s.given): [s.estimate, s.ci_low, s.ci_high, s.bound]
                  for s in term.strata}
        rows.append({"draw": draw, "truth": truth, "truth_c": truth_c, "estimate": term.value, "ci_low": term.ci_low,
                     "ci_high": term.ci_high, "bound": term.bound, "flags": term.flags, "strata": strata})
    return rows


def summary(rows: list[dict]) -> str:
    two = [r for r in rows if r["bound"] == "two-sided"]
    out = [f"term: two-sided covered {sum(r['ci_low'] <= r['truth'] <= r['ci_high'] for r in two)}/{len(two)}, "
           f"one-sided held {sum(r['ci_low'] <= r['truth'] for r in rows if r['bound'] != 'two-sided')}/"
           f"{len(rows) - len(two)}, median |rel err| "
           f"{statistics.median(abs(r['estimate'] - r['truth']) / r['truth'] for r in rows):.3f}"]
    if rows and rows[0]["truth_c"] is not None:
        for k, t in enumerate(rows[0]["truth_c"]):
            ent = [r["strata"][str(k)] for r in rows]
            out.append(f"stratum {k} (truth {t:.4f}): covered {sum(e[1] <= t <= e[2] for e in ent)}/{len(ent)}, "
                       f"mean {statistics.mean(e[0] for e in ent):.4f}, median width "
                       f"{statistics.median(e[2] - e[1] for e in ent):.4f}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=("shares", "f2"), default="shares")
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = run(args.family, args.draws)
    if args.out:
        args.out.write_text(json.dumps(rows))
    print(summary(rows))


if __name__ == "__main__":
    main()
