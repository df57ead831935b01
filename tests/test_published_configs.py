"""Checkpoints built from the *published* configuration files (tests/fixtures/published).

Every field of config.json, preprocessor_config.json, the chat template and the special
token ids is the published one; only widths and depth are shrunk (SHRINK below; Qwen's
M-RoPE sections keep their 16:24:24 proportions at head_dim 16). Weights are written in
the key layout of the hub files (pre-4.52 names: `language_model.model.layers...`,
`visual...`) as three safetensors shards with an index, as downloaded checkpoints are.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures" / "published"
REPOS = {"llava": "llava-1.5-7b-hf", "qwen2_vl": "Qwen2-VL-7B-Instruct", "qwen2_5_vl": "Qwen2.5-VL-7B-Instruct",
         "gemma3": "gemma-3-4b-it"}
_QWEN_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
SHRINK = {
    "llava": {"text_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=2),
              "vision_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2)},
    "qwen2_vl": {**_QWEN_TEXT, "vision_config": dict(depth=2, embed_dim=32, num_heads=2, hidden_size=32)},
    "qwen2_5_vl": {**_QWEN_TEXT, "vision_config": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                                       out_hidden_size=32, fullatt_block_indexes=[1])},
    # head_dim (256) and query_pre_attn_scalar stay: they are not widths of the residual stream.
    "gemma3": {"text_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1),
               "vision_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=2)},
}
# Current module names -> the hub files' key names (written out here, independent of matprobe).
TO_HUB = {
    "llava": [(r"^model\.language_model\.", "language_model.model."), (r"^lm_head\.", "language_model.lm_head."),
              (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
              (r"^model\.vision_tower\.", "vision_tower.")],
    "qwen2_vl": [(r"^model\.language_model\.", "model."), (r"^model\.visual\.", "visual.")],
}
TO_HUB["qwen2_5_vl"] = TO_HUB["qwen2_vl"]
TO_HUB["gemma3"] = TO_HUB["llava"]
EXPECTED_PROMPT = {
    "llava": "USER: <image>\n{text} ASSISTANT:",
    "qwen2_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|><|image_pad|><|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n",
}
EXPECTED_PROMPT["qwen2_5_vl"] = EXPECTED_PROMPT["qwen2_vl"]
EXPECTED_PROMPT["gemma3"] = "<bos><start_of_turn>user\n<start_of_image>{text}<end_of_turn>\n<start_of_turn>model\n"
EXPECTED_VOCAB = {"llava": 32064, "qwen2_vl": 152064, "qwen2_5_vl": 152064,
                  "gemma3": 262208}  # gemma3's file names none: Gemma3TextConfig's default


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "rope_scaling" else v
    return out


def _tokenizer(src: Path, arch: str):
    """A ~400-token byte-level BPE whose special tokens sit at the published ids."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from matprobe.extract.tiny import build_tokenizer

    added = {int(k): v for k, v in json.loads((src / "added_tokens.json").read_text()).items()}
    low = [added[i] for i in sorted(added) if i < 100]  # <unk> <s> </s> keep ids 0, 1, 2
    base = build_tokenizer(low, {}, {})
    spec = json.loads(base.backend_tokenizer.to_str())
    assert all(spec["model"]["vocab"][t] == i for i, t in added.items() if i < 100)
    for i, text in sorted(added.items()):
        if i >= 100:
            spec["model"]["vocab"][text] = i
            spec["added_tokens"].append(dict(id=i, content=text, single_word=False, lstrip=False, rstrip=False,
                                             normalized=False, special=True))
    backend = Tokenizer.from_str(json.dumps(spec))
    special = json.loads((src / "special_tokens_map.json").read_text())
    named = {k: (v["content"] if isinstance(v, dict) else v) for k, v in special.items()
             if k.endswith("_token")}
    if arch == "llava":
        from tokenizers import processors

        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        extra = {"image_token": "<image>"}
    elif arch == "gemma3":
        extra = {k: special[k] for k in ("image_token", "boi_token", "eoi_token")}
    else:
        extra = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                 "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
    return PreTrainedTokenizerFast(tokenizer_object=backend, extra_special_tokens=extra, **named)


def _tied(model) -> bool:
    return model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def build_published(arch: str, out: Path, seed: int = 0) -> tuple[Path, dict]:
    """Write the shrunk published checkpoint; returns (folder, hub-layout tensors written)."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForImageTextToText

    src = FIXTURES / REPOS[arch]
    out.mkdir(parents=True)
    cfg = _merge(json.loads((src / "config.json").read_text()), SHRINK[arch])
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    for name in ("preprocessor_config.json", "processor_config.json", "chat_template.json"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    _tokenizer(src, arch).save_pretrained(out)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(out), dtype=torch.float32)
    hub = {}
    tied = {"lm_head.weight"} if _tied(model) else set()
    for key, value in model.state_dict().items():
        if key in tied:  # not in the files: tied to the embeddings
            continue
        for pattern, repl in TO_HUB[arch]:
            key, n = re.subn(pattern, repl, key)
            if n:
                break
        hub[key] = value.detach().clone().contiguous()
    keys = sorted(hub)
    shards = [keys[i::3] for i in range(3)]
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-00003.safetensors"
        save_file({k: hub[k] for k in shard}, out / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in hub.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return out, hub


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    return {arch: build_published(arch, root / arch, seed=i) for i, arch in enumerate(REPOS)}


@pytest.mark.parametrize("arch", list(REPOS))
def test_published_checkpoint_loads_with_every_field_and_weight(arch, published):
    from matprobe.extract.checkpoints import load_model

    folder, hub = published[arch]
    assert not any(k.startswith("model.language_model.") for k in hub)  # really the hub layout
    loaded = load_model(folder)
    cfg = json.loads((FIXTURES / REPOS[arch] / "config.json").read_text())
    text = loaded.model.config.get_text_config()
    assert loaded.arch == arch and loaded.num_layers == 2
    assert loaded.image_token_id == cfg.get("image_token_index", cfg.get("image_token_id"))
    assert text.vocab_size == EXPECTED_VOCAB[arch]
    if arch == "llava":
        assert loaded.image_token_id == 32000 and loaded.model.config.vision_feature_layer == -2
        assert loaded.model.config.vision_config.image_size == 336
        assert text.rms_norm_eps == 1e-5 and text.max_position_embeddings == 4096
    elif arch == "gemma3":
        assert loaded.image_token_id == 262144 and loaded.model.config.mm_tokens_per_image == 256
        assert loaded.model.config.boi_token_id == 255999 and loaded.model.config.vision_config.image_size == 896
        assert text.head_dim == 256 and text.sliding_window == 1024 and text.query_pre_attn_scalar == 256
        assert _tied(loaded.model)
    else:
        assert loaded.image_token_id == 151655
        assert loaded.model.config.vision_start_token_id == 151652
        assert text.rope_parameters["rope_theta"] == 1e6 and text.rope_parameters["mrope_section"] == [2, 3, 3]
        assert text.rms_norm_eps == 1e-6
    # Every tensor of the hub files arrived, under its current name.
    state = loaded.model.state_dict()
    assert len(state) == len(hub) + (1 if _tied(loaded.model) else 0)
    for key, value in hub.items():
        renamed = loaded.architecture.rename_legacy_key(key)
        assert torch.equal(state[renamed], value), key


@pytest.mark.parametrize("arch", list(REPOS))
def test_published_prompt_tokens_and_letters(arch, published):
    from PIL import Image

    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.tokens import build_batch, build_prompt, option_letter_token_ids, render_user_text

    loaded = load_model(published[arch][0])
    processor = loaded.processor
    question, options = "Which organ is shown?", ("Lung", "Brain", "Knee", "Liver")
    text, _ = render_user_text(question, options)
    prompt, (qs, qe) = build_prompt(processor, question, options)
    assert prompt == EXPECTED_PROMPT[arch].format(text=text)
    assert prompt[qs:qe] == f"{question}\nA: Lung\nB: Brain\nC: Knee\nD: Liver"
    images = [Image.new("RGB", (w, h), (90, 30, 200)) for h, w in [(28, 28), (56, 112), (200, 300)]]
    batch = build_batch(processor, [question] * 3, [options] * 3, images)
    n_image = (batch.inputs["input_ids"] == loaded.image_token_id).sum(1).tolist()
    if arch == "llava":
        assert n_image == [576] * 3  # (336 / 14)^2, fixed
    elif arch == "gemma3":
        assert n_image == [256] * 3  # (896 / 14)^2 patches pooled to mm_tokens_per_image
    else:
        # smart_resize: multiples of 28, at least min_pixels 3136 (56 x 56); tokens = (H/28)(W/28).
        assert n_image == [4, 2 * 4, 7 * 11]
    tok = processor.tokenizer
    letters = option_letter_token_ids(tok, 4)
    for letter, ids in zip("ABCD", letters):
        # Byte-level spellings: "A" and "ĠA" (a leading space); both single tokens here.
        vocab = tok.get_vocab()
        assert ids == [vocab[s] for s in (letter, "Ġ" + letter) if s in vocab]
        assert not set(ids) & set(tok.all_special_ids)


@pytest.mark.parametrize("arch", list(REPOS))
def test_published_store_equals_transformers_forward(arch, published, make_tiny_manifest, tmp_path):
    from matprobe.data import load_dataset, load_image
    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.runner import ExtractConfig, extract
    from matprobe.extract.tokens import build_batch
    from matprobe.store import EmbeddingStore
    from test_extract_equivalence import _reference_pools

    folder = published[arch][0]
    tiny_manifest = make_tiny_manifest(tmp_path / "data", n=4)  # four image sizes, three question lengths
    out = tmp_path / "z.h5"
    extract(ExtractConfig(ckpt=str(folder), data=str(tiny_manifest), out=str(out), layers="0,final",
                          batch_size=3))
    loaded = load_model(folder)
    ds = load_dataset(tiny_manifest)
    with EmbeddingStore.open(out) as store:
        stored = {k: store.read(*k) for k in store.feature_keys()}
        answers = store.answers()
        assert store.provenance["arch"] == arch
    worst = 0.0
    for i in range(4):
        sample = ds[i]
        batch = build_batch(loaded.processor, [sample.question], [sample.options], [load_image(sample)])
        with torch.inference_mode():
            full = loaded.model(**batch.inputs, output_hidden_states=True, use_cache=False)
        hs = full.hidden_states
        for layer, h in {"0": hs[1], "final": hs[-1]}.items():
            ref = _reference_pools(h, batch.inputs["input_ids"], batch.inputs["attention_mask"],
                                   batch.question_mask, loaded.image_token_id)
            for pool, value in ref.items():
                worst = max(worst, float(np.abs(stored[(layer, pool)][i] - value[0].numpy()).max()))
        logits = full.logits[0, -1]
        vocab = loaded.processor.tokenizer.get_vocab()
        letter = torch.stack([torch.logsumexp(logits[[vocab[s] for s in (L, "Ġ" + L) if s in vocab]], 0)
                              for L in "ABCD"])
        assert answers["pred"][i] == int(letter.argmax())
        np.testing.assert_allclose(answers["probs"][i], torch.softmax(letter, 0).numpy(), atol=1e-5)
    assert worst <= 1e-5, worst
