"""Prompt template, processor inputs, and the token masks that define each pool.

Pools (rows of a [B, P, T] weight matrix, applied inside the layer hooks):

- ``last``: the last real (non-padding) token, i.e. the position whose next-token
  distribution answers the question.
- ``image``: mean over image placeholder tokens (``input_ids == config.image_token_id``).
- ``question``: mean over the sample's own text (question and options); template tokens,
  BOS, image tokens and the fixed answer instruction are excluded, because template/BOS
  positions carry very large activations that dominate a plain mean (docs/design.md §2).
- ``mean``: mean over every real token (template and image tokens included).
"""

from __future__ import annotations

from dataclasses import dataclass

from matprobe.errors import DataError, ExtractError

POOLS = ("last", "image", "question", "mean")
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


def render_user_text(question: str, options) -> tuple[str, tuple[int, int]]:
    """The user text for one sample and the character span of its question + options block."""
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


def build_prompt(processor, question: str, options) -> tuple[str, tuple[int, int]]:
    """Chat-templated prompt and the character span of the question block inside it."""
    text, (qs, qe) = render_user_text(question, options)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    at = prompt.rfind(text)
    if at < 0:
        raise ExtractError(
            "the checkpoint's chat template altered the question text; cannot locate the "
            "question span (use a template that inserts the text verbatim)"
        )
    return prompt, (at + qs, at + qe)


def build_batch(processor, questions, options_list, images) -> PromptBatch:
    """Tokenise a batch (left padding) and mark each row's question tokens.

    Image placeholders are expanded by the processor before the text, so a character
    position counted from the end of the prompt is unchanged by the expansion; the
    question span is therefore located from the end (offsets of the expanded text).
    """
    import torch

    prompts, spans = [], []
    for q, opts in zip(questions, options_list):
        prompt, span = build_prompt(processor, q, opts)
        prompts.append(prompt)
        spans.append(span)
    # One list of images per prompt: processors that batch by sample (Gemma 3) need the
    # nesting, the others flatten it.
    out = processor(
        text=prompts, images=[[image] for image in images], padding=True, return_tensors="pt",
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
    return PromptBatch(inputs=dict(out), question_mask=question_mask, prompts=prompts)


def last_token_index(attention_mask):
    """Index of the last real token per row, for left or right padding (docs/design.md §2)."""
    T = attention_mask.shape[1]
    return T - 1 - attention_mask.long().flip(1).argmax(1)


def pool_weights(input_ids, attention_mask, question_mask, image_token_id: int, pools):
    """Row-normalised weights [B, P, T] (float32) so that pooled = weights @ hidden."""
    import torch

    attention = attention_mask.bool()
    B, T = attention.shape
    rows = []
    for pool in pools:
        if pool == "last":
            mask = torch.zeros(B, T, dtype=torch.bool, device=attention.device)
            mask[torch.arange(B), last_token_index(attention)] = True
        elif pool == "image":
            mask = (input_ids == image_token_id) & attention
        elif pool == "question":
            mask = question_mask.bool() & attention
        elif pool == "mean":
            mask = attention
        else:
            raise ExtractError(f"unknown pool {pool!r}; use one of {', '.join(POOLS)}")
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
