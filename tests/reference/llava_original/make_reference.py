"""Tiny original-format LLaVA checkpoints and the ORIGINAL code's outputs on them (issue 21).

Run with the reference environment, not the project's (it needs haotian-liu/LLaVA's code,
transformers 4.37 and peft 0.4):

    python3 -m venv /tmp/llava-ref
    /tmp/llava-ref/bin/pip install torch==2.13.0            # the CPU wheel
    /tmp/llava-ref/bin/pip install --no-deps llava-torch==1.2.2.post1
    /tmp/llava-ref/bin/pip install transformers==4.37.2 tokenizers==0.15.2 sentencepiece \
        peft==0.4.0 accelerate==0.21.0 safetensors protobuf "numpy<2" einops pillow
    /tmp/llava-ref/bin/python tests/reference/llava_original/make_reference.py

It writes `kit/` (checkpoints laid out as LLaVA's training code saves them, a CLIP tower
saved on its own, test images) and `reference.npz` beside this file; the tests
(tests/test_llava_original.py) compare matprobe against these files, so CI never needs
this environment.

Checkpoints (all random, seeded; weights stored in fp16 as published ones are):
- `llava-v1.5-tiny`: full model, `pytorch_model-0000x-of-00003.bin` shards + index without
  vision-tower keys; published-style config (model_type "llava", tower named by a hub id).
- `llava-v1.5-tiny-merged`: a merged checkpoint whose shards also carry vision-tower keys
  (random values, ignored by the loader); linear projector, `cls_patch`, `square`, and a tower
  path from another machine.
- `vicuna-tiny`: the plain language model (LLaVA's `--model-base`).
- `llava-v1.5-tiny-lora`: a LoRA run as LLaVA saves it (adapter_config.json,
  adapter_model.bin, non_lora_trainables.bin, config.json); `-lora-st` the same adapter
  as adapter_model.safetensors (newer peft).
- `llava-v1.5-tiny-pretrain`: projector-only (`mm_projector.bin` + config.json).
- `llava-med-v1.5-mistral-tiny`: LLaVA-Med v1.5 layout (llava_mistral, mistral_instruct).

The original loader hard-codes fp16 (`torch_dtype=torch.float16`, `.to(torch.float16)`);
`fp32_builder` patches that so the reference is computed in fp32. The hub id of the
tower is redirected to the local copy (what matprobe's --vision-tower does), nothing else.
No torchvision is needed on this path, nothing is stubbed.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
KIT = HERE / "kit"
HUB_TOWER = "openai/clip-vit-large-patch14-336"
ELSEWHERE_TOWER = "/home/someone/checkpoints/clip-vit-tiny"  # a path that does not exist here
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

CORPUS = [
    "What modality is this image? Which organ is shown? What is the finding?",
    "A. CT\nB. MRI\nC. X-ray\nD. Ultrasound", "Answer with the option's letter from the given choices directly.",
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions.",
    "A chat between a curious user and an artificial intelligence assistant.",
    "USER: ASSISTANT: [INST] [/INST] Chest Brain Lung Kidney Knee Liver Normal Tumor Cyst",
    "A B C D A B C D",
]
ITEMS = [  # (image size W x H, question, options): non-square odd sizes and a square one
    ((37, 23), "What modality is this image?", ["CT", "MRI", "X-ray", "Ultrasound"]),
    ((23, 41), "Which organ is shown?", ["Chest", "Brain"]),
    ((30, 30), "What is the finding?", ["Normal", "Tumor", "Cyst"]),
]
LM = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
          num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5)
MM = dict(mm_hidden_size=32, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
          mm_projector_type="mlp2x_gelu", image_aspect_ratio="pad", mm_use_im_start_end=False,
          mm_use_im_patch_token=False, mm_patch_merge_type="flat", tune_mm_mlp_adapter=False,
          use_mm_proj=True, tokenizer_padding_side="right", tokenizer_model_max_length=2048)


# ---------------------------------------------------------------- build the kit

def build_tokenizer(out: Path):
    """A SentencePiece BPE model with byte fallback saved as LlamaTokenizer (tokenizer.model,
    legacy=False as llava-v1.5's tokenizer_config.json says) plus the tokenizer.json the fast
    conversion writes."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer, LlamaTokenizerFast

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=buf, vocab_size=400, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", split_digits=True,
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    tmp = out / "_sp"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "tokenizer.model").write_bytes(buf.getvalue())
    slow = LlamaTokenizer(str(tmp / "tokenizer.model"), legacy=False)
    slow.save_pretrained(out)
    LlamaTokenizerFast.from_pretrained(out, from_slow=True, legacy=False).save_pretrained(out)
    shutil.rmtree(tmp)
    return LlamaTokenizer.from_pretrained(out)


def build_tower(out: Path, seed: int):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=2, image_size=56, patch_size=14, projection_dim=32)
    model = CLIPVisionModel(cfg)
    model.half().save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                       image_mean=CLIP_MEAN, image_std=CLIP_STD).save_pretrained(out)


def save_shards(model, out: Path, shards: int = 3):
    """pytorch_model-0000x-of-0000y.bin + index, as transformers 4.3x save_pretrained writes them."""
    from transformers.modeling_utils import shard_checkpoint

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    total = sum(v.numel() * 2 for v in state.values())
    pieces, index = shard_checkpoint(state, max_shard_size=total // shards + 1, weights_name="pytorch_model.bin")
    for name, piece in pieces.items():
        torch.save(piece, out / name)
    if index is not None:
        (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


def write_config(model, out: Path, **extra):
    cfg = model.config.to_diff_dict()
    cfg.update(extra)
    cfg["torch_dtype"] = "float16"
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))


def llava_config(tokenizer, cls_cfg, **mm):
    return cls_cfg(vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=0,
                   **LM, **{**MM, **mm})


def random_projector(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.get_model().mm_projector.parameters():
            p.copy_(0.2 * torch.randn_like(p))


def build_kit():
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
    from llava.model.language_model.llava_mistral import LlavaMistralConfig, LlavaMistralForCausalLM
    from transformers import LlamaConfig, LlamaForCausalLM

    if KIT.exists():
        shutil.rmtree(KIT)
    KIT.mkdir(parents=True)
    (KIT / "images").mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for i, ((w, h), _, _) in enumerate(ITEMS):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(KIT / "images" / f"item{i}.png")

    build_tower(KIT / "tower", seed=1)
    tok_dir = KIT / "_tokenizer"
    tokenizer = build_tokenizer(tok_dir)

    def with_tokenizer(d: Path):
        d.mkdir(parents=True, exist_ok=True)
        for f in tok_dir.iterdir():
            shutil.copy(f, d / f.name)

    # Full model, published-style config.
    torch.manual_seed(2)
    cfg = llava_config(tokenizer, LlavaConfig, mm_vision_tower=HUB_TOWER)
    model = LlavaLlamaForCausalLM(cfg)
    random_projector(model, 3)
    d = KIT / "llava-v1.5-tiny"
    with_tokenizer(d)
    save_shards(model, d)
    write_config(model, d, model_type="llava", architectures=["LlavaLlamaForCausalLM"])

    # Merged: shards carry vision-tower keys (random values the loader must ignore).
    torch.manual_seed(4)
    cfg = llava_config(tokenizer, LlavaConfig, mm_vision_tower=ELSEWHERE_TOWER, mm_projector_type="linear",
                       mm_vision_select_feature="cls_patch", image_aspect_ratio="square")
    model = LlavaLlamaForCausalLM(cfg)
    random_projector(model, 5)
    state = model.state_dict()
    torch.manual_seed(6)
    tower_keys = {f"model.vision_tower.vision_tower.{k}": torch.randn_like(v.float())
                  for k, v in _tower_state().items()}
    d = KIT / "llava-v1.5-tiny-merged"
    with_tokenizer(d)
    holder = types.SimpleNamespace(state_dict=lambda: {**state, **tower_keys})
    save_shards(holder, d, shards=2)
    write_config(model, d, architectures=["LlavaLlamaForCausalLM"])

    # The plain language model (LLaVA's --model-base).
    torch.manual_seed(7)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2,
                                        pad_token_id=0, **LM))
    d = KIT / "vicuna-tiny"
    with_tokenizer(d)
    save_shards(base, d, shards=2)
    write_config(base, d)

    # A LoRA run on that base, saved as LLaVA's train.py does.
    build_lora(tokenizer, LlavaConfig, LlavaLlamaForCausalLM)

    # Projector-only (pretraining): mm_projector.bin + config.json.
    torch.manual_seed(11)
    cfg = llava_config(tokenizer, LlavaConfig, mm_vision_tower=HUB_TOWER)
    d = KIT / "llava-v1.5-tiny-pretrain"
    d.mkdir()
    proj = LlavaLlamaForCausalLM(cfg).get_model().mm_projector
    torch.save({f"model.mm_projector.{k}": (0.2 * torch.randn_like(v)).to(torch.float16)
                for k, v in proj.state_dict().items()}, d / "mm_projector.bin")
    (d / "config.json").write_text(json.dumps({**cfg.to_diff_dict(), "architectures": ["LlavaLlamaForCausalLM"]},
                                              indent=2, sort_keys=True))

    # LLaVA-Med v1.5: llava_mistral.
    torch.manual_seed(12)
    cfg = LlavaMistralConfig(vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, sliding_window=4096,
                             mm_vision_tower=HUB_TOWER, **LM, **MM)
    model = LlavaMistralForCausalLM(cfg)
    random_projector(model, 13)
    d = KIT / "llava-med-v1.5-mistral-tiny"
    with_tokenizer(d)
    save_shards(model, d)
    write_config(model, d, architectures=["LlavaMistralForCausalLM"])
    shutil.rmtree(tok_dir)


def _tower_state():
    from transformers import CLIPVisionModel

    return CLIPVisionModel.from_pretrained(KIT / "tower").state_dict()


def build_lora(tokenizer, LlavaConfig, LlavaLlamaForCausalLM):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file

    torch.manual_seed(8)
    cfg = llava_config(tokenizer, LlavaConfig, mm_vision_tower=HUB_TOWER)
    model = LlavaLlamaForCausalLM.from_pretrained(KIT / "vicuna-tiny", config=cfg, torch_dtype=torch.float32)
    random_projector(model, 9)
    targets = sorted({n.split(".")[-1] for n, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and "mm_projector" not in n and n != "lm_head"})
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM", init_lora_weights=False)
    torch.manual_seed(10)
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():  # peft 0.4 leaves B = kaiming init; keep the update modest
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.mul_(0.5)
    d = KIT / "llava-v1.5-tiny-lora"
    peft_model.save_pretrained(d)
    acfg = json.loads((d / "adapter_config.json").read_text())
    acfg["base_model_name_or_path"] = "/home/someone/checkpoints/vicuna-7b-v1.5"  # as real runs store it
    (d / "adapter_config.json").write_text(json.dumps(acfg, indent=2))
    # non_lora_trainables.bin: the projector under peft's prefixes, as get_peft_state_non_lora_maybe_zero_3 saves it.
    non_lora = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "mm_projector" in n}
    non_lora = {k.replace(".modules_to_save.default", ""): v for k, v in non_lora.items()}
    torch.save(non_lora, d / "non_lora_trainables.bin")
    (d / "config.json").write_text(json.dumps({**cfg.to_diff_dict(), "architectures": ["LlavaLlamaForCausalLM"]},
                                              indent=2, sort_keys=True))
    st = KIT / "llava-v1.5-tiny-lora-st"
    shutil.copytree(d, st)
    state = torch.load(st / "adapter_model.bin", weights_only=True)
    (st / "adapter_model.bin").unlink()
    save_file({k: v.contiguous() for k, v in state.items()}, st / "adapter_model.safetensors")


# ---------------------------------------------------------------- run the original code

def fp32_builder():
    """llava.model.builder with its hard-coded fp16 turned into fp32, and the tower's hub id
    redirected to the local tower (what `--vision-tower` does)."""
    import llava.model.builder as builder
    import llava.model.multimodal_encoder.builder as tower_builder

    shim = types.ModuleType("torch_fp32")
    shim.__dict__.update(vars(torch))
    shim.float16 = torch.float32
    builder.torch = shim

    local = {HUB_TOWER: str(KIT / "tower"), ELSEWHERE_TOWER: str(KIT / "tower")}
    real_build = tower_builder.build_vision_tower

    def build_vision_tower(cfg, **kwargs):
        name = getattr(cfg, "mm_vision_tower", None)
        if name in local:  # a copy: the model's own config keeps the name it was saved with
            cfg = copy.copy(cfg)
            cfg.mm_vision_tower = local[name]
        return real_build(cfg, **kwargs)

    import llava.model.llava_arch as arch

    arch.build_vision_tower = build_vision_tower
    return builder


def prompt_for(question, options, template, image_token="<image>"):
    """LLaVA's multiple-choice evaluation (llava/eval/model_vqa_mmbench.py) rendering."""
    from llava.conversation import conv_templates

    q = question
    for letter, option in zip("ABCD", options):
        q = q + "\n" + letter + ". " + option
    qs = image_token + "\n" + q + "\n" + "Answer with the option's letter from the given choices directly."
    conv = conv_templates[template].copy()
    conv.append_message(conv.roles[0], qs)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def run_reference(builder, name, base, template, cases):
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
    from PIL import Image

    path = str(KIT / name)
    tokenizer, model, image_processor, _ = builder.load_pretrained_model(
        path, str(KIT / base) if base else None, get_model_name_from_path(path), device="cpu")
    model.float().eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    letters = [tokenizer.encode(x, add_special_tokens=False) for x in "ABCD"]
    assert all(len(x) == 1 for x in letters), letters
    letter_ids = [x[0] for x in letters]
    blocks = model.get_model().layers
    for i, ((w, h), question, options) in enumerate(ITEMS):
        image = Image.open(KIT / "images" / f"item{i}.png").convert("RGB")
        assert image.size == (w, h)
        prompt = prompt_for(question, options, template)
        ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
        pixels = process_images([image], image_processor, model.config)
        captured = {}
        hook = blocks[-1].register_forward_hook(lambda m, a, o, c=captured: c.__setitem__("last", o[0]))
        with torch.inference_mode():
            out = model(input_ids=ids, images=pixels.float(), image_sizes=[image.size],
                        output_hidden_states=True, use_cache=False)
        hook.remove()
        hs = out.hidden_states  # [embed, block 0 .. block L-2, final norm]
        stack = torch.stack([*hs[:-1], captured["last"], hs[-1]])[:, 0]  # [L + 2, T, D]
        at = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero()[0, 0])
        n_image = stack.shape[1] - (ids.shape[1] - 1)
        key = f"{name}|{template}|{i}"
        cases[key + "|input_ids"] = ids[0].numpy()
        # Pools matprobe stores: last real token, mean over the image's positions, mean over all.
        pools = torch.stack([stack[:, -1], stack[:, at:at + n_image].mean(1), stack.mean(1)], dim=1)
        cases[key + "|pools"] = pools.float().numpy()  # [L + 2, 3, D]
        cases[key + "|logits"] = out.logits[0, -1].float().numpy()
        cases[key + "|image_span"] = np.array([at, at + n_image])
        if template == "llava_v1":
            cases[key + "|pixels"] = pixels[0].float().numpy()
        cases[key + "|letter_ids"] = np.array(letter_ids)
        cases[key + "|prompt"] = np.array(prompt)
        print(f"{key}: T={stack.shape[1]} image tokens {n_image} at {at}; letter logits "
              f"{out.logits[0, -1, letter_ids[:len(options)]].tolist()}")
    del model


RUNS = [  # (checkpoint, --model-base, conversation template)
    ("llava-v1.5-tiny", None, "llava_v1"),
    ("llava-v1.5-tiny", None, "vicuna_v1"),
    ("llava-v1.5-tiny", None, "plain"),
    ("llava-v1.5-tiny-merged", None, "llava_v1"),
    ("llava-v1.5-tiny-lora", "vicuna-tiny", "llava_v1"),
    ("llava-v1.5-tiny-pretrain", "vicuna-tiny", "llava_v1"),
    ("llava-med-v1.5-mistral-tiny", None, "mistral_instruct"),
]


def main():
    torch.set_num_threads(1)
    import transformers

    assert transformers.__version__ == "4.37.2", transformers.__version__
    builder = fp32_builder()  # before the kit: building a LLaVA model reads its tower's config
    build_kit()
    cases: dict = {}
    for name, base, template in RUNS:
        run_reference(builder, name, base, template, cases)
    meta = dict(runs=RUNS, items=[[list(s), q, o] for s, q, o in ITEMS], transformers=transformers.__version__,
                torch=torch.__version__, llava="llava-torch 1.2.2.post1", python=sys.version.split()[0])
    cases["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(HERE / "reference.npz", **cases)
    size = sum(f.stat().st_size for f in KIT.rglob("*") if f.is_file()) + (HERE / "reference.npz").stat().st_size
    print(f"kit + reference: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
