"""The ladder's non-linear forms on a written-out gradient against autograd, side by side in one
process (issue 22, forty-fourth session): CPU time per Adam step of each form at a few shapes,
and whole estimates whose folds fit the non-linear forms, each run both ways with the same bits
checked. The peer is autograd itself (`grads_written_for = None` switches a form back to it).

    PYTHONPATH=src python experiments/benchmarks/written_out_grads_bench.py
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from matprobe.mi import make_estimator, probe
from matprobe.mi.groundtruth import LatentMixtureTask, mixture_task

FORMS = (probe._MLPLadder, probe._LatentCellLadder, probe._EllipticalLadder)


def _autograd_step(form, p, x1, off_rows, target, decay):
    for k, g in form._grads_by_autograd(p, x1, off_rows, target, decay).items():
        p[k].grad = g


def _written_step(form, p, x1, off_rows, target, decay):
    for k, g in form._grads(p, x1, off_rows, target, decay).items():
        p[k].grad = g


def _params(form, d1, cells, gen, hidden=64, rank=8, copies=4):
    if form is probe._MLPLadder:
        p = {"w": torch.randn(d1, cells, generator=gen), "r": 0.3 * torch.randn(d1, rank, generator=gen),
             "u": torch.randn(d1, hidden, generator=gen) / d1 ** 0.5, "v": 0.2 * torch.randn(hidden, cells, generator=gen)}
    elif form is probe._LatentCellLadder:
        p = {"w": torch.randn(d1, cells, copies, generator=gen)}
    else:
        p = {"w": torch.randn(d1, cells, generator=gen), "p": torch.randn(d1 - 1, rank, generator=gen) / (d1 - 1) ** 0.5,
             "m": torch.randn(rank, cells, generator=gen), "a": torch.randn(cells, generator=gen),
             "log_b": torch.randn(cells, generator=gen) + float(np.log(rank))}
    return {k: v.requires_grad_(True) for k, v in p.items()}


def step_times(repeats: int = 400) -> list[dict]:
    rows = []
    for d1, cells in ((7, 3), (65, 8), (65, 48)):
        for form in FORMS:
            gen = torch.Generator().manual_seed(0)
            p = _params(form, d1, cells, gen)
            x1 = torch.randn(512, d1, generator=gen)
            off_rows, target = torch.randn(512, cells, generator=gen), torch.randint(cells, (512,), generator=gen)
            ms = {}
            for name, step in (("autograd", _autograd_step), ("written out", _written_step)):
                step(form, p, x1, off_rows, target, 1e-4)  # warm
                t0 = time.process_time()
                for _ in range(repeats):
                    step(form, p, x1, off_rows, target, 1e-4)
                ms[name] = (time.process_time() - t0) / repeats * 1e3
            rows.append({"form": form.form_name, "batch": 512, "d+1": d1, "cells": cells,
                         "autograd_ms": round(ms["autograd"], 3), "written_ms": round(ms["written out"], 3),
                         "ratio": round(ms["written out"] / ms["autograd"], 3)})
    return rows


def estimate_times() -> list[dict]:
    tasks = {"scales-only d6 n4k": (LatentMixtureTask(k_classes=3, d=6, signal_dim=4, separation=0.0,
                                                      scale_spread=0.7, seed=2), 4000),
             "clusters d12 n4k": (mixture_task(k_classes=3, components=4, d=12, signal_dim=6, separation=1.0,
                                               spread=2.0, seed=3), 4000)}
    rows = []
    for name, (task, n) in tasks.items():
        z, f = task.sample(n, seed=1)
        out = {}
        for mode in ("written out", "autograd"):
            for form in FORMS:
                form.grads_written_for = form.form_name if mode == "written out" else None
            t0 = time.process_time()
            e = make_estimator("probe", seeds=2).estimate(z, f["Y"])
            seconds = time.process_time() - t0
            diag = {k: v for k, v in e.diagnostics.items() if k != "seconds"}
            out[mode] = (seconds, (e.value, e.ci_low, e.ci_high, json.dumps(diag, sort_keys=True, default=str)))
        for form in FORMS:
            form.grads_written_for = form.form_name
        rows.append({"task": name, "autograd_s": round(out["autograd"][0], 2),
                     "written_s": round(out["written out"][0], 2),
                     "ratio": round(out["written out"][0] / out["autograd"][0], 3),
                     "same_bits": out["autograd"][1] == out["written out"][1]})
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    for row in step_times() + estimate_times():
        print(json.dumps(row))
