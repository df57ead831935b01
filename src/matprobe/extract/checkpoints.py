"""Load a vision-language checkpoint (and optional LoRA adapter) from local directories.

Supported architectures are those in the registry (`matprobe.extract.arch`, one module per
`config.json` `model_type`). Everything goes through `AutoProcessor` +
`AutoModelForImageTextToText`; what differs per architecture (processor fallback,
`--max-pixels`, where the decoder lives, adapter key renames) is asked of the registry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matprobe.errors import ExtractError
from matprobe.extract.arch import architectures, claimed_by_config, get_architecture

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def __getattr__(name):
    if name == "SUPPORTED_ARCHS":
        return architectures()
    raise AttributeError(name)


@dataclass
class LoadedModel:
    """A model ready for extraction plus what provenance needs to know about it."""

    model: Any  # the *ForConditionalGeneration module (LoRA injected or merged)
    processor: Any
    arch: str
    info: dict = field(default_factory=dict)

    @property
    def decoder_layers(self):
        return decoder_layers(self.model)

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)

    @property
    def architecture(self):
        return get_architecture(self.arch)

    @property
    def image_token_id(self) -> int:
        return self.architecture.image_token_id(self.model)


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExtractError(f"{path}: {what} is not valid JSON ({exc}); re-download the checkpoint") from None


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        if p.is_file():
            digest.update(p.name.encode())
            digest.update(p.read_bytes())
    return digest.hexdigest()


def detect_architecture(ckpt: str | Path) -> str:
    """The registry key (config.json `model_type`, e.g. llava, qwen2_vl) of the checkpoint in `ckpt`.

    A format recognised by its config keys comes first (original haotian-liu/LLaVA checkpoints:
    `mm_*` keys, whatever `model_type` says: "llava", "llava_llama", "llava_mistral"), then the
    `model_type`. Raises ExtractError for a missing directory or config and for any other
    model type.
    """
    path = Path(ckpt)
    if not path.is_dir():
        raise ExtractError(f"checkpoint {path}: no such directory; pass --ckpt a local checkpoint folder")
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        raise ExtractError(
            f"checkpoint {path}: this is a LoRA adapter, not a model; pass it as --adapter and the "
            f"model as --ckpt (or --base)"
        )
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ExtractError(f"checkpoint {path}: no config.json; pass a Hugging Face checkpoint folder")
    cfg = _read_json(cfg_path, "config.json")
    model_type = cfg.get("model_type", "")
    claimed = claimed_by_config(cfg)  # a format told by its keys (original LLaVA's mm_*), not model_type
    if claimed is not None:
        return claimed.name
    if model_type in ("llava_llama", "llava_mistral", "llava_mpt") or (path / "non_lora_trainables.bin").is_file():
        raise ExtractError(
            f"checkpoint {path}: model_type {model_type!r} but no mm_* keys (mm_vision_tower, "
            f"mm_projector_type) in config.json; pass the LLaVA run folder whose config.json has them"
        )
    if model_type not in architectures() or get_architecture(model_type).own_loader:
        types = [a for a in architectures() if not get_architecture(a).own_loader]
        raise ExtractError(
            f"checkpoint {path}: unsupported architecture {model_type or '(none)'!r}; supported: "
            f"{', '.join(types)} (and original haotian-liu/LLaVA checkpoints, told by their mm_* config keys)"
        )
    return model_type


# Files a Hugging Face processor is read from: the image processor's config (its own file, or
# inside processor_config.json), and the tokenizer's vocabulary in one of its formats.
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
# which processor files to copy from the model a checkpoint was fine-tuned from, for the messages of a
# folder without them: the image processor's config is preprocessor_config.json in some folders and
# processor_config.json in others (matprobe's tiny LLaVA, LLaVA-NeXT, Gemma 3 and Idefics3 bases hold it
# in processor_config.json alone, its Qwen ones in preprocessor_config.json; a user told to copy
# preprocessor_config.json from a LLaVA base found none), so the message names both as alternatives
PROCESSOR_FILES_TO_COPY = (
    "every file there except config.json, generation_config.json and the weights: the image processor's "
    "preprocessor_config.json or processor_config.json (whichever it has, or both), the tokenizer files "
    "(tokenizer.json, tokenizer_config.json, ...) and the chat template (chat_template.jinja or .json)"
)


def processor_files_problem(path: Path) -> str | None:
    """What of a processor a checkpoint folder lacks, with the fix (None: both parts have a file).
    Checked before loading (`extract.preflight` and `load_processor`): without its vocabulary
    transformers 5 builds an empty tokenizer (1 token) and says nothing, and the run failed later
    on the option letters, naming neither cause."""
    path = Path(path)
    missing = []
    if not any((path / f).is_file() for f in _IMAGE_PROCESSOR_FILES):
        missing.append("preprocessor_config.json (the image processor)")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer file (tokenizer.json, tokenizer.model or vocab.json)")
    if not missing:
        return None
    return (f"checkpoint {path}: the folder has no {' and no '.join(missing)}, so its processor cannot load (a "
            "model saved by model.save_pretrained or a trainer without its processor); copy the processor files "
            f"from the model it was fine-tuned from into it ({PROCESSOR_FILES_TO_COPY}), "
            f"e.g. AutoProcessor.from_pretrained(BASE).save_pretrained('{path}') (for Qwen2-VL and "
            "Qwen2.5-VL that needs torchvision installed, which matprobe itself does not: else copy the files)")


def load_processor(ckpt: str | Path, arch: str, max_pixels: int | None = None) -> tuple[Any, dict]:
    """The architecture's processor for `ckpt` (with its fallback); returns (processor, info).

    `max_pixels` caps the image resolution of dynamic-resolution architectures (Qwen:
    tokens per image = pixels / 28², docs/design.md §2); fixed-size ones ignore it.
    """
    spec = get_architecture(arch)
    path = Path(ckpt)
    info: dict = {}
    problem = processor_files_problem(path)
    if problem:
        raise ExtractError(problem)
    try:
        processor, info["processor_fallback"] = spec.load_processor(path)
    except ImportError as exc:
        raise ExtractError(f"checkpoint {path}: processor needs a missing package ({exc})") from None
    except (OSError, ValueError) as exc:
        raise ExtractError(f"checkpoint {path}: cannot load the processor ({exc})") from None
    if processor.chat_template is None:
        # older saves (LLaMA-Factory, transformers < 4.43) keep it in tokenizer_config.json only
        own = getattr(getattr(processor, "tokenizer", None), "chat_template", None)
        if not isinstance(own, str) or not own:
            raise ExtractError(f"checkpoint {path}: no chat template; add chat_template.jinja to the folder")
        processor.chat_template = own
        info["chat_template_from"] = "tokenizer_config.json"
    image_processor = processor.image_processor
    info["max_pixels"] = spec.apply_max_pixels(image_processor, max_pixels)
    info["image_processor"] = type(image_processor).__name__
    info["image_processor_backend"] = "pil" if type(image_processor).__name__.endswith("Pil") else "torchvision"
    size = image_processor.size
    info["image_size"] = dict(size) if hasattr(size, "keys") else (
        {k: v for k, v in vars(size).items() if v is not None})
    # Padding side matters for nothing we compute (last real token is found from the mask),
    # but left padding is the generation convention; make it explicit.
    processor.tokenizer.padding_side = "left"
    return processor, info


def decoder_layers(model):
    """The decoder blocks (transformers 5: model.model.language_model.layers for all archs so far)."""
    return get_architecture(decoder_owner(model)).decoder_layers(model)


def final_norm(model):
    return get_architecture(decoder_owner(model)).final_norm(model)


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ExtractError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[dtype])


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ExtractError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ExtractError(f"--device {device!r}: use cpu or cuda (cuda:N)")


def claimed_format(folder: str | Path):
    """The architecture of a format told by `folder`'s own config.json (original LLaVA), or None
    (no such folder or config, or a config in no such format)."""
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        return None
    return claimed_by_config(_read_json(cfg_path, "config.json"))


def loaded_as(base_dir: Path, adapter_dir: Path | None):
    """(architecture, the folder it loads, the base it is applied to or None), from
    `resolve_adapter`'s pair: a format told by its own config (an original LLaVA run, whole or on
    its --base) is read from the run's folder, any other architecture from the base's config."""
    run_dir = adapter_dir if adapter_dir is not None else base_dir
    run_base = base_dir if adapter_dir is not None else None
    own = claimed_format(run_dir)
    if own is None and adapter_dir is not None and not (adapter_dir / "config.json").is_file():
        # a trainer's checkpoint-N inside an original LLaVA run folder: that format's loader says what it lacks
        own = claimed_format(adapter_dir.parent)
    return (own or get_architecture(detect_architecture(base_dir))), run_dir, run_base


def applies_to_a_base(folder: str | Path) -> bool:
    """True for a folder that is not a whole model: a peft adapter (adapter_config.json, no
    config.json) or a run of a format that is applied to its base (an original LLaVA LoRA or
    projector-only run)."""
    folder = Path(folder)
    own = claimed_format(folder)
    if own is not None:
        return own.needs_base(folder)
    return (folder / "adapter_config.json").is_file()


def check_prompt_options(arch, template: str | None, vision_tower):
    """--template and --vision-tower against what the architecture takes; returns the conversation
    template `template` names (None for an architecture's own chat template)."""
    conversation = None
    if template not in (None, "chat"):
        if not arch.takes_template:
            raise ExtractError(f"--template {template}: {arch.name} checkpoints use their chat template (--template "
                               f"chat); LLaVA's conversation templates apply to architectures whose image "
                               f"placeholder is LLaVA's <image> (llava, llava_next, original LLaVA)")
        from matprobe.extract.templates import get_template

        conversation = get_template(template)  # a name it knows, or a file with one {message}
    if vision_tower is not None and not arch.takes_vision_tower:
        raise ExtractError(f"--vision-tower: {arch.name} checkpoints in Hugging Face format carry their tower; "
                           f"drop the option")
    return conversation


def decoder_owner(model) -> str:
    """The registry key of a loaded model (own-loader models say it themselves)."""
    return getattr(model, "matprobe_arch", None) or model.config.model_type


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _type_hint(folder: Path) -> str:
    """'; config.json says model_type X but architectures Y: ...' where the two disagree, else ''."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    kind = str(cfg.get("model_type", ""))
    arch = " ".join(cfg.get("architectures") or [])
    words = lambda t: t.replace("_", "").lower()  # noqa: E731 - qwen2_5_vl vs Qwen2_5_VLForConditionalGeneration
    if kind and arch and not words(arch).startswith(words(kind)):
        return (f"; config.json says model_type {kind!r} but architectures {arch!r}: set model_type to the one "
                "its architecture is (the config the training saved)")
    return ""


def _refuse_missing_weights(folder: Path, loading: dict) -> None:
    """transformers fills weights a checkpoint lacks with random values and only prints a table: a
    study's features then came from a half-random model. Refused, naming them."""
    missing = sorted(loading.get("missing_keys") or [])
    if missing:
        raise ExtractError(f"checkpoint {folder}: {len(missing)} weight(s) the model needs are not in its files "
                           f"(first {missing[0]!r}); transformers would initialise them at random: copy the "
                           "complete checkpoint (every shard) or re-save it with save_pretrained")


def _same_folder(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def resolve_adapter(
    ckpt: str | Path | None, adapter: str | Path | None, base: str | Path | None, base_option: str = "--base"
) -> tuple[Path, Path | None]:
    """Return (base checkpoint dir, adapter dir or None).

    `--ckpt` may itself be an adapter folder; the base then comes from `--base` or from the
    adapter's `base_model_name_or_path` (often an absolute path from another machine).
    base_option: how the caller's user passes the base, for the message (a pipeline file's key).
    """
    if ckpt is not None and adapter is None and base is not None and claimed_format(ckpt) is not None:
        return Path(base), Path(ckpt)  # an original LLaVA LoRA / projector run on its --base
    if ckpt is not None and (Path(ckpt) / "adapter_config.json").is_file() and adapter is None:
        adapter, ckpt = ckpt, None
    if adapter is None:
        if ckpt is None:
            raise ExtractError("no checkpoint given; pass --ckpt DIR")
        if base is not None and not _same_folder(base, ckpt):
            # the base alone was extracted, and labelled as the fine-tune (a study's merged checkpoint)
            raise ExtractError(f"checkpoint {ckpt} is a whole model (no adapter_config.json), so {base_option} "
                               f"{base} has nothing to apply to: drop {base_option}, which is for an adapter or an "
                               "original LLaVA run")
        return Path(ckpt), None
    adapter = Path(adapter)
    cfg_path = adapter / "adapter_config.json"
    if not cfg_path.is_file():
        raise ExtractError(f"adapter {adapter}: no adapter_config.json; pass a peft adapter folder")
    if ckpt is not None and base is not None and not _same_folder(base, ckpt):
        raise ExtractError(f"adapter {adapter}: --ckpt {ckpt} and {base_option} {base} name two bases; give the "
                           "one it was trained on once")
    cfg = _read_json(cfg_path, "adapter_config.json")
    base_path = base or ckpt or cfg.get("base_model_name_or_path")
    if not base_path or not Path(base_path).is_dir():
        raise ExtractError(
            f"adapter {adapter}: its base model {base_path!r} is not a local folder here; "
            f"pass {base_option} DIR (the checkpoint it was trained on)"
        )
    return Path(base_path), adapter


def load_model(
    ckpt: str | Path | None,
    adapter: str | Path | None = None,
    base: str | Path | None = None,
    dtype: str = "fp32",
    device: str = "cpu",
    max_pixels: int | None = None,
    merge_adapter: bool = True,
    attn_implementation: str = "sdpa",
    vision_tower: str | Path | None = None,
    template: str | None = None,
) -> LoadedModel:
    """Load processor + model (+ LoRA adapter, merged by default) in eval mode on `device`.

    `vision_tower` and `template` apply to architectures that take them (original LLaVA)."""
    from transformers import AutoModelForImageTextToText

    base_dir, adapter_dir = resolve_adapter(ckpt, adapter, base)
    torch_dtype = _torch_dtype(dtype)
    _check_device(device)
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ExtractError(
            f"--attn {attn_implementation!r} is not one of {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    quiet_loading()
    spec, run_dir, run_base = loaded_as(base_dir, adapter_dir)
    if spec.own_loader:
        if not merge_adapter:
            raise ExtractError(f"checkpoint {run_dir}: original LLaVA LoRA runs are merged in fp32, as LLaVA's "
                               f"loader merges them; drop --no-merge-adapter")
        return _load_own(spec, run_dir, run_base, dtype, device, vision_tower, template, attn_implementation)
    arch = spec.name
    conversation = check_prompt_options(spec, template, vision_tower)
    # an adapter folder with its own processor files (LLaMA-Factory, ms-swift save the training's
    # tokenizer and chat template there): those are the ones the adapter was trained with
    processor_dir = (adapter_dir if adapter_dir is not None and processor_files_problem(adapter_dir) is None
                     else base_dir)
    processor, info = load_processor(processor_dir, arch, max_pixels)
    info["processor_from"] = "adapter" if processor_dir == adapter_dir else "checkpoint"
    try:
        model, loading = AutoModelForImageTextToText.from_pretrained(
            base_dir, dtype=torch_dtype, attn_implementation=attn_implementation, output_loading_info=True
        )
    except (OSError, ValueError, ImportError) as exc:
        raise ExtractError(f"checkpoint {base_dir}: cannot load the weights ({exc})") from None
    except RuntimeError as exc:  # shapes the config does not give: often a model_type its architecture is not
        raise ExtractError(f"checkpoint {base_dir}: its weights do not fit the model its config.json builds "
                           f"({_first_line(exc)}){_type_hint(base_dir)}") from None
    _refuse_missing_weights(base_dir, loading)
    if conversation is not None:  # the runner renders with it; provenance records every string
        info["conversation_template"] = conversation
        info["provenance_extra"] = {"prompt_template": conversation.describe()}
    info.update(
        arch=arch, checkpoint=str(base_dir.resolve()), dtype=dtype,
        config_sha256=_sha256([base_dir / "config.json"]),
        attn_implementation=getattr(model.config, "_attn_implementation", attn_implementation),
        adapter=None, adapter_sha256=None, adapter_merged=None,
    )
    if adapter_dir is not None:
        from matprobe.extract.adapters import attach_adapter

        model, adapter_info = attach_adapter(model, get_architecture(arch), adapter_dir, base_dir,
                                             merge_adapter)
        info.update(adapter_info)
        # recorded only where they hold, so stores made before them resume as they were
        extra = {"processor_from": "the adapter folder's (the tokenizer and chat template it was trained with)"
                 } if info["processor_from"] == "adapter" else {}
        if adapter_info.get("vocabulary_resized_to"):
            extra["vocabulary_resized_to"] = adapter_info["vocabulary_resized_to"]
        if extra:
            info["provenance_extra"] = {**(info.get("provenance_extra") or {}), **extra}
        info.update(
            adapter=str(adapter_dir.resolve()), adapter_merged=merge_adapter,
            adapter_sha256=_sha256(sorted(adapter_dir.glob("adapter_*"))),
        )
    model.eval()
    try:
        model.to(device)
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise ExtractError(
                f"out of memory moving {base_dir.name} to {device}; use --dtype bf16 or a larger GPU"
            ) from None
        raise
    info["device"] = device
    return LoadedModel(model=model, processor=processor, arch=arch, info=info)


def _load_own(spec, run_dir: Path, base_dir: Path | None, dtype: str, device: str, vision_tower, template,
              attn_implementation: str) -> LoadedModel:
    """An architecture with its own loader (original LLaVA): same LoadedModel, same info keys."""
    model, processor, info = spec.load(run_dir, base_dir, vision_tower=vision_tower, dtype=dtype,
                                       device=device, template=template,
                                       attn_implementation=attn_implementation)
    adapter = run_dir if base_dir is not None else None
    info.update(
        arch=spec.name, checkpoint=str((base_dir or run_dir).resolve()), dtype=dtype,
        config_sha256=_sha256([run_dir / "config.json"]), attn_implementation=attn_implementation,
        adapter=str(adapter.resolve()) if adapter else None,
        adapter_sha256=_sha256(sorted(adapter.glob("*.bin")) + sorted(adapter.glob("*.safetensors"))
                               + [adapter / "adapter_config.json"]) if adapter else None,
        adapter_merged=True if adapter else None,
    )
    try:
        model.to(device)
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise ExtractError(f"out of memory moving {run_dir.name} to {device}; use --dtype bf16 or a larger "
                               f"GPU") from None
        raise
    info["device"] = device
    return LoadedModel(model=model, processor=processor, arch=spec.name, info=info)


def quiet_loading() -> None:
    """Under `matprobe --quiet`, and off a terminal, transformers' per-load progress bar ("Loading
    weights") too: the flag silences progress (a user study saw the bar under -q), and a log file gets
    matprobe's plain lines, not a bar's carriage returns (another saw them in redirected stderr)."""
    import sys

    from matprobe.progress import is_quiet

    if is_quiet() or not sys.stderr.isatty():
        import transformers

        transformers.utils.logging.disable_progress_bar()
