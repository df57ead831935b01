"""Architecture registry: everything extraction needs to know about one model family.

Each module in this package describes one Hugging Face `model_type` (config.json) as an
`Architecture` subclass and exposes it as `ARCH`; the registry discovers the modules, so
adding an architecture is one new file here plus its tiny builder in
`matprobe.extract.tiny` and its tests (docs/architectures.md). `register_architecture` adds one
from elsewhere (a plug-in, or a test's toy: tests/test_toy_architecture.py).
The rest of `matprobe.extract` asks the registry (`get_architecture(name)`) and never
branches on names.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

from matprobe.errors import ExtractError


class Architecture:
    """One supported `model_type`. Defaults fit transformers 5 image-text-to-text models.

    Capabilities are flags (`dynamic_resolution`), not name checks.
    """

    name: str = ""  # config.json model_type
    model_class: str = ""  # transformers class AutoModelForImageTextToText builds
    # True when the number of image tokens follows the image size and `--max-pixels` caps it.
    dynamic_resolution: bool = False
    # True when images of different sizes give different numbers of image tokens
    # (dynamic resolution, anyres tiling); False for a fixed count per image.
    image_tokens_vary: bool = False
    # Adapter (and checkpoint) key renames from the layout saved before transformers 4.52
    # to the current module names: (regex on keys without peft's "base_model.model."
    # prefix, replacement). The first pattern that matches a key is applied.
    legacy_key_renames: tuple[tuple[str, str], ...] = ()
    # Where the layout changed, for messages.
    legacy_layout_name: str = "pre-transformers-4.52"
    # How option letters may be spelt as one token (a letter's logit is the
    # log-sum-exp over its spellings).
    letter_spellings: tuple[str, ...] = ("{letter}", " {letter}")
    # A checkpoint *format* rather than a model_type (original LLaVA): recognised by
    # `claims_config` before the model_type lookup and loaded by `load` instead of
    # AutoModelForImageTextToText; it takes `--template` / `--vision-tower`.
    own_loader: bool = False
    takes_template: bool = False
    takes_vision_tower: bool = False
    # The most images one prompt may hold (None: any number). A segmentation item's multi-image
    # rendering shows 1 + its options; models trained on one image need `--rendering grid`.
    images_per_prompt: int | None = None
    # The settings that fix how many image tokens the processor puts in a prompt (attributes of the
    # processor, dotted) and how many image features the model makes (config.json keys, dotted):
    # when they disagree, the forward stops with "image features and image tokens do not match",
    # and the error names their values (`image_token_settings`).
    processor_token_settings: tuple[str, ...] = ()
    config_token_settings: tuple[str, ...] = ()

    def claims_config(self, cfg: dict) -> bool:
        """True when config.json is in this format whatever its model_type says."""
        return False

    def load(self, run_dir, base_dir, **kwargs):
        """(model, processor, info) for `own_loader` architectures."""
        raise ExtractError(f"architecture {self.name!r} is loaded through transformers")

    def needs_base(self, folder) -> bool:
        """True where a folder of this format is not a whole model but a run on a base model
        (`own_loader` formats; transformers-loaded ones take a base through a peft adapter)."""
        return False

    def check_run(self, run_dir, base_dir, vision_tower=None, options=None) -> None:
        """`load`'s refusals that read no weights, for the preflight (`own_loader` formats); base_dir:
        the base a run is applied to (None for a whole model); options: how the caller's user passes
        each input ({"vision_tower": "--vision-tower", "base": "--base"} on the command line)."""

    def inputs_missing(self, run_dir, vision_tower=None, options=None) -> list[str]:
        """What a run of this format lacks besides its base (`own_loader` formats: original LLaVA's
        tower), each as "and ..." to follow the missing base's message in the same line."""
        return []

    def check_weights(self, run_dir, vision_tower=None, options=None) -> None:
        """`load`'s refusals that read the weights' names and shapes but not their values, for
        `init` (`own_loader` formats: original LLaVA's vision tower, as `load` reads it)."""

    # ---- processor -------------------------------------------------------------
    def load_processor(self, path: Path) -> tuple[Any, bool]:
        """(processor, fallback_used). Default: `AutoProcessor.from_pretrained`."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path), False

    def apply_max_pixels(self, image_processor, max_pixels: int | None) -> int | None:
        """Cap the image resolution; returns the cap in force (None: fixed-size input)."""
        return None

    # ---- model -----------------------------------------------------------------
    def language_model(self, model):
        inner = getattr(model, "model", None)
        lm = getattr(inner, "language_model", None)
        if lm is None or getattr(lm, "layers", None) is None:
            raise ExtractError(
                f"{type(model).__name__}: no decoder at model.model.language_model.layers; "
                f"this transformers version is not supported (use transformers >= 5)"
            )
        return lm

    def decoder_layers(self, model):
        return self.language_model(model).layers

    def final_norm(self, model):
        return self.language_model(model).norm

    def image_token_id(self, model) -> int:
        return int(model.config.image_token_id)

    def image_token_settings(self, processor, config) -> str:
        """The processor's and the model config's settings that fix the image-token count, as
        "processor: a=1, b='x'; config.json: c=2" (those that are set), for messages; "" if none."""
        parts = []
        for where, source, names in (("processor", processor, self.processor_token_settings),
                                     ("config.json", config, self.config_token_settings)):
            values = [f"{name}={value!r}" for name in names
                      if (value := _dotted(source, name)) is not None]
            if values:
                parts.append(f"{where}: {', '.join(values)}")
        return "; ".join(parts)

    # ---- adapters --------------------------------------------------------------
    def rename_legacy_key(self, key: str) -> str:
        for pattern, replacement in self.legacy_key_renames:
            new, n = re.subn(pattern, replacement, key, count=1)
            if n:
                return new
        return key

    def __repr__(self) -> str:
        return f"<Architecture {self.name}>"


def _dotted(obj, path: str):
    """`obj.a.b` for path "a.b" (mapping keys too); None where a part is missing."""
    for part in path.split("."):
        if obj is None:
            return None
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    if hasattr(obj, "tolist"):
        obj = obj.tolist()
    return obj


_REGISTRY: dict[str, Architecture] | None = None


def _discover() -> dict[str, Architecture]:
    global _REGISTRY
    if _REGISTRY is None:
        found: dict[str, Architecture] = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            arch = getattr(module, "ARCH", None)
            if isinstance(arch, Architecture):
                found[arch.name] = arch
        _REGISTRY = found
    return _REGISTRY


def register_architecture(arch: Architecture, *, replace: bool = False) -> Architecture:
    """Add an architecture without a module in this package (a plug-in, or a test's toy): from then
    on `detect_architecture`, `load_model`, `extract` and the registry-driven tests see it like a
    built-in one. A name already registered is refused unless `replace`."""
    if not isinstance(arch, Architecture) or not arch.name:
        raise ExtractError(f"register_architecture: give an Architecture instance with a name, got {arch!r}")
    registry = _discover()
    if arch.name in registry and not replace:
        raise ExtractError(f"architecture {arch.name!r} is already registered; pass replace=True to override it")
    registry[arch.name] = arch
    return arch


def unregister_architecture(name: str) -> None:
    """Remove an architecture added by `register_architecture` (built-in modules come back on the
    next lookup only if they were replaced: the package is not rescanned)."""
    _discover().pop(name, None)


def claimed_by_config(cfg: dict) -> Architecture | None:
    """The format-defined architecture whose `claims_config` accepts `cfg`, if any."""
    for arch in _discover().values():
        if arch.claims_config(cfg):
            return arch
    return None


def architectures() -> tuple[str, ...]:
    """Registered model types, in a stable order (the published three first)."""
    first = ("llava", "qwen2_vl", "qwen2_5_vl")
    names = list(_discover())
    return tuple([n for n in first if n in names] + sorted(n for n in names if n not in first))


def get_architecture(name: str) -> Architecture:
    registry = _discover()
    if name not in registry:
        raise ExtractError(
            f"unsupported architecture {name or '(none)'!r}; supported: {', '.join(architectures())}"
        )
    return registry[name]
