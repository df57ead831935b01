"""`matprobe extract`: pooled hidden states (and the model's answers) into an HDF5 store.

Flow: load the dataset → check every image exists → load processor + model (+ adapter) →
open or create the store (resume: only rows not marked done are computed; a store made
with different settings is refused) → batches: prompt → processor → backbone forward with
pooling hooks (stopping after the deepest layer) → LM head on the last position for the
option letters → append rows. Under torchrun / accelerate each rank writes its own shard,
and rank 0 merges the shards into one virtual store at `out`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matprobe.errors import DataError, ExtractError, StoreError
from matprobe.extract.tokens import PROMPT_TEMPLATE
from matprobe.interrupts import DeferredInterrupts


@dataclass
class ExtractConfig:
    """Everything `matprobe extract` takes (CLI flags map one to one)."""

    ckpt: str | None
    data: str
    out: str
    layers: str | list = "8,16,-1"
    pools: str | list = "last,image,question,mean"
    batch_size: int = 8
    dtype: str = "fp32"
    device: str = "cpu"
    adapter: str | None = None
    base: str | None = None
    max_pixels: int | None = None
    answers: bool | None = None  # None: on when every sample has >= 2 options
    overwrite: bool = False
    image_root: str | None = None
    merge_adapter: bool = True
    attn_implementation: str = "sdpa"
    rendering: str = "multi-image"  # segmentation items: multi-image | grid (extract/prompts.py)
    vision_tower: str | None = None  # original LLaVA: local folder of the tower mm_vision_tower names
    template: str | None = None  # chat (HF default) | llava_v1 | vicuna_v1 | mistral_instruct | plain | FILE
    columns: str | dict | None = None  # {their column: expected name} (matprobe.data.columns)


@dataclass
class ExtractResult:
    out: Path
    n_total: int
    n_computed: int  # rows computed by this run (on this rank)
    n_resumed: int  # rows already done before this run started (on this rank)
    seconds: float
    layers: list[str] = field(default_factory=list)
    pools: list[str] = field(default_factory=list)
    shards: list[Path] = field(default_factory=list)
    accuracy: float | None = None
    # what the user should know about the inputs (image files of more than 8 bits or with
    # transparency: data.images.image_notes)
    notes: list[str] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.n_computed / self.seconds if self.seconds > 0 else float("nan")


def _check_images(samples, source: str) -> list[str]:
    """Every image file present and every mask readable, before any output is created; returns
    the notes on the inputs (files of more than 8 bits per pixel, files with transparency:
    `data.images.image_notes`)."""
    from matprobe.data.images import image_notes, missing_images_error

    if (error := missing_images_error(samples, source)) is not None:
        raise DataError(error)
    _check_masks(samples, source)
    return image_notes(samples)


def _check_masks(samples, source: str) -> None:
    """Every segmentation item's masks, read and checked before any output is created."""
    from matprobe.data.images import load_image
    from matprobe.data.masks import load_item_masks

    for s in samples:
        if s.is_segmentation:
            try:
                load_item_masks(s, load_image(s).size[::-1])
            except DataError as exc:
                raise DataError(f"{source}: {exc}") from None


def segmentation_scores(batch, rendered, pred) -> dict:
    """Pixel intersection and union of each segmentation item's chosen mask with its ground
    truth (data/masks.py); -1 for other items."""
    from matprobe.data.masks import intersection_union

    inter = np.full(len(batch), -1, dtype=np.int64)
    union = np.full(len(batch), -1, dtype=np.int64)
    for b, r in enumerate(rendered):
        if r.masks is not None and pred[b] >= 0:
            inter[b], union[b] = intersection_union(r.masks.candidates[int(pred[b])], r.masks.truth)
    return {"intersection": inter, "union": union}


def build_provenance(loaded, layers, pools, answers: bool, letter_ids, n_options,
                     rendering: str | None = None) -> dict:
    import torch
    import transformers

    info = loaded.info
    prov = {
        "kind": "matprobe.extract",
        "arch": loaded.arch,
        "checkpoint": info["checkpoint"],
        "config_sha256": info["config_sha256"],
        "adapter": info["adapter"],
        "adapter_sha256": info["adapter_sha256"],
        "adapter_merged": info["adapter_merged"],
        "adapter_layout": info.get("adapter_layout"),
        "dtype": info["dtype"],
        "feature_dtype": "float32",
        "device_type": info["device"].split(":")[0],
        "attn_implementation": info["attn_implementation"],
        "num_decoder_layers": loaded.num_layers,
        "layers": list(layers),
        "pools": list(pools),
        "pool_definitions": {
            "last": "last real token",
            "image": "mean over the first image's image_token_id positions (the question image)",
            "question": "mean over question + options text tokens", "mean": "mean over all real tokens",
            "option_images": "mean over image_token_id positions after the first image",
        },
        "prompt_template": PROMPT_TEMPLATE,
        "image_processor": info["image_processor"],
        "image_processor_backend": info["image_processor_backend"],
        "processor_fallback": info["processor_fallback"],
        "image_size": info["image_size"],
        "max_pixels": info["max_pixels"],
        "padding_side": "left",
        "answers": bool(answers),
        "answer_scoring": "lm_head at last real token; letter logit = logsumexp over its spellings; "
                          "softmax over the sample's option letters",
        "option_letter_token_ids": letter_ids,
        "n_options": n_options,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }
    # Own-loader formats (original LLaVA) add format, template, preprocessing and tower fingerprint;
    # a resume with any of them changed is refused by the provenance comparison, which names it.
    prov.update(info.get("provenance_extra") or {})
    if rendering is not None:  # only stores with segmentation items carry it (older stores resume)
        from matprobe.extract.prompts import PREAMBLES, RENDERING_DEFINITIONS

        prov["segmentation_rendering"] = {"name": rendering, "definition": RENDERING_DEFINITIONS[rendering],
                                          "preamble": PREAMBLES[rendering]}
        prov["segmentation_scores"] = ("intersection / union in pixels of the chosen option's mask "
                                       "with the ground truth, at the image's size; cIoU = sum I / sum U")
    return prov


def _open_or_create(path: Path, samples, provenance, feature_dims, n_options, overwrite: bool):
    from matprobe.provenance import check_records_unchanged
    from matprobe.store import EmbeddingStore, StoreUnavailable, make_provenance

    if path.exists() and not overwrite:
        try:
            store = EmbeddingStore.open(path, mode="a")
        except StoreUnavailable:
            raise  # its fix is not --overwrite (a folder in the way, a size limit, a full disk)
        except StoreError as exc:
            raise StoreError(f"{exc}; rerun with --overwrite to start again") from None
        try:
            store.check_provenance(make_provenance(**provenance))
            if list(store.ids) != [s.id for s in samples]:
                from matprobe.extract.preflight import sample_list_difference

                raise StoreError(
                    f"{path}: {sample_list_difference([str(i) for i in store.ids], [s.id for s in samples])} than "
                    f"{samples.source}; use another --out or --overwrite"
                )
            check_records_unchanged(store, samples.frame(), samples.source, update=True)
        except Exception:
            store.close()
            raise
        return store
    return EmbeddingStore.create(path, samples, provenance, feature_dims, n_options, overwrite=True)


# transformers' check in every image-text forward: "Image features and image tokens do not match,
# tokens: 606, features: 614" (llava, llava_next, qwen2(.5)-vl, gemma3, idefics3 in transformers 5)
_MISMATCH = re.compile(r"features and (image )?tokens do not match|tokens and (image )?features do not match", re.I)
_COUNTS = re.compile(r"tokens:?\s*(?:tensor\()?(\d+).*?features:?\s*(?:tensor\()?(\d+)", re.I | re.S)


def _token_feature_mismatch(exc: BaseException) -> tuple[int | None, int | None] | None:
    """(image tokens, image features) when `exc` is transformers' refusal of a prompt whose image
    tokens (placed by the processor) and image features (made by the model) differ in number;
    None for any other error. A count its message does not give is None."""
    text = str(exc)
    if not isinstance(exc, (ValueError, RuntimeError)) or not _MISMATCH.search(text):
        return None
    m = _COUNTS.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def _mismatch_message(counts, folder, batch, tokens_in_prompts: int, n_images: int, settings: str,
                      kept: str) -> str:
    """One line for a checkpoint whose processor expands an image into another number of tokens than
    its model makes features: the folder, the batch's first item, the two counts and the fix."""
    tokens, features = counts
    tokens = tokens_in_prompts if tokens is None else tokens
    first = batch[0]
    item = f"id {first.id!r}" + (f" (image {first.image})" if first.image else "")
    what = f"the processor put {tokens} image tokens in the prompts" + (
        f" and the model made {features} image features" if features is not None else
        ", which is not the number of image features the model made")
    if features is not None and n_images > 0 and features != tokens and (features - tokens) % n_images == 0:
        per = (features - tokens) // n_images
        what += f" ({abs(per)} {'more' if per > 0 else 'fewer'} feature{'s' * (abs(per) != 1)} than tokens per image)"
    items = f"the batch of {len(batch)} items from {item}" if len(batch) > 1 else f"item {item}"
    how = (f"the tokens per image follow these settings, which must agree: {settings}" if settings else
           "the tokens per image follow the processor's settings (e.g. LLaVA-NeXT's num_additional_image_tokens, "
           "vision_feature_select_strategy and patch_size in processor_config.json), which must agree with "
           "config.json")
    from matprobe.extract.checkpoints import PROCESSOR_FILES_TO_COPY

    return (
        f"checkpoint {folder}: its processor files do not match its model: for {items}, {what}; {how}; fix: copy "
        f"the processor files of the model it was fine-tuned from into {folder} ({PROCESSOR_FILES_TO_COPY}), "
        f"or make them agree with its config.json; {kept}"
    )


def _item_named(exc: BaseException, batch) -> str:
    """'item 'it20': ' for the item of `batch` a prompt builder refused (`ItemRefused`), else ''."""
    position = getattr(exc, "position", None)
    return f"item {batch[position].id!r}: " if position is not None else ""


def _kept(store, target: Path, n_total: int) -> str:
    """What a failed extraction leaves in `target`, for its message (see `_discard_if_empty`)."""
    n_done = int(store.done.sum())
    if n_done == 0:
        return f"no row was finished, so {target} is not kept"
    return f"{n_done} of {n_total} rows are finished in {target}"


def _discard_if_empty(store, target: Path) -> None:
    """Remove the store of a failed extraction that has no finished row (its first batch failed):
    nothing of it is worth keeping, and a later run would resume against it (a store made with the
    settings of a failed run). Removed while this process still holds the store's writer lock; a
    store with finished rows stays, to be resumed."""
    try:
        if store.done.any():
            return
    except Exception:  # unreadable after the failure: leave it, the next run's checks say what it is
        return
    target.unlink(missing_ok=True)


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@contextmanager
def _fp32_means_fp32(dtype: str):
    """Under `--dtype fp32`, no TF32: torch lets cuDNN's convolutions round their inputs to TF32
    (10-bit mantissa) by default, which moved the stored Z of the Qwen2-VL, Qwen2.5-VL and
    LLaVA-NeXT tiny checkpoints (patch embeddings) by 1.8-2.7e-4 relative on an H200 (5e-7 once
    off; RESULTS.md, issue 22). Restored afterwards; on the CPU the flags do nothing."""
    import torch

    if dtype != "fp32":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _fingerprint_inputs(config: ExtractConfig, target, samples) -> tuple[tuple, str, dict]:
    """The weights folders, their weights fingerprint (which validates the files before any
    loader maps them) and processing files' digests; unless overwriting, a store at `target` to
    resume must come from these and from `samples`' records (`check_resume_inputs`), checked
    before the model loads."""
    from matprobe.extract.checkpoints import resolve_adapter
    from matprobe.provenance import processing_fingerprints, weights_fingerprint
    from matprobe.store_checks import check_resume_inputs

    dirs = resolve_adapter(config.ckpt, config.adapter, config.base)
    weights, processing = weights_fingerprint(*dirs), processing_fingerprints(*dirs)
    if not config.overwrite:
        check_resume_inputs(target, weights, samples, dirs[1], dirs[0], processing=processing)
    return dirs, weights, processing


def resume_refusal(config: ExtractConfig) -> str | None:
    """Why resuming `config.out` from these inputs would be refused before any model loads (other
    weights, processor files or records: `_fingerprint_inputs`), or None (nothing to resume, or
    nothing changed). `run` asks of every store before extracting any, to name them all at once."""
    from matprobe.errors import ProvenanceMismatch
    from matprobe.extract.preflight import check_extract_inputs

    if config.overwrite or not Path(config.out).exists():
        return None
    try:
        _fingerprint_inputs(config, config.out, check_extract_inputs(config)[0])
    except (ProvenanceMismatch, StoreError) as exc:
        return str(exc)
    return None


# the installed packages a model load depends on (the attention kernels, the image processor's
# backend and defaults, the tokenizer): a complete store is reused without loading its model only
# while none of them changed (`reuse_complete_store`)
_LOAD_PACKAGES = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "sentencepiece",
                  "torchvision", "timm", "flash-attn", "pillow", "numpy", "huggingface-hub")


def _installed(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _answers_on(config: ExtractConfig, dataset) -> bool:
    """Whether the model's answers are scored: `config.answers`, or (None) when every sample has
    at least two options."""
    if config.answers is not None:
        return bool(config.answers)
    return all(len(s.options) >= 2 for s in dataset) and len(dataset) > 0


def _folder_content(folder: Path) -> dict:
    from matprobe.provenance import processing_fingerprints, weights_fingerprint

    return {"weights": weights_fingerprint(folder), "processing_files": processing_fingerprints(folder)}


def _named_tower(config: ExtractConfig) -> Path | None:
    """The vision tower folder an original-format LLaVA checkpoint loads, resolved as its loader
    resolves it (`original_llava.resolve_tower`: `--vision-tower`, else the local folder its config
    names), or None (another format, or a tower the loader would refuse: it refuses it then)."""
    from matprobe.extract.original_llava import is_original_config, read_config, resolve_tower

    if config.vision_tower:
        return Path(config.vision_tower)
    try:
        cfg = read_config(Path(config.ckpt)) if config.ckpt else None
        return resolve_tower(cfg, Path(config.ckpt), None) if cfg and is_original_config(cfg) else None
    except ExtractError:
        return None


def extract_request(config: ExtractConfig, dataset, pools, weights: str, processing: dict) -> dict:
    """What an extraction's store follows from besides its rows' records, all of it known without
    loading the model: the settings as given (not the batch size, which changes no feature), the
    weights' and processing files' fingerprints (`_fingerprint_inputs`), a vision tower's and a
    template file's content, and the versions of matprobe and of the packages a load depends on.

    A new store records it in its provenance (`extract_request`, not compared on resume and not
    part of the content id); a rerun whose request is the same, on that store once complete,
    loads no model (`reuse_complete_store`). Anything here may differ while the provenance would
    not (layers -1 and 31 of a 32-layer model): then the model is loaded and the provenance
    compared, as before."""
    import hashlib

    from matprobe import __version__

    tower = _named_tower(config)
    template = config.template
    if template is not None and Path(template).is_file():
        template = {"file": str(Path(template).resolve()),
                    "sha256": hashlib.sha256(Path(template).read_bytes()).hexdigest()}
    layers = config.layers if isinstance(config.layers, str) else ",".join(map(str, config.layers))
    request = {
        "matprobe": __version__,
        # the folders by their content, as the provenance names them (a run directory moved with
        # its checkpoints is the same request)
        "adapter": bool(config.adapter), "base": bool(config.base),
        "weights_fingerprint": weights, "processing_files": processing,
        "vision_tower": None if tower is None else _folder_content(tower),
        "template": template, "layers": layers, "pools": list(pools), "dtype": config.dtype,
        "device": config.device, "max_pixels": config.max_pixels, "answers": _answers_on(config, dataset),
        "merge_adapter": config.merge_adapter, "attn_implementation": config.attn_implementation,
        "rendering": config.rendering, "packages": {p: _installed(p) for p in _LOAD_PACKAGES},
    }
    from matprobe.store import _jsonable

    return _jsonable(request)  # as it reads back from a store's provenance (tuples as lists)


def reuse_complete_store(config: ExtractConfig, dataset=None, pools=None) -> ExtractResult | None:
    """The result of `extract(config)` without loading the model, where there is nothing to
    compute: the store at `config.out` is complete (every row done, finalized, one process's), has
    these records' ids, and records the same `extract_request` as this config gives now. None
    otherwise (no store, rows left, made by an older matprobe, by torchrun, or from another
    request), and `extract` goes on as before.

    Changed records are refused here as a resume refuses them (changed weights by `extract`,
    before any load); a split changed alone is taken into the store (`check_records_unchanged`).
    Images are read for their digests only: the result has no image notes. A rerun of `run` on a 7B study's complete stores loaded every model for nothing."""
    from matprobe.parallel import launched_world_size
    from matprobe.store import EmbeddingStore

    t0 = time.perf_counter()
    out = Path(config.out)
    if config.overwrite or not out.is_file() or launched_world_size() > 1:
        return None
    if dataset is None:
        from matprobe.extract.preflight import check_extract_inputs

        dataset, pools = check_extract_inputs(config)
    try:
        with EmbeddingStore.open(out) as st:  # what the checks below and the result need, in one read
            prov = st.provenance
            recorded = prov.get("extract_request")
            complete = (st.finalized and bool(np.all(st.done)) and "merged_from" not in prov
                        and [str(i) for i in st.ids] == [s.id for s in dataset])
            scheme, stored_records = st.record_digest_scheme, st.record_digests()
            accuracy = _accuracy(st) if complete and recorded and recorded.get("answers") else None
    except StoreError:
        return None  # the extraction itself names an unreadable store, with its fix
    if recorded is None or not complete:
        return None
    from matprobe.extract.checkpoints import resolve_adapter
    from matprobe.provenance import (
        check_records_unchanged,
        processing_fingerprints,
        record_digests,
        weights_fingerprint,
    )
    from matprobe.store import _jsonable

    dirs = resolve_adapter(config.ckpt, config.adapter, config.base)
    # other weights or processing files make another request: `extract` then refuses them with
    # its own message (`_fingerprint_inputs`), before any load
    now = extract_request(config, dataset, pools, weights_fingerprint(*dirs), processing_fingerprints(*dirs))
    cells = (prov["layers"], prov["pools"]) if now == _jsonable(recorded) else \
        narrowed_cells(now, _jsonable(recorded), prov)
    if cells is None:
        return None
    # the records, read once (every image's bytes): the same as stored, or only their split
    # edited (taken in, as a resume takes it), else refused as a resume refuses them
    frame = dataset.frame()
    if not np.array_equal(record_digests(frame, scheme=scheme), stored_records):
        with EmbeddingStore.open(out, mode="a") as st:  # rare: the check reads the files once more
            check_records_unchanged(st, frame, dataset.source, update=True)
    layers, stored_pools = cells
    return ExtractResult(out=out, n_total=len(dataset), n_computed=0, n_resumed=len(dataset),
                         seconds=time.perf_counter() - t0, layers=[str(v) for v in layers],
                         pools=[str(v) for v in stored_pools], accuracy=accuracy)


def narrowed_cells(now: dict, recorded: dict, prov: dict) -> tuple[list[str], list[str]] | None:
    """(layers, pools) asked now, in the store's order, where the request differs from the recorded
    one only in asking fewer of the stored layers or pools: a complete store holds those cells, so a
    rerun after a layer was dropped from [extract] layers reads them instead of extracting every store
    again (a study's 7B stores would all have been). None where anything else differs."""
    from matprobe.extract.hooks import parse_layers

    rest = ("layers", "pools")
    if {k: v for k, v in now.items() if k not in rest} != {k: v for k, v in recorded.items() if k not in rest}:
        return None
    depth = prov.get("num_decoder_layers")
    if not isinstance(depth, int):
        return None
    try:
        asked = {str(v) for v in parse_layers(now["layers"], depth)}
    except ExtractError:
        return None
    stored_layers, stored_pools = [str(v) for v in prov["layers"]], [str(v) for v in prov["pools"]]
    pools = {str(v) for v in now["pools"]}
    if not (asked <= set(stored_layers) and pools <= set(stored_pools)):
        return None
    return [v for v in stored_layers if v in asked], [v for v in stored_pools if v in pools]


def extract(
    config: ExtractConfig,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Run (or resume) an extraction; returns counts and timing for this rank."""
    from matprobe.extract.preflight import check_extract_inputs

    # options, output, checkpoint folder and manifest first: refused in about a second,
    # before torch is imported or a model loaded (extract/preflight.py)
    dataset, pools = check_extract_inputs(config)
    if (reused := reuse_complete_store(config, dataset, pools)) is not None:
        return reused  # complete, from these inputs: no model to load
    import torch

    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.distributed import init_ranks, shard_path
    from matprobe.extract.hooks import LayerPooler, check_finite, letter_logits, parse_layers
    from matprobe.extract.prompts import check_rendering, render_sample
    from matprobe.extract.tokens import build_batch, last_token_index, option_letter_token_ids, pool_weights

    check_rendering(config.rendering)
    out = Path(config.out)
    ranks = init_ranks(config.device)
    if ranks.distributed:
        mine = set(ranks.split(list(range(len(dataset)))))
        samples = dataset.subset([i in mine for i in range(len(dataset))])
        target = shard_path(out, ranks.rank, ranks.world_size)
        if not mine:
            raise ExtractError(
                f"{config.data} has {len(dataset)} samples for {ranks.world_size} processes; "
                f"launch at most {len(dataset)} processes"
            )
        if ranks.is_main and out.exists() and not config.overwrite:
            from matprobe.store import EmbeddingStore

            with EmbeddingStore.open(out) as prev:
                if "merged_from" not in prev.provenance:
                    raise StoreError(
                        f"{out} exists from a single-process run; resume it the same way, or pass "
                        f"--overwrite / another --out"
                    )
    else:
        samples, target = dataset, out
    notes = _check_images(samples.samples, str(config.data))

    n_options = max((len(s.options) for s in dataset), default=0)
    answers = _answers_on(config, dataset)
    if config.answers and n_options < 2:
        raise ExtractError(f"--answers: {config.data} has no multiple-choice options; use --no-answers")

    torch.manual_seed(0)
    weights_dirs, weights, processing = _fingerprint_inputs(config, target, samples)
    loaded = load_model(
        config.ckpt, adapter=config.adapter, base=config.base, dtype=config.dtype,
        device=ranks.device(config.device), max_pixels=config.max_pixels,
        merge_adapter=config.merge_adapter, attn_implementation=config.attn_implementation,
        vision_tower=config.vision_tower, template=config.template,
    )
    device = loaded.info["device"]
    layers = parse_layers(config.layers, loaded.num_layers)
    tokenizer = loaded.processor.tokenizer
    letter_ids = (option_letter_token_ids(tokenizer, n_options, loaded.architecture.letter_spellings)
                  if answers else None)
    has_segmentation = any(s.is_segmentation for s in dataset)
    if "option_images" in pools and (config.rendering != "multi-image"
                                     or not all(s.is_segmentation for s in dataset)):
        n_plain = sum(not s.is_segmentation for s in dataset)
        raise ExtractError(
            f"--pool option_images needs a multi-image prompt for every item; {config.data} has "
            f"{n_plain} item(s) without option masks" + ("" if config.rendering == "multi-image" else
                                                         f" and --rendering is {config.rendering}")
            + "; drop option_images from --pool"
        )
    provenance = build_provenance(loaded, layers, pools, answers, letter_ids, n_options,
                                  config.rendering if has_segmentation else None)
    provenance["weights_fingerprint"] = weights
    provenance["processing_files"] = processing
    request = extract_request(config, dataset, pools, weights, processing)
    provenance["extract_request"] = request
    hidden = loaded.model.config.get_text_config().hidden_size
    feature_dims = {(layer, pool): hidden for layer in layers for pool in pools}

    store = _open_or_create(
        target, samples, provenance, feature_dims, n_options if answers else None, config.overwrite
    )
    if store.provenance.get("extract_request") != request:
        # its provenance follows from this request (just compared): the next rerun of it, once the
        # store is complete, needs no model (a store made before requests were recorded, or by
        # another spelling of the same settings)
        store.record_request(request)
    t0 = time.perf_counter()
    n_computed = 0
    try:
        done = store.done
        todo = np.flatnonzero(~done)
        n_resumed = int(done.sum())
        from matprobe.progress import track

        bar = track(f"extract {loaded.arch}" + (f" rank {ranks.rank}" if ranks.distributed else ""),
                    len(samples), n_resumed, enabled=progress and ranks.is_main, unit="samples")
        # Ctrl-C / SIGTERM stop between batches (a signal raised inside a library's finaliser is lost)
        with bar, LayerPooler(loaded.model, layers, need_final_last=answers) as pooler, \
                DeferredInterrupts() as interrupts, _fp32_means_fp32(config.dtype):
            for start in range(0, len(todo), config.batch_size):
                interrupts.check()
                rows = todo[start:start + config.batch_size]
                batch = [samples[int(r)] for r in rows]
                try:
                    rendered = [render_sample(s, config.rendering) for s in batch]
                except DataError as exc:  # an unreadable image: the rows before it are kept
                    raise DataError(f"{exc}; {_kept(store, target, len(samples))}: fix it and rerun the same "
                                    f"command" + (" to resume" if store.done.any() else "")) from None
                # Own-loader processors (original LLaVA) build their batch themselves.
                builder = getattr(loaded.processor, "build_batch", None)
                try:
                    prompt = (builder or (lambda *a: build_batch(loaded.processor, *a,
                                                                 template=loaded.info.get("conversation_template"))))(
                        [s.question for s in batch], [s.options for s in batch], [r.images for r in rendered],
                        [r.preamble for r in rendered])
                except ExtractError as exc:  # an item the prompt refuses (too long): named by its id
                    raise ExtractError(f"{_item_named(exc, batch)}{exc}; {_kept(store, target, len(samples))}: fix "
                                       "it and rerun the same command" + (" to resume" if store.done.any() else "")
                                       ) from None
                inputs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in prompt.inputs.items()}
                attention = inputs["attention_mask"]
                weights = pool_weights(inputs["input_ids"], attention, prompt.question_mask.to(device),
                                       loaded.image_token_id, pools, prompt.n_images)
                last = last_token_index(attention)
                try:
                    pooled = pooler.run(inputs, weights, last)
                    check_finite(pooled, config.dtype)
                    answer_block = None
                    if answers:
                        answer_block = _score_answers(
                            letter_logits(loaded.model, pooler.last_final, letter_ids), batch
                        )
                        if has_segmentation:
                            answer_block.update(segmentation_scores(batch, rendered, answer_block["pred"]))
                except (RuntimeError, ValueError, MemoryError) as exc:
                    if (counts := _token_feature_mismatch(exc)) is not None:
                        raise ExtractError(_mismatch_message(
                            counts, weights_dirs[0], batch,
                            int((inputs["input_ids"] == loaded.image_token_id).sum()),
                            sum(prompt.n_images) if prompt.n_images else len(batch),
                            loaded.architecture.image_token_settings(loaded.processor, loaded.model.config),
                            _kept(store, target, len(samples)),
                        )) from None
                    if _is_oom(exc) or isinstance(exc, MemoryError):
                        raise ExtractError(
                            f"out of memory on {device} with --batch-size {config.batch_size}: lower "
                            f"--batch-size" + (" or --max-pixels" if loaded.architecture.dynamic_resolution else "")
                            + f"; {int(store.done.sum())} finished rows are kept, rerun to resume"
                        ) from None
                    raise
                features = {
                    (layer, pool): pooled[layer][:, p, :].cpu().numpy()
                    for layer in layers for p, pool in enumerate(pools)
                }
                store.append(rows, features, answers=answer_block)
                n_computed += len(rows)
                bar.advance(len(rows))
                if on_batch is not None:
                    on_batch(n_resumed + n_computed)
        accuracy = _accuracy(store) if answers else None
        store = store.finalize()  # every row is done: repack with compressed chunks
    except BaseException:
        _discard_if_empty(store, target)  # no finished row: no store to resume against
        raise
    finally:
        store.close()
    seconds = time.perf_counter() - t0

    shards: list[Path] = []
    if ranks.distributed:
        ranks.barrier()
        shards = [shard_path(out, r, ranks.world_size) for r in range(ranks.world_size)]
        if ranks.is_main:
            from matprobe.store import EmbeddingStore

            EmbeddingStore.merge(shards, out, overwrite=True).close()
            with EmbeddingStore.open(out) as merged:
                accuracy = _accuracy(merged) if answers else None
        ranks.barrier()
    return ExtractResult(
        out=out, n_total=len(dataset), n_computed=n_computed, n_resumed=n_resumed,
        seconds=seconds, layers=layers, pools=pools, shards=shards, accuracy=accuracy, notes=notes,
    )


def _score_answers(letter_logits_bk, batch) -> dict:
    """Predicted option, probabilities over each sample's own option letters, correctness."""
    import torch

    logits = letter_logits_bk.float().cpu()
    B, K = logits.shape
    probs = torch.full((B, K), float("nan"))
    pred = np.full(B, -1, dtype=np.int64)
    correct = np.full(B, -1, dtype=np.int8)
    for b, s in enumerate(batch):
        k = len(s.options)
        p = torch.softmax(logits[b, :k], dim=0)
        probs[b, :k] = p
        pred[b] = int(torch.argmax(logits[b, :k]))
        if s.answer_index is not None and s.answer_index >= 0:
            correct[b] = int(pred[b] == s.answer_index)
    return {"pred": pred, "correct": correct, "probs": probs.numpy()}


def _accuracy(store) -> float | None:
    correct = store.answers()["correct"]
    known = correct >= 0
    return float(correct[known].mean()) if known.any() else None
