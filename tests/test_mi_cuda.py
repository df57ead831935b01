"""Issue 22: the estimators' torch path on a GPU (`--device cuda`) against the same code on the CPU.

Skipped without a GPU (CI has none); run on the device machine by
experiments/benchmarks/chain_device_bench.py's companion command (RESULTS.md, issue 22). A GPU
adds float32 sums in another order, so the numbers are not bit for bit; what must hold is that
the device changes no estimate by more than a small share of its own interval, and that the
user's command runs there end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi import available_estimators
from matprobe.mi.chain import chain_terms
from matprobe.mi.groundtruth import chain_task

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
torch.set_num_threads(1)


def _chain(device: str, estimator: str):
    task = chain_task((2, 3), d=24, separations=(1.0, 1.0), signal_dim=4, noise_scale=0.5, seed=3)
    z, f = task.sample(1500, seed=1)
    return task, chain_terms(z, f, estimators=[estimator], seeds=2, folds=3, pca=16, device=device,
                             direct=False, difference=False)


@pytest.mark.parametrize("estimator", available_estimators())
def test_each_estimator_on_cuda_agrees_with_cpu(estimator):
    task, on_cpu = _chain("cpu", estimator)
    _, on_gpu = _chain("cuda", estimator)
    for (name, c), (_, g) in zip(on_cpu.terms[estimator], on_gpu.terms[estimator], strict=True):
        half = (c.ci_high - c.ci_low) / 2
        # the device changes sums' order, not the fit: within a quarter of the CPU interval's half-width
        assert abs(g.value - c.value) <= max(0.25 * half, 1e-3), (estimator, name, c.value, g.value, half)
        assert g.bound == c.bound and g.flags == c.flags, (estimator, name)


def test_mi_command_on_cuda_writes_what_the_cpu_writes(tmp_path):
    from conftest import mi_cli_on_synthetic_store

    (tmp_path / "gpu").mkdir(), (tmp_path / "cpu").mkdir()
    _, on_gpu, _ = mi_cli_on_synthetic_store(tmp_path / "gpu", "--device", "cuda", seed=5, n=1200)
    _, on_cpu, _ = mi_cli_on_synthetic_store(tmp_path / "cpu", seed=5, n=1200)
    assert [t["term"] for t in on_gpu["terms"]] == [t["term"] for t in on_cpu["terms"]]
    for g, c in zip(on_gpu["terms"], on_cpu["terms"], strict=True):
        half = (c["ci_high"] - c["ci_low"]) / 2
        assert abs(g["estimate"] - c["estimate"]) <= max(0.25 * half, 1e-3), (g, c)
        assert g["bound"] == c["bound"] and g["flags"] == c["flags"], (g, c)
    assert np.isfinite([t["estimate"] for t in on_gpu["terms"]]).all()
