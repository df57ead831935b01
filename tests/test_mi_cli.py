"""`matprobe mi STORE ...`: the chain table, the results JSON, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.mi import chain_terms
from matprobe.mi.groundtruth import chain_task

torch.set_num_threads(1)
runner = CliRunner(env={"COLUMNS": "220"})
NAMES = {"M": ["CT", "MRI"], "A": ["Brain", "Chest", "Lung"], "T": ["cls", "det", "seg"]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from matprobe.store import EmbeddingStore

    task = chain_task((2, 3, 3), d=8, signal_dim=4, separations=(1.0, 1.0, 1.0), seed=4)
    z, f = task.sample(1500, seed=0)
    path = tmp_path_factory.mktemp("mi") / "emb.h5"
    labels = {"modality": [NAMES["M"][v] for v in f["M"]], "anatomy": [NAMES["A"][v] for v in f["A"]],
              "task": [NAMES["T"][v] for v in f["T"]]}
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(1500)], labels, {("0", "last"): z}).close()
    return path, z, f


def test_mi_command_writes_results_matching_python(store, tmp_path):
    path, z, f = store
    out = tmp_path / "mi.json"
    res = runner.invoke(app, ["mi", str(path), "--factors", "M,A,T", "--layer", "0", "--pool", "last",
                              "--estimator", "probe", "--seeds", "1", "--folds", "3", "--pca", "0",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "I(Z;T|M,A)" in res.output and "sum of terms" in res.output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "matprobe.mi" and doc["format_version"] == 1 and doc["unit"] == "nats"
    assert doc["factors"] == ["M", "A", "T"] and doc["layer"] == "0" and doc["pool"] == "last"
    assert [t["term"] for t in doc["terms"]] == ["I(Z;M)", "I(Z;A|M)", "I(Z;T|M,A)"]
    # per-stratum entries of the conditional terms carry the stratum's labels
    givens = [s["given"] for s in doc["strata"] if s["target"] == "T"]
    assert {"M": "CT", "A": "Brain"} in givens and len(givens) == 6
    # the same numbers from Python (store codes follow the sorted vocabulary, as NAMES is)
    py = chain_terms(z, {"M": f["M"], "A": f["A"], "T": f["T"]}, estimators=["probe"], seeds=1, folds=3,
                     pca=None)
    for t, (_, e) in zip(doc["terms"], py.terms["probe"]):
        assert t["estimate"] == pytest.approx(e.value, abs=1e-6)
    assert doc["direct"]["estimate"] == pytest.approx(py.direct["probe"].value, abs=1e-6)


def test_mi_command_bits_are_nats_over_ln2(store, tmp_path):
    path, _, _ = store
    outs = {}
    for flag in ([], ["--bits"]):
        out = tmp_path / f"mi{len(flag)}.json"
        r = runner.invoke(app, ["mi", str(path), "--factors", "M", "--layer", "0", "--seeds", "1",
                                "--folds", "3", "--pca", "0", "--out", str(out), *flag])
        assert r.exit_code == 0, r.output
        outs[len(flag)] = json.loads(out.read_text())
    assert outs[1]["unit"] == "bits"
    assert outs[1]["terms"][0]["estimate"] == pytest.approx(outs[0]["terms"][0]["estimate"] / np.log(2), rel=1e-9)


def test_mi_command_unknown_factor_is_one_line(store):
    path, _, _ = store
    r = runner.invoke(app, ["mi", str(path), "--factors", "M,organ", "--layer", "0"])
    assert r.exit_code == 2
    assert "organ" in r.output and r.output.count("error:") == 1


def test_mi_command_missing_layer_is_one_line(store):
    # (NaN features cannot reach a store: append refuses them; the NaN check is in test_mi.py)
    path, _, _ = store
    r = runner.invoke(app, ["mi", str(path), "--factors", "M", "--layer", "7", "--pool", "last"])
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "'7'" in r.output
