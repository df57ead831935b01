"""Hugging Face checkpoint folders as training frameworks leave them, each refused naming what is
wrong (found by a study of LLaMA-Factory, ms-swift and Trainer folders on the tiny checkpoints):

- `--base` beside a whole model extracted the base and labelled it as the fine-tune;
- a checkpoint missing weights loaded with those modules random (transformers printed a table);
- a config whose model_type is not its architecture's stopped as "a matprobe bug";
- a DeepSpeed ZeRO checkpoint-N (trainer state, no gathered weights) passed as having weights.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.errors import ExtractError

torch.set_num_threads(1)


def _extract(*args):
    return CliRunner().invoke(app, ["extract", *map(str, args)])


def test_base_beside_a_whole_model_is_refused_not_extracted_in_its_place(tiny_ckpts, tiny_manifest, tmp_path):
    from matprobe.extract.checkpoints import resolve_adapter

    merged, other = tiny_ckpts["qwen2_vl"], tiny_ckpts["qwen2_5_vl"]
    with pytest.raises(ExtractError, match=rf"checkpoint {merged} is a whole model .* so --base {other} has nothing "
                                           r"to apply to: drop --base"):
        resolve_adapter(merged, None, other)
    assert resolve_adapter(merged, None, merged) == (merged, None)  # the same folder twice is no conflict
    with pytest.raises(ExtractError, match=r"name two bases; give the one it was trained on once"):
        resolve_adapter(tiny_ckpts["llava"], tiny_ckpts["llava_lora"], other)
    res = _extract("--ckpt", merged, "--base", other, "--data", tiny_manifest, "--layers", "-1",
                   "--out", tmp_path / "z.h5")
    assert res.exit_code == 2 and "drop --base" in res.output and not (tmp_path / "z.h5").exists()


def test_a_checkpoint_missing_weights_is_refused_not_filled_at_random(tiny_ckpts, tiny_manifest, tmp_path):
    from matprobe.extract.checkpoints import load_model

    ckpt = shutil.copytree(tiny_ckpts["qwen2_vl"], tmp_path / "ckpt")
    (weights,) = ckpt.glob("*.safetensors")
    state = load_file(weights)
    dropped = sorted(k for k in state if k.endswith("mlp.0.weight"))[:1]
    assert dropped
    save_file({k: v for k, v in state.items() if k not in dropped}, weights, metadata={"format": "pt"})
    with pytest.raises(ExtractError, match=r"1 weight\(s\) the model needs are not in its files .*initialise them "
                                           r"at random"):
        load_model(ckpt)


def test_a_model_type_its_architecture_is_not_is_named(tiny_ckpts, tmp_path):
    from matprobe.extract.checkpoints import load_model

    ckpt = shutil.copytree(tiny_ckpts["qwen2_5_vl"], tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    (ckpt / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen2_vl"}))
    with pytest.raises(ExtractError, match=r"config.json says model_type 'qwen2_vl' but architectures "
                                           r"'Qwen2_5_VLForConditionalGeneration'"):
        load_model(ckpt)


def test_a_zero_checkpoint_without_gathered_weights_is_told_how_to_gather_them(tiny_ckpts, tiny_manifest, tmp_path):
    step = tmp_path / "checkpoint-500"
    shutil.copytree(tiny_ckpts["qwen2_vl"], step)
    for f in step.glob("*.safetensors"):
        f.unlink()
    for name in ("training_args.bin", "rng_state_0.pth", "zero_to_fp32.py"):
        (step / name).write_bytes(b"x")
    (step / "global_step500").mkdir()
    res = _extract("--ckpt", step, "--data", tiny_manifest, "--layers", "-1", "--out", tmp_path / "z.h5")
    line = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert f"checkpoint {step}: no weights files" in line and "it is a DeepSpeed ZeRO checkpoint" in line, line


def test_a_gemma3_adapter_that_trains_its_tied_head_loads_as_peft_merges_it(tiny_ckpts, tiny_manifest, tmp_path):
    """Gemma 3 ties lm_head to the embeddings, so `named_parameters()` lists no lm_head.weight: an adapter
    with lm_head in modules_to_save (MedGemma recipes) was refused as 'saved from another model class'."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.tiny import build_tiny_adapter
    from test_extract_adapters import _z

    base = tiny_ckpts["gemma3"]
    adapter = build_tiny_adapter(tmp_path / "lora", base, seed=5, modules_to_save=["lm_head"])
    merged = tmp_path / "merged"
    peft_model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32),
                                           adapter)
    peft_model.merge_and_unload().save_pretrained(merged)
    for f in base.iterdir():  # the processor files, as a merged checkpoint carries them
        if f.suffix != ".safetensors" and f.name not in ("config.json", "generation_config.json"):
            shutil.copy(f, merged / f.name)
    z_adapter = _z(load_model(base, adapter=adapter), tiny_manifest)
    z_merged = _z(load_model(merged), tiny_manifest)
    z_base = _z(load_model(base), tiny_manifest)
    for key in ("final", "letters"):
        assert torch.allclose(z_adapter[key], z_merged[key], atol=1e-5, rtol=1e-4), key
    assert not torch.allclose(z_adapter["letters"], z_base["letters"], atol=1e-4)  # the head it trained counts


def _processor_files(src, dst):
    for f in src.iterdir():  # what a framework copies beside the weights
        if f.suffix not in (".safetensors", ".bin") and f.name not in ("config.json", "generation_config.json"):
            shutil.copy(f, dst / f.name)


def test_an_adapter_with_added_tokens_and_its_own_template_loads_as_it_was_trained(tiny_ckpts, tiny_manifest,
                                                                                   tmp_path):
    """LLaMA-Factory's way: tokens added (embeddings resized, embed_tokens and lm_head in modules_to_save),
    the tokenizer and chat template saved into the adapter folder. The base's processor was used and the
    shapes refused ('pass the base it was trained on', which it was); the adapter's template was ignored,
    though provenance listed its file. Checked against peft's own merge of the same adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from matprobe.extract.checkpoints import load_model
    from test_extract_adapters import _z

    base = tiny_ckpts["qwen2_vl"]
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(base)
    tok.add_special_tokens({"additional_special_tokens": ["<finding>", "<organ>"]})
    model.resize_token_embeddings(len(tok))
    torch.manual_seed(3)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj"],
                                                  modules_to_save=["embed_tokens", "lm_head"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".modules_to_save." in name:
                param.add_(0.05 * torch.randn_like(param))
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    peft_model.save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(base)}))
    peft_model.merge_and_unload().save_pretrained(merged)
    for folder in (adapter, merged):
        _processor_files(base, folder)
        tok.save_pretrained(folder)
    loaded = load_model(base, adapter=adapter)
    assert loaded.info["vocabulary_resized_to"] == len(tok) and loaded.info["processor_from"] == "adapter"
    z_adapter, z_merged = _z(loaded, tiny_manifest), _z(load_model(merged), tiny_manifest)
    for key in ("final", "letters"):
        assert torch.allclose(z_adapter[key], z_merged[key], atol=1e-5, rtol=1e-4), key
    # the adapter folder's chat template is the one rendered: another system text there moves Z
    template = adapter / "chat_template.jinja"
    assert template.is_file()
    template.write_text(template.read_text().replace("You are a helpful assistant.", "You are a radiologist."))
    assert "You are a radiologist." in template.read_text()
    z_other = _z(load_model(base, adapter=adapter), tiny_manifest)
    assert not torch.allclose(z_other["final"], z_adapter["final"], atol=1e-4)


def test_a_chat_template_kept_in_tokenizer_config_is_used(tiny_ckpts, tiny_manifest, tmp_path):
    """Older saves keep the chat template in tokenizer_config.json only; extract asked for a
    chat_template.jinja the tokenizer did not need."""
    from matprobe.extract.checkpoints import load_model
    from test_extract_adapters import _z

    src = tiny_ckpts["qwen2_vl"]
    old = shutil.copytree(src, tmp_path / "old")
    template = (old / "chat_template.jinja").read_text()
    (old / "chat_template.jinja").unlink()
    cfg = json.loads((old / "tokenizer_config.json").read_text())
    (old / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": template}))
    loaded = load_model(old)
    assert loaded.info.get("chat_template_from") == "tokenizer_config.json"
    z_old, z_new = _z(loaded, tiny_manifest), _z(load_model(src), tiny_manifest)
    assert torch.equal(z_old["final"], z_new["final"])


def test_init_refuses_an_adapter_on_a_base_of_another_class(tiny_ckpts, tiny_manifest, tmp_path):
    """`init` wrote the pipeline and `run` refused it when it loaded the base; both files say it."""
    args = ["init", f"related-s0={tiny_ckpts['llava_lora']}", f"unrelated-s0={tiny_ckpts['llava']}", "--data",
            str(tiny_manifest), "--target", "CT,Chest,Classification", "--out", str(tmp_path / "p.toml")]
    res = CliRunner().invoke(app, [*args, "--base", str(tiny_ckpts["qwen2_vl"])])
    line = " ".join(res.output.split())
    assert res.exit_code == 2 and not (tmp_path / "p.toml").exists(), res.output
    assert (f"was trained on a LlavaForConditionalGeneration but base {tiny_ckpts['qwen2_vl']} is a "
            "Qwen2VLForConditionalGeneration") in line, line
    res = CliRunner().invoke(app, [*args, "--base", str(tiny_ckpts["llava"])])
    assert res.exit_code == 0 and (tmp_path / "p.toml").exists(), res.output


def test_init_calls_an_adapter_folder_holding_its_bases_config_an_adapter(tiny_ckpts, tiny_manifest, tmp_path):
    """Trainers copy the base's config.json beside the adapter; init's file called such a folder a
    "Hugging Face checkpoint". The adapter's own file says what it is, and `run` reads it as one
    (the extracted store records the adapter)."""
    adapter = tmp_path / "related-s0"
    shutil.copytree(tiny_ckpts["llava_lora"], adapter)
    shutil.copy(tiny_ckpts["llava"] / "config.json", adapter / "config.json")
    out = tmp_path / "p.toml"
    res = CliRunner().invoke(app, ["init", str(adapter), f"unrelated-s0={tiny_ckpts['llava']}", "--data",
                                   str(tiny_manifest), "--target", "CT,Chest,Classification", "--out", str(out)])
    assert res.exit_code == 0, res.output
    entry = out.read_text().split("[[checkpoints]]")[1]
    assert f'ckpt = "{adapter}"  # LoRA adapter' in entry, entry
    from matprobe.extract.checkpoints import applies_to_a_base

    assert applies_to_a_base(adapter)  # what `run` loads it as: an adapter on its base
