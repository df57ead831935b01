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

QWEN_RENAMES = (
    (r"^visual\.", "model.visual."),
    (r"^model\.(?!language_model\.|visual\.)", "model.language_model."),
)


def qwen_tokenizer():
    from matprobe.extract.tiny import build_tokenizer

    return build_tokenizer(QWEN_SPECIALS, QWEN_EXTRA,
                           dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"))


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

    # ---- tiny checkpoint -------------------------------------------------------
    def tiny_config(self, tokenizer):
        from transformers import Qwen2VLConfig

        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        return Qwen2VLConfig(text_config=self.tiny_text(tokenizer), vision_config=vision,
                             **self.tiny_ids(tokenizer))

    @staticmethod
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

    @staticmethod
    def tiny_ids(tokenizer) -> dict:
        tok = tokenizer.convert_tokens_to_ids
        return dict(
            image_token_id=tok("<|image_pad|>"), video_token_id=tok("<|video_pad|>"),
            vision_start_token_id=tok("<|vision_start|>"), vision_end_token_id=tok("<|vision_end|>"),
        )

    def write_processor_files(self, out: Path, tokenizer, chat_template: str = QWEN_CHAT_TEMPLATE,
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
            pre["processor_class"] = self.processor_class().__name__
        else:
            pre = dict(image_processor_config)
        (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
        (out / "chat_template.jinja").write_text(chat_template)

    def build_tiny(self, out: Path, seed: int, shape: dict | None = None) -> None:
        import torch
        import transformers

        if shape:
            raise ExtractError("custom shapes are supported for the llava builder only")
        tokenizer = qwen_tokenizer()
        config = self.tiny_config(tokenizer)
        torch.manual_seed(seed)
        model = getattr(transformers, self.model_class)(config)
        self.write_processor_files(out, tokenizer)
        model.save_pretrained(out)


ARCH = Qwen2VL()
