"""Tiny random Qwen2-VL checkpoints (`qwen2_vl`): 2-block vision tower, 4 x 64 Qwen2 decoder with M-RoPE.

`qwen2_5_vl` reuses everything here but the vision config (`matprobe.extract.tiny.qwen2_5_vl`).
"""

from __future__ import annotations

import json
from pathlib import Path

from matprobe.errors import ExtractError
from matprobe.extract.arch import get_architecture
from matprobe.extract.tiny import build_tokenizer

# ChatML with vision pads, in the style of Qwen/Qwen2-VL-7B-Instruct's template.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_EXTRA = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}


def qwen_tokenizer():
    return build_tokenizer(QWEN_SPECIALS, QWEN_EXTRA,
                           dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"))


def tiny_text(tokenizer) -> dict:
    tok = tokenizer.convert_tokens_to_ids
    return dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        # head_dim 16: the three M-RoPE sections (time, height, width) sum to head_dim / 2.
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=tok("<|endoftext|>"), eos_token_id=tok("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_ids(tokenizer) -> dict:
    tok = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=tok("<|image_pad|>"), video_token_id=tok("<|video_pad|>"),
        vision_start_token_id=tok("<|vision_start|>"), vision_end_token_id=tok("<|vision_end|>"),
    )


def tiny_config(tokenizer):
    from transformers import Qwen2VLConfig

    vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    return Qwen2VLConfig(text_config=tiny_text(tokenizer), vision_config=vision, **tiny_ids(tokenizer))


def write_processor_files(out: Path, tokenizer, processor_class: str, chat_template: str = QWEN_CHAT_TEMPLATE,
                          image_processor_config: dict | None = None) -> None:
    """The processor files a public Qwen2(.5)-VL checkpoint ships.

    The processor object itself cannot be built without torchvision (its video
    processor needs it), so the files are written directly; `image_processor_type`
    names the torchvision class as real checkpoints do, which exercises the PIL fallback.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer.save_pretrained(out)
    if image_processor_config is None:
        # Small images (28 px -> 1 merged token) keep the tiny model's sequences short.
        Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56).save_pretrained(out)
        pre = json.loads((out / "preprocessor_config.json").read_text())
        pre["image_processor_type"] = "Qwen2VLImageProcessor"
        pre["processor_class"] = processor_class
    else:
        pre = dict(image_processor_config)
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    (out / "chat_template.jinja").write_text(chat_template)


def build_qwen(name: str, config_fn, out: Path, seed: int, shape: dict | None = None) -> None:
    """A tiny checkpoint of the Qwen architecture `name`, its config from `config_fn(tokenizer)`."""
    import torch
    import transformers

    if shape:
        raise ExtractError("custom shapes are supported for the llava builder only")
    arch = get_architecture(name)
    tokenizer = qwen_tokenizer()
    config = config_fn(tokenizer)
    torch.manual_seed(seed)
    model = getattr(transformers, arch.model_class)(config)
    write_processor_files(out, tokenizer, arch.processor_class().__name__)
    model.save_pretrained(out)


def build(out: Path, seed: int, shape: dict | None = None) -> None:
    build_qwen("qwen2_vl", tiny_config, out, seed, shape)
