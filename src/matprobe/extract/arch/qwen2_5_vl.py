"""Qwen2.5-VL (`qwen2_5_vl`): Qwen2-VL with a windowed-attention SwiGLU ViT.

Everything extraction needs (processor fallback, `--max-pixels`, pre-4.52 key renames)
is as for Qwen2-VL; only the model class and the tiny vision config differ.
"""

from __future__ import annotations

from matprobe.extract.arch.qwen2_vl import Qwen2VL


class Qwen25VL(Qwen2VL):
    name = "qwen2_5_vl"
    model_class = "Qwen2_5_VLForConditionalGeneration"

    def processor_class(self):
        from transformers import Qwen2_5_VLProcessor

        return Qwen2_5_VLProcessor

    def tiny_config(self, tokenizer):
        from transformers import Qwen2_5_VLConfig

        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                      window_size=56, fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=self.tiny_text(tokenizer), vision_config=vision,
                                **self.tiny_ids(tokenizer))


ARCH = Qwen25VL()
