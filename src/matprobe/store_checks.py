"""Provenance checks that open stores by path (compare, relate, sweep, pipeline, extract resume).

`matprobe.provenance` compares digests of stores already open; these functions open the files
themselves, so they live above `matprobe.store` (provenance.py is below it: the store uses its
digests), which keeps the two modules out of an import circle (tests/test_import_cycles.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from matprobe.errors import ProvenanceMismatch, StoreError
from matprobe.provenance import changed_processing_files, check_records_unchanged, check_same_records, short
from matprobe.store import EmbeddingStore


def store_content_ids(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """Current content id of each store path (as the path string a results table records)."""
    out = {}
    for p in paths:
        with EmbeddingStore.open(p) as st:
            out[str(p)] = st.content_id
    return out


def check_same_records_paths(paths: Iterable[str | os.PathLike]) -> None:
    """`check_same_records` of the first store against each other one (compare, relate)."""
    paths = [p for p in paths if p is not None]
    if len(paths) < 2:
        return
    with EmbeddingStore.open(paths[0]) as first:
        for p in paths[1:]:
            if Path(p).resolve() == Path(paths[0]).resolve():
                continue
            with EmbeddingStore.open(p) as other:
                check_same_records(first, other)


def mi_file_matches(mi_path: str | os.PathLike, store_path: str | os.PathLike) -> bool:
    """Whether an MI results file was computed on the store's current content (for reuse)."""
    try:
        res = json.loads(Path(mi_path).read_text())
        with EmbeddingStore.open(store_path) as st:
            return isinstance(res, dict) and res.get("store_fingerprint") == st.content_id
    except (OSError, ValueError, StoreError):
        return False


def check_resume_inputs(path: str | os.PathLike, weights: str, samples, adapter=None, checkpoint=None,
                        processing: dict | None = None) -> None:
    """Before a model is loaded: a store to resume must come from these weights and records.
    `checkpoint`: the folder the weights are read from now (named where it is not the store's).

    A different adapter *setting* is left to the provenance comparison, which names it.
    """
    path = Path(path)
    if not path.exists():
        return
    try:
        st = EmbeddingStore.open(path)
    except StoreError:
        return  # the resume itself reports an unreadable store, with its fix
    with st:
        stored = st.provenance.get("weights_fingerprint")
        same_adapter = st.provenance.get("adapter") == (str(Path(adapter).resolve()) if adapter else None)
        was = st.provenance.get("checkpoint")
        now = str(Path(checkpoint).resolve()) if checkpoint else None
        if stored is not None and stored != weights and same_adapter and now and was and now != was:
            # a study pointed an entry at another folder: the message named the store's folder as "changed"
            raise ProvenanceMismatch(
                f"{path}: the store was made from another checkpoint ({was}; now {now}, weights fingerprint "
                f"{short(stored)} stored, {short(weights)} now); pass --overwrite to recompute the store from "
                f"{now}, or write it to another --out")
        if stored is not None and stored != weights and same_adapter:
            raise ProvenanceMismatch(
                f"{path}: the checkpoint's weights changed since the store was made (weights fingerprint "
                f"{short(stored)} stored, {short(weights)} now; checkpoint {st.provenance.get('checkpoint')}); "
                "pass --overwrite to recompute the store with these weights, or restore the original weights"
            )
        changed = ([] if processing is None or not same_adapter
                   else changed_processing_files(st.provenance.get("processing_files"), processing))
        if changed:
            raise ProvenanceMismatch(
                f"{path}: the checkpoint's processor, tokenizer or chat template files changed since the store was "
                f"made ({', '.join(changed[:4])}{', …' if len(changed) > 4 else ''}): they shape every input, so "
                "the stored features are of other inputs; pass --overwrite to recompute the store, or restore "
                "the files")
        if list(st.ids) == [s.id for s in samples]:
            check_records_unchanged(st, samples.frame(), samples.source)


def held_out_triplets(path: str | os.PathLike) -> dict[str, set[tuple[str, str, str]]] | None:
    """{split value: the (modality, anatomy, task) triplets of the store's rows with it}, read from
    the store's `split` column (`matprobe run` writes each condition's split: train, test for the
    held-out target, unused); None where the store has no split or no MAT column."""
    with EmbeddingStore.open(path) as st:
        have = st.label_columns()
        if "split" not in have or not {"modality", "anatomy", "task"} <= set(have):
            return None
        frame = st.samples()
    out: dict[str, set[tuple[str, str, str]]] = {}
    for split, m, a, t in zip(frame["split"], frame["modality"], frame["anatomy"], frame["task"]):
        out.setdefault(str(split), set()).add((str(m), str(a), str(t)))
    return out


def held_out_problem(path: str | os.PathLike, target: tuple[str, str, str], splits=...) -> str | None:
    """Why a store's own split says it is not a store held out from `target`, or None.

    A store given for a target is scored on the target's rows as held-out accuracy; where its split
    marks some of those rows train (the checkpoint was trained on them) or holds out another
    triplet and not this one (a store of another target, named for this one), that number would
    be training or another target's accuracy, said as held-out (a study that swapped two targets'
    store names got no warning). `splits`: `held_out_triplets(path)` where the caller read it already."""
    splits = held_out_triplets(path) if splits is ... else splits
    if splits is None:
        return None
    target = tuple(str(x) for x in target)
    shown = ",".join(target)
    tested = splits.get("test", set())
    holds = f" (it holds out {'; '.join(','.join(t) for t in sorted(tested))})" if tested else ""
    if target in splits.get("train", set()):
        return (f"its split marks rows of the target {shown} train: its checkpoint was trained on them, so their "
                f"accuracy is not held-out accuracy{holds}")
    if tested and target not in tested:
        return f"its split holds out another triplet than the target {shown}{holds}: a store of another target"
    return None


def held_out_target(path: str | os.PathLike, targets, splits=...) -> tuple[str, str, str] | None:
    """The one of `targets` the store's split holds out (its split = test rows are that triplet's),
    or None where it has no split or holds out none or several of them. `splits`: as `held_out_problem`."""
    splits = held_out_triplets(path) if splits is ... else splits
    if splits is None:
        return None
    hits = [tuple(t) for t in targets if tuple(str(x) for x in t) in splits.get("test", set())]
    return hits[0] if len(hits) == 1 else None
