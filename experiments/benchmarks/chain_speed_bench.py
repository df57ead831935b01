"""The chain at CrossMed scale against the round-1 code (issue 22): CPU seconds, side by side.

    python experiments/benchmarks/chain_speed_bench.py [--pairs 3] [--peer 4bd6a36]

Exports the peer commit (`git archive`, round 1 by default) to a temporary directory and, for
each pair, runs the same chain in two fresh processes, the peer's code first: `chain_task((2, 4,
4), d=4096, signal_dim=16, noise_scale=0.3, seed=9)`, n = 20,000 rows (sample seed 0),
`chain_terms(z, f, seeds=5, folds=5, ci_level=0.95, direct=True, difference=False)` after a small
warm-up call. Prints each run's CPU seconds (the process's own, not wall time: the machine may be
shared), the ratio of each pair and its median, and each code's estimates. The target is a ratio
<= 0.25 (RESULTS.md, issue 22).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUND_ONE = "4bd6a36"  # the reference code

# run in a fresh process with SRC first on sys.path; prints "CPU_SECONDS|estimates"
CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from matprobe.mi.chain import chain_terms
from matprobe.mi.groundtruth import chain_task
task = chain_task((2, 4, 4), d=4096, signal_dim=16, noise_scale=0.3, seed=9)
z, f = task.sample(20000, seed=0)
chain_terms(z[:600], {k: v[:600] for k, v in f.items()}, seeds=1, folds=2)  # warm-up
t0 = time.process_time()
res = chain_terms(z, f, seeds=5, folds=5, ci_level=0.95, direct=True, difference=False)
cpu = time.process_time() - t0
print(f"{cpu:.2f}|" + " ".join(f"{name} {e.value:.4f}" for name, e in res.terms["probe"]))
"""


def run(src: Path) -> tuple[float, str]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(src)], capture_output=True, text=True, check=True)
    cpu, estimates = out.stdout.strip().splitlines()[-1].split("|", 1)
    return float(cpu), estimates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--peer", default=ROUND_ONE, help="the commit to compare against (round 1)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", a.peer, "src"], cwd=ROOT, capture_output=True, check=True).stdout
        tarfile.open(fileobj=BytesIO(archive)).extractall(tmp, filter="data")
        peer_src = Path(tmp) / "src"
        ratios = []
        for i in range(a.pairs):
            peer_cpu, peer_est = run(peer_src)
            own_cpu, own_est = run(ROOT / "src")
            ratios.append(own_cpu / peer_cpu)
            print(f"pair {i + 1}: {a.peer} {peer_cpu:.1f} CPU s, this tree {own_cpu:.1f} CPU s, "
                  f"ratio {ratios[-1]:.3f}", flush=True)
        print(f"estimates: {a.peer}: {peer_est}; this tree: {own_est}")
        line = f"ratio this tree / {a.peer}: median {statistics.median(ratios):.3f} over {a.pairs} pairs"
        if a.peer == ROUND_ONE:  # the target is against round 1; against another commit it is an A/B
            line += (f" (target <= 0.25: {'met' if statistics.median(ratios) <= 0.25 else 'missed'}; "
                     f"{sum(r <= 0.25 for r in ratios)} of {a.pairs} pairs at or under it)")
        print(line)


if __name__ == "__main__":
    main()
