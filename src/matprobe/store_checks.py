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
