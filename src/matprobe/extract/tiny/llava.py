"""Tiny random LLaVA-1.5 checkpoints (`llava`), and the shapes the benchmarks build (mid-size, 7B)."""

from __future__ import annotations

from pathlib import Path

from matprobe.extract.tiny import build_tokenizer

# Chat template in the style of llava-hf/llava-1.5-7b-hf ("USER: <image>\n... ASSISTANT:").
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

# Builder shapes. The 7B entry follows llava-hf/llava-1.5-7b-hf's config.json
# (CLIP ViT-L/14-336: 24 x 1024, 16 heads; Vicuna-7B: 32 x 4096, 11008 MLP, 32 heads, 32000 vocab).
LLAVA_TINY_SHAPE = dict(vision_hidden=32, vision_layers=2, vision_heads=2, image_size=56,
                        hidden=64, intermediate=128, layers=4, heads=4, kv_heads=2, vocab_size=0)
LLAVA_MID_SHAPE = dict(vision_hidden=128, vision_layers=2, vision_heads=4, image_size=112,
                       hidden=512, intermediate=1376, layers=8, heads=8, kv_heads=8, vocab_size=32000)
LLAVA_7B_SHAPE = dict(vision_hidden=1024, vision_layers=24, vision_heads=16, image_size=336,
                      hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab_size=32000)


def llava_tokenizer():
    return build_tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"], {"image_token": "<image>"},
        dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"), bos="<s>",
        vocab_size=600, demo_prompts=True,  # whole words of the demo's prompts: shorter sequences
    )


def llava_model(tokenizer, seed: int, shape: dict | None = None):
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


def llava_processor(tokenizer, image_size: int = 56, chat_template: str = LLAVA_CHAT_TEMPLATE):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=chat_template,
    )


def build(out: Path, seed: int, shape: dict | None = None) -> None:
    tokenizer = llava_tokenizer()
    model = llava_model(tokenizer, seed, shape)
    llava_processor(tokenizer, {**LLAVA_TINY_SHAPE, **(shape or {})}["image_size"]).save_pretrained(out)
    model.save_pretrained(out)
