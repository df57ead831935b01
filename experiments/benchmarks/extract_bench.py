"""Extraction throughput: matprobe's pooling hooks vs two peers on the same batches.

Peers, run in the same process on the same pre-tokenised batches (processor time excluded
from all three; it is identical for each):
  (a) bare backbone forward, no caching: `model.model(**inputs, use_cache=False)`, full depth;
  (b) full forward with `output_hidden_states=True` (all layers + full-vocabulary logits),
      which is what extraction without hooks has to do.
Reported as ratios of samples/s:
  overhead  = matprobe(full depth: layers L/4, L/2, L-1, final, 4 pools, answers) / (a)  target >= 0.95
  speedup   = matprobe(deepest layer L/2: layers L/4, L/2, 4 pools, no answers)   / (b)  target >= 1.8
Timing is interleaved (the four methods in a shuffled order on every batch) and the median
per batch is used, to damp noise on a shared machine.

    .venv/bin/python experiments/benchmarks/extract_bench.py [--models tiny,mid] [--device cpu]
      [--dtype fp32] [--attn sdpa] [--rounds 5] [--batch-size 8] [--threads 1]
On a GPU add `--models 7b --device cuda --dtype bf16` (random weights shaped like
llava-1.5-7b; also prints peak GPU memory).

`--prompts` (issue 13) instead measures what a segmentation item's rendering costs, on the
same items (a question image, four candidate masks): `text` (the question image and four
text options, as a classification item), `grid` (one 2x2 composite of the overlays) and
`multi-image` (question image + one overlay per option). Reported per rendering: real tokens
per item, image tokens per item, and samples/s of (i) the forward with matprobe's hooks
(layers L/2, final; pools last, image, question, mean; answers) on pre-tokenised batches and
(ii) end to end (mask loading, rendering, processor, forward), medians over interleaved
rounds. Models: `tiny`, `mid` (LLaVA) and `qwen2_vl` (tiny), all CPU-sized random weights.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _build(model: str, root: Path) -> Path:
    from matprobe.extract.tiny import build_tiny_checkpoint
    from matprobe.extract.tiny.llava import LLAVA_7B_SHAPE, LLAVA_MID_SHAPE

    shape = {"tiny": None, "mid": LLAVA_MID_SHAPE, "7b": LLAVA_7B_SHAPE}[model]
    return build_tiny_checkpoint(root / model, "llava", seed=0, shape=shape)


def _in_memory(model: str, dtype: str, device: str, attn: str = "sdpa"):
    """Random-initialised model built directly on `device` in `dtype` (no 14-28 GB round trip
    through disk for the 7B shape); same classes and processor as the saved checkpoints."""
    from matprobe.extract.checkpoints import DTYPES, LoadedModel
    from matprobe.extract.tiny.llava import (
        LLAVA_7B_SHAPE,
        LLAVA_MID_SHAPE,
        LLAVA_TINY_SHAPE,
        llava_model,
        llava_processor,
        llava_tokenizer,
    )

    shape = {"tiny": LLAVA_TINY_SHAPE, "mid": LLAVA_MID_SHAPE, "7b": LLAVA_7B_SHAPE}[model]
    tokenizer = llava_tokenizer()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, DTYPES[dtype]))
    try:
        with torch.device(device):
            net = llava_model(tokenizer, 0, shape)
    finally:
        torch.set_default_dtype(previous)
    net.set_attn_implementation(attn)
    net.eval()
    processor = llava_processor(tokenizer, shape["image_size"])
    processor.tokenizer.padding_side = "left"
    return LoadedModel(model=net, processor=processor, arch="llava", info={"device": device})


def _batches(loaded, n_batches: int, batch_size: int, device: str, seed: int = 0):
    from matprobe.extract.tokens import POOLS, build_batch, last_token_index, pool_weights

    rng = np.random.default_rng(seed)
    questions = ["What is shown?", "Which organ is visible in this image of the body?",
                 "What is the most likely finding in this scan?"]
    options = ("Normal", "Tumor", "Cyst", "Stone")
    out = []
    for b in range(n_batches):
        imgs = [Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)) for _ in range(batch_size)]
        qs = [questions[(b + i) % 3] for i in range(batch_size)]
        pb = build_batch(loaded.processor, qs, [options] * batch_size, imgs)
        inputs = {k: v.to(device) for k, v in pb.inputs.items()}
        att = inputs["attention_mask"]
        w = pool_weights(inputs["input_ids"], att, pb.question_mask.to(device), loaded.image_token_id, POOLS)
        out.append((inputs, w, last_token_index(att)))
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(model_name: str, device: str, dtype: str, rounds: int, batch_size: int, n_batches: int,
          attn: str = "sdpa") -> dict:
    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.hooks import LayerPooler, letter_logits
    from matprobe.extract.tokens import option_letter_token_ids

    if model_name == "7b":
        loaded = _in_memory(model_name, dtype, device, attn)
    else:  # through the saved-checkpoint path, as extraction loads models
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = _build(model_name, Path(tmp))
            loaded = load_model(ckpt, dtype=dtype, device=device, attn_implementation=attn)
    model, L = loaded.model, loaded.num_layers
    batches = _batches(loaded, n_batches, batch_size, device)
    letters = option_letter_token_ids(loaded.processor.tokenizer, 4)
    full_layers = [str(L // 4), str(L // 2), str(L - 1), "final"]
    half_layers = [str(L // 4), str(L // 2 - 1)]  # deepest = block L/2 - 1: half the blocks run

    def run_bare(inputs, w, last):
        with torch.inference_mode():
            model.model(**inputs, use_cache=False)

    def run_full_hs(inputs, w, last):
        with torch.inference_mode():
            model(**inputs, output_hidden_states=True, use_cache=False)

    pool_full = LayerPooler(model, full_layers, need_final_last=True)
    pool_half = LayerPooler(model, half_layers, need_final_last=False)

    def run_matprobe(inputs, w, last):
        with pool_full:
            pool_full.run(inputs, w, last)
            letter_logits(model, pool_full.last_final, letters)
            for v in pool_full.pooled.values():
                v.cpu()

    def run_matprobe_half(inputs, w, last):
        with pool_half:
            pool_half.run(inputs, w, last)
            for v in pool_half.pooled.values():
                v.cpu()

    methods = {"bare_forward": run_bare, "matprobe_full_depth": run_matprobe,
               "full_hidden_states": run_full_hs, "matprobe_half_depth": run_matprobe_half}
    for fn in methods.values():  # warm-up
        fn(*batches[0])
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times: dict[str, list[float]] = {k: [] for k in methods}
    peak: dict[str, float] = {}
    order_rng = np.random.default_rng(1)
    for _ in range(rounds):
        for inputs, w, last in batches:
            # Shuffled order per batch: a fixed order biased the second method by ~7% here
            # (cache/frequency effects on the shared CPU).
            for name in order_rng.permutation(list(methods)):
                fn = methods[name]
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                _sync(device)
                t0 = time.perf_counter()
                fn(inputs, w, last)
                _sync(device)
                times[name].append(time.perf_counter() - t0)
                if device.startswith("cuda"):
                    peak[name] = max(peak.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)
    sps = {k: batch_size / statistics.median(v) for k, v in times.items()}
    seq = int(batches[0][0]["input_ids"].shape[1])
    return {
        "model": model_name, "layers": L, "hidden": model.config.get_text_config().hidden_size,
        "vocab": model.config.get_text_config().vocab_size, "seq_len": seq, "device": device,
        "dtype": dtype, "attn": model.config._attn_implementation, "batch_size": batch_size, "batches": n_batches, "rounds": rounds,
        "samples_per_s": sps, "peak_gib": peak,
        "overhead_ratio": sps["matprobe_full_depth"] / sps["bare_forward"],
        "speedup_half_depth": sps["matprobe_half_depth"] / sps["full_hidden_states"],
    }


def _seg_items(root: Path, n: int, size: int):
    """n segmentation items (a random grey image, four disc masks) and their text twins."""
    import json

    from matprobe.data import load_manifest

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    recs = []
    for i in range(n):
        img = rng.integers(30, 220, (size, size), dtype=np.uint8)
        Image.fromarray(img).save(root / f"i{i}.png")
        masks = []
        for k in range(4):
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2
            Image.fromarray(m.astype(np.uint8) * 255).save(root / f"m{i}_{k}.png")
            masks.append(f"m{i}_{k}.png")
        recs.append(dict(id=f"s{i}", image=f"i{i}.png", question="Which mask outlines the lesion?",
                         option_masks=masks, answer=i % 4, modality="MRI", anatomy="Brain", task="Segmentation"))
    (root / "seg.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    seg = load_manifest(root / "seg.jsonl")
    for r in recs:
        r.pop("option_masks")
        r["options"] = ["lesion", "edema", "necrosis", "normal"]
        r["task"] = "Classification"
    (root / "text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return seg, load_manifest(root / "text.jsonl")


def bench_prompts(model_name: str, rounds: int, batch_size: int, n_batches: int) -> dict:
    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.hooks import LayerPooler, letter_logits
    from matprobe.extract.prompts import render_sample
    from matprobe.extract.tiny import build_tiny_checkpoint
    from matprobe.extract.tiny.llava import LLAVA_MID_SHAPE
    from matprobe.extract.tokens import (
        POOLS,
        build_batch,
        last_token_index,
        option_letter_token_ids,
        pool_weights,
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        arch = "qwen2_vl" if model_name == "qwen2_vl" else "llava"
        shape = LLAVA_MID_SHAPE if model_name == "mid" else None
        loaded = load_model(build_tiny_checkpoint(root / "ckpt", arch, seed=0, shape=shape))
        size = 56 if model_name != "mid" else 112
        seg, text = _seg_items(root, batch_size * n_batches, size)
        model, L = loaded.model, loaded.num_layers
        letters = option_letter_token_ids(loaded.processor.tokenizer, 4)
        pooler = LayerPooler(model, [str(L // 2), "final"], need_final_last=True)

        def prepare(items, rendering):
            rendered = [render_sample(s, rendering) for s in items]
            pb = build_batch(loaded.processor, [s.question for s in items], [s.options for s in items],
                             [r.images for r in rendered], [r.preamble for r in rendered])
            att = pb.inputs["attention_mask"]
            w = pool_weights(pb.inputs["input_ids"], att, pb.question_mask, loaded.image_token_id, POOLS)
            return pb.inputs, w, last_token_index(att)

        def forward(inputs, w, last):
            with pooler:
                pooler.run(inputs, w, last)
                letter_logits(model, pooler.last_final, letters)

        renderings = {"text": (text, "multi-image"), "grid": (seg, "grid"), "multi-image": (seg, "multi-image")}
        chunks = {k: [list(range(b * batch_size, (b + 1) * batch_size)) for b in range(n_batches)]
                  for k in renderings}
        prepared = {k: [prepare([items[i] for i in c], r) for c in chunks[k]] for k, (items, r) in renderings.items()}
        tokens = {k: float(np.mean([int(x[0]["attention_mask"].sum()) / batch_size for x in v]))
                  for k, v in prepared.items()}
        img_tokens = {k: float(np.mean([int((x[0]["input_ids"] == loaded.image_token_id).sum()) / batch_size
                                        for x in v])) for k, v in prepared.items()}
        for k in renderings:  # warm-up
            forward(*prepared[k][0])
        t_fwd = {k: [] for k in renderings}
        t_e2e = {k: [] for k in renderings}
        order = np.random.default_rng(1)
        for _ in range(rounds):
            for b in range(n_batches):
                for k in order.permutation(list(renderings)):
                    items, r = renderings[k]
                    t0 = time.perf_counter()
                    forward(*prepared[k][b])
                    t_fwd[k].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    forward(*prepare([items[i] for i in chunks[k][b]], r))
                    t_e2e[k].append(time.perf_counter() - t0)
    return {"model": model_name, "arch": arch, "image_px": size, "layers": L, "batch_size": batch_size,
            "batches": n_batches, "rounds": rounds, "tokens_per_item": tokens, "image_tokens_per_item": img_tokens,
            "forward_samples_per_s": {k: batch_size / statistics.median(v) for k, v in t_fwd.items()},
            "end_to_end_samples_per_s": {k: batch_size / statistics.median(v) for k, v in t_e2e.items()}}


def main_prompts(args) -> None:
    for name in args.models.split(","):
        r = bench_prompts(name, args.rounds, args.batch_size, args.batches)
        print(f"\n== {name} ({r['arch']}, {r['layers']} layers, {r['image_px']} px images), batch "
              f"{r['batch_size']} x {r['batches']} batches x {r['rounds']} rounds, {args.threads} thread(s), CPU fp32")
        print(f"  {'rendering':12s} {'tokens/item':>11s} {'image tok':>9s} {'fwd samples/s':>13s} "
              f"{'e2e samples/s':>13s}")
        for k in r["tokens_per_item"]:
            print(f"  {k:12s} {r['tokens_per_item'][k]:11.1f} {r['image_tokens_per_item'][k]:9.1f} "
                  f"{r['forward_samples_per_s'][k]:13.2f} {r['end_to_end_samples_per_s'][k]:13.2f}")
        mi, tx = "multi-image", "text"
        print(f"  multi-image / text: image tokens x{r['image_tokens_per_item'][mi] / r['image_tokens_per_item'][tx]:.2f}, "
              f"tokens x{r['tokens_per_item'][mi] / r['tokens_per_item'][tx]:.2f}, forward samples/s "
              f"x{r['forward_samples_per_s'][mi] / r['forward_samples_per_s'][tx]:.2f}, grid / text forward "
              f"x{r['forward_samples_per_s']['grid'] / r['forward_samples_per_s'][tx]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,mid")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--attn", default="sdpa", help="sdpa | eager | flash_attention_2 (needs flash-attn on CUDA)")
    ap.add_argument("--prompts", action="store_true", help="segmentation renderings: text vs grid vs multi-image")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.prompts:
        return main_prompts(args)
    for name in args.models.split(","):
        r = bench(name, args.device, args.dtype, args.rounds, args.batch_size, args.batches, args.attn)
        print(f"\n== {name}: {r['layers']} layers x {r['hidden']}, vocab {r['vocab']}, seq {r['seq_len']}, "
              f"{r['device']} {r['dtype']} {r['attn']}, batch {r['batch_size']} x {r['batches']} batches x "
              f"{r['rounds']} rounds, {args.threads} thread(s)")
        for k, v in r["samples_per_s"].items():
            mem = f", peak {r['peak_gib'][k]:.2f} GiB" if k in r["peak_gib"] else ""
            print(f"  {k:22s} {v:9.2f} samples/s{mem}")
        print(f"  overhead  matprobe_full_depth / bare_forward       = {r['overhead_ratio']:.3f} "
              f"(target >= 0.95)")
        print(f"  speedup   matprobe_half_depth / full_hidden_states = {r['speedup_half_depth']:.2f}x "
              f"(target >= 1.8x)")


if __name__ == "__main__":
    main()
