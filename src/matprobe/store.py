"""The HDF5 embedding store: samples, MAT labels, pooled hidden states and model answers.

One file holds everything a study needs (layout in docs/ARCHITECTURE.md):

- ``/samples``: ids, question, options, answer index, and every label column stored as
  int64 codes with its vocabulary (JSON list; code = index) as an attribute;
- ``/features/<layer>/<pool>``: float32 [N, D], chunked by rows and gzip-compressed,
  so reading chosen rows touches only their chunks;
- ``/answers``: the model's predicted option, its correctness and option probabilities;
  for segmentation items also the pixel ``intersection`` and ``union`` of the chosen
  option's mask with the ground truth (-1 on other rows), from which cIoU = Σ I / Σ U;
- ``/done``: which rows are complete, for resume;
- attributes: ``provenance`` (JSON), ``fingerprint`` and ``format_version``.

Crash safety: the file is created under a temporary name and renamed into place. While
rows are being written, feature arrays are chunked but *uncompressed* with every chunk
allocated at creation, so an append only overwrites the bytes of its own rows and never
moves or rewrites a chunk that holds finished rows (a compressed chunk is re-encoded as a
whole on every partial write, and a kill in the middle of that destroys its finished
rows too: measured here, 2 of 5 SIGKILL runs). Each append writes features and answers,
flushes, and only then sets ``done`` and flushes again. A writer killed mid-append thus
leaves a file that opens, whose ``done`` rows are complete, and whose ``missing_ids()``
are exactly the rows still to do. When every row is done, `finalize()` repacks the
features into gzip-compressed chunks in a new file and renames it over the old one.
The file uses HDF5's default (earliest) format: the newer format's "open for write" flag
would make a killed writer's file unopenable without ``h5clear``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from matprobe import __version__
from matprobe.checks import check_store_path
from matprobe.data.model import MATDataset, resolve_factor
from matprobe.errors import ProvenanceMismatch, StoreError, StoreUnavailable
from matprobe.io import atomic_h5
from matprobe.locks import writer_lock

FORMAT_VERSION = 1
LAYER_CONVENTION = (
    "decoder block outputs indexed from 0 ('0'..'L-1'; negative indices resolved from the end "
    "before storing); 'final' = after the final norm; 'embed' = input embeddings"
)
# Provenance fields that may differ between a store and a later append, and are not part of its
# content id: time stamps, and the extraction request the store was made from (settings as given:
# a rerun loads no model where it is the same, `extract.runner.reuse_complete_store`; layers -1
# and 31 of one model ask for the same rows)
_VOLATILE_PROVENANCE = frozenset({"created", "created_by", "extract_request"})
# Label columns stored as codes + vocabulary.
_CODED_COLUMNS = ("modality", "anatomy", "task", "label", "subset", "split")
_TEXT_COLUMNS = ("image", "question", "mask")
_STR = h5py.string_dtype("utf-8")
# Per-row pixel counts of segmentation items (int64, -1 = not a segmentation item / not scored).
_SEGMENTATION_ANSWERS = ("intersection", "union")
_REQUIRED_MEMBERS = ("samples/id", "done")  # what every reader touches
_TARGET_CHUNK_BYTES = 256 * 1024

FeatureKey = tuple[str, str]


def feature_path(layer: str | int, pool: str) -> str:
    return f"features/{layer}/{pool}"


def _normalise_key(key: FeatureKey | str) -> FeatureKey:
    if isinstance(key, str):
        layer, _, pool = key.partition("/")
        return (layer, pool)
    return (str(key[0]), str(key[1]))


def checkpoint_label(provenance: Mapping[str, Any], path, taken=()) -> str:
    """A store's checkpoint as tables name it: its checkpoint folder, with "+ADAPTER" for an adapter
    (a LoRA run) on a base, whose checkpoint is the base and would name every run on it alike.
    `taken`: labels other stores of the same table have; two stores of one checkpoint (other
    layers, other data) are then named by the store's file name, else its path."""
    ckpt = provenance.get("checkpoint") or Path(path).stem
    if provenance.get("adapter"):
        ckpt = f"{ckpt}+{Path(str(provenance['adapter'])).name}"
    if str(ckpt) in taken:
        ckpt = Path(path).stem if Path(path).stem not in taken else path
    return str(ckpt)


def checkpoint_labels(provenances: Mapping[Any, Mapping[str, Any]]) -> dict[str, str]:
    """{store path: label} for the stores of one table, each its `checkpoint_label` unless another
    store has the same one: then every store sharing it is named by its file name (its path where
    file names coincide too), not the first by its checkpoint and the rest by file names (a study of
    Trainer adapters, all `checkpoint-500` on one base, read "base+checkpoint-500", "related-s1", ...)."""
    from collections import Counter

    first = {str(p): checkpoint_label(prov, p) for p, prov in provenances.items()}
    shared = Counter(first.values())
    stems = Counter(Path(p).stem for p in first)
    return {p: label if shared[label] == 1 else (Path(p).stem if stems[Path(p).stem] == 1 else p)
            for p, label in first.items()}


def make_provenance(**fields: Any) -> dict[str, Any]:
    """Provenance with the defaults every store records (version, convention, time)."""
    prov = {
        "matprobe_version": __version__,
        "layer_convention": LAYER_CONVENTION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    prov.update(fields)
    return prov


# Provenance fields that name the folder an input was read from, each with the fields that record
# its content: the same content read from another path (a run directory copied or moved with its
# checkpoints) is the same input; other content is refused by those fields themselves
_NAMED_BY_CONTENT = {"checkpoint": ("weights_fingerprint", "config_sha256"),
                     "adapter": ("weights_fingerprint", "adapter_sha256")}


# Provenance fields recorded since a later version: a store made before one has nothing to compare,
# and is not refused for lacking it (what the field guards is checked where it is recorded)
_RECORDED_SINCE = frozenset({"processing_files"})


def _provenance_text(prov: Mapping[str, Any]) -> str:
    """A store's provenance as its `provenance` attribute holds it (every writer spells it so)."""
    return json.dumps(prov, sort_keys=True, default=str)


def provenance_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Names of provenance fields whose values differ (time stamps excluded; a checkpoint's or
    adapter's path where both record the same content for it: resume checks content, not names;
    a field of `_RECORDED_SINCE` that the stored provenance predates)."""
    keys = (set(old) | set(new)) - _VOLATILE_PROVENANCE - {k for k in _RECORDED_SINCE if k not in old}
    same_content = {k for k, fields in _NAMED_BY_CONTENT.items()
                    if all(old.get(f) is not None and old.get(f) == new.get(f) for f in fields)}
    return sorted(k for k in keys - same_content if _jsonable(old.get(k)) != _jsonable(new.get(k)))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _samples_frame(samples: MATDataset | pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple]]:
    """Normalise the samples table and take vocabularies (from the dataset when it has them)."""
    if isinstance(samples, MATDataset):
        frame = samples.frame()
        vocab = {k: tuple(v.labels) for k, v in samples.vocabularies.items()}
    else:
        frame = samples.reset_index(drop=True).copy()
        vocab = {}
    if "id" not in frame:
        raise StoreError("samples table has no 'id' column; give every sample an id")
    frame["id"] = frame["id"].astype(str)
    dup = frame["id"][frame["id"].duplicated()]
    if len(dup):
        raise StoreError(f"samples table has duplicate id {dup.iloc[0]!r}; make ids unique")
    return frame, vocab


def _fingerprint(ids: np.ndarray, coded: Mapping[str, tuple[np.ndarray, tuple]]) -> str:
    """Identity of the sample set: ids in order plus the M, A, T labels of every row."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, ids)).encode())
    for name in ("modality", "anatomy", "task"):
        if name in coded:
            codes, labels = coded[name]
            digest.update(name.encode())
            digest.update(json.dumps([labels[c] if c >= 0 else None for c in codes]).encode())
    return digest.hexdigest()


def _rows_per_chunk(dim: int) -> int:
    return int(max(1, min(1024, _TARGET_CHUNK_BYTES // (4 * max(dim, 1)))))


def _label_values(raw) -> list[str | None]:
    """A label column's values as strings, None where missing (None or NaN)."""
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in raw]


def _write_coded(g: h5py.Group, col: str, values: list[str | None], labels=None) -> tuple[np.ndarray, tuple]:
    """A coded label column under `g`: integer codes into `labels` (default: the values sorted),
    -1 where missing, the vocabulary as the dataset's attribute; returns (codes, labels)."""
    labels = tuple(labels or sorted({v for v in values if v is not None}))
    index = {lab: i for i, lab in enumerate(labels)}
    codes = np.asarray([index[v] if v is not None else -1 for v in values], dtype=np.int64)
    g.create_dataset(col, data=codes).attrs["vocabulary"] = json.dumps(list(labels))
    return codes, labels


class EmbeddingStore:
    """An open HDF5 embedding store. Create with `create`/`from_arrays`, open with `open`."""

    def __init__(self, h5: h5py.File, path: Path):
        self._h5 = h5
        self.path = path
        try:
            version = int(h5.attrs["format_version"])
        except KeyError:
            raise StoreError(f"{path}: not a matprobe store (no format_version attribute)") from None
        if version > FORMAT_VERSION:
            raise StoreError(
                f"{path}: store format {version} is newer than this matprobe reads "
                f"({FORMAT_VERSION}); upgrade matprobe"
            )
        absent = [name for name in _REQUIRED_MEMBERS if name not in h5]
        if absent:
            raise StoreError(
                f"{path}: not a complete matprobe store ({', '.join('/' + a for a in absent)} missing); the file "
                "was damaged or written by another tool: re-extract it with --overwrite, or restore a good copy")
        self._ids = np.asarray(h5["samples/id"].asstr()[...], dtype=object)
        self._row_of = {sid: i for i, sid in enumerate(self._ids)}
        self._lock = None  # the writer lock, held while open for appending
        self._check_virtual_sources()

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        samples: MATDataset | pd.DataFrame,
        provenance: Mapping[str, Any],
        features: Mapping[FeatureKey | str, int],
        n_options: int | None = None,
        overwrite: bool = False,
    ) -> EmbeddingStore:
        """Create an empty store for `samples` with one [N, dim] array per (layer, pool)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(f"{path} exists; open it to resume, or pass overwrite=True (--overwrite)")
        if path.is_file() and path.stat().st_size and not is_hdf5_file(path):
            # --overwrite replaces a store, never another kind of file given as --out by mistake
            raise StoreUnavailable(f"{path} exists and is not a store (not an HDF5 file): --overwrite replaces stores "
                                   "only; give another --out, or move that file away first")
        frame, vocab = _samples_frame(samples)
        n = len(frame)
        if n == 0:
            raise StoreError(f"{path}: no samples to store")
        prov = make_provenance(**dict(provenance))
        with writer_lock(path):  # before anything is replaced: --overwrite cannot race a writer
            cls._create_file(path, frame, vocab, prov, features, n, n_options)
            return cls.open(path, mode="a")  # inside the lock: the store holds it from here

    @classmethod
    def _create_file(cls, path, frame, vocab, prov, features, n, n_options) -> None:
        with atomic_h5(path) as h5:
            coded = cls._write_samples(h5, frame, vocab)
            _write_content(h5, frame)
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["provenance"] = _provenance_text(prov)
            h5.attrs["fingerprint"] = _fingerprint(frame["id"].to_numpy(), coded)
            for key, dim in features.items():
                layer, pool = _normalise_key(key)
                _create_writable_features(h5, feature_path(layer, pool), n, int(dim))
            ans = h5.create_group("answers")
            ans.create_dataset("pred", data=np.full(n, -1, dtype=np.int64))
            ans.create_dataset("correct", data=np.full(n, -1, dtype=np.int8))
            if n_options:
                # written with data so its storage exists now and appends only overwrite bytes
                ans.create_dataset("probs", data=np.full((n, int(n_options)), np.nan, dtype="f4"))
            for name in _SEGMENTATION_ANSWERS:
                ans.create_dataset(name, data=np.full(n, -1, dtype=np.int64))
            h5.create_dataset("done", data=np.zeros(n, dtype=bool))
            h5.attrs["finalized"] = False

    @staticmethod
    def _write_samples(h5: h5py.File, frame: pd.DataFrame, vocab: Mapping[str, tuple]) -> dict:
        g = h5.create_group("samples")
        g.create_dataset("id", data=frame["id"].to_numpy(dtype=object), dtype=_STR)
        for col in _TEXT_COLUMNS:
            if col in frame:
                values = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                          for v in frame[col]]
                g.create_dataset(col, data=np.asarray(values, dtype=object), dtype=_STR)
        if "options" in frame:
            opts = [json.dumps(list(o) if o is not None else []) for o in frame["options"]]
            g.create_dataset("options", data=np.asarray(opts, dtype=object), dtype=_STR)
            g.create_dataset("n_options", data=np.asarray([len(json.loads(o)) for o in opts]))
        if "option_masks" in frame and frame["option_masks"].notna().any():
            # JSON list of mask paths per segmentation item ("" on other rows)
            om = ["" if not isinstance(v, (list, tuple)) else json.dumps(list(v)) for v in frame["option_masks"]]
            g.create_dataset("option_masks", data=np.asarray(om, dtype=object), dtype=_STR)
        if "answer_index" in frame:
            ai = pd.to_numeric(frame["answer_index"], errors="coerce").fillna(-1).astype(np.int64)
            g.create_dataset("answer_index", data=ai.to_numpy())
        if "slice_index" in frame:
            si = pd.to_numeric(frame["slice_index"], errors="coerce").fillna(-1).astype(np.int64)
            g.create_dataset("slice_index", data=si.to_numpy())
        coded: dict[str, tuple[np.ndarray, tuple]] = {}
        skip = {"id", "options", "answer_index", "slice_index", "option_masks", *_TEXT_COLUMNS}
        for col in frame.columns:
            if col in skip:
                continue
            values = _label_values(frame[col])
            if col not in _CODED_COLUMNS and all(v is None for v in values):
                continue
            coded[col] = _write_coded(g, col, values, vocab.get(col))
        return coded

    @classmethod
    def from_arrays(
        cls,
        path: str | os.PathLike,
        ids: Sequence[str],
        labels: Mapping[str, Sequence],
        features: Mapping[FeatureKey | str, np.ndarray],
        answers: Mapping[str, np.ndarray] | None = None,
        provenance: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> EmbeddingStore:
        """Write a complete store in one call (synthetic studies, tests, imports)."""
        frame = pd.DataFrame({"id": [str(i) for i in ids]})
        for name, values in labels.items():
            name = resolve_factor(name)
            if len(values) != len(frame):
                raise StoreError(
                    f"label column {name!r} has {len(values)} values for {len(frame)} ids"
                )
            frame[name] = [None if v is None else str(v) for v in values]
        dims = {}
        for key, arr in features.items():
            arr = np.asarray(arr)
            if arr.ndim != 2 or arr.shape[0] != len(frame):
                raise StoreError(
                    f"features {key!r} have shape {arr.shape}; expected ({len(frame)}, D)"
                )
            if not np.isfinite(np.asarray(arr, dtype=np.float32)).all():
                bad = np.flatnonzero(~np.isfinite(np.asarray(arr, dtype=np.float32)).all(axis=1))
                raise StoreError(
                    f"features {key!r} contain NaN or Inf (rows {bad[:5].tolist()}); nothing was written: "
                    "drop or fix those rows first")
            dims[_normalise_key(key)] = arr.shape[1]
        for name, arr in (answers or {}).items():
            if len(np.asarray(arr)) != len(frame):
                raise StoreError(f"answers {name!r} have {len(np.asarray(arr))} rows for {len(frame)} ids; "
                                 "nothing was written")
        n_options = None
        if answers is not None and "probs" in answers:
            n_options = np.asarray(answers["probs"]).shape[1]
        store = cls.create(
            path, frame, provenance or {"source": "from_arrays"}, dims, n_options, overwrite
        )
        try:
            store.append(
                np.arange(len(frame)),
                {k: np.asarray(v) for k, v in features.items()},
                answers=answers,
            )
            return store.finalize()
        except BaseException:
            # one call writes the whole store: a failure leaves no empty store (nor its lock)
            store.close()
            Path(path).unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> EmbeddingStore:
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError("mode must be 'r' or 'a'")
        check_store_path(path)
        if mode == "a":
            _check_room_to_append(path)
        lock = writer_lock(path).acquire() if mode == "a" else None
        try:
            h5 = h5py.File(path, "r+" if mode == "a" else "r")
        except OSError as exc:
            if lock is not None:
                lock.release()
            raise _open_error(path, exc) from None
        try:
            store = cls(h5, path)
        except Exception:
            h5.close()
            if lock is not None:
                lock.release()
            raise
        store._lock = lock
        return store

    def close(self) -> None:
        if self._h5.id.valid:
            self._h5.close()
        if getattr(self, "_lock", None) is not None:
            self._lock, lock = None, self._lock
            lock.release()

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    @property
    def n(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        return self._ids.copy()

    @property
    def provenance(self) -> dict[str, Any]:
        return json.loads(self._h5.attrs["provenance"])

    @property
    def fingerprint(self) -> str:
        return str(self._h5.attrs["fingerprint"])

    @property
    def content_id(self) -> str:
        """Digest of everything the rows are (matprobe.provenance): changes when any row changes."""
        from matprobe import provenance as prov

        return prov.content_id(self.fingerprint, self.provenance, self.record_digests(),
                               self._row_digests(), self.done, _VOLATILE_PROVENANCE)

    def record_digests(self) -> np.ndarray | None:
        """Digest of each sample's source record, as stored at creation (None: older store)."""
        g = self._h5.get("content")
        return None if g is None or "record_digest" not in g else g["record_digest"][...]

    @property
    def record_digest_scheme(self) -> int:
        """How the record digests read image files (`provenance.RECORD_DIGEST_SCHEME`): 1 for a
        store that does not say (made before the scheme was recorded)."""
        g = self._h5.get("content")
        return 1 if g is None else int(g.attrs.get("record_digest_scheme", 1))

    def item_digests(self) -> np.ndarray | None:
        """Digest of each item without its split (`provenance.item_digests`; None: older store)."""
        g = self._h5.get("content")
        return None if g is None or "item_digest" not in g else g["item_digest"][...]

    def update_record_digests(self, rows: np.ndarray, digests: np.ndarray) -> None:
        """Replace the record digests of rows not yet done (their records changed before any
        of them was computed; extract resume). Done rows keep theirs."""
        if self._h5.mode != "r+":
            raise StoreError(f"{self.path}: opened read-only; open with mode='a' to update it")
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        if self.done[rows].any():
            raise StoreError(f"{self.path}: finished rows keep the record digest they were computed from")
        self._h5["content/record_digest"][rows] = digests
        self._h5.flush()

    def update_use_columns(self, frame: pd.DataFrame, record_digests: np.ndarray) -> None:
        """Take a new split column (`provenance.USE_COLUMNS`) and the record digests that go with
        it, for items otherwise unchanged (`provenance.check_records_unchanged` checks that): no
        feature or answer depends on the split."""
        from matprobe.provenance import USE_COLUMNS

        if self._h5.mode != "r+":
            raise StoreError(f"{self.path}: opened read-only; open with mode='a' to update it")
        g = self._h5["samples"]
        for col in USE_COLUMNS:
            if col in g:
                del g[col]
            _write_coded(g, col, _label_values(frame[col] if col in frame else [None] * self.n))
        self._h5["content/record_digest"][...] = record_digests
        self._h5.flush()

    def record_request(self, request: Mapping[str, Any]) -> None:
        """Record the extraction request the store's provenance was just found to follow from
        (`extract.runner.extract_request`): not compared on resume, not part of the content id."""
        if self._h5.mode != "r+":
            raise StoreError(f"{self.path}: opened read-only; open with mode='a' to update it")
        prov = self.provenance
        prov["extract_request"] = dict(request)
        self._h5.attrs["provenance"] = _provenance_text(prov)
        self._h5.flush()

    def _row_digests(self) -> np.ndarray:
        g = self._h5.get("content")
        if g is not None and "row_digest" in g:
            return g["row_digest"][...]
        # a store written before row digests: hash what is stored (slow, exact)
        from matprobe import provenance as prov

        keys = self.feature_keys()
        rows = np.arange(self.n)
        return prov.row_digests({k: self.read(*k) for k in keys}, self.stored_answers(), rows)

    def require_complete(self, what: str) -> None:
        """Refuse an unfinished store for a reader that needs every row (one line with counts)."""
        from matprobe.provenance import require_complete

        require_complete(self, what)

    def _check_virtual_sources(self) -> None:
        """A merged (virtual) store whose shard files are gone would read NaN: refuse it."""
        if "features" not in self._h5:
            return
        for layer, pool in self.feature_keys():
            ds = self._h5[feature_path(layer, pool)]
            if not ds.is_virtual:
                continue
            for src in ds.virtual_sources():
                shard = Path(src.file_name)
                if not shard.is_absolute():
                    shard = self.path.parent / shard
                if not shard.is_file():
                    raise StoreError(
                        f"{self.path}: merged store's shard {src.file_name} is missing (looked for {shard}); "
                        "put the shard files back beside it, or re-extract with --overwrite"
                    )
            return  # every (layer, pool) maps the same shard files

    @property
    def done(self) -> np.ndarray:
        return self._h5["done"][...].astype(bool)

    def missing_ids(self) -> list[str]:
        """Ids of rows not yet complete, in row order."""
        return [str(s) for s in self._ids[~self.done]]

    def label_columns(self) -> list[str]:
        return [k for k, ds in self._h5["samples"].items() if "vocabulary" in ds.attrs]

    def factor(self, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
        """(codes [N], labels) of a label column; 'M', 'A', 'T', 'Y' alias modality, ..., label."""
        col = resolve_factor(name)
        g = self._h5["samples"]
        if col not in g or "vocabulary" not in g[col].attrs:
            raise StoreError(
                f"{self.path}: no label column {name!r}; have {', '.join(self.label_columns())}"
            )
        return g[col][...].astype(np.int64), tuple(json.loads(g[col].attrs["vocabulary"]))

    def samples(self) -> pd.DataFrame:
        """One row per sample, labels as strings (None where absent)."""
        g = self._h5["samples"]
        out: dict[str, Any] = {"id": self._ids.astype(str)}
        for col in _TEXT_COLUMNS:
            if col in g:
                out[col] = g[col].asstr()[...]
        if "options" in g:
            out["options"] = [json.loads(o) for o in g["options"].asstr()[...]]
        if "option_masks" in g:
            out["option_masks"] = [json.loads(o) if o else None for o in g["option_masks"].asstr()[...]]
        for col in ("answer_index", "n_options", "slice_index"):
            if col in g:
                out[col] = g[col][...]
        for col in self.label_columns():
            codes, labels = self.factor(col)
            out[col] = [labels[c] if c >= 0 else None for c in codes]
        return pd.DataFrame(out)

    def feature_keys(self) -> list[FeatureKey]:
        keys = []
        if "features" in self._h5:
            for layer, grp in self._h5["features"].items():
                keys.extend((layer, pool) for pool in grp)
        return sorted(keys, key=lambda k: (_layer_sort_key(k[0]), k[1]))

    def resolve_feature(self, layer=None, pool=None, flags: tuple[str, str] = ("--layer", "--pool")
                        ) -> tuple[str, str]:
        """(layer, pool) keys of this store for a request (None = defaults; negative layers from
        the end): `matprobe.store.resolve_feature`."""
        return resolve_feature(self.feature_keys(), layer, pool, self.provenance, self.path, flags)

    def feature_dim(self, layer: str | int, pool: str) -> int:
        return int(self._dataset(layer, pool).shape[1])

    def _dataset(self, layer: str | int, pool: str) -> h5py.Dataset:
        key = feature_path(layer, pool)
        if key not in self._h5:
            have = ", ".join(f"{lay}/{p}" for lay, p in self.feature_keys()) or "none"
            raise StoreError(f"{self.path}: no features for layer {layer!r}, pool {pool!r}; have {have}")
        return self._h5[key]

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        try:
            return np.asarray([self._row_of[str(i)] for i in ids], dtype=np.int64)
        except KeyError as exc:
            raise StoreError(f"{self.path}: no sample with id {exc.args[0]!r}") from None

    def read(self, layer: str | int, pool: str, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Features of one (layer, pool) as float32 [len(rows), D]; only those rows are read.

        An unfinished (uncompressed) store is checked against its row digests on the first
        read (`verify`); a compressed chunk that fails to decompress is named as corruption."""
        ds = self._dataset(layer, pool)
        if not self.finalized and not getattr(self, "_verified", False):
            self.verify()
        if rows is None:
            return self._read_chunks(ds, layer, pool, slice(None))
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0, ds.shape[1]), dtype=np.float32)
        if rows.min() < 0 or rows.max() >= self.n:
            raise StoreError(f"{self.path}: row index out of range [0, {self.n})")
        uniq, inverse = np.unique(rows, return_inverse=True)
        return self._read_chunks(ds, layer, pool, uniq)[inverse.reshape(-1)]

    def _read_chunks(self, ds, layer, pool, index) -> np.ndarray:
        try:
            return ds[index]
        except OSError as exc:
            text = str(exc)
            if "filter" in text.lower() or "inflate" in text.lower() or "checksum" in text.lower():
                raise StoreError(
                    f"{self.path}: store corrupt, re-extract: a compressed chunk of features {layer}/{pool} "
                    f"does not decompress ({text.strip().splitlines()[0][:120]}); the file changed after it "
                    "was written (disk or copy error): rerun `matprobe extract` with --overwrite, or restore "
                    "a good copy") from None
            raise

    def verify(self, block: int | None = None) -> None:
        """Check every finished row against the digest written with it (/content/row_digest).

        A row's digest covers its features and the answers given with it (the answer sets
        appends used are recorded beside the digests; stores without that record are not
        checked). Raises
        StoreError ("store corrupt, re-extract") naming the first rows that differ."""
        g = self._h5.get("content")
        if g is None or "row_digest" not in g or "answer_sets" not in g["row_digest"].attrs:
            self._verified = True  # older stores do not record what their digests cover
            return
        from matprobe.provenance import row_digests

        stored = g["row_digest"][...]
        names = json.loads(g["row_digest"].attrs["answer_sets"])
        done = np.flatnonzero(self.done)
        keys = self.feature_keys()
        answers = self.stored_answers()
        if block is None:  # rows per pass: about 256 MiB of features in memory at a time
            width = sum(self.feature_dim(*k) for k in keys) or 1
            block = max(1, (256 << 20) // (4 * width))
        bad: list[int] = []
        for start in range(0, done.size, block):
            rows = done[start:start + block]
            feats = {k: self._dataset(*k)[rows] for k in keys}
            ok = np.zeros(rows.size, dtype=bool)
            for subset in names:
                ans = {n: answers[n][rows] for n in subset if n in answers} or None
                if subset and ans is None:
                    continue
                if ok.all():
                    break
                got = row_digests(feats, ans, np.arange(rows.size))
                ok |= got == stored[rows]
            bad += rows[~ok].tolist()
        if bad:
            first = ", ".join(repr(str(self._ids[r])) for r in bad[:3])
            raise StoreError(
                f"{self.path}: store corrupt, re-extract: {len(bad)} of {done.size} finished rows differ from "
                f"the digest written with them (first ids {first}); the file changed after it was written "
                "(disk or copy error): rerun `matprobe extract` with --overwrite, or restore a good copy")
        self._verified = True

    def answers(self) -> dict[str, np.ndarray]:
        """The model's answers per row: `pred` (option index, -1 = none) and `correct` (1 right,
        0 wrong, -1 unknown), plus `probs` and segmentation counts where stored.

        `correct` is the stored one where it is known, else pred == answer_index where both are:
        the one rule that check, relate, the pipeline's accuracy and `store info` all read (a
        store written with predictions only, e.g. by `from_arrays`, scored as right or wrong by
        check but as unanswered by the pipeline before)."""
        out = self.stored_answers()
        unknown = (out["correct"] < 0) & (out["pred"] >= 0)
        if unknown.any() and "answer_index" in self._h5["samples"]:
            truth = self._h5["samples"]["answer_index"][...]
            derive = unknown & (truth >= 0)
            out["correct"] = np.where(derive, out["pred"] == truth, out["correct"]).astype(out["correct"].dtype)
        return out

    def stored_answers(self) -> dict[str, np.ndarray]:
        """The answer datasets exactly as written (what the row digests cover; `answers` for use)."""
        g = self._h5["answers"]
        out = {"pred": g["pred"][...], "correct": g["correct"][...]}
        for name in ("probs", *_SEGMENTATION_ANSWERS):
            if name in g:
                out[name] = g[name][...]
        return out

    def scores_by_triplet(self) -> pd.DataFrame:
        """Per (modality, anatomy, task): n, answered, correct, accuracy, and for segmentation items
        n_segmentation, Σ intersection, Σ union and cIoU = Σ I / Σ U (pixels)."""
        frame = self.samples()
        ans = self.answers()
        frame["_correct"] = ans["correct"]
        has_iu = "intersection" in ans and "union" in ans
        frame["_i"] = ans["intersection"] if has_iu else -1
        frame["_u"] = ans["union"] if has_iu else -1
        rows = []
        keys = [c for c in ("modality", "anatomy", "task") if c in frame]
        if not keys:
            return pd.DataFrame()
        for key, sub in frame.groupby(keys, sort=True, dropna=False):
            known = sub["_correct"] >= 0
            seg = sub["_u"] >= 0
            si, su = int(sub.loc[seg, "_i"].sum()), int(sub.loc[seg, "_u"].sum())
            rows.append({
                **dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                "n": len(sub), "answered": int(known.sum()),
                "correct": int((sub.loc[known, "_correct"] > 0).sum()),
                "accuracy": float(sub.loc[known, "_correct"].mean()) if known.any() else None,
                "n_segmentation": int(seg.sum()),
                "intersection": si if seg.any() else None, "union": su if seg.any() else None,
                "cIoU": (si / su if su > 0 else None) if seg.any() else None,
            })
        return pd.DataFrame(rows)

    def info(self) -> dict[str, Any]:
        """Summary for `matprobe store info`: the accuracy over the answered rows and per (M, A, T)
        triplet, each with the count of right answers and its exact (Clopper-Pearson) interval at
        `DEFAULTS.level`, as `check` gives a stratum's error rate (`proportions.clopper_pearson_interval`)."""
        from matprobe.defaults import DEFAULTS
        from matprobe.proportions import clopper_pearson_interval

        def interval(right: int, answered: int) -> list[float] | None:
            return list(clopper_pearson_interval(right, answered, DEFAULTS.level)) if answered else None

        ans = self.answers()
        known = ans["correct"] >= 0
        n_answered, n_right = int(known.sum()), int((ans["correct"][known] > 0).sum())
        by_triplet = []
        for r in self.scores_by_triplet().to_dict("records"):
            row = {k: (None if isinstance(v, float) and np.isnan(v) else v.item() if hasattr(v, "item") else v)
                   for k, v in r.items()}
            ci = interval(row["correct"], row["answered"])
            at = list(row).index("accuracy") + 1  # the interval beside the accuracy
            items = list(row.items())
            row = dict(items[:at] + [("accuracy_ci_low", ci and ci[0]), ("accuracy_ci_high", ci and ci[1])]
                       + items[at:])
            by_triplet.append(row)
        return {
            "path": str(self.path),
            "n_samples": self.n,
            "n_done": int(self.done.sum()),
            "fingerprint": self.fingerprint,
            "content_id": self.content_id,
            "features": [
                {"layer": lay, "pool": p, "dim": self.feature_dim(lay, p)} for lay, p in self.feature_keys()
            ],
            "label_columns": {c: list(self.factor(c)[1]) for c in self.label_columns()},
            "finalized": self.finalized,
            "answers_stored": n_answered,
            "correct": n_right,
            "accuracy": float(ans["correct"][known].mean()) if known.any() else None,
            "accuracy_ci": interval(n_right, n_answered),
            "ci_level": DEFAULTS.level,
            "by_triplet": by_triplet,
            "virtual": any(
                self._h5[feature_path(lay, p)].is_virtual for lay, p in self.feature_keys()
            ),
            "provenance": self.provenance,
        }

    # ------------------------------------------------------------------ writing
    def check_provenance(self, provenance: Mapping[str, Any]) -> None:
        """Refuse `provenance` (raw or from `make_provenance`) if it differs from the stored one."""
        provenance = make_provenance(**dict(provenance))
        diff = provenance_differences(self.provenance, provenance)
        if diff:
            old, new = self.provenance, dict(provenance)
            detail = "; ".join(f"{k}: stored {old.get(k)!r} vs new {new.get(k)!r}" for k in diff[:4])
            raise ProvenanceMismatch(
                f"{self.path}: provenance differs in {', '.join(diff)} ({detail}); "
                "use the original settings to resume, or --overwrite to start again"
            )

    def append(
        self,
        rows: Sequence[int] | Sequence[str] | np.ndarray,
        features: Mapping[FeatureKey | str, np.ndarray],
        answers: Mapping[str, np.ndarray] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        """Write a batch of complete rows, then mark them done (see the module docstring)."""
        if self.finalized:
            raise StoreError(f"{self.path}: the store is complete and finalized; nothing is left to append")
        if self._h5.mode != "r+":
            raise StoreError(f"{self.path}: opened read-only; open with mode='a' to append")
        if provenance is not None:
            self.check_provenance(provenance)
        rows = np.asarray(rows)
        if rows.dtype.kind in "OUS":
            rows = self.rows_of(rows)
        rows = rows.astype(np.int64)
        if len(np.unique(rows)) != len(rows):
            raise StoreError("append got the same row twice in one batch")
        order = np.argsort(rows)
        rows = rows[order]  # h5py writes need increasing indices
        expected = {k for k in self.feature_keys()}
        given = {_normalise_key(k) for k in features}
        if given != expected:
            raise StoreError(
                f"{self.path}: append must give every stored (layer, pool); missing "
                f"{sorted(expected - given)}, unknown {sorted(given - expected)}"
            )
        for key, arr in features.items():
            layer, pool = _normalise_key(key)
            ds = self._dataset(layer, pool)
            arr = np.asarray(arr, dtype=np.float32)
            if arr.shape != (len(rows), ds.shape[1]):
                raise StoreError(
                    f"features {layer}/{pool}: shape {arr.shape}, expected ({len(rows)}, {ds.shape[1]})"
                )
            if not np.isfinite(arr).all():
                raise StoreError(
                    f"features {layer}/{pool} contain NaN or Inf (rows {rows[~np.isfinite(arr[order]).all(1)][:5].tolist()}); "
                    "lower precision overflowed? try --dtype bf16 or fp32"
                )
            ds[rows] = arr[order]
        if answers is not None:
            g = self._h5["answers"]
            for name in ("pred", "correct", "probs", *_SEGMENTATION_ANSWERS):
                if name in answers and answers[name] is not None:
                    if name not in g:
                        raise StoreError(f"{self.path}: store was created without answer {name!r}")
                    g[name][rows] = np.asarray(answers[name])[order].astype(g[name].dtype)
        if "content/row_digest" in self._h5:
            from matprobe.provenance import row_digests

            # answers as stored (their dataset dtypes), so `verify` can recompute the digest
            stored_answers = None if answers is None else {
                name: np.asarray(v).astype(self._h5["answers"][name].dtype)
                for name, v in answers.items() if v is not None and name in self._h5["answers"]}
            digest_ds = self._h5["content/row_digest"]
            digest_ds[rows] = row_digests(
                {_normalise_key(k): v for k, v in features.items()}, stored_answers, order)
            # which answers the digests cover, so `verify` can recompute them
            seen = json.loads(digest_ds.attrs.get("answer_sets", "[]"))
            names = sorted(stored_answers or ())
            if names not in seen:
                digest_ds.attrs["answer_sets"] = json.dumps(seen + [names])
        self._h5.flush()
        self._h5["done"][rows] = True
        self._h5.flush()

    @property
    def finalized(self) -> bool:
        return bool(self._h5.attrs.get("finalized", True))

    def finalize(self, compression_level: int = 1) -> EmbeddingStore:
        """Repack a complete store with gzip-compressed feature chunks (atomic rename).

        Returns the reopened store (read-only). Refused while rows are missing, since
        compressed chunks are not safe to write into (module docstring).
        """
        if self.finalized:
            return self
        missing = self.missing_ids()
        if missing:
            raise StoreError(
                f"{self.path}: {len(missing)} rows are not done (first {missing[0]!r}); finish them first"
            )
        self.verify()  # a corrupted row would otherwise be repacked with its old digest
        path = self.path
        lock = writer_lock(path).acquire()  # held across close + rename + reopen
        try:
            return self._finalize(path, compression_level)
        finally:
            lock.release()

    def _finalize(self, path: Path, compression_level: int) -> EmbeddingStore:
        with atomic_h5(path) as out:
            for name, value in self._h5.attrs.items():
                out.attrs[name] = value
            out.attrs["finalized"] = True
            for name in ("samples", "answers", "done", "content"):
                if name in self._h5:
                    self._h5.copy(self._h5[name], out, name=name)
            for layer, pool in self.feature_keys():
                src = self._dataset(layer, pool)
                n, dim = src.shape
                dst = out.create_dataset(
                    feature_path(layer, pool), shape=(n, dim), dtype="f4",
                    chunks=(min(n, _rows_per_chunk(dim)), dim), compression="gzip",
                    compression_opts=compression_level, shuffle=True, fillvalue=np.nan,
                )
                step = max(dst.chunks[0], (64 << 20) // (4 * dim) // dst.chunks[0] * dst.chunks[0])
                for start in range(0, n, step):
                    dst[start:start + step] = src[start:start + step]
        self.close()  # after the rename: the old file stays readable until then
        return EmbeddingStore.open(path)

    # ------------------------------------------------------------------ merging
    @classmethod
    def merge(cls, shard_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike,
              overwrite: bool = False) -> EmbeddingStore:
        """One store whose features are h5py virtual datasets over the shards' (row-concatenated).

        Shard paths are stored relative to the output file, so the folder can be moved as a whole.
        Sample tables, answers and done masks are small and copied.
        """
        out_path = Path(out_path)
        if out_path.exists() and not overwrite:
            raise StoreError(f"{out_path} exists; pass overwrite=True to replace it")
        if not shard_paths:
            raise StoreError("merge needs at least one shard")
        shards = [cls.open(p) for p in shard_paths]
        lock = writer_lock(out_path).acquire()
        try:
            base_prov = shards[0].provenance
            keys = shards[0].feature_keys()
            for s in shards[1:]:
                diff = provenance_differences(base_prov, s.provenance)
                if diff:
                    raise ProvenanceMismatch(
                        f"{s.path}: provenance differs from {shards[0].path} in {', '.join(diff)}"
                    )
                if s.feature_keys() != keys:
                    raise StoreError(f"{s.path}: feature keys differ from {shards[0].path}")
            frames = [s.samples() for s in shards]
            frame = pd.concat(frames, ignore_index=True)
            vocab = {}
            for col in shards[0].label_columns():
                vocab[col] = tuple(sorted({lab for s in shards for lab in s.factor(col)[1]}))
            n = len(frame)
            with atomic_h5(out_path) as h5:
                coded = cls._write_samples(h5, frame.drop(columns=["n_options"], errors="ignore"), vocab)
                h5.attrs["format_version"] = FORMAT_VERSION
                prov = dict(base_prov)
                prov["merged_from"] = [os.path.relpath(Path(p).resolve(), out_path.resolve().parent)
                                       for p in shard_paths]
                h5.attrs["provenance"] = _provenance_text(prov)
                h5.attrs["fingerprint"] = _fingerprint(frame["id"].to_numpy(), coded)
                h5.attrs["finalized"] = True  # a merge is read-only: shards hold the data
                for layer, pool in keys:
                    dim = shards[0].feature_dim(layer, pool)
                    layout = h5py.VirtualLayout(shape=(n, dim), dtype="f4")
                    start = 0
                    for s, p in zip(shards, shard_paths):
                        rel = os.path.relpath(Path(p).resolve(), out_path.resolve().parent)
                        src = h5py.VirtualSource(rel, feature_path(layer, pool), shape=(s.n, dim))
                        layout[start:start + s.n] = src
                        start += s.n
                    h5.create_virtual_dataset(feature_path(layer, pool), layout, fillvalue=np.nan)
                ans = h5.create_group("answers")
                parts = [s.stored_answers() for s in shards]
                for s, a in zip(shards, parts):
                    if set(a) != set(parts[0]):
                        raise StoreError(
                            f"{s.path}: stores answers {sorted(a)}, {shards[0].path} "
                            f"stores {sorted(parts[0])}; shards must come from one extraction"
                        )
                for name in parts[0]:
                    ans.create_dataset(name, data=np.concatenate([a[name] for a in parts]))
                h5.create_dataset("done", data=np.concatenate([s.done for s in shards]))
                # shards whose digests read images differently (other matprobe versions) cannot be
                # joined into one digest list: the merged store then has none, as from older shards
                schemes = {s.record_digest_scheme for s in shards}
                if all(s.record_digests() is not None for s in shards) and len(schemes) == 1:
                    c = h5.create_group("content")
                    c.attrs["record_digest_scheme"] = schemes.pop()
                    c.create_dataset("record_digest", data=np.concatenate([s.record_digests() for s in shards]))
                    c.create_dataset("row_digest", data=np.concatenate([s._row_digests() for s in shards]))
                    if all(s.item_digests() is not None for s in shards):
                        c.create_dataset("item_digest", data=np.concatenate([s.item_digests() for s in shards]))
        finally:
            lock.release()
            for s in shards:
                s.close()
        return cls.open(out_path)


def _write_content(h5: h5py.File, frame: pd.DataFrame) -> None:
    """/content: each sample's record digest now, each row's digest as rows are appended."""
    from matprobe.provenance import DIGEST_BYTES, RECORD_DIGEST_SCHEME, record_and_item_digests

    g = h5.create_group("content")
    g.attrs["record_digest_scheme"] = RECORD_DIGEST_SCHEME
    records, items = record_and_item_digests(frame)  # every image read once
    g.create_dataset("record_digest", data=records)
    g.create_dataset("item_digest", data=items)
    g.create_dataset("row_digest", data=np.zeros(len(frame), dtype=f"S{DIGEST_BYTES}"))


_MIN_FREE_BYTES = 1 << 20  # HDF5 rewrites some metadata in place on every flush


def _check_room_to_append(path: Path) -> None:
    """Refuse to append to a store that cannot take the writes, before any byte is written.

    Appends write into the store in place (rows are preallocated). HDF5 cannot recover from
    a failed in-place write: it prints a traceback per unflushed object and crashes on close
    (SIGSEGV, measured with h5py 3.16), and the file is left half-flushed. A file-size limit
    (ulimit -f) at or below the store's size makes the first write past it fail, and a full
    disk fails metadata writes; both are checked here so the store stays byte-identical."""
    import resource
    import shutil

    size = path.stat().st_size
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and soft <= size:
        raise StoreUnavailable(
            f"{path}: the file-size limit was reached (ulimit -f); raise it (ulimit -f unlimited) and "
            f"rerun to resume (the limit, {soft} bytes, is not above the store's {size} bytes, and rows "
            "are appended to the store in place; nothing was written, so nothing finished was damaged)")
    free = shutil.disk_usage(path.parent).free
    if free < _MIN_FREE_BYTES:
        raise StoreUnavailable(
            f"{path}: the disk is full ({free} bytes free); free space (or move the store elsewhere) and "
            "rerun to resume (rows are appended to the store in place; nothing was written, so nothing "
            "finished was damaged)")


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5_file(path) -> bool:
    """Whether a file starts with HDF5's signature (where matprobe writes it: at byte 0)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def _open_error(path: Path, exc: OSError) -> StoreError:
    """Say why a store does not open: a running writer, permissions, or a damaged file."""
    from matprobe.locks import holder_pid, is_locked

    text = str(exc)
    if is_locked(path) or "unable to lock" in text.lower():
        pid = holder_pid(path)
        who = f"process {pid}" if pid else "another process"
        return StoreError(f"{path}: in use by {who} (a running matprobe writer); wait for it to finish, then rerun")
    if not os.access(path, os.R_OK):
        return StoreError(f"{path}: permission denied; make the file readable (chmod u+r) or run as its owner")
    if Path(path).is_dir():
        return StoreError(f"{path}: is a folder, not a store; give the .h5 file `matprobe extract --out` wrote")
    if not is_hdf5_file(path):  # a CSV, a manifest, a pickle: not a damaged store, and --overwrite would replace it
        return StoreUnavailable(f"{path}: not a store (not an HDF5 file); give the .h5 file `matprobe extract --out` "
                                "wrote")
    # HDF5 messages run over several lines (time stamps, buffers): keep the first, so the error stays one line
    exc = " ".join(str(exc).split())[:300]
    return StoreError(f"{path}: cannot open as HDF5 ({exc}); the file is corrupt or not a store: "
                      "re-extract it with --overwrite")


def _create_writable_features(h5: h5py.File, name: str, n: int, dim: int) -> h5py.Dataset:
    """[n, dim] float32, chunked by rows, uncompressed, every chunk allocated now (crash-safe)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return h5.create_dataset(
        name, shape=(n, dim), dtype="f4", chunks=(min(n, _rows_per_chunk(dim)), dim),
        fillvalue=np.nan, dcpl=dcpl,
    )


def resolve_layer(layer, stored_layers, provenance: Mapping[str, Any] | None = None, path="store",
                  flag: str = "--layer") -> str:
    """One requested layer as its stored key; None = the default (the last decoder block
    stored, as `-1` resolves; `final` or the deepest other key only when no block is stored).

    A negative index counts from the model's last block (its `num_decoder_layers` in the
    provenance), else from the deepest stored block. Every command and API function resolves
    layers here, so one store gives one layer by entry point."""
    stored = sorted({str(x) for x in stored_layers}, key=_layer_sort_key)
    if not stored:
        raise StoreError(f"{path}: no features stored; run `matprobe extract` first")
    numeric = sorted(int(x) for x in stored if x.lstrip("-").isdigit())
    want = "-1" if layer is None else str(layer).strip()
    key = want
    n_blocks = (provenance or {}).get("num_decoder_layers")
    if want.startswith("-") and want[1:].isdigit():
        if n_blocks:
            key = str(int(n_blocks) + int(want))
        elif numeric and -int(want) <= len(numeric):
            key = str(numeric[int(want)])
    if key in stored:
        return key
    if layer is None:  # no decoder block stored: after the final norm, else the deepest key
        return "final" if "final" in stored else stored[-1]
    if n_blocks and want.lstrip("-").isdigit() and not -int(n_blocks) <= int(want) < int(n_blocks):
        # past the model's depth: say so, as `extract` does, not only that it is not stored
        raise StoreError(f"{path}: no features for layer {want!r}: index {want} is out of range for the model's "
                         f"{n_blocks}-block decoder (-{n_blocks}..{int(n_blocks) - 1}); stored layers: "
                         f"{', '.join(stored)}; pick one of those with {flag}")
    shown = f"layer {want!r} (block {key} of the model's {n_blocks})" if key != want else f"layer {want!r}"
    raise StoreError(f"{path}: no features for layer {want!r}: {shown} is not stored; stored layers: "
                     f"{', '.join(stored)}; pick one of those with {flag}")


def resolve_feature(keys, layer=None, pool=None, provenance: Mapping[str, Any] | None = None,
                    path="store", flags: tuple[str, str] = ("--layer", "--pool")) -> tuple[str, str]:
    """(layer, pool) as stored keys from the requested ones (None = the defaults: see
    `resolve_layer`; the pool `DEFAULTS.pool` when stored for that layer, else its first)."""
    from matprobe.defaults import DEFAULTS

    keys = [(str(a), str(b)) for a, b in keys]
    lay = resolve_layer(layer, {a for a, _ in keys}, provenance, path, flags[0])
    pools = [b for a, b in keys if a == lay]
    if pool is None:
        pool = DEFAULTS.pool if DEFAULTS.pool in pools else pools[0]
    if str(pool) not in pools:
        raise StoreError(f"{path}: no features for layer {lay!r}, pool {pool!r}; stored: "
                         + ", ".join(f"{a}/{b}" for a, b in keys) + f"; pick one with {flags[0]}/{flags[1]}")
    return lay, str(pool)


def _layer_sort_key(layer: str) -> tuple[int, int | str]:
    if layer.lstrip("-").isdigit():
        return (1, int(layer))
    return (0, layer) if layer == "embed" else (2, layer)


def open_store(path: str | os.PathLike, mode: str = "r") -> EmbeddingStore:
    return EmbeddingStore.open(path, mode)
