"""LLaVA-NeXT / LLaVA-1.6 (`llava_next`): LLaVA with "anyres" tiling.

The image is resized to the best of `image_grid_pinpoints`, cut into tiles of the vision
tower's input size, and encoded together with a downscaled whole image; the tile
features are unpadded to the image's aspect ratio and each row ends with the learned
`image_newline`. So the number of image tokens follows the image size, but there is no
pixel cap to set: `--max-pixels` does not apply (the pinpoints bound the resolution).
Old-layout keys are LLaVA's plus the top-level `image_newline`.
"""

from __future__ import annotations

from matprobe.extract.arch import Architecture
from matprobe.extract.arch.llava import LLAVA_FAMILY_RENAMES


class LlavaNext(Architecture):
    name = "llava_next"
    model_class = "LlavaNextForConditionalGeneration"
    dynamic_resolution = False
    image_tokens_vary = True
    legacy_key_renames = LLAVA_FAMILY_RENAMES + ((r"^image_newline$", "model.image_newline"),)
    # The processor's placeholder is LLaVA's "<image>": LLaVA's conversation templates apply (--template).
    takes_template = True
    processor_token_settings = ("num_additional_image_tokens", "vision_feature_select_strategy", "patch_size",
                                "image_processor.image_grid_pinpoints")
    config_token_settings = ("vision_feature_select_strategy", "vision_config.patch_size", "image_grid_pinpoints")


ARCH = LlavaNext()
