"""The whole study in one call: data → splits → checkpoints → extract → mi → check → significance → report.

A pipeline is a TOML file (`matprobe run FILE.toml`); `matprobe demo` runs the embedded
default (`demo_config`), the same as `experiments/demo/pipeline.toml`.

Run directory layout (every file is written atomically; a rerun skips finished steps):

```
RUN/run.json                   what ran, with every result file (the report reads this); paths
                               inside RUN are relative to RUN, so the folder can move
RUN/data/manifest.jsonl        the dataset (demo: built from packaged images)
RUN/data/<condition>.jsonl     the dataset with that condition's split, which its stores are extracted
                               from (renamed into place once the extraction accepted it)
RUN/checkpoints/<name>/        demo: fine-tuned tiny checkpoints
RUN/checkpoints/<name>.training.json  the [train] settings and training rows each was fine-tuned with
RUN/stores/<name>.h5           embeddings + answers per checkpoint
RUN/mi/<name>__<layer>__<pool>.json
RUN/check/<name>.json
RUN/results.csv                tidy per-run metrics (condition, target, seed, item, metric, value),
                               each with its interval (ci_low, ci_high, ci_level, bound, n)
RUN/significance.csv           paired comparisons of the conditions
RUN/report.md, report.html, figures/*.png
```

Checkpoint sections, two kinds:

- ``[train]`` (demo): a tiny random-initialised LLaVA is built offline and fine-tuned
  briefly on each condition's training split for each seed (toy models: docs/design.md §1);
- ``[[checkpoints]]`` (your models): ``name``, ``condition``, ``seed``, ``ckpt``, optional
  ``adapter``/``base`` (and ``vision_tower``/``template`` for original-format LLaVA checkpoints),
  each already trained on that condition's split.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported where used: `run` refuses a bad file in about a second
    import pandas as pd

from matprobe.checks import check_unread_keys, track_sections
from matprobe.conditions import CONDITION_NAMES
from matprobe.defaults import DEFAULTS
from matprobe.errors import DataError, MatprobeError, PipelineError, ProvenanceMismatch
from matprobe.io import atomic_path, write_text_atomic
from matprobe.rundir import RUN_FORMAT_VERSION, file_sha256, run_relative


@dataclass
class PipelineConfig:
    out: str = "reports/run"
    # data
    demo_data: bool = False
    data_file: str | None = None
    image_root: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # {their column: expected name} (data/columns.py)
    task_level: str = "subset"  # Med-MAT files: subset (Table 9's tasks) or group (the coarse tasks)
    n_per_triplet: int = 64
    image_size: int = 56
    data_seed: int = 0
    # design
    target: tuple[str, str, str] = ("MRI", "Brain", "Exposure")
    # further held-out targets, each with its own checkpoints per condition and seed (e.g. a
    # Segmentation triplet, so Table IX gets its cIoU column beside the accuracy one)
    extra_targets: tuple[tuple[str, str, str], ...] = ()
    conditions: tuple[str, ...] = ("related", "unrelated")
    # demo training (used when `checkpoints` is empty)
    train_steps: int = 120
    train_batch_size: int = 32
    train_lr: float = 2e-3
    train_seeds: tuple[int, ...] = (0, 1, 2)
    train_size: int | None = None  # per condition, equalised; None = the smallest split
    base_seed: int = 0
    # your checkpoints
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    # extraction
    layers: str = "-1"
    pools: str = "last"
    extract_batch_size: int = 32
    dtype: str = "fp32"
    device: str = "cpu"
    max_pixels: int | None = None
    rendering: str = "multi-image"  # segmentation items (extract/prompts.py)
    # mi
    factors: tuple[str, ...] = ("modality", "anatomy", "task", "label")
    estimator: str = DEFAULTS.estimator
    mi_seeds: int = DEFAULTS.seeds
    mi_folds: int = DEFAULTS.folds
    pca: int | None = DEFAULTS.pca
    mi_level: float = DEFAULTS.level
    # baselines beside each chain term (matprobe.mi.controls, matprobe.mi.codelength): the control
    # task's selectivity, the online codelength, a permutation null with this many permutations
    mi_controls: bool = False
    mi_codelength: bool = False
    # a factor's classes too small for the folds (2 rows per fold): merged into one per factor, the
    # terms flagged (matprobe.mi.chain.merge_rare_classes); "refuse" stops the MI step instead
    mi_rare_classes: str = "merge"
    mi_permutations: int = 0
    # check
    delta: float = DEFAULTS.delta
    # parallel processes for training (CPU)
    workers: int = 0  # 0 = min(4, CPU count)
    # run in a process with matprobe.numerics.PORTABLE_ENV: the same bits on every x86-64 CPU
    portable_numerics: bool = False

    @property
    def target_name(self) -> str:
        return ",".join(self.target)

    @property
    def targets(self) -> tuple[tuple[str, str, str], ...]:
        return (tuple(self.target), *(tuple(t) for t in self.extra_targets))


def _get(table: dict, key: str, kind, default, where: str):
    value = table.get(key, default)
    if value is not None and kind is not None and not isinstance(value, kind):
        raise PipelineError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _one_estimator(value, where: str) -> None:
    """`mi --estimator probe,ksg` takes several; a run's chain, checks and report use one."""
    if isinstance(value, list) or (isinstance(value, str) and "," in value):
        names = value if isinstance(value, list) else value.split(",")
        raise PipelineError(f"{where}: estimator = {value!r}: a run uses one estimator for its chain, checks "
                            f"and report; give one, e.g. estimator = {str(names[0]).strip()!r}, and cross-check with "
                            f"`matprobe mi STORE --estimator {','.join(str(n).strip() for n in names)}`")


def load_pipeline(path: str | os.PathLike) -> PipelineConfig:
    """Read a pipeline TOML file (sections run, data, design, train, checkpoints, extract, mi, check)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such pipeline file")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{path}: not valid TOML ({exc})") from None
    doc = track_sections(doc)  # keys the loader reads are the schema (matprobe.checks)
    known = {"run", "data", "design", "train", "checkpoints", "extract", "mi", "check"}
    unknown = set(doc) - known
    if unknown:
        raise PipelineError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(known))}")
    cfg = PipelineConfig()
    run, data, design = doc.get("run", {}), doc.get("data", {}), doc.get("design", {})
    train, ext, mi, chk = doc.get("train", {}), doc.get("extract", {}), doc.get("mi", {}), doc.get("check", {})
    w = str(path)
    cfg.out = _get(run, "out", str, cfg.out, w)
    cfg.workers = _get(run, "workers", int, cfg.workers, w)
    cfg.portable_numerics = _get(run, "portable_numerics", bool, cfg.portable_numerics, w)
    cfg.demo_data = _get(data, "demo", bool, False, w)
    cfg.data_file = _get(data, "file", str, None, w)
    if cfg.data_file and not Path(cfg.data_file).is_absolute():
        cfg.data_file = str((path.parent / cfg.data_file).resolve())
    cfg.image_root = _get(data, "image_root", str, None, w)
    cfg.columns = dict(_get(data, "columns", dict, {}, w))
    cfg.task_level = _get(data, "task_level", str, cfg.task_level, w)
    if cfg.task_level not in ("subset", "group"):
        raise PipelineError(f"{w}: task_level = {cfg.task_level!r}: give \"subset\" (Med-MAT's Table 9 tasks) or "
                            "\"group\" (its coarse tasks, by which it draws Related and Unrelated)")
    if cfg.demo_data == bool(cfg.data_file):
        raise PipelineError(f"{path}: [data] needs exactly one of demo = true or file = \"...\"")
    cfg.n_per_triplet = _get(data, "n_per_triplet", int, cfg.n_per_triplet, w)
    cfg.image_size = _get(data, "image_size", int, cfg.image_size, w)
    cfg.data_seed = _get(data, "seed", int, cfg.data_seed, w)
    target = _get(design, "target", list, list(cfg.target), w)
    if len(target) != 3:
        raise PipelineError(f"{path}: [design] target must be [modality, anatomy, task], got {target!r}")
    cfg.target = tuple(str(t) for t in target)
    extra = _get(design, "extra_targets", list, [], w)
    if any(not isinstance(t, list) or len(t) != 3 for t in extra):
        raise PipelineError(f"{path}: [design] extra_targets must be a list of [modality, anatomy, task]")
    cfg.extra_targets = tuple(tuple(str(x) for x in t) for t in extra)
    cfg.conditions = tuple(_get(design, "conditions", list, list(cfg.conditions), w))
    bad = [c for c in cfg.conditions if c not in CONDITION_NAMES]
    if bad:
        raise PipelineError(f"{path}: unknown condition {bad[0]!r}; use {', '.join(CONDITION_NAMES)}")
    cfg.train_steps = _get(train, "steps", int, cfg.train_steps, w)
    cfg.train_batch_size = _get(train, "batch_size", int, cfg.train_batch_size, w)
    cfg.train_lr = float(_get(train, "lr", (int, float), cfg.train_lr, w))
    cfg.train_seeds = tuple(_get(train, "seeds", list, list(cfg.train_seeds), w))
    cfg.train_size = _get(train, "train_size", int, cfg.train_size, w)
    cfg.base_seed = _get(train, "base_seed", int, cfg.base_seed, w)
    cfg.checkpoints = _checkpoint_entries(doc.get("checkpoints", []), cfg, path)
    cfg.layers = str(_get(ext, "layers", (str, int), cfg.layers, w))
    cfg.pools = _get(ext, "pools", str, cfg.pools, w)
    cfg.extract_batch_size = _get(ext, "batch_size", int, cfg.extract_batch_size, w)
    cfg.dtype = _get(ext, "dtype", str, cfg.dtype, w)
    cfg.device = _get(ext, "device", str, cfg.device, w)
    cfg.max_pixels = _get(ext, "max_pixels", int, cfg.max_pixels, w)
    cfg.rendering = _get(ext, "rendering", str, cfg.rendering, w)
    cfg.factors = tuple(_get(mi, "factors", list, list(cfg.factors), w))
    _one_estimator(mi.get("estimator", cfg.estimator), w)
    cfg.estimator = _get(mi, "estimator", str, cfg.estimator, w)
    cfg.mi_seeds = _get(mi, "seeds", int, cfg.mi_seeds, w)
    cfg.mi_folds = _get(mi, "folds", int, cfg.mi_folds, w)
    pca = _get(mi, "pca", int, cfg.pca, w)
    cfg.pca = pca or None
    cfg.mi_level = float(_get(mi, "level", (int, float), cfg.mi_level, w))
    cfg.mi_controls = _get(mi, "controls", bool, cfg.mi_controls, w)
    cfg.mi_codelength = _get(mi, "codelength", bool, cfg.mi_codelength, w)
    cfg.mi_rare_classes = _get(mi, "rare_classes", str, cfg.mi_rare_classes, w)
    cfg.mi_permutations = _get(mi, "permutations", int, cfg.mi_permutations, w)
    if cfg.mi_permutations < 0:
        raise PipelineError(f"{path}: [mi] permutations = {cfg.mi_permutations}: give 0 (none) or more, e.g. 19")
    cfg.delta = float(_get(chk, "delta", (int, float), cfg.delta, w))
    check_unread_keys(doc, w)  # a misspelt key is refused, never run with the default
    return cfg


def _checkpoint_entries(entries, cfg: PipelineConfig, path: Path) -> list[dict]:
    """[[checkpoints]] entries checked against [design], their paths relative to the pipeline file."""
    entries = list(entries)
    for i, ck in enumerate(entries):
        missing = [k for k in ("name", "condition", "seed") if k not in ck]
        if "ckpt" not in ck and "store" not in ck:
            missing.append("ckpt (or store, a store you extracted)")
        if missing:
            raise PipelineError(f"{path}: [[checkpoints]] entry {i + 1} lacks {', '.join(missing)}")
        for key in ("ckpt", "adapter", "base", "store"):  # relative to the pipeline file, as [data] file
            if isinstance(ck.get(key), str) and not Path(ck[key]).is_absolute() and (path.parent / ck[key]).exists():
                ck[key] = str((path.parent / ck[key]).resolve())
        if "target" in ck and (not isinstance(ck["target"], list) or tuple(map(str, ck["target"])) not in cfg.targets):
            raise PipelineError(f"{path}: checkpoint {ck['name']!r} has target {ck['target']!r}, not [design] "
                                f"target or one of extra_targets")
        if ck["condition"] not in cfg.conditions:
            raise PipelineError(f"{path}: checkpoint {ck['name']!r} has condition {ck['condition']!r} "
                                f"not in [design] conditions {list(cfg.conditions)}")
    return entries


def demo_config(quick: bool = False, out: str = "reports/demo") -> PipelineConfig:
    """The embedded default of `matprobe demo` (= experiments/demo/pipeline.toml)."""
    # grid: one image per prompt; a multi-image prompt (5 images) doubles the CPU cost of a
    # training step at this size (0.53 vs 0.28 s, RESULTS.md, issue 13)
    # 60 steps at lr 4e-3 (not 120 at 2e-3): two held-out targets make 12 checkpoints, and the
    # demo stays under 3 minutes on 2 cores; the final training loss is about the same
    # (1.15 vs 1.14 nats, RESULTS.md, issue 13)
    cfg = PipelineConfig(out=out, demo_data=True, extra_targets=(("MRI", "Brain", "Segmentation"),),
                         rendering="grid", n_per_triplet=48, train_steps=60, train_lr=4e-3,
                         mi_seeds=3,  # 3 seeds, not the default 5: 13 -> 9 CPU-s per MI cell
                         # the control task and online codelength beside each term (issue 25); a
                         # permutation null would cost 19x the MI step, so the demo leaves it out
                         mi_controls=True, mi_codelength=True,
                         portable_numerics=True)  # the same bits whatever kernels the CPU offers (issue 20)
    if quick:
        cfg.n_per_triplet = 32
        cfg.train_steps = 15
        cfg.train_seeds = (0, 1)
        cfg.mi_seeds = 1
        cfg.mi_folds = 4  # 4, not 5: keeps --quick under a minute (RESULTS.md, issue 13)
        # the online codelength was a third of --quick's MI step (4.5 of 13.5 CPU s per cell, AMD
        # EPYC, seventeenth session): the full demo shows it; --quick keeps the control tasks
        cfg.mi_codelength = False
    return cfg


# ------------------------------------------------------------------------------ steps
def quiet_libraries() -> None:
    """Hide per-load progress bars and library chatter that would bury the run's own progress."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="peft")


def _one_torch_thread() -> None:
    """Worker-process initializer: the processes are the parallelism, so one torch thread each.
    In a portable-numerics run every worker checks its settings before it computes anything."""
    import torch

    from matprobe import numerics
    from matprobe.interrupts import ignore_in_worker

    ignore_in_worker()  # Ctrl-C is the parent's to handle (one line, not a traceback per worker)

    torch.set_num_threads(1)
    if os.environ.get(numerics.MARKER) == "1":
        numerics.ensure_portable_here()


def _map_in_workers(fn, jobs: list, names: list[str], workers: int, label: str, unit: str,
                    progress_bars: bool):
    """Yield (name, fn(job)) in order, the jobs run in up to `workers` processes (one torch thread
    each) behind one progress bar; fine-tuning, extraction and MI all run this way."""
    from matprobe.interrupts import stop_pool
    from matprobe.progress import track

    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=_one_torch_thread) as pool, \
            track(label, len(jobs), enabled=progress_bars, unit=unit) as bar:
        try:
            for name, res in zip(names, pool.map(fn, jobs)):
                bar.advance(description=name)
                yield name, res
        except (KeyboardInterrupt, GeneratorExit):  # Ctrl-C / SIGTERM (here or in the caller's loop):
            stop_pool(pool)  # stop the workers now instead of waiting for them; finished jobs are on disk
            raise


def _finetune_job(args: tuple) -> dict:
    """One (condition, seed) fine-tune in a worker process."""
    quiet_libraries()
    from matprobe.extract.finetune import finetune

    base, source, ids, out, steps, batch, lr, seed, rendering = args
    from matprobe.data.loaders import load_pipeline_data

    # the items read as the run's data step reads them: its column map, image root and task level
    by_id = {s.id: s for s in load_pipeline_data(*source)}
    res = finetune(base, [by_id[i] for i in ids], out, steps=steps, batch_size=batch, lr=lr, seed=seed,
                   rendering=rendering)
    return {"out": str(res.out), "seconds": res.seconds, "final_loss": float(np.mean(res.losses[-10:]))}


def _extract_job(config):
    """One store's extraction in a worker process."""
    from matprobe.extract.runner import extract

    quiet_libraries()
    return extract(config)


def mi_step(store, factors, layer: str, pool: str, out=None, *, estimator: str = DEFAULTS.estimator,
            seeds: int = DEFAULTS.seeds, folds: int = DEFAULTS.folds, pca: int | None = DEFAULTS.pca,
            level: float = DEFAULTS.level, controls: bool = False, codelength: bool = False,
            permutations: int = 0, rare_classes: str = "refuse"):
    """The pipeline's MI step for one (store, layer, pool): the chain terms (with their strata),
    written to `out` when given. Same settings, same numbers as `matprobe mi` and `matprobe.mi`."""
    from matprobe.mi.chain import run_store, write_results

    # the direct joint term and chain differences are cross-checks `matprobe mi` offers; the
    # pipeline needs the terms (and their strata) only
    result, meta = run_store(store, list(factors), layer, pool, estimators=[estimator], seeds=seeds,
                             folds=folds, pca=pca, ci_level=level, difference=False, direct=False,
                             controls=controls, codelength=codelength, permutations=permutations,
                             rare_classes=rare_classes)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_results(result, out, store=meta["store"], fingerprint=meta["fingerprint"],
                      layer=meta["layer"], pool=meta["pool"], numerics=meta.get("numerics"))
    return result


def _mi_job(args: tuple) -> str:
    """One (store, layer, pool) MI chain in a worker process."""
    store, factors, layer, pool, out, estimator, seeds, folds, pca, level, baselines = args
    mi_step(store, factors, layer, pool, out, estimator=estimator, seeds=seeds, folds=folds, pca=pca,
            level=level, **baselines)
    return out


def _up_to_date(result: str, ck: dict, cfg: PipelineConfig | None = None,
                factors: list[str] | tuple[str, ...] | None = None, baselines: bool = True) -> bool:
    """An MI result can be reused only if it was computed on the store's current content, and
    (given `cfg`) with every MI setting it depends on: the chain's factors in their order (`cfg`'s,
    or `factors`: the source chains' (modality, source) and (source, modality)), estimator, seeds,
    folds, PCA, level and baselines (none with `baselines=False`, as the source chains are run)."""
    return _stale_reason(result, ck, cfg, factors, baselines) is None


def _stale_reason(result: str, ck: dict, cfg: PipelineConfig | None = None,
                  factors: list[str] | tuple[str, ...] | None = None, baselines: bool = True) -> str | None:
    """Why an MI result is recomputed ("new": none yet), or None where it is reused (`_up_to_date`)."""
    from matprobe.data.model import resolve_factor
    from matprobe.store_checks import mi_file_matches

    path = Path(result)
    if not path.exists():
        return "new"
    if ck.get("fresh_store") or not mi_file_matches(path, ck["store"]):
        return "its store changed"
    if cfg is None:
        return None
    recorded = _recorded(path)
    if recorded is None:
        return "its file is not a readable MI result"
    factors = cfg.factors if factors is None else factors
    # the factors too: a study's rerun after `[mi] factors` changed kept the old chain's terms
    # (I(Z;label|...) still in the report, whose configuration table named the new factors)
    if [resolve_factor(f) for f in recorded.factors] != [resolve_factor(f) for f in factors]:
        return f"[mi] factors {','.join(recorded.factors)} -> {','.join(factors)}"
    # and the source chains' settings: a rerun after `[mi] level = 0.9` kept their 95% intervals
    # under the report's "90% interval" head (they were checked for their factors only)
    now = _mi_settings(cfg, baselines)
    if now != recorded.settings:
        changed = [k for k in dict.fromkeys([*now, *recorded.settings]) if now.get(k) != recorded.settings.get(k)]
        said = [f"{k} {recorded.settings.get(k)!r} -> {now.get(k)!r}" for k in changed
                if not isinstance(now.get(k, ""), dict) and not isinstance(recorded.settings.get(k, ""), dict)]
        return "MI settings " + ("; ".join(said[:3]) if said else "(the estimator's fitting)")
    # the merge of rare classes is recorded by what it merged (the data's, not a setting): a
    # result that merged is not what rare_classes = "refuse" asks for
    if recorded.merged_classes and cfg.mi_rare_classes == "refuse":
        return 'rare classes merged where [mi] rare_classes = "refuse"'
    # a result grouped otherwise than `mi` groups now: copies of its held-out rows among its
    # fitting rows, or distinct images with identical features kept together
    from matprobe.mi.chain import image_facts, stale_grouping

    notes = [e.note for items in recorded.terms.values() for _, e in items]
    return stale_grouping(image_facts(ck["store"], factors), cfg.estimator, notes)


def _mi_settings(cfg: PipelineConfig, baselines: bool = True) -> dict:
    """The MI settings an MI results file records (`chain_terms`' settings) for this run: its chains,
    or with `baselines=False` its source chains (run without controls, codelength or permutations)."""
    from matprobe.mi.chain import chain_settings

    if not baselines:
        return chain_settings([cfg.estimator], cfg.mi_seeds, cfg.mi_folds, cfg.pca, cfg.mi_level, DEFAULTS.seed)
    return chain_settings([cfg.estimator], cfg.mi_seeds, cfg.mi_folds, cfg.pca, cfg.mi_level, DEFAULTS.seed,
                          cfg.mi_permutations, cfg.mi_codelength, cfg.mi_controls)


def _has_sources(store) -> bool:
    """Whether a store has a source column naming two or more data sets for its labelled rows."""
    from matprobe.store import EmbeddingStore

    try:
        with EmbeddingStore.open(store) as st:
            if "source" not in st.label_columns():
                return False
            codes, _ = st.factor("source")
    except (OSError, MatprobeError):
        return False
    return len(set(codes[codes >= 0].tolist())) >= 2 and bool((codes >= 0).all())


def _recorded(path):
    """An MI results file as its `ChainResult` (settings, factors), or None when unreadable."""
    from matprobe.mi.chain import ChainResult

    try:
        return ChainResult.read(path)
    except (MatprobeError, KeyError, TypeError):
        return None


def _workers(cfg: PipelineConfig) -> int:
    return cfg.workers or max(1, min(4, os.cpu_count() or 1))


def training_rows_basis(dataset, cfg: PipelineConfig) -> str:
    """How a run takes each condition's training rows: "equalised" (the tiny models it fine-tunes
    itself: a random subset of the training triplets' rows, only those marked split = train where
    the manifest marks any, as `data split` takes them; the same size per condition), or for
    checkpoints trained elsewhere, which matprobe cannot see, every row of the training triplets,
    "split" where the manifest marks rows split = train (only those), else "triplets"."""
    if not cfg.checkpoints:
        return "equalised"
    return "split" if any(s.split == "train" for s in dataset) else "triplets"


def _training_ids(dataset, cfg: PipelineConfig, target=None) -> dict[str, list[str]]:
    from matprobe.data import make_split

    target = tuple(target or cfg.target)
    basis = training_rows_basis(dataset, cfg)
    splits = {}
    for cond in cfg.conditions:
        # `data split`'s rule (make_split(marked_only=True)): where the manifest marks rows split = train,
        # its other rows never train, whichever way the run takes its rows (a study's [train] run trained on
        # its rows marked split = test, 64 rows where `data split` wrote 48)
        split = make_split(dataset, target, cond, marked_only=True)
        splits[cond] = [s.id for s in split if s.split == "train"]
    if basis != "equalised":
        # checkpoints trained elsewhere were trained on what they were: a random subset here would be
        # a training set that never was (the PAC bounds' training error is measured on these rows)
        return {c: sorted(v) for c, v in splits.items()}
    size = cfg.train_size or min(len(v) for v in splits.values())
    rng = np.random.default_rng(cfg.data_seed)
    # equal training-set sizes, so a difference is not just more data (CrossMed §V caps per triplet)
    return {c: sorted(rng.permutation(v)[:size].tolist()) for c, v in splits.items()}


@dataclass
class StepTimer:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, t0: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def earlier_runs_seconds(run: Path) -> tuple[dict[str, float], int]:
    """The wall seconds per step that every earlier `run` in this run directory spent, summed,
    and how many runs they were, from the run.json the last of them wrote (none: ({}, 0)).

    A rerun takes finished stores and MI files as they are, so its own step times are what it
    cost to check them (seconds where the first run took minutes); these sums are what the study
    cost. A run.json from before the sums were kept counts as one run of its own times."""
    try:
        prev = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        return {}, 0
    if not isinstance(prev, dict) or not isinstance(prev.get("seconds"), dict):
        return {}, 0
    spent = prev.get("seconds_all_runs")
    runs = prev.get("runs")
    if not isinstance(spent, dict) or not isinstance(runs, int):
        spent, runs = prev["seconds"], 1
    return {k: float(v) for k, v in spent.items() if isinstance(v, (int, float))}, runs


def _with_earlier_runs(summary: dict, earlier: tuple[dict[str, float], int]) -> dict:
    """run.json's content with `seconds_all_runs` (this run's step times plus every earlier run's
    in this directory) and `runs` (how many, this one included)."""
    spent, runs = earlier
    now = summary["seconds"]
    summary["seconds_all_runs"] = {k: spent.get(k, 0.0) + now.get(k, 0.0) for k in {**spent, **now}}
    summary["runs"] = runs + 1
    return summary


def run_pipeline(cfg: PipelineConfig, progress: Callable[[str], None] | None = None,
                 progress_bars: bool = False) -> Path:
    """Run every step; return the run directory (with run.json and the report).
    `progress` receives one line per finished step; `progress_bars` adds the progress display
    (matprobe.progress) for fine-tuning, extraction and MI.

    Steps: data, checkpoints (fine-tuned here or given), extraction, the MI chain per (store,
    layer, pool), the checks, per-run results and significance, run.json and the report."""
    from matprobe import numerics
    from matprobe.preflight import check_pipeline

    check_pipeline(cfg)  # mistakes in the file, manifest or checkpoints: refused before torch loads
    # before torch loads here: the study runs in a process started with the pinned settings
    if cfg.portable_numerics and numerics.supported_platform() and not numerics.started_portable():
        return _run_portable(cfg, progress, progress_bars)
    say = progress or (lambda msg: None)
    _prepare_this_process(cfg, say)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    # one `run` per run directory: a second one started beside it is refused here (its preflight
    # refuses it once this lock is held), where both used to fail on each other's store locks
    lock = run_lock(run)
    try:
        return _run_steps(cfg, run, say, progress_bars)
    finally:
        lock.release()


def run_lock(run: Path):
    """The held lock of run directory `run` (RUN/.run.lock), or a one-line error naming its holder."""
    from matprobe.errors import InUseError
    from matprobe.locks import writer_lock
    from matprobe.preflight import run_in_use

    try:
        return writer_lock(run / "run").acquire()
    except InUseError:
        raise InUseError(run_in_use(run)) from None


def _run_steps(cfg: PipelineConfig, run: Path, say, progress_bars: bool) -> Path:
    """`run_pipeline`'s steps in its run directory, whose lock the caller holds."""
    timer = StepTimer()
    earlier = earlier_runs_seconds(run)  # before this run's run.json replaces the last one's

    t0 = time.perf_counter()
    dataset, manifest = _load_study_data(cfg, run, say)
    # what the RGB conversion does to image files (more than 8 bits, transparency: data.images) and
    # the classes the MI step will merge
    from matprobe.data.images import image_notes

    notes = image_notes(dataset) + [note for note in (_rare_class_note(dataset, cfg), _single_class_note(dataset, cfg))
                                    if note]
    for note in notes:  # before extraction (hours on a GPU), not after; run.json keeps them for the report
        say(f"warning: {manifest}: {note}")
    timer.add("data", t0)
    t0 = time.perf_counter()
    ids_by_target = {tgt: _training_ids(dataset, cfg, tgt) for tgt in cfg.targets}
    for note in _shared_image_notes(dataset, cfg, ids_by_target):  # said before any training or extraction
        say(f"warning: {manifest}: {note}")
        notes.append(note)
    checkpoints = _checkpoints(cfg, run, manifest, ids_by_target, say, progress_bars)
    timer.add("checkpoints", t0)
    t0 = time.perf_counter()
    checkpoints = _extract_stores(cfg, run, dataset, checkpoints, ids_by_target, say, progress_bars)
    timer.add("extract", t0)
    t0 = time.perf_counter()
    _estimate_mi(cfg, checkpoints, say, progress_bars)
    timer.add("mi", t0)
    t0 = time.perf_counter()
    _run_checks(cfg, run, checkpoints)
    timer.add("check", t0)
    t0 = time.perf_counter()
    significance, untested = _write_results(cfg, run, checkpoints)
    notes = [*(notes or []), *untested]
    timer.add("significance", t0)
    summary = _run_summary(cfg, run, dataset, manifest, ids_by_target, checkpoints, significance, timer,
                           notes)
    write_text_atomic(run / "run.json", json.dumps(_jsonable(_with_earlier_runs(summary, earlier)), indent=2))
    t0 = time.perf_counter()
    from matprobe.report.render import write_report

    write_report(run)
    check_report_figures(run)
    timer.add("report", t0)
    summary["seconds"] = timer.seconds
    write_text_atomic(run / "run.json", json.dumps(_jsonable(_with_earlier_runs(summary, earlier)), indent=2))
    return run


def check_report_figures(run: Path) -> None:
    """Raise PipelineError where report.md links a figure (PNG or its SVG) missing from the run
    directory: a rerun must leave every figure its report links (a study's rerun read a report
    linking figures/pointwise.png, gone from figures/)."""
    import re

    report = Path(run) / "report.md"
    if not report.is_file():
        return
    linked = dict.fromkeys(re.findall(r"\]\((figures/[^)\s]+)\)", report.read_text()))
    missing = [rel for rel in linked if not (Path(run) / rel).is_file()]
    if missing:
        raise PipelineError(f"{report} links {', '.join(missing)}, missing from {run}; run `matprobe report {run}` "
                            "to draw the figures again")


def _shared_image_notes(dataset, cfg: PipelineConfig, ids_by_target) -> list[str]:
    """Per (target, condition): training items whose image file is a held-out item's
    (`data.splits.shared_image_pairs`). Checkpoints given as they are were trained elsewhere: their
    training rows are not these, so nothing is said of them."""
    from matprobe.data.splits import shared_image_note, shared_image_pairs

    if cfg.checkpoints:
        return []
    out = []
    for tgt in cfg.targets:
        held_out = [s.id for s in dataset if s.triplet == tuple(tgt)]
        for cond in cfg.conditions:
            train = ids_by_target[tgt][cond]
            note = shared_image_note(shared_image_pairs(dataset, train, held_out),
                                     f"the {len(train)} {cond} training items for {','.join(tgt)}")
            if note:
                out.append(note)
    return out


def _single_class_note(dataset, cfg: PipelineConfig) -> str | None:
    """The MAT factors with one class in the data (a study of one task), which the chain leaves out
    (`check_pipeline` refuses them in [mi] factors); None when every factor varies."""
    from matprobe.data.design import single_class_factors

    single = single_class_factors(dataset, [f for f in ("modality", "anatomy", "task") if f not in cfg.factors])
    if not single:
        return None
    parts = ", ".join(f"{name} ({label!r})" for name, label in single.items())
    return (f"one class in the data for {parts}: left out of the MI chain, whose terms for it would be 0 by "
            "definition; the strata given the other factors are the (modality, anatomy, task) strata")


def _rare_class_note(dataset, cfg: PipelineConfig) -> str | None:
    """What `[mi] rare_classes = "merge"` will merge (every store holds the manifest's rows and
    labels), said before extraction; None when nothing is that small. Raises DataError where the
    merge leaves a factor one class (every class rare): the MI step would refuse it after
    extraction."""
    from matprobe.data.model import resolve_factor
    from matprobe.mi.chain import merge_rare_classes
    from matprobe.mi.merge import class_rows, merge_words

    if cfg.mi_rare_classes != "merge":
        return None
    try:
        factors = {f: dataset.codes(f) for f in cfg.factors}
    except DataError:  # a factor the manifest lacks: the MI step says so itself
        return None
    labels = {f: dataset.vocabularies[resolve_factor(f)].labels for f in cfg.factors}
    merged_codes, _, merged = merge_rare_classes(factors, list(cfg.factors), cfg.mi_folds, labels)
    if not merged:
        return None
    for f, m in merged.items():  # what the MI step would refuse after extraction
        fix = f"add samples, lower [mi] folds (= {cfg.mi_folds}), or drop {f!r} from [mi] factors"
        if np.unique(merged_codes[f]).size < 2:
            raise DataError(f"[mi] factors: every class of {f!r} has fewer than {m['need']} rows (2 per fold), so "
                            f"merged they are one class and its terms are 0 by definition; {fix}")
        if m["rows"] < m["need"]:
            raise DataError(f"[mi] factors: the rare classes of {f!r} merged hold {m['rows']} rows, still fewer than "
                            f"{m['need']} (2 per fold); {fix}")
    # which classes were under the minimum and which joined them to reach it, with their rows (an
    # audit read "fewer than 6 rows ... (label: 2 classes (14 rows))" where one class had 11)
    parts = [merge_words(f, m, class_rows(_class_names(factors[f], labels[f]), m["classes"]))
             for f, m in merged.items()]
    need = next(iter(merged.values()))["need"]
    return (f"classes with fewer than {need} rows (2 per fold) are merged into one class per factor for the MI "
            f"estimates, joined by the factor's smallest other class where together they are still fewer "
            f"({'; '.join(parts)}): "
            "the terms of those factors are flagged merged-rare-classes, and a merged factor's own term is at "
            'most what it would be with every class (data processing); [mi] rare_classes = "refuse" stops at '
            "them instead")


def _class_names(codes, vocabulary) -> np.ndarray:
    """A factor's codes as its class names, as `merge_rare_classes` names them."""
    codes = np.asarray(codes)
    return np.asarray([str(vocabulary[int(c)]) for c in codes.reshape(-1)], dtype=object)


def _prepare_this_process(cfg: PipelineConfig, say) -> None:
    """Portable numerics checked (or a note where they do not apply), one torch thread, quiet libraries."""
    from matprobe import numerics

    if cfg.portable_numerics:
        if numerics.supported_platform():
            numerics.ensure_portable_here()
        else:
            say("note: portable numerics are x86-64 Linux settings; on this platform the numbers may differ "
                "from the README's in the last digits")
    import torch

    torch.set_num_threads(1)
    quiet_libraries()


def _study_source(cfg: PipelineConfig, manifest: Path) -> tuple:
    """(manifest, image root, column map, task level): how `data.loaders.load_pipeline_data` reads
    this run's items, in the data step and in each fine-tuning worker."""
    if cfg.demo_data:  # the demo's manifest, written by the run in the expected columns
        return str(manifest), None, None, "subset"
    return str(manifest), cfg.image_root, dict(cfg.columns) or None, cfg.task_level


def _load_study_data(cfg: PipelineConfig, run: Path, say):
    """(dataset, manifest path): the demo's packaged data built once in the run, or the user's manifest."""
    if cfg.demo_data:
        from matprobe.data.demo import DemoSpec, build_demo_dataset

        manifest = run / "data" / "manifest.jsonl"
        if not manifest.exists():
            say(f"building the demo dataset ({cfg.n_per_triplet} samples per triplet)")
            build_demo_dataset(run / "data", DemoSpec(cfg.n_per_triplet, cfg.image_size, cfg.data_seed))
    else:
        manifest = Path(cfg.data_file)
    from matprobe.data.loaders import load_pipeline_data

    dataset = load_pipeline_data(*_study_source(cfg, manifest))
    say(f"dataset: {len(dataset)} samples, {dataset.triplets().size} triplets")
    return dataset, manifest


def _checkpoints(cfg: PipelineConfig, run: Path, manifest: Path, ids_by_target, say, progress_bars) -> list[dict]:
    """One entry per checkpoint: the [[checkpoints]] of the pipeline file, or tiny models fine-tuned
    here per (target, condition, seed) in worker processes (those already saved are kept)."""
    checkpoints: list[dict] = []
    if cfg.checkpoints:
        for ck in cfg.checkpoints:
            tgt = tuple(ck.get("target") or cfg.target)
            checkpoints.append({"name": ck["name"], "condition": ck["condition"], "seed": int(ck["seed"]),
                                "ckpt": ck.get("ckpt"), "adapter": ck.get("adapter"), "base": ck.get("base"),
                                "trained_here": False, "target": list(tgt), "given_store": ck.get("store"),
                                # original LLaVA checkpoints: their tower folder and conversation template
                                **{k: ck[k] for k in ("vision_tower", "template") if k in ck}})
        return checkpoints
    from matprobe.extract.tiny import build_tiny_checkpoint

    base = run / "checkpoints" / "base"
    if not base.exists():
        build_tiny_checkpoint(base, "llava", seed=cfg.base_seed)
    jobs, names, records, stale = [], [], {}, []
    for tgt in cfg.targets:
        for cond in cfg.conditions:
            for seed in cfg.train_seeds:
                name = f"{_target_prefix(cfg, tgt)}{cond}-s{seed}"
                out = run / "checkpoints" / name
                ids = ids_by_target[tgt][cond]
                checkpoints.append({"name": name, "condition": cond, "seed": int(seed), "ckpt": str(out),
                                    "adapter": None, "base": None, "trained_here": True,
                                    "n_train": len(ids), "target": list(tgt)})
                records[name] = training_record(cfg, ids, int(seed))
                if not (out / "config.json").exists():
                    jobs.append((str(base), _study_source(cfg, manifest), ids, str(out), cfg.train_steps,
                                 cfg.train_batch_size, cfg.train_lr, int(seed), cfg.rendering))
                    names.append(name)
                elif (why := _training_differs(run, name, records[name], tgt, cond)):
                    stale.append(f"{name} ({why})")
    if stale:  # kept, they would be reported under this run's [train] settings and training rows
        raise PipelineError(
            f"{run}: checkpoint(s) fine-tuned with other [train] settings or training rows than this run's: "
            f"{'; '.join(stale)}; delete those folders in {run / 'checkpoints'} and their stores in "
            f"{run / 'stores'} to fine-tune and extract them again, or set another [run] out")
    for name in records:  # the checkpoints kept as they are, recorded by runs before the record existed
        if name not in names and not _training_record_path(run, name).exists():
            write_text_atomic(_training_record_path(run, name), json.dumps(records[name], indent=2))
    if jobs:
        say(f"fine-tuning {len(jobs)} tiny checkpoints ({cfg.train_steps} steps each, "
            f"{_workers(cfg)} processes)")
        for name, res in _map_in_workers(_finetune_job, jobs, names, _workers(cfg), "fine-tuning",
                                         "checkpoints", progress_bars):
            write_text_atomic(_training_record_path(run, name), json.dumps(records[name], indent=2))
            say(f"  {name}: {res['seconds']:.1f} s, final loss {res['final_loss']:.3f}")
    return checkpoints


def training_record(cfg: PipelineConfig, ids, seed: int) -> dict:
    """What a checkpoint fine-tuned here depends on: the [train] settings and its training rows
    (their ids, by digest), recorded beside it (RUN/checkpoints/<name>.training.json)."""
    import hashlib

    return {"steps": cfg.train_steps, "batch_size": cfg.train_batch_size, "lr": cfg.train_lr, "seed": seed,
            "base_seed": cfg.base_seed, "rendering": cfg.rendering, "n_train": len(ids),
            "train_ids_sha256": hashlib.sha256("\x1f".join(sorted(map(str, ids))).encode()).hexdigest()}


def _training_record_path(run: Path, name: str) -> Path:
    return run / "checkpoints" / f"{name}.training.json"


def _training_differs(run: Path, name: str, record: dict, target, cond: str) -> str | None:
    """Why checkpoint `name` (fine-tuned here before) is not what `record` asks for, or None. A run
    before the record existed: its training rows as its condition manifest marks them (split = train
    in RUN/data/<condition>.jsonl, which that run wrote from them), its settings unknown."""
    path = _training_record_path(run, name)
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            diff = [k for k in record if old.get(k) != record[k]]
            if not diff:
                return None
            rows = {"n_train", "train_ids_sha256"}
            said = [f"{k} {old.get(k)} vs {record[k]}" for k in diff if k not in rows]
            if rows & set(diff):
                said.append(f"training rows {old.get('n_train')} vs {record['n_train']}" if old.get("n_train")
                            != record["n_train"] else "other training rows, as many")
            return ", ".join(said)
    cond_file = run / "data" / f"{_target_prefix_name(name, cond)}{cond}.jsonl"
    if not cond_file.is_file():
        return None
    marked = []
    with open(cond_file) as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                return None
            if isinstance(row, dict) and row.get("split") == "train":
                marked.append(str(row.get("id")))
    import hashlib

    if hashlib.sha256("\x1f".join(sorted(marked)).encode()).hexdigest() == record["train_ids_sha256"]:
        return None
    return f"training rows {len(marked)} vs {record['n_train']}"


def _target_prefix_name(name: str, cond: str) -> str:
    """The target prefix of a checkpoint's name ('' for the first target): `_target_prefix` read back."""
    head = name.rsplit("-s", 1)[0]
    return head[: len(head) - len(cond)]


def _extract_stores(cfg: PipelineConfig, run: Path, dataset, checkpoints, ids_by_target, say,
                    progress_bars) -> list[dict]:
    """A store per checkpoint (each (target, condition) manifest marks its split); given stores are
    used as they are. Returns the checkpoints in their original order with their store and MI paths."""
    with _staged_condition_manifests(cfg, run, dataset, ids_by_target) as (cond_manifest, names):
        return _extract_each(cfg, run, checkpoints, cond_manifest, names, say, progress_bars)


@contextlib.contextmanager
def _staged_condition_manifests(cfg: PipelineConfig, run: Path, dataset, ids_by_target):
    """({(target, condition): the manifest its stores are extracted from}, {that file: the run's name
    for it, RUN/data/<condition>.jsonl}).

    Each is written beside its name (a hidden `.<name>.*.jsonl`) and takes the name only when the
    block succeeds: a run that the extraction refuses (records changed under a finished store,
    another setting) or that fails leaves RUN/data as it was, the copies its stores and results
    were made from, with nothing beside them. One equal to the file there already is used as it
    is, not written again."""
    folder = run / "data"
    made_folder = not folder.exists()
    staged: dict[Path, Path] = {}  # written beside its name -> the name
    paths, names = {}, {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for tgt in cfg.targets:
            for c in cfg.conditions:
                final = folder / f"{_target_prefix(cfg, tgt)}{c}.jsonl"
                fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".jsonl", dir=folder)
                os.close(fd)
                staged[Path(name)] = final
                path = condition_manifest(dataset, set(ids_by_target[tgt][c]), tgt, Path(name))
                if final.is_file() and final.read_bytes() == path.read_bytes():
                    path.unlink()
                    del staged[path]
                    path = final
                paths[(tgt, c)], names[path] = path, final
        yield paths, names
    except BaseException:
        for path in staged:
            path.unlink(missing_ok=True)
        if made_folder and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    for path, final in staged.items():
        os.replace(path, final)


def _extract_each(cfg: PipelineConfig, run: Path, checkpoints, cond_manifest, names, say,
                  progress_bars) -> list[dict]:
    """`_extract_stores` from the condition manifests written (`_staged_condition_manifests`)."""
    from matprobe.extract.runner import ExtractConfig, extract, resume_refusal, reuse_complete_store

    extract_jobs = []
    order = {ck["name"]: i for i, ck in enumerate(checkpoints)}
    given = [ck for ck in checkpoints if ck.get("given_store")]  # stores you extracted: used as they are
    checkpoints = [ck for ck in checkpoints if not ck.get("given_store")]
    for ck in checkpoints:
        store = run / "stores" / f"{ck['name']}.h5"
        ck["store"] = str(store)
        store.parent.mkdir(parents=True, exist_ok=True)
        extract_jobs.append(ExtractConfig(
            ckpt=ck["ckpt"], adapter=ck.get("adapter"), base=ck.get("base"),
            data=str(cond_manifest[(tuple(ck["target"]), ck["condition"])]), rendering=cfg.rendering,
            out=str(store), layers=cfg.layers, pools=cfg.pools, batch_size=cfg.extract_batch_size,
            dtype=cfg.dtype, device=cfg.device, max_pixels=cfg.max_pixels, image_root=cfg.image_root,
            vision_tower=ck.get("vision_tower"), template=ck.get("template"),
        ))
    # every store made from other inputs is named at once: one refusal per attempt took a study four
    # rounds of delete-and-rerun after one image changed
    refused = [resume_refusal(job) for job in extract_jobs]
    refusals = [msg for msg in refused if msg]
    if len(refusals) > 1:
        listed = " | ".join(_in_run_words(msg, cfg, names, advice=False) for msg in refusals)
        raise ProvenanceMismatch(
            f"{len(refusals)} of the run's {len(extract_jobs)} stores were made from other inputs than these: "
            f"{listed}; in `matprobe run` (which has no --overwrite): delete those store files to extract them "
            "again, or set another [run] out")
    # CPU stores are extracted in worker processes like the fine-tuning (one torch thread each);
    # a GPU run extracts one store at a time in this process. A store that is complete and made
    # from these inputs is taken as it is first: a rerun loads no model for it
    try:
        results = [None if msg else reuse_complete_store(job) for job, msg in zip(extract_jobs, refused)]
        taken = {i for i, res in enumerate(results) if res is not None}
        todo = [i for i in range(len(results)) if i not in taken]
        jobs, job_names = [extract_jobs[i] for i in todo], [checkpoints[i]["name"] for i in todo]
        if cfg.device == "cpu" and min(_workers(cfg), len(jobs)) > 1:
            done = [res for _, res in _map_in_workers(_extract_job, jobs, job_names, _workers(cfg), "extract",
                                                      "stores", progress_bars)]
        else:
            done = [extract(job, progress=progress_bars) for job in jobs]
    except MatprobeError as exc:
        raise type(exc)(_in_run_words(str(exc), cfg, names)) from None
    for i, res in zip(todo, done):
        results[i] = res
    for i, (ck, res) in enumerate(zip(checkpoints, results)):
        _mi_paths(ck, res.layers, res.pools, run)
        ck["fresh_store"] = res.n_computed > 0
        say(f"store {ck['name']}: complete, made from these inputs (no model loaded)" if i in taken else
            f"extracted {ck['name']}: {res.n_computed} new samples in {res.seconds:.1f} s")
    for ck in given:
        from matprobe.store import EmbeddingStore

        with EmbeddingStore.open(ck["given_store"]) as st:
            keys = st.feature_keys()
        ck["store"], ck["fresh_store"] = ck["given_store"], False
        _mi_paths(ck, list(dict.fromkeys(a for a, _ in keys)), list(dict.fromkeys(b for _, b in keys)), run)
    return sorted(checkpoints + given, key=lambda ck: order[ck["name"]])


def _in_run_words(message: str, cfg: PipelineConfig, copies: dict[Path, Path], advice: bool = True) -> str:
    """An extraction error said as `run` is used: the run's own copies of the manifest ({the file
    extracted from: its name in the run}) named as the user's file (they are rewritten from it on
    every run; the demo's by their name in the run), and the extract options its fixes name
    (--overwrite, another --out) as what a run has instead (a store changed inputs or settings
    would be recomputed from)."""
    for copy, name in copies.items():
        message = message.replace(str(copy), str(cfg.data_file or name))
    message = message.replace("than --data", f"than {cfg.data_file or 'the data'}")
    if advice and ("--overwrite" in message or "--out" in message):
        message += ("; in `matprobe run` (which has no --overwrite): delete that store file to extract it again, "
                    "or set another [run] out")
    return message


def _estimate_mi(cfg: PipelineConfig, checkpoints, say, progress_bars) -> None:
    """The MI chain for every (checkpoint, layer, pool) cell not already up to date, in workers;
    with a source column of two or more data sets, also the chains (modality, source) and (source,
    modality) at the main cell: I(Z;source|M) and I(Z;M|source), where identifiable (issue 25)."""
    baselines = {"controls": cfg.mi_controls, "codelength": cfg.mi_codelength, "permutations": cfg.mi_permutations,
                 "rare_classes": cfg.mi_rare_classes}
    mi_jobs, reasons = [], []  # reasons: why each job's result is (re)computed (`_stale_reason`)
    for ck in checkpoints:
        for lp, path in ck["mi"].items():
            if (why := _stale_reason(path, ck, cfg)) is not None:
                mi_jobs.append((ck["store"], list(cfg.factors), lp.split("/")[0], lp.split("/")[1], path,
                                cfg.estimator, cfg.mi_seeds, cfg.mi_folds, cfg.pca, cfg.mi_level, baselines))
                reasons.append(why)
    plain = {"controls": False, "codelength": False, "permutations": 0, "rare_classes": cfg.mi_rare_classes}
    for ck in checkpoints:
        if not _has_sources(ck["store"]):
            continue
        lp = next(k for k, v in ck["mi"].items() if v == ck["main_mi"])
        base = Path(ck["main_mi"]).with_suffix("")
        ck["source_mi"] = {"modality,source": f"{base}__modality_source.json",
                           "source,modality": f"{base}__source_modality.json"}
        for order, path in ck["source_mi"].items():
            if (why := _stale_reason(path, ck, cfg, factors=order.split(","), baselines=False)) is not None:
                mi_jobs.append((ck["store"], order.split(","), lp.split("/")[0], lp.split("/")[1], path,
                                cfg.estimator, cfg.mi_seeds, cfg.mi_folds, cfg.pca, cfg.mi_level, plain))
                reasons.append(why)
    if mi_jobs:
        say(f"estimating the MI chain for {len(mi_jobs)} (checkpoint, layer, pool) cells "
            f"({cfg.estimator}, {cfg.mi_seeds} seeds x {cfg.mi_folds} folds)")
        # what an earlier run left that is recomputed, and why (a rerun after an [mi] edit redid every
        # cell without a word, beside the stores it said it reused)
        for why, n in Counter(why for why in reasons if why != "new").items():
            say(f"  {n} of them recomputed: {why}")
        for name, _ in _map_in_workers(_mi_job, mi_jobs, [Path(job[4]).name for job in mi_jobs], _workers(cfg),
                                       "mi", "cells", progress_bars):
            say(f"  wrote {name}")


def _run_checks(cfg: PipelineConfig, run: Path, checkpoints) -> None:
    """Fano and PAC against each checkpoint's errors (`theory.check`), written to run/check."""
    from matprobe.theory.check import run_check, write_check

    for ck in checkpoints:
        train_risk, n_train = training_risk(ck["store"])
        params, bits, bits_source = model_size(ck, cfg)
        if params is None:  # no safetensors to count (e.g. .bin weights): no training-set PAC bounds
            train_risk = n_train = None
        check = run_check(ck["store"], ck["main_mi"], delta=cfg.delta, emp_risk=train_risk, n_train=n_train,
                          params=params, bits_per_param=bits,
                          heldout_target=tuple(map(str, ck["target"])) if ck.get("target") else None,
                          training={"rows": TRAINING_RISK_ROWS, "bits_source": bits_source,
                                    "params_source": ("as configured" if ck.get("params") else
                                                      "counted in the checkpoint's safetensors")})
        check_path = run / "check" / f"{ck['name']}.json"
        write_check(check, check_path)
        ck["check"] = str(check_path)


def _write_results(cfg: PipelineConfig, run: Path, checkpoints):
    """results.csv (one row per run) and significance.csv (Table IX); returns the latter (or None)
    and the sentences on comparisons left untested."""
    results = per_run_results(checkpoints, cfg)
    with atomic_path(run / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    significance, untested = significance_table(results, cfg)
    if significance is not None:
        with atomic_path(run / "significance.csv") as tmp:
            significance.to_csv(tmp, index=False)
    return significance, untested


def _run_summary(cfg: PipelineConfig, run: Path, dataset, manifest, ids_by_target, checkpoints, significance,
                 timer, data_notes: list[str] | None = None) -> dict:
    """run.json's content: the settings, the data's composition, the checkpoints and their files."""
    from matprobe.data import FACTORS
    from matprobe.data.design import source_warnings
    from matprobe.environment import environment
    from matprobe.report.design import store_record

    train_ids = ids_by_target[tuple(cfg.target)]
    composition = dataset.frame().groupby(list(FACTORS)).size().rename("n").reset_index()
    samples = list(dataset)
    # factors fixed by the source data set (a manifest's source column): the report lists them
    by_source = source_warnings({**{f: [getattr(x, f) for x in samples] for f in FACTORS},
                                 "source": [x.source for x in samples]})
    return {
        **({"source_warnings": by_source} if by_source else {}),
        **({"data_warnings": list(data_notes)} if data_notes else {}),
        "kind": "matprobe.run", "format_version": RUN_FORMAT_VERSION,
        "config": _jsonable(asdict(cfg)), "target": list(cfg.target),
        "targets": [list(t) for t in cfg.targets],
        "manifest": run_relative(manifest, run), "n_samples": len(dataset),
        # the report draws the dataset from this, so it does not need data/ (not committed)
        "composition": composition.to_dict(orient="records"),
        "train_sizes": {c: len(v) for c, v in train_ids.items()},
        "train_rows": training_rows_basis(dataset, cfg),
        "train_sizes_by_target": {",".join(t): {c: len(v) for c, v in ids.items()}
                                  for t, ids in ids_by_target.items()},
        # what the report's one-option warnings read, so it needs no store (a committed run has none)
        "checkpoints": [_relative_paths({**ck, **store_record(ck["store"], ck.get("target"))}, run) for ck in checkpoints],
        "results": "results.csv",
        "significance": "significance.csv" if significance is not None else None,
        "tables_sha256": {name: file_sha256(run / name) for name in ("results.csv", "significance.csv")
                          if (run / name).is_file() and (name == "results.csv" or significance is not None)},
        "environment": environment(),
        "seconds": timer.seconds,
    }


def _mi_paths(ck: dict, layers, pools, run: Path) -> None:
    """A store's MI result file per (layer, pool) in run/mi, and its main one: the layer and
    pool every command picks by default (`matprobe.store.resolve_feature`)."""
    from matprobe.store import resolve_feature

    ck["layers"], ck["pools"] = list(layers), list(pools)
    ck["mi"] = {f"{lay}/{pool}": str(run / "mi" / f"{ck['name']}__{lay}__{pool}.json")
                for lay in layers for pool in pools}
    lay, pool = resolve_feature([(a, b) for a in layers for b in pools], path=ck["store"])
    ck["main_mi"] = ck["mi"][f"{lay}/{pool}"]


_SAY = "\x1ematprobe-step:"  # marks the child's step lines on its stdout


def _run_portable(cfg: PipelineConfig, progress, progress_bars: bool) -> Path:
    """run_pipeline in a fresh Python process started with matprobe.numerics.PORTABLE_ENV.

    Those settings are read when each library loads (glibc's before Python starts), so they
    cannot be switched on in this process; its step lines come back to `progress`, its
    progress bars share this terminal, and its exception is raised here."""
    import pickle
    import subprocess
    import sys
    import tempfile

    from matprobe import numerics
    from matprobe.progress import is_quiet
    from matprobe.progress import say as note

    env, overrides = numerics.portable_environment()
    for line in overrides:  # a user's setting is replaced, never silently
        note(f"note: {line} for this run (portable numerics: the same results on every x86-64 CPU; "
             f"docs/design.md)")
    # the child imports this same matprobe, whatever put it on this process's path
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                   env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="matprobe-run-") as tmp:
        job, result = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl"
        job.write_bytes(pickle.dumps((cfg, progress_bars, is_quiet())))
        proc = subprocess.Popen([sys.executable, "-c", "from matprobe.pipeline import _portable_child; "
                                 "_portable_child()", str(job), str(result)],
                                env=env, stdout=subprocess.PIPE, text=True)
        try:
            for line in proc.stdout:
                if line.startswith(_SAY):
                    if progress is not None:
                        progress(line[len(_SAY):].rstrip("\n"))
                else:
                    sys.stdout.write(line)
        except BaseException:
            numerics.stop_child(proc)
            raise
        rc = proc.wait()
        try:
            outcome = pickle.loads(result.read_bytes())
        except FileNotFoundError:
            outcome = None
        except Exception as exc:  # an exception class that does not unpickle
            outcome = PipelineError(f"the pipeline process failed and its error could not be read back ({exc})")
    if isinstance(outcome, BaseException):
        raise outcome
    if rc != 0 or not isinstance(outcome, str):
        raise RuntimeError(f"the pipeline process exited with status {rc} without a result")
    return Path(outcome)


def _portable_child() -> None:
    """Entry point of the process _run_portable starts: argv = job pickle, result pickle."""
    import pickle
    import sys
    import traceback

    from matprobe.progress import set_quiet

    job, result = Path(sys.argv[1]), Path(sys.argv[2])
    cfg, progress_bars, quiet = pickle.loads(job.read_bytes())
    set_quiet(quiet)
    try:
        outcome: object = str(run_pipeline(cfg, progress=lambda msg: print(_SAY + msg, flush=True),
                                           progress_bars=progress_bars))
    except BaseException as exc:  # noqa: BLE001  (handed to the parent, which raises it)
        if not isinstance(exc, MatprobeError):
            exc.add_note("in the pipeline process:\n" + "".join(traceback.format_exception(exc)))
        outcome = exc
    try:
        data = pickle.dumps(outcome)
    except Exception:
        data = pickle.dumps(RuntimeError(f"{type(outcome).__name__}: {outcome}"))
    result.write_bytes(data)


def _relative_paths(ck: dict, run: Path) -> dict:
    """A checkpoint entry of run.json with its paths relative to the run directory."""
    out = dict(ck)
    for key in ("store", "given_store", "main_mi", "check"):
        if out.get(key):
            out[key] = run_relative(out[key], run)
    for key in ("ckpt", "adapter", "base", "vision_tower"):  # may name a hub id rather than a folder: keep those
        if out.get(key) and Path(out[key]).exists():
            out[key] = run_relative(out[key], run)
    if "mi" in out:
        out["mi"] = {lp: run_relative(p, run) for lp, p in out["mi"].items()}
    if "source_mi" in out:
        out["source_mi"] = {k: run_relative(p, run) for k, p in out["source_mi"].items()}
    return out


def _target_prefix(cfg: PipelineConfig, target) -> str:
    """'' for the first target (names as before extra targets existed), else 'm-a-t-'."""
    if tuple(target) == tuple(cfg.target):
        return ""
    return "-".join(str(x) for x in target).replace(" ", "_").lower() + "-"


def condition_manifest(dataset, train: set[str], target, path: Path) -> Path:
    """The whole dataset with split = train (this condition's training ids), test (the
    target triplet) or unused, so the store knows which answers are held out."""
    from dataclasses import replace

    from matprobe.data import MATDataset, write_manifest

    # written afresh on every run (atomic, cheap): a manifest kept by name could hold another dataset's
    # records; `run` writes it beside its name and renames it once the extraction accepted it
    samples = [replace(s, split="train" if s.id in train else "test" if s.triplet == tuple(target)
                       else "unused") for s in dataset]
    vocab = {k: v for k, v in dataset.vocabularies.items() if k != "split"}
    write_manifest(MATDataset(samples, str(path), vocab), path)
    return path


def training_risk(store_path) -> tuple[float | None, int | None]:
    """The model's error on its own training rows (split = train), for the PAC bounds."""
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(store_path) as st:
        frame = st.samples()
        correct = st.answers()["correct"]
    if "split" not in frame:
        return None, None
    sel = (frame["split"] == "train").to_numpy() & (correct >= 0)
    if not sel.any():
        return None, None
    return float(1.0 - correct[sel].mean()), int(sel.sum())


# where `training_risk` measures R̂ for the training-set PAC bounds (said in the check and report)
TRAINING_RISK_ROWS = "the checkpoint's training rows (split = train in its store)"
# bits per stored element of a safetensors dtype
SAFETENSORS_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "F8_E4M3": 8, "F8_E5M2": 8,
                    "I64": 64, "I32": 32, "I16": 16, "I8": 8, "U64": 64, "U32": 32, "U16": 16, "U8": 8}
# the extract dtype's bits, where the checkpoint's stored precision cannot be read
EXTRACT_DTYPE_BITS = {"fp32": 32.0, "bf16": 16.0, "fp16": 16.0}


def _safetensors_tensors(ckpt: str) -> list[tuple[str, int]]:
    """(dtype, element count) of every tensor in a checkpoint's safetensors files, from their headers
    (`provenance.read_safetensors_header`: no weights are loaded)."""
    from matprobe.provenance import read_safetensors_header

    out = []
    for f in sorted(Path(ckpt).glob("*.safetensors")):
        header, _ = read_safetensors_header(f)
        out += [(meta.get("dtype"), int(np.prod(meta["shape"]))) for name, meta in header.items()
                if name != "__metadata__"]
    return out


def stored_bits_per_param(ckpt: str) -> float | None:
    """Bits per parameter as the checkpoint stores them: its safetensors headers' dtypes, weighted
    by each tensor's size; None where there is no safetensors file or a dtype is unknown."""
    return _stored_bits(_safetensors_tensors(ckpt))


def _stored_bits(tensors: list[tuple[str, int]]) -> float | None:
    """`stored_bits_per_param` of `_safetensors_tensors`' list."""
    if any(dtype not in SAFETENSORS_BITS for dtype, _ in tensors):
        return None
    params = sum(n for _, n in tensors)
    return sum(n * SAFETENSORS_BITS[dtype] for dtype, n in tensors) / params if params else None


def model_size(ck: dict, cfg) -> tuple[int | None, float, str]:
    """(parameter count, bits per parameter, where the bits come from) for a checkpoint's PAC bounds:
    ln|H| = params x bits x ln 2 counts the hypotheses its stored weights can encode, so the bits are
    the precision its safetensors store (the extract dtype only says how it was run: an fp32
    extraction of a bf16 checkpoint took 32 bits); where that cannot be read, the extract dtype's."""
    tensors = _safetensors_tensors(ck["ckpt"]) if ck.get("ckpt") else []  # the headers read once for both
    params = ck.get("params") or (sum(n for _, n in tensors) or None)
    stored = _stored_bits(tensors)
    if stored:
        return params, float(stored), "the dtype the checkpoint's safetensors store"
    return params, EXTRACT_DTYPE_BITS.get(cfg.dtype, 16.0), f"the extract dtype ({cfg.dtype}; the stored one unread)"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def target_stratum_entry(result, target: tuple[str, str, str], constant=()):
    """The entry (`StratumEstimate`: estimate, ci_low, ci_high, n, bound) of I(Z;Y | M, A, T = target)
    in an MI result (`ChainResult`) whose chain includes the label or answer, with the level of its
    term's interval: (entry, level), or None where the chain has no such stratum. `constant`: MAT
    factors with one value in the data (a study of one task), which the chain leaves out: its
    strata given the others are the (M, A, T) strata."""
    from matprobe.data.design import stratum_key

    wanted = stratum_key(dict(zip(("modality", "anatomy", "task"), target)), constant)
    for factor, term in zip(result.factors, result.estimates()):  # the first estimator's, listed first
        if factor not in ("label", "answer"):
            continue
        for entry in term.estimate.strata:  # StratumEstimate: given {factor: label}, estimate, ...
            if stratum_key(entry.given, constant) == wanted:  # the key `check` matches strata by
                return entry, _level_of(term.estimate, result)
    return None


def target_stratum_mi(result, target: tuple[str, str, str], constant=()) -> float | None:
    """I(Z;Y | M, A, T = target) from an MI result (`ChainResult`) whose chain includes the label or
    answer: that term's entry for the target stratum (`target_stratum_entry`), if present (nats, as
    the file records it)."""
    found = target_stratum_entry(result, target, constant)
    return None if found is None else float(found[0].estimate)


# results.csv's columns, in order, with what each holds: the first six are what `matprobe significance`
# reads (a user's own per-run table needs no more); the interval columns after them say how precise
# each value is, as the run computed it (README: every estimated number carries its interval)
RESULTS_COLUMNS = {
    "condition": "the training condition of the checkpoint (Related, Unrelated, ...)",
    "target": "the held-out (modality, anatomy, task) triplet, comma-separated",
    "seed": "training seed of the checkpoint",
    "item": "the segmentation item (sample id) of an item-level row; empty for run-level rows",
    "metric": "accuracy, cIoU, an item's intersection or union (pixels), an MI chain term (nats) or "
              "I(Z;Y|target) nats",
    "value": "the metric's value",
    "ci_low": "the interval's lower end: an MI row's from its MI results file (the stratum's entry for "
              "I(Z;Y|target)); accuracy's exact (Clopper-Pearson) interval of its right answers of n; empty "
              "for cIoU (the run estimates no interval of it: `matprobe significance --items` bootstraps "
              "its paired differences over items) and for item-level rows",
    "ci_high": "the interval's upper end (where bound is lower: the entropy limit, no statement); empty "
               "where ci_low is",
    "ci_level": "the level of the interval (MI: the MI results' level; accuracy: 0.95)",
    "bound": "two-sided, or lower: a one-sided MI interval, of which only ci_low is a statement; empty "
             "where there is no interval",
    "n": "how many rows the value is over: an MI term's evaluation rows (the stratum's for "
         "I(Z;Y|target)), the answered target items of accuracy, the segmentation items of cIoU; empty "
         "for item-level rows",
}


def _level_of(estimate, result) -> float:
    """An MI term's interval level: its own, else its results file's."""
    level = estimate.ci_level if estimate.ci_level is not None else result.settings.get("level")
    return _number(level)


def _number(x) -> float:
    """A float of a results file's number; NaN where the file holds none (JSON null)."""
    return float("nan") if x is None else float(x)


def _mi_interval(e, level: float, n) -> dict:
    """The interval columns of an MI row from its term or stratum entry, as the MI file has them."""
    from matprobe.mi.interface import TWO_SIDED

    return {"ci_low": _number(e.ci_low), "ci_high": _number(e.ci_high), "ci_level": level,
            "bound": e.bound or TWO_SIDED, "n": None if n is None else int(n)}


def per_run_results(checkpoints: list[dict], cfg: PipelineConfig) -> pd.DataFrame:
    """Tidy rows (condition, target, seed, item, metric, value) for `matprobe significance`, each
    with its interval (ci_low, ci_high, ci_level, bound, n; `RESULTS_COLUMNS` says what each holds).

    Metrics: accuracy on the held-out target triplet when its items are choices among
    texts, with the exact (Clopper-Pearson) `DEFAULTS.level` interval of its right answers of n
    (`theory.pac.clopper_pearson`, as `store info` and `check` give it); when they are segmentation
    items, per item (``item`` = sample id) the pixel ``intersection`` and ``union`` of the chosen
    mask with the truth, plus the run's ``cIoU`` = Σ I / Σ U (significance checks it against the
    items and derives it from them; no interval: the run estimates none); each MI chain term of the
    main (layer, pool), and I(Z; answer | target stratum) in nats (when the chain includes the
    label), with the interval, level and bound the MI results file records. Run-level rows have an
    empty item.
    """
    from matprobe.data.design import constant_factors
    from matprobe.mi.chain import ChainResult
    from matprobe.mi.interface import TWO_SIDED
    from matprobe.store import EmbeddingStore
    from matprobe.theory.pac import clopper_pearson

    none = {"ci_low": np.nan, "ci_high": np.nan, "ci_level": np.nan, "bound": "", "n": None}
    rows = []
    for ck in checkpoints:
        target = tuple(ck.get("target") or cfg.target)
        with EmbeddingStore.open(ck["store"]) as st:
            frame = st.samples()
            ans = st.answers()
        correct = ans["correct"]
        union = ans.get("union", np.full(len(frame), -1))
        sel = ((frame["modality"] == target[0]) & (frame["anatomy"] == target[1])
               & (frame["task"] == target[2])).to_numpy() & (correct >= 0)
        base = {"condition": CONDITION_NAMES[ck["condition"]], "target": ",".join(target), "seed": ck["seed"],
                "item": ""}
        seg = sel & (union >= 0)
        if seg.any():
            for sid, i_, u_ in zip(frame["id"][seg], ans["intersection"][seg], union[seg]):
                rows.append({**base, "item": sid, "metric": "intersection", "value": int(i_), **none})
                rows.append({**base, "item": sid, "metric": "union", "value": int(u_), **none})
            rows.append({**base, "metric": "cIoU", "value": float(ans["intersection"][seg].sum() / union[seg].sum()),
                         **none, "n": int(seg.sum())})
        else:
            n, right = int(sel.sum()), int((correct[sel] > 0).sum())
            interval = ({"ci_low": (ci := clopper_pearson(right, n, DEFAULTS.level))[0], "ci_high": ci[1],
                         "ci_level": DEFAULTS.level, "bound": TWO_SIDED} if n else {})
            rows.append({**base, "metric": "accuracy", "value": float(correct[sel].mean()) if n else np.nan,
                         **none, **interval, "n": n})
        result = ChainResult.read(ck["main_mi"])
        for items in result.terms.values():
            rows += [{**base, "metric": f"{term} nats", "value": float(e.value),
                      **_mi_interval(e, _level_of(e, result), e.n_eval)} for term, e in items]
        found = target_stratum_entry(result, target, constant_factors(frame))
        if found is not None:
            entry, level = found
            rows.append({**base, "metric": "I(Z;Y|target) nats", "value": float(entry.estimate),
                         **_mi_interval(entry, level, entry.n)})
    import pandas as pd

    out = pd.DataFrame(rows, columns=list(RESULTS_COLUMNS))
    out["n"] = out["n"].astype("Int64")  # counts, written without ".0"; empty where there is none
    return out


def significance_table(results: pd.DataFrame, cfg: PipelineConfig) -> tuple[pd.DataFrame | None, list[str]]:
    """Related vs each other condition in the unit of analysis `matprobe significance` picks for the
    same results.csv (`metric_units`: by target where a metric is measured on two or more targets,
    else by seed): the table (None where no comparison has two pairs) and a sentence per comparison
    left untested. A run only one condition has is left out of that comparison, and the table's
    warning says so. (It paired by seed always: a study's report read p = 0.280 on 4 (target, seed)
    pairs where `significance` on its results.csv read 2 targets.)"""
    from matprobe.errors import StatsError
    from matprobe.stats.significance import (
        DEFAULT_RATIO_METRICS,
        active_ratios,
        available_metrics,
        compare_conditions,
        metric_units,
        related_comparisons,
    )

    names = [CONDITION_NAMES[c] for c in cfg.conditions]
    if "Related" not in names or len(names) < 2:
        return None, []
    comps = related_comparisons(names)  # Table IX's own rows where it has one, else Related first
    frame = results.dropna(subset=["value"])
    try:
        units = metric_units(frame, comps, source="results.csv")[0]
    except StatsError:  # no metric has two pairs: the table's own skip says which comparisons
        units = {}
    # a metric metric_units left out (no comparison has two pairs of it): by seed, where the table's
    # own skip says why, comparison by comparison
    every = available_metrics(frame, active_ratios(frame, DEFAULT_RATIO_METRICS))  # cIoU, not its parts
    units = {**dict.fromkeys(every, "seed"), **units}
    table = compare_conditions(frame, comps, unit=units, source="results.csv", too_few="skip")
    return (table if len(table) else None), table.attrs["untested"]
