"""A checkpoint whose processor expands an image into another number of tokens than its model makes
features (a LLaVA-NeXT processor saved without `num_additional_image_tokens=1`): transformers' forward
stops with "Image features and image tokens do not match". `extract` (and `run`, which calls it)
says so in one user-error line naming the folder, the batch's first item, the two counts and the
fix, and leaves no store without a finished row behind; a store with finished rows stays, resumable.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.errors import ExtractError
from matprobe.store import EmbeddingStore

torch.set_num_threads(1)


def _break_processor(folder: Path, value: int = 0) -> None:
    """What the user study's checkpoint had: the processor counts no CLS token for the CLIP tower."""
    path = folder / "processor_config.json"
    config = json.loads(path.read_text())
    config["num_additional_image_tokens"] = value
    path.write_text(json.dumps(config))


def _args(ckpt: Path, data: Path, out: Path) -> list[str]:
    return ["extract", "--ckpt", str(ckpt), "--data", str(data), "--out", str(out), "--layers", "0,-1",
            "--pool", "last,image", "--batch-size", "2"]


def _one_error_line(output: str) -> str:
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


def _assert_names_the_mismatch(line: str, ckpt: Path, first_id: str) -> None:
    assert f"checkpoint {ckpt}: its processor files do not match its model" in line, line
    assert f"from id {first_id!r}" in line, line
    counts = re.search(r"the processor put (\d+) image tokens in the prompts and the model made (\d+) image "
                       r"features \(1 more feature than tokens per image\)", line)
    assert counts and int(counts.group(2)) - int(counts.group(1)) == 2, line  # 2 items, 1 more each
    assert "num_additional_image_tokens=0" in line and "vision_config.patch_size=14" in line, line
    assert ("copy the processor files of the model it was fine-tuned from into" in line
            and "preprocessor_config.json or processor_config.json" in line), line
    assert "matprobe bug" not in line and "unexpected" not in line, line


def test_cli_names_folder_item_counts_and_fix_and_leaves_no_store(tiny_ckpts, make_tiny_manifest, tmp_path):
    ckpt = tmp_path / "broken"
    shutil.copytree(tiny_ckpts["llava_next"], ckpt)
    _break_processor(ckpt)
    data = make_tiny_manifest(tmp_path / "d", n=4)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "z.h5"
    res = CliRunner().invoke(app, _args(ckpt, data, out))
    assert res.exit_code == 2, res.output  # the exit code of every user error (cli.fail)
    line = _one_error_line(res.output)
    _assert_names_the_mismatch(line, ckpt, "s000")
    assert f"no row was finished, so {out} is not kept" in line, line
    assert list(work.iterdir()) == []  # no 0-row store a later run would resume against, no temporary or lock


def test_a_store_with_finished_rows_is_kept_and_resumes(tiny_ckpts, make_tiny_manifest, tmp_path, monkeypatch):
    from matprobe.extract import hooks
    from matprobe.extract.runner import ExtractConfig, extract

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpts["llava_next"], ckpt)
    data = make_tiny_manifest(tmp_path / "d", n=6)
    out = tmp_path / "z.h5"
    config = ExtractConfig(ckpt=str(ckpt), data=str(data), out=str(out), layers="0,-1", pools="last,image",
                           batch_size=2)
    real_run = hooks.LayerPooler.run
    calls = {"n": 0}

    def stop_at_second_batch(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the run is stopped after its first batch
        return real_run(self, *args, **kw)

    with monkeypatch.context() as m:
        m.setattr(hooks.LayerPooler, "run", stop_at_second_batch)
        with pytest.raises(KeyboardInterrupt):
            extract(config)
    with EmbeddingStore.open(out) as store:
        assert int(store.done.sum()) == 2
    # the processor files edited after the store's first batch: the resume is refused before the
    # model loads, naming the file (the store's finished rows were made with the old processor)
    _break_processor(ckpt)
    res = CliRunner().invoke(app, _args(ckpt, data, out))
    assert res.exit_code == 2, res.output
    line = _one_error_line(res.output)
    assert "chat template files changed since the store was made (ckpt/processor_config.json)" in line, line
    with EmbeddingStore.open(out) as store:
        assert int(store.done.sum()) == 2 and not store.finalized
    _break_processor(ckpt, 1)  # the fix: the processor files the store was made with (rewritten in
    # another layout: the same settings, so the same input)
    again = extract(config)
    assert (again.n_resumed, again.n_computed) == (2, 4)


def test_the_mismatch_is_told_apart_from_other_errors():
    from matprobe.extract.runner import _token_feature_mismatch

    # the wordings of transformers 5's llava(-next), qwen2(.5)-vl, gemma3 and idefics3 forwards
    assert _token_feature_mismatch(ValueError(
        "Image features and image tokens do not match, tokens: 606, features: 614")) == (606, 614)
    assert _token_feature_mismatch(RuntimeError(
        "Image features and image tokens do not match: tokens: 3, features 5")) == (3, 5)
    assert _token_feature_mismatch(ValueError("Image features and image tokens do not match")) == (None, None)
    assert _token_feature_mismatch(ValueError("expected 3 dims, got 4")) is None
    assert _token_feature_mismatch(ExtractError("Image features and image tokens do not match, tokens: 1, "
                                                "features: 2")) is None  # ours: raised as it is


def test_every_tiny_architecture_names_settings_it_has(tiny_ckpts):
    """The settings the message lists (`Architecture.processor_token_settings` and
    `config_token_settings`) are real attributes of each architecture's processor and config."""
    from transformers import AutoConfig

    from matprobe.extract.arch import _dotted, get_architecture
    from matprobe.extract.checkpoints import load_processor
    from matprobe.extract.tiny import tiny_architectures

    for name in tiny_architectures():
        spec = get_architecture(name)
        processor, _ = load_processor(tiny_ckpts[name], name)
        config = AutoConfig.from_pretrained(tiny_ckpts[name])
        assert spec.processor_token_settings and spec.config_token_settings, name
        for setting in spec.processor_token_settings:
            assert _dotted(processor, setting) is not None, (name, setting)
        for setting in spec.config_token_settings:
            assert _dotted(config, setting) is not None, (name, setting)
        assert spec.image_token_settings(processor, config).startswith("processor: "), name
