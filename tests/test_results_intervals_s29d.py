"""results.csv gives every estimated value its interval (a reviewer read MI terms, accuracy and cIoU
as bare values although the README promises intervals): the MI rows carry their MI results file's
ci_low, ci_high, level and bound; accuracy its exact Clopper-Pearson interval of k right of n; cIoU
no interval (the run estimates none) but its n. The six columns `significance` reads stay first and
unchanged, so `significance` reads a run's results.csv, and a user's own table without the new
columns, exactly as before; the report shows each value's interval in its per-run table."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import matprobe as mp
from matprobe.mi.chain import ChainResult
from matprobe.pipeline import RESULTS_COLUMNS, PipelineConfig, _write_results, per_run_results
from matprobe.stats.significance import metrics_in_bits, read_results

TARGET = ("MRI", "Brain", "Cls")
SIX = ["condition", "target", "seed", "item", "metric", "value"]


def _mi_doc(level: float, shift: float) -> dict:
    """An MI results document as `results_json` writes it (chain modality, label): one term
    two-sided, one one-sided (ci_high the entropy limit), with the label's strata given modality."""
    ln2 = math.log(2.0)
    common = {"estimator": "probe", "ci_level": level, "h_upper": ln2, "n": 80, "clipped": False,
              "degenerate": False, "note": "", "flags": []}
    doc = {
        "kind": "matprobe.mi", "format_version": 1, "store": "", "store_fingerprint": "", "layer": "0",
        "pool": "last", "unit": "nats", "factors": ["modality", "label"], "ci_level": level,
        "settings": {"level": level},
        "terms": [
            {**common, "term": "I(Z;modality)", "target": "modality", "given": [], "estimate": 0.41 + shift,
             "ci_low": 0.3371 + shift, "ci_high": 0.4902 + shift, "bound": "two-sided"},
            {**common, "term": "I(Z;label|modality)", "target": "label", "given": ["modality"],
             "estimate": 0.2299 + shift, "ci_low": 0.1187 + shift, "ci_high": ln2, "bound": "lower",
             "flags": ["small-cells"]},
        ],
        "strata": [
            {"target": "label", "given": {"modality": "CT"}, "estimator": "probe", "n": 40, "estimate": 0.1,
             "ci_low": 0.0, "ci_high": 0.25, "h_upper": 0.69, "note": "", "bound": "two-sided"},
            {"target": "label", "given": {"modality": "MRI"}, "estimator": "probe", "n": 40,
             "estimate": 0.3587 + shift, "ci_low": 0.2011 + shift, "ci_high": 0.6819, "h_upper": 0.6730,
             "note": "lower bound", "bound": "lower"},
        ],
        "direct": {},
    }
    ChainResult.from_json(doc)  # a document the pipeline's reader takes
    return doc


def _choice_store(path, correct: np.ndarray):
    n = len(correct)
    modality = np.array(["CT", "MRI"])[np.arange(n) % 2]
    mp.EmbeddingStore.from_arrays(
        path, [f"r{i}" for i in range(n)],
        {"modality": modality, "anatomy": ["Brain"] * n, "task": ["Cls"] * n},
        {("0", "last"): np.random.default_rng(0).standard_normal((n, 2)).astype("float32")},
        answers={"correct": correct}).close()
    return modality


def _checkpoints(tmp_path, level: float = 0.95):
    """Related and Unrelated, 3 seeds each: stores with known right answers and MI files."""
    rng = np.random.default_rng(7)
    cks, truth = [], {}
    for cond in ("related", "unrelated"):
        for seed in range(3):
            correct = rng.integers(0, 2, 60)
            correct[:4] = -1  # unanswered rows are not counted
            modality = _choice_store(tmp_path / f"{cond}{seed}.h5", correct)
            doc = _mi_doc(level, shift=0.01 * seed + (0.05 if cond == "related" else 0.0))
            (tmp_path / f"{cond}{seed}.json").write_text(json.dumps(doc))
            sel = (modality == "MRI") & (correct >= 0)
            truth[(cond, seed)] = (int(correct[sel].sum()), int(sel.sum()), doc)
            cks.append({"store": str(tmp_path / f"{cond}{seed}.h5"), "condition": cond, "seed": seed,
                        "target": TARGET, "main_mi": str(tmp_path / f"{cond}{seed}.json"), "name": f"{cond}{seed}"})
    return cks, truth


def _row(frame, cond, seed, metric):
    sub = frame[(frame.condition == cond.capitalize()) & (frame.seed.astype(str) == str(seed))
                & (frame.metric == metric)]
    assert len(sub) == 1, (cond, seed, metric)
    return sub.iloc[0]


def test_columns_keep_the_six_first_then_the_interval():
    assert list(RESULTS_COLUMNS)[:6] == SIX
    assert list(RESULTS_COLUMNS)[6:] == ["ci_low", "ci_high", "ci_level", "bound", "n"]
    assert "empty for cIoU" in RESULTS_COLUMNS["ci_low"]


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_every_row_carries_the_interval_the_run_has(tmp_path, level):
    cks, truth = _checkpoints(tmp_path, level)
    frame = per_run_results(cks, PipelineConfig(target=TARGET))
    assert list(frame.columns) == list(RESULTS_COLUMNS)
    for (cond, seed), (k, n, doc) in truth.items():
        acc = _row(frame, cond, seed, "accuracy")
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert acc.value == k / n
        # the accuracy interval is 95% whatever the MI level; scipy solves the exact interval by root
        # finding (its ends differ from the beta quantiles by up to 5e-13), the project's are the quantiles
        assert (acc.ci_level, acc.bound, acc.n) == (0.95, "two-sided", n)
        assert (acc.ci_low, acc.ci_high) == pytest.approx((ci.low, ci.high), rel=0, abs=1e-12)
        assert (acc.ci_low, acc.ci_high) == (stats.beta.ppf((1 - 0.95) / 2, k, n - k + 1),
                                        stats.beta.ppf(1 - (1 - 0.95) / 2, k + 1, n - k))
        for t in doc["terms"]:  # the MI file's own numbers, level and bound
            r = _row(frame, cond, seed, f"{t['term']} nats")
            assert (r.value, r.ci_low, r.ci_high, r.ci_level, r.bound, r.n) == \
                (t["estimate"], t["ci_low"], t["ci_high"], level, t["bound"], t["n"])
        one_sided = _row(frame, cond, seed, "I(Z;label|modality) nats")
        assert one_sided.bound == "lower" and one_sided.ci_high == math.log(2.0)  # the entropy limit
        s = doc["strata"][1]  # the MRI stratum: the held-out target's
        r = _row(frame, cond, seed, "I(Z;Y|target) nats")
        assert (r.value, r.ci_low, r.ci_high, r.ci_level, r.bound, r.n) == \
            (s["estimate"], s["ci_low"], s["ci_high"], level, "lower", 40)


def test_segmentation_rows(tmp_path):
    """cIoU: no interval (the run estimates none), its n the segmentation items; item rows: none."""
    n = 8
    inter = np.array([5, 0, 3, 9, 2, 7, 1, 4])
    union = np.array([10, 6, 3, 12, 8, 7, 5, 9])
    mp.EmbeddingStore.from_arrays(
        tmp_path / "seg.h5", [f"r{i}" for i in range(n)],
        {"modality": ["MRI"] * n, "anatomy": ["Brain"] * n, "task": ["Cls"] * n},
        {("0", "last"): np.zeros((n, 2), dtype="float32") + np.arange(n)[:, None]},
        answers={"correct": np.ones(n, dtype=int), "intersection": inter, "union": union}).close()
    (tmp_path / "mi.json").write_text(json.dumps(_mi_doc(0.95, 0.0)))
    frame = per_run_results([{"store": str(tmp_path / "seg.h5"), "condition": "related", "seed": 0,
                              "target": TARGET, "main_mi": str(tmp_path / "mi.json")}], PipelineConfig(target=TARGET))
    ciou = frame[frame.metric == "cIoU"].iloc[0]
    assert ciou.value == inter.sum() / union.sum() and ciou.n == n
    assert np.isnan(ciou.ci_low) and np.isnan(ciou.ci_high) and np.isnan(ciou.ci_level) and ciou.bound == ""
    items = frame[frame.item != ""]
    assert len(items) == 2 * n and items[["ci_low", "ci_high", "ci_level"]].isna().all(axis=None)
    assert items.n.isna().all() and (items.bound == "").all()


def test_results_csv_on_disk_and_significance_reads_it_as_before(tmp_path):
    cks, truth = _checkpoints(tmp_path)
    cfg = PipelineConfig(target=TARGET)
    run = tmp_path / "run"
    run.mkdir()
    table, _ = _write_results(cfg, run, cks)
    text = (run / "results.csv").read_text().splitlines()
    assert text[0] == ",".join(RESULTS_COLUMNS)
    k, n, _doc = truth[("related", 0)]
    ci = stats.binomtest(k, n).proportion_ci(method="exact")
    disk = pd.read_csv(run / "results.csv")
    acc = _row(disk, "related", 0, "accuracy")
    assert (acc.ci_low, acc.ci_high) == pytest.approx((ci.low, ci.high), rel=0, abs=1e-12)
    for t in _doc["terms"]:  # the MI file's numbers, as written
        r = _row(disk, "related", 0, f"{t['term']} nats")
        assert (r.ci_low, r.ci_high, r.ci_level, r.bound) == pytest.approx((t["ci_low"], t["ci_high"], 0.95, t["bound"]))
    assert str(int(acc.n)) == str(n) and f",{n}" in next(line for line in text if ",accuracy," in line)
    # significance on the run's results.csv and on the same table cut to the six columns (a user's
    # own per-run table): the same comparisons to the last digit
    own = tmp_path / "own.csv"
    disk[SIX].to_csv(own, index=False)
    full, cut = mp.significance(run / "results.csv"), mp.significance(own)
    pd.testing.assert_frame_equal(full.results, cut.results)
    assert table is not None
    pd.testing.assert_frame_equal(table.reset_index(drop=True)[full.results.columns],
                                  full.results.reset_index(drop=True), check_dtype=False)
    validated = read_results(run / "results.csv")
    assert list(validated.columns[:6]) == SIX


def test_bits_scale_the_interval_with_the_value(tmp_path):
    cks, _ = _checkpoints(tmp_path)
    frame = per_run_results(cks, PipelineConfig(target=TARGET))
    bits, _ = metrics_in_bits(frame)
    mi = frame.metric.str.endswith(" nats")
    for end in ("value", "ci_low", "ci_high"):
        np.testing.assert_array_equal(bits.loc[mi, end].astype(float), frame.loc[mi, end].astype(float) / math.log(2))
        np.testing.assert_array_equal(bits.loc[~mi, end].astype(float), frame.loc[~mi, end].astype(float))


def test_report_per_run_table_shows_the_interval():
    from matprobe.report.render import _results_shown

    results = pd.DataFrame([
        {"condition": "Related", "target": "MRI,Brain,Cls", "seed": 0, "item": np.nan, "metric": "accuracy",
         "value": 0.5, "ci_low": 0.3, "ci_high": 0.7, "ci_level": 0.95, "bound": "two-sided", "n": 20.0},
        {"condition": "Related", "target": "MRI,Brain,Cls", "seed": 0, "item": np.nan, "metric": "I(Z;M) nats",
         "value": 0.4, "ci_low": 0.2, "ci_high": 0.69, "ci_level": 0.9, "bound": "lower", "n": 80.0},
        {"condition": "Related", "target": "MRI,Brain,Cls", "seed": 0, "item": np.nan, "metric": "cIoU",
         "value": 0.4, "ci_low": np.nan, "ci_high": np.nan, "ci_level": np.nan, "bound": np.nan, "n": 8.0},
    ])
    shown = _results_shown(results)
    assert list(shown.columns) == SIX + ["value interval", "interval level", "n"]
    assert list(shown["value interval"]) == ["[0.300, 0.700]", "≥ 0.200 (one-sided)", ""]
    assert list(shown["interval level"]) == ["95%", "90%", ""]
    assert list(shown["n"]) == ["20", "80", "8"]
    old = results[SIX]  # a run's results.csv written before the interval columns: as it is
    pd.testing.assert_frame_equal(_results_shown(old), old)
