"""Portable numerics (issue 20): the demo's numbers do not depend on the CPU's kernel dispatch.

Two levels of torch's ATen dispatch (ATEN_CPU_CAPABILITY, what a CPU with or without AVX2 /
AVX512 gets) stand in for two machines. Without the pinned settings they give different
weights from the same seed (the control: the comparison can fail); with them, every stage
(random init, fine-tuning, extraction, MI) gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matprobe import numerics

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


FLAGS = _cpu_flags()
# the ATen levels this CPU can run, lowest first (torch falls back silently on a level the CPU lacks)
LEVELS = ["default"] + (["avx2"] if {"avx2", "fma"} <= FLAGS else []) + \
    (["avx512"] if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= FLAGS else [])
needs_two_levels = pytest.mark.skipif(len(LEVELS) < 2 or not numerics.supported_platform(),
                                      reason="needs x86-64 Linux with AVX2 (two ATen dispatch levels)")

# One process: a tiny LLaVA initialised from seed 0 (torch's random fill), then the probe MI
# estimate on fixed synthetic data (numpy, scipy's L-BFGS-B, OpenBLAS, libm, torch); prints the
# sha256 of the weights, the estimate's repr and what portable_problems() finds.
STAGES = r"""
import hashlib, json, sys, tempfile
from pathlib import Path
import numpy as np, torch
from matprobe import numerics
if numerics.started_portable():
    numerics.apply_portable()
torch.set_num_threads(1)
from safetensors.numpy import load_file
from matprobe.extract.tiny import build_tiny_checkpoint
from matprobe.mi.registry import make_estimator
with tempfile.TemporaryDirectory() as tmp:
    ck = build_tiny_checkpoint(Path(tmp) / "base", "llava", seed=0)
    tensors = {k: v for f in sorted(Path(ck).glob("*.safetensors")) for k, v in load_file(f).items()}
weights = hashlib.sha256(b"".join(k.encode() + tensors[k].tobytes() for k in sorted(tensors))).hexdigest()
rng = np.random.default_rng(0)
y = rng.integers(0, 3, 300)
z = rng.normal(size=(300, 12)) + np.eye(3)[y] @ rng.normal(size=(3, 12))
est = make_estimator("probe", seeds=1, folds=2, pca=8)
mi = est.estimate(z.astype(np.float32), y).value
print(json.dumps({"weights": weights, "mi": repr(float(mi)), "problems": numerics.portable_problems(),
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def _stages(level: str, portable: bool) -> dict:
    base = {k: v for k, v in os.environ.items()
            if k not in numerics.PORTABLE_ENV and k not in ("GLIBC_TUNABLES", numerics.MARKER)}
    base["ATEN_CPU_CAPABILITY"] = level
    env = numerics.portable_environment(base)[0] if portable else base
    env["PYTHONPATH"] = SRC
    res = subprocess.run([sys.executable, "-c", STAGES], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_portable_environment_replaces_user_settings_and_says_so():
    user = {"ATEN_CPU_CAPABILITY": "avx512", "OMP_NUM_THREADS": "1", "HOME": "/h",
            "GLIBC_TUNABLES": "glibc.malloc.check=3:glibc.cpu.hwcaps=-AVX512F"}
    env, notes = numerics.portable_environment(user)
    for key, value in numerics.PORTABLE_ENV.items():
        assert env[key] == value
    assert env["HOME"] == "/h" and env[numerics.MARKER] == "1"
    # the user's other tunables are kept, their hwcaps entry replaced by ours
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.check=3:" + numerics.GLIBC_HWCAPS
    # one note per changed setting; a setting already equal to the pin is no news
    assert notes == ["ATEN_CPU_CAPABILITY=avx512 replaced by default",
                     "GLIBC_TUNABLES glibc.cpu.hwcaps=-AVX512F replaced by " + numerics.GLIBC_HWCAPS]
    assert numerics.portable_environment(env)[1] == []  # applying it twice changes nothing


@needs_two_levels
def test_dispatch_level_moves_the_bits_unless_pinned():
    low, high = LEVELS[0], LEVELS[-1]
    free_low, free_high = _stages(low, portable=False), _stages(high, portable=False)
    # the control: the same seed gives other weights under another dispatch level, and the
    # unpinned process knows it is not portable
    assert free_low["capability"] == "DEFAULT" and free_high["capability"] == high.upper()
    assert free_low["weights"] != free_high["weights"]
    assert any(p.startswith(f"ATEN_CPU_CAPABILITY is '{high}' at process start") for p in free_high["problems"])
    assert any(p == f"torch dispatches {high.upper()} kernels, not DEFAULT" for p in free_high["problems"])
    pinned = [_stages(level, portable=True) for level in (low, high)]
    for got in pinned:  # every library reports its pinned kernels and one thread
        assert got["problems"] == [] and got["capability"] == "DEFAULT"
    assert pinned[0]["weights"] == pinned[1]["weights"]
    assert pinned[0]["mi"] == pinned[1]["mi"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mini_demo(out: Path):
    """The demo pipeline at its smallest: 12 items per triplet, one seed, 4 training steps,
    2 folds, 2 worker processes (so the workers' settings are exercised), one held-out target
    and no control tasks (each stage is still run once: a second target's checkpoints and the
    controls' fits only repeated them, 29 against 17 s per run, forty-third session)."""
    from matprobe.pipeline import demo_config

    cfg = demo_config(quick=True, out=str(out))
    cfg.n_per_triplet, cfg.train_steps, cfg.train_seeds, cfg.mi_folds, cfg.workers = 12, 4, (0,), 2, 2
    cfg.extra_targets, cfg.mi_controls = (), False
    return cfg


@pytest.mark.slow
@needs_two_levels
def test_demo_pipeline_bit_identical_under_two_dispatch_levels(tmp_path, monkeypatch, capfd):
    import h5py

    from matprobe.pipeline import run_pipeline

    runs = {}
    for level in (LEVELS[0], LEVELS[-1]):
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", level)
        runs[level] = run_pipeline(_mini_demo(tmp_path / level))
        err = capfd.readouterr().err
        # the user's setting is replaced, and the run says so (nothing to say when it was the pin)
        assert (f"note: ATEN_CPU_CAPABILITY={level} replaced by default" in err) == (level != "default"), err
    a, b = runs.values()
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()
    assert len(pd.read_csv(a / "results.csv")) > 0
    ckpts = sorted(p.relative_to(a) for p in (a / "checkpoints").rglob("*.safetensors"))
    assert len(ckpts) == 3  # base + 2 conditions x 1 target
    assert [_sha(a / p) for p in ckpts] == [_sha(b / p) for p in ckpts]
    stores = sorted((a / "stores").glob("*.h5"))
    assert len(stores) == 2
    for store in stores:
        with h5py.File(store) as fa, h5py.File(b / "stores" / store.name) as fb:
            for name in ("features/3/last", "answers/probs", "answers/pred", "content/row_digest"):
                assert np.array_equal(fa[name][()], fb[name][()]), (store.name, name)
    for mi in sorted((a / "mi").glob("*.json")):
        ta, tb = (json.loads(p.read_text())["terms"] for p in (mi, b / "mi" / mi.name))
        assert [(t["term"], t["estimate"], t["ci_low"], t["ci_high"]) for t in ta] == \
            [(t["term"], t["estimate"], t["ci_low"], t["ci_high"]) for t in tb]
    numerics_a = json.loads((a / "run.json").read_text())["environment"]["numerics"]
    assert numerics_a["portable"] is True and numerics_a["torch_cpu_capability"] == "DEFAULT"
    assert "Numerics: portable" in (a / "report.md").read_text()


@pytest.mark.skipif(not numerics.supported_platform(), reason="portable numerics run in a child on x86-64 Linux")
def test_an_error_in_the_portable_process_is_the_same_one_error_line(tmp_path):
    # the study runs in a second process; its user error reaches the CLI as the one line the
    # same pipeline gives when it runs in the CLI's own process
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    lines = {}
    for portable in ("true", "false"):
        pipe = tmp_path / f"p-{portable}.toml"
        pipe.write_text(f'[run]\nout = "{tmp_path / "out"}"\nportable_numerics = {portable}\n'
                        f'[data]\nfile = "{bad}"\n')
        res = subprocess.run([sys.executable, "-m", "matprobe", "run", str(pipe)], env=dict(os.environ, PYTHONPATH=SRC),
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 2, res.stderr[-3000:]
        assert "Traceback" not in res.stderr + res.stdout
        lines[portable] = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines["true"]) == 1 and str(bad) in lines["true"][0]
    assert lines["true"] == lines["false"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.csv"))
