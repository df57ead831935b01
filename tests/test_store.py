"""The HDF5 store: exact round trips, partial reads, provenance, crash safety, virtual merge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pandas as pd
import pytest

from matprobe.data import MATDataset, Sample
from matprobe.errors import ProvenanceMismatch, StoreError
from matprobe.store import EmbeddingStore, make_provenance, provenance_differences

PROV = {"checkpoint": "/ckpt/llava", "config_hash": "abc", "dtype": "fp32", "pooling": ["last", "image"],
        "layers": ["1", "final"]}


def dataset(n=10):
    mods = ["CT", "MRI", "X-ray"]
    return MATDataset([
        Sample(id=f"id{i}", image=f"img{i}.png", question=f"Q{i}?", options=("A1", "B1", "C1", "D1"),
               answer_index=i % 4, modality=mods[i % 3], anatomy=["Lung", "Brain"][i % 2],
               task="Classification", label=f"L{i % 2}", subset=str(i % 5))
        for i in range(n)
    ], source="mem")


def features(n, rng):
    return {("1", "last"): rng.normal(size=(n, 7)).astype(np.float32),
            ("final", "image"): rng.normal(size=(n, 3)).astype(np.float32)}


def test_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    ds = dataset()
    feats = features(10, rng)
    probs = rng.dirichlet(np.ones(4), size=10).astype(np.float32)
    pred = probs.argmax(1)
    correct = (pred == ds.frame()["answer_index"].to_numpy()).astype(np.int8)
    with EmbeddingStore.create(tmp_path / "s.h5", ds, PROV, {k: v.shape[1] for k, v in feats.items()},
                               n_options=4) as st:
        assert st.missing_ids() == ds.ids
        order = np.array([3, 1, 7, 0, 2, 9, 8, 4, 6, 5])  # unsorted batches are fine
        for batch in (order[:4], order[4:]):
            st.append(batch, {k: v[batch] for k, v in feats.items()},
                      answers={"pred": pred[batch], "correct": correct[batch], "probs": probs[batch]},
                      provenance=PROV)
    with EmbeddingStore.open(tmp_path / "s.h5", "a") as st:
        assert not st.finalized and st._h5["features/1/last"].compression is None
        st = st.finalize()
        assert st.finalized and st._h5["features/1/last"].compression == "gzip"
        with pytest.raises(StoreError, match="finalized"):
            st.append([0], {k: v[:1] for k, v in feats.items()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]  # no temporary left behind
    with EmbeddingStore.open(tmp_path / "s.h5") as st:
        assert st.missing_ids() == []
        assert st.feature_keys() == [("1", "last"), ("final", "image")]
        for k, v in feats.items():
            np.testing.assert_array_equal(st.read(*k), v)
        np.testing.assert_array_equal(st.read("1", "last", [9, 2, 2]), feats[("1", "last")][[9, 2, 2]])
        ans = st.answers()
        np.testing.assert_array_equal(ans["pred"], pred)
        np.testing.assert_array_equal(ans["correct"], correct)
        np.testing.assert_array_equal(ans["probs"], probs)
        frame = st.samples()
        expected = ds.frame()
        for col in ("id", "image", "question", "modality", "anatomy", "task", "label", "subset"):
            assert frame[col].tolist() == expected[col].tolist(), col
        assert frame["options"].tolist() == [list(o) for o in expected["options"]]
        assert frame["answer_index"].tolist() == expected["answer_index"].tolist()
        codes, labels = st.factor("M")
        assert labels == ("CT", "MRI", "X-ray")
        np.testing.assert_array_equal(codes, ds.codes("modality"))
        prov = st.provenance
        assert {k: prov[k] for k in PROV} == PROV and "layer_convention" in prov and "matprobe_version" in prov


def test_partial_read_touches_only_needed_chunks(tmp_path):
    rng = np.random.default_rng(1)
    n, d = 4096, 512
    z = rng.normal(size=(n, d)).astype(np.float32)
    path = tmp_path / "big.h5"
    EmbeddingStore.from_arrays(path, [str(i) for i in range(n)], {"M": ["a"] * n}, {("3", "mean"): z}).close()
    with h5py.File(path, "r") as h5:
        ds = h5["features/3/mean"]
        rows_per_chunk = ds.chunks[0]
        assert ds.compression == "gzip" and n // rows_per_chunk >= 16
        wrecked = ds.id.get_chunk_info_by_coord((rows_per_chunk * 5, 0))  # a chunk we will not read
    with open(path, "r+b") as fh:  # destroy that chunk's compressed bytes
        fh.seek(wrecked.byte_offset)
        fh.write(b"\xff" * wrecked.size)
    rows = np.array([5, n - 1, rows_per_chunk * 2])
    with EmbeddingStore.open(path) as st:
        np.testing.assert_array_equal(st.read("3", "mean", rows), z[rows])  # never touches chunk 5
        with pytest.raises(StoreError, match=r"store corrupt, re-extract: a compressed chunk of features 3/mean"):
            st.read("3", "mean")  # reading everything hits the wrecked chunk


def test_provenance_mismatch_names_fields(tmp_path):
    ds = dataset(4)
    st = EmbeddingStore.create(tmp_path / "p.h5", ds, PROV, {("1", "last"): 2})
    bad = {**PROV, "dtype": "bf16", "checkpoint": "/other"}
    with pytest.raises(ProvenanceMismatch, match=r"provenance differs in checkpoint, dtype .*--overwrite"):
        st.append([0], {("1", "last"): np.zeros((1, 2))}, provenance=bad)
    assert st.missing_ids() == ds.ids  # nothing written
    assert provenance_differences(make_provenance(**PROV), make_provenance(**PROV)) == []
    st.close()


def test_bad_store_inputs(tmp_path):
    ds = dataset(4)
    EmbeddingStore.create(tmp_path / "x.h5", ds, PROV, {("1", "last"): 2}).close()
    with pytest.raises(StoreError, match="exists; open it to resume, or pass overwrite=True"):
        EmbeddingStore.create(tmp_path / "x.h5", ds, PROV, {("1", "last"): 2})
    (tmp_path / "junk.h5").write_bytes(b"\x00" * 100)
    with pytest.raises(StoreError, match=r"junk.h5: not a store \(not an HDF5 file\)"):
        EmbeddingStore.open(tmp_path / "junk.h5")
    with pytest.raises(StoreError, match="no such store"):
        EmbeddingStore.open(tmp_path / "none.h5")
    with EmbeddingStore.open(tmp_path / "x.h5", "a") as st:
        with pytest.raises(StoreError, match=r"no features for layer '2', pool 'last'; have 1/last"):
            st.read("2", "last")
        with pytest.raises(StoreError, match="no label column 'organ'"):
            st.factor("organ")
        with pytest.raises(StoreError, match="contain NaN or Inf"):
            st.append([1], {("1", "last"): np.array([[np.inf, 0.0]])})
        assert st.missing_ids() == ds.ids


def test_failed_create_leaves_nothing(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "modality": ["CT", "CT"]})
    with pytest.raises(ValueError):
        EmbeddingStore.create(tmp_path / "f.h5", frame, PROV, {("1", "last"): "not a dim"})
    assert list(tmp_path.iterdir()) == []


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from matprobe.store import EmbeddingStore
    n, d, batch = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ids = [f"r{i}" for i in range(n)]
    def value(rows):
        return (np.asarray(rows)[:, None] * 1000.0 + np.arange(d)[None, :]).astype(np.float32)
    st = EmbeddingStore.create(sys.argv[1], __import__("pandas").DataFrame({"id": ids, "modality": ["CT"] * n}),
                               {"run": 1}, {("4", "last"): d, ("4", "mean"): d}, n_options=4)
    print("created", flush=True)
    for start in range(0, n, batch):
        rows = np.arange(start, min(n, start + batch))
        st.append(rows, {("4", "last"): value(rows), ("4", "mean"): -value(rows)},
                  answers={"pred": rows % 4, "correct": rows % 2, "probs": np.full((len(rows), 4), 0.25)})
        print("batch", flush=True)
    print("finished", flush=True)
""")


def _expected(rows, d):
    return (np.asarray(rows)[:, None] * 1000.0 + np.arange(d)[None, :]).astype(np.float32)


def test_sigkill_mid_append_leaves_exactly_completed_rows(tmp_path):
    n, d, batch = 6000, 512, 40
    path = tmp_path / "k.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(d), str(batch)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "created"
    for _ in range(5):  # kill once five batches are in, while the sixth is being written
        assert proc.stdout.readline().strip() == "batch"
    time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with EmbeddingStore.open(path) as st:
        mask = st.done
        assert 0 < mask.sum() < n, "the kill must land mid-run"
        rows = np.flatnonzero(mask)
        np.testing.assert_array_equal(st.read("4", "last", rows), _expected(rows, d))
        np.testing.assert_array_equal(st.read("4", "mean", rows), -_expected(rows, d))
        np.testing.assert_array_equal(st.answers()["pred"][rows], rows % 4)
        missing = st.missing_ids()
        assert missing == [f"r{i}" for i in np.flatnonzero(~mask)]
    # resume: append the missing rows, then the store equals an uninterrupted write
    with EmbeddingStore.open(path, "a") as st:
        todo = st.rows_of(missing)
        with pytest.raises(StoreError, match="rows are not done"):
            st.finalize()
        for start in range(0, len(todo), 500):
            rows = todo[start:start + 500]
            st.append(rows, {("4", "last"): _expected(rows, d), ("4", "mean"): -_expected(rows, d)},
                      answers={"pred": rows % 4, "correct": rows % 2, "probs": np.full((len(rows), 4), 0.25)})
        st = st.finalize()
    with EmbeddingStore.open(path) as st:
        assert st.missing_ids() == [] and st.finalized
        np.testing.assert_array_equal(st.read("4", "last"), _expected(np.arange(n), d))
        np.testing.assert_array_equal(st.answers()["correct"], np.arange(n) % 2)


def test_virtual_merge_reads_equal_to_one_store(tmp_path):
    rng = np.random.default_rng(5)
    ds = dataset(10)
    feats = features(10, rng)
    probs = rng.dirichlet(np.ones(4), size=10).astype(np.float32)
    answers = {"pred": probs.argmax(1), "correct": (probs.argmax(1) % 2).astype(np.int8), "probs": probs}
    dims = {k: v.shape[1] for k, v in feats.items()}

    def write(path, rows, sub):
        with EmbeddingStore.create(path, sub, PROV, dims, n_options=4) as st:
            st.append(np.arange(len(rows)), {k: v[rows] for k, v in feats.items()},
                      answers={k: v[rows] for k, v in answers.items()})

    write(tmp_path / "one.h5", np.arange(10), ds)
    (tmp_path / "shards").mkdir()
    write(tmp_path / "shards" / "r0.h5", np.arange(6), ds.subset([i < 6 for i in range(10)]))
    write(tmp_path / "shards" / "r1.h5", np.arange(6, 10), ds.subset([i >= 6 for i in range(10)]))
    merged = EmbeddingStore.merge([tmp_path / "shards" / "r0.h5", tmp_path / "shards" / "r1.h5"],
                                  tmp_path / "merged.h5")
    merged.close()
    # move the whole folder: relative virtual sources still resolve
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    os.rename(tmp_path, moved)
    with EmbeddingStore.open(moved / "one.h5") as one, EmbeddingStore.open(moved / "merged.h5") as m:
        assert m.info()["virtual"] and not one.info()["virtual"]
        assert m.fingerprint == one.fingerprint
        for k in one.feature_keys():
            np.testing.assert_array_equal(m.read(*k), one.read(*k))
        for name, arr in one.answers().items():
            np.testing.assert_array_equal(m.answers()[name], arr)
        pd.testing.assert_frame_equal(m.samples(), one.samples())
        np.testing.assert_array_equal(m.done, one.done)
    os.rename(moved, tmp_path)
