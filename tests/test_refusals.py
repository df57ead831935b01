"""Mistakes a user makes on their own study (issue 20, items 4-8), run as the user runs them
(`python -m matprobe ...` in a subprocess): one `error:` line naming the fix, exit 2, before any
model loads (< 2 s); misnamed columns; designs the data cannot answer; Ctrl-C and SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import synthetic_mat_store
from matprobe.checks import check_factors, check_fraction, check_level
from matprobe.data.entropy import conditional_entropy
from matprobe.errors import BoundsError, MatprobeError, StatsError
from matprobe.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
LIMIT_S = 2.0  # item 5: the error line within 2 s of start
IDLE_STARTUP_S = 0.5  # `matprobe --version` on an idle machine takes about 0.3-0.5 s


def matprobe(*args, cwd=None, timeout=300):
    """Run the CLI as a user does; returns (CompletedProcess, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "matprobe", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)
    return proc, time.perf_counter() - t0


def one_error(proc) -> str:
    """Exactly one `error:` line on stderr, exit 2, no traceback; returns the line."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "matprobe bug" not in lines[0]
    return lines[0]


def _startup_s() -> float:
    """Best of three `matprobe --version`: what starting the CLI alone costs on this machine now."""
    return min(matprobe("--version")[1] for _ in range(3))


def fast_error(*args, cwd=None) -> str:
    """one_error, refused before anything heavy is imported and within LIMIT_S of start.

    Heavy means torch, transformers, pandas, scipy: checked with -X importtime, which does not
    depend on the machine's load. The wall time is the best of three runs; on a machine so busy
    that starting the CLI alone takes longer than IDLE_STARTUP_S, the limit grows in proportion
    (this suite runs on a shared 2-core machine), and the message says so.
    """
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "matprobe", *map(str, args)],
                          capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    heavy = sorted(imported & {"torch", "transformers", "pandas", "scipy", "sklearn", "matplotlib"})
    assert not heavy, f"imported {heavy} before refusing"
    times = []
    for _ in range(3):
        proc, seconds = matprobe(*args, cwd=cwd, timeout=120)
        line = one_error(proc)
        times.append(seconds)
        if seconds < LIMIT_S:
            return line
    startup = _startup_s()
    limit = LIMIT_S * max(1.0, startup / IDLE_STARTUP_S)
    assert min(times) < limit, (f"refused after {min(times):.2f} s (limit {limit:.2f} s; `matprobe --version` "
                                f"takes {startup:.2f} s now): {line}")
    return line


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synthetic_mat_store(tmp_path_factory.mktemp("refuse") / "s.h5", seed=0, n=160, d=4, accuracy=0.8,
                               signal=[("modality", "CT", 2.0)])


def _records(n: int = 24) -> list[dict]:
    mods, anas, tasks = ["CT", "MRI", "X-ray"], ["Chest", "Brain"], ["Classification", "Orientation"]
    return [dict(id=f"r{i:03d}", image=f"img/{i}.png", question="What is shown?",
                 options=["Normal", "Tumor", "Cyst", "Stone"], answer=(i // 12 + i) % 4, modality=mods[i % 3],
                 anatomy=anas[(i // 3) % 2], task=tasks[(i // 6) % 2]) for i in range(n)]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    from PIL import Image

    (path.parent / "img").mkdir(parents=True, exist_ok=True)
    for i in range(len(records)):
        img = path.parent / "img" / f"{i}.png"
        if not img.exists():
            Image.fromarray(np.full((28, 28, 3), i % 255, dtype=np.uint8)).save(img)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _renamed(records, names: dict) -> list[dict]:
    return [{names.get(k, k): v for k, v in r.items()} for r in records]


@pytest.fixture()
def manifest(tmp_path) -> Path:
    return _write_jsonl(tmp_path / "data.jsonl", _records())


@pytest.fixture()
def fake_ckpt(tmp_path) -> Path:
    """A checkpoint folder's shape (config.json of a 4-block llava, a weights file): enough for every
    check made before a model loads; loading it would fail, so a test that passes the checks would
    fail loudly instead of hiding a missed refusal."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {"num_hidden_layers": 4}}))
    (folder / "model.safetensors").write_bytes(b"")
    for name in ("preprocessor_config.json", "tokenizer.json"):  # the processor's files (not read here)
        (folder / name).write_text("{}")
    return folder


# ---------------------------------------------------------------- item 4: one validator
@pytest.mark.parametrize("value, kind, expected", [
    (0.95, {}, 0.95), (0.0, {"low_open": False}, 0.0), (1.0, {"high_open": False}, 1.0),
])
def test_check_fraction_accepts_fractions(value, kind, expected):
    assert check_fraction(value, "--x", **kind) == expected


@pytest.mark.parametrize("value, fix", [(95, "did you mean 0.95?"), (16.8, "did you mean 0.168?"),
                                        (100, "did you mean 1?"), (0, "e.g. 0.95"), (1, "e.g. 0.95"),
                                        (-0.1, "e.g. 0.95"), (float("nan"), "e.g. 0.95"), (250, "e.g. 0.95"),
                                        ("high", "is not a number")])
def test_check_fraction_refuses_with_the_fix(value, fix):
    with pytest.raises(StatsError) as info:
        check_fraction(value, "--level", error=StatsError)
    assert fix in str(info.value) and str(info.value).startswith("--level ")


def test_the_bounds_use_the_same_validator():
    from matprobe.theory import fano, pac

    with pytest.raises(BoundsError, match=r"error 16\.8 is outside \[0, 1\].*did you mean 0\.168\?"):
        fano.check_error(16.8)
    with pytest.raises(BoundsError, match=r"delta 5 is outside \(0, 1\).*did you mean 0\.05\?"):
        pac.check_delta(5)
    assert check_level(0.9) == 0.9


@pytest.mark.parametrize("command", ["mi", "sweep", "compare", "relate", "check"])
def test_level_in_percent_is_one_line_naming_the_fraction(command, store, tmp_path):
    args = {"mi": ["--layer", "4"], "sweep": ["--out", tmp_path / "sw.csv"], "compare": ["--layer-b", "4"],
            "relate": [], "check": ["--out", tmp_path / "check.json"]}[command]
    line = fast_error(command, store, *args, "--level", "95")  # the argument alone shows it: before torch
    assert "--level 95" in line and "did you mean 0.95?" in line
    assert not (tmp_path / "sw.csv").exists() and not (tmp_path / "check.json").exists()


def _results_csv(path: Path, scale: float = 1.0) -> Path:
    rows = ["condition,target,seed,metric,value"]
    for seed in range(4):
        rows.append(f"Related,t0,{seed},accuracy,{scale * (0.30 + 0.01 * seed):g}")
        rows.append(f"Unrelated,t0,{seed},accuracy,{scale * (0.25 + 0.02 * seed):g}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_significance_level_and_alpha(tmp_path):
    res = _results_csv(tmp_path / "r.csv")
    assert "did you mean 0.95?" in one_error(matprobe("significance", res, "--level", "95")[0])
    assert "did you mean 0.05?" in one_error(matprobe("significance", res, "--alpha", "5")[0])
    from matprobe.stats.significance import significance

    with pytest.raises(StatsError, match=r"--level 95 .*did you mean 0\.95\?"):
        significance(res, level=95)


def test_accuracy_in_percent_is_refused_unless_said(tmp_path):
    """All-percent accuracy is refused with the fix; --percent (the published tables' unit) accepts
    it and says so; a mix is refused even then."""
    res = _results_csv(tmp_path / "pct.csv", scale=100)  # 30, 31, ..., 25, 27, ...
    top = max(100 * (0.30 + 0.01 * s) for s in range(4))
    line = one_error(matprobe("significance", res)[0])
    assert f"metric 'accuracy' is in percent (values up to {top:g})" in line
    assert "divide the values by 100, or pass --percent" in line
    import matprobe as mp
    with pytest.raises(StatsError, match="pass --percent"):
        mp.significance(res)
    proc, _ = matprobe("significance", res, "--percent")
    assert proc.returncode == 0, proc.stderr
    assert (f"note: metric 'accuracy' is in percent (values up to {top:g}): its differences and intervals are "
            "in percentage points") in proc.stdout + proc.stderr
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(res.read_text().replace("Unrelated,t0,0,accuracy,25", "Unrelated,t0,0,accuracy,0.25")
                     .replace("Unrelated,t0,1,accuracy,27", "Unrelated,t0,1,accuracy,0.27")
                     .replace("Unrelated,t0,2,accuracy,29", "Unrelated,t0,2,accuracy,0.29")
                     .replace("Unrelated,t0,3,accuracy,31", "Unrelated,t0,3,accuracy,0.31"))
    line = one_error(matprobe("significance", mixed, "--percent")[0])
    assert "mixes units" in line and "divide the percent rows by 100" in line


@pytest.mark.parametrize("factors, named", [("M,M,T", "M twice"), ("M,modality,T", "M and modality"),
                                            ("anatomy,A", "anatomy and A")])
def test_duplicate_factors_are_refused(factors, named, store, tmp_path):
    line = fast_error("mi", store, "--layer", "4", "--factors", factors)
    assert named in line and "list each factor once" in line
    line = fast_error("sweep", store, "--out", tmp_path / "sw.csv", "--factors", factors)
    assert named in line
    assert check_factors(["M", "A", "T"]) == ["M", "A", "T"]
    import matprobe as mp

    with pytest.raises(MatprobeError, match="more than once"):
        mp.mi(store, factors, layer="4")


def test_negative_pca_is_refused(store):
    assert "--pca -5" in fast_error("mi", store, "--layer", "4", "--pca", "-5")


@pytest.mark.parametrize("command", ["mi", "sweep", "compare", "relate", "check"])
def test_a_missing_store_or_a_folder_is_refused_at_once(command, tmp_path):
    args = {"sweep": ["--out", tmp_path / "sw.csv"], "check": ["--out", tmp_path / "check.json"]}.get(command, [])
    line = fast_error(command, tmp_path / "nope.h5", *args)
    assert line == f"error: {tmp_path / 'nope.h5'}: no such store; create it with `matprobe extract`"
    line = fast_error(command, tmp_path, *args)
    assert f"{tmp_path} is a folder, not a store file" in line
    assert not (tmp_path / "sw.csv").exists() and not (tmp_path / "check.json").exists()


def test_user_mistakes_are_not_called_bugs(manifest, tmp_path, store):
    line = one_error(matprobe("data", "split", manifest, "--target", "CT,Chest,Classification",
                              "--config", "relatd", "--out", tmp_path / "o.jsonl")[0])
    assert "did you mean 'related'?" in line and "leave-one-out" in line
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"kind": "matprobe.run", "checkpoints": [{"name": "a", ')  # truncated
    line = one_error(matprobe("report", run)[0])
    assert "run.json: not valid JSON" in line and "rerun the pipeline" in line
    (run / "run.json").write_text("[]")
    assert "not the object matprobe writes" in one_error(matprobe("report", run)[0])
    line = one_error(matprobe("store", "info", tmp_path)[0])  # a folder, whose HDF5 message spans lines
    assert "is a folder, not a store" in line


# ---------------------------------------------------------------- item 5: refuse before loading
def test_checkpoint_without_config_is_refused_at_once(manifest, tmp_path):
    folder = tmp_path / "weights_only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    line = fast_error("extract", "--ckpt", folder, "--data", manifest, "--out", tmp_path / "s.h5")
    assert "no config.json" in line and "Hugging Face checkpoint folder" in line
    empty = tmp_path / "no_weights"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "llava"}))
    line = fast_error("extract", "--ckpt", empty, "--data", manifest, "--out", tmp_path / "s.h5")
    assert "no weights files" in line and "save_pretrained" in line
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("missing, named", [
    (["tokenizer.json"], ["no tokenizer file"]),
    (["preprocessor_config.json"], ["no preprocessor_config.json"]),
    (["tokenizer.json", "preprocessor_config.json"], ["no preprocessor_config.json", "no tokenizer file"]),
])
def test_checkpoint_saved_without_its_processor_is_refused_at_once(manifest, fake_ckpt, tmp_path, missing, named):
    # model.save_pretrained alone writes no processor; without its vocabulary transformers 5 built
    # an empty tokenizer and the run failed later on the option letters, naming neither cause
    for name in missing:
        (fake_ckpt / name).unlink()
    line = fast_error("extract", "--ckpt", fake_ckpt, "--data", manifest, "--out", tmp_path / "s.h5")
    for text in named + ["copy the processor files from the model it was fine-tuned from",
                         f"AutoProcessor.from_pretrained(BASE).save_pretrained('{fake_ckpt}') (for Qwen2-VL and "
                         "Qwen2.5-VL that needs torchvision installed, which matprobe itself does not: else copy "
                         "the files)"]:
        assert text in line, line
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("option, expected", [
    (["--dtype", "fp99"], "--dtype 'fp99' is not one of fp32, bf16, fp16"),
    (["--layers", "12"], "index 12 is out of range for a 4-block decoder; use -4..3"),
    (["--layers", "mid"], "'mid' is not a layer"),
    (["--pool", "avg"], "unknown pool(s) avg"),
    (["--attn", "flash"], "--attn 'flash' is not one of sdpa"),
    (["--device", "gpu"], "--device 'gpu': use cpu or cuda"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
])
def test_bad_options_are_refused_at_once(option, expected, manifest, fake_ckpt, tmp_path):
    line = fast_error("extract", "--ckpt", fake_ckpt, "--data", manifest, "--out", tmp_path / "s.h5",
                      "--layers", "-1", *option)
    assert expected in line


def test_locked_output_is_refused_at_once(manifest, fake_ckpt, tmp_path):
    from matprobe.locks import writer_lock

    out = tmp_path / "s.h5"
    with writer_lock(out):  # this process is the running writer
        line = fast_error("extract", "--ckpt", fake_ckpt, "--data", manifest, "--out", out, "--layers", "-1")
    assert f"in use by process {os.getpid()}" in line and "choose another --out" in line


def test_existing_store_of_other_samples_or_settings_is_refused_at_once(manifest, fake_ckpt, tmp_path):
    out = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(out, ["x1", "x2"], {"modality": ["CT", "MRI"]},
                               {("3", "last"): np.zeros((2, 2), np.float32)}).close()
    line = fast_error("extract", "--ckpt", fake_ckpt, "--data", manifest, "--out", out, "--layers", "-1")
    assert "made from a different sample list" in line and "--overwrite" in line
    folder = tmp_path / "folder_out"
    folder.mkdir()
    line = fast_error("extract", "--ckpt", fake_ckpt, "--data", manifest, "--out", folder, "--layers", "-1")
    assert "is a folder; give a file name" in line


def test_misnamed_manifest_columns_are_refused_at_once(fake_ckpt, tmp_path):
    bad = _write_jsonl(tmp_path / "bad.jsonl", _renamed(_records(), {"options": "opts", "anatomy": "anatomie"}))
    line = fast_error("extract", "--ckpt", fake_ckpt, "--data", bad, "--out", tmp_path / "s.h5", "--layers", "-1")
    assert "unknown column(s) opts, anatomie" in line and "missing options, anatomy" in line
    assert "--columns opts=options,anatomie=anatomy" in line


def _pipeline(path: Path, manifest: Path, ckpt: Path, level="0.95", target='["CT","Chest","Classification"]'):
    path.write_text(f"""[run]
out = "{path.parent / 'run'}"
[data]
file = "{manifest}"
[design]
target = {target}
conditions = ["related"]
[[checkpoints]]
name = "a"
condition = "related"
seed = 0
ckpt = "{ckpt}"
[extract]
layers = "-1"
[mi]
level = {level}
""")
    return path


def test_run_refuses_before_training_or_loading(manifest, fake_ckpt, tmp_path):
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    line = fast_error("run", _pipeline(tmp_path / "a.toml", manifest, no_config))
    assert "[[checkpoints]] 'a'" in line and "no config.json" in line
    line = fast_error("run", _pipeline(tmp_path / "b.toml", manifest, fake_ckpt, level="95"))
    assert "[mi] level 95" in line and "did you mean 0.95?" in line
    line = fast_error("run", _pipeline(tmp_path / "c.toml", manifest, fake_ckpt, target='["CT","Chest","Classif"]'))
    assert "target triplet CT,Chest,Classif has no samples" in line
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- item 6: columns
def test_common_aliases_read_as_the_expected_columns(tmp_path):
    from matprobe.data import load_dataset

    plain = load_dataset(_write_jsonl(tmp_path / "plain.jsonl", _records()))
    names = {"image": "img", "options": "choices", "modality": "Modality", "anatomy": "body_part",
             "id": "sample_id", "question": "prompt"}
    aliased = load_dataset(_write_jsonl(tmp_path / "aliased.jsonl", _renamed(_records(), names)))
    assert aliased.samples == plain.samples
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _renamed(_records(), {"image": "image_path", "options": "choices", "task": "Task"})
    for r in rows:
        r["image_path"] = str(tmp_path / r["image_path"])
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "aliased.parquet")
    from_parquet = load_dataset(tmp_path / "aliased.parquet")
    assert [(s.id, s.options, s.task, Path(s.image).name) for s in from_parquet] == \
        [(s.id, s.options, s.task, Path(s.image).name) for s in plain]


def test_a_manifest_without_ids_names_items_by_row_and_slake_img_name_is_the_image(tmp_path):
    """A CSV with no id column (many exports have none) loads, each item named by its row, said in a
    note; SLAKE's `img_name` is read as the image. The same items as the manifest with ids."""
    import pandas as pd

    from matprobe.data import load_dataset

    plain = load_dataset(_write_jsonl(tmp_path / "plain.jsonl", _records()))
    frame = pd.DataFrame(_renamed(_records(), {"image": "img_name"})).drop(columns="id")
    frame["options"] = frame["options"].map("|".join)
    frame.to_csv(tmp_path / "noid.csv", index=False)
    loaded = load_dataset(tmp_path / "noid.csv")
    assert [s.id for s in loaded] == [f"row-{i + 1}" for i in range(len(plain))]
    assert [(s.question, s.options, s.answer, s.triplet, Path(s.image).name) for s in loaded] == \
        [(s.question, s.options, s.answer, s.triplet, Path(s.image).name) for s in plain]
    proc, _ = matprobe("data", "validate", tmp_path / "noid.csv")
    assert proc.returncode == 0 and "no problems found" in proc.stdout
    notes = " ".join((proc.stdout + proc.stderr).split())
    assert "column 'img_name' read as 'image'" in notes
    assert "no id column: each item is named by its row (row-1, row-2, ...)" in notes


def test_benchmark_layouts_options_per_letter_column_and_inline_images(tmp_path, monkeypatch):
    """A VLMEvalKit-style TSV (GMAI-MMBench's layout: `index`, options in columns `A`..`D` with empty
    cells where an item has fewer, a letter answer, the image as base64 PNG in the cell) and an
    OmniMedVQA-style JSON (`question_id`, `image_path`, `option_A`.., `gt_answer` text,
    `modality_type`): each loads to the same items as the plain manifest, the inline images cached
    as files whose pixels are the originals."""
    import base64
    import csv
    import io

    from PIL import Image

    from matprobe.data import load_dataset
    from matprobe.data.images import load_image

    monkeypatch.setenv("MATPROBE_IMAGE_CACHE", str(tmp_path / "cache"))
    recs = _records(12)
    _write_jsonl(tmp_path / "plain.jsonl", recs)  # the images
    recs = [{**r, "options": r["options"][: 2 + i % 3]} for i, r in enumerate(recs)]  # 2-4 options
    recs = [{**r, "answer": min(r["answer"], len(r["options"]) - 1)} for r in recs]
    plain = load_dataset(_write_jsonl(tmp_path / "plain.jsonl", recs))
    rows, jpeg = [], {}
    for i, r in enumerate(recs):
        buf = io.BytesIO()
        # PNG and JPEG cells (a base64 JPEG starts with '/9j/', as an absolute path does with '/')
        Image.open(tmp_path / r["image"]).save(buf, format="PNG" if i % 2 else "JPEG")
        if not i % 2:
            jpeg[r["id"]] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        row = {"index": r["id"], "question": r["question"], "answer": "ABCD"[r["answer"]],
               "image": base64.b64encode(buf.getvalue()).decode(), "modality": r["modality"],
               "body_part": r["anatomy"], "task": r["task"]}
        row.update({letter: (r["options"][k] if k < len(r["options"]) else "") for k, letter in enumerate("ABCD")})
        rows.append(row)
    with open(tmp_path / "bench.tsv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    omni = [{"question_id": r["id"], "question": r["question"], "image_path": r["image"],
             "gt_answer": r["options"][r["answer"]], "modality_type": r["modality"], "organ": r["anatomy"],
             "question_type": r["task"], **{f"option_{letter}": o for letter, o in zip("ABCD", r["options"])}}
            for r in recs]
    (tmp_path / "omni.json").write_text(json.dumps(omni))
    for name in ("bench.tsv", "omni.json"):
        got = load_dataset(tmp_path / name)
        assert [(s.id, s.question, s.options, s.answer, s.triplet) for s in got] == \
            [(s.id, s.question, s.options, s.answer, s.triplet) for s in plain], name
        for a, b in zip(got, plain):
            want = jpeg[a.id] if name == "bench.tsv" and a.id in jpeg else np.asarray(load_image(b))
            assert np.array_equal(np.asarray(load_image(a)), want), (name, a.id)
    assert all(Path(s.image).parent.parent == (tmp_path / "cache").resolve() for s in load_dataset(tmp_path / "bench.tsv"))
    proc, _ = matprobe("data", "validate", tmp_path / "bench.tsv", "--no-images")
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 0 and "options read from the columns A, B, C, D" in said, said


def test_an_image_cell_that_is_no_image_is_one_short_problem_not_a_traceback(tmp_path, fake_ckpt):
    """A TSV whose image cells are 5,000 base64 characters that decode to no image: read as a path,
    the name is too long for the system (OSError: ENAMETOOLONG). `data validate` lists it as a
    problem cut to a readable length, `extract` refuses in one line; nothing else."""
    recs = _records(4)
    _write_jsonl(tmp_path / "m.jsonl", recs)
    junk = "QUJD" * 1250  # base64 of 'ABC' repeated: valid base64, not an image
    header = "id\tquestion\toptions\tanswer\tmodality\tanatomy\ttask\timage\n"
    body = "".join(f"{r['id']}\t{r['question']}\t{'|'.join(r['options'])}\t{r['answer']}\t{r['modality']}\t"
                   f"{r['anatomy']}\t{r['task']}\t{junk}\n" for r in recs)
    (tmp_path / "junk.tsv").write_text(header + body)
    proc, _ = matprobe("data", "validate", tmp_path / "junk.tsv")
    problems = [line for line in proc.stderr.splitlines() if line.startswith("problem:")]
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert problems and all(len(line) < 400 for line in problems), problems
    assert "characters: not an image path?) not found" in problems[0]
    line = one_error(matprobe("extract", "--ckpt", fake_ckpt, "--data", tmp_path / "junk.tsv", "--out",
                              tmp_path / "s.h5", "--layers", "-1")[0])
    assert "4 of 4 image(s) missing" in line and len(line) < 400


def test_images_in_a_folder_below_the_manifest_are_found_for_the_hint(tmp_path):
    """Image names relative to a folder below the manifest's (SLAKE's imgs/): `data validate`, `init`
    and `extract` name that folder in the fix; where no folder holds them, no hint."""
    recs = _records(6)
    _write_jsonl(tmp_path / "m.jsonl", recs)
    (tmp_path / "imgs").mkdir()
    for i in range(6):  # the images one folder down, named by the file name alone
        (tmp_path / "img" / f"{i}.png").rename(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({**r, "image": Path(r["image"]).name}) + "\n"
                                              for r in recs))
    proc, _ = matprobe("data", "validate", "m.jsonl", cwd=tmp_path)
    assert proc.returncode == 1
    said = proc.stdout + proc.stderr
    # six missing: one problem line for them all (data.loaders.MISSING_LISTED), the folder in its fix
    problems = [line for line in proc.stderr.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and problems[0].startswith("problem: m.jsonl: 6 of 6 image(s) missing, first samples "
                                                         "'r000': "), said
    assert problems[0].endswith("; fix the paths or pass --image-root DIR (0.png is in imgs: pass --image-root imgs)")
    ok, _ = matprobe("data", "validate", "m.jsonl", "--image-root", "imgs", cwd=tmp_path)
    assert ok.returncode == 0 and "no problems found" in ok.stdout
    # the line `extract`, `run` and `init` refuse with (data.images.missing_images_error)
    from matprobe.data import load_dataset
    from matprobe.data.images import missing_images_error

    os.chdir(tmp_path)
    try:
        line = missing_images_error(load_dataset("m.jsonl").samples, "m.jsonl")
    finally:
        os.chdir(ROOT)
    assert "6 of 6 image(s) missing" in line and "(0.png is in " in line and line.endswith("pass --image-root imgs)")
    for i in range(6):
        (tmp_path / "imgs" / f"{i}.png").unlink()
    proc, _ = matprobe("data", "validate", "m.jsonl", cwd=tmp_path)
    assert proc.returncode == 1 and "is in imgs" not in proc.stdout + proc.stderr


def test_unknown_columns_are_listed_once_with_close_matches(tmp_path):
    bad = _write_jsonl(tmp_path / "bad.jsonl", _renamed(_records(312), {"options": "opts", "task": "tsk"}))
    proc, _ = matprobe("data", "validate", bad, "--no-images")
    assert proc.returncode == 1
    problems = [line for line in proc.stderr.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and len(proc.stdout.splitlines()) + len(proc.stderr.splitlines()) < 6, \
        proc.stdout + proc.stderr
    assert "unknown column(s) opts, tsk; missing options, task" in problems[0]
    assert ("A MAT manifest has columns image, question, options, answer, modality, anatomy, task (optional: id, "
            in problems[0])
    assert "close matches: opts -> options, tsk -> task" in problems[0]
    ok, _ = matprobe("data", "validate", bad, "--no-images", "--columns", "opts=options,tsk=task")
    assert ok.returncode == 0 and "no problems found" in ok.stdout
    line = one_error(matprobe("data", "split", bad, "--target", "CT,Chest,Classification",
                              "--out", tmp_path / "o.jsonl")[0])
    assert "--columns opts=options,tsk=task" in line
    line = one_error(matprobe("data", "validate", bad, "--columns", "opts=option")[0])
    assert "'option' is not a manifest column; did you mean 'options'?" in line


@pytest.mark.parametrize("answer, options, expected", [
    ("Yes", ["yes", "no"], 0), (" right  lung ", ["Left lung", "Right lung"], 1),  # case and spaces aside
    ("(B)", ["yes", "no"], 1), ("A.", ["yes", "no"], 0), ("b)", ["yes", "no"], 1), ("B: no", ["yes", "no"], 1),
    ("B. yes", ["yes", "no"], None), ("(C)", ["yes", "no"], None), ("maybe", ["yes", "no"], None),
])
def test_answers_as_answer_files_write_them(tmp_path, answer, options, expected):
    """Answer cells that name one option unambiguously but not verbatim (VQA-RAD's 'Yes' for
    'yes', '(B)', 'B. no') are that option; a letter whose text is another option's, or a letter
    past the options, is still refused (options that differ only in case are refused anyway)."""
    from matprobe.data import load_dataset
    from matprobe.errors import DataError

    rec = {**_records(1)[0], "options": options, "answer": answer}
    path = _write_jsonl(tmp_path / "a.jsonl", [rec])
    if expected is None:
        with pytest.raises(DataError, match="is neither an option index"):
            load_dataset(path)
    else:
        assert load_dataset(path).samples[0].answer_index == expected


@pytest.mark.parametrize("bad_slice", [float("inf"), 1.5, "x"])
def test_a_slice_that_is_no_integer_is_one_clear_error(tmp_path, bad_slice):
    """Found by the manifest fuzz test at 3,000 examples: a slice of infinity raised OverflowError
    (a traceback), and 1.5 was read as slice 1."""
    from matprobe.data import load_dataset
    from matprobe.errors import DataError

    rec = {**_records(1)[0], "slice": bad_slice}
    path = tmp_path / "s.jsonl"
    _write_jsonl(path, [rec])
    with pytest.raises(DataError, match=r"slice .* is not an integer"):
        load_dataset(path)


def test_a_repeated_problem_is_listed_once_with_its_records(tmp_path):
    recs = [{**r, "answer": "E"} for r in _records(30)]  # every record: an answer that is no option
    proc, _ = matprobe("data", "validate", _write_jsonl(tmp_path / "d.jsonl", recs), "--no-images")
    problems = [line for line in proc.stderr.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and "records 1, 2, 3, 4, 5, ... (30 records)" in problems[0]
    assert "answer 'E' is neither an option index" in problems[0]


# ---------------------------------------------------------------- item 7: degenerate designs
def test_validate_flags_fixed_factors_and_one_answer_strata(tmp_path):
    recs = _records(36)
    for r in recs:
        r["anatomy"] = {"CT": "Chest", "MRI": "Brain", "X-ray": "Hand"}[r["modality"]]
        if r["modality"] == "CT":
            r["answer"] = 2  # every CT item answers Cyst
    m = [r["modality"] for r in recs]
    assert conditional_entropy(np.array([r["anatomy"] for r in recs]), np.array(m)) == 0.0  # the design's premise, exactly
    proc, _ = matprobe("data", "validate", _write_jsonl(tmp_path / "d.jsonl", recs), "--no-images")
    assert proc.returncode == 0 and "no problems found" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, proc.stderr
    assert "anatomy is fixed by modality (H(A|M) = 0): I(Z;A|M) is not identifiable" in warnings[0]
    assert warnings[1].count("(all 6 items answer 'Cyst')") == 2 and "2 of 6 strata have one answer class" \
        in warnings[1]
    control, _ = matprobe("data", "validate", _write_jsonl(tmp_path / "c.jsonl", _records(36)), "--no-images")
    assert "warning:" not in control.stderr  # anatomy varies within modality, answers within strata


def test_mi_shows_a_fixed_factor_term_as_not_identifiable(tmp_path):
    rng = np.random.default_rng(1)
    n = 240
    m = rng.choice(["CT", "MRI"], n)
    a = np.where(m == "CT", "Chest", "Head")
    t = rng.choice(["Cls", "Ori"], n)
    z = rng.normal(size=(n, 3)).astype("float32")
    z[:, 0] += 2.0 * (m == "CT")
    z[:, 1] += 2.0 * (t == "Ori")  # the other terms clearly above 0
    path = tmp_path / "fixed.h5"
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)], {"modality": m, "anatomy": a, "task": t},
                               {("2", "last"): z}).close()
    proc, _ = matprobe("mi", path, "--layer", "2", "--estimator", "ksg", "--folds", "3", "--pca", "0",
                       "--format", "csv", "--out", tmp_path / "mi.json")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(__import__("io").StringIO(proc.stdout))
    row = table[table["term"] == "I(Z;A|M)"].iloc[0]
    # CSV holds numbers (the results' own columns); `degenerate` says the term is not identifiable
    assert row["degenerate"] and row["estimate"] == 0.0 and row["h_upper"] == 0.0
    doc = json.loads((tmp_path / "mi.json").read_text())
    term = next(x for x in doc["terms"] if x["term"] == "I(Z;A|M)")
    assert term["degenerate"] is True and term["h_upper"] == 0.0


def test_report_flags_degenerate_terms_and_one_option_checkpoints(tmp_path):
    from matprobe.report.render import write_report
    from test_report import make_run

    run = make_run(tmp_path / "run", extra_layer=False)
    summary = json.loads((run / "run.json").read_text())
    ck = summary["checkpoints"][0]
    mi_path = run / ck["main_mi"]
    doc = json.loads(mi_path.read_text())
    term = next(x for x in doc["terms"] if x["term"].startswith("I(Z;anatomy|"))
    term.update(estimate=0.0, ci_low=0.0, ci_high=0.0, h_upper=0.0, degenerate=True)
    mi_path.write_text(json.dumps(doc))
    n = 50
    pred = np.full(n, 2)
    pred[:3] = 0  # 47 of 50 answer C
    (run / "stores").mkdir()
    EmbeddingStore.from_arrays(run / ck["store"], [f"s{i}" for i in range(n)], {"modality": ["CT"] * n},
                               {("0", "last"): np.zeros((n, 2), np.float32)},
                               answers={"pred": pred, "correct": (pred == 2).astype("int8"),
                                        "probs": np.eye(4)[pred].astype("float32")}).close()
    write_report(run)
    md = (run / "report.md").read_text()
    assert "## Design warnings" in md
    inner = term["term"][len("I(Z;"):-1]
    assert f"{term['term']} is not identifiable: H({inner}) = 0 in this data" in md
    assert f"checkpoint {ck['name']} answers option C for 47 of 50 items (94%)" in md
    escaped = term["term"].replace("|", "\\|")  # as the markdown table writes it
    chain_table = md.split("## MI chain", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.split(" | ")] for line in chain_table.splitlines()
            if line.startswith(f"| {ck['name']} ") and escaped in line]
    assert rows  # the MI chain table: estimate and interval cells say it, no 0.000 there
    for cells in rows:
        assert cells[3] == f"not identifiable: H({inner.replace('|', chr(92) + '|')}) = 0" and cells[4] == ""
    # the baselines table (the run has the control task and codelength) shows no numbers for it either
    base = md.split("## Baselines", 1)[1].split("\n## ", 1)[0]
    line = next(x for x in base.splitlines() if x.startswith(f"| {ck['name']} ") and escaped in x)
    cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
    assert cells[2].startswith("not identifiable") and all(c in ("", "-") for c in cells[3:]), cells
    # the findings average the term over the other checkpoints only, never counting the 0
    others = [next(x["estimate"] for x in json.loads((run / c["main_mi"]).read_text())["terms"]
                   if x["term"] == term["term"]) for c in summary["checkpoints"][1:]]
    found = json.loads((run / "findings.json").read_text())
    assert found["most_encoded"]["all_terms"][term["term"]] == pytest.approx(np.mean(others), abs=1e-12)


# ---------------------------------------------------------------- item 8: interrupts
def _interrupt(args, sig, ready, timeout=300, env=None):
    """Start the CLI, wait until `ready()` is true, send `sig`; returns (returncode, stderr lines)."""
    # SIGINT back to its default in the child: a shell starts background jobs with SIGINT ignored, the
    # child inherits that, and Python then installs no KeyboardInterrupt handler (a CI run launched
    # with `&` saw exit 0 here for both Ctrl-C tests)
    proc = subprocess.Popen([sys.executable, "-m", "matprobe", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    t0 = time.time()
    while not ready(lines) and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.05)
    assert proc.poll() is None, "".join(lines)  # still running when the signal is sent
    proc.send_signal(sig)
    proc.wait(timeout=60)
    reader.join(10)
    return proc.returncode, [line.rstrip("\n") for line in lines if line.strip()]


def _done_rows(path) -> int:
    with EmbeddingStore.open(path) as st:
        return int(st.done.sum())


def test_ctrl_c_during_extract_keeps_finished_rows_and_resumes(tiny_ckpts, make_tiny_manifest, tmp_path):
    # a progress line every second (MATPROBE_PROGRESS_INTERVAL) names the rows done well before the
    # end: with the default 10 s the test needed 6,000 rows (58 s) to be sure the signal met a running
    # extraction on an idle machine; at 1 s the signal comes 1-2 s into an extraction of 600 rows
    # that takes 5-7 s (the resume of the rest is most of the test's time)
    n = 600
    data = make_tiny_manifest(tmp_path / "d", n=n)
    out = tmp_path / "s.h5"
    args = ["extract", "--ckpt", tiny_ckpts["llava"], "--data", data, "--out", out, "--layers", "-1",
            "--pool", "last", "--batch-size", "2"]
    progress = re.compile(rf"extract llava: at (\d+)/{n} ")  # the periodic line, not the final "done"

    def some_rows_done(lines):  # the first progress line off a terminal (after 10 s) names the rows done
        return any(progress.search(line) for line in lines)

    rc, lines = _interrupt(args, signal.SIGINT, some_rows_done, env={**ENV, "MATPROBE_PROGRESS_INTERVAL": "1"})
    assert rc == 130, "\n".join(lines[-15:])
    assert lines[-1].startswith("interrupted (Ctrl-C): ") and str(out) in lines[-1]
    assert "keeps every finished batch" in lines[-1] and "to resume" in lines[-1]
    assert not any("Traceback" in line for line in lines)
    reported = max(int(m.group(1)) for line in lines if (m := progress.search(line)))
    kept = _done_rows(out)  # the store opens: intact
    assert reported <= kept < n
    proc, _ = matprobe(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"({n - kept} computed, {kept} resumed) at " in proc.stdout and "samples/s" in proc.stdout
    assert _done_rows(out) == n
    again, _ = matprobe(*args)  # nothing left: no rate of 0.00 samples/s (a user study's resume said so)
    assert again.returncode == 0 and f"(0 computed, {n} resumed); layers" in " ".join(again.stdout.split())


def test_sigterm_during_mi_writes_nothing_and_says_so(store, tmp_path):
    out = tmp_path / "mi.json"
    rc, lines = _interrupt(["mi", store, "--layer", "4", "--out", out], signal.SIGTERM,
                           lambda lines: any("estimates to do" in line for line in lines))
    assert rc == 143
    assert lines[-1] == (f"interrupted (SIGTERM): nothing was written ({out} is written when every term is "
                         f"done); rerun `matprobe mi {store} --layer 4 --out {out}`")
    assert not out.exists() and not list(tmp_path.glob(".mi.json*"))


def test_sigterm_during_sweep_keeps_finished_cells(tmp_path):
    rng = np.random.default_rng(2)
    n = 600
    stores = []
    cells = 12  # enough that the sweep is still running when its first cell is written, idle machine too
    m = rng.choice(["CT", "MRI"], n)  # one dataset, twelve checkpoints
    for k in range(cells):
        path = tmp_path / f"c{k}.h5"
        EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)], {"modality": m},
                                   {("1", "last"): rng.normal(size=(n, 3)).astype("float32")}).close()
        stores.append(path)
    out = tmp_path / "sweep.csv"
    args = ["sweep", *stores, "--out", out, "--factors", "M", "--no-pointwise"]
    rc, lines = _interrupt(args, signal.SIGTERM, lambda lines: out.exists())
    assert rc == 143 and lines[-1].startswith("interrupted (SIGTERM): ")
    assert f"{out} keeps every finished cell" in lines[-1] and "to resume with the remaining cells" in lines[-1]
    from matprobe.mi.sweep import read_table

    kept = read_table(out)
    assert 1 <= len(kept) < cells
    proc, _ = matprobe(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"({cells - len(kept)} computed here, {len(kept)} resumed)" in proc.stdout


def test_ctrl_c_during_run_names_the_run_directory_and_keeps_the_store(tiny_ckpts, make_tiny_manifest, tmp_path):
    # as in the extract test: a progress line every second names the rows done well before the
    # extraction ends (with the default 10 s, n = 2000 let the signal meet a finished run and exit 0)
    n = 1500
    data = make_tiny_manifest(tmp_path / "d", n=n)
    run = tmp_path / "run"
    toml = tmp_path / "p.toml"
    toml.write_text(f"""[run]
out = "{run}"
[data]
file = "{data}"
[design]
target = ["CT", "Chest", "Classification"]
conditions = ["related"]
[[checkpoints]]
name = "a"
condition = "related"
seed = 0
ckpt = "{tiny_ckpts['llava']}"
[extract]
layers = "-1"
batch_size = 2
""")
    rc, lines = _interrupt(["run", toml], signal.SIGINT,
                           lambda lines: any(re.search(rf"extract llava: at \d+/{n} ", line) for line in lines),
                           env={**ENV, "MATPROBE_PROGRESS_INTERVAL": "1"})
    assert rc == 130 and not any("Traceback" in line for line in lines)
    assert lines[-1] == (f"interrupted (Ctrl-C): {run} keeps every finished step (so far: stores); rerun "
                         f"`matprobe run {toml}` to resume: finished steps are not redone")
    assert 0 < _done_rows(run / "stores" / "a.h5") < n  # the store opens, with the rows done so far


@pytest.mark.parametrize("bad", ["-0.2", "100.5"])
def test_a_proportion_outside_its_range_is_refused_naming_the_row(tmp_path, bad):
    """A negative accuracy (or one above 100) is no accuracy: refused, with its CSV line. Before,
    the unit check skipped any metric not wholly inside [0, 100], and such a table was analysed
    (found by the significance fuzz test: A 0.0 and -0.2 beside B 2.0)."""
    res = _results_csv(tmp_path / "r.csv")
    text = res.read_text().replace("Related,t0,2,accuracy,0.32", f"Related,t0,2,accuracy,{bad}")
    assert text != res.read_text()
    res.write_text(text)
    from matprobe.stats.significance import read_results

    with pytest.raises(StatsError, match=r"metric 'accuracy' is a proportion but has values outside \[0, 1\]"):
        read_results(res)
    line = one_error(matprobe("significance", res)[0])
    assert "line 6" in line and "fix those rows" in line
