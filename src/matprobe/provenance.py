"""Content provenance: digests of what a result was made from, and the checks that use them.

A store records (docs/ARCHITECTURE.md, "Content provenance"):

- ``weights_fingerprint`` (in its provenance): `weights_fingerprint` of the checkpoint (and
  adapter) folder: every weights file's name and size, its safetensors header (tensor names,
  dtypes, shapes, offsets) and a sample of bytes from *every* tensor and from the file at
  evenly spaced offsets. It reads a few MB whatever the checkpoint's size (a 7B checkpoint
  in about a second, experiments/benchmarks/RESULTS.md), so it is computed on every extract
  and resume. A weights swap of the same architecture changes every tensor's bytes and is
  seen; an edit confined to a few bytes of one tensor away from the samples is not (the
  price of not hashing 15 GB on every resume).
- ``/content/record_digest`` [N]: `record_digests` of each sample's record (question,
  options, answer, labels, split, image file name and every byte of it: `RECORD_DIGEST_SCHEME`).
- ``processing_files`` (in its provenance): `processing_fingerprints` of the checkpoint's
  processor, tokenizer and chat-template files (`PROCESSING_FILES`).
- ``/content/row_digest`` [N]: a digest of each row's stored features and answers, written
  by `EmbeddingStore.append` together with the row.

The store's content id (`EmbeddingStore.content_id`, `content_id`) hashes the sample
identity, the provenance (time stamps excluded), the record digests and the row digests, so it
changes whenever a row, a record or a setting changes. Results written from a store carry it
(``store_fingerprint`` in MI files, ``fingerprint`` in sweep tables), and whatever reuses a
result or resumes a store compares digests, not names: `check_records_unchanged` (extract
resume), `check_finished_cells` (sweep), `check_mi_file` (check --mi), `check_same_records`
(compare, relate).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from matprobe.errors import ExtractError, ProvenanceMismatch, StoreError

DIGEST_BYTES = 16  # blake2b-128 per record / row: collisions are not a practical concern
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
_SAMPLE = 4096  # bytes read from each tensor and at each file offset
_FILE_SAMPLES = 16  # evenly spaced samples per file (covers files that are not safetensors)
_IMAGE_SAMPLE = 65536


def _blake(data: bytes = b"") -> Any:
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES)


# ---------------------------------------------------------------------- weights

def read_safetensors_header(path: str | os.PathLike) -> tuple[dict, int]:
    """(header dict, data start offset) of a safetensors file; refuses a truncated or bad one."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ExtractError(f"{path}: truncated safetensors file ({size} bytes); re-download or re-save it")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 << 20:
            raise ExtractError(f"{path}: truncated or corrupt safetensors file (header of {n} bytes in a "
                               f"{size}-byte file); re-download or re-save it")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ExtractError(f"{path}: corrupt safetensors header (not JSON); re-download or re-save it") from None
    if not isinstance(header, dict):
        raise ExtractError(f"{path}: corrupt safetensors header; re-download or re-save it")
    start = 8 + n
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(meta["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise ExtractError(f"{path}: corrupt safetensors header (tensor {name!r} has no data_offsets); "
                               "re-download or re-save it") from None
    if start + end > size:
        raise ExtractError(f"{path}: truncated safetensors file: its header needs {start + end} bytes, the "
                           f"file has {size}; re-download or re-save it")
    return header, start


def _sample_offsets(size: int, count: int) -> list[int]:
    if size <= _SAMPLE * count:
        return [0] if size else []
    return [int(round(i * (size - _SAMPLE) / (count - 1))) for i in range(count)]


def file_fingerprint(path: str | os.PathLike) -> str:
    """Digest of one weights file from its size, header and sampled bytes (see module doc)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    digest.update(f"{path.name}\x1f{size}".encode())
    offsets = _sample_offsets(size, _FILE_SAMPLES)
    if path.suffix == ".safetensors":
        header, start = read_safetensors_header(path)
        digest.update(json.dumps(header, sort_keys=True).encode())
        for name in sorted(k for k in header if k != "__metadata__"):
            lo, hi = (int(v) for v in header[name]["data_offsets"])
            if hi > lo:  # the middle of every tensor (a fine-tune changes all of a touched matrix)
                offsets.append(start + lo + max(0, (hi - lo - _SAMPLE) // 2))
    if size <= _SAMPLE * _FILE_SAMPLES:
        digest.update(path.read_bytes())
        return digest.hexdigest()
    with open(path, "rb") as fh:
        for off in sorted(set(offsets)):
            fh.seek(off)
            digest.update(off.to_bytes(8, "little"))
            digest.update(fh.read(_SAMPLE))
    return digest.hexdigest()


def weights_files(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def weights_fingerprint(*folders: str | os.PathLike | None) -> str:
    """Fingerprint of the weights in checkpoint / adapter folders (None entries are skipped).

    Validates every safetensors file on the way (a truncated file is an `ExtractError`
    naming it, before any loader can map it).
    """
    digest = hashlib.sha256()
    for folder in folders:
        if folder is None:
            continue
        folder = Path(folder)
        if not folder.is_dir():
            continue  # the loader names a missing checkpoint folder, with the flag to fix
        for name in ("config.json", "model.safetensors.index.json", "adapter_config.json"):
            if (folder / name).is_file():
                digest.update(name.encode())
                digest.update((folder / name).read_bytes())
        for path in weights_files(folder):
            digest.update(file_fingerprint(path).encode())
    return digest.hexdigest()


# files of a checkpoint (or adapter) folder that shape the model's inputs, not its weights: the
# image processor, the tokenizer and the chat template (an edited image_mean or template changed
# every feature while a resume reused the store: an outside study, 2026-12-06)
PROCESSING_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
                    "chat_template.jinja", "chat_template.json", "tokenizer_config.json", "tokenizer.json",
                    "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                    "generation_config.json")


def processing_fingerprints(*folders: str | os.PathLike | None) -> dict[str, str]:
    """{"folder name/file": blake2b of its bytes} for the `PROCESSING_FILES` of each folder
    (None entries and missing folders skipped). Small files, read whole; kept per file so a
    resume can say which one changed."""
    out = {}
    for folder in folders:
        if folder is None or not Path(folder).is_dir():
            continue
        for name in PROCESSING_FILES:
            path = Path(folder) / name
            if path.is_file():
                out[f"{Path(folder).name}/{name}"] = _blake(_canonical_bytes(path)).hexdigest()
    return out


def _canonical_bytes(path: Path) -> bytes:
    """A JSON file's content with its keys sorted and no layout (a file rewritten with the same
    settings in another layout is the same input); any other file's bytes."""
    raw = path.read_bytes()
    if path.suffix == ".json":
        try:
            return json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
        except (ValueError, UnicodeDecodeError):
            pass
    return raw


def changed_processing_files(stored: Mapping[str, str] | None, now: Mapping[str, str]) -> list[str]:
    """The processing files added, removed or edited since `stored` was recorded ([] where the
    store predates the record: nothing to compare)."""
    if stored is None:
        return []
    return sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))


# ---------------------------------------------------------------------- records

# how a record digest reads an image file (the store says which: `EmbeddingStore.record_digest_scheme`):
# 1: its first and last 64 KB (stores made before 2026-12-06; a same-size edit in the middle of a
# 270 KB TIFF went unseen), 2: every byte
RECORD_DIGEST_SCHEME = 2


def _image_digest(image: Any, scheme: int = RECORD_DIGEST_SCHEME) -> str:
    """File name, size and a digest of the image's bytes (not its absolute path: folders move):
    all of them (scheme 2), or the first and last 64 KB (scheme 1, older stores)."""
    if not isinstance(image, str) or not image:
        return ""
    path = Path(image)
    h = _blake()
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if scheme == 1:
                head = fh.read(_IMAGE_SAMPLE)
                if size > 2 * _IMAGE_SAMPLE:
                    fh.seek(size - _IMAGE_SAMPLE)
                h.update(head + fh.read(_IMAGE_SAMPLE))
            else:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
    except OSError:
        return path.name
    return f"{path.name}:{size}:{h.hexdigest()}"


def _canonical(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_canonical(v) for v in value]
    return value if isinstance(value, (int, float, bool)) else str(value)


# columns naming files whose content (not path) belongs to the record: the image and the masks
# of segmentation items (a mask changed in place changes the item's intersection and union)
_FILE_COLUMNS = ("image", "mask")


def _file_field_digest(column: str, value: Any, scheme: int = RECORD_DIGEST_SCHEME) -> Any:
    if column in _FILE_COLUMNS:
        return _image_digest(value, scheme)
    if column == "option_masks" and isinstance(value, (list, tuple, np.ndarray)):
        return [_image_digest(v, scheme) for v in value]
    return _canonical(value)


# columns that say how a study uses an item, not what the item is: the same item is in the
# train split of one condition's manifest and unused in another's (compare/relate pair them)
USE_COLUMNS = ("split",)


def _digests(frame, excludes: tuple[Iterable[str], ...], scheme: int) -> list[np.ndarray]:
    """One digest array per entry of `excludes`: each row's record over every column but those,
    from one pass over the rows (each file's bytes read once, however many digests use them)."""
    excludes = [set(ex) for ex in excludes]
    cols = sorted(c for c in frame.columns if any(c not in ex for ex in excludes))
    outs = [np.empty(len(frame), dtype=f"S{DIGEST_BYTES}") for _ in excludes]
    for i, row in enumerate(frame[cols].itertuples(index=False, name=None)):
        fields = {c: _file_field_digest(c, v, scheme) for c, v in zip(cols, row)}
        for ex, out in zip(excludes, outs):
            rec = {c: v for c, v in fields.items() if c not in ex}
            out[i] = _blake(json.dumps(rec, sort_keys=True, default=str).encode()).digest()
    return outs


def record_digests(frame, exclude: Iterable[str] = (), scheme: int = RECORD_DIGEST_SCHEME) -> np.ndarray:
    """One digest (bytes) per row of a samples table (`MATDataset.frame()` or a DataFrame),
    over every column but `exclude` (`item_digests` leaves out the split); image files read by
    `scheme` (`RECORD_DIGEST_SCHEME`; a store's own: `EmbeddingStore.record_digest_scheme`)."""
    return _digests(frame, (exclude,), scheme)[0]


def record_and_item_digests(frame, scheme: int = RECORD_DIGEST_SCHEME) -> tuple[np.ndarray, np.ndarray]:
    """`record_digests(frame, scheme=scheme)` and `item_digests(frame, scheme)`, every image read
    once instead of twice (a store's creation and a changed-records check need both)."""
    records, items = _digests(frame, ((), USE_COLUMNS), scheme)
    return records, items


def row_digests(features: Mapping[tuple[str, str], np.ndarray], answers: Mapping[str, Any] | None,
                order: np.ndarray) -> np.ndarray:
    """One digest per row of an append batch: its features (all keys, sorted) and answers."""
    keys = sorted(features)
    n = len(order)
    out = np.empty(n, dtype=f"S{DIGEST_BYTES}")
    arrays = [np.ascontiguousarray(np.asarray(features[k], dtype=np.float32)[order]) for k in keys]
    ans = []
    for name in ("pred", "correct", "probs", "intersection", "union"):
        if answers is not None and answers.get(name) is not None:
            ans.append(np.ascontiguousarray(np.asarray(answers[name])[order]).astype("<f8"))
    for i in range(n):
        h = _blake()
        for k, a in zip(keys, arrays):
            h.update(f"{k[0]}/{k[1]}".encode())
            h.update(a[i].tobytes())
        for a in ans:
            h.update(a[i].tobytes())
        out[i] = h.digest()
    return out


# ---------------------------------------------------------------------- content id

def content_id(fingerprint: str, provenance: Mapping[str, Any], record: np.ndarray | None,
               rows: np.ndarray | None, done: np.ndarray, volatile: Iterable[str] = ()) -> str:
    digest = hashlib.sha256()
    digest.update(fingerprint.encode())
    stable = {k: v for k, v in provenance.items() if k not in set(volatile)}
    digest.update(json.dumps(stable, sort_keys=True, default=str).encode())
    for arr in (record, rows):
        digest.update(b"\x00" if arr is None else np.ascontiguousarray(arr).tobytes())
    digest.update(np.packbits(np.asarray(done, dtype=bool)).tobytes())
    return digest.hexdigest()


def short(digest: str | None) -> str:
    return f"{str(digest)[:12]}…" if digest else "(none)"


# ---------------------------------------------------------------------- checks

def check_records_unchanged(store, frame, source: str, update: bool = False) -> None:
    """Extract resume: every finished row's record must be what it was computed from.

    A row not yet done holds nothing computed, so its record may have changed (an unreadable
    image replaced after a run stopped on it): with ``update`` (a store open for appending)
    its stored digest is brought up to date, so the resume computes it from the new record.
    Items whose split alone changed are not refused: with ``update`` the store takes the new
    split (`EmbeddingStore.update_use_columns`)."""
    stored = store.record_digests()
    if stored is None:
        return  # a store written before record digests: ids were checked by the caller
    now, items_now = record_and_item_digests(frame, store.record_digest_scheme)  # each file read once
    if len(now) != len(stored):
        return  # the caller's id check names this
    differs = now != stored
    changed = np.flatnonzero(differs & store.done)
    pending = np.flatnonzero(differs & ~store.done)
    items = store.item_digests()
    if changed.size and items is not None and np.array_equal(items, items_now):
        # only how the study uses the items changed (their split: another condition's rows, or a
        # split column edited), which nothing computed depends on: the store takes the new split
        # on resume (its content id changes with it, so results computed on the old one are redone)
        if update:
            store.update_use_columns(frame, now)
        return
    if update and pending.size and not changed.size:
        store.update_record_digests(pending, now[pending])
    if changed.size:
        ids = frame["id"].astype(str).to_numpy()
        raise ProvenanceMismatch(
            f"{store.path}: {changed.size} record(s) of {source} changed since the store was made "
            f"(first: id {str(ids[changed[0]])!r}); pass --overwrite to recompute the store from the new file"
        )


def check_finished_cells(table, current: Mapping[str, str], path) -> None:
    """Sweep resume: finished cells must have been computed on the stores' current content.

    table: the results read back; current: store path -> its content id now.
    """
    if table is None or len(table) == 0:
        return
    for store, cid in current.items():
        rows = table[table["store"].astype(str) == str(store)]
        stale = sorted(set(rows["fingerprint"].astype(str)) - {cid})
        if stale:
            raise ProvenanceMismatch(
                f"{path}: finished cells of {store} were computed on other content (content id "
                f"{short(stale[0])} in the table, {short(cid)} now: the store was rebuilt or changed); "
                "pass --overwrite to recompute, or a new --out"
            )


def check_mi_file(res: Mapping[str, Any], store, mi_path) -> None:
    """check --mi: the MI file must have been computed on this store's current content."""
    got = res.get("store_fingerprint")
    if got != store.content_id:
        raise ProvenanceMismatch(
            f"{mi_path}: MI results were computed on other store content (content id {short(got)}, store "
            f"{res.get('store')!r}) than {store.path} ({short(store.content_id)}); rerun `matprobe mi` on "
            "this store (--out a new file) to recompute"
        )


def item_digests(frame, scheme: int = RECORD_DIGEST_SCHEME) -> np.ndarray:
    """Digest of each item itself: its record without the columns of `USE_COLUMNS`."""
    return record_digests(frame, exclude=USE_COLUMNS, scheme=scheme)


def check_same_records(a, b) -> None:
    """compare / relate: two stores must hold the same items (question, options, answer,
    labels, image), whatever split each condition's manifest put them in. Stores whose digests
    read images by different schemes (one made before every byte was read) cannot be compared
    here: passed unchecked."""
    if a.record_digest_scheme != b.record_digest_scheme:
        return
    ra, rb = a.item_digests(), b.item_digests()
    old = ra is None or rb is None
    if old:  # stores made before item digests: their whole records (split included)
        ra, rb = a.record_digests(), b.record_digests()
    if ra is None or rb is None:
        return
    pos_b = {sid: i for i, sid in enumerate(b.ids.astype(str))}
    ids = a.ids.astype(str)
    differ = [sid for i, sid in enumerate(ids) if sid in pos_b and ra[i] != rb[pos_b[sid]]]
    if differ:
        raise ProvenanceMismatch(
            f"{a.path} and {b.path} were made from different records for {len(differ)} shared sample(s) "
            f"(first: id {str(differ[0])!r}: question, options, answer or image differ"
            + ("; these stores predate item digests, so a different split column also counts"
               if old else "")
            + "); re-extract both from one dataset file (matprobe extract --overwrite)"
        )


def require_complete(store, what: str) -> None:
    """Readers that need every row (mi, sweep, check): refuse an unfinished store with counts."""
    done = store.done
    if not done.all():
        missing = int((~done).sum())
        first = store.ids[~done][0]
        raise StoreError(
            f"{store.path}: {missing} of {store.n} rows have no features yet (first id {first!r}); "
            f"finish the extraction (rerun `matprobe extract` with the same arguments) before {what}"
        )
