"""Idefics3 (`idefics3`, e.g. HuggingFaceM4/Idefics3-8B-Llama3): SigLIP + pixel-shuffle connector + Llama.

Large images are split into tiles of `max_image_size` plus a downscaled global image; each
tile gives `image_seq_len` `<image>` tokens wrapped in `<fake_token_around_image>` and a
`<row_i_col_j>` tag, so the image-token count follows the image size (`image_tokens_vary`),
bounded by the processor's `size` / `max_image_size` rather than by `--max-pixels`. The
decoder lives at `model.model.text_model` (not `language_model`). Its key layout did not
change in transformers 4.52, so there are no legacy renames.
"""

from __future__ import annotations

from matprobe.extract.arch import Architecture


class Idefics3(Architecture):
    name = "idefics3"
    model_class = "Idefics3ForConditionalGeneration"
    dynamic_resolution = False
    image_tokens_vary = True
    # image_seq_len = (image_size / patch_size)^2 / scale_factor^2 per tile
    processor_token_settings = ("image_seq_len",)
    config_token_settings = ("scale_factor", "vision_config.image_size", "vision_config.patch_size")

    def language_model(self, model):
        return model.model.text_model


ARCH = Idefics3()
