"""Gemma 3 (`gemma3`, the architecture of MedGemma 4B): SigLIP + pooled projector + Gemma 3 decoder.

Fixed input size (896 px, 256 image tokens per image for gemma-3-4b-it / medgemma-4b-it):
`--max-pixels` does not apply. The chat template emits `<start_of_image>`, which the
processor expands to `\\n\\n<start_of_image>` + `<image_soft_token>` x mm_tokens_per_image +
`<end_of_image>\\n\\n`; the image pool is over the soft tokens (`config.image_token_id`).
The decoder alternates sliding-window and global attention and attends bidirectionally
among one image's tokens (the processor's `token_type_ids`). Before transformers 4.52 the
decoder was a Gemma3ForCausalLM at `language_model` (`language_model.model.layers`), as in LLaVA.
"""

from __future__ import annotations

from matprobe.extract.arch import Architecture
from matprobe.extract.arch.llava import LLAVA_FAMILY_RENAMES


class Gemma3(Architecture):
    name = "gemma3"
    model_class = "Gemma3ForConditionalGeneration"
    dynamic_resolution = False
    legacy_key_renames = LLAVA_FAMILY_RENAMES
    processor_token_settings = ("image_seq_length",)
    config_token_settings = ("mm_tokens_per_image",)


ARCH = Gemma3()
