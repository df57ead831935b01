"""Prompt template, processor inputs, and the token masks that define each pool.

Pools (rows of a [B, P, T] weight matrix, applied inside the layer hooks):

- ``last``: the last real (non-padding) token, i.e. the position whose next-token
  distribution answers the question.
- ``image``: mean over the first image's placeholder tokens (``input_ids ==
  config.image_token_id``, first contiguous run): the question image. With one image per
  prompt that is every image token.
- ``option_images``: mean over the image tokens after the first image (the option overlays
  of a ``multi-image`` segmentation prompt, extract/prompts.py); empty for one-image prompts.
- ``question``: mean over the sample's own text (question and options); template tokens,
  BOS, image tokens and the fixed answer instruction are excluded, because template/BOS
  positions carry very large activations that dominate a plain mean (docs/design.md §2).
- ``mean``: mean over every real token (template and image tokens included).
"""

from __future__ import annotations

from dataclasses import dataclass

from matprobe.errors import DataError, ExtractError

POOLS = ("last", "image", "question", "mean")
# Pools that exist only for some prompts (multi-image); accepted by --pool, not in POOLS.
ALL_POOLS = (*POOLS, "option_images")
OPTION_LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Med-MAT's "Question-choice" style (papers/med-mat.txt, Fig. of a record): the question,
# one "X: option" line per choice, then the answer instruction. Recorded in provenance.
PROMPT_TEMPLATE = {
    "name": "medmat-mcq-v1",
    "user_content": ["image", "text"],
    "text": "{question}\n{options}\nAnswer with the option's letter from the given choices directly.",
    "option_line": "{letter}: {option}",
    "no_options_text": "{question}",
    "question_pool_span": "{question}\\n{options}",
    "add_generation_prompt": True,
}


def render_user_text(question: str, options, preamble: str | None = None) -> tuple[str, tuple[int, int]]:
    """The user text for one sample and the character span of its question + options block.

    A `preamble` (which image is which, for multi-image prompts) goes on its own line first
    and is outside the span."""
    if preamble:
        text, (qs, qe) = render_user_text(question, options)
        lead = preamble.strip() + "\n"
        return lead + text, (qs + len(lead), qe + len(lead))
    question = question.strip()
    options = tuple(options or ())
    if not options:
        return question, (0, len(question))
    if len(options) > len(OPTION_LETTERS):
        raise DataError(f"{len(options)} options; at most {len(OPTION_LETTERS)} are supported")
    lines = "\n".join(
        PROMPT_TEMPLATE["option_line"].format(letter=OPTION_LETTERS[i], option=str(o).strip())
        for i, o in enumerate(options)
    )
    block = f"{question}\n{lines}"
    text = PROMPT_TEMPLATE["text"].format(question=question, options=lines)
    assert text.startswith(block)
    return text, (0, len(block))


@dataclass
class PromptBatch:
    """Processor output for a batch plus the per-token question mask."""

    inputs: dict  # tensors for model.model(**inputs)
    question_mask: object  # bool tensor [B, T]
    prompts: list[str]
    n_images: list[int] | None = None  # images per prompt (None: one each)


def build_prompt(processor, question: str, options, n_images: int = 1,
                 preamble: str | None = None, template=None) -> tuple[str, tuple[int, int]]:
    """Chat-templated prompt and the character span of the question block inside it.

    The `n_images` images come first, then the text (the order LLaVA-1.5-HF's own template
    imposes), so every image placeholder precedes the question span. A LLaVA conversation
    `template` (extract/templates.py, `--template`) replaces the chat template: the item is
    then written as LLaVA's multiple-choice evaluation writes it."""
    if template is not None:
        from matprobe.extract.templates import mcq_message

        if n_images != 1:
            raise ExtractError(f"--template {template.name}: LLaVA's templates hold one image, this item has "
                               f"{n_images}; use --rendering grid or --template chat")
        message, (qs, qe) = mcq_message(question, options, preamble, processor.image_token)
        prompt = template.render(message)
        at = prompt.find(message)
        return prompt, (at + qs, at + qe)
    text, (qs, qe) = render_user_text(question, options, preamble)
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
    messages = [{"role": "user", "content": content}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    at = prompt.rfind(text)
    if at < 0:
        raise ExtractError(
            "the checkpoint's chat template altered the question text; cannot locate the "
            "question span (use a template that inserts the text verbatim)"
        )
    return prompt, (at + qs, at + qe)


def build_batch(processor, questions, options_list, images, preambles=None, template=None) -> PromptBatch:
    """Tokenise a batch (left padding) and mark each row's question tokens.

    `images[b]` is one image or a list of images (a multi-image prompt, extract/prompts.py);
    `preambles[b]` an optional first text line.

    Image placeholders are expanded by the processor before the text, so a character
    position counted from the end of the prompt is unchanged by the expansion; the
    question span is therefore located from the end (offsets of the expanded text).
    """
    import torch

    per_prompt = [list(im) if isinstance(im, (list, tuple)) else [im] for im in images]
    preambles = list(preambles) if preambles is not None else [None] * len(per_prompt)
    prompts, spans = [], []
    for q, opts, ims, pre in zip(questions, options_list, per_prompt, preambles):
        prompt, span = build_prompt(processor, q, opts, len(ims), pre, template)
        prompts.append(prompt)
        spans.append(span)
    # One list of images per prompt: processors that batch by sample (Gemma 3) need the
    # nesting, the others flatten it.
    out = processor(
        text=prompts, images=per_prompt, padding=True, return_tensors="pt",
        return_offsets_mapping=True,
    )
    offsets = out.pop("offset_mapping")
    attention = out["attention_mask"].bool()
    ends = offsets[..., 1]
    expanded_len = (ends * attention).max(dim=1).values  # end of the last real token
    question_mask = torch.zeros_like(attention)
    for b, (prompt, (qs, qe)) in enumerate(zip(prompts, spans)):
        shift = int(expanded_len[b]) - len(prompt)
        lo, hi = qs + shift, qe + shift
        starts, stops = offsets[b, :, 0], offsets[b, :, 1]
        # A token belongs to the span if its characters overlap it (BPE may merge "\n").
        question_mask[b] = attention[b] & (stops > lo) & (starts < hi) & (stops > starts)
    return PromptBatch(inputs=dict(out), question_mask=question_mask, prompts=prompts,
                       n_images=[len(ims) for ims in per_prompt])


def last_token_index(attention_mask):
    """Index of the last real token per row, for left or right padding (docs/design.md §2)."""
    T = attention_mask.shape[1]
    return T - 1 - attention_mask.long().flip(1).argmax(1)


def image_runs(input_ids, image_token_id: int):
    """Per token, the index of the image it belongs to (0 = first image of the row), -1 elsewhere.

    An image's placeholders are one contiguous run; runs of different images are separated
    by template tokens in every supported chat template."""
    import torch

    is_image = input_ids == image_token_id
    starts = is_image.clone()
    starts[:, 1:] &= ~is_image[:, :-1]
    index = torch.cumsum(starts.long(), dim=1) - 1
    return torch.where(is_image, index, torch.full_like(index, -1))


def pool_weights(input_ids, attention_mask, question_mask, image_token_id: int, pools, n_images=None):
    """Row-normalised weights [B, P, T] (float32) so that pooled = weights @ hidden.

    n_images: images per row (default one each). A one-image row's `image` pool is every image
    token: some processors (Idefics3's tiling) split one image into several placeholder runs."""
    import torch

    attention = attention_mask.bool()
    B, T = attention.shape
    is_image = input_ids == image_token_id
    runs = image_runs(input_ids, image_token_id)
    multi = torch.zeros(B, dtype=torch.bool, device=attention.device)
    if n_images is not None:
        multi = torch.as_tensor([k > 1 for k in n_images], device=attention.device)
        for b in torch.nonzero(multi).flatten().tolist():
            found = int(runs[b].max()) + 1
            if found != n_images[b]:
                raise ExtractError(
                    f"batch row {b}: {n_images[b]} images but {found} runs of image tokens (this processor "
                    "splits an image into tiles), so the per-image pools of a multi-image prompt are not "
                    "defined; use --rendering grid")
    first_image = torch.where(multi[:, None], runs == 0, is_image)
    later_images = multi[:, None] & (runs > 0)
    rows = []
    for pool in pools:
        if pool == "last":
            mask = torch.zeros(B, T, dtype=torch.bool, device=attention.device)
            mask[torch.arange(B), last_token_index(attention)] = True
        elif pool == "image":
            mask = first_image & attention
        elif pool == "option_images":
            mask = later_images & attention
        elif pool == "question":
            mask = question_mask.bool() & attention
        elif pool == "mean":
            mask = attention
        else:
            raise ExtractError(f"unknown pool {pool!r}; use one of {', '.join(ALL_POOLS)}")
        counts = mask.sum(1)
        if bool((counts == 0).any()):
            row = int((counts == 0).nonzero()[0, 0])
            raise ExtractError(
                f"pool {pool!r} is empty for batch row {row} (no such tokens in the prompt); "
                f"drop it from --pool"
            )
        rows.append(mask.float() / counts[:, None].float())
    return torch.stack(rows, dim=1)


def option_letter_token_ids(
    tokenizer, n_options: int, spellings: tuple[str, ...] = ("{letter}", " {letter}")
) -> list[list[int]]:
    """For each option letter, the single-token spellings a model may emit ("A" and " A";
    the architecture's `letter_spellings`).

    A letter's logit is the log-sum-exp over its spellings, so the answer does not depend
    on whether the template leaves a space before the reply (Llama vs Qwen tokenizers).
    """
    out = []
    for letter in OPTION_LETTERS[:n_options]:
        ids = []
        for spelling in spellings:
            enc = tokenizer.encode(spelling.format(letter=letter), add_special_tokens=False)
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
        if not ids:
            raise ExtractError(
                f"the tokenizer has no single token for option letter {letter!r}; answers cannot "
                f"be scored (use --no-answers)"
            )
        out.append(ids)
    return out
