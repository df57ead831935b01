"""Conversation templates of the original LLaVA code (`--template`), and LLaVA's
multiple-choice rendering of an item.

Original-format LLaVA checkpoints (haotian-liu/LLaVA, LLaVA-Med) carry no chat template: the
prompt is built by the code's `conv_templates[...]` (llava/conversation.py) and the model was
trained on one of them. The system text matters: the training conversation (`vicuna_v1`,
"curious user") and the evaluation one (`llava_v1`, "curious human") give hidden states
0.23 apart (relative, issue 21). The names and strings here are those of llava-torch
1.2.2.post1; tests/reference/llava_original checks them against that code.

`--template FILE`: a text file holding the whole prompt with one `{message}` placeholder for
the user turn (the image placeholder `<image>`, question, options and instruction), e.g.
`A chat between ... USER: {message} ASSISTANT:`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matprobe.errors import ExtractError

IMAGE_PLACEHOLDER = "<image>"
# LLaVA's multiple-choice evaluation (llava/eval/model_vqa_mmbench.py, single_pred_prompt).
MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
MCQ_OPTION_LINE = "{letter}. {option}"


@dataclass(frozen=True)
class ConversationTemplate:
    """One conversation layout: `style` is LLaVA's SeparatorStyle (TWO, LLAMA_2, PLAIN, FILE)."""

    name: str
    style: str
    system: str = ""
    roles: tuple[str, str] = ("USER", "ASSISTANT")
    sep: str = " "
    sep2: str = "</s>"
    text: str = ""  # FILE style: the prompt with a {message} placeholder

    def render(self, message: str) -> str:
        """The prompt for one user turn followed by an empty assistant turn (generation point)."""
        if self.style == "TWO":  # system + sep + "USER: msg" + sep + "ASSISTANT:"
            return f"{self.system}{self.sep}{self.roles[0]}: {message}{self.sep}{self.roles[1]}:"
        if self.style == "LLAMA_2":  # "[INST] <<SYS>>..<</SYS>>\n\nmsg [/INST]", sep stripped at the left
            sys = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n" if self.system else ""
            out = f"{self.sep}[INST] {sys}{message} [/INST]"
            return out.lstrip(self.sep) if self.sep else out
        if self.style == "PLAIN":  # the message and its separator, nothing else
            return f"{self.system}{message}{self.sep}"
        if self.style == "FILE":
            return self.text.replace("{message}", message)
        raise ExtractError(f"template {self.name!r}: unknown style {self.style!r}")

    def describe(self) -> dict:
        """What provenance records (every string that reaches the tokenizer)."""
        return {"name": self.name, "style": self.style, "system": self.system, "roles": list(self.roles),
                "sep": self.sep, "sep2": self.sep2, "text": self.text,
                "item": "{question}\\n" + MCQ_OPTION_LINE + " lines\\n" + MCQ_INSTRUCTION,
                "image": IMAGE_PLACEHOLDER + "\\n before the text"}


_HUMAN = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
_USER = ("A chat between a curious user and an artificial intelligence assistant. "
         "The assistant gives helpful, detailed, and polite answers to the user's questions.")

TEMPLATES = {
    "llava_v1": ConversationTemplate("llava_v1", "TWO", _HUMAN),
    "vicuna_v1": ConversationTemplate("vicuna_v1", "TWO", _USER),
    "mistral_instruct": ConversationTemplate("mistral_instruct", "LLAMA_2", "", sep="", sep2="</s>"),
    "plain": ConversationTemplate("plain", "PLAIN", "", roles=("", ""), sep="\n", sep2=""),
}
TEMPLATE_CHOICES = ("chat", *TEMPLATES)


def get_template(spec: str) -> ConversationTemplate:
    """A named template or a file (see module doc); `chat` is not one of these."""
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    path = Path(spec)
    if path.is_file():
        text = path.read_text()
        if text.count("{message}") != 1:
            raise ExtractError(f"--template {path}: the file must contain {{message}} exactly once "
                               f"(found {text.count('{message}')})")
        return ConversationTemplate(f"file:{path.name}", "FILE", text=text)
    raise ExtractError(f"--template {spec!r}: use one of {', '.join(TEMPLATE_CHOICES)} or a file "
                       f"with a {{message}} placeholder")


def mcq_message(question: str, options, preamble: str | None = None,
                image_token: str = IMAGE_PLACEHOLDER) -> tuple[str, tuple[int, int]]:
    """The user turn as LLaVA's multiple-choice evaluation writes it, and the character span
    of the question + options block inside it.

    "<image>\\n" + question + ("\\nA. option")* + "\\n" + instruction; no instruction when the
    item has no options. A `preamble` (segmentation renderings) goes on a line before the
    question, outside the span.
    """
    from matprobe.data.model import OPTION_LETTERS  # not extract.tokens: it imports this module

    question = question.strip()
    if preamble:
        question_lead = preamble.strip() + "\n"
    else:
        question_lead = ""
    options = tuple(options or ())
    if len(options) > len(OPTION_LETTERS):
        raise ExtractError(f"{len(options)} options; at most {len(OPTION_LETTERS)} are supported")
    block = question + "".join("\n" + MCQ_OPTION_LINE.format(letter=OPTION_LETTERS[i], option=str(o).strip())
                               for i, o in enumerate(options))
    head = image_token + "\n" + question_lead
    message = head + block + ("\n" + MCQ_INSTRUCTION if options else "")
    return message, (len(head), len(head) + len(block))
