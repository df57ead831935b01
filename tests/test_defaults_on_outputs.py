"""Defaults that work on what matprobe writes (issue 20, item 3).

- `significance` / `mp.significance` with no options on a results table with two targets whose
  accuracy and cIoU are each measured on one target (the committed demo's results.csv): those
  metrics are paired by seed, the others by target, said in a note; p-values from scipy.
- `compare` / `relate` on stores of the same items whose split column differs (one condition's
  manifest marks an item train, another's unused); an item that differs is still refused.
- One layer/pool resolution for every entry point: which (layer, pool) each one reads is
  recorded by wrapping `EmbeddingStore.read`, on a store holding layers 8, 16 and final.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

import matprobe as mp
from matprobe.cli import app
from matprobe.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]
DEMO_RESULTS = ROOT / "reports" / "demo" / "results.csv"


# ------------------------------------------------------------------ significance defaults
def _expected(frame: pd.DataFrame, metric: str, unit: str) -> float:
    """The paired t-test p of Related vs Unrelated, computed here with scipy."""
    if metric == "cIoU":  # a ratio of sums per run (the item rows), as Table IX's cIoU
        items = frame[frame.metric.isin(["intersection", "union"])]
        sums = items.pivot_table(index=["condition", "target", "seed"], columns="metric", values="value",
                                 aggfunc="sum")
        sub = (sums["intersection"] / sums["union"]).rename("value").reset_index()
    else:
        sub = frame[frame.metric == metric]
    keys = ["target"] if unit == "target" else ["target", "seed"]
    wide = sub.groupby(["condition", *keys])["value"].mean().unstack("condition")
    return float(stats.ttest_rel(wide["Related"], wide["Unrelated"]).pvalue)


def test_significance_without_options_on_the_demo_results():
    frame = pd.read_csv(DEMO_RESULTS, keep_default_na=False)
    frame["value"] = frame["value"].astype(float)
    res = CliRunner().invoke(app, ["significance", str(DEMO_RESULTS), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert "accuracy, cIoU: measured on one target only, so paired by seed" in res.output
    api = mp.significance(DEMO_RESULTS).frame().set_index("metric")
    assert set(api.index) == {"accuracy", "cIoU", "I(Z;Y|target) nats"} | {
        m for m in frame.metric if m.startswith("I(Z;")}
    for metric, row in api.iterrows():
        one_target = frame[frame.metric.isin([metric] if metric != "cIoU" else ["union"])]["target"].nunique() == 1
        unit = "seed" if one_target else "target"
        assert row["unit"] == unit, metric
        assert row["n_pairs"] == (3 if unit == "seed" else 2), metric
        assert row["p"] == pytest.approx(_expected(frame, metric, unit), rel=1e-9), metric


def test_significance_items_on_run_results_tests_the_metrics_with_item_rows(tmp_path):
    """`--items` on a run's results: it tested every metric, refused accuracy (no item rows: `run` writes
    them for segmentation items only) and told to "use --unit seed". It tests the metrics that have item
    rows (cIoU here, a ratio of the per-item sums: its Δ equals pandas'); on a table without any it
    says --items has nothing to resample; a --metric without item rows is named in --items' words."""
    frame = pd.read_csv(DEMO_RESULTS, keep_default_na=False)
    frame["value"] = frame["value"].astype(float)
    res = mp.significance(DEMO_RESULTS, items=True)
    items = res.items
    assert list(items["metric"]) == ["cIoU"]
    parts = frame[frame.metric.isin(["intersection", "union"])]
    sums = parts.groupby(["condition", "metric"])["value"].sum().unstack("metric")
    ratio = sums["intersection"] / sums["union"]
    assert items["estimate"].iloc[0] == pytest.approx(ratio["Related"] - ratio["Unrelated"], abs=1e-12)
    assert items["ci_low"].iloc[0] < items["estimate"].iloc[0] < items["ci_high"].iloc[0]
    no_items = tmp_path / "results.csv"
    frame[frame["item"] == ""].to_csv(no_items, index=False)
    out = CliRunner().invoke(app, ["significance", str(no_items), "--items"])
    said = " ".join(out.output.split())
    assert out.exit_code == 2 and "--items: no item-level rows" in said and "drop --items" in said, said
    out = CliRunner().invoke(app, ["significance", str(DEMO_RESULTS), "--items", "--metric", "accuracy"])
    said = " ".join(out.output.split())
    assert out.exit_code == 2 and ("--items: metric 'accuracy' has no item-level rows (the bootstrap and McNemar "
                                   "need one row per item); those with them: cIoU; drop --items, or name those with "
                                   "--metric") in said, said


def test_significance_with_too_few_pairs_is_one_line(tmp_path):
    path = tmp_path / "results.csv"
    pd.DataFrame({"condition": ["Related", "Unrelated"], "target": ["CT,Lung,X"] * 2, "seed": [0, 0],
                  "metric": ["accuracy"] * 2, "value": [0.5, 0.4]}).to_csv(path, index=False)
    res = CliRunner().invoke(app, ["significance", str(path)])
    assert res.exit_code == 2
    assert res.output.count("error:") == 1 and "two seeds per condition" in res.output


# ------------------------------------------------------------------ compare/relate across splits
def _store(path, split, subset="s1", seed=0, n=80):
    rng = np.random.default_rng(seed)
    mods = np.array(["CT", "MRI"])[np.arange(n) % 2]
    anas = np.array(["Brain", "Chest"])[(np.arange(n) // 2) % 2]
    tasks = np.array(["Exposure", "Quality"])[(np.arange(n) // 4) % 2]
    labels = np.array(["a", "b"])[(np.arange(n) // 8) % 2]
    codes = np.stack([mods == "MRI", anas == "Chest", tasks == "Quality", labels == "b"], 1).astype(float)
    z = codes + rng.normal(scale=0.5, size=codes.shape)
    pred = rng.integers(0, 2, n)
    EmbeddingStore.from_arrays(
        path, [f"x{i}" for i in range(n)],
        {"M": mods, "A": anas, "T": tasks, "label": labels, "split": split, "subset": [subset] * n},
        {("3", "last"): z.astype(np.float32)},
        answers={"pred": pred, "correct": (pred == (labels == "b")).astype(np.int8),
                 "probs": np.full((n, 2), 0.5, np.float32)}).close()
    return path


def test_compare_and_relate_pair_stores_whose_split_differs(tmp_path):
    n = 80
    related = _store(tmp_path / "related.h5", np.where(np.arange(n) < 40, "train", "test"))
    unrelated = _store(tmp_path / "unrelated.h5", np.where(np.arange(n) < 40, "unused", "test"), seed=1)
    other = _store(tmp_path / "other.h5", np.where(np.arange(n) < 40, "train", "test"), subset="s2")
    runner = CliRunner()
    fast = ["--estimator", "ksg", "--seeds", "1", "--folds", "2", "--pca", "0"]
    res = runner.invoke(app, ["compare", str(related), str(unrelated), "--term", "T|M,A", "--n-boot", "100",
                              "--out", str(tmp_path / "cmp.json"), *fast[:6]])
    assert res.exit_code == 0, res.output
    comp = json.loads((tmp_path / "cmp.json").read_text())
    assert comp["difference"]["n"] == n  # every item paired
    assert (comp["side_a"]["store"], comp["side_b"]["store"]) == (str(related), str(unrelated))
    res = runner.invoke(app, ["relate", str(related), str(unrelated), "--min-stratum", "5", *fast[:4], "--pca", "0"])
    assert res.exit_code == 0, res.output
    # an item that is not the same (here its subset differs) is still refused, in one line
    res = runner.invoke(app, ["compare", str(related), str(other), *fast[:6]])
    assert res.exit_code == 2 and res.output.count("error:") == 1
    assert "different records for 80 shared sample(s)" in res.output


# ------------------------------------------------------------------ one layer resolution
@pytest.fixture()
def layered(tmp_path):
    rng = np.random.default_rng(0)
    n = 64
    lab = {"M": np.array(["CT", "MRI"])[np.arange(n) % 2], "A": np.array(["Brain", "Chest"])[(np.arange(n) // 2) % 2],
           "T": np.array(["Exposure", "Quality"])[(np.arange(n) // 4) % 2],
           "label": np.array(["a", "b"])[(np.arange(n) // 8) % 2]}
    feats = {(lay, pool): rng.normal(size=(n, 4)).astype(np.float32)
             for lay in ("8", "16", "final") for pool in ("image", "last")}
    pred = rng.integers(0, 2, n)
    ans = {"pred": pred, "correct": (pred == 1).astype(np.int8), "probs": np.full((n, 2), 0.5, np.float32)}
    a = tmp_path / "a.h5"
    b = tmp_path / "b.h5"
    EmbeddingStore.from_arrays(a, [f"x{i}" for i in range(n)], lab, feats, answers=ans).close()
    EmbeddingStore.from_arrays(b, [f"x{i}" for i in range(n)], lab, feats, answers=ans).close()
    return a, b


class _Read(Exception):
    pass


@pytest.fixture()
def reads(monkeypatch):
    """Every (layer, pool) an entry point reads; the first read stops it (no estimate needed)."""
    seen = []

    def read(self, layer, pool, rows=None):
        seen.append((str(layer), str(pool)))
        raise _Read()

    monkeypatch.setattr(EmbeddingStore, "read", read)
    return seen


def _first_read(reads, fn) -> tuple[str, str]:
    reads.clear()
    try:
        fn()
    except _Read:
        pass
    assert reads, "nothing was read"
    return reads[0]


def test_every_entry_point_reads_the_same_default_layer(layered, reads, tmp_path):
    from matprobe.mi.compare import compare_stores
    from matprobe.mi.sweep import run_sweep
    from matprobe.theory.check import estimate_target_term
    from matprobe.theory.relate import relate

    a, b = layered
    runner = CliRunner()
    want = ("16", "last")  # the last decoder block stored (what -1 names), pool "last"
    assert _first_read(reads, lambda: mp.mi(str(a))) == want
    assert _first_read(reads, lambda: runner.invoke(app, ["mi", str(a)], catch_exceptions=False)) == want
    assert _first_read(reads, lambda: compare_stores(a, b)) == want
    assert _first_read(reads, lambda: relate([a, b], min_stratum=2)) == want
    assert _first_read(reads, lambda: run_sweep([a], tmp_path / "s.csv", layers="-1", pools="last")) == want
    mi_doc = {"layer": "-1", "pool": None, "terms": [], "settings": {}}
    assert _first_read(reads, lambda: estimate_target_term(a, mi_doc, "label")) == want


@pytest.mark.parametrize("layer, expected", [("-1", "16"), ("-2", "8"), ("final", "final"), ("8", "8")])
def test_negative_and_named_layers_everywhere(layered, reads, tmp_path, layer, expected):
    from matprobe.mi.compare import compare_stores
    from matprobe.theory.relate import relate

    a, b = layered
    runner = CliRunner()
    assert _first_read(reads, lambda: mp.mi(str(a), layer=layer)) == (expected, "last")
    assert _first_read(reads, lambda: runner.invoke(app, ["mi", str(a), "--layer", layer, "--pool", "image"],
                                                    catch_exceptions=False)) == (expected, "image")
    assert _first_read(reads, lambda: compare_stores(a, b, layer=layer)) == (expected, "last")
    assert _first_read(reads, lambda: relate([a, b], layer=layer, min_stratum=2)) == (expected, "last")


def test_negative_layers_count_from_the_models_last_block(tmp_path):
    from matprobe.store import resolve_layer

    # with the model's block count recorded, -1 is its last block, stored or not
    assert resolve_layer("-1", {"8", "31"}, {"num_decoder_layers": 32}) == "31"
    assert resolve_layer(None, {"8", "31", "final"}, {"num_decoder_layers": 32}) == "31"
    assert resolve_layer(None, {"final", "embed"}) == "final"
    with pytest.raises(Exception, match=r"layer '-1' \(block 31 of the model's 32\) is not stored; stored layers: 8, "
                                        r"16; pick one of those"):
        resolve_layer("-1", {"8", "16"}, {"num_decoder_layers": 32})
    # past the model's depth: said as `extract` says it (a study's -8 on a 7-block model read "not stored")
    with pytest.raises(Exception, match=r"index -33 is out of range for the model's 32-block decoder \(-32..31\); "
                                        r"stored layers: 8, 16"):
        resolve_layer("-33", {"8", "16"}, {"num_decoder_layers": 32})
    with pytest.raises(Exception, match=r"layer '7' is not stored; stored layers: 8, 16"):
        resolve_layer("7", {"8", "16"}, {"num_decoder_layers": 32})


def test_a_missing_layer_is_one_line(layered):
    a, _ = layered
    res = CliRunner().invoke(app, ["mi", str(a), "--layer", "-4"])
    assert res.exit_code == 2 and res.output.count("error:") == 1
    assert "layer '-4' is not stored; stored layers: 8, 16, final" in res.output
