"""`run`'s refusals that need no model, checked before torch is imported or anything is trained.

A pipeline fine-tunes, extracts and estimates for minutes before it reaches a step that can
fail on a mistake in the file: a checkpoint folder without config.json, a layer past the
model's depth, a level of 95, a target the manifest does not have, a run directory another
`matprobe run` is writing. All of those are read off the pipeline file, the manifest and the
checkpoint folders here, in about a second (`run_pipeline` calls `check_pipeline` first).
"""

from __future__ import annotations

from pathlib import Path

from matprobe.checks import check_factors, check_level, check_probability
from matprobe.errors import DataError, MatprobeError


def check_pipeline(cfg) -> None:
    """Raise the first user mistake in a PipelineConfig (one line naming the key and the fix)."""
    from matprobe.extract.preflight import check_checkpoint, check_options
    from matprobe.locks import holder_pid, is_locked

    check_level(cfg.mi_level, "[mi] level")
    check_probability(cfg.delta, "[check] delta")
    check_factors(cfg.factors, "[mi] factors")
    if cfg.pca is not None and int(cfg.pca) < 0:
        raise MatprobeError(f"[mi] pca = {cfg.pca}: give a number of PCA dimensions >= 1, or 0 for none")
    if int(cfg.mi_seeds) < 1 or int(cfg.mi_folds) < 2:
        raise MatprobeError(f"[mi] seeds = {cfg.mi_seeds}, folds = {cfg.mi_folds}: need seeds >= 1 and folds >= 2")
    check_options(batch_size=cfg.extract_batch_size, pools=cfg.pools, dtype=cfg.dtype, device=cfg.device,
                  attn="sdpa", rendering=cfg.rendering, max_pixels=cfg.max_pixels, layers=cfg.layers)
    for ck in cfg.checkpoints:
        check_checkpoint(ck["ckpt"], ck.get("adapter"), ck.get("base"), layers=cfg.layers,
                         where=f"[[checkpoints]] {ck.get('name')!r}")
    run = Path(cfg.out)
    if run.exists() and not run.is_dir():
        raise MatprobeError(f"[run] out = {cfg.out!r} is a file; give a folder for the run")
    for store in sorted((run / "stores").glob("*.h5")) if (run / "stores").is_dir() else []:
        if is_locked(store):
            pid = holder_pid(store)
            who = f"process {pid}" if pid else "another process"
            raise MatprobeError(f"{run}: in use by {who} (another `matprobe run` writes {store.name}); wait for "
                                "it to finish, or give another [run] out / --out")
    if cfg.demo_data:
        return
    from matprobe.data import load_dataset

    dataset = load_dataset(cfg.data_file, image_root=cfg.image_root, columns=getattr(cfg, "columns", None) or None)
    from matprobe.data import make_split

    for target in cfg.targets:  # a target the data lacks, a condition with no training triplets
        for cond in cfg.conditions:
            try:
                make_split(dataset, tuple(target), cond)
            except DataError as exc:
                raise DataError(f"[design] target {','.join(target)}, condition {cond}: {exc}") from None
