"""`run`'s refusals that need no model, checked before torch is imported or anything is trained.

A pipeline fine-tunes, extracts and estimates for minutes before it reaches a step that can
fail on a mistake in the file: a checkpoint folder without config.json, a layer past the
model's depth, a level of 95, a target the manifest does not have, a run directory another
`matprobe run` is writing. All of those are read off the pipeline file, the manifest and the
checkpoint folders here, in about a second (`run_pipeline` calls `check_pipeline` first).
"""

from __future__ import annotations

from pathlib import Path

from matprobe.checks import check_factors, check_level, check_pca, check_probability, check_rare_classes
from matprobe.errors import DataError, MatprobeError, ProvenanceMismatch


def check_pipeline(cfg) -> None:
    """Raise the first user mistake in a PipelineConfig (one line naming the key and the fix)."""
    from matprobe.extract.preflight import PIPELINE_OPTIONS, check_checkpoint, check_options, images_limit
    from matprobe.locks import holder_pid, is_locked

    check_level(cfg.mi_level, "[mi] level")
    check_probability(cfg.delta, "[check] delta")
    check_factors(cfg.factors, "[mi] factors")
    check_pca(cfg.pca, "[mi] pca =")
    check_rare_classes(cfg.mi_rare_classes, "[mi] rare_classes =")
    if int(cfg.mi_seeds) < 1 or int(cfg.mi_folds) < 2:
        raise MatprobeError(f"[mi] seeds = {cfg.mi_seeds}, folds = {cfg.mi_folds}: need seeds >= 1 and folds >= 2")
    pools = check_options(batch_size=cfg.extract_batch_size, pools=cfg.pools, dtype=cfg.dtype, device=cfg.device,
                          attn="sdpa", rendering=cfg.rendering, max_pixels=cfg.max_pixels, layers=cfg.layers)
    one_image = []  # (entry's name, (images per prompt, why)) of the checkpoints that take few images
    for ck in cfg.checkpoints:
        where = f"[[checkpoints]] {ck.get('name')!r}"
        if not ck.get("ckpt"):  # an entry naming a store extracted already: used as it is
            store = Path(ck.get("store") or "")
            if not store.is_file():
                raise MatprobeError(f"{where}: store = {str(store)!r} is not a file; give the .h5 that "
                                    "`matprobe extract --out` wrote, or ckpt = the checkpoint folder")
            _check_store_factors(store, cfg.factors, where)
            from matprobe.store_checks import held_out_problem

            target = tuple(ck.get("target") or cfg.target)
            if problem := held_out_problem(store, target):  # its accuracy would be said as held-out
                raise ProvenanceMismatch(f"{where}: store {str(store)!r}: {problem}; give the store extracted for "
                                         f"{','.join(target)}, or set this entry's target to the triplet its store "
                                         "holds out")
            continue
        check_checkpoint(ck["ckpt"], ck.get("adapter"), ck.get("base"), layers=cfg.layers, where=where,
                         vision_tower=ck.get("vision_tower"), template=ck.get("template"), options=PIPELINE_OPTIONS)
        if limit := images_limit(ck["ckpt"], ck.get("adapter"), ck.get("base"), ck.get("template")):
            one_image.append((ck.get("name"), limit))
    run = Path(cfg.out)
    if run.exists() and not run.is_dir():
        raise MatprobeError(f"[run] out = {cfg.out!r} is a file; give a folder for the run")
    if is_locked(run / "run"):  # another `matprobe run` holds the whole directory (pipeline.run_lock)
        raise MatprobeError(run_in_use(run))
    for store in sorted((run / "stores").glob("*.h5")) if (run / "stores").is_dir() else []:
        if is_locked(store):
            pid = holder_pid(store)
            who = f"process {pid}" if pid else "another process"
            raise MatprobeError(f"{run}: in use by {who} (another `matprobe run` writes {store.name}); wait for "
                                "it to finish, or give another [run] out / --out")
    _check_run_stores(cfg, pools)
    if cfg.demo_data:
        return
    from matprobe.data.loaders import load_pipeline_data

    # as the run will read it (a column refusal names the file's [data] columns, not `--columns`)
    dataset = load_pipeline_data(cfg.data_file, cfg.image_root, getattr(cfg, "columns", None),
                                 getattr(cfg, "task_level", "subset"))
    from matprobe.data.images import missing_images_error

    # where a checkpoint is to be extracted (stores given as they are need no image), named by the
    # user's manifest (extraction would name the condition's copy the run writes)
    to_extract = any(ck.get("ckpt") for ck in cfg.checkpoints)
    if to_extract and (error := missing_images_error(dataset, cfg.data_file, "set [data] image_root")) is not None:
        raise DataError(error)
    _check_rendering(cfg, dataset, one_image)
    from matprobe.data.design import single_class_factors

    # a study of one task (or one modality): the MI step refuses that factor, after extraction
    if single := single_class_factors(dataset, cfg.factors):
        name, label = next(iter(single.items()))
        raise DataError(f"[mi] factors: {name!r} has one class in {cfg.data_file} ({label!r}), so every term with "
                        f"{name} as the target is 0 by definition; drop {name!r} from [mi] factors (`matprobe "
                        "init` leaves such a factor out)")
    from matprobe.data.splits import first_unsplittable

    # a target the data lacks, a condition with no training triplets
    unsplittable = first_unsplittable(dataset, cfg.targets, cfg.conditions)
    if unsplittable:
        target, cond, exc = unsplittable
        raise DataError(f"[design] target {','.join(target)}, condition {cond}: {exc}")


def run_in_use(run) -> str:
    """The error for a run directory another `matprobe run` holds (`pipeline.run_lock`)."""
    from matprobe.locks import holder_pid

    pid = holder_pid(Path(run) / "run")
    who = f"process {pid}" if pid else "another process"
    return (f"{run}: in use by {who} (another `matprobe run` writes this run directory); wait for it to finish, "
            "or give another [run] out / --out")


def _check_store_factors(store: Path, factors, where: str) -> None:
    """A store given as it is must hold a label column for every [mi] factor and the model's
    answers: the MI and check steps would otherwise fail after the other stores' work (a store
    written outside `matprobe extract`, e.g. by `EmbeddingStore.from_arrays`, need not have the
    answer's `label`; `extract --no-answers` stores none)."""
    from matprobe.data.model import resolve_factor
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(store) as st:
        have = st.label_columns()
        answered = bool((st.answers()["correct"] >= 0).any())
    missing = [f for f in factors if resolve_factor(f) not in have]
    if missing:
        raise MatprobeError(f"{where}: store {str(store)!r} has no label column {missing[0]!r} for [mi] factors "
                            f"(it has {', '.join(have) or 'none'}); add the column to the store, or drop "
                            f"{missing[0]!r} from [mi] factors")
    if not answered:  # the check step reads them: after every store's MI, it would stop there
        raise MatprobeError(f"{where}: store {str(store)!r} holds no answers of the model (extracted with "
                            "--no-answers?); the run's check and accuracy need them: extract it again without "
                            "--no-answers, or check the MI alone with `matprobe mi`")


def _check_rendering(cfg, dataset, one_image) -> None:
    """Segmentation items shown as more images than a checkpoint takes (original LLaVA: one per
    prompt) under [extract] rendering: refused before anything is extracted, naming the entries,
    the first such item and the setting that fixes it."""
    from matprobe.extract.preflight import GRID_FIX, rendering_problem

    for i, (name, limit) in enumerate(one_image):
        if problem := rendering_problem(dataset, cfg.rendering, limit):
            same = [n for n, lim in one_image[i + 1:] if lim == limit]
            more = f" (and {len(same)} more)" if same else ""
            raise DataError(f"[[checkpoints]] {name!r}{more}: {cfg.data_file}: {problem}; set [extract] "
                            f'rendering = "grid" ({GRID_FIX})')


def _check_run_stores(cfg, pools) -> None:
    """Every store of the run that a rerun resumes (RUN/stores/<name>.h5 of each checkpoint to extract),
    against the [extract] settings: all that were made with others are named in one line, before
    anything is extracted (each extraction would refuse its own store, one per attempt)."""
    from matprobe.extract.preflight import is_complete_store, read_provenance, settings_differences

    folder = Path(cfg.out) / "stores"
    if not folder.is_dir():
        return
    if cfg.checkpoints:
        stores = [folder / f"{ck.get('name')}.h5" for ck in cfg.checkpoints if ck.get("ckpt")]
    else:  # the demo's checkpoints, fine-tuned in the run: every store there is one of them
        stores = sorted(folder.glob("*.h5"))
    changed: dict[str, list[str]] = {}  # what differs: the stores it differs in
    for store in stores:
        prov = read_provenance(store) if store.is_file() else None
        diff = settings_differences(prov, pools=pools, dtype=cfg.dtype, device=cfg.device, layers=cfg.layers,
                                    rendering=cfg.rendering, max_pixels=cfg.max_pixels,
                                    fewer_cells_ok=is_complete_store(store)) if prov is not None else []
        if diff:
            said = "; ".join(f"[extract] {key} {stored!r} stored, {asked!r} asked" for key, stored, asked in diff)
            changed.setdefault(said, []).append(store.name)
    if changed:
        n = sum(map(len, changed.values()))
        those = "that store file" if n == 1 else "those store files"
        raise ProvenanceMismatch(
            f"[run] out = {cfg.out!r}: {n} of its stores were extracted with other settings, which their resume "
            "would refuse: " + ", ".join(f"{', '.join(names)} ({said})" for said, names in changed.items())
            + f"; delete {those} in {folder} to extract {'it' if n == 1 else 'them'} again with these settings, "
            "or set another [run] out")
