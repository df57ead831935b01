"""Training splits by MAT overlap with a held-out target triplet (CrossMed §III, §V, §VI-B).

For a target triplet (m*, a*, t*) every training triplet shares 0–3 of its components:

- **Related**: shares exactly two (e.g. (X-ray, Chest, Segmentation) for
  (X-ray, Chest, Classification)); CrossMed §III: "shares two MAT components";
- **Unrelated**: shares at most one (CrossMed §III);
- **zero-overlap**: shares none (CrossMed §VI-B), a subset of Unrelated;
- **leave-one-triplet-out**: every triplet but the target (CrossMed §VI-B);
- **without modality / anatomy / task**: CrossMed's single-factor ablations (§VI-E, Table VIII,
  compared with Related in Table IX): "training excludes one component of the MAT triplet ...
  to evaluate (CT, Brain, Hemorrhage), the model is trained on combinations like (CT, Task),
  (Brain, Task), or (CT, Brain)". Read here as the Related triplets that differ from the target
  in that component only: without modality = the triplets sharing anatomy and task, not
  modality (the paper gives no stricter definition).

The target triplet's own samples form the test split in every configuration.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where it is used: loading a manifest stays light
    import pandas as pd

from matprobe.checks import text_key
from matprobe.data.model import FACTORS, SPELLING_RULE, MATDataset, Sample, canonical_label
from matprobe.errors import DataError

Triplet = tuple[str, str, str]


class SplitConfig(str, Enum):
    related = "related"
    unrelated = "unrelated"
    zero_overlap = "zero-overlap"
    # Med-MAT's All Related (its Fig. 4, beside All Unrelated = zero-overlap): every triplet sharing
    # one or two of M, A, T with the target
    any_overlap = "any-overlap"
    leave_one_out = "leave-one-out"
    without_modality = "without-modality"
    without_anatomy = "without-anatomy"
    without_task = "without-task"


# the component each ablation withholds: its position in (modality, anatomy, task)
_WITHHELD = {SplitConfig.without_modality: 0, SplitConfig.without_anatomy: 1, SplitConfig.without_task: 2}


def parse_triplet(text: str | Sequence[str]) -> Triplet:
    """'CT,Lung,Classification' -> ('CT', 'Lung', 'Classification') with canonical spellings."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    if len(parts) != 3 or not all(parts):
        raise DataError(f"target triplet {text!r} must be 'Modality,Anatomy,Task'")
    return tuple(canonical_label(f, p) for f, p in zip(FACTORS, parts))  # type: ignore[return-value]


def find_triplet(present, target: Triplet) -> Triplet | None:
    """The triplet of `present` that `target` names: itself, or the one triplet equal to it up to
    case and runs of spaces ('ct,lung,covid-19 classification' for Med-MAT's 'COVID-19
    Classification', which the canonical spelling alone does not reach); None if none or several."""
    present = set(present)
    if tuple(target) in present:
        return tuple(target)

    def key(t):
        return tuple(map(text_key, t))

    hits = [t for t in present if key(t) == key(target)]
    return hits[0] if len(hits) == 1 else None


def shared_components(triplet: Triplet, target: Triplet) -> int:
    """How many of (M, A, T) two triplets share, position by position."""
    return sum(a == b for a, b in zip(triplet, target))


def relation(triplet: Triplet, target: Triplet) -> str:
    """'target', 'related' (2 shared), or 'unrelated' (≤1 shared; 'zero-overlap' if 0)."""
    shared = shared_components(triplet, target)
    if shared == 3:
        return "target"
    if shared == 2:
        return "related"
    return "zero-overlap" if shared == 0 else "unrelated"


def in_training(triplet: Triplet, target: Triplet, config: SplitConfig | str) -> bool:
    """Whether samples of `triplet` are training data for `target` under `config`."""
    config = SplitConfig(config)
    rel = relation(triplet, target)
    if rel == "target":
        return False
    if config is SplitConfig.related:
        return rel == "related"
    if config is SplitConfig.unrelated:
        return rel in ("unrelated", "zero-overlap")
    if config is SplitConfig.zero_overlap:
        return rel == "zero-overlap"
    if config is SplitConfig.any_overlap:
        return rel in ("related", "unrelated")  # unrelated here: exactly one shared (relation())
    if config in _WITHHELD:  # the Related triplets that lack exactly the withheld component
        return rel == "related" and triplet[_WITHHELD[config]] != target[_WITHHELD[config]]
    return True


def split_table(triplets: Sequence[Triplet], target: Triplet) -> pd.DataFrame:
    """For each triplet: shared components, relation and membership under every config."""
    import pandas as pd  # lazily: loading a manifest stays light
    rows = []
    for trip in triplets:
        row = {"modality": trip[0], "anatomy": trip[1], "task": trip[2],
               "shared": shared_components(trip, target), "relation": relation(trip, target)}
        for cfg in SplitConfig:
            row[cfg.value] = in_training(trip, target, cfg)
        rows.append(row)
    return pd.DataFrame(rows)


def _with_split(sample: Sample, split: str) -> Sample:
    from dataclasses import replace

    return replace(sample, split=split)


def make_split(dataset: MATDataset, target: Triplet | str, config: SplitConfig | str,
               marked_only: bool = False) -> MATDataset:
    """Samples of the training triplets (split='train') and of the target (split='test').

    Samples of other triplets are dropped; with `marked_only`, where the data mark rows
    split = train, so are the training triplets' rows not so marked (the user's own held-out
    rows, which `run` keeps out of the training rows too). Vocabularies are kept from `dataset`,
    so codes agree across the splits of one dataset.
    """
    target = parse_triplet(target) if isinstance(target, str) else tuple(target)
    present = {s.triplet for s in dataset}
    target = find_triplet(present, target) or target
    if target not in present:
        have = "; ".join(",".join(t) for t in sorted(present))
        from matprobe.data.medmat import group_level_hint

        raise DataError(f"{dataset.source}: target triplet {','.join(target)} has no samples; have {have}"
                        + group_level_hint(dataset.source, target))
    kept = []
    marked = marked_only and any(s.split == "train" for s in dataset)
    for s in dataset:
        if s.triplet == target:
            kept.append(_with_split(s, "test"))
        elif in_training(s.triplet, target, config) and (not marked or s.split == "train"):
            kept.append(_with_split(s, "train"))
    if not any(s.split == "train" for s in kept):
        if marked and any(in_training(t, target, config) for t in present):
            raise DataError(
                f"{dataset.source}: no row of the {SplitConfig(config).value} training triplets for "
                f"{','.join(target)} is marked split = train (the file's own split, whose other rows never train); "
                "mark their training rows split = train, or choose another target or config")
        raise DataError(
            f"{dataset.source}: no training triplet is {SplitConfig(config).value} to "
            f"{','.join(target)}; choose another target or config"
        )
    vocab = {k: v for k, v in dataset.vocabularies.items() if k != "split"}
    return MATDataset(kept, dataset.source, vocab)


def first_unsplittable(dataset: MATDataset, targets, conditions) -> tuple[Triplet, str, DataError] | None:
    """(target, condition, why) of the first held-out target and training condition whose split
    `make_split` refuses (a target without samples, a condition without training triplets), or
    None: what `run` needs of its data, checked by `run`'s preflight and by `init`."""
    present = {s.triplet for s in dataset}
    for target in targets:
        spelt = find_triplet(present, tuple(target))
        if spelt is not None and spelt != tuple(target):  # the run compares triplets as written
            return tuple(target), conditions[0], DataError(
                f"{dataset.source}: target triplet {','.join(target)} is read as {','.join(spelt)} from the data "
                f"(labels are read in one spelling: {SPELLING_RULE}); write it so")
        for cond in conditions:
            try:
                make_split(dataset, tuple(target), cond, marked_only=True)  # as `run` takes the rows
            except DataError as exc:
                return tuple(target), cond, exc
    return None


def stratified_holdout(
    dataset: MATDataset, test_fraction: float = 0.2, seed: int = 0, by: str = "subset"
) -> MATDataset:
    """Seeded train/test split stratified by a column (Med-MAT ships only train files)."""
    from matprobe.checks import check_fraction

    test_fraction = check_fraction(test_fraction, "test fraction", what="the test fraction", example=0.2,
                                   error=DataError)
    rng = np.random.default_rng(seed)
    groups: dict[str | None, list[int]] = {}
    for i, s in enumerate(dataset):
        groups.setdefault(getattr(s, by), []).append(i)
    split = ["train"] * len(dataset)
    for key in sorted(groups, key=lambda k: (k is None, str(k))):
        idx = np.asarray(groups[key])
        n_test = int(round(test_fraction * len(idx)))
        for i in rng.permutation(idx)[:n_test]:
            split[i] = "test"
    vocab = {k: v for k, v in dataset.vocabularies.items() if k != "split"}
    return MATDataset([_with_split(s, sp) for s, sp in zip(dataset, split)], dataset.source, vocab)


def split_file(file, target: Triplet | str, config: SplitConfig | str = "related", out=None,
               image_root=None, columns=None, notes: list | None = None) -> MATDataset:
    """`matprobe data split` and `mp.split`: load `file` (its columns mapped by `columns`, as
    `load_dataset`), split it for `target` by `config`, and write the split as a JSONL manifest
    to `out` when given. Where the file marks rows split = train, only those of the training
    triplets are training rows (`make_split(marked_only=True)`); `data_split_note` says how many
    others were left out, appended to `notes` when given."""
    from matprobe.data.loaders import load_dataset
    from matprobe.data.manifest import require_jsonl_path, write_manifest

    if out is not None:
        require_jsonl_path(out)  # before the data are read: the split is written as JSONL

    try:
        config = SplitConfig(config)
    except ValueError:
        import difflib

        names = [c.value for c in SplitConfig]
        close = difflib.get_close_matches(str(config), names, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(f"config {config!r} is not a split configuration; {hint}use one of "
                        f"{', '.join(names)}") from None
    dataset = load_dataset(file, image_root=image_root, columns=columns)
    # the manifest's own split: its training triplets' rows marked other than train stay out, as `run`
    # keeps them out of a condition's training rows
    split = make_split(dataset, target, config, marked_only=True)
    if notes is not None and (n := marked_rows_left_out(dataset, split, target, config)):
        notes.append(f"{n} row(s) of the training triplets that {file} marks split = test (or leaves unmarked) "
                     "are left out of the training rows: the file's own split, as `run` reads it")
    if notes is not None:
        pairs = shared_image_pairs(split, [s.id for s in split if s.split == "train"],
                                   [s.id for s in split if s.split == "test"])
        if note := shared_image_note(pairs, f"the {len([s for s in split if s.split == 'train'])} training items"):
            notes.append(note)
    if out is not None:
        write_manifest(split, out)
    return split


def marked_rows_left_out(dataset: MATDataset, split: MATDataset, target: Triplet | str,
                         config: SplitConfig | str) -> int:
    """How many rows of `split`'s training triplets the data mark other than split = train (left
    out of its training rows by `make_split(marked_only=True)`)."""
    target = parse_triplet(target) if isinstance(target, str) else tuple(target)
    target = find_triplet({s.triplet for s in dataset}, target) or target
    if not any(s.split == "train" for s in dataset):
        return 0
    return sum(1 for s in dataset if s.triplet != target and in_training(s.triplet, target, config)
               and s.split != "train")


def shared_image_pairs(samples, train_ids, test_ids) -> list[tuple[str, str, str]]:
    """(training item id, held-out item id, image path) for each training item whose image file is a
    held-out item's: the same path, or another file of the same bytes (Med-MAT's subsets 30 and
    47 are both NLM-TB: a Related split of one trains on the other's images). Only files of equal
    size are read and hashed, so a split without shared images costs a stat per file."""
    import hashlib

    from matprobe.data.images import resolve_image_path

    by_id = {s.id: s for s in samples if s.image}
    train = [by_id[i] for i in train_ids if i in by_id]
    test = [by_id[i] for i in test_ids if i in by_id]
    if not train or not test:
        return []

    def key(s) -> tuple[Path, int | None]:
        path = Path(os.path.abspath(resolve_image_path(s.image, None)))
        try:
            return path, path.stat().st_size
        except OSError:
            return path, None  # a missing file: said by the image checks, not here

    test_keys = {s.id: key(s) for s in test}
    by_path = {p: s.id for s, (p, _) in zip(test, test_keys.values())}
    sizes = {size for _, size in test_keys.values() if size is not None}
    digests: dict[Path, str] = {}

    def digest(path: Path) -> str:
        if path not in digests:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            digests[path] = h.hexdigest()
        return digests[path]

    train_keys = [(s, *key(s)) for s in train]
    train_sizes = {size for _, _, size in train_keys if size is not None}  # a missing file is not read
    by_digest: dict[str, str] | None = None
    out = []
    for s, path, size in train_keys:
        if path in by_path:
            out.append((s.id, by_path[path], str(path)))
        elif size is not None and size in sizes:
            if by_digest is None:  # the held-out files of a size some training file has, hashed once
                by_digest = {digest(p): i for i, (p, sz) in test_keys.items() if sz in train_sizes}
            if (hit := by_digest.get(digest(path))) is not None:
                out.append((s.id, hit, str(path)))
    return out


def shared_image_note(pairs: list[tuple[str, str, str]], where: str) -> str | None:
    """The warning for `shared_image_pairs` of a split (None without any): `where` names the split,
    e.g. "the related training items for CT,Lung,COVID"."""
    if not pairs:
        return None
    train_id, test_id, path = pairs[0]
    return (f"{len(pairs)} of {where} use the image file of a held-out item (e.g. training item {train_id!r} and "
            f"held-out item {test_id!r}: {path}, by path or by its bytes): the target's images are seen in "
            "training, so its accuracy is not held-out accuracy; remove those items from the manifest, or mark "
            "them split = unused")
