"""Everything `extract` can refuse without torch, a model or an image: checked first.

Importing torch alone takes seconds on a busy machine and loading a checkpoint tens of
seconds, so a mistake found after them costs the user that wait. Here (no torch import) come
the options, the output (a running writer, a store made from other samples or settings, a
folder in the way), the checkpoint folder's shape (config.json, architecture, weights files,
an adapter's base) and the manifest (columns, options, image paths). `extract` calls this
first; the pipeline calls `check_checkpoint` for each checkpoint it is given.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from matprobe.errors import DataError, ExtractError, ProvenanceMismatch, StoreError, StoreUnavailable

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# what a Trainer's checkpoint-N holds beside (or instead of) the weights: state, not a model
TRAINER_STATE = re.compile(r"(training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth)$")


def is_weights_file(path: Path) -> bool:
    """A file that can hold a model's weights (not the trainer's state files of a checkpoint-N)."""
    return path.is_file() and path.suffix in WEIGHT_SUFFIXES and not TRAINER_STATE.match(path.name)


def no_weights_message(folder, what: str) -> str:
    return (f"{what} {folder}: no weights files (*.safetensors or *.bin){_zero_hint(folder)}; pass the folder "
            "`save_pretrained` wrote, with its weights")


def _zero_hint(folder) -> str:
    """The fix for a DeepSpeed ZeRO checkpoint, whose weights are partitioned in global_step*/."""
    folder = Path(folder)
    if (folder / "zero_to_fp32.py").is_file() or any(folder.glob("global_step*")):
        return ("; it is a DeepSpeed ZeRO checkpoint (its weights are split over global_step*/): gather them with "
                f"`python zero_to_fp32.py . pytorch_model.bin` run in {folder}")
    return ""
# how a pipeline file passes what the command line passes by --vision-tower and --base (messages)
PIPELINE_OPTIONS = {"vision_tower": "vision_tower =", "base": "base ="}


def sample_list_difference(stored: list[str], given: list[str]) -> str:
    """How a store's sample ids differ from the data's, in words ("... than <data>" follows).

    >>> sample_list_difference(["a", "b"], ["b", "a"])
    'holds the same 2 samples in another order (a store keeps the order it was made in)'
    >>> sample_list_difference(["a", "b"], ["a", "c", "d"])
    'holds 2 samples, 1 of them among the 3 of the data: made from a different sample list'
    """
    if sorted(stored) == sorted(given):
        return f"holds the same {len(stored)} samples in another order (a store keeps the order it was made in)"
    shared = len(set(stored) & set(given))
    return (f"holds {len(stored)} samples, {shared} of them among the {len(given)} of the data: made from a "
            "different sample list")


def parse_pools(spec) -> list[str]:
    # here, not in runner.py: runner imports this module, so the reverse import would be a circle
    from matprobe.extract.tokens import ALL_POOLS

    items = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    bad = [p for p in items if p not in ALL_POOLS]
    if bad or not items:
        raise ExtractError(f"--pool: unknown pool(s) {', '.join(bad) or '(none)'}; use {', '.join(ALL_POOLS)}")
    return list(dict.fromkeys(items))


def check_options(*, batch_size: int, pools, dtype: str, device: str, attn: str, rendering: str,
                  max_pixels: int | None = None, layers=None) -> list[str]:
    """The extraction options on their own; returns the pools in order."""
    from matprobe.extract.checkpoints import ATTN_IMPLEMENTATIONS, DTYPES
    from matprobe.extract.prompts import check_rendering

    if int(batch_size) < 1:
        raise ExtractError(f"--batch-size {batch_size}: must be at least 1")
    if dtype not in DTYPES:
        raise ExtractError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if not _DEVICE.match(str(device)):
        raise ExtractError(f"--device {device!r}: use cpu or cuda (cuda:N)")
    if attn not in ATTN_IMPLEMENTATIONS:
        raise ExtractError(f"--attn {attn!r} is not one of {', '.join(ATTN_IMPLEMENTATIONS)}: pass one of them")
    if max_pixels is not None and int(max_pixels) < 28 * 28:
        raise ExtractError(f"--max-pixels {max_pixels}: give at least 784 (one 28 x 28 patch), e.g. 1003520")
    check_rendering(rendering)
    if layers is not None:
        check_layer_syntax(layers)
    return parse_pools(pools)


def check_layer_syntax(spec) -> None:
    """--layers items are integers, 'final' or 'embed' (the range needs the model's depth)."""
    items = [str(x).strip() for x in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [x for x in items if x]
    if not items:
        raise ExtractError("--layers is empty; give e.g. 8,16,-1")
    for item in items:
        if item not in ("final", "embed") and not re.fullmatch(r"-?\d+", item):
            raise ExtractError(f"--layers: {item!r} is not a layer; use integers, 'final' or 'embed'")


def _depth(config: dict) -> int | None:
    """Decoder blocks from config.json (top level or text_config), when it says."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    n = text.get("num_hidden_layers") or config.get("num_hidden_layers")
    return int(n) if isinstance(n, int) and n > 0 else None


def check_checkpoint(ckpt, adapter=None, base=None, layers=None, where: str = "", vision_tower=None,
                     template=None, options=None) -> tuple[Path, Path | None]:
    """The checkpoint folder's shape, before any loader sees it: (base dir, adapter dir or None).

    A folder without config.json, an unsupported config, no weights files, no processor files
    (image processor config, tokenizer vocabulary) where transformers loads it, an adapter
    without its base, `template` / `vision_tower` the architecture does not take, an original
    LLaVA run against its base (a LoRA or projector run needs one, a whole model none) or with
    no local tower, and (with `layers`) a layer index past the model's depth. options: how the
    user passes the tower and the base, for the messages (default: the CLI's flags).
    """
    from matprobe.extract.checkpoints import (
        check_prompt_options,
        claimed_format,
        loaded_as,
        processor_files_problem,
        resolve_adapter,
    )
    from matprobe.extract.hooks import parse_layers

    prefix = f"{where}: " if where else ""
    try:
        try:
            base_dir, adapter_dir = resolve_adapter(ckpt, adapter, base, (options or {}).get("base", "--base"))
        except ExtractError as exc:  # a run's base not found: with every other input it lacks, in one line
            own = claimed_format(ckpt) if ckpt is not None and adapter is None else None
            others = own.inputs_missing(Path(ckpt), vision_tower, options) if own is not None else []
            raise ExtractError("; ".join([str(exc), *others])) from None
        # an original LLaVA LoRA / projector run is told by its own config, not its base's
        spec, run_dir, run_base = loaded_as(base_dir, adapter_dir)
        if spec.own_loader:
            spec.check_run(run_dir, run_base, vision_tower, options)
        check_prompt_options(spec, template, vision_tower)
    except ExtractError as exc:
        raise ExtractError(f"{prefix}{exc}") from None
    for folder, what in ((base_dir, "checkpoint"), (adapter_dir, "adapter")):
        if folder is not None and not any(is_weights_file(p) for p in Path(folder).iterdir()):
            raise ExtractError(prefix + no_weights_message(folder, what))
    # a model loaded through transformers reads its processor from the model's folder (the base,
    # for an adapter); formats with their own loader (original LLaVA) take it from elsewhere
    problem = None if spec.own_loader else processor_files_problem(base_dir)
    if problem:
        raise ExtractError(f"{prefix}{problem}")
    if layers is not None:
        try:
            depth = _depth(json.loads((Path(base_dir) / "config.json").read_text()))
        except (OSError, ValueError):
            depth = None
        if depth is not None:
            parse_layers(layers, depth)  # an index past the last block, named with the valid range
    return base_dir, adapter_dir


def images_limit(ckpt, adapter=None, base=None, template=None) -> tuple[int, str] | None:
    """(the most images one prompt of this checkpoint may hold, why) or None for any number: its
    architecture's `images_per_prompt`, or one for LLaVA's conversation templates (`template`).
    None also for a folder that does not say (`check_checkpoint` names its problem)."""
    from matprobe.extract.checkpoints import loaded_as, resolve_adapter

    try:
        spec, _, _ = loaded_as(*resolve_adapter(ckpt, adapter, base))
    except ExtractError:
        return None
    if spec.images_per_prompt is not None:
        n = spec.images_per_prompt
        return n, f"{spec.name} checkpoints take {'one image' if n == 1 else f'at most {n} images'} per prompt"
    if template not in (None, "chat"):
        return 1, f"LLaVA's conversation template {template!r} holds one image"
    return None


def rendering_problem(samples, rendering: str, limit: tuple[int, str] | None) -> str | None:
    """Why `rendering` shows segmentation items (option masks) as more images than the model takes
    (`images_limit`): the count and the first such item; None when every prompt fits."""
    if limit is None or rendering != "multi-image":  # the grid is one image per item
        return None
    most, why = limit
    over = [s for s in samples if s.is_segmentation and 1 + len(s.options) > most]
    if not over:
        return None
    return (f"{len(over)} segmentation item(s) (options are masks), first {over[0].id!r}, are "
            f"{1 + len(over[0].options)} images each in the {rendering} rendering (the question image, then "
            f"one per option), but {why}")


GRID_FIX = "the options' masks drawn in one 2x2 composite image per item"


def check_output(out, *, overwrite: bool, sample_ids: list[str] | None = None, pools=None,
                 dtype: str | None = None, device: str | None = None, layers=None,
                 rendering: str | None = None) -> None:
    """The output store: no running writer; a store to resume must open and hold these samples,
    made with these settings (`settings_differences`)."""
    from matprobe.locks import holder_pid, is_locked

    out = Path(out)
    if is_locked(out):
        pid = holder_pid(out)
        who = f"process {pid}" if pid else "another process"
        raise StoreError(f"{out}: in use by {who} (a running matprobe writer); wait for it to finish or "
                         "choose another --out")
    if out.is_dir():
        raise StoreError(f"--out {out}: is a folder; give a file name such as {out / 'store.h5'}")
    if overwrite or not out.exists():
        return
    # h5py directly, not EmbeddingStore: the store module pulls in pandas (a second at start-up);
    # a file that does not open this way gets the store's own message below
    import h5py

    try:
        with h5py.File(out, "r") as h5:
            ids = [str(i) for i in h5["samples/id"].asstr()[...]]
            prov = json.loads(h5.attrs["provenance"])
    except (OSError, KeyError, ValueError, TypeError):
        from matprobe.store import EmbeddingStore

        try:
            EmbeddingStore.open(out).close()
        except StoreUnavailable:
            raise  # not a store at all, or in use: its fix is not --overwrite
        except StoreError as exc:
            raise StoreError(f"{exc}; or rerun with --overwrite to start again") from None
        return  # it opens after all: the resume itself checks it
    if sample_ids is not None and ids != list(sample_ids):
        raise StoreError(f"{out}: {sample_list_difference(ids, list(sample_ids))} than --data; use another --out, "
                         "or --overwrite to start again")
    changed = [f"{name} {stored} stored, {asked} asked" for name, stored, asked in settings_differences(
        prov, pools=pools, dtype=dtype, device=device, layers=layers, rendering=rendering,
        fewer_cells_ok=is_complete_store(out))]
    if changed:
        raise ProvenanceMismatch(f"{out}: made with other settings ({'; '.join(changed)}); resume with the stored "
                         "settings, use another --out, or --overwrite to start again")


def is_complete_store(path) -> bool:
    """A store whose every row is done and which is finalized: its cells can be read as they are, so
    a request for fewer of its layers or pools takes them (`extract.runner.narrowed_cells`)."""
    import h5py  # as `check_resume_store` reads it: the store module pulls in pandas

    try:
        with h5py.File(path, "r") as h5:  # as EmbeddingStore.finalized and .done read them
            return bool(h5.attrs.get("finalized", True)) and bool(h5["done"][...].astype(bool).all())
    except (OSError, KeyError, ValueError, TypeError):
        return False


def read_provenance(path) -> dict | None:
    """A store's provenance read with h5py (no pandas, no torch); None where it does not open so."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return json.loads(h5.attrs["provenance"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def settings_differences(prov: dict, *, pools=None, dtype=None, device=None, layers=None,
                         rendering=None, max_pixels=..., fewer_cells_ok: bool = False) -> list[tuple[str, str, str]]:
    """(setting, stored, asked) for each extraction setting (pools, dtype, device, layers, rendering)
    given whose value differs from the one the store's provenance records: what its resume would
    refuse, read without a model. A setting the store does not record is not compared (a store
    without segmentation items records no rendering)."""
    from matprobe.extract.hooks import parse_layers

    def shown(value):
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    out = []
    # fewer_cells_ok: a complete store holding every layer and pool asked (and more) is read as it is
    # (`extract.runner.narrowed_cells`)
    if pools is not None and prov.get("pools") not in (None, list(pools)) and not (
            fewer_cells_ok and set(pools) <= set(prov["pools"])):
        out.append(("pools", shown(prov["pools"]), shown(pools)))
    if dtype is not None and prov.get("dtype") not in (None, dtype):
        out.append(("dtype", prov["dtype"], dtype))
    if device is not None and prov.get("device_type") not in (None, str(device).split(":")[0]):
        out.append(("device", prov["device_type"], str(device).split(":")[0]))
    depth = prov.get("num_decoder_layers")
    if layers is not None and prov.get("layers") is not None and isinstance(depth, int):
        try:
            asked = parse_layers(layers, depth)
        except ExtractError:
            asked = None  # out of range for this store's model: the checkpoint's own check says so
        if asked is not None and asked != list(prov["layers"]) and not (
                fewer_cells_ok and {str(v) for v in asked} <= {str(v) for v in prov["layers"]}):
            out.append(("layers", shown(prov["layers"]), shown(asked)))
    stored = (prov.get("segmentation_rendering") or {}).get("name")
    if rendering is not None and stored not in (None, rendering):
        out.append(("rendering", stored, rendering))
    if max_pixels is not ...:  # None asks for the processor's own limit
        request = prov.get("extract_request") or {}

        def limit(value):
            return "none (the processor's own)" if value is None else shown(value)

        if "max_pixels" in request:  # what was asked, as it was asked (a complete store records it)
            if request["max_pixels"] != max_pixels:
                out.append(("max_pixels", limit(request["max_pixels"]), limit(max_pixels)))
        elif max_pixels is not None and prov.get("max_pixels") not in (None, max_pixels):
            out.append(("max_pixels", shown(prov["max_pixels"]), shown(max_pixels)))  # the limit it ran at
    return out


def check_extract_inputs(config):
    """All of `extract`'s refusals that need no model: returns (dataset, pools). No torch import."""
    from matprobe.data import load_dataset

    pools = check_options(batch_size=config.batch_size, pools=config.pools, dtype=config.dtype,
                          device=config.device, attn=config.attn_implementation, rendering=config.rendering,
                          max_pixels=config.max_pixels, layers=config.layers)
    check_checkpoint(config.ckpt, config.adapter, config.base, layers=config.layers,
                     vision_tower=config.vision_tower, template=config.template)
    dataset = load_dataset(config.data, image_root=config.image_root, columns=getattr(config, "columns", None))
    if len(dataset) == 0:
        raise DataError(f"{config.data}: no samples")
    limit = images_limit(config.ckpt, config.adapter, config.base, config.template)
    if problem := rendering_problem(dataset, config.rendering, limit):
        raise ExtractError(f"{config.data}: {problem}; pass --rendering grid ({GRID_FIX})")
    if not config.overwrite:
        check_output(config.out, overwrite=False, sample_ids=[s.id for s in dataset], pools=pools,
                     dtype=config.dtype, device=config.device, layers=config.layers, rendering=config.rendering)
    else:
        check_output(config.out, overwrite=True)
    return dataset, pools
