"""MI benchmark: matprobe's estimators vs peers on exact ground-truth tasks (one run, same data).

Run in the benchmark venv (peers are benchmark-only extras, see RESULTS.md):
    .venv-bench/bin/python experiments/benchmarks/mi_bench.py [--tasks 1,2] [--peers bmi-mine,bmi-infonce,bmi-ksg,mist-smile,sklearn]
        [--estimators probe] [--seeds 5] [--out experiments/benchmarks/mi_bench_results.csv]

Prints one line per (task, term, estimator): truth (nats, MC SE), estimate, 90% interval,
relative error |Î - I| / I, absolute error (nats), whether the interval covers the truth,
how many seeds' own intervals cover it, and wall time (s). Rows are merged into --out per
task (rows of the same task and estimator are replaced), so the probe and the peers can run
as two processes, one per core. Peers see one-hot labels; their conditional terms are chain differences
I(Z; Y,C) - I(Z; C), as a user of those libraries would compute them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from matprobe.data.entropy import joint_codes
from matprobe.mi import chain_terms
from matprobe.mi.groundtruth import (
    chain_task,
    many_class_task,
    massive_task,
    mixture_task,
    null_task,
    single_factor_task,
    student_t_task,
)

torch.set_num_threads(1)

# (name, task, n): d in {16, 256, 4096}, K in {2, 4, 14}, n in {5k, 20k}, linear and nonlinear
NS = 0.3  # noise s.d. off the signal subspace for d >= 256: anisotropic like real embeddings
TASKS = [
    ("K2-d16-n5k-lin", single_factor_task(2, d=16, signal_dim=8, separation=1.0, seed=1), 5000),
    ("K4-d256-n5k-sinh", single_factor_task(4, d=256, signal_dim=16, separation=1.2, transform="sinh",
                                            noise_scale=NS, seed=2), 5000),
    ("K14-d16-n20k-lin", single_factor_task(14, d=16, signal_dim=8, separation=1.5, imbalance=0.2, seed=3), 20000),
    ("K14-d256-n5k-cubic", single_factor_task(14, d=256, signal_dim=16, separation=1.5, transform="cubic",
                                              noise_scale=NS, seed=4), 5000),
    ("K4-d4096-n5k-lin", single_factor_task(4, d=4096, signal_dim=16, separation=1.2, noise_scale=NS, seed=5), 5000),
    ("K2-d4096-n20k-sinh", single_factor_task(2, d=4096, signal_dim=16, separation=1.0, transform="sinh",
                                              noise_scale=NS, seed=6), 20000),
    ("chain-2x4x4-d16-n5k-lin", chain_task((2, 4, 4), d=16, signal_dim=8, degenerate=True, imbalance=0.3, seed=7), 5000),
    ("chain-2x4x14-d256-n20k-sinh", chain_task((2, 4, 14), d=256, signal_dim=16, separations=(1.0, 1.0, 1.5),
                                                transform="sinh", noise_scale=NS, seed=8), 20000),
    ("chain-2x4x4-d4096-n20k-lin", chain_task((2, 4, 4), d=4096, signal_dim=16, noise_scale=NS, seed=9), 20000),
    # stress case: isotropic unit noise, signal below the Marchenko-Pastur edge (see groundtruth.py)
    ("chain-2x4x4-d4096-n20k-iso", chain_task((2, 4, 4), d=4096, signal_dim=16, seed=9), 20000),
    ("K14-d4096-n20k-cubic", single_factor_task(14, d=4096, signal_dim=16, separation=1.5, transform="cubic",
                                                noise_scale=NS, seed=12), 20000),
    ("K2-d256-n20k-lin-imbalanced", single_factor_task(2, d=256, signal_dim=16, separation=1.0, imbalance=1.5,
                                                       noise_scale=NS, seed=13), 20000),
    # issue 12: off the linear-Gaussian path (latent mixtures / Student-t / massive coordinates /
    # many classes / I = 0; groundtruth.LatentMixtureTask)
    ("mix-K6x2-d64-n5k", mixture_task(6, 2, d=64, signal_dim=8, spread=1.5, seed=21), 5000),
    ("mix-K6x2-d64-n20k", mixture_task(6, 2, d=64, signal_dim=8, spread=1.5, seed=21), 20000),
    ("t3-K4-d32-n2k", student_t_task(4, d=32, signal_dim=8, seed=22), 2000),
    ("t3-K4-d32-n20k", student_t_task(4, d=32, signal_dim=8, seed=22), 20000),
    ("massive-K4-d4096-n2k", massive_task(4, d=4096, massive=6, seed=23), 2000),
    ("K50-d64-n5k", many_class_task(50, d=64, seed=24), 5000),
    ("mixchain-K4x3-d64-n5k", mixture_task(4, 3, d=64, signal_dim=8, spread=1.5, chain=True, imbalance=0.3,
                                           seed=25), 5000),
    ("null-K4-d32-n2k", null_task(4, d=32, seed=26), 2000),
]
STRESS = {"chain-2x4x4-d4096-n20k-iso"}
NULL_REPS = {"n": 10}  # replicate samples of each null task (seeds 0..n-1), set by --null-reps


def onehot(codes):
    return np.eye(int(codes.max()) + 1, dtype=np.float32)[codes]


PEER_STEPS = {"n": 2000}  # bmi neural steps (bmi's own default is 10000); set by --peer-steps


def peer_mi(peer, z, y):
    """I(Z; one-hot y) by a peer library (nats)."""
    if peer == "sklearn":
        # sklearn's mutual_info_classif is per feature only: report the best single feature
        from sklearn.feature_selection import mutual_info_classif

        return float(mutual_info_classif(z[:, :256], y, random_state=0).max())
    if peer == "bmi-ksg" and len(z) ** 2 * z.shape[1] > 5e10:
        raise RuntimeError("skipped: KSG is O(n^2 d) here (> 5e10 distance terms)")
    if peer.startswith("bmi-"):
        import bmi

        est = {"bmi-mine": lambda: bmi.estimators.MINEEstimator(verbose=False, max_n_steps=PEER_STEPS["n"]),
               "bmi-infonce": lambda: bmi.estimators.InfoNCEEstimator(verbose=False, max_n_steps=PEER_STEPS["n"]),
               "bmi-ksg": lambda: bmi.estimators.KSGEnsembleFirstEstimator(neighborhoods=(5,))}[peer]()
        return float(est.estimate(z, onehot(y)))
    if peer == "mist-smile":
        from torch_mist import estimate_mi

        out = estimate_mi((z, onehot(y)), estimator="smile", verbose=False, max_epochs=20,
                          hidden_dims=[128, 64])
        return float(out[0] if isinstance(out, tuple) else out)  # (value, training log)
    raise ValueError(peer)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="", help="comma list of task indices (1-based); default all")
    ap.add_argument("--estimators", default="probe")
    ap.add_argument("--peers", default="bmi-mine,bmi-infonce,bmi-ksg,mist-smile,sklearn")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--peer-steps", type=int, default=2000, help="bmi training steps (bmi default 10000)")
    ap.add_argument("--out", default="experiments/benchmarks/mi_bench_results.csv")
    ap.add_argument("--null-reps", type=int, default=10)
    ap.add_argument("--baseline", default="", help="CSV of the same script on the pre-issue-12 code (CPU times)")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args(argv)
    NULL_REPS["n"] = args.null_reps
    if args.summary_only:
        targets(args.out, args.baseline)
        return
    PEER_STEPS["n"] = args.peer_steps
    pick = [int(t) - 1 for t in args.tasks.split(",") if t] or range(len(TASKS))
    ests = [e for e in args.estimators.split(",") if e]
    peers = [p for p in args.peers.split(",") if p]
    header = f"{'task':30s} {'term':12s} {'estimator':12s} {'truth':>8s} {'est':>8s} {'interval':>17s} " \
             f"{'rel.err':>8s} {'abs.err':>8s} {'cover':>5s} {'seeds':>5s} {'wall_s':>8s}"
    print(header, flush=True)
    if ests:
        # one small untimed call first, so one-off imports (torch, scipy.optimize, the estimator
        # registry) are not charged to the first task's CPU time
        zw, fw = TASKS[0][1].sample(400, seed=99)
        for est in ests:
            chain_terms(zw, {k: fw[k] for k in TASKS[0][1].names}, order=list(TASKS[0][1].names),
                        estimators=[est], seeds=1, direct=False, difference=False)
    for ti in pick:
        base_name, task, n = TASKS[ti]
        truth = task.truth(400_000)
        order = list(task.names)
        rows = []
        reps = range(NULL_REPS["n"]) if base_name.startswith("null") else [0]
        for rep in reps:
            z, f = task.sample(n, seed=rep)
            name = base_name if rep == 0 else f"{base_name}#{rep}"
            for est in ests:
                t0, c0 = time.perf_counter(), time.process_time()
                res = chain_terms(z, {k: f[k] for k in order}, order=order, estimators=[est], seeds=args.seeds,
                                  direct=False, difference=False)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                for (_term, e), (tname, (tv, _tse)) in zip(res.terms[est], truth.items()):
                    # coverage per seed: each seed's own interval (bootstrap over rows, its own
                    # slacks), so task x seed cells can be counted (issue 4)
                    seed_iv = e.diagnostics.get("seed_intervals", [])
                    seed_cover = [bool(lo <= tv <= hi) for lo, hi in seed_iv]
                    row = report(name, tname, est, tv, e.value, e.ci_low, e.ci_high, wall / len(order),
                                 seed_cover)
                    row.update(cpu_s=cpu / len(order), flags=",".join(getattr(e, "flags", []) or []),
                               bound=getattr(e, "bound", "two-sided"))
                    rows.append(row)
        for peer in peers:
            for j, tname in enumerate(list(truth)[: len(order)]):
                t0 = time.perf_counter()
                try:
                    if j == 0:
                        v = peer_mi(peer, z, f[order[0]])
                    else:  # chain difference I(Z; F_<=j) - I(Z; F_<j)
                        v = peer_mi(peer, z, joint_codes([f[o] for o in order[: j + 1]])) - \
                            peer_mi(peer, z, joint_codes([f[o] for o in order[:j]]))
                except Exception as exc:  # a peer crashing is a result, not a benchmark failure
                    print(f"  {peer} failed on {name} {tname}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    v = float("nan")
                rows.append(report(name, tname, peer, truth[tname][0], v, np.nan, np.nan,
                                   time.perf_counter() - t0))
        merge_rows(args.out, rows)
    summarise(args.out)
    targets(args.out, args.baseline)


def merge_rows(path, rows):
    """Write rows into the results CSV, replacing earlier rows of the same (task, estimator).

    The probe and the peers can then run as separate processes (one per core) into one table.
    """
    import pandas as pd

    new = pd.DataFrame(rows)
    if os.path.exists(path):
        old = pd.read_csv(path)
        keys = set(zip(new["task"], new["estimator"]))
        old = old[[(t, e) not in keys for t, e in zip(old["task"], old["estimator"])]]
        new = pd.concat([old, new], ignore_index=True)
    new.to_csv(path, index=False)


def summarise(path):
    import pandas as pd

    frame = pd.read_csv(path)
    summary = frame.groupby("estimator").agg(median_rel_err=("rel_err", "median"),
                                             coverage=("cover", "mean"), cells=("rel_err", "size"),
                                             mean_wall_s=("wall_s", "mean"))
    if "seed_cover" in frame:
        summary["seed_coverage"] = frame.groupby("estimator")["seed_cover"].mean()
    print(summary.to_string())


def targets(path, baseline="", default="probe", mine="mine"):
    """Print issue 12's targets from the results CSV (matprobe's rows; peers for the last one)."""
    import pandas as pd

    fr = pd.read_csv(path)
    fr["base"] = fr["task"].str.split("#").str[0]
    is_null = fr["base"].str.startswith("null")
    ok = ~fr["base"].isin(STRESS) & ~is_null

    def line(label, value, target, met):
        print(f"  {label:58s} {value:>14s}   target {target:>10s}   {'met' if met else 'MISSED'}")

    print("targets (issue 12):")
    for est in (default, mine):
        d = fr[(fr["estimator"] == est) & ok]
        if d.empty:
            continue
        if est == default:
            line(f"{est}: median rel. error (non-null cells)", f"{d['rel_err'].median():.1%}", "<= 3%",
                 d["rel_err"].median() <= 0.03)
            worst = d.loc[d["rel_err"].idxmax()]
            line(f"{est}: worst non-stress cell ({worst['task']} {worst['term']})", f"{worst['rel_err']:.1%}",
                 "<= 10%", worst["rel_err"] <= 0.10)
        else:
            tol = np.maximum(0.10 * d["truth"], 0.02)
            bad = (d["abs_err"] > tol).sum()
            line(f"{est}: cells outside max(10%, 0.02 nats)", f"{bad}/{len(d)}", "0", bad == 0)
        cov = (d["seed_cover"] * d["seeds_covering"].str.split("/").str[1].astype(float)).sum() / \
            d["seeds_covering"].str.split("/").str[1].astype(float).sum()
        line(f"{est}: 90% CI covers (task x seed cells)", f"{cov:.1%}", ">= 90%", cov >= 0.9)
        nul = fr[(fr["estimator"] == est) & is_null]
        if len(nul):
            excl = ((nul["ci_low"] > 0) | (nul["ci_high"] < 0)).mean()
            line(f"{est}: null replicates whose CI excludes 0 ({len(nul)})", f"{excl:.0%}", "<= 10%", excl <= 0.1)
    peers = fr[~fr["estimator"].isin([default, mine]) & ok]
    if len(peers):
        best = peers.groupby(["task", "term"])["abs_err"].min()
        mine_err = fr[(fr["estimator"] == default) & ok].set_index(["task", "term"])["abs_err"]
        common = best.index.intersection(mine_err.index)
        worse = int((mine_err[common] > best[common]).sum())
        line(f"{default}: cells worse than the best peer", f"{worse}/{len(common)}", "0", worse == 0)
    if "cpu_s" in fr:
        dd = fr[fr["estimator"] == default].groupby("task")["cpu_s"].sum()
        mm = fr[fr["estimator"] == mine].groupby("task")["cpu_s"].sum()
        common = dd.index.intersection(mm.index)
        if len(common):
            r = mm[common].sum() / dd[common].sum()
            line(f"{mine}/{default} CPU time ({len(common)} tasks)", f"{r:.2f}x", "<= 2x", r <= 2)
        if baseline and os.path.exists(baseline):
            old = pd.read_csv(baseline)
            old = old[old["estimator"] == default].groupby("task")["cpu_s"].sum()
            common = old.index.intersection(dd.index)
            if len(common):
                r = dd[common].sum() / old[common].sum()
                line(f"{default} CPU time vs pre-issue-12 code ({len(common)} existing tasks)", f"{r:.2f}x",
                     "<= 1.5x", r <= 1.5)


def report(task, term, est, truth, value, lo, hi, wall, seed_cover=()):
    rel = abs(value - truth) / truth if truth > 0 else float("nan")
    cover = bool(lo <= truth <= hi) if lo == lo else float("nan")
    interval = f"[{lo:.3f},{hi:.3f}]" if lo == lo else ""
    seeds = f"{sum(seed_cover)}/{len(seed_cover)}" if seed_cover else ""
    print(f"{task:30s} {term:12s} {est:12s} {truth:8.3f} {value:8.3f} {interval:>17s} {rel:8.1%} "
          f"{abs(value - truth):8.3f} {str(cover):>5s} {seeds:>5s} {wall:8.1f}", flush=True)
    return {"task": task, "term": term, "estimator": est, "truth": truth, "estimate": value, "ci_low": lo,
            "ci_high": hi, "rel_err": rel, "abs_err": abs(value - truth), "cover": cover,
            "seed_cover": (sum(seed_cover) / len(seed_cover)) if seed_cover else float("nan"),
            "seeds_covering": seeds, "wall_s": wall}


if __name__ == "__main__":
    main()
