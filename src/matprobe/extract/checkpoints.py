"""Load a vision-language checkpoint (and optional LoRA adapter) from local directories.

Supported Hugging Face architectures (`config.json` `model_type`): llava, qwen2_vl,
qwen2_5_vl. Everything goes through `AutoProcessor` + `AutoModelForImageTextToText`;
the only fallback is for Qwen processors, whose video processor imports torchvision
(absent on CPU-only installs): the processor is then rebuilt from the tokenizer and the
PIL image processor, and the backend used is recorded (PIL and torchvision resizing
differ numerically, docs/design.md §2).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matprobe.errors import ExtractError

SUPPORTED_ARCHS = ("llava", "qwen2_vl", "qwen2_5_vl")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


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
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)


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
    """The registry key (llava, qwen2_vl, qwen2_5_vl) of the checkpoint in `ckpt`.

    Raises ExtractError for a missing directory or config, for original LLaVA-repo
    checkpoints (haotian-liu/LLaVA: model_type `llava_llama`, `mm_vision_tower`,
    `non_lora_trainables.bin`), which are not in Hugging Face format, and for any other
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
    original_llava = (
        model_type in ("llava_llama", "llava_mistral", "llava_mpt")
        or "mm_vision_tower" in cfg
        or (path / "non_lora_trainables.bin").is_file()
    )
    if original_llava:
        raise ExtractError(
            f"checkpoint {path}: original LLaVA-repo layout (model_type {model_type!r}), not Hugging "
            f"Face format; convert it with transformers' convert_llava_weights_to_hf.py or use a "
            f"llava-hf checkpoint"
        )
    if model_type not in SUPPORTED_ARCHS:
        raise ExtractError(
            f"checkpoint {path}: unsupported architecture {model_type or '(none)'!r}; supported: "
            f"{', '.join(SUPPORTED_ARCHS)}"
        )
    return model_type


def _qwen_image_only_processor(arch: str):
    """A Qwen2(.5)-VL processor class without the video processor (which needs torchvision)."""
    from transformers.processing_utils import ProcessorMixin

    if arch == "qwen2_vl":
        from transformers import Qwen2VLProcessor as Base
    else:
        from transformers import Qwen2_5_VLProcessor as Base

    class ImageOnlyProcessor(Base):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
            self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnlyProcessor.__name__ = f"{Base.__name__}ImageOnly"
    return ImageOnlyProcessor


def _read_chat_template(path: Path) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return _read_json(path / "chat_template.json", "chat_template.json").get("chat_template")
    return None


def load_processor(ckpt: str | Path, arch: str, max_pixels: int | None = None) -> tuple[Any, dict]:
    """`AutoProcessor` for `ckpt`, with the PIL fallback for Qwen; returns (processor, info).

    `max_pixels` caps Qwen image resolution (tokens per image = pixels / 28², docs/design.md §2);
    LLaVA-1.5 always resizes to its fixed input size and ignores it.
    """
    from transformers import AutoProcessor, AutoTokenizer

    path = Path(ckpt)
    info: dict = {}
    try:
        processor = AutoProcessor.from_pretrained(path)
        info["processor_fallback"] = False
    except ImportError as exc:
        if arch not in ("qwen2_vl", "qwen2_5_vl"):
            raise ExtractError(f"checkpoint {path}: processor needs a missing package ({exc})") from None
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        processor = _qwen_image_only_processor(arch)(
            image_processor=image_processor, tokenizer=tokenizer,
            chat_template=_read_chat_template(path),
        )
        info["processor_fallback"] = True
    except (OSError, ValueError) as exc:
        raise ExtractError(f"checkpoint {path}: cannot load the processor ({exc})") from None
    if processor.chat_template is None:
        raise ExtractError(f"checkpoint {path}: no chat template; add chat_template.jinja to the folder")
    image_processor = processor.image_processor
    if max_pixels is not None and arch != "llava":
        if max_pixels < 28 * 28:
            raise ExtractError(f"--max-pixels {max_pixels} is below one 28x28 token; use at least 784")
        size = dict(image_processor.size)
        size["longest_edge"] = int(max_pixels)
        size["shortest_edge"] = min(int(size.get("shortest_edge", 0) or 0), int(max_pixels))
        image_processor.size = type(image_processor.size)(**size) if not isinstance(
            image_processor.size, dict) else size
    info["image_processor"] = type(image_processor).__name__
    info["image_processor_backend"] = "pil" if type(image_processor).__name__.endswith("Pil") else "torchvision"
    size = image_processor.size
    info["image_size"] = dict(size) if hasattr(size, "keys") else (
        {k: v for k, v in vars(size).items() if v is not None})
    info["max_pixels"] = info["image_size"].get("longest_edge") if arch != "llava" else None
    # Padding side matters for nothing we compute (last real token is found from the mask),
    # but left padding is the generation convention; make it explicit.
    processor.tokenizer.padding_side = "left"
    return processor, info


def decoder_layers(model):
    """The decoder blocks (transformers 5: model.model.language_model.layers)."""
    inner = getattr(model, "model", None)
    lm = getattr(inner, "language_model", None)
    layers = getattr(lm, "layers", None)
    if layers is None:
        raise ExtractError(
            f"{type(model).__name__}: no decoder at model.model.language_model.layers; "
            f"this transformers version is not supported (use transformers >= 5)"
        )
    return layers


def final_norm(model):
    return model.model.language_model.norm


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


def resolve_adapter(
    ckpt: str | Path | None, adapter: str | Path | None, base: str | Path | None
) -> tuple[Path, Path | None]:
    """Return (base checkpoint dir, adapter dir or None).

    `--ckpt` may itself be an adapter folder; the base then comes from `--base` or from the
    adapter's `base_model_name_or_path` (often an absolute path from another machine).
    """
    if ckpt is not None and (Path(ckpt) / "adapter_config.json").is_file() and adapter is None:
        adapter, ckpt = ckpt, None
    if adapter is None:
        if ckpt is None:
            raise ExtractError("no checkpoint given; pass --ckpt DIR")
        return Path(base or ckpt), None
    adapter = Path(adapter)
    cfg_path = adapter / "adapter_config.json"
    if not cfg_path.is_file():
        raise ExtractError(f"adapter {adapter}: no adapter_config.json; pass a peft adapter folder")
    cfg = _read_json(cfg_path, "adapter_config.json")
    base_path = base or ckpt or cfg.get("base_model_name_or_path")
    if not base_path or not Path(base_path).is_dir():
        raise ExtractError(
            f"adapter {adapter}: its base model {base_path!r} is not a local folder here; "
            f"pass --base DIR (the checkpoint it was trained on)"
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
) -> LoadedModel:
    """Load processor + model (+ LoRA adapter, merged by default) in eval mode on `device`."""
    from transformers import AutoModelForImageTextToText

    base_dir, adapter_dir = resolve_adapter(ckpt, adapter, base)
    arch = detect_architecture(base_dir)
    torch_dtype = _torch_dtype(dtype)
    _check_device(device)
    processor, info = load_processor(base_dir, arch, max_pixels)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            base_dir, dtype=torch_dtype, attn_implementation=attn_implementation
        )
    except (OSError, ValueError) as exc:
        raise ExtractError(f"checkpoint {base_dir}: cannot load the weights ({exc})") from None
    info.update(
        arch=arch, checkpoint=str(base_dir.resolve()), dtype=dtype,
        config_sha256=_sha256([base_dir / "config.json"]),
        attn_implementation=getattr(model.config, "_attn_implementation", attn_implementation),
        adapter=None, adapter_sha256=None, adapter_merged=None,
    )
    if adapter_dir is not None:
        model = _attach_adapter(model, adapter_dir, base_dir, merge_adapter)
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


def _attach_adapter(model, adapter_dir: Path, base_dir: Path, merge: bool):
    """Apply a peft adapter; missing/mismatched keys are an error, never a warning."""
    from peft import PeftModel

    cfg = _read_json(adapter_dir / "adapter_config.json", "adapter_config.json")
    trained_on = (cfg.get("auto_mapping") or {}).get("base_model_class")
    if trained_on and trained_on != type(model).__name__:
        raise ExtractError(
            f"adapter {adapter_dir} was trained on a {trained_on} but base {base_dir} is a "
            f"{type(model).__name__}; pass the matching checkpoint with --base"
        )
    stored = cfg.get("base_model_name_or_path")
    if stored and Path(stored).is_dir() and Path(stored).resolve() != base_dir.resolve():
        # Both bases are here: their shapes must agree (a renamed copy is fine).
        def shape(path):
            c = _read_json(Path(path) / "config.json", "config.json")
            text = c.get("text_config") or c
            return (c.get("model_type"), text.get("hidden_size"), text.get("num_hidden_layers"),
                    text.get("vocab_size"))

        if shape(stored) != shape(base_dir):
            raise ExtractError(
                f"adapter {adapter_dir} was trained on {stored} (model_type, hidden, layers, vocab "
                f"= {shape(stored)}) but base {base_dir} has {shape(base_dir)}; pass the matching --base"
            )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            peft_model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
        except (ValueError, RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExtractError(
                f"adapter {adapter_dir} does not match base {base_dir}: {first[:300]}; pass the base "
                f"it was trained on with --base"
            ) from None
    for w in caught:
        text = str(w.message)
        if "missing adapter keys" in text or "unexpected" in text.lower():
            raise ExtractError(
                f"adapter {adapter_dir}: {text[:300]}; the adapter was saved from a different model "
                f"or is incomplete; pass the matching --base or re-save the adapter"
            )
    if merge:
        return peft_model.merge_and_unload()
    return peft_model.get_base_model()
