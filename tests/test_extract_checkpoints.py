"""Checkpoint loading: arch registry, processor fallback, LoRA adapters and their errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

torch.set_num_threads(1)

from matprobe.errors import ExtractError  # noqa: E402


def _pooled(loaded, manifest, layers=("1", "3")):
    from matprobe.data import load_dataset, load_image
    from matprobe.extract.hooks import LayerPooler
    from matprobe.extract.tokens import POOLS, build_batch, last_token_index, pool_weights

    ds = load_dataset(manifest)
    idx = [0, 1, 2]
    batch = build_batch(loaded.processor, [ds[i].question for i in idx], [ds[i].options for i in idx],
                        [load_image(ds[i]) for i in idx])
    att = batch.inputs["attention_mask"]
    w = pool_weights(batch.inputs["input_ids"], att, batch.question_mask, loaded.image_token_id, POOLS)
    with LayerPooler(loaded.model, list(layers), need_final_last=False) as pooler:
        return pooler.run(batch.inputs, w, last_token_index(att))


@pytest.mark.parametrize("arch,cls", [
    ("llava", "LlavaForConditionalGeneration"),
    ("qwen2_vl", "Qwen2VLForConditionalGeneration"),
    ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
    ("llava_next", "LlavaNextForConditionalGeneration"),
    ("gemma3", "Gemma3ForConditionalGeneration"),
    ("idefics3", "Idefics3ForConditionalGeneration"),
])
def test_tiny_checkpoints_load_through_auto_classes(arch, cls, tiny_ckpts):
    from matprobe.extract.checkpoints import detect_architecture, load_model

    assert detect_architecture(tiny_ckpts[arch]) == arch
    loaded = load_model(tiny_ckpts[arch])
    assert type(loaded.model).__name__ == cls
    assert loaded.num_layers == 4
    assert not loaded.model.training
    # Qwen processors need torchvision for their video processor; without it the PIL
    # image processor is used and recorded.
    try:
        import torchvision  # noqa: F401
        has_tv = True
    except ImportError:
        has_tv = False
    if arch in ("qwen2_vl", "qwen2_5_vl") and not has_tv:
        assert loaded.info["processor_fallback"] is True
    assert loaded.info["image_processor_backend"] == "pil"
    assert len(loaded.info["config_sha256"]) == 64


def test_lora_merged_equals_unmerged_and_differs_from_base(tiny_ckpts, tiny_manifest):
    from matprobe.extract.checkpoints import load_model

    base = _pooled(load_model(tiny_ckpts["llava"]), tiny_manifest)
    merged_model = load_model(tiny_ckpts["llava"], adapter=tiny_ckpts["llava_lora"], merge_adapter=True)
    unmerged_model = load_model(tiny_ckpts["llava"], adapter=tiny_ckpts["llava_lora"], merge_adapter=False)
    # Unmerged keeps LoRA modules in the graph; merged has plain Linear layers again.
    assert any("lora_A" in n for n, _ in unmerged_model.model.named_parameters())
    assert not any("lora_A" in n for n, _ in merged_model.model.named_parameters())
    merged, unmerged = _pooled(merged_model, tiny_manifest), _pooled(unmerged_model, tiny_manifest)
    for layer in ("1", "3"):
        assert (merged[layer] - unmerged[layer]).abs().max().item() <= 1e-5
        assert (merged[layer] - base[layer]).abs().max().item() > 1e-3
    assert merged_model.info["adapter_sha256"] and merged_model.info["adapter_merged"] is True


def test_adapter_folder_as_ckpt_uses_stored_base(tiny_ckpts):
    from matprobe.extract.checkpoints import resolve_adapter

    base, adapter = resolve_adapter(tiny_ckpts["llava_lora"], None, None)
    assert base.resolve() == tiny_ckpts["llava"].resolve()
    assert adapter == tiny_ckpts["llava_lora"]


def test_adapter_with_missing_base_path_asks_for_base(tiny_ckpts, tmp_path):
    from matprobe.extract.checkpoints import load_model

    moved = shutil.copytree(tiny_ckpts["llava_lora"], tmp_path / "lora")
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/nonexistent/cluster/llava-1.5-7b-hf"
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExtractError, match="pass --base"):
        load_model(moved)
    # --base fixes it
    loaded = load_model(moved, base=tiny_ckpts["llava"])
    assert loaded.info["adapter"] == str(moved.resolve())


def test_adapter_on_wrong_base_is_refused(tiny_ckpts):
    from matprobe.extract.checkpoints import load_model

    with pytest.raises(ExtractError, match="trained on a LlavaForConditionalGeneration"):
        load_model(tiny_ckpts["qwen2_vl"], adapter=tiny_ckpts["llava_lora"])


def test_adapter_with_missing_keys_is_refused(tiny_ckpts, tmp_path):
    from safetensors.torch import load_file, save_file

    from matprobe.extract.checkpoints import load_model

    broken = shutil.copytree(tiny_ckpts["llava_lora"], tmp_path / "lora")
    weights = load_file(broken / "adapter_model.safetensors")
    dropped = sorted(k for k in weights if "layers.0." in k)
    assert dropped
    save_file({k: v for k, v in weights.items() if k not in dropped}, broken / "adapter_model.safetensors")
    with pytest.raises(ExtractError, match="missing adapter keys"):
        load_model(tiny_ckpts["llava"], adapter=broken)


def test_unknown_and_original_llava_layouts(tmp_path):
    from matprobe.extract.checkpoints import detect_architecture

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ExtractError, match="unsupported architecture 'bert'; supported: llava, qwen2_vl"):
        detect_architecture(bert)
    orig = tmp_path / "llava-v1.5-7b"
    orig.mkdir()
    # original haotian-liu/LLaVA: told by the mm_* keys, whatever model_type says (issue 21)
    for model_type in ("llava_llama", "llava", "llava_mistral"):
        (orig / "config.json").write_text(json.dumps({"model_type": model_type, "mm_vision_tower": "clip"}))
        assert detect_architecture(orig) == "llava_original"
    (orig / "config.json").write_text(json.dumps({"model_type": "llava_llama"}))
    with pytest.raises(ExtractError, match="no mm_\\* keys"):
        detect_architecture(orig)
    lora_repo = tmp_path / "llava-lora"
    lora_repo.mkdir()
    (lora_repo / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (lora_repo / "non_lora_trainables.bin").write_bytes(b"")
    with pytest.raises(ExtractError, match="no mm_\\* keys"):
        detect_architecture(lora_repo)
    with pytest.raises(ExtractError, match="no such directory"):
        detect_architecture(tmp_path / "nope")
    with pytest.raises(ExtractError, match="no config.json"):
        detect_architecture(tmp_path)


def test_layer_parsing_and_range():
    from matprobe.extract.hooks import parse_layers

    assert parse_layers("8,16,-1", 32) == ["8", "16", "31"]
    assert parse_layers("-32,final,embed,31", 32) == ["0", "final", "embed", "31"]
    with pytest.raises(ExtractError, match="index 32 is out of range for a 32-block decoder"):
        parse_layers("32", 32)
    with pytest.raises(ExtractError, match="out of range"):
        parse_layers("-33", 32)
    with pytest.raises(ExtractError, match="is not a layer"):
        parse_layers("mid", 32)


def test_last_token_index_either_padding_side():
    from matprobe.extract.tokens import last_token_index

    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_token_index(left).tolist() == [4, 4, 4]
    assert last_token_index(right).tolist() == [2, 4, 0]


def test_qwen_max_pixels_sets_image_token_count(tiny_ckpts):
    from PIL import Image

    from matprobe.extract.checkpoints import load_processor
    from matprobe.extract.tokens import build_batch

    sizes = [(56, 56), (28, 56), (28, 28)]  # (H, W)
    images = [Image.new("RGB", (w, h)) for h, w in sizes]
    for max_pixels, expected in [(None, [(h // 28) * (w // 28) for h, w in sizes]), (784, [1, 1, 1])]:
        processor, info = load_processor(tiny_ckpts["qwen2_vl"], "qwen2_vl", max_pixels=max_pixels)
        batch = build_batch(processor, ["q"] * 3, [("a", "b")] * 3, images)
        image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert (batch.inputs["input_ids"] == image_id).sum(1).tolist() == expected
        if max_pixels:
            assert info["max_pixels"] == max_pixels
    with pytest.raises(ExtractError, match="--max-pixels 100 is below one 28x28 token"):
        load_processor(tiny_ckpts["qwen2_vl"], "qwen2_vl", max_pixels=100)
