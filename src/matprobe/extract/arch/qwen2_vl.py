"""Qwen2-VL (`qwen2_vl`): ViT with 2-D RoPE + patch merger + Qwen2 decoder with M-RoPE.

Dynamic resolution: (H/28)(W/28) image tokens per image, capped by `--max-pixels`
(`size.longest_edge` of the image processor, in pixels). The processor's video processor
imports torchvision, absent on CPU-only installs; the fallback builds the processor from
the tokenizer and the PIL image processor (resizing differs numerically from the
torchvision one, so the backend is recorded, docs/design.md §2). Before transformers 4.52 the
class held the vision tower as `visual` and the decoder as `model` (`model.layers`); the
conversion mapping for Qwen2VLForConditionalGeneration lists the renames.
"""

from __future__ import annotations

import json
from pathlib import Path

from matprobe.errors import ExtractError
from matprobe.extract.arch import Architecture

QWEN_RENAMES = (
    (r"^visual\.", "model.visual."),
    (r"^model\.(?!language_model\.|visual\.)", "model.language_model."),
)


def _image_only_processor_class(base):
    """`base` (a Qwen2(.5)-VL processor class) without the video processor (needs torchvision)."""
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyProcessor(base):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
            self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnlyProcessor.__name__ = f"{base.__name__}ImageOnly"
    return ImageOnlyProcessor


def read_chat_template(path: Path) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return None


class Qwen2VL(Architecture):
    name = "qwen2_vl"
    model_class = "Qwen2VLForConditionalGeneration"
    dynamic_resolution = True
    image_tokens_vary = True
    legacy_key_renames = QWEN_RENAMES
    processor_token_settings = ("image_processor.patch_size", "image_processor.merge_size")
    config_token_settings = ("vision_config.patch_size", "vision_config.spatial_merge_size")

    def processor_class(self):
        from transformers import Qwen2VLProcessor

        return Qwen2VLProcessor

    def load_processor(self, path: Path):
        from transformers import AutoProcessor, AutoTokenizer

        try:
            return AutoProcessor.from_pretrained(path), False
        except ImportError:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
                Qwen2VLImageProcessorPil,
            )

            processor = _image_only_processor_class(self.processor_class())(
                image_processor=Qwen2VLImageProcessorPil.from_pretrained(path),
                tokenizer=AutoTokenizer.from_pretrained(path),
                chat_template=read_chat_template(path),
            )
            return processor, True

    def apply_max_pixels(self, image_processor, max_pixels):
        if max_pixels is not None:
            if max_pixels < 28 * 28:
                raise ExtractError(f"--max-pixels {max_pixels} is below one 28x28 token; use at least 784")
            size = dict(image_processor.size)
            size["longest_edge"] = int(max_pixels)
            size["shortest_edge"] = min(int(size.get("shortest_edge", 0) or 0), int(max_pixels))
            image_processor.size = size if isinstance(image_processor.size, dict) else type(
                image_processor.size)(**size)
        size = image_processor.size
        return (dict(size) if hasattr(size, "keys") else vars(size)).get("longest_edge")


ARCH = Qwen2VL()
