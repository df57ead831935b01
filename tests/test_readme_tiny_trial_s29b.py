"""The README's laptop trial with tiny checkpoints ("Your own study"), run as printed.

A first-time user found `build_tiny_checkpoint` only in docs/ARCHITECTURE.md and wrote their own script
to trial the whole path with Qwen2.5-VL and LLaVA models (user study s29, F4). The README now shows it:
a Python block that builds three tiny checkpoints and a LoRA adapter over a fourth, and a bash block
with `init` and `run` on them (both fenced with ~~~). Both blocks are parsed from README.md; the Python block runs as
printed (and, with its `arch = ...` line replaced, for every tiny architecture), the commands run
through the CLI from the folder that holds `study/manifest.jsonl` (a study like test_own_study's).
The checks compare outputs with their inputs: what the block prints, the folders it writes (a
checkpoint, an adapter naming its base), the pipeline `init` wrote, and the run's accuracies against
the stores' own answers.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from matprobe.cli import app

ROOT = Path(__file__).resolve().parents[1]
TARGET = ("MRI", "Head", "Orientation")
MARKER = "To trial the path on a laptop"
ARCHS = ["llava", "qwen2_vl", "qwen2_5_vl", "gemma3", "idefics3", "llava_next"]  # tiny_architectures() today


def trial_blocks() -> tuple[str, list[str]]:
    """(the Python block, the commands of the bash block) of the README's laptop trial."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own study", 1)[1].split("\n## ", 1)[0]
    assert MARKER in section, "the laptop trial is no longer in 'Your own study'"
    trial = section.split(MARKER, 1)[1]
    # fenced with tildes: conftest's `readme_commands` reads the section's plain ``` blocks as one list of
    # commands and pairs backtick fences, which a ```python block would put out of step
    python = re.search(r"^~~~python\n(.*?)^~~~$", trial, re.S | re.M).group(1)
    bash = re.search(r"^~~~bash\n(.*?)^~~~$", trial, re.S | re.M).group(1)
    # the two blocks are the first fenced blocks after the trial's sentence, the Python one first
    fences = [m.start() for m in re.finditer(r"^(?:~~~|```)\w*$", trial, re.M)]
    assert fences[0] == trial.index("~~~python") and fences[2] == trial.index("~~~bash")
    commands = [line.strip() for line in bash.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return python, commands


def write_study(root: Path, per_cell: int = 16) -> Path:
    """study/manifest.jsonl: four-option items over CT/MRI x Head/Chest x Orientation/Artifact with
    random PNG images, the triplets the README's commands name (target MRI, Head, Orientation)."""
    study = root / "study"
    (study / "img").mkdir(parents=True)
    rng = np.random.default_rng(29)
    rows = []
    for mod in ("CT", "MRI"):
        for ana in ("Head", "Chest"):
            for task, options in (("Orientation", ["left", "right", "up", "down"]),
                                  ("Artifact", ["none", "motion", "noise", "aliasing"])):
                for i in range(per_cell):
                    sid = f"{mod}-{ana}-{task}-{i}"
                    Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(study / "img" / f"{sid}.png")
                    rows.append({"id": sid, "image": f"img/{sid}.png", "question": f"Which {task.lower()} is shown?",
                                 "options": options, "answer": i % 4, "modality": mod, "anatomy": ana, "task": task})
    path = study / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_python_block(code: str) -> str:
    """Run the README's Python block as a script would (its own globals); returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (laptop trial)", "exec"), {"__name__": "__main__"})
    return out.getvalue()


def test_trial_blocks_are_parsed_and_name_every_tiny_architecture():
    from matprobe.extract.tiny import tiny_architectures

    python, commands = trial_blocks()
    assert [shlex.split(c)[:2] for c in commands] == [["matprobe", "init"], ["matprobe", "run"]]
    # the comment on the print line is what it prints
    printed = re.search(r"print\(tiny_architectures\(\)\)\s+# (.*)", python).group(1)
    assert printed == repr(tiny_architectures()) and list(tiny_architectures()) == ARCHS
    assert re.search(r'^arch = "(\w+)"', python, re.M).group(1) in tiny_architectures()
    # every checkpoint folder init is given is one the Python block writes
    written = set(re.findall(r'"(trial/ckpts/[\w-]+)"', python)) | {
        f"trial/ckpts/{n}" for n in re.findall(r'\["([\w-]+)", "([\w-]+)", "([\w-]+)"\]', python)[0]}
    init = shlex.split(commands[0])
    given = [a for a in init[2:init.index("--data")]]
    assert sorted(given) == sorted(written) and len(given) == 4


def test_readme_tiny_trial_runs_as_printed(tmp_path, monkeypatch):
    import torch

    from matprobe.pipeline import load_pipeline
    from matprobe.store import EmbeddingStore

    torch.set_num_threads(1)
    write_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    python, commands = trial_blocks()
    printed = run_python_block(python)
    from matprobe.extract.tiny import tiny_architectures

    assert printed == f"{tiny_architectures()}\n"
    arch = re.search(r'^arch = "(\w+)"', python, re.M).group(1)
    for name in ("related-s0", "related-s1", "unrelated-s0"):
        cfg = json.loads((tmp_path / "trial/ckpts" / name / "config.json").read_text())
        assert cfg["model_type"] == arch
    adapter = json.loads((tmp_path / "trial/ckpts/unrelated-s1/adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == (tmp_path / "trial/base").resolve()
    assert adapter["peft_type"] == "LORA"

    runner = CliRunner()
    for cmd in commands:
        argv = shlex.split(cmd)
        res = runner.invoke(app, argv[1:])
        assert res.exit_code == 0, (cmd, res.output[-1500:])

    cfg = load_pipeline("trial.toml")
    assert cfg.target == TARGET
    assert [(c["condition"], c["seed"], Path(c["ckpt"]).name) for c in cfg.checkpoints] == [
        ("related", 0, "related-s0"), ("related", 1, "related-s1"),
        ("unrelated", 0, "unrelated-s0"), ("unrelated", 1, "unrelated-s1")]
    text = Path("trial.toml").read_text()
    assert text.count("# Hugging Face checkpoint") == 3 and text.count("# LoRA adapter") == 1
    run_dir = tmp_path / tomllib.loads(text)["run"]["out"]
    assert (run_dir / "report.html").is_file() and "MRI / Head / Orientation" in (run_dir / "report.html").read_text()
    results = pd.read_csv(run_dir / "results.csv", keep_default_na=False)
    acc = results[results.metric == "accuracy"].set_index(["condition", "seed"])["value"].astype(float)
    assert sorted(acc.index) == [("Related", 0), ("Related", 1), ("Unrelated", 0), ("Unrelated", 1)]
    for cond, seed in acc.index:
        with EmbeddingStore.open(run_dir / "stores" / f"{cond.lower()}-s{seed}.h5") as st:
            frame, correct, prov = st.samples(), st.answers()["correct"], st.provenance
        on_target = (frame[["modality", "anatomy", "task"]].apply(tuple, axis=1) == TARGET).to_numpy()
        assert acc[(cond, seed)] == pytest.approx(correct[on_target].mean(), abs=1e-12)
        assert prov["arch"] == arch
        if (cond, seed) == ("Unrelated", 1):  # the adapter was applied: its store records it
            assert Path(prov["adapter"]).name == "unrelated-s1"


@pytest.mark.parametrize("arch", ARCHS)
def test_readme_tiny_trial_block_builds_every_architecture(arch, tmp_path, monkeypatch, make_tiny_manifest):
    """The block with its `arch = ...` line set to each architecture (the README says "any of them"):
    the checkpoints and the adapter it writes extract through the CLI, and the adapter changes Z."""
    import torch

    from matprobe.store import EmbeddingStore

    torch.set_num_threads(1)
    python, _ = trial_blocks()
    line = re.search(r'^arch = "\w+"', python, re.M).group(0)
    monkeypatch.chdir(tmp_path)
    run_python_block(python.replace(line, f'arch = "{arch}"', 1))
    data = make_tiny_manifest(tmp_path / "d", n=4)
    runner = CliRunner()
    z = {}
    for name, ckpt in (("base", "trial/base"), ("adapter", "trial/ckpts/unrelated-s1"), ("full", "trial/ckpts/related-s0")):
        res = runner.invoke(app, ["extract", "--ckpt", ckpt, "--data", str(data), "--out", f"{name}.h5",
                                  "--layers", "-1", "--pool", "last", "--batch-size", "4"])
        assert res.exit_code == 0, (arch, name, res.output[-1500:])
        with EmbeddingStore.open(f"{name}.h5") as st:
            assert st.done.all() and st.n == 4 and st.provenance["arch"] == arch
            ((layer, pool),) = st.feature_keys()
            z[name] = st.read(layer, pool)
    assert Path("trial/ckpts/unrelated-s1/adapter_config.json").is_file()
    assert not np.allclose(z["base"], z["adapter"])  # random A and B: the adapter changes the model
    assert not np.allclose(z["base"], z["full"])  # another seed: another model
