"""Hook-pooled features and stored answers against an independent full forward.

The reference is `model(**inputs, output_hidden_states=True)` with masks built here by
plain loops over token ids, never through matprobe's pool weights. Tolerance 1e-5 (fp32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.extract.tiny import tiny_architectures

torch.set_num_threads(1)

ARCHS = list(tiny_architectures())  # the registry's architectures with a tiny builder
TOL = 1e-5


def _load_samples(manifest):
    from matprobe.data import load_dataset, load_image

    ds = load_dataset(manifest)
    return ds, [load_image(s) for s in ds]


def _reference_pools(hidden, input_ids, attention, question_mask, image_token_id):
    """Per-row pools by explicit position lists (independent of matprobe.extract.tokens)."""
    out = {"last": [], "image": [], "question": [], "mean": []}
    for b in range(hidden.shape[0]):
        real = [t for t in range(hidden.shape[1]) if attention[b, t]]
        img = [t for t in real if int(input_ids[b, t]) == image_token_id]
        que = [t for t in real if question_mask[b, t]]
        out["last"].append(hidden[b, max(real)])
        out["image"].append(hidden[b, img].mean(0))
        out["question"].append(hidden[b, que].mean(0))
        out["mean"].append(hidden[b, real].mean(0))
    return {k: torch.stack(v).float() for k, v in out.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_hook_pools_equal_output_hidden_states(arch, tiny_ckpts, tiny_manifest):
    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.hooks import LayerPooler, parse_layers
    from matprobe.extract.tokens import POOLS, build_batch, last_token_index, pool_weights

    loaded = load_model(tiny_ckpts[arch])
    ds, images = _load_samples(tiny_manifest)
    idx = [0, 1, 2, 3, 4]  # five image sizes, three question lengths
    batch = build_batch(loaded.processor, [ds[i].question for i in idx],
                        [ds[i].options for i in idx], [images[i] for i in idx])
    ids, att = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    assert len(set(att.sum(1).tolist())) >= 3, "batch should mix prompt lengths"
    assert not bool(att.all()), "batch should contain padding"

    # The question mask covers exactly the question + options text.
    for b, i in enumerate(idx):
        text = loaded.processor.tokenizer.decode(ids[b][batch.question_mask[b]])
        lines = "\n".join(f"{L}: {o}" for L, o in zip("ABCD", ds[i].options))
        assert text == f"{ds[i].question}\n{lines}"

    L = loaded.num_layers
    layers = parse_layers("embed,0,-2,-1,final", L)
    assert layers == ["embed", "0", str(L - 2), str(L - 1), "final"]
    weights = pool_weights(ids, att, batch.question_mask, loaded.image_token_id, POOLS)
    with LayerPooler(loaded.model, layers, need_final_last=True) as pooler:
        pooled = pooler.run(batch.inputs, weights, last_token_index(att))
        last_final = pooler.last_final

    with torch.inference_mode():
        full = loaded.model(**batch.inputs, output_hidden_states=True, use_cache=False)
    hs = full.hidden_states
    assert len(hs) == L + 1
    # hidden_states[0] = embeddings, [i + 1] = block i output (i < L-1), [-1] = after final norm.
    reference = {"embed": hs[0], "0": hs[1], str(L - 2): hs[L - 1], "final": hs[-1]}
    for layer, h in reference.items():
        ref = _reference_pools(h, ids, att, batch.question_mask, loaded.image_token_id)
        for p, pool in enumerate(POOLS):
            diff = (pooled[layer][:, p, :] - ref[pool]).abs().max().item()
            assert diff <= TOL, (arch, layer, pool, diff)
    # Block L-1's raw output is not in hidden_states; RMSNorm is per token, so its last-token
    # pool must map onto hidden_states[-1] at the last token.
    norm = loaded.architecture.final_norm(loaded.model)
    last = [max(t for t in range(att.shape[1]) if att[b, t]) for b in range(len(idx))]
    with torch.inference_mode():
        normed = norm(pooled[str(L - 1)][:, POOLS.index("last"), :])
    expected_last = torch.stack([hs[-1][b, t] for b, t in enumerate(last)])
    assert (normed - expected_last).abs().max().item() <= TOL
    assert (last_final - expected_last).abs().max().item() <= TOL
    # Image-token mean equals a manual mean over image positions; count matches the processor.
    n_img = (ids == loaded.image_token_id).sum(1)
    if not loaded.architecture.image_tokens_vary:
        # a fixed count per image, the one the checkpoint's config states: (56/14)^2 = 16 for the tiny
        # LLaVA (image_seq_length), Gemma 3's 4x4 patches pooled to 2x2 (mm_tokens_per_image)
        cfg = loaded.model.config
        stated = getattr(cfg, "image_seq_length", None) or getattr(cfg, "mm_tokens_per_image", None)
        assert stated and n_img.tolist() == [stated] * len(idx)
    else:  # (H/28)(W/28) per image (Qwen); anyres tiles + row newlines (LLaVA-NeXT); tiles (Idefics3)
        assert len(set(n_img.tolist())) > 1


@pytest.mark.parametrize("arch", ARCHS)
def test_sample_alone_equals_sample_in_padded_batch(arch, tiny_ckpts, tiny_manifest):
    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.hooks import LayerPooler
    from matprobe.extract.tokens import POOLS, build_batch, last_token_index, pool_weights

    loaded = load_model(tiny_ckpts[arch])
    ds, images = _load_samples(tiny_manifest)
    layers = ["1", "3"]

    def run(idx):
        batch = build_batch(loaded.processor, [ds[i].question for i in idx],
                            [ds[i].options for i in idx], [images[i] for i in idx])
        att = batch.inputs["attention_mask"]
        w = pool_weights(batch.inputs["input_ids"], att, batch.question_mask, loaded.image_token_id, POOLS)
        with LayerPooler(loaded.model, layers, need_final_last=False) as pooler:
            return pooler.run(batch.inputs, w, last_token_index(att)), att

    together, att = run([0, 1, 2, 3])
    # Sample 2 has the shortest prompt ("Finding?") so it is padded inside the batch.
    assert att[2].sum() < att.shape[1]
    alone, _ = run([2])
    for layer in layers:
        diff = (together[layer][2] - alone[layer][0]).abs().max().item()
        assert diff <= TOL, (arch, layer, diff)


@pytest.mark.parametrize("arch", ARCHS)
def test_store_equals_full_forward(arch, tiny_ckpts, tiny_manifest, tmp_path):
    """End to end: every stored (layer, pool) and the stored answers vs a full forward per sample."""
    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.runner import ExtractConfig, extract
    from matprobe.extract.tokens import build_batch
    from matprobe.store import EmbeddingStore

    out = tmp_path / "z.h5"
    res = extract(ExtractConfig(ckpt=str(tiny_ckpts[arch]), data=str(tiny_manifest), out=str(out),
                                layers="0,2,final", batch_size=4))
    assert res.n_computed == 10
    loaded = load_model(tiny_ckpts[arch])
    ds, images = _load_samples(tiny_manifest)
    tok = loaded.processor.tokenizer
    with EmbeddingStore.open(out) as store:
        assert list(store.ids) == [s.id for s in ds]
        assert store.done.all()
        assert store.provenance["layers"] == ["0", "2", "final"]
        stored = {k: store.read(*k) for k in store.feature_keys()}
        answers = store.answers()
    for i, sample in enumerate(ds):
        batch = build_batch(loaded.processor, [sample.question], [sample.options], [images[i]])
        with torch.inference_mode():
            full = loaded.model(**batch.inputs, output_hidden_states=True, use_cache=False)
        hs = full.hidden_states
        ref = {"0": hs[1], "2": hs[3], "final": hs[-1]}
        ids = batch.inputs["input_ids"]
        for layer, h in ref.items():
            pools = _reference_pools(h, ids, batch.inputs["attention_mask"], batch.question_mask,
                                     loaded.image_token_id)
            for pool, value in pools.items():
                diff = np.abs(stored[(layer, pool)][i] - value[0].numpy()).max()
                assert diff <= TOL, (arch, sample.id, layer, pool, diff)
        # Answer: argmax over option-letter logits of the full vocabulary logits at the last token.
        logits = full.logits[0, -1]  # one sample, no padding: last position is the last token
        letter = []
        for L in "ABCD":
            ids_L = {tok.encode(s, add_special_tokens=False)[0] for s in (L, " " + L)
                     if len(tok.encode(s, add_special_tokens=False)) == 1}
            letter.append(torch.logsumexp(logits[sorted(ids_L)], 0))
        letter = torch.stack(letter)
        assert answers["pred"][i] == int(letter.argmax())
        np.testing.assert_allclose(answers["probs"][i], torch.softmax(letter, 0).numpy(), atol=1e-5)
        assert answers["correct"][i] == int(int(letter.argmax()) == sample.answer_index)
