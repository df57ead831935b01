"""Session-scoped fixtures shared across test files (tiny checkpoints are built once)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory) -> dict[str, Path]:
    """Tiny random LLaVA / Qwen2-VL / Qwen2.5-VL / LLaVA-NeXT / Gemma 3 / Idefics3 checkpoints plus a LoRA
    adapter ('llava_lora')."""
    import torch

    torch.set_num_threads(1)
    from matprobe.extract.tiny import build_tiny_adapter, build_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny_ckpts")
    out = {arch: build_tiny_checkpoint(root / arch, arch, seed=i)
           for i, arch in enumerate(("llava", "qwen2_vl", "qwen2_5_vl", "llava_next", "gemma3", "idefics3"))}
    out["llava_lora"] = build_tiny_adapter(root / "llava_lora", out["llava"], seed=7)
    return out


def write_tiny_manifest(folder: Path, n: int = 10, seed: int = 0, n_options: int = 4) -> Path:
    """A MAT manifest of `n` samples with random PNGs of mixed sizes (28–56 px) and mixed
    prompt lengths; answers cycle through the options."""
    from PIL import Image

    folder = Path(folder)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [(28, 28), (28, 56), (56, 56), (56, 28), (42, 56)]
    questions = ["What is shown?", "Which organ is visible in this image of the body?", "Finding?"]
    options = ["Normal", "Tumor", "Cyst", "Stone", "Edema", "Fracture"][:n_options]
    mods, anas, tasks = ["CT", "MRI", "X-ray"], ["Chest", "Brain", "Lung"], ["Classification", "Segmentation"]
    path = folder / "data.jsonl"
    with open(path, "w") as fh:
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
            rec = dict(
                id=f"s{i:03d}", image=f"img/{i}.png", question=questions[i % 3], options=options,
                answer=i % len(options), modality=mods[i % 3], anatomy=anas[(i // 3) % 3],
                task=tasks[i % 2],
            )
            fh.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    return write_tiny_manifest(tmp_path_factory.mktemp("tiny_data"), n=10)


@pytest.fixture(scope="session")
def make_tiny_manifest():
    """The `write_tiny_manifest(folder, n, seed, n_options)` builder, for tests that need their own data."""
    return write_tiny_manifest


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> Path:
    """`matprobe demo --quick` run once per session into ROOT/reports/demo of a temporary ROOT
    (the layout the README's study commands expect); returns that run directory."""
    import torch
    from typer.testing import CliRunner

    from matprobe.cli import app

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("quick_demo") / "reports" / "demo"
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--workers", "2"])
    assert res.exit_code == 0, res.output
    return out
