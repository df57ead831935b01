"""Original haotian-liu/LLaVA checkpoints (issue 21) against the ORIGINAL code's outputs.

tests/reference/llava_original/make_reference.py built the tiny checkpoints in `kit/` the way
LLaVA's training code saves them and ran llava-torch 1.2.2.post1 (transformers 4.37.2, fp32)
on three items with non-square images of odd sizes; `reference.npz` holds, per checkpoint,
template and item, the token ids of `tokenizer_image_token`, the pixels of `process_images`,
the hidden state pools (last token, image positions, all positions) at the embeddings, every
decoder block and the final norm, and the last position's logits. Here matprobe computes the
same from the same files, batched with left padding, and must agree within 1e-4 relative.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from matprobe.errors import ExtractError

REF = Path(__file__).parent / "reference" / "llava_original"
KIT = REF / "kit"
TOWER = KIT / "tower"
TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    data = np.load(REF / "reference.npz")
    return {k: data[k] for k in data.files}


def _items(reference):
    meta = json.loads(str(reference["meta"]))
    return meta["items"]


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run_matprobe(ckpt, base=None, template=None, vision_tower=TOWER, layers="embed,0,1,2,final", items=None,
                 reference=None):
    """matprobe's pools [items, layers, 3 pools, D], last-position letter logits and the batch."""
    from PIL import Image

    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.hooks import LayerPooler, letter_logits, parse_layers
    from matprobe.extract.tokens import last_token_index, option_letter_token_ids, pool_weights

    torch.set_num_threads(1)
    loaded = load_model(ckpt, base=base, vision_tower=vision_tower, template=template)
    items = items or _items(reference)
    images = [Image.open(KIT / "images" / f"item{i}.png") for i in range(len(items))]
    batch = loaded.processor.build_batch([q for _, q, _ in items], [o for _, _, o in items], images)
    inputs = batch.inputs
    pools = ["last", "image", "mean"]
    weights = pool_weights(inputs["input_ids"], inputs["attention_mask"], batch.question_mask,
                           loaded.image_token_id, pools)
    names = parse_layers(layers, loaded.num_layers)
    letters = option_letter_token_ids(loaded.processor.tokenizer, 4, loaded.architecture.letter_spellings)
    with LayerPooler(loaded.model, names, need_final_last=True) as pooler:
        pooled = pooler.run(inputs, weights, last_token_index(inputs["attention_mask"]))
        logits = letter_logits(loaded.model, pooler.last_final, letters)
        with torch.inference_mode():
            full = loaded.model.lm_head(pooler.last_final).float()
    stack = torch.stack([pooled[n] for n in names], dim=1).numpy()  # [B, layers, pools, D]
    return stack, logits.numpy(), full.detach().numpy(), batch, loaded


CASES = [  # (id, ckpt, base, template) -> reference key
    ("full-published-config", "llava-v1.5-tiny", None, "llava_v1"),
    ("merged-with-tower-keys", "llava-v1.5-tiny-merged", None, "llava_v1"),
    ("lora-bin", "llava-v1.5-tiny-lora", "vicuna-tiny", "llava_v1"),
    ("projector-only", "llava-v1.5-tiny-pretrain", "vicuna-tiny", "llava_v1"),
    ("llava-med-mistral", "llava-med-v1.5-mistral-tiny", None, "mistral_instruct"),
]


@pytest.mark.parametrize("case,ckpt,base,template", CASES, ids=[c[0] for c in CASES])
def test_equals_original_code(reference, case, ckpt, base, template):
    """Z at every layer and the final norm, and the letter logits, within 1e-4 of the original code
    (default template: none passed)."""
    stack, letters, full, batch, loaded = run_matprobe(KIT / ckpt, KIT / base if base else None,
                                                       reference=reference)
    assert loaded.processor.template.name == template  # the default the checkpoint's family gets
    ids = batch.inputs["input_ids"]
    attention = batch.inputs["attention_mask"].bool()
    worst = 0.0
    for i, (_, _, options) in enumerate(_items(reference)):
        key = f"{ckpt}|{template}|{i}"
        # tokens: tokenizer_image_token's ids, the one -200 expanded to the image's positions
        ref_ids = reference[key + "|input_ids"]
        at0, at1 = reference[key + "|image_span"]
        expanded = np.concatenate([ref_ids[:at0], np.full(at1 - at0, -200), ref_ids[at0 + 1:]])
        np.testing.assert_array_equal(ids[i][attention[i]].numpy(), expanded)
        # pixels: process_images (pad to a square with the mean colour, resize, crop, normalise)
        if key + "|pixels" in reference:  # stored once per checkpoint (llava_v1 runs)
            np.testing.assert_allclose(batch.inputs["pixel_values"][i].numpy(), reference[key + "|pixels"],
                                       atol=1e-5, rtol=0)
        ref = reference[key + "|pools"]  # [embed, blocks..., final] x [last, image, mean]
        assert ref.shape == stack[i].shape
        for layer in range(ref.shape[0]):
            for p in range(3):
                worst = max(worst, _rel(stack[i, layer, p], ref[layer, p]))
        ref_logits = reference[key + "|logits"]
        assert _rel(full[i], ref_logits) < TOL
        ref_letters = ref_logits[reference[key + "|letter_ids"]][: len(options)]
        np.testing.assert_allclose(letters[i, : len(options)], ref_letters, rtol=0,
                                   atol=TOL * np.abs(ref_logits).max())
    assert worst < TOL, f"{case}: max relative difference {worst:.2e}"
    print(f"{case}: max relative difference of Z over layers x pools x items {worst:.2e}")
