"""CPU cost of portable numerics (issue 20): each demo stage with the machine's own kernels
and with matprobe.numerics.PORTABLE_ENV, alternating, in fresh processes.

Usage: python experiments/benchmarks/portable_numerics_bench.py RUN_DIR [--rounds 2]
RUN_DIR is a finished `matprobe demo --quick` run (its data, base checkpoint and a store are
reused). Prints, per stage and mode, the CPU seconds (user + system) of each round; CPU time,
not wall time, because the project machine is shared.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
sys.path.insert(0, SRC)

from matprobe import numerics  # noqa: E402

STAGES = {
    # 15 steps of the quick demo's fine-tuning on the Related split of the main target
    "finetune": """
import json, sys, torch
from matprobe import numerics
if numerics.started_portable(): numerics.apply_portable()
torch.set_num_threads(1)
from matprobe.data import load_manifest
from matprobe.extract.finetune import finetune
run, out = sys.argv[1], sys.argv[2]
samples = [s for s in load_manifest(run + '/data/related.jsonl') if s.split == 'train']
finetune(run + '/checkpoints/base', samples, out, steps=15, batch_size=32, lr=4e-3, seed=0, rendering='grid')
""",
    # extraction of one store (320 items) from a fine-tuned checkpoint
    "extract": """
import sys, torch
from matprobe import numerics
if numerics.started_portable(): numerics.apply_portable()
torch.set_num_threads(1)
from matprobe.extract.runner import ExtractConfig, extract
run, out = sys.argv[1], sys.argv[2]
extract(ExtractConfig(ckpt=run + '/checkpoints/related-s0', data=run + '/data/related.jsonl', rendering='grid',
                      out=out + '/s.h5', layers='-1', pools='last', batch_size=32, dtype='fp32', device='cpu'))
""",
    # one MI cell: the quick demo's chain (1 seed x 4 folds) on one store
    "mi": """
import sys, torch
from matprobe import numerics
if numerics.started_portable(): numerics.apply_portable()
torch.set_num_threads(1)
from matprobe.pipeline import mi_step
run, out = sys.argv[1], sys.argv[2]
mi_step(run + '/stores/related-s0.h5', ['modality', 'anatomy', 'task', 'label'], '3', 'last', out + '/mi.json',
        seeds=1, folds=4)
""",
}


def cpu_seconds(code: str, run: str, env: dict) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([sys.executable, "-c", code, run, tmp], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    native = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV
              and k not in ("GLIBC_TUNABLES", numerics.MARKER)}
    # one thread in both modes: only the kernels differ
    native.update(PYTHONPATH=SRC, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    portable = numerics.portable_environment(native)[0]
    for stage, code in STAGES.items():
        times: dict[str, list[float]] = {"native": [], "portable": []}
        for _ in range(args.rounds):
            for mode, env in (("native", native), ("portable", portable)):
                times[mode].append(cpu_seconds(code, args.run, env))
        print(stage, {m: [round(t, 1) for t in v] for m, v in times.items()}, flush=True)


if __name__ == "__main__":
    main()
