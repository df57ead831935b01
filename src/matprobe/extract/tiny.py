"""Tiny offline checkpoints (LLaVA, Qwen2-VL, Qwen2.5-VL, LoRA adapter) for tests and the demo.

Each builder writes a directory laid out like a real Hugging Face checkpoint (config.json,
safetensors weights, tokenizer files, preprocessor_config.json, chat template) so it is
loaded through the same `AutoProcessor` / `AutoModelForImageTextToText.from_pretrained`
path as a 7B model. Weights are random (seeded); a checkpoint is about 1 MB.

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

TINY_ARCHS = ("llava", "qwen2_vl", "qwen2_5_vl")

# Chat templates written in the style of the public checkpoints: llava-hf/llava-1.5-7b-hf
# ("USER: <image>\n... ASSISTANT:") and Qwen/Qwen2-VL-7B-Instruct (ChatML with vision pads).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% else %} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
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

# LLaVA builder shapes. The 7B entry follows llava-hf/llava-1.5-7b-hf's config.json
# (CLIP ViT-L/14-336: 24 x 1024, 16 heads; Vicuna-7B: 32 x 4096, 11008 MLP, 32 heads, 32000 vocab).
LLAVA_TINY_SHAPE = dict(vision_hidden=32, vision_layers=2, vision_heads=2, image_size=56,
                        hidden=64, intermediate=128, layers=4, heads=4, kv_heads=2, vocab_size=0)
LLAVA_MID_SHAPE = dict(vision_hidden=128, vision_layers=2, vision_heads=4, image_size=112,
                       hidden=512, intermediate=1376, layers=8, heads=8, kv_heads=8, vocab_size=32000)
LLAVA_7B_SHAPE = dict(vision_hidden=1024, vision_layers=24, vision_heads=16, image_size=336,
                      hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab_size=32000)

_CORPUS = [
    "What modality is this image? Which organ is shown? What is the finding?",
    "A: CT\nB: MRI\nC: X-ray\nD: Ultrasound\n",
    "Answer with the option's letter from the given choices directly.",
    "Chest Brain Lung Kidney Knee Liver Classification Segmentation Normal Tumor Cyst Stone",
    "USER: ASSISTANT: system user assistant You are a helpful assistant.",
    "A B C D 0 1 2 3 4 5 6 7 8 9 the a of is in with from directly letter option",
]


def build_tokenizer(arch: str):
    """A byte-level BPE tokenizer (~400 tokens) with the arch's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if arch == "llava":
        specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
        extra = {"image_token": "<image>"}
        named = dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                    "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
        extra = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                 "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
        named = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(_CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, extra_special_tokens=extra, padding_side="left", **named
    )
    if arch == "llava":
        # llava-1.5 prepends BOS; a byte-level backend does not, so add it via post-processing.
        from tokenizers import processors

        bos = tokenizer.convert_tokens_to_ids("<s>")
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, extra_special_tokens=extra, padding_side="left", **named
        )
    return tokenizer


def _llava_model(tokenizer, seed: int, shape: dict | None = None):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    s = {**LLAVA_TINY_SHAPE, **(shape or {})}
    vision = CLIPVisionConfig(
        hidden_size=s["vision_hidden"], intermediate_size=4 * s["vision_hidden"],
        num_hidden_layers=s["vision_layers"], num_attention_heads=s["vision_heads"],
        image_size=s["image_size"], patch_size=14, projection_dim=s["vision_hidden"],
    )
    text = LlamaConfig(
        vocab_size=max(len(tokenizer), s["vocab_size"]), hidden_size=s["hidden"],
        intermediate_size=s["intermediate"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=(s["image_size"] // 14) ** 2, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)


def _llava_processor(tokenizer, image_size: int = 56):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def _qwen_model(arch: str, tokenizer, seed: int):
    import torch

    tok = tokenizer.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        # head_dim 16: the three M-RoPE sections (time, height, width) sum to head_dim / 2.
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=tok("<|endoftext|>"), eos_token_id=tok("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    ids = dict(
        image_token_id=tok("<|image_pad|>"), video_token_id=tok("<|video_pad|>"),
        vision_start_token_id=tok("<|vision_start|>"), vision_end_token_id=tok("<|vision_end|>"),
    )
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        cls = Qwen2VLForConditionalGeneration
    else:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                      window_size=56, fullatt_block_indexes=[1])
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        cls = Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(seed)
    return cls(config)


def _write_qwen_processor(directory: Path, arch: str, tokenizer) -> None:
    """Write the processor files a public Qwen2(.5)-VL checkpoint ships.

    The processor object itself cannot be built here without torchvision (its video
    processor needs it), so the files are written directly; `image_processor_type` names
    the torchvision class as real checkpoints do, which exercises the loader's PIL fallback.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer.save_pretrained(directory)
    # Small images (28 px -> 1 merged token) keep the tiny model's sequences short.
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56)
    image_processor.save_pretrained(directory)
    pre = json.loads((directory / "preprocessor_config.json").read_text())
    pre["image_processor_type"] = "Qwen2VLImageProcessor"
    pre["processor_class"] = "Qwen2VLProcessor" if arch == "qwen2_vl" else "Qwen2_5_VLProcessor"
    (directory / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    (directory / "chat_template.jinja").write_text(QWEN_CHAT_TEMPLATE)


def build_tiny_checkpoint(
    out_dir: str | os.PathLike, arch: str = "llava", seed: int = 0, shape: dict | None = None
) -> Path:
    """Write a random-initialised tiny `arch` checkpoint to `out_dir` and return its path.

    `shape` (LLaVA only) overrides entries of `LLAVA_TINY_SHAPE`, e.g. for the mid-size
    benchmark model (8 layers x 512) or one shaped like llava-1.5-7b (`LLAVA_7B_SHAPE`).
    The directory is built under a temporary name and renamed into place, so an
    interrupted build leaves nothing behind.
    """
    if shape and arch != "llava":
        raise ExtractError("custom shapes are supported for the llava builder only")
    if arch not in TINY_ARCHS:
        raise ExtractError(f"unknown tiny architecture {arch!r}; use one of {', '.join(TINY_ARCHS)}")
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        tokenizer = build_tokenizer(arch)
        if arch == "llava":
            model = _llava_model(tokenizer, seed, shape)
            size = {**LLAVA_TINY_SHAPE, **(shape or {})}["image_size"]
            _llava_processor(tokenizer, size).save_pretrained(tmp)
        else:
            model = _qwen_model(arch, tokenizer, seed)
            _write_qwen_processor(tmp, arch, tokenizer)
        model.save_pretrained(tmp)
    return out


def build_tiny_adapter(
    out_dir: str | os.PathLike, base_dir: str | os.PathLike, seed: int = 1, rank: int = 4
) -> Path:
    """Write a LoRA adapter for the tiny checkpoint in `base_dir` (q_proj / v_proj of the decoder).

    `init_lora_weights=False` gives random A and B: peft's default initialises B = 0, which
    makes a fresh adapter a no-op (docs/design.md §2). The target regex limits LoRA to the
    language model: a plain list ["q_proj", "v_proj"] would also hit the vision tower.
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
            target_modules=r".*language_model.*\.(q_proj|v_proj)",
        )
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
        peft_model.save_pretrained(tmp)
        cfg_path = tmp / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = str(base)  # absolute, as real adapters store it
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return out
