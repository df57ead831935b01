"""The README's "Your own study", run as printed on a study built here (not the demo's data).

The study: 128 four-option classification items from random images over CT/MRI x Head/Chest x
Orientation/Artifact (no segmentation, no label or split column), held-out target (MRI, Head,
Orientation), and four "fine-tuned" models named by condition and seed as the README says:
three tiny random-initialised LLaVA checkpoints saved with `save_pretrained` and one LoRA
adapter over a fourth. Every command of the
section's fenced blocks runs through the CLI from the folder that holds `study/`. The checks
compare outputs with their inputs: the pipeline file `init` wrote (it loads, one entry per
folder), the report, the significance table's unit, and the two paths (the pipeline's own
extraction, and stores extracted step by step) giving the same held-out accuracy per checkpoint.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import readme_commands
from matprobe.cli import app

ROOT = Path(__file__).resolve().parents[1]
TARGET = ("MRI", "Head", "Orientation")


def own_study_commands() -> list[str]:
    return readme_commands("Your own study")


def build_own_study(root: Path) -> None:
    """study/manifest.jsonl (+ images) and study/ckpts/{related,unrelated}-s{0,1}: three
    Hugging Face checkpoints and one LoRA adapter (unrelated-s1, over study/base)."""
    from matprobe.extract.tiny import build_tiny_adapter, build_tiny_checkpoint

    study = root / "study"
    (study / "img").mkdir(parents=True)
    rng = np.random.default_rng(20)
    rows = []
    for mod in ("CT", "MRI"):
        for ana in ("Head", "Chest"):
            for task, options in (("Orientation", ["left", "right", "up", "down"]),
                                  ("Artifact", ["none", "motion", "noise", "aliasing"])):
                for i in range(16):
                    sid = f"{mod}-{ana}-{task}-{i}"
                    if i == 0:  # one 16-bit grey export per triplet: the report says what the model saw
                        pixels = rng.integers(0, 4096, (28, 28)).astype(np.uint16)
                    else:
                        pixels = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(study / "img" / f"{sid}.png")
                    rows.append({"id": sid, "image": f"img/{sid}.png", "question": f"Which {task.lower()} is shown?",
                                 "options": options, "answer": i % 4, "modality": mod, "anatomy": ana, "task": task})
    (study / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for k, name in enumerate(("related-s0", "related-s1", "unrelated-s0")):
        build_tiny_checkpoint(study / "ckpts" / name, "llava", seed=100 + k)
    base = build_tiny_checkpoint(study / "base", "llava", seed=99)
    build_tiny_adapter(study / "ckpts" / "unrelated-s1", base, seed=7)


def test_section_is_parsed():
    cmds = own_study_commands()
    assert [c.split()[1] for c in cmds] == ["data", "init", "run", "significance", "extract", "extract", "store",
                                            "init", "run"]


def test_own_study_runs_as_printed(tmp_path, monkeypatch):
    import torch

    from matprobe.pipeline import load_pipeline
    from matprobe.store import EmbeddingStore

    torch.set_num_threads(1)
    build_own_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    outputs = {}
    for cmd in own_study_commands():
        argv = shlex.split(cmd)
        assert argv[0] == "matprobe", cmd
        res = runner.invoke(app, argv[1:])
        assert res.exit_code == 0, (cmd, res.output[-1500:])
        outputs[cmd] = res.output

    # init: the file it wrote loads, one entry per folder, condition and seed from the folder name
    cfg = load_pipeline("study.toml")
    assert cfg.target == TARGET and cfg.conditions == ("related", "unrelated")
    assert [(c["condition"], c["seed"], Path(c["ckpt"]).name) for c in cfg.checkpoints] == [
        ("related", 0, "related-s0"), ("related", 1, "related-s1"),
        ("unrelated", 0, "unrelated-s0"), ("unrelated", 1, "unrelated-s1")]
    text = Path("study.toml").read_text()
    assert "# " in text.split("[mi]")[1].split("\n")[1]  # commented settings
    assert text.count("# Hugging Face checkpoint") == 3 and text.count("# LoRA adapter") == 1
    # the run: a report, and per checkpoint its held-out accuracy as its store records the answers
    run = tmp_path / "study-run"
    html = (run / "report.html").read_text()
    assert "MRI / Head / Orientation" in html and "<img" in html
    # the 8 16-bit images (one per triplet): said in the report's design warnings
    design = (run / "report.md").read_text().split("## Design warnings")[1].split("\n## ")[0]
    assert "8 image file(s) have more than 8 bits per pixel (Pillow mode I;16 (8)" in " ".join(design.split())
    results = pd.read_csv(run / "results.csv", keep_default_na=False)
    acc = results[results.metric == "accuracy"].set_index(["condition", "seed"])["value"].astype(float)
    for cond, seed in acc.index:
        with EmbeddingStore.open(run / "stores" / f"{cond.lower()}-s{seed}.h5") as st:
            frame = st.samples()
            correct = st.answers()["correct"]
            st_prov = st.provenance
        on_target = (frame[["modality", "anatomy", "task"]].apply(tuple, axis=1) == TARGET).to_numpy()
        assert acc[(cond, seed)] == pytest.approx(correct[on_target].mean(), abs=1e-12)
        assert set(frame.loc[on_target, "split"]) == {"test"}
        if (cond, seed) == ("Unrelated", 1):  # the adapter was applied: its store records it
            assert Path(st_prov["adapter"]).name == "unrelated-s1"
    sig = outputs["matprobe significance study-run/results.csv"]
    assert "unit of analysis: seed (one target, 2 seeds" in sig
    # two pairs: the summary gives the t-test's p with the exact sign-flip p beside it, which with k
    # non-zero differences cannot go below 2^(1-k); both computed here from the per-run results
    term = "I(Z;task|modality,anatomy) nats"
    by = results[results.metric == term].pivot(index="seed", columns="condition", values="value").astype(float)
    diff = (by["Related"] - by["Unrelated"]).to_numpy()
    flips = [abs(np.mean(diff * np.array(s))) >= abs(diff.mean()) - 1e-12 for s in ((1, 1), (1, -1), (-1, 1), (-1, -1))]
    nonzero = int((diff != 0).sum())
    pairs = "2 pairs" if nonzero == 2 else f"{nonzero} non-zero of 2 pairs"
    line = next(x for x in (run / "report.md").read_text().splitlines() if "Did Related training raise" in x)
    if np.ptp(diff) > 0:  # a t-test is defined
        assert (f"the exact sign-flip test gives p = {np.mean(flips):.3g}, and with {pairs} it cannot go below "
                f"{2.0 ** (1 - nonzero):.3g}") in line, line
    # step by step: the stores you extracted are used as they are (no store written into the run),
    # and the same checkpoints give the same held-out accuracy as the pipeline's own extraction
    steps = tmp_path / "from-stores-run"
    assert (steps / "report.html").exists() and not (steps / "stores").exists()
    doc = json.loads((steps / "run.json").read_text())
    assert sorted(Path(ck["store"]).name for ck in doc["checkpoints"]) == ["related-s0.h5", "unrelated-s0.h5"]
    again = pd.read_csv(steps / "results.csv", keep_default_na=False)
    again = again[again.metric == "accuracy"].set_index(["condition", "seed"])["value"].astype(float)
    assert again.to_dict() == {k: acc[k] for k in again.index}
    assert "128" in outputs["matprobe store info stores/related-s0.h5"]  # every item extracted


def _init(args, cwd):
    return CliRunner().invoke(app, ["init", *args])


def test_init_refuses_what_it_cannot_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study" / "img").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "study" / "img" / "x.png")
    rows = [{"id": f"i{k}", "image": "img/x.png", "question": "q?", "options": ["a", "b"], "answer": k % 2,
             "modality": "CT", "anatomy": "Head", "task": t} for k, t in enumerate(["Artifact"] * 4 + ["Orientation"] * 4)]
    (tmp_path / "study" / "only-related.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a triplet sharing nothing with the target: the unrelated checkpoints' training data
    rows += [{**rows[0], "id": f"u{k}", "modality": "MRI", "anatomy": "Knee"} for k in range(4)]
    (tmp_path / "study" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a folder with its processor files and (by name: init reads none) its weights
    hf = ["config.json", "preprocessor_config.json", "tokenizer.json", "model.safetensors"]
    for name, files in (("related-s0", hf), ("unrelated-s0", ["adapter_config.json"]),
                        ("model-s1", hf), ("related-final", hf), ("related-s3", []),
                        ("related-s4", ["config.json"]), ("related-s5", [*hf[:3], "training_args.bin"])):
        (tmp_path / "ck" / name).mkdir(parents=True)
        for f in files:
            (tmp_path / "ck" / name / f).write_text("{}")
    # the adapter's base: a local folder (its record from another machine is refused, below)
    (tmp_path / "ck" / "unrelated-s0" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tmp_path / "ck" / "related-s0")}))
    shutil.copytree(tmp_path / "ck" / "unrelated-s0", tmp_path / "hub" / "unrelated-s0")
    (tmp_path / "hub" / "unrelated-s0" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "Qwen/Qwen2-VL-7B-Instruct"}))
    base = ["--data", "study/manifest.jsonl", "--target", "CT,Head,Orientation"]
    cases = [
        # `run` would refuse it: the adapter's base is a hub id, not a folder here
        (["ck/related-s0", "hub/unrelated-s0"], "its base model 'Qwen/Qwen2-VL-7B-Instruct' is not a local folder "
         "here; pass --base DIR"),
        (["ck/related-s0", "ck/model-s1"], "ck/model-s1: its path names no condition"),
        (["ck/related-s0", "ck/related-final"], "ck/related-final: its path names no seed"),
        (["ck/related-s3"], "neither config.json (a Hugging Face checkpoint) nor adapter_config.json"),
        # a Trainer's checkpoint-N whose weights were never gathered: refused here, not after other stores
        (["ck/related-s5"], "ck/related-s5: no weights files (*.safetensors or *.bin)"),
        # `run` would refuse it (a study's folder saved by model.save_pretrained alone passed `init`)
        (["ck/related-s4"], "the folder has no preprocessor_config.json (the image processor) and no tokenizer file"),
        (["ck/related-s0"] + base[:2] + ["--target", "CT,Chest,Orientation"], "no such (modality, anatomy, task)"),
        # `run` would refuse it: no triplet of this manifest is unrelated to the target
        (["ck/related-s0", "ck/unrelated-s0", "--data", "study/only-related.jsonl", *base[2:]],
         "only-related.jsonl is unrelated to it, so the unrelated checkpoint(s) ck/unrelated-s0 have no "
         "training data"),
    ]
    for args, message in cases:
        argv = args + (base if "--target" not in args else [])
        res = _init(argv, tmp_path)
        assert res.exit_code == 2 and res.output.count("error:") == 1, res.output
        assert message in " ".join(res.output.split()), res.output
        assert not (tmp_path / "pipeline.toml").exists()
    # a HF folder and a LoRA adapter: written, the adapter said as such, and it loads
    res = _init(["ck/related-s0", "ck/unrelated-s0", *base], tmp_path)
    assert res.exit_code == 0, res.output
    text = (tmp_path / "pipeline.toml").read_text()
    assert "# Hugging Face checkpoint" in text and "# LoRA adapter" in text
    res = _init(["ck/related-s0", *base], tmp_path)  # an existing file is not replaced
    assert res.exit_code == 2 and "pipeline.toml exists; pass --overwrite" in res.output


@pytest.mark.parametrize("rel, expected", [
    ("related-s0", ("related", 0, None)), ("unrelated_seed1", ("unrelated", 1, None)),
    ("ckpts/related/s2", ("related", 2, None)), ("zero-overlap-s3.h5", ("zero-overlap", 3, None)),
    ("ct-chest-artifact/unrelated-s4", ("unrelated", 4, 1)),
    ("MRI-Brain-Exposure/leave_one_out_seed-5", ("leave-one-out", 5, 0)),
    ("runs/ZeroOverlap-s6", ("zero-overlap", 6, None)), ("leaveoneout_seed7", ("leave-one-out", 7, None)),
    # as trainers lay runs out: a checkpoint folder two levels below the condition, a bare number
    # after the condition, run N; a LoRA rank (r16) is not a seed
    ("saves/related/seed_1/checkpoint-500", ("related", 1, None)), ("out/Qwen2-VL-7B-unrelated-42", ("unrelated", 42, None)),
    ("out/related_run2", ("related", 2, None)), ("lora-r16/unrelated/s3", ("unrelated", 3, None)),
    ("ct-chest-artifact/related/seed-8/checkpoint-1200", ("related", 8, 1)),
    # CrossMed's ablations as run names spell them
    ("out/qwen25vl_wo_task_seed42/checkpoint-300", ("without-task", 42, None)),
    ("without_anatomy-s1", ("without-anatomy", 1, None)), ("no-modality/s2", ("without-modality", 2, None)),
    ("WO_Anat_seed3", ("without-anatomy", 3, None)), ("w_o_mod-s4", ("without-modality", 4, None)),
])
def test_init_reads_condition_seed_and_target_from_the_path(tmp_path, rel, expected):
    from matprobe.scaffold import InitError, parse_entry

    targets = [("MRI", "Brain", "Exposure"), ("CT", "Chest", "Artifact")]
    one = parse_entry(tmp_path / rel, targets[:1])  # one target: every path is that target's
    assert (one["condition"], one["seed"], one["target"]) == (*expected[:2], targets[0])
    if expected[2] is None:  # several targets: a path that names none is refused
        with pytest.raises(InitError, match="with several targets the path must name one of them"):
            parse_entry(tmp_path / rel, targets)
    else:
        assert parse_entry(tmp_path / rel, targets)["target"] == targets[expected[2]]


def test_run_help_says_what_the_pipeline_file_holds():
    out = " ".join(CliRunner(env={"COLUMNS": "120"}).invoke(app, ["run", "--help"]).output.split())
    for section in ("[run]", "[data]", "[design]", "[[checkpoints]]", "[train]", "[extract]", "[mi]", "[check]"):
        assert section in out, section
    assert "matprobe init" in out and "LoRA adapter" in out and "store (extracted already)" in out


def _given_stores_study(tmp_path, label: bool, answered: tuple[bool, bool]):
    """items.jsonl (30 items over 3 triplets, answers A/B) and two stores of it written from arrays
    (related-s0, unrelated-s0), with or without the answer's label column, each with or without the
    model's answers; returns (the pipeline file `init` wrote for them, the stores)."""
    import json

    import numpy as np

    import matprobe as mp

    n = 30
    mat = np.array([("MRI", "Brain", "Plane"), ("CT", "Chest", "Grade"), ("MRI", "Knee", "Plane")])[np.arange(n) % 3]
    with open(tmp_path / "items.jsonl", "w") as fh:
        for i, (m, a, t) in enumerate(mat):
            print(json.dumps({"id": f"q{i}", "question": "Which?", "options": ["yes", "no"], "answer": "AB"[i % 2],
                              "modality": m, "anatomy": a, "task": t}), file=fh)
    labels = dict(zip(("modality", "anatomy", "task"), mat.T))
    if label:
        labels["label"] = np.array(["yes", "no"] * 15)
    stores = [tmp_path / "related-s0.h5", tmp_path / "unrelated-s0.h5"]
    for store, has_answers in zip(stores, answered):
        answers = {"pred": np.arange(n) % 2, "correct": np.ones(n, dtype=int)} if has_answers else None
        mp.EmbeddingStore.from_arrays(store, [f"q{i}" for i in range(n)], labels,
                                      {("3", "last"): np.zeros((n, 2), "float32")}, answers=answers).close()
    path = mp.init(data=tmp_path / "items.jsonl", target=["MRI,Knee,Plane"], store=stores, out=tmp_path / "study.toml")
    return path, stores


def test_run_refuses_a_given_store_without_a_factor_before_any_work(tmp_path):
    # a store written outside `matprobe extract` (here from arrays) may lack the answer's label;
    # `run` names the store, the column and the two fixes before it estimates anything
    from typer.testing import CliRunner

    from matprobe.cli import app

    path, stores = _given_stores_study(tmp_path, label=False, answered=(False, False))
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code == 2
    assert (f"store {str(stores[0])!r} has no label column 'label' for [mi] factors (it has anatomy, modality, task)"
            in " ".join(res.output.split()))
    assert not (tmp_path / "study-run" / "mi").exists()  # refused before the MI step


def test_init_names_a_study_of_symlinks_by_its_links(tmp_path, monkeypatch):
    # checkpoints linked into a per-target layout (not copied: a 7B checkpoint is 14 GB) are named
    # by the links; resolving them named every entry by the one folder they point to
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "x.png")
    trips = [("MRI", "Knee", "Organ"), ("MRI", "Knee", "Lesion"), ("X-ray", "Lung", "Organ"),
             ("X-ray", "Lung", "Lesion"), ("CT", "Brain", "Plane")]
    rows = [{"id": f"{m}{a}{t}{k}", "image": "img/x.png", "question": "q?", "options": ["a", "b"], "answer": k % 2,
             "modality": m, "anatomy": a, "task": t} for m, a, t in trips for k in range(4)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("run-a", "run-b"):  # the real folders, named by nothing the study can read
        (tmp_path / "store" / name).mkdir(parents=True)
        for f in ("config.json", "preprocessor_config.json", "tokenizer.json", "model.safetensors"):  # what `init` checks
            (tmp_path / "store" / name / f).write_text("{}")
    links = []
    for target in ("mri-knee-organ", "x-ray-lung-organ"):
        for cond, real in (("related-s0", "run-a"), ("unrelated-s0", "run-b")):
            (tmp_path / "study" / target).mkdir(parents=True, exist_ok=True)
            (tmp_path / "study" / target / cond).symlink_to(tmp_path / "store" / real)
            links.append(f"study/{target}/{cond}")
    res = _init([*links, "--data", "m.jsonl", "--target", "MRI,Knee,Organ", "--target", "X-ray,Lung,Organ"],
                tmp_path)
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads((tmp_path / "pipeline.toml").read_text())
    got = [(c["name"], c["target"], c["condition"], c["ckpt"]) for c in cfg["checkpoints"]]
    assert got == [(link.split("/")[1] + "-" + link.split("/")[2], list(t), link.split("/")[2][:-3],
                    str(tmp_path / link))
                   for link, t in zip(links, [trips[0], trips[0], trips[2], trips[2]])]


def test_run_refuses_a_given_store_without_answers_before_any_work(tmp_path):
    # `extract --no-answers` (or a store written from arrays) holds no answers: the run's check needs
    # them, and stopped there after every store's MI; it is refused first, naming the store and fix
    from typer.testing import CliRunner

    from matprobe.cli import app

    path, stores = _given_stores_study(tmp_path, label=True, answered=(True, False))
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code == 2
    assert (f"store {str(stores[1])!r} holds no answers of the model (extracted with --no-answers?)"
            in " ".join(res.output.split())), res.output
    assert not (tmp_path / "study-run" / "mi").exists()  # refused before the MI step


def _four_triplet_study(tmp_path, ckpts, names) -> list[dict]:
    """m.jsonl: 24 two-option items over four triplets (target MRI/Knee/Organ has a related and an
    unrelated one), every image img/x.png; a tiny LLaVA checkpoint per name under `ckpts`."""
    from matprobe.extract.tiny import build_tiny_checkpoint

    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "x.png")
    trips = [("MRI", "Knee", "Organ"), ("MRI", "Knee", "Lesion"), ("X-ray", "Lung", "Organ"), ("CT", "Brain", "Plane")]
    rows = [{"id": f"{m}{a}{t}{k}", "image": "img/x.png", "question": "q?", "options": ["a", "b"], "answer": k % 2,
             "modality": m, "anatomy": a, "task": t} for m, a, t in trips for k in range(6)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in names:
        build_tiny_checkpoint(ckpts / name, "llava", seed=1)
    return rows


def test_run_names_the_users_manifest_for_a_missing_image_before_any_work(tmp_path):
    # extraction named the condition's copy of the manifest that the run writes (run/data/related.jsonl)
    # and advised --image-root, an option `run` does not have; the run's preflight names the user's file
    # and the pipeline key, before anything is written
    from typer.testing import CliRunner

    import matprobe as mp
    from matprobe.cli import app

    rows = _four_triplet_study(tmp_path, tmp_path / "ckpts", ("related-s0", "unrelated-s0"))
    path = mp.init([tmp_path / "ckpts" / "related-s0", tmp_path / "ckpts" / "unrelated-s0"], data=tmp_path / "m.jsonl",
                   target=["MRI,Knee,Organ"], out=tmp_path / "study.toml")
    rows[7]["image"] = "img/gone.png"  # the manifest edited after init
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code == 2
    assert (f"{tmp_path / 'm.jsonl'}: 1 of 24 image(s) missing, first sample {rows[7]['id']!r}: "
            f"{tmp_path / 'img' / 'gone.png'}; fix the paths or set [data] image_root") in " ".join(res.output.split())
    assert not (tmp_path / "study-run").exists()


def test_init_refuses_missing_images_where_it_has_checkpoints_to_extract(tmp_path):
    # init wrote a pipeline file for a Med-MAT folder without --image-root (the release ships no
    # images; its paths start med-mat/), and only `run` said so; init says it, naming the option
    # it has, and writes nothing. Stores need no images: init with stores alone is not refused
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.extract.tiny import build_tiny_checkpoint

    choices = {"06": ["glioma", "normal", "metastasis"], "05": ["hemorrhage", "normal"],
               "22": ["glioma", "meningioma", "pituitary", "notumor"], "32": ["tumor", "healthy"]}
    (tmp_path / "medmat").mkdir()
    for subset, options in choices.items():
        recs = [{"id": i, "caption": options[i % len(options)], "image": f"med-mat/set{subset}/{i}.jpg",
                 "Question": "What is shown?", "Answer": options[i % len(options)],
                 "Question-choice": "What is shown?\n" + "\n".join(f"{'ABCD'[k]}: {o}" for k, o in enumerate(options)),
                 "Answer-choice": "ABCD"[i % len(options)], "data-no": ""} for i in range(1, 9)]
        (tmp_path / "medmat" / f"Subset--{subset}-train.json").write_text(json.dumps(recs))
    for name in ("related-s0", "unrelated-s0"):
        build_tiny_checkpoint(tmp_path / "ckpts" / name, "llava", seed=1)
    args = ["init", str(tmp_path / "ckpts" / "related-s0"), str(tmp_path / "ckpts" / "unrelated-s0"), "--data",
            str(tmp_path / "medmat"), "--target", "CT,Brain,Brain Hemorrhage Classification",
            "--out", str(tmp_path / "study.toml")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert (f"{tmp_path / 'medmat'}: 32 of 32 image(s) missing, first sample '05-train-1': med-mat/set05/1.jpg; "
            "fix the paths or pass --image-root DIR (the folder Med-MAT's paths call med-mat/: it replaces that "
            "prefix)") in " ".join(res.output.split()), res.output
    assert not (tmp_path / "study.toml").exists()
    for subset in choices:  # with the images in place under --image-root, init writes the file
        (tmp_path / "images" / f"set{subset}").mkdir(parents=True)
        for i in range(1, 9):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / f"set{subset}" / f"{i}.jpg")
    # the same images in a med-mat/ folder, and the root given one folder too high (the folder that holds
    # med-mat/): init and `data validate` name the folder the image root is
    (tmp_path / "outer").mkdir()
    shutil.copytree(tmp_path / "images", tmp_path / "outer" / "med-mat")
    for cmd in (args, ["data", "validate", str(tmp_path / "medmat")]):
        res = CliRunner().invoke(app, [*cmd, "--image-root", str(tmp_path / "outer")])
        assert res.exit_code != 0, res.output
        said = " ".join(res.output.split())
        assert (f"--image-root {tmp_path / 'outer' / 'med-mat'}" in said  # data validate: its own option
                or f"the images are under {tmp_path / 'outer' / 'med-mat'}: give that folder as the image root "
                   "(--image-root, or [data] image_root in a pipeline file)" in said), res.output
    assert not (tmp_path / "study.toml").exists()
    res = CliRunner().invoke(app, [*args, "--image-root", str(tmp_path / "images")])
    assert res.exit_code == 0, res.output
    written = (tmp_path / "study.toml").read_text()
    assert tomllib.loads(written)["data"]["image_root"] == str(tmp_path / "images")
    # the comments say what a Med-MAT image root is (a study pointed the edited file one folder too high)
    root_line = next(line for line in written.splitlines() if line.startswith("image_root = "))
    assert root_line.endswith("# replaces the records' med-mat/ prefix: the med-mat folder itself")
    assert "# your Med-MAT files" in next(line for line in written.splitlines() if line.startswith("file = "))


def test_init_takes_a_name_for_a_folder_whose_path_names_nothing(tmp_path):
    # a folder that names no condition or seed (saves/qwen/lora/sft, read-only shared storage) was
    # refused with "name each folder by its condition and seed"; NAME=PATH names it in place
    import matprobe as mp

    _four_triplet_study(tmp_path, tmp_path / "saves", ("sft", "sft2"))
    res = _init([str(tmp_path / "saves" / "sft"), "--data", str(tmp_path / "m.jsonl"), "--target", "MRI,Knee,Organ"],
                tmp_path)
    assert res.exit_code == 2 and "or name it on the command line: related-s0=PATH" in " ".join(res.output.split())
    path = mp.init([f"related-s3={tmp_path / 'saves' / 'sft'}", f"unrelated_seed1={tmp_path / 'saves' / 'sft2'}"],
                   data=tmp_path / "m.jsonl", target=["MRI,Knee,Organ"], out=tmp_path / "study.toml")
    got = [(c["name"], c["condition"], c["seed"], c["ckpt"]) for c in tomllib.loads(path.read_text())["checkpoints"]]
    assert got == [("related-s3", "related", 3, str(tmp_path / "saves" / "sft")),
                   ("unrelated-s1", "unrelated", 1, str(tmp_path / "saves" / "sft2"))]


def test_training_rows_of_checkpoints_trained_elsewhere_and_a_constant_z_in_the_report(tmp_path):
    # `run` took an equalised random subset of the training triplets' rows as every checkpoint's
    # training set, the demo's recipe for the models it fine-tunes itself; for the user's own
    # checkpoints that is a training set that never was, and the PAC bounds' training error was
    # measured on it. Now: every row of the condition's training triplets, only those marked
    # split = train where the manifest marks any, and the report says which
    import json

    from matprobe.data import load_dataset
    from matprobe.pipeline import _training_ids, load_pipeline, run_pipeline

    path, _ = _given_stores_study(tmp_path, label=True, answered=(True, True))
    cfg = load_pipeline(path)
    rows = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    by_triplet = {}
    for r in rows:
        by_triplet.setdefault((r["modality"], r["anatomy"], r["task"]), []).append(r["id"])
    related, unrelated = by_triplet[("MRI", "Brain", "Plane")], by_triplet[("CT", "Chest", "Grade")]
    ids = _training_ids(load_dataset(tmp_path / "items.jsonl"), cfg)
    assert ids == {"related": sorted(related), "unrelated": sorted(unrelated)}
    marked = tmp_path / "marked.jsonl"  # the user's own split: the first 6 rows of each triplet trained on
    firsts = {i for v in by_triplet.values() for i in v[:6]}
    marked.write_text("".join(json.dumps({**r, "split": "train" if r["id"] in firsts else "test"}) + "\n"
                              for r in rows))
    ids = _training_ids(load_dataset(marked), cfg)
    assert ids == {"related": sorted(related[:6]), "unrelated": sorted(unrelated[:6])}

    run_pipeline(cfg, progress=None)
    report = " ".join((tmp_path / "study-run" / "report.md").read_text().split())
    assert ("Training rows per condition, as this run takes them: related 10, unrelated 10 (every row of each "
            "condition's training triplets (the manifest marks no split = train rows)).") in report
    assert "equalised" not in report
    # the stores' features are all 0 (Z constant): the report died looking for the most encoded
    # factor, and called I(Z;modality) "not identifiable: H(modality) = 0" (H is 0.637 nats here)
    assert ("**Which MAT factor is most encoded?** None can be told apart: at each checkpoint's main layer and "
            "pool Z is the same for every item (flag constant-features), so every term is exactly 0") in report
    assert "| related-s0 | Related | I(Z;modality) | 0.000 | [0.000, 0.000] | 0.637 | 30 |" in report
    assert "H(modality) = 0" not in report


def test_a_target_is_found_whatever_its_case_and_a_path_names_it_with_spaces(tmp_path):
    # Med-MAT's task names are capitalised as published ('COVID-19 Classification'); a target typed
    # 'ct,lung,covid-19 classification' was "no such triplet" (the canonical spelling gave 'Covid-19
    # Classification'); and a folder named with the task's spaces did not name its target
    from matprobe.data import MATDataset, make_split
    from matprobe.data.model import Sample
    from matprobe.scaffold import _targets, parse_entry

    trips = [("CT", "Lung", "COVID-19 Classification"), ("CT", "Lung", "Lung Cancer Classification"),
             ("X-ray", "Brain", "Tumor Classification")]
    data = MATDataset([Sample(id=f"{k}{i}", image="x.png", question="q", options=("a", "b"), answer_index=i % 2,
                              modality=m, anatomy=a, task=t) for k, (m, a, t) in enumerate(trips) for i in range(4)])
    assert _targets(data, ["ct, lung ,covid-19  classification"]) == [trips[0]]
    split = make_split(data, "ct,lung,covid-19 classification", "related")
    assert sorted({(s.triplet, s.split) for s in split}) == [(trips[0], "test"), (trips[1], "train")]
    got = parse_entry(tmp_path / "CT Lung COVID-19 Classification" / "related s0", [trips[0], trips[2]])
    assert (got["condition"], got["seed"], got["target"]) == ("related", 0, trips[0])


def test_run_refuses_a_target_spelt_otherwise_than_the_data(tmp_path):
    # init writes the data's spelling; a pipeline file edited by hand in another case would pass the
    # split (found whatever the case) but mark no held-out rows: refused before any work
    from typer.testing import CliRunner

    from matprobe.cli import app

    path, _ = _given_stores_study(tmp_path, label=True, answered=(True, True))
    path.write_text(path.read_text().replace('"MRI", "Knee", "Plane"', '"mri", "knee", "plane"'))
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code == 2, res.output
    assert ("target triplet mri,knee,plane is read as MRI,Knee,Plane from the data (labels are read in one "
            "spelling: known modality names in their canonical form, e.g. X-ray, Ultrasound; an anatomy or task "
            "written all in lower case, title-cased; any other label as written, so acronyms stay (COVID)); write "
            "it so" in " ".join(res.output.split())), res.output
    assert not (tmp_path / "study-run" / "mi").exists()


def test_a_study_of_crossmeds_ablations_gives_table_ix_rows(tmp_path):
    # CrossMed's Table IX compares "Without Modality" (and Anatomy, Task) with Related; `init` refused
    # such checkpoints ("names no condition"), so `run` could not give those rows
    import json

    import pandas as pd

    import matprobe as mp

    trips = [("CT", "Brain", "Hemorrhage"), ("MRI", "Brain", "Hemorrhage"), ("CT", "Brain", "Cancer"),
             ("CT", "Spine", "Hemorrhage")]
    n = 48
    mat = np.array(trips)[np.arange(n) % 4]
    y = (np.arange(n) // 4) % 2
    with open(tmp_path / "items.jsonl", "w") as fh:
        for i, (m, a, t) in enumerate(mat):
            print(json.dumps({"id": f"q{i}", "question": "Which?", "options": ["yes", "no"], "answer": int(y[i]),
                              "modality": m, "anatomy": a, "task": t}), file=fh)
    labels = {**dict(zip(("modality", "anatomy", "task"), mat.T)), "label": np.array(["yes", "no"])[y]}
    rng = np.random.default_rng(0)
    stores = []
    for name, right in (("related-s0", 0.9), ("related-s1", 0.8), ("without_modality_seed0", 0.5),
                        ("without_modality_seed1", 0.6)):
        pred = np.where(rng.random(n) < right, y, 1 - y)
        stores.append(tmp_path / f"{name}.h5")
        mp.EmbeddingStore.from_arrays(stores[-1], [f"q{i}" for i in range(n)], labels,
                                      {("3", "last"): rng.standard_normal((n, 3)).astype("float32")},
                                      answers={"pred": pred, "correct": (pred == y).astype(int)}).close()
    path = mp.init(data=tmp_path / "items.jsonl", target=["CT,Brain,Hemorrhage"], store=stores,
                   out=tmp_path / "study.toml", seeds=1, folds=2)
    res = mp.run(path, progress=False)
    results = res.frame()
    acc = results[results.metric == "accuracy"].set_index(["condition", "seed"]).value
    store_acc = {}
    for store, (cond, seed) in zip(stores, [("Related", 0), ("Related", 1), ("Without Modality", 0),
                                            ("Without Modality", 1)]):
        with mp.EmbeddingStore.open(store) as st:
            target_rows = (st.samples()["task"] == "Hemorrhage").to_numpy() & (st.samples()["modality"] == "CT").to_numpy() \
                & (st.samples()["anatomy"] == "Brain").to_numpy()
            store_acc[cond, seed] = float(st.answers()["correct"][target_rows].mean())
    assert {k: float(acc[k]) for k in store_acc} == store_acc
    sig = pd.read_csv(res.run_dir / "significance.csv")
    assert set(sig["comparison"]) == {"Without Modality vs. Related"}
    report = " ".join((res.run_dir / "report.md").read_text().split())
    row = sig[sig.metric == "accuracy"].iloc[0]
    assert (f"**Is the Without Modality–Related difference significant?** Accuracy on the held-out target: "
            f"Without Modality {np.mean([store_acc['Without Modality', s] for s in (0, 1)]):.3f}, Related "
            f"{np.mean([store_acc['Related', s] for s in (0, 1)]):.3f} (2 seeds each, paired by seed), "
            f"Δ = {row.mean_diff:.3f}.") in report


def test_init_takes_the_stores_a_shell_glob_leaves_after_one_store_flag(tmp_path):
    """`matprobe init --store stores/*.h5 ...`: the shell gives every file after the first as a
    positional argument; a positional HDF5 file is a store, so the pipeline is the one that
    `--store` repeated writes (it was 'no such checkpoint folder')."""
    import tomllib

    from typer.testing import CliRunner

    from matprobe.cli import app

    path, stores = _given_stores_study(tmp_path, label=True, answered=(True, True))
    repeated = tomllib.loads(path.read_text())["checkpoints"]
    res = CliRunner().invoke(app, ["init", "--store", str(stores[0]), str(stores[1]), "--data",
                                   str(tmp_path / "items.jsonl"), "--target", "MRI,Knee,Plane",
                                   "--out", str(tmp_path / "glob.toml")])
    assert res.exit_code == 0, res.output
    globbed = tomllib.loads((tmp_path / "glob.toml").read_text())["checkpoints"]
    assert globbed == repeated and {e["store"] for e in globbed} == {str(s) for s in stores}


def test_init_takes_a_column_map_and_writes_it_into_the_pipeline(tmp_path):
    """A manifest whose column names are its own ('organ site', 'clinical VQA task', as
    GMAI-MMBench's are): `init` refused it with no way to map them (`extract` and `data validate`
    have --columns); now `init --columns` reads it and writes the map into [data] columns, which the
    run's loader reads back."""
    import tomllib

    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.pipeline import load_pipeline

    path, stores = _given_stores_study(tmp_path, label=True, answered=(True, True))
    rows = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    renamed = [{("organ site" if k == "anatomy" else "clinical VQA task" if k == "task" else k): v
                for k, v in r.items()} for r in rows]
    (tmp_path / "own.jsonl").write_text("".join(json.dumps(r) + "\n" for r in renamed))
    args = ["init", "--store", str(stores[0]), "--store", str(stores[1]), "--data", str(tmp_path / "own.jsonl"),
            "--target", "MRI,Knee,Plane", "--out", str(tmp_path / "own.toml")]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--columns" in refused.output and not (tmp_path / "own.toml").exists()
    res = CliRunner().invoke(app, [*args, "--columns", "organ site=anatomy,clinical VQA task=task"])
    assert res.exit_code == 0, res.output
    doc = tomllib.loads((tmp_path / "own.toml").read_text())
    assert doc["data"]["columns"] == {"organ site": "anatomy", "clinical VQA task": "task"}
    assert doc["checkpoints"] == tomllib.loads(path.read_text())["checkpoints"]
    assert load_pipeline(tmp_path / "own.toml").columns == {"organ site": "anatomy", "clinical VQA task": "task"}


def test_own_data_without_models_runs_through_the_toy_fine_tuning_as_the_readme_says(tmp_path, monkeypatch):
    """README, "No fine-tuned models yet?": the demo's pipeline file with its [run] out, [data] table
    and target replaced runs the whole path on your manifest (a README-only user study did this
    with its own column names: the fine-tuning workers read the manifest without them). Settings
    cut for time: 4 fine-tuning steps, one seed, no controls, 2 MI seeds x 2 folds."""
    import re

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    readme = (ROOT / "README.md").read_text()
    assert "No fine-tuned models yet?" in readme and 'file = "study/manifest.jsonl"' in readme
    build_own_study(tmp_path)
    manifest = tmp_path / "study" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    renamed = [{("scan" if k == "image" else "kind" if k == "modality" else k): v for k, v in r.items()} for r in rows]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in renamed))  # the study's own column names
    text = (ROOT / "experiments" / "demo" / "pipeline.toml").read_text()
    text = text.replace('out = "reports/demo"', 'out = "trial-run"')
    text = re.sub(r"\[data\]\n(.*\n)*?\n", '[data]\nfile = "study/manifest.jsonl"\ncolumns = {scan = "image", '
                  'kind = "modality"}\n\n', text, count=1)
    text = re.sub(r"target = \[.*\]", f"target = {json.dumps(list(TARGET))}", text, count=1)
    text = re.sub(r"extra_targets = .*\n", "", text)
    for old, new in (("steps = 60", "steps = 4"), ("seeds = [0, 1, 2]", "seeds = [0]"), ("seeds = 3", "seeds = 2"),
                     ("folds = 5", "folds = 2"), ("controls = true", "controls = false"),
                     ("codelength = true", "codelength = false")):
        assert old in text, old
        text = text.replace(old, new, 1)
    (tmp_path / "trial.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", "trial.toml"])
    assert res.exit_code == 0, res.output[-1500:]
    report = (tmp_path / "trial-run" / "report.md").read_text()
    assert "MRI / Head / Orientation" in report
    assert "tiny random-initialised LLaVA models that this run fine-tuned on these rows ([train], 4 steps)" in report
    doc = json.loads((tmp_path / "trial-run" / "run.json").read_text())
    assert [ck["trained_here"] for ck in doc["checkpoints"]] == [True, True]
    assert doc["n_samples"] == len(rows)


def test_a_pipeline_file_of_stores_says_it_reads_them_not_that_it_extracts(tmp_path):
    """init on --store files only wrote "It extracts each checkpoint's embeddings" (a README-only
    user study); its opening lines now say where the embeddings come from."""
    path, _ = _given_stores_study(tmp_path, label=False, answered=(True, True))
    head = path.read_text().split("[run]")[0]
    assert "extracts" not in head
    assert ("# It reads each store's embeddings and answers, extracted already (the manifest's split\n"
            "# column set per condition and target),\n"
            "# estimates the MI chain, checks Fano and PAC, compares the conditions and writes the report.\n") in head


def test_init_with_stores_writes_the_layers_and_pools_they_hold(tmp_path):
    """Two README-only studies: `init --store` wrote layers "-1", pools "last" while the stores held
    layers 1 and 2 (3) and pools last and image, and `run` estimated every one of those cells under a
    configuration table that named "-1" and "last"."""
    import tomllib

    import numpy as np

    import matprobe as mp
    from matprobe.pipeline import load_pipeline

    _, stores = _given_stores_study(tmp_path, label=True, answered=(True, True))
    n = 30
    with mp.EmbeddingStore.open(stores[0]) as st:
        labels = {c: [st.factor(c)[1][k] for k in st.factor(c)[0]] for c in st.label_columns()}
    feats = {(lay, pool): np.zeros((n, 2), "float32") for lay in ("1", "2") for pool in ("last", "image")}
    for store in stores:
        mp.EmbeddingStore.from_arrays(store, [f"q{i}" for i in range(n)], labels, feats, overwrite=True,
                                      answers={"pred": np.arange(n) % 2, "correct": np.ones(n, dtype=int)}).close()
    path = mp.init(data=tmp_path / "items.jsonl", target=["MRI,Knee,Plane"], store=stores, out=tmp_path / "s.toml")
    doc = tomllib.loads(path.read_text())
    with mp.EmbeddingStore.open(stores[0]) as st:
        keys = st.feature_keys()
    assert doc["extract"]["layers"] == ",".join(dict.fromkeys(a for a, _ in keys)) == "1,2"
    assert doc["extract"]["pools"].split(",") == list(dict.fromkeys(b for _, b in keys))
    assert set(doc["extract"]["pools"].split(",")) == {"last", "image"}
    assert "the layers and pools your stores hold" in path.read_text()
    cfg = load_pipeline(path)  # read back as a pipeline (init does too)
    assert str(cfg.layers) == "1,2"
