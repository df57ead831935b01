"""Runner: resume after SIGKILL, provenance checks, bad input, torchrun sharding, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from matprobe.errors import DataError, ExtractError, ProvenanceMismatch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(REPO / "src")}


def _config(ckpt, data, out, **kw):
    from matprobe.extract.runner import ExtractConfig

    base = dict(ckpt=str(ckpt), data=str(data), out=str(out), layers="1,-1", batch_size=2)
    base.update(kw)
    return ExtractConfig(**base)


def assert_stores_equal(a_path, b_path, atol=0.0):
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(a_path) as a, EmbeddingStore.open(b_path) as b:
        assert list(a.ids) == list(b.ids)
        assert a.fingerprint == b.fingerprint
        assert a.done.all() and b.done.all()
        assert a.feature_keys() == b.feature_keys()
        for key in a.feature_keys():
            np.testing.assert_allclose(a.read(*key), b.read(*key), rtol=0, atol=atol, err_msg=str(key))
        aa, bb = a.answers(), b.answers()
        np.testing.assert_array_equal(aa["pred"], bb["pred"])
        np.testing.assert_array_equal(aa["correct"], bb["correct"])
        np.testing.assert_allclose(aa["probs"], bb["probs"], rtol=0, atol=max(atol, 1e-7))
        pa, pb = a.provenance, b.provenance
        for field in ("arch", "layers", "pools", "prompt_template", "dtype", "option_letter_token_ids"):
            assert pa[field] == pb[field], field


def test_sigkill_then_resume_equals_uninterrupted(tiny_ckpts, make_tiny_manifest, tmp_path):
    from matprobe.extract.runner import extract
    from matprobe.store import EmbeddingStore

    data = make_tiny_manifest(tmp_path / "d", n=12, seed=3)
    ckpt = tiny_ckpts["qwen2_vl"]
    killed = tmp_path / "killed.h5"
    # The child reports each finished batch and then pauses, so SIGKILL lands mid-run
    # (between batch 2 and 3 of 6) deterministically; the extraction code is unmodified.
    script = textwrap.dedent(f"""
        import time, torch
        torch.set_num_threads(1)
        from matprobe.extract.runner import ExtractConfig, extract
        def report(n):
            print("rows", n, flush=True)
            time.sleep(0.3)
        extract(ExtractConfig(ckpt={str(ckpt)!r}, data={str(data)!r}, out={str(killed)!r},
                              layers="1,-1", batch_size=2), on_batch=report)
        print("finished", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        for line in child.stdout:
            if line.startswith("rows 4"):
                os.kill(child.pid, signal.SIGKILL)
                break
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    with EmbeddingStore.open(killed) as partial:
        assert partial.done.sum() == 4 and len(partial.missing_ids()) == 8

    resumed = extract(_config(ckpt, data, killed))
    assert (resumed.n_resumed, resumed.n_computed) == (4, 8)
    clean = tmp_path / "clean.h5"
    extract(_config(ckpt, data, clean))
    # Same batch boundaries on both paths, so the values are bit-identical.
    assert_stores_equal(killed, clean, atol=0.0)


def test_resume_refuses_other_settings_and_overwrite_restarts(tiny_ckpts, tiny_manifest, tmp_path):
    from matprobe.extract.runner import extract

    out = tmp_path / "z.h5"
    first = extract(_config(tiny_ckpts["llava"], tiny_manifest, out))
    assert first.n_computed == 10
    again = extract(_config(tiny_ckpts["llava"], tiny_manifest, out))
    assert (again.n_resumed, again.n_computed) == (10, 0)
    with pytest.raises(ProvenanceMismatch, match="layers"):
        extract(_config(tiny_ckpts["llava"], tiny_manifest, out, layers="0,-1"))
    with pytest.raises(ProvenanceMismatch, match="adapter"):
        extract(_config(tiny_ckpts["llava"], tiny_manifest, out, adapter=str(tiny_ckpts["llava_lora"])))
    redo = extract(_config(tiny_ckpts["llava"], tiny_manifest, out, layers="0,-1", overwrite=True))
    assert (redo.n_resumed, redo.n_computed) == (0, 10)


def test_missing_image_fails_before_writing(tiny_ckpts, make_tiny_manifest, tmp_path):
    from matprobe.extract.runner import extract

    data = make_tiny_manifest(tmp_path / "d", n=4)
    (tmp_path / "d" / "img" / "2.png").unlink()
    out = tmp_path / "z.h5"
    with pytest.raises(DataError, match=r"1 of 4 image\(s\) missing, first sample 's002'"):
        extract(_config(tiny_ckpts["llava"], data, out))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".z.h5")] == []


def test_bad_layer_and_pool_write_nothing(tiny_ckpts, tiny_manifest, tmp_path):
    from matprobe.extract.runner import extract

    out = tmp_path / "z.h5"
    with pytest.raises(ExtractError, match="index 9 is out of range for a 4-block decoder"):
        extract(_config(tiny_ckpts["qwen2_5_vl"], tiny_manifest, out, layers="1,9"))
    with pytest.raises(ExtractError, match="unknown pool"):
        extract(_config(tiny_ckpts["qwen2_5_vl"], tiny_manifest, out, pools="last,cls"))
    assert not out.exists()


def test_no_answers_and_embed_only_stop_early(tiny_ckpts, tiny_manifest, tmp_path):
    from matprobe.extract.runner import extract
    from matprobe.store import EmbeddingStore

    out = tmp_path / "z.h5"
    res = extract(_config(tiny_ckpts["llava"], tiny_manifest, out, layers="embed", pools="image",
                          answers=False))
    assert res.n_computed == 10
    with EmbeddingStore.open(out) as store:
        assert store.feature_keys() == [("embed", "image")]
        assert (store.answers()["pred"] == -1).all()
        assert store.provenance["answers"] is False


def test_torchrun_two_processes_equal_single_process(tiny_ckpts, tiny_manifest, tmp_path):
    from matprobe.extract.runner import extract
    from matprobe.store import EmbeddingStore

    single = tmp_path / "single.h5"
    extract(_config(tiny_ckpts["qwen2_vl"], tiny_manifest, single, batch_size=3))
    merged = tmp_path / "multi" / "z.h5"
    torchrun = Path(sys.executable).with_name("torchrun")
    import socket

    with socket.socket() as sock:  # a free port: a fixed one collides when several suites run at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), "-m", "matprobe", "extract",
           "--ckpt", str(tiny_ckpts["qwen2_vl"]), "--data", str(tiny_manifest), "--out", str(merged),
           "--layers", "1,-1", "--batch-size", "3", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted((tmp_path / "multi" / "z.h5.shards").iterdir())
    assert [p.name for p in shards] == ["rank0-of-2.h5", "rank1-of-2.h5"]
    with EmbeddingStore.open(shards[0]) as s0, EmbeddingStore.open(shards[1]) as s1:
        assert (s0.n, s1.n) == (5, 5)
    with EmbeddingStore.open(merged) as m:
        assert m.info()["virtual"] is True
    # Batches differ (3+2 per rank vs 3+3+3+1), so padding differs: equal within 1e-5.
    assert_stores_equal(merged, single, atol=1e-5)


def test_cli_bad_input_prints_one_line(tiny_ckpts, tiny_manifest, tmp_path):
    from typer.testing import CliRunner

    from matprobe.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["extract", "--ckpt", str(tmp_path / "none"), "--data", str(tiny_manifest),
                              "--out", str(tmp_path / "z.h5")])
    assert res.exit_code == 2
    text = res.output.strip()
    assert text.count("\n") == 0 and text.startswith("error:") and "no such directory" in text
    res = runner.invoke(app, ["extract", "--ckpt", str(tiny_ckpts["llava"]), "--data", str(tiny_manifest),
                              "--out", str(tmp_path / "z.h5"), "--layers", "0,4"])
    assert res.exit_code == 2 and "index 4 is out of range" in res.output
    assert not (tmp_path / "z.h5").exists()
    res = runner.invoke(app, ["extract", "--ckpt", str(tiny_ckpts["llava"]), "--data", str(tiny_manifest),
                              "--out", str(tmp_path / "z.h5"), "--layers", "0,final", "--batch-size", "5"])
    assert res.exit_code == 0, res.output
    assert "10 of 10 rows" in res.output and "layers 0,final" in res.output


def test_out_of_memory_names_the_flag_and_keeps_finished_rows(tiny_ckpts, tiny_manifest, tmp_path,
                                                              monkeypatch):
    from matprobe.extract import hooks
    from matprobe.extract.runner import extract
    from matprobe.store import EmbeddingStore

    real_run = hooks.LayerPooler.run
    calls = {"n": 0}

    def run_then_oom(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # third batch: simulate the allocator failing
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(self, *args, **kw)

    monkeypatch.setattr(hooks.LayerPooler, "run", run_then_oom)
    out = tmp_path / "z.h5"
    with pytest.raises(ExtractError, match=r"out of memory .*lower --batch-size or --max-pixels; "
                                           r"4 finished rows are kept"):
        extract(_config(tiny_ckpts["qwen2_vl"], tiny_manifest, out))
    with EmbeddingStore.open(out) as store:
        assert store.done.sum() == 4
    monkeypatch.setattr(hooks.LayerPooler, "run", real_run)
    assert extract(_config(tiny_ckpts["qwen2_vl"], tiny_manifest, out)).n_computed == 6
