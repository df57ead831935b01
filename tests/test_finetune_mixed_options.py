"""`run`'s toy fine-tuning on items with different numbers of options (Med-MAT's subsets have 2 to
4): it stopped after two of twelve checkpoints with "fine-tuning needs samples with the same number
of options". Each item's softmax now runs over its own options' letters; the loss is checked
against transformers' own forward, scored by hand per item."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from matprobe.data import load_dataset
from matprobe.errors import ExtractError
from matprobe.extract.finetune import finetune

torch.set_num_threads(1)


def _items(folder, n_options_cycle=(2, 3, 4), n=9):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(folder / "items.jsonl", "w") as fh:
        for i in range(n):
            k = n_options_cycle[i % len(n_options_cycle)]
            Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(folder / f"{i}.png")
            rec = {"id": f"q{i}", "image": f"{i}.png", "question": "Which finding?",
                   "options": ["Normal", "Tumor", "Cyst", "Stone"][:k], "modality": "CT", "anatomy": "Lung",
                   "task": "Diagnosis", "answer": (i * 7) % k}
            print(json.dumps(rec), file=fh)
    return load_dataset(folder / "items.jsonl")


def test_items_with_two_to_four_options_train_on_their_own_letters(tiny_ckpts, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from matprobe.extract.prompts import render_sample
    from matprobe.extract.tokens import build_batch, option_letter_token_ids

    samples = list(_items(tmp_path / "d"))
    losses = []
    # lr = 0: the one step's loss is the base model's, which transformers' forward gives independently
    finetune(tiny_ckpts["llava"], samples, tmp_path / "out", steps=1, batch_size=len(samples), lr=0.0,
             on_step=lambda step, loss: losses.append(loss))
    model = LlavaForConditionalGeneration.from_pretrained(tiny_ckpts["llava"]).eval()
    processor = AutoProcessor.from_pretrained(tiny_ckpts["llava"])
    letters = option_letter_token_ids(processor.tokenizer, 4)
    want = []
    for s in samples:  # one item per forward: no padding shared with other items
        r = render_sample(s, "multi-image")
        batch = build_batch(processor, [s.question], [s.options], [r.images], [r.preamble])
        with torch.no_grad():
            logits = model(**batch.inputs).logits[0, -1].double()
        scores = torch.stack([torch.logsumexp(logits[ids], 0) for ids in letters[:len(s.options)]])
        want.append(-(scores[s.answer_index] - torch.logsumexp(scores, 0)).item())
    assert losses[0] == pytest.approx(float(np.mean(want)), rel=1e-4)
    # and training moves it: a few steps at the default rate lower the loss on these items
    more = []
    finetune(tiny_ckpts["llava"], samples, tmp_path / "out2", steps=6, batch_size=len(samples), lr=4e-3,
             on_step=lambda step, loss: more.append(loss))
    assert more[-1] < more[0]


def test_an_item_without_an_answer_is_named_with_the_fix(tiny_ckpts, tmp_path):
    from dataclasses import replace

    # a manifest refuses a row without its answer; samples built in Python can still lack one
    samples = [replace(s, answer_index=None) if s.id in ("q1", "q3") else s for s in _items(tmp_path / "d", n=4)]
    with pytest.raises(ExtractError, match=r"2 of 4 have none \(e\.g\. q1, q3\): give their answers"):
        finetune(tiny_ckpts["llava"], samples, tmp_path / "out", steps=1)
