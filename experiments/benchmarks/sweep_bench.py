"""Sweep benchmark (issue 7): batched seeds vs sequential runs, and the wall time of a layer sweep.

    .venv/bin/python experiments/benchmarks/sweep_bench.py seeds [--n 20000] [--d 4096]
    .venv/bin/python experiments/benchmarks/sweep_bench.py sweep [--n 20000] [--d 4096]
        [--layers 2] [--pools 2] [--jobs 2] [--grid-layers 32] [--grid-pools 2] [--workdir DIR]

`seeds`: one cell (a MAT chain, M 2 x A 6|M x T 4|M,A, 16-d signal in d dims; 3 terms) with
the default reduction (PCA 64, quantile-to-normal, 5 folds): five sequential single-seed runs
(what five separate `matprobe mi --seeds 1 --seed s` calls do: each draws its own folds and
refits their preprocessing and probes) against one five-seed run (the seeds of a fold share
its preprocessing, penalty search and refit; each seed fits its own half split). Prints
seconds, the ratio, and each term's estimates with the truth.

`sweep`: writes a store with `--layers` x `--pools` cells of [n, d] float32 features (in row
chunks, so the full 32 x 2 grid at n = 20k, d = 4096, 21 GB, never sits in memory) and runs
`run_sweep` over them with `--jobs` processes; prints the wall time per cell and the wall time
extrapolated linearly to the `--grid-layers` x `--grid-pools` grid (equal to the measured time
when the whole grid is written).
Timings depend on the machine's load; RESULTS.md says what ran where.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from matprobe.mi.groundtruth import chain_task

torch.set_num_threads(1)

TASK = dict(sizes=(2, 6, 4), separations=(1.0, 1.0, 1.0), signal_dim=16, noise_scale=0.3, seed=11)


def make_cell(n, d, seed=0):
    task = chain_task(d=d, **TASK)
    z, f = task.sample(n, seed=seed)
    return task, z, f


def bench_seeds(args):
    from matprobe.data.entropy import joint_codes
    from matprobe.mi.base import make_plan
    from matprobe.mi.probe import ProbeEstimator

    task, z, f = make_cell(args.n, args.d)
    order = ["M", "A", "T"]
    truth = task.truth(200_000)

    def run(seeds, seed):
        est = ProbeEstimator(seeds=seeds, seed=seed)  # defaults: 5 folds, PCA 64, gaussianize
        plan = make_plan(z, joint_codes([f[k] for k in order]), est.folds, est.pca, est.gaussianize, seed)
        vals = []
        for j, target in enumerate(order):
            c = joint_codes([f[g] for g in order[:j]]) if j else None
            sub = joint_codes([f[g] for g in order[j + 1:]]) if j < 2 else None
            e = est.estimate(z, f[target], c, sub=sub, plan=plan)
            vals.append((e.value, e.ci_low, e.ci_high))
        return vals

    t0 = time.perf_counter()
    seq = [run(1, s) for s in range(5)]
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    five = run(5, 0)
    t_five = time.perf_counter() - t0
    print(f"seeds bench: n = {args.n}, d = {args.d}, 3 terms, 5 folds, PCA 64, 1 torch thread")
    print(f"  5 sequential single-seed runs      {t_seq:8.1f} s")
    print(f"  1 five-seed run                    {t_five:8.1f} s   ratio {t_seq / t_five:5.2f}x faster")
    names = ["I(Z;M)", "I(Z;A|M)", "I(Z;T|M,A)"]
    for j, name in enumerate(names):
        seq_vals = [s[j][0] for s in seq]
        seq_mean = float(np.mean(seq_vals))
        b = five[j]
        tr, se = truth[name]
        print(f"  {name:12s} truth {tr:.4f} (MC SE {se:.4f}) nats | sequential mean {seq_mean:.4f} "
              f"(sd {np.std(seq_vals, ddof=1):.4f}) | five-seed {b[0]:.4f} [{b[1]:.4f}, {b[2]:.4f}] "
              f"| five-seed - sequential {b[0] - seq_mean:+.4f} nats")


def bench_sweep(args):
    from matprobe.data.model import resolve_factor
    from matprobe.mi.sweep import run_sweep
    from matprobe.store import EmbeddingStore

    work = Path(args.workdir or tempfile.mkdtemp(prefix="sweep_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "bench.h5"
    t0 = time.perf_counter()
    if not store.exists():
        task = chain_task(d=args.d, **TASK)
        z, f = task.sample(args.n, seed=0)  # same labels and signal in every cell
        labels = {"M": [f"m{v}" for v in f["M"]], "A": [f"a{v}" for v in f["A"]],
                  "T": [f"t{v}" for v in f["T"]]}
        cells = [(li, pi, pool) for li in range(args.layers) for pi, pool in enumerate(("last", "image")[: args.pools])]
        frame = pd.DataFrame({"id": [f"s{i:06d}" for i in range(args.n)],
                              **{resolve_factor(k): v for k, v in labels.items()}})
        dims = {(str(li), pool): args.d for li, _, pool in cells}
        # written in row chunks, so a 32 x 2 grid (21 GB of features) never sits in memory
        with EmbeddingStore.create(store, frame, {"checkpoint": "bench"}, dims, overwrite=True) as st:
            for k, r0 in enumerate(range(0, args.n, 2000)):
                rows = np.arange(r0, min(args.n, r0 + 2000))
                feats = {}
                for li, pi, pool in cells:
                    # extra noise of s.d. 0.05 (layer + pool index) per cell: a different cell, lower MI
                    noise = np.random.default_rng([li, pi, k]).standard_normal((len(rows), args.d), dtype=np.float32)
                    feats[(str(li), pool)] = z[rows] + np.float32(0.05 * (li + pi)) * noise
                st.append(rows, feats)
            st.finalize()
        del z
    t_write = time.perf_counter() - t0
    out = work / "sweep.csv"
    t0 = time.perf_counter()
    res = run_sweep([store], out, factors=("M", "A", "T"), jobs=args.jobs, overwrite=True, progress=True)
    wall = time.perf_counter() - t0
    cells = res.n_cells
    grid = args.grid_layers * args.grid_pools
    per_cell = wall / cells
    print(f"sweep bench: n = {args.n}, d = {args.d}, {cells} cells x 3 terms, jobs {args.jobs}, "
          f"5 seeds, 5 folds, PCA 64; store written in {t_write:.0f} s")
    print(f"  wall {wall:.1f} s for {cells} cells = {per_cell:.1f} s per cell (wall, {args.jobs} processes)")
    print(f"  extrapolated to {args.grid_layers} x {args.grid_pools} = {grid} cells: "
          f"{per_cell * grid / 60:.1f} min (target <= 30 min on CPU)")
    print(res.table[["layer", "pool", "term", "estimate", "ci_low", "ci_high", "seconds"]].to_string(index=False))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["seeds", "sweep"])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--pools", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--grid-layers", type=int, default=32)
    ap.add_argument("--grid-pools", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    bench_seeds(args) if args.part == "seeds" else bench_sweep(args)


if __name__ == "__main__":
    main()
