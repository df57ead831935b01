"""MAT manifests in the Arrow ecosystem's formats: a Parquet file, or a Hugging Face `datasets`
folder as `Dataset.save_to_disk` / `DatasetDict.save_to_disk` write it.

Read with pyarrow alone (the `datasets` package is not needed): a `save_to_disk` folder holds
Arrow IPC *stream* files listed in its state.json, plus dataset_info.json with the features;
a DatasetDict folder has dataset_dict.json naming one such folder per split. The columns are
those of the MAT manifest (`matprobe.data.manifest`). Hugging Face's ``Image`` feature is a
struct ``{bytes, path}``, and most medical VQA sets on the hub embed the image bytes: those
are written once to a content-addressed cache (``$MATPROBE_IMAGE_CACHE``, default
``~/.cache/matprobe/images``, file name = sha256 of the bytes), so every later step reads an
ordinary image file. ``ClassLabel`` columns (integers with names) are decoded to their names,
and a MAT factor declared as a ClassLabel declares that factor's vocabulary.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

from matprobe.errors import DataError
from matprobe.io import atomic_path

ARROW_SUFFIXES = (".parquet", ".arrow")


def is_arrow_source(path: Path) -> bool:
    """A Parquet/Arrow file, or a folder written by `datasets`' save_to_disk."""
    if path.is_dir():
        return any((path / f).is_file() for f in ("state.json", "dataset_dict.json"))
    return path.suffix.lower() in ARROW_SUFFIXES


def image_cache_dir() -> Path:
    return Path(os.environ.get("MATPROBE_IMAGE_CACHE") or Path.home() / ".cache" / "matprobe" / "images")


def _suffix_for(data: bytes, name: str | None) -> str:
    if name:
        lower = name.lower()
        for ext in (".nii.gz", ".nii", ".dcm", ".dicom"):
            if lower.endswith(ext):
                return ext
        if Path(lower).suffix:
            return Path(lower).suffix
    if data[128:132] == b"DICM":
        return ".dcm"
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return "." + (im.format or "png").lower().replace("jpeg", "jpg")
    except Exception:  # noqa: BLE001 - unknown content: keep it, the image loader names the problem
        return ".bin"


def cache_image_bytes(data: bytes, name: str | None = None, cache: Path | None = None) -> str:
    """Write image bytes once under their sha256; return the file's absolute path."""
    digest = hashlib.sha256(data).hexdigest()
    cache = cache or image_cache_dir()
    target = cache / digest[:2] / (digest + _suffix_for(data, name))
    if not target.is_file():
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    return str(target.resolve())


def _features(info: dict | None) -> dict:
    return dict((info or {}).get("features") or {})


def _hf_metadata(schema) -> dict | None:
    """The `datasets` features a Parquet/Arrow schema carries in its metadata, if any."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return None
    try:
        return json.loads(meta).get("info")
    except (ValueError, AttributeError):
        return None


def _read_table(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        with pa.memory_map(str(path)) as source:
            try:
                return pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:  # an Arrow IPC *file* rather than a stream
                return pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot be read as {path.suffix.lstrip('.')} ({exc}); "
                        "give a Parquet file or a `save_to_disk` folder") from None


def _dataset_folder(folder: Path) -> tuple[list, dict | None]:
    """Tables of one `Dataset.save_to_disk` folder and its dataset_info."""
    state_path = folder / "state.json"
    try:
        state = json.loads(state_path.read_text())
        files = [folder / f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{state_path}: not a `datasets` save_to_disk state file ({exc}); "
                        "save the dataset with Dataset.save_to_disk") from None
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{folder}: state.json lists {missing[0].name}, which is missing; copy the whole folder")
    return [_read_table(f) for f in files], info


def _decode(value: Any, feature: dict, column: str, where: str, cache: Path | None, base: Path) -> Any:
    kind = feature.get("_type")
    if kind == "ClassLabel" and isinstance(value, int):
        names = feature.get("names") or []
        if not 0 <= value < len(names):
            raise DataError(f"{where}: {column} = {value} is not a class of its ClassLabel ({len(names)} names)")
        return names[value]
    if column == "image" or kind == "Image":
        if isinstance(value, dict):
            if value.get("bytes"):
                return cache_image_bytes(value["bytes"], value.get("path"), cache)
            value = value.get("path")
        elif isinstance(value, (bytes, bytearray)):
            return cache_image_bytes(bytes(value), None, cache)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str((base / value).resolve())
    return value


def read_arrow_records(path: Path, cache: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Records of a Parquet/Arrow file or a `save_to_disk` folder, with images as file paths,
    plus a manifest header declaring the vocabularies of ClassLabel factors."""
    from matprobe.data.model import FACTORS

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    parts: list[tuple[str | None, list, dict | None]] = []
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError) as exc:
            raise DataError(f"{path / 'dataset_dict.json'}: no split list ({exc})") from None
        for split in splits:
            tables, info = _dataset_folder(path / split)
            parts.append((split, tables, info))
    elif path.is_dir():
        tables, info = _dataset_folder(path)
        parts.append((None, tables, info))
    else:
        table = _read_table(path)
        parts.append((None, [table], _hf_metadata(table.schema)))
    records: list[dict[str, Any]] = []
    vocabulary: dict[str, list[str]] = {}
    base = path if path.is_dir() else path.parent
    for split, tables, info in parts:
        features = _features(info) or (_features(_hf_metadata(tables[0].schema)) if tables else {})
        for name in FACTORS:
            feat = features.get(name) or {}
            if feat.get("_type") == "ClassLabel" and feat.get("names"):
                vocabulary[name] = sorted(set(vocabulary.get(name, [])) | set(feat["names"]))
        for table in tables:
            for row in table.to_pylist():
                where = f"{path}: record {len(records) + 1}"
                rec = {k: _decode(v, features.get(k) or {}, k, where, cache, base) for k, v in row.items()}
                if split is not None and rec.get("split") in (None, ""):
                    rec["split"] = split  # a DatasetDict's split names the samples' split
                records.append(rec)
    if not records:
        raise DataError(f"{path}: no records")
    return records, ({"vocabulary": vocabulary} if vocabulary else None)
