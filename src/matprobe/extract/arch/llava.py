"""LLaVA-1.5 (`llava`): CLIP ViT + 2-layer MLP projector + Llama/Vicuna decoder.

Fixed input size (336 px for llava-1.5-7b-hf, 576 image tokens per image), so
`--max-pixels` does not apply. Before transformers 4.52 the class held the decoder as
`language_model` (a LlamaForCausalLM: `language_model.model.layers`, `language_model.lm_head`)
and the tower/projector at the top level; transformers 5's conversion mapping for
"llava" (transformers/conversion_mapping.py) lists the same renames for checkpoints.
"""

from __future__ import annotations

from matprobe.extract.arch import Architecture

# Renames shared by the LLaVA family (llava, llava_next, gemma3 ...): old top-level
# submodules moved under `model.`, and the causal LM's `.model` level dropped.
LLAVA_FAMILY_RENAMES = (
    (r"^language_model\.lm_head\b", "lm_head"),
    (r"^language_model\.model\.", "model.language_model."),
    (r"^vision_tower\.", "model.vision_tower."),
    (r"^multi_modal_projector\b", "model.multi_modal_projector"),
)


class Llava(Architecture):
    name = "llava"
    model_class = "LlavaForConditionalGeneration"
    dynamic_resolution = False
    legacy_key_renames = LLAVA_FAMILY_RENAMES
    # The processor's placeholder is LLaVA's "<image>": LLaVA's conversation templates apply (--template).
    takes_template = True
    # the processor's count per image: (side / patch_size)^2 + num_additional_image_tokens (the CLS
    # token of a CLIP tower), less 1 under the "default" strategy, which drops the CLS feature
    processor_token_settings = ("num_additional_image_tokens", "vision_feature_select_strategy", "patch_size")
    config_token_settings = ("vision_feature_select_strategy", "vision_config.patch_size")


ARCH = Llava()
