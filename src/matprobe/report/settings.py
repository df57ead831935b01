"""The report's configuration table: the settings a run used, not every field run.json records.

run.json's `config` is the whole pipeline configuration, defaults included. A study with its own
checkpoints ([[checkpoints]]) fine-tunes nothing here, and one that reads its own manifest
([data] file) builds no demo data: listing those fields would claim settings that were never
used. Which applied is read from the run's files alone (the report never imports the pipeline):
the checkpoints' `trained_here` flags and `config.demo_data`. Where run.json does not say, every setting is listed, as before.
"""

from __future__ import annotations

# The pipeline's fields (pipeline.PipelineConfig) read only to fine-tune the tiny checkpoints, which
# it does where [[checkpoints]] is empty: the [train] section
FINE_TUNING = ("train_steps", "train_batch_size", "train_lr", "train_seeds", "train_size", "base_seed")
# read only to build the demo's data set ([data] demo = true: data.demo.DemoSpec)
DEMO_DATA = ("n_per_triplet", "image_size")
# builds the demo data and draws the equalised training rows of the checkpoints fine-tuned here
DATA_SEED = "data_seed"
# read only to extract stores, which a run whose every store was given as it is ([[checkpoints]]
# store = ...) does not do (a study's report listed max_pixels null beside stores cut at 50,176 pixels);
# layers and pools choose the stored cells the MI is estimated on, so they stay
EXTRACTION = ("extract_batch_size", "dtype", "device", "max_pixels", "rendering")


def extracted_here(summary) -> bool | None:
    """Whether the run extracted any store itself: False where every checkpoint's store was given
    (`given_store` in run.json), None where run.json does not say."""
    flags = [bool(ck.extra.get("given_store")) for ck in summary.checkpoints if "given_store" in ck.extra]
    if not flags:
        return None
    return not all(flags)


def fine_tuned_here(summary) -> bool | None:
    """Whether the run fine-tuned its checkpoints itself, from the checkpoints' `trained_here` flags
    (the pipeline records one per checkpoint); None where run.json records none."""
    flags = [ck.extra["trained_here"] for ck in summary.checkpoints if "trained_here" in ck.extra]
    return any(bool(f) for f in flags) if flags else None


def unused_settings(summary) -> tuple[set[str], str]:
    """(the configuration's fields this run did not use, one line saying which and why; "" if none)."""
    config = summary.config
    trained = fine_tuned_here(summary)
    demo_data = config.get("demo_data")
    unused_training = [k for k in FINE_TUNING if k in config] if trained is False else []
    unused_data = [k for k in DEMO_DATA if k in config] if demo_data is False else []
    if unused_data and trained is False and DATA_SEED in config:
        unused_data.append(DATA_SEED)
    unused_extraction = [k for k in EXTRACTION if k in config] if extracted_here(summary) is False else []
    parts = []
    if unused_extraction:
        parts.append(f"the extraction settings {_names(unused_extraction)} (every store was given as it is, "
                     "extracted before this run: each records its own, `matprobe store info --verbose STORE` "
                     "lists them)")
    if unused_training:
        parts.append(f"the fine-tuning settings {_names(unused_training)} (the checkpoints were given in "
                     "`[[checkpoints]]`, not fine-tuned here)")
    if unused_data:
        parts.append(f"the demo data's {_names(unused_data)} (the data is the manifest `data_file`, not the demo's)")
    line = f"Not listed, as this run did not use them: {' and '.join(parts)}." if parts else ""
    return set(unused_training) | set(unused_data) | set(unused_extraction), line


def _names(keys: list[str]) -> str:
    return ", ".join(f"`{k}`" for k in keys)
