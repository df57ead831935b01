"""Issue 15: results are what they say they are.

Each class of failure has a test that fails if the guard is removed: a weights swap and a
manifest edit under a resumed store, a store rebuilt under a finished sweep, an MI file from
another store, two writers, in-place output, a virtual store with a missing shard, percent and
fraction accuracies mixed, a full disk through a file-size limit, and the single error path.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from matprobe import provenance
from matprobe.cli import app
from matprobe.errors import ExtractError, MatprobeError, ProvenanceMismatch, StatsError, StoreError
from matprobe.locks import InUseError, check_not_input
from matprobe.store import EmbeddingStore

torch.set_num_threads(1)
SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = {"penalties": (1e-4, 1e-2), "max_iter": 20}


def _one_line_error(res, progress: bool = False) -> str:
    text = res.output.strip()
    assert res.exit_code == 2, res.output
    if progress:  # transformers' own loading bars come first; the error is the last line
        assert "Traceback" not in text, text
        text = text.splitlines()[-1]
    assert text.startswith("error:") and "\n" not in text and "Traceback" not in text, text
    return text


def _store(path, features, ids=None, labels=None, **kw):
    n = len(next(iter(features.values())))
    ids = ids or [f"s{i:03d}" for i in range(n)]
    labels = labels or {"M": [f"m{i % 2}" for i in range(n)], "A": [f"a{(i // 2) % 3}" for i in range(n)]}
    EmbeddingStore.from_arrays(path, ids, labels, features, overwrite=True, **kw).close()
    return path


# ---------------------------------------------------------------------- weights fingerprint

def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def test_weights_fingerprint_sees_a_swap_and_refuses_a_truncated_file(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"layer{i}.weight": rng.standard_normal((64, 256)).astype("f4") for i in range(8)}
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    _write_safetensors(ckpt / "model.safetensors", tensors)
    fp = provenance.weights_fingerprint(ckpt)
    assert provenance.weights_fingerprint(ckpt) == fp  # deterministic
    # a fine-tune of one matrix only (same names, shapes, size): every element of it changes
    swapped = dict(tensors, **{"layer5.weight": tensors["layer5.weight"] + 1e-3})
    _write_safetensors(ckpt / "model.safetensors", swapped)
    assert provenance.weights_fingerprint(ckpt) != fp
    # truncated: the header promises more bytes than the file has
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExtractError, match="truncated safetensors file.*re-download"):
        provenance.weights_fingerprint(ckpt)


def test_extract_resume_refuses_swapped_weights_and_edited_manifest(tiny_ckpts, make_tiny_manifest, tmp_path):
    manifest = make_tiny_manifest(tmp_path / "data", n=6)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpts["llava"], ckpt)
    out = tmp_path / "z.h5"
    args = ["extract", "--ckpt", str(ckpt), "--data", str(manifest), "--out", str(out), "--layers", "0",
            "--pool", "last", "--batch-size", "6"]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    with EmbeddingStore.open(out) as st:
        first_id = st.content_id
        assert len(st.provenance["weights_fingerprint"]) == 64
    # 1. weights replaced under the same checkpoint path (another tiny model's weights)
    shutil.copy(tiny_ckpts["llava_other"] if "llava_other" in tiny_ckpts else _other_llava(tmp_path),
                ckpt / "model.safetensors")
    text = _one_line_error(runner.invoke(app, args))  # refused before the model loads: no progress bars
    assert "weights changed since the store was made" in text and "--overwrite" in text
    # 1b. the same store resumed from another checkpoint folder (a study re-pointed an entry): the
    # message names both folders, not the store's as "changed"
    other = tmp_path / "other ckpt"
    shutil.copytree(ckpt, other)
    text = _one_line_error(runner.invoke(app, [*args[:2], str(other), *args[3:]]))
    assert (f"the store was made from another checkpoint ({ckpt.resolve()}; now {other.resolve()}, weights "
            "fingerprint") in text and "--overwrite" in text and "weights changed" not in text
    shutil.copy(tiny_ckpts["llava"] / "model.safetensors", ckpt / "model.safetensors")
    # 2. one record's answer changed in the manifest
    lines = manifest.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["answer"] = (rec["answer"] + 1) % len(rec["options"])
    lines[2] = json.dumps(rec)
    manifest.write_text("\n".join(lines) + "\n")
    text = _one_line_error(runner.invoke(app, args))
    assert "1 record(s)" in text and repr(rec["id"]) in text and "--overwrite" in text
    # --overwrite recomputes, and the content id says the store changed
    res = runner.invoke(app, args + ["--overwrite"])
    assert res.exit_code == 0, res.output
    with EmbeddingStore.open(out) as st:
        assert st.content_id != first_id
        assert int(st.samples().set_index("id").loc[rec["id"], "answer_index"]) == rec["answer"]


def _other_llava(tmp_path) -> Path:
    from matprobe.extract.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path / "other", "llava", seed=99) / "model.safetensors"


# ---------------------------------------------------------------------- content id and reuse

def test_content_id_changes_with_any_row_and_is_stable(tmp_path):
    z = np.random.default_rng(1).standard_normal((12, 3)).astype(np.float32)
    a = _store(tmp_path / "a.h5", {("0", "last"): z})
    b = _store(tmp_path / "b.h5", {("0", "last"): z})
    c_feat = z.copy()
    c_feat[7, 1] += 1e-6
    c = _store(tmp_path / "c.h5", {("0", "last"): c_feat})
    with EmbeddingStore.open(a) as sa, EmbeddingStore.open(b) as sb, EmbeddingStore.open(c) as sc:
        assert sa.content_id == sb.content_id  # same content, made at different times
        assert sa.fingerprint == sc.fingerprint  # same ids and labels ...
        assert sa.content_id != sc.content_id  # ... but one value of one row differs


def test_sweep_refuses_cells_of_a_rebuilt_store(tmp_path):
    from matprobe.mi.sweep import run_sweep

    rng = np.random.default_rng(2)
    n = 120
    m = np.arange(n) % 2
    z = (rng.standard_normal((n, 3)) + m[:, None]).astype(np.float32)
    labels = {"M": [f"m{v}" for v in m], "A": [f"a{v}" for v in (np.arange(n) // 2) % 2]}
    ids = [f"s{i:03d}" for i in range(n)]
    store = _store(tmp_path / "s.h5", {("0", "last"): z}, ids, labels)
    out = tmp_path / "sweep.csv"
    kw = dict(factors=("M", "A"), seeds=1, folds=2, pca=None, pointwise=False, estimator_kwargs=FAST)
    first = run_sweep([store], out, **kw)
    assert first.n_computed == 1
    assert run_sweep([store], out, **kw).n_resumed == 1  # same content: served from the table
    _store(store, {("0", "last"): z[::-1].copy()}, ids, labels)  # re-extracted from other weights
    with pytest.raises(ProvenanceMismatch, match="rebuilt or changed.*--overwrite"):
        run_sweep([store], out, **kw)
    again = run_sweep([store], out, overwrite=True, **kw)
    assert again.n_computed == 1
    with EmbeddingStore.open(store) as st:
        assert set(again.table["fingerprint"]) == {st.content_id}


def _answers_store(path, z, seed):
    n = len(z)
    rng = np.random.default_rng(seed)
    labels = {"M": [("CT", "MRI")[i % 2] for i in range(n)], "A": [("Lung", "Brain")[(i // 2) % 2] for i in range(n)],
              "T": [("cls", "det")[(i // 4) % 2] for i in range(n)], "answer_index": [i % 4 for i in range(n)],
              "split": [("test", "train")[i % 2] for i in range(n)]}
    answers = {"pred": rng.integers(0, 4, n), "probs": np.full((n, 4), 0.25, np.float32)}
    EmbeddingStore.from_arrays(path, [f"s{i:03d}" for i in range(n)], labels, {("0", "last"): z},
                               answers=answers, overwrite=True).close()
    return path


def test_check_refuses_an_mi_file_of_another_store_of_the_same_dataset(tmp_path):
    from matprobe.mi.chain import run_store, write_results
    from matprobe.theory.check import run_check

    rng = np.random.default_rng(3)
    n = 80
    a = _answers_store(tmp_path / "a.h5", rng.standard_normal((n, 3)).astype(np.float32), 0)
    b = _answers_store(tmp_path / "b.h5", rng.standard_normal((n, 3)).astype(np.float32), 0)
    res, meta = run_store(a, ["M"], "0", "last", seeds=1, folds=2, pca=None, **FAST)
    mi = tmp_path / "a_mi.json"
    write_results(res, mi, store=meta["store"], fingerprint=meta["fingerprint"], layer="0", pool="last")
    run_check(a, mi)  # its own store: accepted
    with pytest.raises(StoreError, match="other store content.*rerun `matprobe mi --out`"):
        run_check(b, mi)


def test_compare_and_relate_refuse_stores_made_from_different_records(tmp_path):
    from matprobe.mi.compare import compare_stores

    n = 40
    z = np.random.default_rng(4).standard_normal((n, 3)).astype(np.float32)
    frame = pd.DataFrame({"id": [f"s{i:03d}" for i in range(n)], "modality": [("CT", "MRI")[i % 2] for i in range(n)],
                          "anatomy": ["Lung"] * n, "task": ["cls"] * n, "question": ["What?"] * n})
    paths = []
    for k in range(2):
        f = frame.copy()
        if k == 1:
            f.loc[5, "question"] = "Which organ?"  # one record differs; ids and labels agree
        st = EmbeddingStore.create(tmp_path / f"{k}.h5", f, {"source": "test"}, {("0", "last"): 3})
        st.append(np.arange(n), {("0", "last"): z})
        st.finalize().close()
        paths.append(tmp_path / f"{k}.h5")
    with pytest.raises(ProvenanceMismatch, match="different records for 1 shared sample.*'s005'"):
        compare_stores(paths[0], paths[1], "M", layer="0", pool="last", seeds=1, folds=2, pca=None,
                       n_boot=200, **FAST)


# ---------------------------------------------------------------------- unfinished and virtual stores

def test_readers_refuse_an_unfinished_store_and_a_missing_shard(tmp_path):
    from matprobe.mi.chain import run_store

    n = 20
    frame = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "modality": [("CT", "MRI")[i % 2] for i in range(n)]})
    st = EmbeddingStore.create(tmp_path / "u.h5", frame, {"source": "t"}, {("0", "last"): 2})
    st.append(np.arange(15), {("0", "last"): np.ones((15, 2), np.float32)})
    st.close()
    with pytest.raises(StoreError, match="5 of 20 rows have no features yet.*rerun `matprobe extract`"):
        run_store(tmp_path / "u.h5", ["M"], "0", "last", seeds=1, folds=2, pca=None)
    text = _one_line_error(CliRunner().invoke(app, ["mi", str(tmp_path / "u.h5"), "--layer", "0", "--factors", "M"]))
    assert "5 of 20 rows" in text
    # check too (it read the 15 answered rows as the whole store, and said nothing)
    from matprobe.theory.check import run_check

    with pytest.raises(StoreError, match="5 of 20 rows have no features yet.*before checking it"):
        run_check(tmp_path / "u.h5", None)

    shards = []
    for k in range(2):
        p = tmp_path / f"shard{k}.h5"
        _store(p, {("0", "last"): np.full((4, 2), k, np.float32)}, ids=[f"{k}-{i}" for i in range(4)],
               labels={"M": ["a", "b", "a", "b"]})
        shards.append(p)
    EmbeddingStore.merge(shards, tmp_path / "merged.h5").close()
    with EmbeddingStore.open(tmp_path / "merged.h5") as m:
        np.testing.assert_array_equal(m.read("0", "last")[4:], 1.0)
    shards[1].unlink()
    with pytest.raises(StoreError, match="shard shard1.h5 is missing"):
        EmbeddingStore.open(tmp_path / "merged.h5")


# ---------------------------------------------------------------------- writers

_HOLDER = """
import sys, time
from matprobe.store import EmbeddingStore
st = EmbeddingStore.open(sys.argv[1], mode="a")
print("ready", flush=True)
time.sleep(60)
"""


def test_two_writers_second_is_told_in_use_and_overwrite_cannot_race(tmp_path):
    n = 6
    frame = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "modality": ["CT", "MRI"] * 3})
    path = tmp_path / "w.h5"
    EmbeddingStore.create(path, frame, {"source": "t"}, {("0", "last"): 2}).close()
    env = dict(os.environ, PYTHONPATH=SRC)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = path.read_bytes()
        with pytest.raises(InUseError, match=f"in use by process {holder.pid}"):
            EmbeddingStore.open(path, mode="a")
        with pytest.raises(InUseError, match=f"in use by process {holder.pid}"):  # --overwrite
            EmbeddingStore.create(path, frame, {"source": "other"}, {("0", "last"): 2}, overwrite=True)
        with pytest.raises(StoreError, match=f"in use by process {holder.pid}"):  # a reader is told too
            EmbeddingStore.open(path)
        assert path.read_bytes() == before
    finally:
        holder.kill()  # kill -9: the kernel releases the lock
        holder.wait()
    EmbeddingStore.open(path, mode="a").close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]  # no lock file left behind


def test_outputs_never_replace_their_inputs(tmp_path, tiny_manifest):
    data = tmp_path / "d.jsonl"
    shutil.copy(tiny_manifest, data)
    before = data.read_bytes()
    runner = CliRunner()
    text = _one_line_error(runner.invoke(app, ["data", "split", str(data), "--target", "CT,Chest,Classification",
                                                "--out", str(data)]))
    assert "--out" in text and "also an input" in text
    assert data.read_bytes() == before
    csv = tmp_path / "r.csv"
    csv.write_text("condition,target,seed,metric,value\nA,t,0,acc,0.5\nB,t,0,acc,0.4\n")
    _one_line_error(runner.invoke(app, ["significance", str(csv), "--out", str(tmp_path / "." / "r.csv")]))
    with pytest.raises(MatprobeError):
        check_not_input(tmp_path / "sub" / ".." / "r.csv", csv)
    check_not_input(tmp_path / "other.csv", csv)  # a different file is fine


# ---------------------------------------------------------------------- values that pass but are wrong

def test_percent_and_fraction_accuracies_are_refused_with_rows(tmp_path):
    from matprobe.stats.significance import read_results

    rows = ["condition,target,seed,metric,value"]
    for t in range(4):
        rows.append(f"Related,t{t},0,accuracy,{60 + t}")  # percent
        rows.append(f"Unrelated,t{t},0,accuracy,{0.55 + t / 100}")  # fractions
    p = tmp_path / "mixed.csv"
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(StatsError, match="'accuracy' mixes units.*'Related' is in percent.*line 2.*'Unrelated'"):
        read_results(p)
    ok = tmp_path / "ok.csv"
    ok.write_text(p.read_text().replace(",0.5", ",55.").replace(",0.6", ",56."))
    assert read_results(ok)["value"].max() == 63  # all percent: accepted (noted by significance)
    res = CliRunner().invoke(app, ["significance", str(p), "--spec", str(_spec(tmp_path))])
    assert "mixes units" in _one_line_error(res)


def _spec(tmp_path) -> Path:
    s = tmp_path / "spec.txt"
    s.write_text("Related vs Unrelated\n")
    return s


def test_levels_resamples_and_small_samples_are_refused(tmp_path):
    from matprobe.mi.chain import chain_terms

    rng = np.random.default_rng(5)
    store = _store(tmp_path / "s.h5", {("0", "last"): rng.standard_normal((40, 2)).astype(np.float32)})
    runner = CliRunner()
    text = _one_line_error(runner.invoke(app, ["compare", str(store), "--layer-b", "0", "--term", "M",
                                               "--level", "95"]))
    assert "did you mean 0.95" in text
    text = _one_line_error(runner.invoke(app, ["compare", str(store), "--layer-b", "0", "--term", "M",
                                               "--n-boot", "0"]))
    assert "--n-boot 0" in text and "at least 100" in text
    # 10 samples, 5 folds: each class has 5 rows < 2 per fold
    z = rng.standard_normal((10, 2))
    with pytest.raises(MatprobeError, match="class .* has 5 rows, fewer than 2 per fold for --folds 5"):
        chain_terms(z, {"M": np.arange(10) % 2}, seeds=1, folds=5, pca=None)


def test_interval_wholly_below_zero_is_refused():
    from types import SimpleNamespace

    from matprobe.checks import check_chain_intervals

    bad = SimpleNamespace(ci_low=-3.8, ci_high=-0.2, n_eval=10)
    good = SimpleNamespace(ci_low=-0.1, ci_high=0.3, n_eval=10)
    check_chain_intervals(SimpleNamespace(terms={"probe": [("I(Z;M)", good)]}, direct={}))
    with pytest.raises(MatprobeError, match=r"I\(Z;M\) \(probe\) has its whole interval below 0"):
        check_chain_intervals(SimpleNamespace(terms={"probe": [("I(Z;M)", bad)]}, direct={}))


def test_pipeline_toml_misspelt_key_names_the_closest(tmp_path):
    from matprobe.pipeline import load_pipeline

    text = Path("experiments/demo/pipeline.toml").read_text().replace("folds = 5", "fods = 3")
    p = tmp_path / "p.toml"
    p.write_text(text)
    with pytest.raises(MatprobeError, match=r"\[mi\] has unknown key 'fods'; did you mean 'folds'\?"):
        load_pipeline(p)
    assert load_pipeline(Path("experiments/demo/pipeline.toml")).mi_folds == 5


def test_manifest_vocabulary_header_shape_and_factor_names(tmp_path, tiny_manifest):
    from matprobe.data import load_dataset

    body = tiny_manifest.read_text()
    for header, pattern in [
        ({"matprobe_manifest": 1, "vocabulary": ["CT", "MRI"]}, "'vocabulary' is a list, not an object"),
        ({"matprobe_manifest": 1, "vocabulary": {"modalty": ["CT"]}}, "unknown factor 'modalty'; did you mean 'modality'"),
        ({"matprobe_manifest": 1, "vocabulary": {"modality": "CT"}}, r"vocabulary\['modality'\] must be a non-empty list"),
    ]:
        p = tmp_path / "m.jsonl"
        p.write_text(json.dumps(header) + "\n" + body)
        with pytest.raises(MatprobeError, match=pattern):
            load_dataset(p)
    p.write_text(json.dumps({"matprobe_manifest": 1, "vocabulary": {"modality": ["CT", "MRI"]}}) + "\n" + body)
    with pytest.raises(MatprobeError, match="unknown modality label 'X-ray'"):  # a declared vocabulary is used
        load_dataset(p)


def test_medmat_answer_disagreeing_with_choice_and_duplicate_options(tmp_path):
    from matprobe.data.medmat import load_medmat

    def write(rec):
        p = tmp_path / "Subset--03-train.json"
        p.write_text(json.dumps([rec]))
        return p

    rec = {"id": 1, "image": "med-mat/a.png", "Question": "Q?", "Answer": "Cyst",
           "Question-choice": "A: Stone\nB: Cyst\nC: Normal", "Answer-choice": "A"}
    with pytest.raises(MatprobeError, match="Answer 'Cyst' is option B but Answer-choice is A"):
        load_medmat(write(rec))
    assert load_medmat(write(dict(rec, **{"Answer-choice": "B"})))[0].answer_index == 1
    with pytest.raises(MatprobeError, match="options A and C have the same text"):
        load_medmat(write(dict(rec, **{"Question-choice": "A: Stone\nB: Cyst\nC: stone", "Answer-choice": "B"})))


# ---------------------------------------------------------------------- one error path

def test_every_failure_is_one_line_and_debug_shows_the_traceback(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"id": "caf\u00e9"}\n'.encode("latin-1"))
    assert "not UTF-8" in _one_line_error(runner.invoke(app, ["data", "validate", str(bad)]))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in _one_line_error(runner.invoke(app, ["significance", str(empty)]))
    text = _one_line_error(runner.invoke(app, ["bounds", "fano", "--error", "0.2", "--classes", "4", "--unit", "bts"]))
    assert "'bts'" in text and "nats or bits" in text
    res = runner.invoke(app, ["--debug", "bounds", "fano", "--error", "0.2", "--classes", "4", "--unit", "bts"])
    # the whole traceback, not summarised, and the exit code of the error without --debug (was 1)
    assert res.exit_code == 2 and "Traceback (most recent call last)" in res.output
    assert "matprobe.errors.UnitError: --unit 'bts': unknown information unit" in res.output


def test_os_errors_become_lines_that_name_the_file_and_fix():
    import errno

    from matprobe.failures import user_message

    msg = user_message(PermissionError(errno.EACCES, "Permission denied", "/data/out/.r.csv.ab12cd34.tmp"))
    assert msg.startswith("/data/out/r.csv: permission denied")
    h5 = OSError("Unable to synchronously create file (unable to open file: name = '/x/s.h5', errno = 27, "
                 "error message = 'File too large')")
    assert user_message(h5).startswith("/x/s.h5: the file-size limit was reached (ulimit -f)")
    assert "nothing finished was damaged" in user_message(OSError(errno.ENOSPC, "No space left", "/x/y"))


def _limit_fsize(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_through_a_file_size_limit_is_one_line_and_keeps_inputs(tmp_path, make_tiny_manifest):
    manifest = make_tiny_manifest(tmp_path / "data", n=60)
    before = manifest.read_bytes()
    out = tmp_path / "split.jsonl"
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="200")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "matprobe", "data", "split", str(manifest), "--target",
                          "CT,Chest,Classification", "--out", str(out)], capture_output=True, text=True, env=env,
                         preexec_fn=_limit_fsize(4096), timeout=120)
    assert time.perf_counter() - t0 < 120
    assert res.returncode == 2, (res.returncode, res.stderr)
    err = res.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    assert f"{out}: the file-size limit was reached (ulimit -f)" in err
    assert not out.exists() and manifest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    # the same command without the limit works
    ok = subprocess.run([sys.executable, "-m", "matprobe", "data", "split", str(manifest), "--target",
                         "CT,Chest,Classification", "--out", str(out)], capture_output=True, text=True, env=env,
                        timeout=120)
    assert ok.returncode == 0 and out.stat().st_size > 4096


_BIG_STORE = """
import sys, numpy as np
from matprobe.failures import user_message
from matprobe.store import EmbeddingStore
try:
    EmbeddingStore.from_arrays(sys.argv[1], [str(i) for i in range(1000)], {"M": ["a", "b"] * 500},
                               {("0", "last"): np.random.rand(1000, 256).astype("f4")})
except Exception as exc:
    print(user_message(exc))
"""


def test_full_disk_while_writing_a_store_names_it_and_leaves_nothing(tmp_path):
    out = tmp_path / "big.h5"
    res = subprocess.run([sys.executable, "-c", _BIG_STORE, str(out)], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=SRC), preexec_fn=_limit_fsize(200_000), timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith(f"{out}: the file-size limit was reached (ulimit -f)"), res.stdout
    assert list(tmp_path.iterdir()) == []  # no store, no temporary, no lock file


def test_extract_resume_takes_a_new_split_without_recomputing(tiny_ckpts, make_tiny_manifest, tmp_path):
    # the split says how a study uses an item (run rewrites it per condition; a user may edit it),
    # and no feature or answer depends on it: a resume whose records differ only there was refused
    # ("record(s) changed ... --overwrite", hours on a GPU for a 7B model); the store takes the split
    manifest = make_tiny_manifest(tmp_path / "data", n=6)
    out = tmp_path / "z.h5"
    args = ["extract", "--ckpt", str(tiny_ckpts["llava"]), "--data", str(manifest), "--out", str(out),
            "--layers", "0", "--pool", "last", "--batch-size", "6"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    with EmbeddingStore.open(out) as st:
        first_id, features, rows = st.content_id, st.read("0", "last").copy(), st._row_digests().copy()
    recs = [json.loads(line) for line in manifest.read_text().splitlines()]
    splits = ["train", "train", "test", "unused", "test", "train"]
    manifest.write_text("".join(json.dumps({**r, "split": s}) + "\n" for r, s in zip(recs, splits)))
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    with EmbeddingStore.open(out) as st:
        assert st.samples()["split"].tolist() == splits
        assert np.array_equal(st.read("0", "last"), features) and np.array_equal(st._row_digests(), rows)
        assert st.content_id != first_id  # results computed on the old split are not reused
        now = st.content_id
    assert runner.invoke(app, args).exit_code == 0  # and a second resume finds it up to date
    with EmbeddingStore.open(out) as st:
        assert st.content_id == now
    recs[1]["question"] = recs[1]["question"] + " (edited)"  # an item itself changed: still refused
    manifest.write_text("".join(json.dumps({**r, "split": s}) + "\n" for r, s in zip(recs, splits)))
    text = _one_line_error(runner.invoke(app, args))
    assert "1 record(s)" in text and repr(recs[1]["id"]) in text and "--overwrite" in text
