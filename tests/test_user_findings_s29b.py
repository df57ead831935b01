"""A first-time user's findings (user study s29), each checked against what is true:

- F5: `extract` stopped by SIGTERM before its first batch finished (during the model's load) said the
  store "keeps every finished batch ... rerun to resume", though no store exists;
- F10: `store info` printed per-stratum accuracy on 16-45 items as bare numbers: now with the count of
  right answers and the exact 95% Clopper-Pearson interval (scipy's `binomtest(...).proportion_ci
  (method="exact")` is the reference here, computed independently of matprobe's `clopper_pearson`);
- F11: `data validate` accepted in-range 1-based answer indices silently where the `label` column named
  the option before the answer on every row;
- F12: the missing-processor error named only preprocessor_config.json as the image processor's file to
  copy, while the LLaVA base matprobe builds has processor_config.json.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.store import EmbeddingStore

runner = CliRunner()


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- F5: SIGTERM before the first batch
def _sigterm(*_, **__):
    from matprobe.interrupts import Interrupted

    raise Interrupted()


def _extract_args(ckpt, data, out):
    return ["extract", "--ckpt", str(ckpt), "--data", str(data), "--out", str(out), "--layers", "-1",
            "--pool", "last", "--batch-size", "2"]


@pytest.mark.parametrize("where", ["model load", "first batch"])
def test_sigterm_before_any_finished_batch_says_no_store_was_written(where, tiny_ckpts, make_tiny_manifest,
                                                                      tmp_path, monkeypatch):
    import matprobe.extract.checkpoints as checkpoints
    import matprobe.extract.prompts as prompts

    data = make_tiny_manifest(tmp_path / "d", n=4)
    out = tmp_path / "stores" / "int.h5"
    out.parent.mkdir()
    args = _extract_args(tiny_ckpts["llava"], data, out)
    if where == "model load":  # the user's case: the signal came while the model loaded (no store yet)
        monkeypatch.setattr(checkpoints, "load_model", _sigterm)
    else:  # the store is created, then its first batch is stopped: the runner removes the empty store
        monkeypatch.setattr(prompts, "render_sample", _sigterm)
    monkeypatch.setattr(sys, "argv", ["matprobe", *args])  # the rerun line is the command as typed
    res = runner.invoke(app, args)
    assert res.exit_code == 143, res.output
    rerun = "matprobe " + " ".join(args)
    assert res.output.strip().splitlines()[-1] == (
        f"interrupted (SIGTERM): no batch was finished, so no store was written ({out} does not exist) and "
        f"there is nothing to resume; rerun `{rerun}` to extract from the start")
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_interrupt_message_for_extract_follows_the_store_on_disk(tmp_path):
    from matprobe.interrupts import Interrupted, interrupt_message

    out = tmp_path / "s.h5"
    gone = interrupt_message("extract_command", {"out": out}, KeyboardInterrupt())
    assert gone.startswith(f"interrupted (Ctrl-C): no batch was finished, so no store was written ({out} does "
                           "not exist) and there is nothing to resume; rerun `")
    assert gone.endswith("` to extract from the start")
    out.write_bytes(b"")  # a store with finished rows (or one resumed from before) is there: kept, resumable
    kept = interrupt_message("extract_command", {"out": out}, Interrupted())
    assert kept.startswith(f"interrupted (SIGTERM): {out} keeps every finished batch (rows are marked done as "
                           "they are written); rerun `") and kept.endswith("` to resume from the first unfinished row")
    out.unlink()
    shard = tmp_path / "s.h5.shards" / "rank0-of-2.h5"  # torchrun: each rank's shard beside the output
    shard.parent.mkdir()
    shard.write_bytes(b"")
    assert "keeps every finished batch" in interrupt_message("extract_command", {"out": out}, Interrupted())


# ---------------------------------------------------------------- F10: store info's intervals
# (modality, anatomy, task) -> (answered items, right answers): the user's stratum sizes, 0 and n right too
CELLS = {("CT", "Abdomen", "Abnormality"): (30, 6), ("CT", "Brain", "Orientation"): (20, 0),
         ("CT", "Chest", "Abnormality"): (45, 18), ("MRI", "Knee", "Severity"): (16, 16),
         ("X-ray", "Knee", "Orientation"): (25, 1)}


def _answered_store(path: Path) -> Path:
    rng = np.random.default_rng(10)
    labels = {"modality": [], "anatomy": [], "task": []}
    correct = []
    for (m, a, t), (n, k) in CELLS.items():
        for key, v in zip(labels, (m, a, t)):
            labels[key] += [v] * n
        correct += list(rng.permutation([1] * k + [0] * (n - k)))
    n_all = len(correct)
    correct = np.array(correct, dtype=np.int8)
    pred = np.where(correct == 1, 0, 1)
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n_all)], labels,
                               {("3", "last"): rng.normal(size=(n_all, 4)).astype("float32")},
                               answers={"pred": pred, "correct": correct}).close()
    return path


def _exact(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return ci.low, ci.high


def test_store_info_gives_each_accuracy_its_clopper_pearson_interval_and_count(tmp_path):
    store = _answered_store(tmp_path / "s.h5")
    res = runner.invoke(app, ["store", "info", str(store), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    n_all, k_all = sum(n for n, _ in CELLS.values()), sum(k for _, k in CELLS.values())
    assert (info["answers_stored"], info["correct"], info["ci_level"]) == (n_all, k_all, 0.95)
    assert info["accuracy_ci"] == pytest.approx(_exact(k_all, n_all), abs=1e-12)
    rows = {(r["modality"], r["anatomy"], r["task"]): r for r in info["by_triplet"]}
    assert set(rows) == set(CELLS)
    for cell, (n, k) in CELLS.items():
        r = rows[cell]
        assert (r["answered"], r["correct"]) == (n, k) and r["accuracy"] == pytest.approx(k / n, abs=1e-15)
        assert (r["accuracy_ci_low"], r["accuracy_ci_high"]) == pytest.approx(_exact(k, n), abs=1e-12)
    assert rows[("CT", "Brain", "Orientation")]["accuracy_ci_low"] == 0.0  # 0 of 20: the exact lower end
    assert rows[("MRI", "Knee", "Severity")]["accuracy_ci_high"] == 1.0  # 16 of 16

    # the table: each row's n, right and "accuracy [low, high]" to 3 decimals, and the title's overall one
    res = runner.invoke(app, ["store", "info", str(store)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lo, hi = _exact(k_all, n_all)
    assert (f"answers stored: {n_all}, accuracy {k_all / n_all:.3f} [{lo:.3f}, {hi:.3f}] ({k_all} of {n_all} right, "
            "95% Clopper-Pearson interval)") in res.output
    assert "accuracy [95% CI]" in res.output and "right" in res.output
    lines = res.output.splitlines()
    for (m, a, t), (n, k) in CELLS.items():
        lo, hi = _exact(k, n)
        (line,) = [ln for ln in lines if f" {m} " in ln and f" {a} " in ln and f" {t} " in ln]
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        assert cells == [m, a, t, str(n), str(k), f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]"], line
    assert "accuracy = right / n, with its exact 95% Clopper-Pearson interval [low, high]" in res.output

    # CSV/JSON tables: the interval's ends and the count as columns of their own
    doc = json.loads(runner.invoke(app, ["store", "info", str(store), "--format", "json"]).output)
    answers = next(t for t in doc if t["name"] == "answers")
    assert answers["rows"] == info["by_triplet"]
    units = {c["key"]: c["unit"] for c in answers["columns"]}
    assert units["correct"] == "count" and units["accuracy_ci_low"] == units["accuracy_ci_high"] == "fraction"


# ---------------------------------------------------------------- F11: a label against the answer index
FIELDS = ["sample_id", "image_path", "prompt", "choices", "answer", "modality", "body_part", "task_type", "label"]
ITEMS = [  # (options, index of the right option, label = that option's text)
    ("no|yes", 1), ("mild|moderate|severe", 0), ("no|yes", 0), ("mild|moderate|severe", 1),
    ("left|right|up|down", 2), ("left|right|up|down", 3), ("mild|moderate|severe", 2), ("no|yes", 1),
]


def _manifest(path: Path, answer, label=None) -> Path:
    """A CSV of ITEMS with the user's alias columns; answer(i, options, right) is the cell written,
    label(i, options, right) the label (default: the right option's text)."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for i, (choices, right) in enumerate(ITEMS):
            options = choices.split("|")
            w.writerow({"sample_id": f"item-{i}", "image_path": f"img/{i}.png", "prompt": "Which one?",
                        "choices": choices, "answer": answer(i, options, right),
                        "modality": "CT", "body_part": "chest", "task_type": "Abnormality",
                        "label": (label or (lambda i, o, r: o[r]))(i, options, right)})
    return path


def _validate(path: Path):
    res = runner.invoke(app, ["data", "validate", str(path), "--no-images"], env={"COLUMNS": "400"})
    warnings = [one_line(w) for w in res.output.split("warning: ")[1:]]
    return res, [w.split(" problem: ")[0].split(" note: ")[0] for w in warnings]


def test_one_based_answers_in_range_are_warned_of_with_their_records(tmp_path):
    # the user's bad/onebased.csv: answer = the right option's index + 1; past the last option it is refused
    path = _manifest(tmp_path / "onebased.csv", lambda i, o, r: str(r + 1))
    res, warnings = _validate(path)
    out = one_line(res.output)
    # items 0, 5, 6 and 7 (records 1, 6, 7, 8) answer their last option: one past it, refused with the hint
    assert "records 1, 8: answer index 2 out of range for 2 options" in out
    assert "record 7 (id 'item-6'): answer index 3 out of range for 3 options" in out
    assert "record 6 (id 'item-5'): answer index 4 out of range for 4 options" in out
    assert res.exit_code == 1
    # the other four are in range and read the option after the label's: one warning naming them
    (conflict,) = [w for w in warnings if "the label names another option" in w]
    assert conflict == one_line(
        f"{path}: records 2, 3, 4, 5 (4 of the 4 items read): the label names another option than the answer "
        "(record 2 (id 'item-1') has answer 1, option B 'moderate', but label 'mild', option A). Accuracy is "
        "scored on the answer and the label is the factor Y, so they disagree on these items; on every one of "
        "them the answer is a number and the label is the option just before it: the indices look counted from "
        "1, but matprobe counts options from 0 (0 is the first option, A); subtract 1 from every answer index")


def test_a_label_against_a_letter_answer_is_warned_of_without_the_one_based_hint(tmp_path):
    letters = "ABCD"
    # item 4 (record 5) answers C ('up') while its label says 'left' (option A): not the option before
    path = _manifest(tmp_path / "m.csv", lambda i, o, r: letters[r],
                     label=lambda i, o, r: "left" if i == 4 else o[r])
    res, warnings = _validate(path)
    assert res.exit_code == 0, res.output
    (conflict,) = [w for w in warnings if "the label names another option" in w]
    assert conflict == one_line(
        f"{path}: record 5 (1 of the 8 items read): the label names another option than the answer (record 5 "
        "(id 'item-4') has answer 'C', option C 'up', but label 'left', option A). Accuracy is scored on the "
        "answer and the label is the factor Y, so they disagree on these items; fix the answer (an index counted "
        "from 0, a letter or the option's text) or the label (the answer's class Y) of each")


@pytest.mark.parametrize("label", [
    lambda i, o, r: o[r].upper(),  # the answer's text in other case: the same option
    lambda i, o, r: f"class-{r}",  # a class of its own, no option's text: no contradiction to name
], ids=["answer-text-other-case", "class-of-its-own"])
def test_consistent_labels_give_no_warning_and_the_same_report(label, tmp_path):
    from matprobe.data import validate_dataset

    path = _manifest(tmp_path / "m.csv", lambda i, o, r: str(r), label=label)
    res, warnings = _validate(path)
    assert res.exit_code == 0 and "no problems found" in res.output, res.output
    assert not any("the label names another option" in w for w in warnings)
    report = validate_dataset(path, check_images=False)
    assert report.problems == [] and not any("label names" in w for w in report.warnings)


def test_readme_says_answer_indices_count_from_zero():
    text = one_line((Path(__file__).resolve().parents[1] / "README.md").read_text())
    assert "`answer` is an index counted from 0 (`0` is the first option, A)" in text


# ---------------------------------------------------------------- F12: which processor files to copy
COPY = ("every file there except config.json, generation_config.json and the weights: the image processor's "
        "preprocessor_config.json or processor_config.json (whichever it has, or both), the tokenizer files "
        "(tokenizer.json, tokenizer_config.json, ...) and the chat template (chat_template.jinja or .json)")


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl"])
def test_missing_processor_error_names_the_files_the_base_has(arch, tiny_ckpts, make_tiny_manifest, tmp_path):
    base = tiny_ckpts[arch]
    has = sorted(p.name for p in base.iterdir())
    # the two bases keep the image processor's config in different files: the message must fit both
    image_file = {"llava": "processor_config.json", "qwen2_5_vl": "preprocessor_config.json"}[arch]
    assert image_file in has and ({"processor_config.json", "preprocessor_config.json"} - {image_file}).isdisjoint(has)
    ft = tmp_path / "ft"  # `model.save_pretrained` only: config, generation config and weights
    ft.mkdir()
    weights = {"config.json", "generation_config.json", "model.safetensors"}
    for name in weights:
        shutil.copy(base / name, ft / name)
    data = make_tiny_manifest(tmp_path / "d", n=2)
    args = _extract_args(ft, data, tmp_path / "s.h5")
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    message = one_line(res.output)
    assert f"copy the processor files from the model it was fine-tuned from into it ({COPY})" in message
    # doing what it says (every other file of the base) makes the folder extract
    for name in set(has) - weights:
        shutil.copy(base / name, ft / name)
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output


def test_processor_mismatch_message_lists_the_alternatives():
    from types import SimpleNamespace

    from matprobe.extract.runner import _mismatch_message

    batch = [SimpleNamespace(id="a", image="img/a.png"), SimpleNamespace(id="b", image=None)]
    msg = _mismatch_message((10, 14), "ck", batch, 10, 2, "", "0 of 4 rows are finished in s.h5")
    assert msg == (
        "checkpoint ck: its processor files do not match its model: for the batch of 2 items from id 'a' (image "
        "img/a.png), the processor put 10 image tokens in the prompts and the model made 14 image features (2 more "
        "features than tokens per image); the tokens per image follow the processor's settings (e.g. LLaVA-NeXT's "
        "num_additional_image_tokens, vision_feature_select_strategy and patch_size in processor_config.json), "
        "which must agree with config.json; fix: copy the processor files of the model it was fine-tuned from into "
        f"ck ({COPY}), or make them agree with its config.json; 0 of 4 rows are finished in s.h5")
