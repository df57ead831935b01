"""A README-only audit ran a pipeline with `[run] portable_numerics = true`, then `matprobe mi` on
one of its stores with the run's [mi] settings: I(Z;M) 0.8942 [small-cells] against the run's
0.8992 [misspecified-linear, small-cells]. The run computes in a process started with the portable
settings (matprobe.numerics), which `mi` had no way to ask for. `mi --portable-numerics` (and
`sweep --portable-numerics`) now compute as such a run does, so they reproduce its MI files to the
bit."""

from __future__ import annotations

import json

import pytest

from matprobe import numerics

pytestmark = pytest.mark.skipif(not numerics.supported_platform(),
                                reason="portable numerics run in a child process on x86-64 Linux")


def _bits(terms):
    return [(t["term"], t["estimate"], t["ci_low"], t["ci_high"], t["flags"]) for t in terms]


@pytest.fixture(scope="module")
def portable_run(tmp_path_factory):
    """Stores of a four-checkpoint study (the model replaced by fake_extract), then a portable
    pipeline run on them as stores, its MI estimated by the probe."""
    import torch
    from _pytest.monkeypatch import MonkeyPatch

    import matprobe.extract.runner as runner
    from matprobe.pipeline import PipelineConfig, run_pipeline
    from test_study_grid import _no_checkpoint_folders, build_study, fake_extract_factory

    tmp = tmp_path_factory.mktemp("portable")
    torch.set_num_threads(1)
    patch = MonkeyPatch()
    try:
        patch.setattr(runner, "extract", fake_extract_factory({}))
        _no_checkpoint_folders(patch)
        manifest = build_study(tmp / "data", "cls", split=False, label=False, n_per=30)
        cks = [{"name": f"{c}-{s}", "condition": c, "seed": s, "ckpt": str(tmp / "ck" / f"{c}-{s}")}
               for c in ("related", "unrelated") for s in range(2)]
        common = dict(data_file=str(manifest), target=("MRI", "Brain", "Artifact"), mi_folds=2, workers=1,
                      layers="-1")
        first = run_pipeline(PipelineConfig(out=str(tmp / "stores-run"), checkpoints=cks, estimator="ksg",
                                            mi_seeds=1, pca=None, **common))
    finally:
        patch.undo()
    stores = [{**{k: v for k, v in ck.items() if k != "ckpt"}, "store": str(first / "stores" / f"{ck['name']}.h5")}
              for ck in cks]
    run = run_pipeline(PipelineConfig(out=str(tmp / "run"), checkpoints=stores[:2], conditions=("related",),
                                      estimator="probe", mi_seeds=1, pca=None, portable_numerics=True, **common))
    assert json.loads((run / "run.json").read_text())["environment"]["numerics"]["portable"] is True
    return run


def test_mi_portable_numerics_gives_the_bits_of_a_portable_runs_mi(portable_run, tmp_path):
    from typer.testing import CliRunner

    from matprobe.cli import app

    doc = json.loads(next((portable_run / "mi").glob("related-0__*.json")).read_text())
    args = ["mi", doc["store"], "--factors", ",".join(doc["factors"]), "--layer", doc["layer"], "--pool", doc["pool"],
            "--seeds", "1", "--folds", "2", "--pca", "0", "--rare-classes", "merge"]
    res = CliRunner().invoke(app, [*args, "--portable-numerics", "--out", str(tmp_path / "mi.json")])
    assert res.exit_code == 0, res.output
    mine = json.loads((tmp_path / "mi.json").read_text())
    assert _bits(mine["terms"]) == _bits(doc["terms"])
    assert doc["terms"][0]["term"] == "I(Z;modality)" and doc["terms"][0]["estimate"] > 0.01  # bits that say something (0.045 nats)


def test_call_portable_computes_in_a_checked_process_and_raises_its_error():
    assert numerics.call_portable(numerics.started_portable) is True
    assert numerics.call_portable(numerics.portable_problems) == []
    with pytest.raises(ValueError, match="invalid literal for int"):
        numerics.call_portable(int, "x")
