"""Original haotian-liu/LLaVA checkpoints (LLaVA-1.5, LLaVA-Med v1.5): not a transformers
`model_type` but a format, recognised by the config's `mm_*` keys (`claims_config`), loaded
by `matprobe.extract.original_llava` instead of AutoModelForImageTextToText.

Published v1.5 configs say model_type "llava" (transformers' own llava is something else),
training runs "llava_llama", LLaVA-Med v1.5 "llava_mistral": the mm_* keys decide, so this
entry is asked before the model_type lookup.
"""

from __future__ import annotations

from matprobe.extract.arch import Architecture


class LlavaOriginal(Architecture):
    name = "llava_original"
    model_class = "LLaVA repository (LlavaLlamaForCausalLM / LlavaMistralForCausalLM)"
    dynamic_resolution = False
    image_tokens_vary = False
    own_loader = True  # loaded by extract/original_llava.py, not AutoModelForImageTextToText
    takes_template = True  # --template picks one of LLaVA's conversation templates
    takes_vision_tower = True  # --vision-tower names the CLIP folder
    images_per_prompt = 1  # one <image> per prompt: segmentation items need --rendering grid

    def claims_config(self, cfg: dict) -> bool:
        from matprobe.extract.original_llava import is_original_config

        return is_original_config(cfg)

    def image_token_id(self, model) -> int:
        from matprobe.extract.original_llava import IMAGE_TOKEN_INDEX

        return IMAGE_TOKEN_INDEX

    def load(self, run_dir, base_dir, **kwargs):
        from matprobe.extract.original_llava import load_original

        return load_original(run_dir, base_dir, **kwargs)

    def needs_base(self, folder) -> bool:
        from pathlib import Path

        from matprobe.extract.original_llava import layout_of

        return layout_of(Path(folder)) != "full"  # a LoRA or projector-only run

    def check_run(self, run_dir, base_dir, vision_tower=None, options=None) -> None:
        from matprobe.extract.original_llava import CLI_OPTIONS, check_run

        check_run(run_dir, base_dir, vision_tower, options or CLI_OPTIONS)

    def inputs_missing(self, run_dir, vision_tower=None, options=None) -> list[str]:
        from pathlib import Path

        from matprobe.extract.original_llava import CLI_OPTIONS, inputs_missing

        return inputs_missing(Path(run_dir), vision_tower, options or CLI_OPTIONS)

    def check_weights(self, run_dir, vision_tower=None, options=None) -> None:
        from pathlib import Path

        from matprobe.extract.original_llava import CLI_OPTIONS, check_tower_weights

        check_tower_weights(Path(run_dir), vision_tower, options or CLI_OPTIONS)


ARCH = LlavaOriginal()
