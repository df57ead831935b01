"""Issue 24: adding an architecture is one file. This test adds VipLlava, a transformers model type
matprobe does not list, as one class and its tiny builder, both in this file (a plug-in would put
them in one module of its own), registers them, and runs the shared checks through it: detection,
the registry-driven listings, the hook-pooled features against transformers' own forward
(`test_extract_equivalence`), and `matprobe extract` end to end. No production file names it.
The estimator counterpart is `test_estimator_contract.py` (a Protocol-only plug-in)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from matprobe.extract.arch import Architecture

torch.set_num_threads(1)


class VipLlava(Architecture):
    """VipLlava (CLIP features of several layers -> projector -> Llama): the generic path fits."""

    name = "vipllava"
    model_class = "VipLlavaForConditionalGeneration"


def build_tiny_vipllava(out: Path, seed: int, shape: dict | None = None) -> None:
    """A random tiny VipLlava checkpoint saved by transformers (the LLaVA builder's tokenizer and processor)."""
    from transformers import CLIPVisionConfig, LlamaConfig, VipLlavaConfig, VipLlavaForConditionalGeneration

    from matprobe.extract.tiny.llava import llava_processor, llava_tokenizer

    tokenizer = llava_tokenizer()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                              image_size=56, patch_size=14, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = VipLlavaConfig(vision_config=vision, text_config=text, vision_feature_layers=[-2, -1],
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                            pad_token_id=tokenizer.pad_token_id, image_seq_length=16)
    torch.manual_seed(seed)
    VipLlavaForConditionalGeneration(config).save_pretrained(out)
    llava_processor(tokenizer, 56).save_pretrained(out)


@pytest.fixture
def vipllava(tmp_path):
    from matprobe.extract.arch import register_architecture, unregister_architecture
    from matprobe.extract.tiny import build_tiny_checkpoint, register_tiny_builder, unregister_tiny_builder

    register_architecture(VipLlava())
    register_tiny_builder("vipllava", build_tiny_vipllava)
    try:
        yield build_tiny_checkpoint(tmp_path / "vipllava", "vipllava", seed=3)
    finally:
        unregister_tiny_builder("vipllava")
        unregister_architecture("vipllava")


def test_a_registered_toy_architecture_runs_every_shared_check(vipllava, tiny_manifest, tmp_path):
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.extract.arch import architectures
    from matprobe.extract.checkpoints import detect_architecture
    from matprobe.extract.tiny import tiny_architectures
    from matprobe.store import EmbeddingStore
    from test_extract_equivalence import test_hook_pools_equal_output_hidden_states as same_as_the_forward

    assert "vipllava" in architectures() and "vipllava" in tiny_architectures()
    assert detect_architecture(vipllava) == "vipllava"
    same_as_the_forward("vipllava", {"vipllava": vipllava}, tiny_manifest)  # features = transformers' forward

    out = tmp_path / "vip.h5"
    res = CliRunner().invoke(app, ["extract", "--ckpt", str(vipllava), "--data", str(tiny_manifest), "--out",
                                   str(out), "--layers", "1,-1", "--pool", "last", "--batch-size", "4",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    with EmbeddingStore.open(out) as st:
        assert st.provenance["arch"] == "vipllava"
        z = st.read("3", "last")
        assert z.shape == (st.n, 64) and np.isfinite(z).all() and z.std() > 0


def test_an_unregistered_toy_is_refused_with_the_registry_listed(tmp_path):
    from matprobe.errors import ExtractError
    from matprobe.extract.arch import architectures
    from matprobe.extract.checkpoints import detect_architecture

    build_tiny_vipllava(tmp_path, 0)
    assert "vipllava" not in architectures()
    with pytest.raises(ExtractError, match="unsupported architecture 'vipllava'; supported: llava"):
        detect_architecture(tmp_path)
