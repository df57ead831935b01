"""Tiny random Qwen2.5-VL checkpoints (`qwen2_5_vl`): the Qwen2-VL builder with a windowed SwiGLU ViT."""

from __future__ import annotations

from pathlib import Path

from matprobe.extract.tiny.qwen2_vl import build_qwen, tiny_ids, tiny_text


def tiny_config(tokenizer):
    from transformers import Qwen2_5_VLConfig

    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                  window_size=56, fullatt_block_indexes=[1])
    return Qwen2_5_VLConfig(text_config=tiny_text(tokenizer), vision_config=vision, **tiny_ids(tokenizer))


def build(out: Path, seed: int, shape: dict | None = None) -> None:
    build_qwen("qwen2_5_vl", tiny_config, out, seed, shape)
