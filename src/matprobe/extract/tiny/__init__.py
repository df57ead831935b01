"""Tiny offline checkpoints (one per registered architecture, plus a LoRA adapter) for tests, the demo and
laptop trials of a study of one's own (README, "Your own study").

Each builder writes a directory laid out like a real Hugging Face checkpoint (config.json,
safetensors weights, tokenizer files, the image processor's preprocessor_config.json (Qwen) or
processor_config.json (the others), chat template) so it is
loaded through the same `AutoProcessor` / `AutoModelForImageTextToText.from_pretrained`
path as a 7B model. Weights are random (seeded); a checkpoint is about 1 MB. The
architecture-specific part (config, processor files) is `build(out, seed, shape)` in
`matprobe.extract.tiny.<model_type>`, one module per architecture; this package holds the shared
tokenizer builder and the entry points. The builders import the architectures, never the reverse:
production code in `matprobe.extract.arch` holds no test fixtures (tests/test_import_cycles.py).

Sizes follow docs/design.md §2: byte-level BPE (~400 tokens) trained with `tokenizers`;
CLIP 2 layers at 56 px / patch 14 + Llama 4 layers x 64 for LLaVA; Qwen vision towers of
2 blocks with a 4 x 64 Qwen2 decoder whose M-RoPE sections sum to head_dim / 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from matprobe.errors import ExtractError
from matprobe.io import atomic_dir

_CORPUS = [
    "What modality is this image? Which organ is shown? What is the finding?",
    "A: CT\nB: MRI\nC: X-ray\nD: Ultrasound\n",
    "Answer with the option's letter from the given choices directly.",
    "Chest Brain Lung Kidney Knee Liver Classification Segmentation Normal Tumor Cyst Stone",
    "USER: ASSISTANT: system user assistant You are a helpful assistant.",
    "A B C D 0 1 2 3 4 5 6 7 8 9 the a of is in with from directly letter option",
]


def _demo_corpus() -> list[str]:
    """The shared corpus plus the demo's own prompts, so the demo's questions are a few dozen
    tokens rather than one per character (sequence length is most of a fine-tuning step's cost
    on CPU: 112 -> 62 tokens, 0.18 -> 0.13 s per step, RESULTS.md issue 13)."""
    from matprobe.data.demo import TASKS
    from matprobe.extract.prompts import preamble

    demo = [f"{q}\n" + "".join(f"{letter}: {o}\n" for letter, o in zip("ABCD", opts))
            for q, opts in TASKS.values()]
    return [*_CORPUS, *demo, preamble("grid", 4), preamble("multi-image", 4)]


def build_tokenizer(specials, extra: dict, named: dict, bos: str | None = None, vocab_size: int = 400,
                    demo_prompts: bool = False):
    """A byte-level BPE tokenizer (~`vocab_size` tokens) with the given special tokens.

    `specials` get the first ids (in order); `extra` names multimodal tokens
    (image_token, ...); `named` the usual bos/eos/pad/unk; `bos`, when given, is prepended
    to every encoding (Llama and Gemma tokenizers do this, byte-level BPE does not).
    `demo_prompts`: also train on the demo's questions (the LLaVA the demo fine-tunes).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator((_demo_corpus() if demo_prompts else _CORPUS) * 4, trainer)
    if bos is not None:
        bos_id = backend.token_to_id(bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, extra_special_tokens=dict(extra), padding_side="left", **named
    )


# tiny builders registered from outside this package (`register_tiny_builder`): name -> build(out, seed, shape)
_EXTRA_BUILDERS: dict = {}


def register_tiny_builder(name: str, build) -> None:
    """A tiny builder `build(out: Path, seed: int, shape: dict | None)` for an architecture added by
    `matprobe.extract.arch.register_architecture`: `tiny_architectures` and `build_tiny_checkpoint`
    then treat it like a module of this package."""
    _EXTRA_BUILDERS[name] = build


def unregister_tiny_builder(name: str) -> None:
    _EXTRA_BUILDERS.pop(name, None)


def tiny_architectures() -> tuple[str, ...]:
    """Registered architectures that have a tiny builder (a module of this package named after them,
    or one given to `register_tiny_builder`)."""
    import pkgutil

    from matprobe.extract.arch import architectures

    builders = {m.name for m in pkgutil.iter_modules(__path__)} | set(_EXTRA_BUILDERS)
    return tuple(a for a in architectures() if a in builders)


def build_tiny_checkpoint(
    out_dir: str | os.PathLike, arch: str = "llava", seed: int = 0, shape: dict | None = None
) -> Path:
    """Write a random-initialised tiny `arch` checkpoint to `out_dir` and return its path.

    `shape` (LLaVA only) overrides entries of `tiny.llava.LLAVA_TINY_SHAPE`, e.g. for the mid-size
    benchmark model (8 layers x 512) or one shaped like llava-1.5-7b (`LLAVA_7B_SHAPE`).
    The directory is built under a temporary name and renamed into place, so an
    interrupted build leaves nothing behind.
    """
    import importlib

    if arch not in tiny_architectures():
        raise ExtractError(
            f"unknown tiny architecture {arch!r}; use one of {', '.join(tiny_architectures())}"
        )
    build = _EXTRA_BUILDERS.get(arch) or importlib.import_module(f"{__name__}.{arch}").build
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        build(Path(tmp), seed, shape)
    return out


def build_tiny_adapter(
    out_dir: str | os.PathLike, base_dir: str | os.PathLike, seed: int = 1, rank: int = 4,
    modules_to_save: list[str] | None = None,
) -> Path:
    """Write a LoRA adapter for the tiny checkpoint in `base_dir` (q_proj / v_proj of the decoder).

    `init_lora_weights=False` gives random A and B: peft's default initialises B = 0, which
    makes a fresh adapter a no-op (docs/design.md §2). The target regex limits LoRA to the
    language model: a plain list ["q_proj", "v_proj"] would also hit the vision tower.
    `modules_to_save` (e.g. ["multi_modal_projector", "lm_head"]) are saved as full,
    perturbed copies, as fine-tuning the projector and head does.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    out = Path(out_dir)
    base = Path(base_dir).resolve()
    with atomic_dir(out) as tmp:
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(
            r=rank, lora_alpha=2 * rank, lora_dropout=0.0, init_lora_weights=False,
            target_modules=r".*(language_model|text_model).*\.(q_proj|v_proj)", modules_to_save=modules_to_save,
        )
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
        if modules_to_save:
            with torch.no_grad():
                for name, param in peft_model.named_parameters():
                    if ".modules_to_save." in name:
                        param.add_(0.05 * torch.randn_like(param))
        peft_model.save_pretrained(tmp)
        cfg_path = tmp / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = str(base)  # absolute, as real adapters store it
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return out

