"""Qwen2.5-VL (`qwen2_5_vl`): Qwen2-VL with a windowed-attention SwiGLU ViT.

Everything extraction needs (processor fallback, `--max-pixels`, pre-4.52 key renames)
is as for Qwen2-VL; only the model and processor classes differ.
"""

from __future__ import annotations

from matprobe.extract.arch.qwen2_vl import Qwen2VL


class Qwen25VL(Qwen2VL):
    name = "qwen2_5_vl"
    model_class = "Qwen2_5_VLForConditionalGeneration"

    def processor_class(self):
        from transformers import Qwen2_5_VLProcessor

        return Qwen2_5_VLProcessor


ARCH = Qwen25VL()
