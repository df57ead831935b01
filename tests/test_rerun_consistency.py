"""A rerun into a run directory, a copied run directory, and the training rows `run` takes.

Found by a user study (twenty-eighth session): a rerun after `[mi] level = 0.9` recomputed the six
main MI cells but kept the twelve (modality, source) chains at 0.95 under the report's "90%
interval" head; a `cp -r run1 runB` run stopped at "provenance differs in checkpoint" (the store
named the checkpoint's old path); and `run` trained on rows the manifest marks split = test where
`data split` left them out (64 training rows against 48)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from matprobe.errors import PipelineError, ProvenanceMismatch


# ------------------------------------------------------------------ 1. every setting a reuse depends on
def _store_with_sources(path: Path) -> str:
    from matprobe.store import EmbeddingStore

    n = 8
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)],
                               {"modality": list("abababab"), "source": list("xxyyxxyy")},
                               {("0", "last"): np.arange(2 * n, dtype=np.float32).reshape(n, 2)}).close()
    with EmbeddingStore.open(path) as st:
        return st.content_id


def _write_result(path: Path, fingerprint: str, settings: dict, factors) -> None:
    path.write_text(json.dumps({"kind": "matprobe.mi", "store_fingerprint": fingerprint, "factors": list(factors),
                                "terms": [], "settings": settings}))


def _queued_mi_jobs(cfg, ck, monkeypatch) -> list[str]:
    """The result files `_estimate_mi` would compute (the workers replaced by a recorder)."""
    from matprobe import pipeline

    queued: list[str] = []

    def record(fn, jobs, names, *args, **kwargs):
        queued.extend(names)
        return iter(())

    monkeypatch.setattr(pipeline, "_map_in_workers", record)
    pipeline._estimate_mi(cfg, [ck], lambda msg: None, False)
    return sorted(queued)


def test_source_chains_are_recomputed_when_an_mi_setting_changes(tmp_path, monkeypatch):
    from matprobe.defaults import DEFAULTS
    from matprobe.mi.chain import chain_settings
    from matprobe.pipeline import PipelineConfig, _mi_settings

    store = tmp_path / "ck.h5"
    fingerprint = _store_with_sources(store)
    before = PipelineConfig(factors=("modality",), mi_level=0.95, mi_controls=True)
    main = tmp_path / "ck__0__last.json"
    _write_result(main, fingerprint, _mi_settings(before), before.factors)
    # the source chains as the run computes them: no baselines beside them
    plain = chain_settings([before.estimator], before.mi_seeds, before.mi_folds, before.pca, before.mi_level,
                           DEFAULTS.seed)
    _write_result(tmp_path / "ck__0__last__modality_source.json", fingerprint, plain, ["modality", "source"])
    _write_result(tmp_path / "ck__0__last__source_modality.json", fingerprint, plain, ["source", "modality"])

    def ck():
        return {"name": "ck", "store": str(store), "fresh_store": False, "mi": {"0/last": str(main)},
                "main_mi": str(main)}

    assert _queued_mi_jobs(before, ck(), monkeypatch) == []  # nothing changed: everything reused
    every = ["ck__0__last.json", "ck__0__last__modality_source.json", "ck__0__last__source_modality.json"]
    for change in ({"mi_level": 0.9}, {"mi_seeds": 3}, {"mi_folds": 4}, {"pca": 32}):
        edited = PipelineConfig(**{**before.__dict__, **change})
        assert _queued_mi_jobs(edited, ck(), monkeypatch) == every, change
    # a baseline the source chains are not run with: only the main chain depends on it
    edited = PipelineConfig(**{**before.__dict__, "mi_controls": False})
    assert _queued_mi_jobs(edited, ck(), monkeypatch) == ["ck__0__last.json"]


def test_a_run_refuses_a_report_whose_figures_are_missing(tmp_path):
    from matprobe.pipeline import check_report_figures

    (tmp_path / "figures").mkdir()
    for name in ("mi_chain.png", "mi_chain.svg", "pointwise.png"):
        (tmp_path / "figures" / name).write_bytes(b"x")
    (tmp_path / "report.md").write_text("![a](figures/mi_chain.png)\n\n*a* ([SVG](figures/mi_chain.svg))\n\n"
                                        "![b](figures/pointwise.png)\n\n*b* ([SVG](figures/pointwise.svg))\n")
    with pytest.raises(PipelineError, match=r"links figures/pointwise\.svg, missing"):
        check_report_figures(tmp_path)
    (tmp_path / "figures" / "pointwise.svg").write_bytes(b"x")
    check_report_figures(tmp_path)  # every linked figure there


# ------------------------------------------------------------------ 2. a copied run directory
PROV = {"kind": "matprobe.extract", "checkpoint": "/studies/run1/checkpoints/related-s0", "adapter": None,
        "adapter_sha256": None, "config_sha256": "c" * 64, "weights_fingerprint": "w" * 64, "dtype": "fp32"}


def test_provenance_names_a_checkpoint_by_its_content():
    from matprobe.store import make_provenance, provenance_differences

    moved = {**PROV, "checkpoint": "/studies/runB/checkpoints/related-s0"}
    assert provenance_differences(make_provenance(**PROV), make_provenance(**moved)) == []
    # another checkpoint (other weights or config) at any path is still another checkpoint
    other = {**moved, "weights_fingerprint": "v" * 64}
    assert provenance_differences(make_provenance(**PROV), make_provenance(**other)) == [
        "checkpoint", "weights_fingerprint"]
    assert provenance_differences(make_provenance(**PROV), make_provenance(**{**PROV, "config_sha256": "d" * 64})) \
        == ["config_sha256"]
    # an adapter by path only where both record its content
    adapted = {**PROV, "adapter": "/a/lora", "adapter_sha256": "a" * 64}
    assert provenance_differences(make_provenance(**adapted), make_provenance(**{**adapted, "adapter": "/b/lora"})) == []
    assert provenance_differences(make_provenance(**PROV), make_provenance(**{**adapted, "adapter_sha256": None})) \
        == ["adapter"]


def test_a_copied_run_directory_resumes_its_stores(tmp_path, make_tiny_manifest):
    import torch

    torch.set_num_threads(1)
    from matprobe.extract.runner import ExtractConfig, extract
    from matprobe.extract.tiny import build_tiny_checkpoint

    data = make_tiny_manifest(tmp_path / "data", n=4)
    run1 = tmp_path / "run1"
    build_tiny_checkpoint(run1 / "checkpoints" / "related-s0", "llava", seed=0)

    def config(run, ckpt=None):
        return ExtractConfig(ckpt=str(ckpt or run / "checkpoints" / "related-s0"), data=str(data),
                             out=str(run / "stores" / "related-s0.h5"), layers="-1", pools="last", batch_size=4)

    assert extract(config(run1)).n_computed == 4
    shutil.copytree(run1, tmp_path / "runB")
    again = extract(config(tmp_path / "runB"))  # the run's own checkpoint under its new path
    assert again.n_computed == 0
    other = build_tiny_checkpoint(tmp_path / "other", "llava", seed=1)  # a genuinely different checkpoint
    with pytest.raises(ProvenanceMismatch, match="another checkpoint"):
        extract(config(tmp_path / "runB", other))


# ------------------------------------------------------------------ 3. one rule for the training rows
def _manifest_with_split(folder: Path) -> Path:
    """Two Related triplets of (CT, Lung, COVID), two zero-overlap ones, each with 6 rows marked
    train and 2 marked test, and the target's own rows."""
    folder.mkdir(parents=True, exist_ok=True)
    trips = [("CT", "Lung", "COVID"), ("CT", "Lung", "Cancer"), ("X-ray", "Lung", "COVID"),
             ("MRI", "Brain", "Tumor"), ("Fundus", "Eye", "Glaucoma")]
    rows = []
    for t, (m, a, task) in enumerate(trips):
        for i in range(8):
            rows.append({"id": f"t{t}-{i}", "image": "x.png", "question": "q?", "options": ["yes", "no"],
                         "answer": i % 2, "modality": m, "anatomy": a, "task": task,
                         "split": "train" if i < 6 else "test"})
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_run_and_data_split_take_the_same_training_rows(tmp_path):
    from matprobe.data.loaders import load_pipeline_data
    from matprobe.data.splits import split_file
    from matprobe.pipeline import PipelineConfig, _training_ids

    manifest = _manifest_with_split(tmp_path)
    dataset = load_pipeline_data(str(manifest), None, None)
    target = ("CT", "Lung", "COVID")
    for cond in ("related", "zero-overlap"):  # the run's tiny models, one condition: every training row
        cfg = PipelineConfig(data_file=str(manifest), target=target, conditions=(cond,))
        written = split_file(manifest, "CT,Lung,COVID", cond, out=tmp_path / f"{cond}.jsonl")
        by_split = sorted(s.id for s in written if s.split == "train")
        assert _training_ids(dataset, cfg)[cond] == by_split
        assert len(by_split) == 12 and not any(i.endswith(("-6", "-7")) for i in by_split)  # never a test row
    # equalised over two conditions: a subset of those rows, never a row marked test
    cfg = PipelineConfig(data_file=str(manifest), target=target, conditions=("related", "zero-overlap"),
                         train_size=10)
    ids = _training_ids(dataset, cfg)
    assert {c: len(v) for c, v in ids.items()} == {"related": 10, "zero-overlap": 10}
    assert not any(i.endswith(("-6", "-7")) for v in ids.values() for i in v)
    # checkpoints trained elsewhere: the rows marked train, as before
    given = PipelineConfig(data_file=str(manifest), target=target, conditions=("related",),
                           checkpoints=[{"name": "related-s0", "condition": "related", "seed": 0, "ckpt": "x"}])
    assert _training_ids(dataset, given)["related"] == sorted(f"t{t}-{i}" for t in (1, 2) for i in range(6))


def test_a_condition_whose_rows_are_all_marked_test_is_refused_before_running(tmp_path):
    from matprobe.data.loaders import load_pipeline_data
    from matprobe.data.splits import first_unsplittable

    manifest = _manifest_with_split(tmp_path)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in rows:  # the zero-overlap triplets' rows all marked test
        if r["id"].startswith(("t3-", "t4-")):
            r["split"] = "test"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_pipeline_data(str(manifest), None, None)
    found = first_unsplittable(dataset, [("CT", "Lung", "COVID")], ["related", "zero-overlap"])
    assert found is not None and found[1] == "zero-overlap"
    assert "marked split = train" in str(found[2])


def test_checkpoints_fine_tuned_on_other_rows_are_not_kept_under_this_run(tmp_path):
    """A run before this fix trained on the rows marked test too: its checkpoints, kept by name, would
    be reported as trained on the rows this run takes. They are named instead, and so are
    checkpoints fine-tuned with other [train] settings."""
    from matprobe.data.loaders import load_pipeline_data
    from matprobe.pipeline import PipelineConfig, _checkpoints, _training_ids, condition_manifest

    manifest = _manifest_with_split(tmp_path / "data")
    dataset = load_pipeline_data(str(manifest), None, None)
    cfg = PipelineConfig(data_file=str(manifest), target=("CT", "Lung", "COVID"), conditions=("related",),
                         train_seeds=(0,))
    run = tmp_path / "run"
    (run / "checkpoints" / "base").mkdir(parents=True)
    (run / "checkpoints" / "related-s0").mkdir()
    (run / "checkpoints" / "related-s0" / "config.json").write_text("{}")
    ids = {cfg.target: _training_ids(dataset, cfg)}
    # what the earlier run wrote: every row of the Related triplets, the 4 marked test among them
    (run / "data").mkdir()
    everything = {s.id for s in dataset if s.triplet in {("CT", "Lung", "Cancer"), ("X-ray", "Lung", "COVID")}}
    condition_manifest(dataset, everything, cfg.target, run / "data" / "related.jsonl")
    with pytest.raises(PipelineError, match=r"related-s0 \(training rows 16 vs 12\)"):
        _checkpoints(cfg, run, manifest, ids, lambda msg: None, False)
    condition_manifest(dataset, set(ids[cfg.target]["related"]), cfg.target, run / "data" / "related.jsonl")
    assert [ck["n_train"] for ck in _checkpoints(cfg, run, manifest, ids, lambda msg: None, False)] == [12]
    record = json.loads((run / "checkpoints" / "related-s0.training.json").read_text())  # recorded now
    assert record["steps"] == cfg.train_steps and record["n_train"] == 12
    edited = PipelineConfig(**{**cfg.__dict__, "train_steps": cfg.train_steps + 40})
    with pytest.raises(PipelineError, match=rf"steps {cfg.train_steps} vs {cfg.train_steps + 40}"):
        _checkpoints(edited, run, manifest, ids, lambda msg: None, False)
