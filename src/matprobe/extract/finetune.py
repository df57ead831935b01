"""Brief supervised fine-tuning of a (tiny) checkpoint on MAT questions, for the demo.

The objective is the one extraction scores: cross-entropy over the option letters' logits
at the last prompt position (CrossMed §V: "a multi-task cross-entropy objective over the
selected answer token"). The LM head is applied to that position only. The result is
saved as an ordinary checkpoint directory (the base's processor files + new weights), so
`matprobe extract` loads it through the same `from_pretrained` path as any model.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matprobe.data.model import Sample
from matprobe.errors import ExtractError
from matprobe.io import atomic_dir


@dataclass
class FinetuneResult:
    out: Path
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def _letter_logits_train(model, last_hidden, letter_ids):
    import torch

    logits = model.lm_head(last_hidden)  # [B, V] at one position per row
    return torch.stack([torch.logsumexp(logits[:, ids], dim=1) for ids in letter_ids], dim=1)


def finetune(
    base_ckpt: str | os.PathLike,
    samples: Sequence[Sample],
    out_dir: str | os.PathLike,
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    rendering: str = "multi-image",
) -> FinetuneResult:
    """Fine-tune every parameter of `base_ckpt` on `samples` with AdamW; save to `out_dir`.

    Images (for segmentation items: their `rendering`, extract/prompts.py) are made once; each step draws a batch without replacement within an epoch
    (seeded), so a run is reproducible on CPU.
    """
    import torch

    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.prompts import render_sample
    from matprobe.extract.tokens import build_batch, last_token_index, option_letter_token_ids

    if not samples:
        raise ExtractError("fine-tuning needs at least one training sample")
    unanswered = [s.id for s in samples if s.answer_index is None]
    if unanswered:
        raise ExtractError(f"fine-tuning needs an answer for every training item; {len(unanswered)} of "
                           f"{len(samples)} have none (e.g. {', '.join(map(str, unanswered[:3]))}): give their "
                           "answers in the manifest, or mark them split = unused")
    # items with fewer options than the most any item has (Med-MAT's subsets have 2 to 4): the
    # letters past an item's own options are left out of its softmax
    n_options = torch.tensor([len(s.options) for s in samples])
    k = int(n_options.max())
    mixed = bool((n_options != k).any())
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    loaded = load_model(base_ckpt, dtype="fp32", device="cpu")
    model, processor = loaded.model, loaded.processor
    letter_ids = option_letter_token_ids(processor.tokenizer, k)
    rendered = [render_sample(s, rendering) for s in samples]
    answers = torch.tensor([s.answer_index for s in samples])
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    losses: list[float] = []
    order: list[int] = []
    t0 = time.perf_counter()
    for step in range(steps):
        if len(order) < batch_size:
            order.extend(rng.permutation(len(samples)).tolist())
        idx, order = order[:batch_size], order[batch_size:]
        batch = build_batch(processor, [samples[i].question for i in idx],
                            [samples[i].options for i in idx], [rendered[i].images for i in idx],
                            [rendered[i].preamble for i in idx])
        hidden = model.model(**batch.inputs, use_cache=False).last_hidden_state
        last = hidden[torch.arange(len(idx)), last_token_index(batch.inputs["attention_mask"])]
        logits = _letter_logits_train(model, last, letter_ids)
        if mixed:
            logits = logits.masked_fill(torch.arange(k)[None, :] >= n_options[idx][:, None], float("-inf"))
        loss = torch.nn.functional.cross_entropy(logits, answers[idx])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, losses[-1])
    seconds = time.perf_counter() - t0
    model.eval()
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        shutil.copytree(base_ckpt, tmp, dirs_exist_ok=True)  # processor, tokenizer, template
        for weights in tmp.glob("*.safetensors*"):
            weights.unlink()
        model.save_pretrained(tmp)
    return FinetuneResult(out=out, steps=steps, seconds=seconds, losses=losses)
