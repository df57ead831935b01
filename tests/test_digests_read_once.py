"""A store's record and item digests come from one pass over the samples (every image, mask and
option mask read once, where two passes read each twice), with the bytes the separate digests
had: stores already on disk hold those, and a resume compares against them."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from matprobe import provenance
from matprobe.provenance import item_digests, record_and_item_digests, record_digests


def _frame(tmp_path) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    paths = []
    for i in range(4):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (20 + i, 16, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    rows = []
    for i in range(6):
        rows.append(dict(id=f"s{i}", image=paths[i % 4], question="Which?", options=["a", "b"], answer=i % 2,
                         modality="CT", anatomy="Chest", task="Segmentation" if i % 2 else "Classification",
                         split="train" if i < 3 else "test", mask=paths[(i + 1) % 4] if i % 2 else None,
                         option_masks=[paths[0], paths[2]] if i % 2 else None,
                         missing=str(tmp_path / "gone.png") if i == 5 else None))
    return pd.DataFrame(rows)


def _reference(frame: pd.DataFrame, exclude: tuple[str, ...], scheme: int) -> np.ndarray:
    """The digest as stores hold it, written out here: blake2b-128 of the record's JSON (sorted
    keys), an image field replaced by 'name:size:blake2b-128 of its bytes' (scheme 2) or of its
    first and last 64 KB (scheme 1; these files are smaller, so all of their bytes)."""
    def file_field(value):
        if not isinstance(value, str) or not value:
            return ""
        try:
            data = open(value, "rb").read()
        except OSError:
            return value.rsplit("/", 1)[-1]
        return f"{value.rsplit('/', 1)[-1]}:{len(data)}:{hashlib.blake2b(data, digest_size=16).hexdigest()}"

    def canonical(value):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, (list, tuple)):
            return [canonical(v) for v in value]
        return value if isinstance(value, (int, float, bool)) else str(value)

    out = []
    for rec in frame.to_dict("records"):
        fields = {}
        for c, v in rec.items():
            if c in exclude:
                continue
            if c in ("image", "mask"):
                fields[c] = file_field(v)
            elif c == "option_masks" and isinstance(v, list):
                fields[c] = [file_field(x) for x in v]
            else:
                fields[c] = canonical(v)
        out.append(hashlib.blake2b(json.dumps(fields, sort_keys=True, default=str).encode(), digest_size=16).digest())
    return np.array(out, dtype="S16")


@pytest.mark.parametrize("scheme", [1, 2])
def test_one_pass_gives_the_bytes_of_the_separate_digests_and_of_the_stored_format(tmp_path, scheme):
    frame = _frame(tmp_path)
    records, items = record_and_item_digests(frame, scheme)
    assert np.array_equal(records, record_digests(frame, scheme=scheme))
    assert np.array_equal(items, item_digests(frame, scheme))
    assert np.array_equal(records, _reference(frame, (), scheme))
    assert np.array_equal(items, _reference(frame, ("split",), scheme))
    assert not np.array_equal(records, items)  # the split is in one and not the other


def test_each_file_is_read_once(tmp_path, monkeypatch):
    frame = _frame(tmp_path)
    reads = []
    real = provenance._image_digest

    def counting(image, scheme=provenance.RECORD_DIGEST_SCHEME):
        if isinstance(image, str) and image:  # a file to read (None and "" read nothing)
            reads.append(image)
        return real(image, scheme)

    monkeypatch.setattr(provenance, "_image_digest", counting)
    record_and_item_digests(frame)
    once = len(reads)
    # an image per row, a mask and two option masks on each of the three odd rows
    assert once == 6 + 3 + 3 * 2
    reads.clear()
    record_digests(frame)
    item_digests(frame)
    assert len(reads) == 2 * once  # the two passes a store's creation made before
