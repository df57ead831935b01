"""The issue-22 chain on a GPU, timed, beside the same chain on that machine's CPU (issue 22).

    python experiments/benchmarks/chain_device_bench.py [--device cuda] [--peer 4bd6a36] [--cli]

The chain of `chain_speed_bench.py`: `chain_task((2, 4, 4), d=4096, signal_dim=16,
noise_scale=0.3, seed=9)`, n = 20,000 rows (sample seed 0), `chain_terms(z, f, seeds=5, folds=5,
ci_level=0.95, direct=True, difference=False)` after a small warm-up call, each run in a fresh
process:
- this tree with `device=<--device>` (default cuda): wall seconds (the GPU's work is waited for
  before the clock stops) and the process's CPU seconds;
- this tree on the CPU, one torch thread, as `chain_speed_bench.py` runs it: CPU seconds;
- with --peer, the round-1 code on the CPU, one thread (the issue's 0.25x reference), CPU seconds;
- with --cli, `matprobe mi STORE --factors M,A,T --device <--device>` on a store of the same
  rows (EmbeddingStore.from_arrays), wall seconds: the user's path, output written and exit 0.
Prints each run's seconds and estimates, and how far the device's estimates sit from the CPU's
(the two are not bit for bit: float32 reductions add in another order on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUND_ONE = "4bd6a36"

# run in a fresh process with SRC first on sys.path; prints "WALL|CPU|estimates"
CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
device = sys.argv[2]
import torch
torch.set_num_threads(1)
from matprobe.mi.chain import chain_terms
from matprobe.mi.groundtruth import chain_task
task = chain_task((2, 4, 4), d=4096, signal_dim=16, noise_scale=0.3, seed=9)
z, f = task.sample(20000, seed=0)
kw = {} if device == "peer" else {"device": device}
chain_terms(z[:600], {k: v[:600] for k, v in f.items()}, seeds=1, folds=2, **kw)  # warm-up
def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()
sync()
w0, t0 = time.perf_counter(), time.process_time()
res = chain_terms(z, f, seeds=5, folds=5, ci_level=0.95, direct=True, difference=False, **kw)
sync()
wall, cpu = time.perf_counter() - w0, time.process_time() - t0
est = " ".join(f"{name}={e.value:.4f}[{e.ci_low:.4f},{e.ci_high:.4f}]" for name, e in res.terms["probe"])
print(f"{wall:.2f}|{cpu:.2f}|{est}")
"""


def run_child(src: Path, device: str, timeout: float) -> tuple[float, float, str]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(src), device], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{device} run failed:\n{out.stderr[-4000:]}")
    wall, cpu, est = out.stdout.strip().splitlines()[-1].split("|", 2)
    return float(wall), float(cpu), est


def parse(est: str) -> dict[str, tuple[float, float, float]]:
    got = {}
    for item in est.split():
        name, rest = item.split("=", 1)
        value, ci = rest.split("[", 1)
        lo, hi = ci.rstrip("]").split(",")
        got[name] = (float(value), float(lo), float(hi))
    return got


def cli_run(device: str, workdir: Path, timeout: float) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np

    from matprobe.mi.groundtruth import chain_task
    from matprobe.store import EmbeddingStore

    task = chain_task((2, 4, 4), d=4096, signal_dim=16, noise_scale=0.3, seed=9)
    z, f = task.sample(20000, seed=0)
    names = list(f)  # the task's factors in chain order
    labels = {col: np.array([f"{col[0].upper()}{v}" for v in f[name]])
              for col, name in zip(("modality", "anatomy", "task"), names)}
    labels["label"] = np.array(["no", "yes"])[np.zeros(len(z), dtype=int)]
    store = workdir / "chain.h5"
    EmbeddingStore.from_arrays(store, [f"s{i}" for i in range(len(z))], labels, {("4", "last"): z}).close()
    out = workdir / "mi.json"
    cmd = [sys.executable, "-m", "matprobe.cli", "mi", str(store), "--factors", "M,A,T", "--device", device,
           "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    w0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.perf_counter() - w0
    print(f"cli: `matprobe mi --factors M,A,T --device {device}` exit {done.returncode} in {wall:.1f} s wall")
    print(done.stdout[-3000:], done.stderr[-3000:])
    if out.exists():
        doc = json.loads(out.read_text())
        print("cli output written:", out.name, sorted(doc)[:8])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--peer", default=None,
                    help=f"also the peer on the CPU: a commit (the issue's: {ROUND_ONE}) or a folder holding its "
                         "src/ (`git archive` it there when the machine has no .git, as the device copy has not)")
    ap.add_argument("--cli", action="store_true", help="also `matprobe mi --device` on a store of the same rows")
    ap.add_argument("--timeout", type=float, default=400)
    a = ap.parse_args()
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__}, {name}, {os.cpu_count()} CPUs", flush=True)
    dev_wall, dev_cpu, dev_est = run_child(ROOT / "src", a.device, a.timeout)
    print(f"this tree on {a.device}: {dev_wall:.1f} s wall, {dev_cpu:.1f} CPU s\n  {dev_est}", flush=True)
    cpu_wall, cpu_cpu, cpu_est = run_child(ROOT / "src", "cpu", a.timeout)
    print(f"this tree on cpu (1 thread): {cpu_wall:.1f} s wall, {cpu_cpu:.1f} CPU s\n  {cpu_est}", flush=True)
    d, c = parse(dev_est), parse(cpu_est)
    for term in c:
        width = c[term][2] - c[term][1]
        print(f"  {term}: {a.device} - cpu = {d[term][0] - c[term][0]:+.4f} nats "
              f"({(d[term][0] - c[term][0]) / width:+.2f} of the cpu interval's width)")
    print(f"wall: {a.device} / cpu = {dev_wall / cpu_wall:.3f}", flush=True)
    if a.peer:
        with tempfile.TemporaryDirectory() as tmp:
            if Path(a.peer, "src").is_dir():
                peer_src = Path(a.peer, "src")
            else:
                archive = subprocess.run(["git", "archive", a.peer, "src"], cwd=ROOT, capture_output=True,
                                         check=True).stdout
                tarfile.open(fileobj=BytesIO(archive)).extractall(tmp, filter="data")
                peer_src = Path(tmp) / "src"
            p_wall, p_cpu, p_est = run_child(peer_src, "peer", a.timeout)
        print(f"{a.peer} on cpu (1 thread): {p_wall:.1f} s wall, {p_cpu:.1f} CPU s\n  {p_est}")
        print(f"CPU s: this tree cpu / {a.peer} = {cpu_cpu / p_cpu:.3f}; "
              f"wall: this tree on {a.device} / {a.peer} cpu = {dev_wall / p_wall:.3f}", flush=True)
    if a.cli:
        with tempfile.TemporaryDirectory() as tmp:
            cli_run(a.device, Path(tmp), a.timeout)


if __name__ == "__main__":
    main()
