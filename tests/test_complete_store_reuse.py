"""A rerun on a complete store made from the same inputs loads no model (`reuse_complete_store`).

A rerun of `run` (an MI setting changed, a report redone) went through `extract` for every
store, and `extract` loaded each checkpoint before it found nothing to compute: minutes per 7B
checkpoint on a GPU. Here the model loader is replaced by one that counts its calls (or refuses
to be called), so each test sees whether a model was loaded, and what the store holds is compared
to the bytes of the file before the rerun."""

from __future__ import annotations

import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from matprobe.errors import ProvenanceMismatch  # noqa: E402


def _config(ckpt, data, out, **kw):
    from matprobe.extract.runner import ExtractConfig

    return ExtractConfig(**{**dict(ckpt=str(ckpt), data=str(data), out=str(out), layers="1,-1", pools="last,image",
                                   batch_size=4), **kw})


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def loads(monkeypatch):
    """The number of model loads since the test started (the real loader still runs)."""
    import matprobe.extract.checkpoints as checkpoints

    real, calls = checkpoints.load_model, []

    def counted(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("ckpt"))
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "load_model", counted)
    return calls


@pytest.fixture
def made(tiny_ckpts, make_tiny_manifest, tmp_path):
    """A complete store of a tiny LLaVA on 8 items, its first result and the file's digest."""
    from matprobe.extract.runner import extract

    data = make_tiny_manifest(tmp_path / "d", n=8, seed=5)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpts["llava"], ckpt)
    out = tmp_path / "z.h5"
    first = extract(_config(ckpt, data, out))
    assert first.n_computed == 8
    return ckpt, data, out, first, _sha(out)


def test_a_complete_store_is_taken_without_loading_the_model(made, loads):
    from matprobe.extract.preflight import check_extract_inputs
    from matprobe.extract.runner import extract, extract_request
    from matprobe.provenance import processing_fingerprints, weights_fingerprint
    from matprobe.store import EmbeddingStore

    ckpt, data, out, first, digest = made
    again = extract(_config(ckpt, data, out, batch_size=3))  # the batch size changes no feature
    assert loads == []
    assert (again.n_total, again.n_resumed, again.n_computed) == (8, 8, 0)
    assert (again.layers, again.pools, again.accuracy) == (first.layers, first.pools, first.accuracy)
    assert _sha(out) == digest  # the file was not touched
    # what the store records is the request recomputed here from its parts
    cfg = _config(ckpt, data, out)
    dataset, pools = check_extract_inputs(cfg)
    with EmbeddingStore.open(out) as st:
        recorded = st.provenance["extract_request"]
    assert recorded == extract_request(cfg, dataset, pools, weights_fingerprint(ckpt), processing_fingerprints(ckpt))
    assert recorded["weights_fingerprint"] == weights_fingerprint(ckpt) and recorded["pools"] == ["last", "image"]


def test_a_moved_run_is_the_same_request(made, loads, tmp_path):
    from matprobe.extract.runner import extract

    ckpt, data, out, first, digest = made
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copytree(ckpt, moved / "ckpt")
    shutil.copy(out, moved / "z.h5")
    again = extract(_config(moved / "ckpt", data, moved / "z.h5"))
    assert loads == [] and again.n_computed == 0 and _sha(moved / "z.h5") == digest


@pytest.mark.parametrize("change", ["same layers named otherwise", "attention", "template file", "package"])
def test_another_request_loads_the_model_and_the_provenance_decides(made, loads, monkeypatch, tmp_path, change):
    from matprobe.extract import runner

    ckpt, data, out, first, digest = made
    kw = {}
    if change == "same layers named otherwise":
        kw["layers"] = "1,3"  # the tiny decoder has 4 blocks: -1 is 3, the same rows
    elif change == "attention":
        kw["attn_implementation"] = "eager"
    elif change == "template file":
        template = tmp_path / "t.txt"
        template.write_text("USER: {message} ASSISTANT:")
        kw["template"] = str(template)
    else:
        installed = runner._installed
        monkeypatch.setattr(runner, "_installed", lambda p: "0.0-other" if p == "transformers" else installed(p))
    if change in ("same layers named otherwise", "package"):
        again = runner.extract(_config(ckpt, data, out, **kw))
        assert again.n_computed == 0 and again.layers == first.layers  # the provenance accepts the store
    else:
        with pytest.raises(ProvenanceMismatch, match="attn_implementation|prompt_template|template"):
            runner.extract(_config(ckpt, data, out, **kw))
    # the request differed: the model was loaded to compare the provenance; layers named otherwise
    # resolve to the stored ones without a model (`narrowed_cells`), so nothing is loaded for them
    assert len(loads) == (0 if change == "same layers named otherwise" else 1)


def test_a_changed_template_file_under_the_same_name_is_another_request(made, loads, tmp_path):
    from matprobe.extract.runner import extract

    ckpt, data, out, _, _ = made
    template = tmp_path / "t.txt"
    template.write_text("USER: {message} ASSISTANT:")
    out2 = out.with_name("t.h5")
    assert extract(_config(ckpt, data, out2, template=str(template))).n_computed == 8
    assert extract(_config(ckpt, data, out2, template=str(template))).n_computed == 0
    assert len(loads) == 1  # the rerun with the same file loaded nothing
    template.write_text("USER: {message} ASSISTANT (edited):")
    with pytest.raises(ProvenanceMismatch, match="template"):
        extract(_config(ckpt, data, out2, template=str(template)))
    assert len(loads) == 2


def test_a_store_without_a_request_loads_the_model_once_and_an_unfinished_store_loads_it(made, loads, make_tiny_manifest,
                                                                           tmp_path):
    from matprobe.extract.runner import extract

    ckpt, data, out, first, _ = made
    with h5py.File(out, "r+") as h5:  # as a store made before the request was recorded
        prov = json.loads(h5.attrs["provenance"])
        del prov["extract_request"]
        h5.attrs["provenance"] = json.dumps(prov, sort_keys=True)
    assert extract(_config(ckpt, data, out)).n_computed == 0
    assert len(loads) == 1
    # that load found the provenance equal and recorded the request: the next rerun loads nothing
    with h5py.File(out, "r") as h5:
        assert "extract_request" in json.loads(h5.attrs["provenance"])
    assert extract(_config(ckpt, data, out)).n_computed == 0
    assert len(loads) == 1
    # stopped after its first batch of 4: the rerun computes the other 4 rows with the model
    part = tmp_path / "part.h5"

    def stop(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(_config(ckpt, data, part), on_batch=stop)
    assert len(loads) == 2
    rest = extract(_config(ckpt, data, part))
    assert (rest.n_resumed, rest.n_computed) == (4, 4) and len(loads) == 3


def test_changed_weights_are_refused_before_any_load(made, loads):
    from matprobe.extract.runner import extract
    from matprobe.extract.tiny import build_tiny_checkpoint

    ckpt, data, out, _, digest = made
    shutil.rmtree(ckpt)
    build_tiny_checkpoint(ckpt, "llava", seed=7)  # other weights in the same folder
    with pytest.raises(ProvenanceMismatch, match="weights changed"):
        extract(_config(ckpt, data, out))
    assert loads == [] and _sha(out) == digest


def test_a_rerun_of_run_loads_no_model(quick_demo, tmp_path, monkeypatch):
    import matprobe.extract.checkpoints as checkpoints
    from matprobe.pipeline import demo_config, run_pipeline
    from matprobe.store import EmbeddingStore

    run = quick_demo
    stores = sorted((run / "stores").glob("*.h5"))
    before = {p.name: _sha(p) for p in stores}
    first = json.loads((run / "run.json").read_text())
    mi_before = {p.name: p.read_bytes() for p in (run / "mi").glob("*.json")}

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a complete store")

    monkeypatch.setattr(checkpoints, "load_model", refuse)
    cfg = demo_config(quick=True, out=str(run))
    cfg.workers = 1  # in this process, where the loader is replaced
    cfg.portable_numerics = False
    said: list[str] = []
    run_pipeline(cfg, progress=said.append)
    err = "\n".join(said)
    for p in stores:
        assert f"store {p.stem}: complete, made from these inputs (no model loaded)" in err, err[-2000:]
        assert _sha(p) == before[p.name]
        with EmbeddingStore.open(p) as st:
            assert st.provenance["extract_request"]["device"] == "cpu"
    assert "stores to do" not in err
    # nothing downstream was recomputed either: the MI files are the same bytes
    assert {p.name: p.read_bytes() for p in (run / "mi").glob("*.json")} == mi_before
    rerun = json.loads((run / "run.json").read_text())
    assert np.isfinite(rerun["seconds"]["extract"])
    # the rerun's own times are what checking the finished steps cost; the study's cost is kept beside them
    earlier = first.get("seconds_all_runs", first["seconds"])
    assert rerun["runs"] == first.get("runs", 1) + 1
    assert set(rerun["seconds_all_runs"]) == set(earlier) | set(rerun["seconds"])
    for step, spent in rerun["seconds_all_runs"].items():
        assert spent == pytest.approx(earlier.get(step, 0.0) + rerun["seconds"].get(step, 0.0), rel=1e-12)
    assert rerun["seconds_all_runs"]["mi"] >= first["seconds"]["mi"] > rerun["seconds"]["mi"]
    report = (run / "report.md").read_text()
    assert f"| step | this run (s) | all {rerun['runs']} runs (s) |" in report


def test_an_original_llava_tower_edited_in_place_is_another_request(tmp_path, loads):
    # the tower is a folder of its own (--vision-tower): its weights and its preprocessing file are
    # part of the request, so an edit under the same path loads the model and is refused by the
    # provenance (tests/reference/llava_original: checkpoints saved by LLaVA's own code)
    from pathlib import Path

    from matprobe.extract.runner import extract

    kit = Path(__file__).parent / "reference" / "llava_original" / "kit"
    tower = shutil.copytree(kit / "tower", tmp_path / "tower")
    rows = [dict(id=f"i{i}", image=str(kit / "images" / f"item{i}.png"), question="What is shown?",
                 options=["a", "b"], answer=0, modality="CT", anatomy="Chest", task="Classification")
            for i in range(2)]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = dict(vision_tower=str(tower), layers="0", pools="last")
    out = tmp_path / "z.h5"
    assert extract(_config(kit / "llava-v1.5-tiny", data, out, **cfg)).n_computed == 2
    assert extract(_config(kit / "llava-v1.5-tiny", data, out, **cfg)).n_computed == 0
    assert len(loads) == 1
    pre = json.loads((tower / "preprocessor_config.json").read_text())
    pre["image_mean"] = [0.5, 0.5, 0.5]
    (tower / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.raises(ProvenanceMismatch, match="image_preprocessing"):
        extract(_config(kit / "llava-v1.5-tiny", data, out, **cfg))
    assert len(loads) == 2


def test_earlier_runs_seconds_reads_the_last_run_json(tmp_path):
    from matprobe.pipeline import earlier_runs_seconds

    assert earlier_runs_seconds(tmp_path) == ({}, 0)  # no earlier run
    (tmp_path / "run.json").write_text("{not json")
    assert earlier_runs_seconds(tmp_path) == ({}, 0)  # a torn file counts nothing
    (tmp_path / "run.json").write_text(json.dumps({"seconds": {"mi": 30.5, "extract": 2}}))
    assert earlier_runs_seconds(tmp_path) == ({"mi": 30.5, "extract": 2.0}, 1)  # before the sums: one run
    (tmp_path / "run.json").write_text(json.dumps({"seconds": {"mi": 0.5}, "seconds_all_runs": {"mi": 61.0},
                                                   "runs": 3}))
    assert earlier_runs_seconds(tmp_path) == ({"mi": 61.0}, 3)


def test_fewer_of_the_stored_layers_or_pools_are_read_from_a_complete_store(made, loads, tmp_path):
    """A rerun after a layer was dropped from [extract] layers refused every store ("layers '1,3' stored,
    '1' asked") and a study had to extract every checkpoint again: the cells asked are in the complete
    store, so they are read from it, no model loaded, the file untouched; a layer not stored still
    takes the model (and its provenance refuses it), and an unfinished store is resumed only as asked."""
    from matprobe.extract.preflight import check_extract_inputs
    from matprobe.extract.runner import extract, resume_refusal
    from matprobe.store import EmbeddingStore

    ckpt, data, out, first, digest = made
    assert first.layers == ["1", "3"] and first.pools == ["last", "image"]
    fewer = _config(ckpt, data, out, layers="-1", pools="image")
    assert resume_refusal(fewer) is None
    check_extract_inputs(fewer)  # `extract`'s own preflight takes it too
    again = extract(fewer)
    assert loads == [] and again.n_computed == 0 and _sha(out) == digest
    assert (again.layers, again.pools) == (["3"], ["image"])
    with EmbeddingStore.open(out) as st:  # the cells are the stored ones, as they were
        assert st.feature_keys() == [("1", "image"), ("1", "last"), ("3", "image"), ("3", "last")]
    with pytest.raises(ProvenanceMismatch):
        extract(_config(ckpt, data, out, layers="1,2,-1"))  # layer 2 is not stored
    # an unfinished store: its missing rows would lack the cells not asked, so fewer is refused
    with h5py.File(out, "r+") as h5:
        done = h5["done"][...]
        done[-1] = False
        h5["done"][...] = done
    refused = resume_refusal(fewer) or ""
    assert "made with other settings (" in refused and "layers 1,3 stored, 3 asked" in refused, refused
