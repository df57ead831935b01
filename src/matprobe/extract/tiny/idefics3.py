"""Tiny random Idefics3 checkpoints (`idefics3`): 28 px tiles, one <image> token each."""

from __future__ import annotations

from pathlib import Path

from matprobe.extract.tiny import build_tokenizer

# In the style of the published Idefics3 template ("User:<image>...<end_of_utterance>\nAssistant:").
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'].capitalize() }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
TILE = 28  # tiny tile: 2 x 2 patches of 14, pixel-shuffled (scale 2) to one <image> token


def build(out: Path, seed: int, shape: dict | None = None) -> None:
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    specials = ["<|end_of_text|>", "<|begin_of_text|>", "<fake_token_around_image>", "<image>",
                "<end_of_utterance>", "<global-img>"]
    specials += [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tokenizer = build_tokenizer(specials, {"image_token": "<image>"},
                                dict(bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>",
                                     pad_token="<|end_of_text|>"))
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=TILE, patch_size=14)
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=2,
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                            pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * TILE}, max_image_size={"longest_edge": TILE}, do_image_splitting=True,
    )
    Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=1,
                      chat_template=IDEFICS3_CHAT_TEMPLATE).save_pretrained(out)
    model.save_pretrained(out)
