"""Checkpoints in the original haotian-liu/LLaVA format (LLaVA-1.5, LLaVA-Med v1.5), computed
as that code computes them.

Layouts (recognised by the `mm_*` keys of config.json, never by `model_type` alone: the
published v1.5 configs say "llava", which is also transformers' own llava):
- full: `pytorch_model-*.bin` shards + `pytorch_model.bin.index.json` (or one
  `pytorch_model.bin`, or safetensors), the vision tower NOT among them (merged checkpoints
  that do carry `model.vision_tower.*` keys: those are ignored, as the original loader does,
  unless the config says `unfreeze_mm_vision_tower`: then they are the tower's weights, as there);
- LoRA run (`--ckpt RUN --base BASE`): adapter_config.json + adapter_model.bin/.safetensors
  + non_lora_trainables.bin (projector, peft prefixes) + config.json, on the plain language
  model; merged here in fp32 (W += alpha/r · B A);
- projector-only (`--ckpt RUN --base BASE`): mm_projector.bin + config.json.

The vision tower is the CLIP checkpoint `mm_vision_tower` names: a local path used as is, or
(a hub id, someone else's path) the folder given by `--vision-tower`.

Forward (llava/model/llava_arch.py): CLIP hidden state `mm_vision_select_layer`, CLS dropped
for `patch`; projector `linear` or `mlpNx_gelu`; the image's features replace its one
`<image>` placeholder in the token sequence (tokenised chunk by chunk, `tokenizer_image_token`).
Images: `image_aspect_ratio` `pad` = pasted centred on a square of the processor's mean colour
(each channel int(mean·255), truncated), then resized (shortest edge, bicubic) and
centre-cropped; `square` = resized and cropped directly.

Every `.bin` is read with `torch.load(weights_only=True)`: a file that needs code to unpickle is
refused with one line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from matprobe.errors import ExtractError, ItemRefused

IMAGE_TOKEN_INDEX = -200  # LLaVA's placeholder id (llava/constants.py); never embedded
FORMAT = "llava-original"
LLAVA_VISION_PREFIX = "model.vision_tower."


# ------------------------------------------------------------------ recognising the format

def is_original_config(cfg: dict) -> bool:
    """haotian-liu/LLaVA configs name their tower and projector with mm_* keys."""
    return "mm_vision_tower" in cfg or ("mm_projector_type" in cfg and "mm_hidden_size" in cfg)


def read_config(folder: Path) -> dict | None:
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExtractError(f"{path}: config.json is not valid JSON ({exc}); re-download the checkpoint") from None


def layout_of(run_dir: Path) -> str:
    if (run_dir / "adapter_config.json").is_file():
        return "lora"
    if (run_dir / "mm_projector.bin").is_file() and not _weight_files(run_dir):
        return "projector-only"
    return "full"


def language_family(cfg: dict) -> str:
    kind = cfg.get("model_type", "")
    archs = " ".join(cfg.get("architectures") or [])
    if kind == "llava_mistral" or "Mistral" in archs:
        return "mistral"
    if kind == "llava_mpt" or "Mpt" in archs:
        raise ExtractError("original-format LLaVA-MPT checkpoints are not supported; use a Llama or "
                           "Mistral based LLaVA")
    return "llama"


# ------------------------------------------------------------------ safe weight reading

def safe_load(path: Path) -> dict:
    """A tensor dict from a .bin / .safetensors file; never runs pickled code."""
    import pickle

    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        from matprobe.provenance import read_safetensors_header

        read_safetensors_header(path)  # a truncated file is named before it is mapped
        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "unpickling error"
        raise ExtractError(f"{path}: needs code to unpickle ({first}); only plain tensor files are loaded "
                           f"(torch.load weights_only=True): re-save it as tensors or safetensors") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ExtractError(f"{path}: not a readable torch file ({str(exc).splitlines()[0][:200]}); "
                           f"re-download it") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExtractError(f"{path}: not a dict of tensors; re-save it with torch.save(state_dict)")
    return state


def _weight_files(folder: Path) -> list[Path]:
    """The model's weight files, through the shard index when there is one."""
    for index_name in ("pytorch_model.bin.index.json", "model.safetensors.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ExtractError(f"{index}: not a shard index (no weight_map); re-download it") from None
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise ExtractError(f"{folder}: shard {missing[0]} named in {index_name} is missing "
                                   f"({len(missing)} of {len(names)}); download every shard")
            return [folder / n for n in names]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).is_file():
            return [folder / single]
    return []


def read_weights(folder: Path) -> dict:
    files = _weight_files(folder)
    if not files:
        raise ExtractError(f"{folder}: no weights (pytorch_model*.bin or model*.safetensors); pass the "
                           f"checkpoint folder")
    state: dict = {}
    for f in files:
        state.update(safe_load(f))
    return state


# ------------------------------------------------------------------ modules

def _projector(kind: str, d_in: int, d_out: int):
    from torch import nn

    if kind == "linear":
        return nn.Linear(d_in, d_out)
    m = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if m:
        layers: list = [nn.Linear(d_in, d_out)]
        for _ in range(1, int(m.group(1))):
            layers += [nn.GELU(), nn.Linear(d_out, d_out)]
        return nn.Sequential(*layers)
    if kind == "identity":
        return nn.Identity()
    raise ExtractError(f"mm_projector_type {kind!r} is not supported; supported: linear, mlpNx_gelu, identity")


def _modules():
    from torch import nn

    class Backbone(nn.Module):
        """What LlavaMetaModel + prepare_inputs_labels_for_multimodal compute, batched."""

        def __init__(self, language_model, vision_tower, projector, select_layer: int, select_feature: str):
            super().__init__()
            self.language_model = language_model
            self.vision_tower = vision_tower
            self.mm_projector = projector
            self.select_layer = select_layer
            self.select_feature = select_feature

        def encode_images(self, pixel_values):
            out = self.vision_tower(pixel_values.to(self.vision_tower.dtype), output_hidden_states=True)
            feats = out.hidden_states[self.select_layer]
            if self.select_feature == "patch":
                feats = feats[:, 1:]
            return self.mm_projector(feats)

        def forward(self, input_ids, attention_mask, pixel_values, use_cache=False, **_):
            lm = self.language_model
            is_image = input_ids == IMAGE_TOKEN_INDEX
            embeds = lm.embed_tokens(input_ids.clamp(min=0))
            feats = self.encode_images(pixel_values).to(embeds.dtype)  # [n_images, P, D]
            if int(is_image.sum()) != feats.shape[0] * feats.shape[1]:
                raise ExtractError(f"{int(is_image.sum())} image positions for {feats.shape[0]} image(s) of "
                                   f"{feats.shape[1]} features; one image per prompt is supported")
            embeds = embeds.masked_scatter(is_image[..., None], feats.reshape(-1, feats.shape[-1]))
            # Positions count real tokens only, so a left-padded row equals the row alone.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            return lm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False)

    class OriginalLlava(nn.Module):
        matprobe_arch = "llava_original"

        def __init__(self, config, backbone, lm_head):
            super().__init__()
            self.config = config
            self.model = backbone
            self.lm_head = lm_head

        @property
        def dtype(self):
            return self.lm_head.weight.dtype

    return Backbone, OriginalLlava


# ------------------------------------------------------------------ tokenizer and images

class _SentencePieceBackend:
    """tokenizer.model read with `sentencepiece`, encoding as transformers 4.3x's slow
    LlamaTokenizer does for text without special tokens (the prompt chunks): BOS, then the
    pieces of the text with SentencePiece's own dummy prefix (legacy and legacy=False agree there)."""

    def __init__(self, path: Path, bos_id: int | None, add_bos: bool):
        try:
            import sentencepiece as spm
        except ImportError:
            raise ExtractError(
                f"{path.parent}: the tokenizer is tokenizer.model (sentencepiece) only; install sentencepiece "
                f"(pip install 'matprobe[llava]') or add the tokenizer.json a fast tokenizer writes") from None
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.bos = self.sp.bos_id() if bos_id is None else bos_id
        self.add_bos = add_bos

    def encode_with_offsets(self, text: str, add_special_tokens: bool = True):
        ids = self.sp.encode(text)
        offs = self._offsets(text, ids)
        if add_special_tokens and self.add_bos:
            return [self.bos, *ids], [(0, 0), *offs]
        return ids, offs

    def _offsets(self, text: str, ids: list[int]) -> list[tuple[int, int]]:
        """Character span of each piece in `text` (for the question pool), without protobuf:
        the pieces spell "▁" + text with spaces as "▁" (Llama's identity normaliser, dummy
        prefix); byte-fallback pieces are gathered into whole characters. When they do not
        (another normaliser), every span is empty and the question pool says so."""
        out, pos, pending, start, spelt = [], 0, b"", 0, []
        for i in ids:
            piece = self.sp.id_to_piece(i)
            if self.sp.is_byte(i):
                if not pending:
                    start = pos
                pending += bytes([int(piece[3:5], 16)])
                out.append((start, pos))
                try:
                    char = pending.decode("utf-8")
                except UnicodeDecodeError:
                    continue  # a character's first bytes: spans set when it is complete
                spelt.append(char)
                pos += len(char)
                for k in range(len(out) - len(pending), len(out)):
                    out[k] = (start, pos)
                pending = b""
            else:
                out.append((pos, pos + len(piece)))
                spelt.append(piece)
                pos += len(piece)
        if "".join(spelt) != "\u2581" + text.replace(" ", "\u2581"):
            return [(0, 0)] * len(ids)
        return [(max(a - 1, 0), max(b - 1, 0)) for a, b in out]  # drop the dummy prefix

    def token_to_id(self, token: str):
        i = self.sp.piece_to_id(token)
        return None if i == self.sp.unk_id() and token != self.sp.id_to_piece(i) else i

    def vocab_size(self) -> int:
        return self.sp.get_piece_size()


class _TokenizersBackend:
    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))

    def encode_with_offsets(self, text: str, add_special_tokens: bool = True):
        enc = self.tok.encode(text, add_special_tokens=add_special_tokens)
        return list(enc.ids), list(enc.offsets)

    def token_to_id(self, token: str):
        return self.tok.token_to_id(token)

    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)


class ChunkTokenizer:
    """The checkpoint's tokenizer, used as LLaVA's `tokenizer_image_token` uses it: each
    chunk between `<image>` placeholders tokenised on its own, with BOS, and the BOS of
    every chunk after the first dropped.

    tokenizer.json (the fast tokenizer) is read with `tokenizers` as saved; a folder with only
    tokenizer.model (published LLaVA-1.5) with `sentencepiece`. Not transformers 5's Llama
    tokenizer class: it re-normalises leading spaces differently from the slow sentencepiece
    tokenizer LLaVA uses (" ASSISTANT:" loses its leading "▁")."""

    def __init__(self, folder: Path):
        self.folder = folder
        cfg_path = folder / "tokenizer_config.json"
        self.config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}

        def name(key):
            tok = self.config.get(key)
            return tok.get("content") if isinstance(tok, dict) else tok

        if (folder / "tokenizer.json").is_file():
            self.backend = _TokenizersBackend(folder / "tokenizer.json")
            self.kind = "tokenizers:tokenizer.json"
        elif (folder / "tokenizer.model").is_file():
            bos = name("bos_token")
            self.backend = _SentencePieceBackend(folder / "tokenizer.model", None, self.config.get("add_bos_token", True))
            if bos:
                self.backend.bos = self.backend.token_to_id(bos)
            self.kind = "sentencepiece:tokenizer.model"
        else:
            raise ExtractError(f"{folder}: no tokenizer (tokenizer.json or tokenizer.model); pass the checkpoint "
                               f"folder that holds it (for a LoRA or projector run: --base)")

        def token_id(key, default=None):
            tok = name(key)
            found = self.backend.token_to_id(tok) if tok else None
            return default if found is None else found

        self.bos_token_id = token_id("bos_token")
        self.eos_token_id = token_id("eos_token")
        self.pad_token_id = token_id("pad_token", None)
        if self.pad_token_id is None:  # LLaVA pads with unk; any id works (masked out)
            self.pad_token_id = token_id("unk_token", 0)

    def __len__(self) -> int:
        return self.backend.vocab_size()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode_with_offsets(text, add_special_tokens)[0]

    def image_token_ids(self, prompt: str, span: tuple[int, int] | None = None):
        """(ids, question mask) for `prompt` with one IMAGE_TOKEN_INDEX per `<image>`."""
        from matprobe.extract.templates import IMAGE_PLACEHOLDER

        ids: list[int] = []
        mask: list[bool] = []
        start = 0
        chunks = prompt.split(IMAGE_PLACEHOLDER)
        for c, chunk in enumerate(chunks):
            toks, offs = self.backend.encode_with_offsets(chunk)
            drop = 1 if toks and toks[0] == self.bos_token_id else 0
            if c == 0:
                ids += toks[:drop]
                mask += [False] * drop
            toks, offs = toks[drop:], offs[drop:]
            for t, (a, b) in zip(toks, offs):
                ids.append(t)
                inside = span is not None and b > a and start + b > span[0] and start + a < span[1]
                mask.append(bool(inside))
            if c < len(chunks) - 1:
                ids.append(IMAGE_TOKEN_INDEX)
                mask.append(False)
            start += len(chunk) + len(IMAGE_PLACEHOLDER)
        return ids, mask


class ImagePreprocessor:
    """The CLIP image processor of the tower (preprocessor_config.json) as transformers 4.3x
    applies it, after LLaVA's `process_images` (`pad` / `square`)."""

    def __init__(self, tower_dir: Path, aspect: str):
        path = tower_dir / "preprocessor_config.json"
        if not path.is_file():
            raise ExtractError(f"vision tower {tower_dir}: no preprocessor_config.json; pass the complete "
                               f"CLIP folder with --vision-tower")
        cfg = json.loads(path.read_text())
        self.config = cfg
        size = cfg.get("size", 224)
        self.shortest_edge = size["shortest_edge"] if isinstance(size, dict) else int(size)
        crop = cfg.get("crop_size", self.shortest_edge)
        self.crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (int(crop), int(crop))
        self.mean = np.asarray(cfg.get("image_mean", [0.48145466, 0.4578275, 0.40821073]), dtype=np.float32)
        self.std = np.asarray(cfg.get("image_std", [0.26862954, 0.26130258, 0.27577711]), dtype=np.float32)
        self.resample = int(cfg.get("resample", 3))
        self.do_resize = cfg.get("do_resize", True)
        self.do_crop = cfg.get("do_center_crop", True)
        self.rescale = float(cfg.get("rescale_factor", 1 / 255))
        if aspect == "anyres":
            raise ExtractError("image_aspect_ratio 'anyres' (LLaVA-1.6) is not supported for original-format "
                               "checkpoints yet; use a llava-hf llava_next checkpoint")
        # process_images: 'pad' pads, 'anyres' tiles, anything else is the processor alone
        self.aspect = "pad" if aspect == "pad" else "square"
        # LLaVA: tuple(int(x*255) for x in image_mean), truncated, not rounded
        self.pad_colour = tuple(int(x * 255) for x in cfg.get("image_mean", self.mean.tolist()))

    def describe(self) -> dict:
        return {"image_aspect_ratio": self.aspect, "pad_colour": list(self.pad_colour),
                "shortest_edge": self.shortest_edge, "crop": list(self.crop), "resample": self.resample,
                "mean": self.mean.tolist(), "std": self.std.tolist(),
                "definition": ("pad: centred on a square of pad_colour (int(mean*255)); resize shortest edge "
                               "(PIL, resample), centre crop, x rescale, normalise")}

    def __call__(self, image) -> np.ndarray:
        from PIL import Image

        image = image.convert("RGB")
        if self.aspect == "pad":
            w, h = image.size
            if w != h:
                side = max(w, h)
                square = Image.new(image.mode, (side, side), self.pad_colour)
                square.paste(image, ((side - w) // 2, (side - h) // 2))
                image = square
        if self.do_resize:
            w, h = image.size
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
            if size != image.size:
                image = image.resize(size, resample=self.resample)
        arr = np.asarray(image)
        if self.do_crop:
            ch, cw = self.crop
            h, w = arr.shape[:2]
            top, left = (h - ch) // 2, (w - cw) // 2
            arr = arr[max(top, 0):max(top, 0) + ch, max(left, 0):max(left, 0) + cw]
        x = (arr.astype(np.float64) * self.rescale).astype(np.float32)
        x = (x - self.mean) / self.std
        return x.transpose(2, 0, 1).astype(np.float32)


class OriginalProcessor:
    """Prompt + image inputs for an original-format checkpoint (the runner's `build_batch`)."""

    def __init__(self, tokenizer: ChunkTokenizer, images: ImagePreprocessor, template, n_image_tokens: int,
                 max_length: int | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length  # config tokenizer_model_max_length: the original truncates there
        self.image_processor = images
        self.template = template
        self.n_image_tokens = n_image_tokens
        self.chat_template = None

    def render(self, question, options, preamble=None) -> tuple[str, tuple[int, int]]:
        from matprobe.extract.templates import mcq_message

        message, (qs, qe) = mcq_message(question, options, preamble)
        prompt = self.template.render(message)
        at = prompt.find(message)
        if at < 0:
            raise ExtractError(f"template {self.template.name}: the prompt does not contain the message verbatim")
        return prompt, (at + qs, at + qe)

    def build_batch(self, questions, options_list, images, preambles=None):
        import torch

        from matprobe.extract.tokens import PromptBatch

        preambles = list(preambles) if preambles is not None else [None] * len(questions)
        rows, masks, prompts, pixels = [], [], [], []
        for position, (q, opts, ims, pre) in enumerate(zip(questions, options_list, images, preambles)):
            ims = list(ims) if isinstance(ims, (list, tuple)) else [ims]
            if len(ims) != 1:
                raise ItemRefused(f"question {q[:40]!r}: {len(ims)} images, but original-format LLaVA takes one "
                                  f"image per prompt; render segmentation items as a grid (extract --rendering "
                                  f"grid, [extract] rendering = \"grid\" in a pipeline file)", position)
            prompt, span = self.render(q, opts, pre)
            ids, mask = self.tokenizer.image_token_ids(prompt, span)
            if ids.count(IMAGE_TOKEN_INDEX) != 1:
                raise ExtractError(f"the prompt holds {ids.count(IMAGE_TOKEN_INDEX)} '<image>' placeholders; "
                                   f"the question text must not contain '<image>'")
            at = ids.index(IMAGE_TOKEN_INDEX)
            n = self.n_image_tokens
            ids = ids[:at] + [IMAGE_TOKEN_INDEX] * n + ids[at + 1:]
            mask = mask[:at] + [False] * n + mask[at + 1:]
            if self.max_length is not None and len(ids) > self.max_length:
                raise ItemRefused(f"question {q[:40]!r}...: {len(ids)} tokens with the image, more than the "
                                  f"checkpoint's tokenizer_model_max_length {self.max_length}, where LLaVA's "
                                  f"code cuts the sequence (and the answer position with it); shorten the item",
                                  position)
            rows.append(ids)
            masks.append(mask)
            prompts.append(prompt)
            pixels.append(self.image_processor(ims[0]))
        T = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), T), dtype=torch.long)
        question = torch.zeros((len(rows), T), dtype=torch.bool)
        for b, (r, m) in enumerate(zip(rows, masks)):  # left padding
            input_ids[b, T - len(r):] = torch.tensor(r)
            attention[b, T - len(r):] = 1
            question[b, T - len(r):] = torch.tensor(m)
        inputs = {"input_ids": input_ids, "attention_mask": attention,
                  "pixel_values": torch.from_numpy(np.stack(pixels))}
        return PromptBatch(inputs=inputs, question_mask=question, prompts=prompts, n_images=[1] * len(rows))


# ------------------------------------------------------------------ loading

CLI_OPTIONS = {"vision_tower": "--vision-tower", "base": "--base"}  # how a caller names each input


def _hub_tower_problem(cfg: dict, options=CLI_OPTIONS) -> str | None:
    """Why the config's own tower cannot be used when no folder is passed (a hub id, or another
    machine's path), with the fix; None where it names a folder here."""
    named = cfg.get("mm_vision_tower") or cfg.get("vision_tower")
    if named and Path(named).is_dir():
        return None
    return (f"its vision tower {named!r} is not a local folder here; pass {options['vision_tower']} DIR (a local "
            f"copy of {named})")


def resolve_tower(cfg: dict, run_dir: Path, vision_tower: str | Path | None, options=CLI_OPTIONS) -> Path:
    """The CLIP folder: `vision_tower`, else the config's own path where it exists here.
    options: how the caller's user passes the folder (the CLI's flags, or a pipeline file's keys)."""
    named = cfg.get("mm_vision_tower") or cfg.get("vision_tower")
    how = options["vision_tower"]
    if vision_tower is not None:
        tower = Path(vision_tower)
        if not (tower / "config.json").is_file():
            raise ExtractError(f"{how} {tower}: no config.json there; pass the folder of the CLIP "
                               f"model {named!r} (e.g. a local copy of the hub repository)")
        return tower
    problem = _hub_tower_problem(cfg, options)
    if problem is None:
        return Path(named)
    raise ExtractError(f"checkpoint {run_dir}: {problem}")


def inputs_missing(run_dir: Path, vision_tower=None, options=CLI_OPTIONS) -> list[str]:
    """What a run lacks besides its base (said together with a missing base): its tower."""
    cfg = read_config(run_dir) or {}
    problem = None if vision_tower is not None else _hub_tower_problem(cfg, options)
    return [f"and {problem}"] if problem else []


def check_run(run_dir: Path, base_dir: Path | None, vision_tower=None, options=CLI_OPTIONS):
    """`load_original`'s refusals that read no weights (layout against the base, options not
    supported, the tower's folder): run before any loading, by `extract`'s and `run`'s
    preflight too. Returns (config, layout, language family, tower folder)."""
    cfg = read_config(run_dir)
    layout = layout_of(run_dir)
    if layout == "full" and cfg is not None and not _weight_files(run_dir):
        _refuse_projector_elsewhere(run_dir, options)
    lacks = [f for f, needed in (("config.json", cfg is None),
                                 ("non_lora_trainables.bin", layout == "lora"
                                  and not (run_dir / "non_lora_trainables.bin").is_file())) if needed]
    if lacks:
        # LLaVA's builder reads both from the run folder (it would fetch the second from the hub):
        # train.py writes them there when training ends; a trainer's checkpoint-N folder has neither
        raise ExtractError(f"checkpoint {run_dir}: no {' and no '.join(lacks)}; LLaVA's train.py writes "
                           f"{'them' if len(lacks) > 1 else 'it'} into the run's top folder when training ends "
                           "(a checkpoint-N folder holds the adapter only): pass that folder, or copy "
                           f"{' and '.join(lacks)} from it into {run_dir}")
    if layout != "full" and base_dir is None:  # with the tower, when that is missing too: one line
        raise ExtractError("; ".join([f"checkpoint {run_dir}: a LLaVA {layout} run, not a whole model; pass the "
                                      f"language model it was trained on with {options['base']} DIR (LLaVA's "
                                      f"--model-base)", *inputs_missing(run_dir, vision_tower, options)]))
    if layout == "full" and base_dir is not None:
        raise ExtractError(f"checkpoint {run_dir} is a whole model; drop {options['base']}")
    family = language_family(cfg)
    if cfg.get("mm_use_im_start_end"):
        raise ExtractError(f"checkpoint {run_dir}: mm_use_im_start_end checkpoints are not supported")
    if cfg.get("s2"):
        raise ExtractError(f"checkpoint {run_dir}: an S2 (multi-scale) vision tower (s2: true in config.json) is "
                           "not supported")
    if cfg.get("mm_patch_merge_type", "flat") != "flat":
        raise ExtractError(f"checkpoint {run_dir}: mm_patch_merge_type {cfg.get('mm_patch_merge_type')!r} "
                           f"(LLaVA-1.6) is not supported yet")
    return cfg, layout, family, resolve_tower(cfg, run_dir, vision_tower, options)


def _refuse_projector_elsewhere(run_dir: Path, options) -> None:
    """A run folder with a config but no weights at its top, whose projector a pretraining run saved
    in a checkpoint: LLaVA's trainer writes checkpoint-N/{config.json, mm_projector.bin}, and its
    final save of a checkpoint-N output mm_projector/checkpoint-N.bin. Said with the folder or file
    to give; nothing found: the caller's own message (no weights)."""
    steps = sorted(run_dir.glob("checkpoint-*/mm_projector.bin"), key=lambda f: _step(f.parent.name))
    if steps:
        raise ExtractError(f"checkpoint {run_dir}: no weights at its top; its projector is in "
                           f"{steps[-1].parent.name}/mm_projector.bin (a pretraining run's checkpoint): pass "
                           f"{steps[-1].parent} as the checkpoint, with {options['base']} DIR")
    saved = sorted(run_dir.glob("mm_projector/*.bin"), key=lambda f: _step(f.stem))
    if saved:
        raise ExtractError(f"checkpoint {run_dir}: no weights at its top; its projector is "
                           f"mm_projector/{saved[-1].name}, where LLaVA saves a checkpoint's projector: copy it to "
                           f"{run_dir / 'mm_projector.bin'} and pass {run_dir} with {options['base']} DIR")


def _step(name: str) -> int:
    """checkpoint-1000 -> 1000 (the trainer's step), for picking the last; 0 for another name."""
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else 0


def check_tower_weights(run_dir: Path, vision_tower=None, options=CLI_OPTIONS) -> Path:
    """The tower `load_original` would load, checked as `load_tower` checks it (config, width,
    every weight in either key layout, shapes) without reading the tensors; returns its folder."""
    cfg = read_config(run_dir) or {}
    tower_dir = resolve_tower(cfg, run_dir, vision_tower, options)
    check_tower(tower_dir, cfg.get("mm_hidden_size"))
    return tower_dir


def _lora_merge(state: dict, adapter_dir: Path) -> tuple[dict, dict]:
    """W += scaling · B A for every LoRA pair (fp32), as peft's merge_and_unload does."""

    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    except json.JSONDecodeError as exc:
        raise ExtractError(f"{adapter_dir / 'adapter_config.json'}: not valid JSON ({exc}); copy it again from the "
                           "run's folder") from None
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ExtractError(f"adapter {adapter_dir}: peft_type {cfg.get('peft_type')!r}; only LoRA is supported")
    st, binary = adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_model.bin"
    path = st if st.is_file() else binary
    if not path.is_file():
        raise ExtractError(f"adapter {adapter_dir}: no adapter_model.safetensors or adapter_model.bin; pass the "
                           f"complete LoRA run folder")
    raw = safe_load(path)
    pairs: dict[str, dict] = {}
    for key, value in raw.items():
        k = key[len("base_model.model."):] if key.startswith("base_model.model.") else key
        m = re.fullmatch(r"(.+)\.(lora_A|lora_B)(?:\.default)?\.weight", k)
        if not m:
            raise ExtractError(f"adapter {path}: key {key!r} is not a LoRA A/B weight; only plain LoRA adapters "
                               f"are supported")
        pairs.setdefault(m.group(1), {})[m.group(2)] = value
    r, alpha = cfg.get("r", 8), cfg.get("lora_alpha", 8)
    rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    if cfg.get("fan_in_fan_out"):
        raise ExtractError(f"adapter {adapter_dir}: fan_in_fan_out adapters are not supported")
    for module, ab in sorted(pairs.items()):
        target = module + ".weight"
        if set(ab) != {"lora_A", "lora_B"}:
            raise ExtractError(f"adapter {path}: {module} lacks {({'lora_A', 'lora_B'} - set(ab)).pop()}; re-save it")
        if target not in state:
            raise ExtractError(f"adapter {path}: {module} is no module of the base model; pass the base it was "
                               f"trained on with --base")
        rr = next((v for p, v in rank_pattern.items() if module.endswith(p)), r)
        aa = next((v for p, v in alpha_pattern.items() if module.endswith(p)), alpha)
        scaling = aa / (rr ** 0.5) if cfg.get("use_rslora") else aa / rr
        W = state[target].float()
        delta = ab["lora_B"].float() @ ab["lora_A"].float()
        if delta.shape != W.shape:
            raise ExtractError(f"adapter {path}: {module} has shape {tuple(delta.shape)}, the base "
                               f"{tuple(W.shape)}; pass the base it was trained on with --base")
        state[target] = W + scaling * delta
    info = {"adapter_layout": f"llava-lora ({path.name})", "adapter_keys": len(raw),
            "adapter_r": r, "adapter_alpha": alpha}
    return state, info


def _non_lora(run_dir: Path) -> dict:
    """non_lora_trainables.bin with LLaVA's prefixes removed (builder.py)."""
    path = run_dir / "non_lora_trainables.bin"
    if not path.is_file():
        return {}
    raw = safe_load(path)
    out = {(k[len("base_model."):] if k.startswith("base_model.") else k): v for k, v in raw.items()}
    if any(k.startswith("model.model.") for k in out):
        out = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in out.items()}
    return out


def _missing_fix(run_dir: Path, layout: str, projector: bool) -> str:
    """The fix for weights missing from a run's pieces: where that layout keeps its projector."""
    if not projector:
        return "download every shard"
    if layout == "lora":  # check_run refused a run without the file
        return (f"{run_dir / 'non_lora_trainables.bin'} holds no mm_projector weights; pass the "
                "non_lora_trainables.bin this run's training wrote")
    if layout == "projector-only":
        return f"{run_dir / 'mm_projector.bin'} lacks them; pass the mm_projector.bin this run's training wrote"
    return "a run trained without a projector needs its mm_projector.bin"


def _check_state(state: dict, target: dict, run_dir: Path, base_dir: Path | None, layout: str, family: str,
                 cfg: dict, own_keys: set) -> None:
    """Every weight the model needs, no other, each of its shape; refused naming where the weight
    came from: the run, or the --base it was put on (whose mismatch is the base's, not the run's)."""
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    kind = cfg.get("mm_projector_type", "linear")
    if any("mm_projector" in k for k in missing) and any("mm_projector" in k for k in unexpected):
        have = [k for k in unexpected if "mm_projector" in k]
        raise ExtractError(f"checkpoint {run_dir}: config.json says mm_projector_type {kind!r}, but the projector "
                           f"weights are another type's (they hold {', '.join(have[:2])}, the config's type "
                           f"{', '.join(k for k in missing if 'mm_projector' in k)}); set mm_projector_type to the "
                           "type the run trained (linear: weight and bias; mlp2x_gelu: layers 0 and 2)")
    base_said = (f"--base {base_dir}: " if base_dir is not None else "")
    if missing:
        from_base = base_dir is not None and not any("mm_projector" in m for m in missing)
        raise ExtractError((f"{base_said}{len(missing)} weight(s) the run's config.json needs are missing, first "
                            f"{missing[0]!r}; pass the language model the run at {run_dir} was trained on"
                            if from_base else
                            f"checkpoint {run_dir}: {len(missing)} weight(s) missing, first {missing[0]!r}; "
                            + _missing_fix(run_dir, layout, any("mm_projector" in m for m in missing))))
    if unexpected:
        raise ExtractError(f"checkpoint {run_dir}: {len(unexpected)} weight(s) that a LLaVA "
                           f"{family} model does not have, first {unexpected[0]!r}; is it another architecture?")
    for k, v in state.items():
        if tuple(v.shape) != tuple(target[k].shape):
            if base_dir is not None and k not in own_keys:
                raise ExtractError(f"--base {base_dir}: {k} has shape {tuple(v.shape)}, the config.json of the run "
                                   f"at {run_dir} says {tuple(target[k].shape)}; pass the language model that run "
                                   "was trained on")
            raise ExtractError(f"checkpoint {run_dir}: {k} has shape {tuple(v.shape)}, the config says "
                               f"{tuple(target[k].shape)}; the config and weights disagree")


def _rebuild_meta_buffers(lm, text_config) -> None:
    """Non-persistent buffers (the rotary inverse frequencies) are not in checkpoints: after a
    meta-device build, recompute the modules that hold them; nothing may stay on meta."""
    for name, module in list(lm.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            if not hasattr(module, "inv_freq"):
                raise ExtractError(f"{type(lm).__name__}.{name}: a buffer missing from the checkpoint; this "
                                   f"transformers version is not supported for original LLaVA checkpoints")
            fresh = type(module)(config=text_config)
            parent = lm.get_submodule(name.rsplit(".", 1)[0]) if "." in name else lm
            setattr(parent, name.rsplit(".", 1)[-1], fresh)
    left = [n for n, t in [*lm.named_parameters(), *lm.named_buffers()] if t.is_meta]
    if left:
        raise ExtractError(f"{left[0]}: not filled from the checkpoint ({len(left)} tensors); re-download it")


VISION_PREFIX = "vision_model."  # a whole CLIPModel's (and older CLIPVisionModel saves') vision weights


def weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a folder's weights without reading the tensors: safetensors headers, and
    `.bin` files memory-mapped (`torch.load(mmap=True, weights_only=True)`; a file in the old
    non-zip format is read whole, still with weights_only)."""
    import torch

    from matprobe.provenance import read_safetensors_header

    files = _weight_files(folder)
    if not files:
        raise ExtractError(f"{folder}: no weights (pytorch_model*.bin or model*.safetensors); pass the "
                           f"checkpoint folder")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        if f.suffix == ".safetensors":
            header, _ = read_safetensors_header(f)
            shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
            continue
        try:
            state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # not a zip archive (mmap cannot map it), or unreadable: the safe loader's way
            state = safe_load(f)
        if not isinstance(state, dict):
            state = safe_load(f)  # its own message: not a dict of tensors
        shapes.update({k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)})
    return shapes


def tower_names(saved: list[str], wanted: set[str]) -> dict[str, str]:
    """{name in the file: name in the model} for a CLIP vision tower in either key layout: a whole
    CLIPModel (`vision_model.*` beside `text_model.*`, as published) or a CLIPVisionModel saved
    before transformers 5 (`vision_model.*`), or one saved by transformers 5 (no prefix). `wanted`:
    the model's own names, with or without the prefix (transformers versions differ)."""
    nested = any(k.startswith(VISION_PREFIX) for k in wanted)
    prefixed = any(k.startswith(VISION_PREFIX) for k in saved)
    out = {}
    for key in saved:
        if key.endswith("position_ids"):  # a buffer some versions saved; rebuilt by the model
            continue
        if prefixed:
            if not key.startswith(VISION_PREFIX):
                continue  # text_model.*, logit_scale, the projections: not the tower
            plain = key[len(VISION_PREFIX):]
        else:
            plain = key
        out[key] = VISION_PREFIX + plain if nested else plain
    return out


def _tower_model(tower_dir: Path, mm_hidden_size: int | None, meta: bool = False):
    """An empty CLIPVisionModel of the tower's config (on the meta device: shapes only)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    try:
        vcfg = CLIPVisionConfig.from_pretrained(tower_dir)
    except (OSError, ValueError) as exc:
        raise ExtractError(f"vision tower {tower_dir}: not a CLIP config ({str(exc)[:200]}); pass the CLIP "
                           f"folder with --vision-tower") from None
    if mm_hidden_size is not None and vcfg.hidden_size != mm_hidden_size:
        raise ExtractError(f"vision tower {tower_dir}: hidden size {vcfg.hidden_size}, the checkpoint's "
                           f"projector takes mm_hidden_size {mm_hidden_size}; pass the tower it was trained "
                           f"with (--vision-tower)")
    if meta:
        with torch.device("meta"):
            return CLIPVisionModel(vcfg)
    return CLIPVisionModel(vcfg)


def _match_tower(tower_dir: Path, want: dict[str, tuple], saved: dict[str, tuple]) -> dict[str, str]:
    """`tower_names` of the file's keys, refused unless every weight of the model is there with its
    shape; {name in the file: name in the model}."""
    names = tower_names(list(saved), set(want))
    have = {model_key: file_key for file_key, model_key in names.items()}
    missing = sorted(set(want) - set(have))
    if missing:
        none = "" if have else (" (its weights are neither a CLIPModel's vision_model.* keys nor a "
                                "CLIPVisionModel's)")
        raise ExtractError(f"vision tower {tower_dir}: {len(missing)} of its {len(want)} weight(s) missing, "
                           f"first {missing[0]!r}{none}; pass a complete CLIP checkpoint with --vision-tower")
    bad = [k for k in want if tuple(want[k]) != tuple(saved[have[k]])]
    if bad:
        raise ExtractError(f"vision tower {tower_dir}: {bad[0]} has shape {tuple(saved[have[bad[0]]])}, its "
                           f"config says {tuple(want[bad[0]])}; re-download the tower")
    return {have[k]: k for k in want}


def check_tower(tower_dir: Path, mm_hidden_size: int | None) -> None:
    """`load_tower`'s refusals (config, width, every weight in either key layout, shapes) from the
    config and the weights' key names and shapes, without reading the tensors (`init`)."""
    model = _tower_model(tower_dir, mm_hidden_size, meta=True)
    _match_tower(tower_dir, {k: tuple(v.shape) for k, v in model.state_dict().items()}, weight_shapes(tower_dir))


def load_tower(tower_dir: Path, mm_hidden_size: int, weights: dict | None = None, run_dir: Path | None = None):
    """The CLIP vision model in `tower_dir` (a CLIPVisionModel, saved with or without the
    `vision_model.` prefix, or a whole CLIP checkpoint: only its `vision_model.*` weights are
    used), read with the same safe loader, every weight required (`check_tower`'s checks).
    `weights`: the tower's weights from the checkpoint `run_dir` instead (a run that trained its
    tower), on the folder's config; every weight required of them too."""
    import torch

    model = _tower_model(tower_dir, mm_hidden_size)
    want = model.state_dict()
    state = read_weights(tower_dir) if weights is None else weights
    where = tower_dir if weights is None else Path(f"{run_dir} (its own model.vision_tower.* weights)")
    names = _match_tower(where, {k: tuple(v.shape) for k, v in want.items()},
                         {k: tuple(v.shape) for k, v in state.items()})
    with torch.no_grad():
        model.load_state_dict({model_key: state[file_key].float() for file_key, model_key in names.items()})
    return model.float().eval()


def load_original(run_dir: Path, base_dir: Path | None, *, vision_tower=None, dtype: str = "fp32",
                  device: str = "cpu", template: str | None = None, attn_implementation: str = "sdpa"):
    """(model, processor, info) for an original-format checkpoint (module doc)."""
    import hashlib

    import torch

    from matprobe.extract.templates import get_template
    from matprobe.provenance import weights_fingerprint

    Backbone, OriginalLlava = _modules()
    cfg, layout, family, tower_dir = check_run(run_dir, base_dir, vision_tower)
    torch_dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[dtype])

    # Language model config from the run's config.json (LLaVA loads the base with it).
    if family == "mistral":
        from transformers import MistralConfig as TextConfig
        from transformers import MistralModel as TextModel
    else:
        from transformers import LlamaConfig as TextConfig
        from transformers import LlamaModel as TextModel
    keep = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures", "auto_map", "torch_dtype",
                                                      "transformers_version", "_name_or_path")}
    text_config = TextConfig(**keep)
    text_config._attn_implementation = attn_implementation

    # Weights: the run's (full) or the base's plus the run's pieces.
    state = read_weights(base_dir if base_dir is not None else run_dir)
    adapter_info: dict = {}
    own_keys: set = set()  # the weights the run's own files give (a base gives the rest)
    if layout == "lora":
        state = {k: v.float() for k, v in state.items()}
        extra = _non_lora(run_dir)
        state.update(extra)
        state, adapter_info = _lora_merge(state, run_dir)
        adapter_info["non_lora_keys"] = len(extra)
        own_keys = set(extra)
    elif layout == "projector-only":
        projector_state = safe_load(run_dir / "mm_projector.bin")
        state.update(projector_state)
        own_keys = set(projector_state)
    # The run's own tower weights count only when its training unfroze the tower: LLaVA then builds
    # the tower before `from_pretrained` fills the model (clip_encoder.py), so they replace CLIP's;
    # otherwise the tower is built after loading, from CLIP, and they are ignored.
    tower_keys = [k for k in state if k.startswith(LLAVA_VISION_PREFIX)]
    own_prefix = LLAVA_VISION_PREFIX + "vision_tower."
    own_tower = ({k[len(own_prefix):]: state[k] for k in tower_keys if k.startswith(own_prefix)}
                 if cfg.get("unfreeze_mm_vision_tower") else {})
    rotary = [k for k in state if k.endswith("rotary_emb.inv_freq")]
    ignored = [*([] if own_tower else tower_keys), *rotary]
    for k in dict.fromkeys([*tower_keys, *rotary]):  # the tower's, used or not, load apart from the decoder
        del state[k]

    # Built on the meta device and filled by assignment: a 7B decoder is never randomly
    # initialised nor held twice (the shards' tensors become the parameters).
    with torch.device("meta"):
        lm = TextModel(text_config)
    projector = _projector(cfg.get("mm_projector_type", "linear"), cfg["mm_hidden_size"], cfg["hidden_size"])
    lm_head = torch.nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
    target = {**{f"model.{k}": v for k, v in lm.state_dict().items()},
              **{f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()},
              "lm_head.weight": lm_head.weight}
    _check_state(state, target, run_dir, base_dir, layout, family, cfg, own_keys)
    with torch.no_grad():
        lm.load_state_dict({k[len("model."):]: state.pop(k).to(torch_dtype) for k in list(target)
                            if k.startswith("model.") and not k.startswith("model.mm_projector.")}, assign=True)
        _rebuild_meta_buffers(lm, text_config)
        projector.load_state_dict({k[len("model.mm_projector."):]: state[k].float() for k in target
                                   if k.startswith("model.mm_projector.")})
        lm_head.weight.copy_(state["lm_head.weight"].float())
    tower = load_tower(tower_dir, cfg["mm_hidden_size"], own_tower or None, run_dir)
    select_feature = cfg.get("mm_vision_select_feature", "patch")
    if select_feature not in ("patch", "cls_patch"):
        raise ExtractError(f"mm_vision_select_feature {select_feature!r} is not supported (patch, cls_patch)")
    # Cast module by module: the decoder is already in torch_dtype, and its rotary frequencies stay
    # fp32 as transformers keeps them under from_pretrained(torch_dtype=...), which LLaVA uses.
    tower, projector, lm_head = tower.to(torch_dtype), projector.to(torch_dtype), lm_head.to(torch_dtype)
    backbone = Backbone(lm, tower, projector, int(cfg.get("mm_vision_select_layer", -2)), select_feature)
    model = OriginalLlava(text_config, backbone, lm_head)
    model.eval()

    tok_dir = base_dir if base_dir is not None else run_dir
    try:
        tokenizer = ChunkTokenizer(tok_dir)
    except json.JSONDecodeError as exc:
        raise ExtractError(f"{tok_dir}: a tokenizer file (tokenizer_config.json, tokenizer.json or "
                           f"special_tokens_map.json) is not valid JSON ({exc}); copy the tokenizer files again "
                           "from where the checkpoint came from") from None
    name = template or ("mistral_instruct" if family == "mistral" else "llava_v1")
    if name == "chat":
        raise ExtractError("--template chat: original-format LLaVA checkpoints have no chat template; use "
                           "llava_v1 (LLaVA-1.5's evaluation), vicuna_v1, mistral_instruct, plain or a file")
    conv = get_template(name)
    images = ImagePreprocessor(tower_dir, cfg.get("image_aspect_ratio"))
    n_patches = (tower.config.image_size // tower.config.patch_size) ** 2 + (select_feature == "cls_patch")
    processor = OriginalProcessor(tokenizer, images, conv, n_patches, cfg.get("tokenizer_model_max_length"))

    tower_fp = weights_fingerprint(tower_dir)
    info_tower = (f"the checkpoint's own ({len(own_tower)} tensors; unfreeze_mm_vision_tower)" if own_tower
                  else "the vision tower folder's")
    pre_sha = hashlib.sha256((tower_dir / "preprocessor_config.json").read_bytes()).hexdigest()
    info = {
        "format": FORMAT, "layout": layout, "language_family": family, "ignored_keys": len(ignored),
        "vision_tower": str(tower_dir.resolve()), "vision_tower_named": cfg.get("mm_vision_tower"),
        "vision_tower_fingerprint": tower_fp, "image_processor": "llava-original " + images.aspect,
        "vision_tower_weights": info_tower,
        "image_processor_backend": "pil", "processor_fallback": False,
        "image_size": {"shortest_edge": images.shortest_edge}, "max_pixels": None,
        "tokenizer": tokenizer.kind, **adapter_info,
        "provenance_extra": {
            "checkpoint_format": f"{FORMAT} ({layout}, {family})",
            "prompt_template": conv.describe(),
            "image_preprocessing": {**images.describe(), "preprocessor_config_sha256": pre_sha},
            "vision_tower_fingerprint": tower_fp,
            "vision_tower_weights": info_tower,
            "answer_position": "last prompt token (the generation point after the assistant role)",
        },
    }
    return model, processor, info
