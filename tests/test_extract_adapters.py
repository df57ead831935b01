"""LoRA adapters saved in the pre-transformers-4.52 key layouts (most published adapters).

The old-layout adapters are written here by renaming the keys of a current-layout adapter
by hand (the inverse renames are spelt out below, independent of matprobe's tables), so
both folders hold the same weights: the remapped old one must give the same Z.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

torch.set_num_threads(1)

from matprobe.errors import ExtractError  # noqa: E402

# Current name -> name before transformers 4.52 (LlavaForConditionalGeneration held a
# LlamaForCausalLM as `language_model`; Qwen2-VL held `visual` and `model` = the decoder).
TO_OLD = {
    "llava": [(r"^model\.language_model\.", "language_model.model."), (r"^lm_head\.", "language_model.lm_head."),
              (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
              (r"^model\.vision_tower\.", "vision_tower.")],
    "qwen2_vl": [(r"^model\.language_model\.", "model."), (r"^model\.visual\.", "visual.")],
}
TO_OLD["qwen2_5_vl"] = TO_OLD["qwen2_vl"]
TO_OLD["gemma3"] = TO_OLD["llava"]  # Gemma3ForConditionalGeneration held a Gemma3ForCausalLM
TO_OLD["llava_next"] = TO_OLD["llava"] + [(r"^model\.image_newline$", "image_newline")]
ARCHS = ["llava", "qwen2_vl", "qwen2_5_vl", "llava_next", "gemma3"]
# What an old adapter_config.json said: regexes over the old module paths.
OLD_TARGETS = {"llava": r".*language_model\.model\.layers.*\.(q_proj|v_proj)",
               "qwen2_vl": r"^model\.layers\.\d+\.self_attn\.(q_proj|v_proj)",
               "qwen2_5_vl": r"^model\.layers\.\d+\.self_attn\.(q_proj|v_proj)",
               "llava_next": r".*language_model\.model\.layers.*\.(q_proj|v_proj)",
               "gemma3": r".*language_model\.model\.layers.*\.(q_proj|v_proj)"}
# (Gemma 3 ties its LM head to the embeddings, so only the projector is saved there.)
SAVED = {"llava": ["multi_modal_projector", "lm_head"], "qwen2_vl": ["merger", "lm_head"],
         "qwen2_5_vl": ["merger", "lm_head"], "llava_next": ["multi_modal_projector", "lm_head"],
         "gemma3": ["multi_modal_projector"]}
OLD_SAVED = {"llava": ["multi_modal_projector", "language_model.lm_head"],
             "qwen2_vl": ["visual.merger", "lm_head"], "qwen2_5_vl": ["visual.merger", "lm_head"],
             "llava_next": ["multi_modal_projector", "language_model.lm_head"],
             "gemma3": ["multi_modal_projector"]}
PREFIX = "base_model.model."


def _to_old(key: str, arch: str) -> str:
    body = key[len(PREFIX):]
    for pattern, repl in TO_OLD[arch]:
        new, n = re.subn(pattern, repl, body)
        if n:
            return PREFIX + new
    return key


def write_old_layout(new_dir, out_dir, arch):
    from safetensors.torch import load_file, save_file

    out = shutil.copytree(new_dir, out_dir)
    weights = load_file(new_dir / "adapter_model.safetensors")
    old = {_to_old(k, arch): v for k, v in weights.items()}
    assert len(old) == len(weights)
    save_file(old, out / "adapter_model.safetensors")
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["target_modules"] = OLD_TARGETS[arch]
    cfg["modules_to_save"] = OLD_SAVED[arch]
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out, old


@pytest.fixture(scope="module")
def adapters(tiny_ckpts, tmp_path_factory):
    from matprobe.extract.tiny import build_tiny_adapter

    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for arch in ARCHS:
        new = build_tiny_adapter(root / f"{arch}_new", tiny_ckpts[arch], seed=11, modules_to_save=SAVED[arch])
        old, old_weights = write_old_layout(new, root / f"{arch}_old", arch)
        out[arch] = (new, old, old_weights)
    return out


def _z(loaded, manifest):
    from matprobe.data import load_dataset, load_image
    from matprobe.extract.hooks import LayerPooler
    from matprobe.extract.tokens import POOLS, build_batch, last_token_index, pool_weights

    ds = load_dataset(manifest)
    idx = [0, 1, 2]
    batch = build_batch(loaded.processor, [ds[i].question for i in idx], [ds[i].options for i in idx],
                        [load_image(ds[i]) for i in idx])
    att = batch.inputs["attention_mask"]
    w = pool_weights(batch.inputs["input_ids"], att, batch.question_mask, loaded.image_token_id, POOLS)
    with LayerPooler(loaded.model, ["embed", "1", "final"], need_final_last=True) as pooler:
        pooled = pooler.run(batch.inputs, w, last_token_index(att))
        from matprobe.extract.hooks import letter_logits
        from matprobe.extract.tokens import option_letter_token_ids

        ids = option_letter_token_ids(loaded.processor.tokenizer, 4)
        pooled["letters"] = letter_logits(loaded.model, pooler.last_final, ids)
    return pooled


@pytest.mark.parametrize("arch", ARCHS)
def test_old_layout_adapter_gives_the_same_z_as_new_layout(arch, adapters, tiny_ckpts, tiny_manifest):
    from matprobe.extract.checkpoints import load_model

    new, old, old_weights = adapters[arch]
    # The old file really is in the old layout: no key under the current names.
    assert not any(k.startswith(PREFIX + "model.language_model.") for k in old_weights)
    base = _z(load_model(tiny_ckpts[arch]), tiny_manifest)
    loaded_new = load_model(tiny_ckpts[arch], adapter=new)
    loaded_old = load_model(tiny_ckpts[arch], adapter=old)
    assert loaded_new.info["adapter_layout"].startswith("current")
    assert loaded_old.info["adapter_layout"] == "pre-transformers-4.52"
    z_new, z_old = _z(loaded_new, tiny_manifest), _z(loaded_old, tiny_manifest)
    for key in z_new:
        assert torch.equal(z_new[key], z_old[key]), (arch, key)
        # Differs from the base: LoRA (decoder layers), the saved projector / merger
        # (image tokens already at the embeddings) and the saved LM head (letter logits).
        assert (z_new[key] - base[key]).abs().max().item() > 1e-4, (arch, key)
    image = 1  # POOLS index of "image"
    assert (z_old["embed"][:, image] - base["embed"][:, image]).abs().max().item() > 1e-4
    # Unmerged (LoRA modules kept) equals merged.
    z_unmerged = _z(load_model(tiny_ckpts[arch], adapter=old, merge_adapter=False), tiny_manifest)
    for key in z_new:
        assert (z_unmerged[key] - z_old[key]).abs().max().item() <= 1e-5, (arch, key)


def test_unknown_key_after_remap_names_the_layouts_and_not_base(adapters, tiny_ckpts, tmp_path):
    from safetensors.torch import load_file, save_file

    from matprobe.extract.checkpoints import load_model

    _, old, _ = adapters["llava"]
    broken = shutil.copytree(old, tmp_path / "broken")
    weights = load_file(broken / "adapter_model.safetensors")
    weights[PREFIX + "language_model.model.layers.0.self_attn.qkv_proj.lora_A.weight"] = torch.zeros(4, 64)
    save_file(weights, broken / "adapter_model.safetensors")
    with pytest.raises(ExtractError) as err:
        load_model(tiny_ckpts["llava"], adapter=broken)
    msg = str(err.value)
    assert "qkv_proj" in msg and "found pre-transformers-4.52" in msg and "expected the current layout" in msg
    assert "--base" not in msg


def test_other_base_shapes_ask_for_base(adapters, tiny_ckpts, tmp_path):
    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.tiny import build_tiny_checkpoint

    wide = build_tiny_checkpoint(tmp_path / "wide", "llava", seed=0, shape=dict(hidden=96, heads=4, kv_heads=2))
    _, old, _ = adapters["llava"]
    moved = shutil.copytree(old, tmp_path / "moved")
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "llava-hf/llava-1.5-7b-hf"  # a hub id: nothing to compare locally
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    vocab = json.loads((wide / "config.json").read_text())["text_config"]["vocab_size"]
    with pytest.raises(ExtractError, match=rf"other shapes .*\({vocab}, 64\) vs \({vocab}, 96.*pass the base "
                                           r"it was trained on with --base"):
        load_model(moved, base=wide)


def test_old_layout_bin_adapter_loads(adapters, tiny_ckpts, tiny_manifest, tmp_path):
    """peft < 0.7 saved adapter_model.bin; same weights, same Z."""
    from safetensors.torch import load_file

    from matprobe.extract.checkpoints import load_model

    new, old, _ = adapters["qwen2_vl"]
    binary = shutil.copytree(old, tmp_path / "bin")
    torch.save(load_file(binary / "adapter_model.safetensors"), binary / "adapter_model.bin")
    (binary / "adapter_model.safetensors").unlink()
    z_bin = _z(load_model(tiny_ckpts["qwen2_vl"], adapter=binary), tiny_manifest)
    z_new = _z(load_model(tiny_ckpts["qwen2_vl"], adapter=new), tiny_manifest)
    for key in z_new:
        assert torch.equal(z_bin[key], z_new[key]), key


def test_cli_old_layout_adapter_and_its_errors(adapters, tiny_ckpts, tiny_manifest, tmp_path):
    from safetensors.torch import load_file, save_file
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.store import EmbeddingStore

    _, old, _ = adapters["llava"]
    runner = CliRunner()
    out = tmp_path / "z.h5"
    res = runner.invoke(app, ["extract", "--ckpt", str(tiny_ckpts["llava"]), "--adapter", str(old), "--data",
                              str(tiny_manifest), "--out", str(out), "--layers", "1,final", "--dtype", "bf16",
                              "--attn", "eager", "--batch-size", "5"])
    assert res.exit_code == 0, res.output
    with EmbeddingStore.open(out) as store:
        prov = store.provenance
        assert store.done.all()
    assert (prov["adapter_layout"], prov["dtype"], prov["attn_implementation"]) == (
        "pre-transformers-4.52", "bf16", "eager")
    broken = shutil.copytree(old, tmp_path / "broken")
    weights = load_file(broken / "adapter_model.safetensors")
    weights[PREFIX + "visual.blocks.0.attn.qkv.lora_A.weight"] = torch.zeros(4, 32)  # a Qwen key
    save_file(weights, broken / "adapter_model.safetensors")
    res = runner.invoke(app, ["extract", "--ckpt", str(tiny_ckpts["llava"]), "--adapter", str(broken), "--data",
                              str(tiny_manifest), "--out", str(tmp_path / "bad.h5"), "--layers", "1,final"])
    errors = [line for line in res.output.splitlines() if "error:" in line]  # stderr progress bars aside
    assert res.exit_code == 2 and len(errors) == 1 and errors[0].startswith("error:"), res.output
    text = errors[0]
    assert "expected the current layout (e.g. base_model.model.model.language_model.layers.0.self_attn.q_proj" in text
    assert "visual.blocks.0.attn.qkv" in text and "--base" not in text
    assert not (tmp_path / "bad.h5").exists()


def test_adapter_for_an_architecture_without_legacy_layout(tiny_ckpts, tiny_manifest, tmp_path):
    """Idefics3's keys did not move in 4.52: its adapters load as saved, projector and head included."""
    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.tiny import build_tiny_adapter

    adapter = build_tiny_adapter(tmp_path / "lora", tiny_ckpts["idefics3"], seed=5,
                                 modules_to_save=["connector", "lm_head"])
    base = _z(load_model(tiny_ckpts["idefics3"]), tiny_manifest)
    merged = load_model(tiny_ckpts["idefics3"], adapter=adapter)
    unmerged = load_model(tiny_ckpts["idefics3"], adapter=adapter, merge_adapter=False)
    assert merged.info["adapter_layout"].startswith("current")
    z, z_unmerged = _z(merged, tiny_manifest), _z(unmerged, tiny_manifest)
    for key in z:
        assert (z[key] - z_unmerged[key]).abs().max().item() <= 1e-5, key
        assert (z[key] - base[key]).abs().max().item() > 1e-4, key
