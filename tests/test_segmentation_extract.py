"""Multi-image and grid prompts: stored features, answers and I/U against a plain HF forward.

The reference builds the chat messages and calls the processor and the model directly
(no matprobe prompt code); the image pools come from explicit runs of image tokens found
by a loop; I and U from the PNG masks read with Pillow and counted with numpy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from test_segmentation import write_seg_manifest

torch.set_num_threads(1)
TOL = 1e-5
POOLS = "last,image,question,mean,option_images"


def _runs(ids, image_token_id):
    """Per position: which image (0, 1, ...) the token belongs to, or -1 (plain loop)."""
    out, current, prev = [], -1, False
    for t in ids.tolist():
        is_img = t == image_token_id
        if is_img and not prev:
            current += 1
        out.append(current if is_img else -1)
        prev = is_img
    return out


@pytest.mark.parametrize("arch, rendering", [("llava", "multi-image"), ("qwen2_vl", "multi-image"),
                                             ("llava", "grid")])
def test_segmentation_store_equals_hf_forward(arch, rendering, tiny_ckpts, tmp_path):
    from matprobe.data import load_dataset
    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.prompts import PREAMBLES, render_sample
    from matprobe.extract.runner import ExtractConfig, extract
    from matprobe.extract.tokens import build_batch
    from matprobe.store import EmbeddingStore

    manifest = write_seg_manifest(tmp_path, n=5, sizes=[(40, 48), (56, 56), (42, 56)])
    out = tmp_path / "z.h5"
    pools = POOLS if rendering == "multi-image" else "last,image,question,mean"
    extract(ExtractConfig(ckpt=str(tiny_ckpts[arch]), data=str(manifest), out=str(out),
                          layers="1,final", pools=pools, batch_size=3, rendering=rendering))
    loaded = load_model(tiny_ckpts[arch])
    proc, tok = loaded.processor, loaded.processor.tokenizer
    ds = load_dataset(manifest)
    with EmbeddingStore.open(out) as store:
        stored = {k: store.read(*k) for k in store.feature_keys()}
        ans = store.answers()
        prov = store.provenance
        frame = store.samples()
    assert prov["segmentation_rendering"]["name"] == rendering
    assert frame["option_masks"].map(len).tolist() == [4] * 5
    n_img = 5 if rendering == "multi-image" else 1
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    seen_lengths = set()
    for i, (s, rec) in enumerate(zip(ds, records)):
        images = render_sample(s, rendering).images
        assert len(images) == n_img
        pre = PREAMBLES[rendering].format(n=5, first="A", last="D")
        block = s.question + "\n" + "\n".join(f"{L}: mask {L}" for L in "ABCD")
        text = f"{pre}\n{block}\nAnswer with the option's letter from the given choices directly."
        content = [{"type": "image"}] * n_img + [{"type": "text", "text": text}]
        prompt = proc.apply_chat_template([{"role": "user", "content": content}],
                                          add_generation_prompt=True, tokenize=False)
        inputs = proc(text=[prompt], images=[images], return_tensors="pt")
        ids = inputs["input_ids"][0]
        seen_lengths.add(len(ids))
        with torch.inference_mode():
            full = loaded.model(**inputs, output_hidden_states=True, use_cache=False)
        runs = _runs(ids, loaded.image_token_id)
        assert max(runs) == n_img - 1  # one run of image tokens per image
        # matprobe's question mask covers exactly the question block (checked by decoding)
        qmask = build_batch(proc, [s.question], [s.options], [images], [pre]).question_mask[0]
        assert tok.decode(ids[qmask]) == block
        positions = {
            "last": [len(ids) - 1],
            "image": [t for t, r in enumerate(runs) if r == 0],
            "option_images": [t for t, r in enumerate(runs) if r > 0],
            "question": [t for t in range(len(ids)) if qmask[t]],
            "mean": list(range(len(ids))),
        }
        hs = full.hidden_states
        for layer, h in {"1": hs[2], "final": hs[-1]}.items():
            for pool in pools.split(","):
                ref = h[0, positions[pool]].float().mean(0).numpy()
                diff = np.abs(stored[(layer, pool)][i] - ref).max()
                assert diff <= TOL, (arch, rendering, s.id, layer, pool, diff)
        letters = []
        for L in "ABCD":
            spell = {tok.encode(x, add_special_tokens=False)[0] for x in (L, " " + L)
                     if len(tok.encode(x, add_special_tokens=False)) == 1}
            letters.append(torch.logsumexp(full.logits[0, -1, sorted(spell)], 0))
        pred = int(torch.stack(letters).argmax())
        assert ans["pred"][i] == pred
        # I and U by hand from the mask files (0/255 PNGs at the image's size)
        chosen = np.asarray(Image.open(manifest.parent / rec["option_masks"][pred])) > 0
        truth = np.asarray(Image.open(manifest.parent / rec["option_masks"][rec["answer"]])) > 0
        assert ans["intersection"][i] == int((chosen & truth).sum())
        assert ans["union"][i] == int((chosen | truth).sum())
    assert len(seen_lengths) >= 2  # the batches were padded
    if rendering == "multi-image":
        n_tok = [sum(1 for t in _runs(ids, loaded.image_token_id) if t == 0)]
        assert n_tok[0] > 0


def test_store_info_ciou_is_ratio_of_sums(tiny_ckpts, tmp_path):
    """cIoU per (M, A, T) in store info = Σ I / Σ U of the stored rows, not the mean IoU."""
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.extract.runner import ExtractConfig, extract
    from matprobe.store import EmbeddingStore

    manifest = write_seg_manifest(tmp_path, n=6)
    out = tmp_path / "z.h5"
    extract(ExtractConfig(ckpt=str(tiny_ckpts["llava"]), data=str(manifest), out=str(out),
                          layers="final", pools="last", batch_size=4))
    with EmbeddingStore.open(out) as store:
        ans = store.answers()
        info = store.info()
    i, u = ans["intersection"].astype(float), ans["union"].astype(float)
    (row,) = info["by_triplet"]
    assert row["cIoU"] == pytest.approx(i.sum() / u.sum())
    assert row["intersection"] == int(i.sum()) and row["n_segmentation"] == 6
    if not np.allclose(i / u, (i / u).mean()):
        assert row["cIoU"] != pytest.approx((i / u).mean())
    res = CliRunner().invoke(app, ["store", "info", str(out)])
    assert res.exit_code == 0
    assert f"{i.sum() / u.sum():.3f}" in res.output and "cIoU" in res.output
