"""A user study's findings on the report's wording (its scratch /tmp/s29/own, FINDINGS.md F2, F3, F8):
chance read "1/4 = 0.250" on 20 four-option and 10 three-option held-out items (mean(1/k) = 0.278);
"p = 0.0489, Holm-adjusted 0.293 (95% CI of Δ [-0.428, -0.005]): not significant" gave an unadjusted
interval excluding 0 beside a verdict taken after Holm's adjustment; "Z determines each of them" was
said of estimates whose one-sided lower ends reached down to 63% of the cap; and "Both means are
within 10% of the cap, but 5 of the 6 checkpoints are" was garbled.

The runs are the committed demo's files (`test_report.make_run`: no stores), edited where a finding
needs it; the expected numbers are computed here from what the test put in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from matprobe.report.design import chance_of, store_record
from matprobe.report.render import _most_encoded_line, _some_below_cap, findings, load_run, summary_lines
from matprobe.store import EmbeddingStore
from test_report import make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("wording") / "run", extra_layer=False)


def _line(data, start: str) -> str:
    return next(x for x in summary_lines(data, findings(data)) if x.startswith(start))


# ------------------------------------------------------------------------------ F2: chance
# the study's held-out items: 20 with four options, 10 with three, and two three-option items left
# unanswered (not scored: the accuracy is not a share of them, so neither is chance)
TARGET_K = np.array([4] * 20 + [3] * 10 + [3, 3])
TARGET_PRED = np.array([i % 3 for i in range(30)] + [-1, -1])
SCORED = TARGET_PRED >= 0


def _store(path: Path, target, ks=TARGET_K, pred=TARGET_PRED) -> str:
    """A store whose held-out target's items offer `ks` options, beside 6 two-option items elsewhere."""
    n_t, n_o = len(ks), 6
    n = n_t + n_o
    EmbeddingStore.from_arrays(
        path, [f"i{i}" for i in range(n)],
        {"modality": [target[0]] * n_t + ["CT"] * n_o, "anatomy": [target[1]] * n,
         "task": [target[2]] * n_t + ["Other"] * n_o, "answer_index": [0] * n,
         "n_options": list(ks) + [2] * n_o},
        {("0", "last"): np.zeros((n, 2), np.float32)},
        answers={"pred": np.array(list(pred) + [0, 1] * 3), "probs": np.full((n, 4), 0.25, np.float32)}).close()
    return str(path)


def _with_stores(run: Path, tmp_path: Path, ks_for) -> Path:
    """A copy of `run` whose checkpoints have stores, `ks_for(name)` options each: one store file per
    (held-out target, options), which run.json points the checkpoints that share them at."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    doc = json.loads((copy / "run.json").read_text())
    (copy / "stores").mkdir(exist_ok=True)
    made: dict = {}
    for ck in doc["checkpoints"]:
        target, ks = ck.get("target") or doc["target"], ks_for(ck["name"])
        key = (tuple(target), tuple(int(k) for k in ks))
        if key not in made:
            made[key] = f"stores/s{len(made)}.h5"
            _store(copy / made[key], target, ks)
        ck["store"] = made[key]
    (copy / "run.json").write_text(json.dumps(doc))
    return copy


def test_chance_is_the_mean_of_one_over_the_options_of_the_scored_items(run_dir, tmp_path):
    expected = float(np.mean(1.0 / TARGET_K[SCORED]))
    assert round(expected, 3) == 0.278  # the study's 20 four-option and 10 three-option items
    run = _with_stores(run_dir, tmp_path, lambda name: TARGET_K)
    data = load_run(run)
    assert data.options == dict.fromkeys([ck.name for ck in data.summary.checkpoints], {4: 20, 3: 10})
    assert chance_of(data.options["related-s0"]) == pytest.approx(expected, abs=1e-12)
    line = _line(data, "**Is the Related")
    assert (f"(chance {expected:.3f}, the mean of 1/options over the 30 items, 20 with 4 options and 10 with 3; "
            "3 seeds each, paired by seed)") in line
    assert "1/4" not in line


def test_run_json_carries_the_per_item_option_counts_the_report_reads(run_dir, tmp_path):
    """What `run` writes into each checkpoint's run.json entry (design.store_record) holds the counts,
    so a run without its stores says the same chance."""
    target = ["MRI", "Brain", "Exposure"]
    rec = store_record(_store(tmp_path / "one.h5", target), target)["target_answers"]
    assert rec["option_counts"] == {"3": 10, "4": 20} and rec["n_options"] == 4
    copy = _with_stores(run_dir, tmp_path, lambda name: TARGET_K)
    doc = json.loads((copy / "run.json").read_text())
    for ck in doc["checkpoints"]:
        ck["target_answers"] = store_record(copy / ck["store"], ck["target"])["target_answers"]
    for store in (copy / "stores").glob("*.h5"):
        store.unlink()
    (copy / "run.json").write_text(json.dumps(doc))
    data = load_run(copy)
    expected = float(np.mean(1.0 / TARGET_K[SCORED]))
    assert f"(chance {expected:.3f}, the mean of 1/options over the 30 items, 20 with 4 options" in _line(
        data, "**Is the Related")


def test_one_count_of_options_keeps_the_one_over_k_wording(run_dir, tmp_path):
    threes = np.full(len(TARGET_K), 3)
    data = load_run(_with_stores(run_dir, tmp_path, lambda name: threes))
    # design.target_options: an int where every item offers that many
    assert data.options == dict.fromkeys([ck.name for ck in data.summary.checkpoints], 3)
    assert f"(chance 1/3 = {1 / 3:.3f}; 3 seeds each" in _line(data, "**Is the Related")


def test_chance_is_read_on_the_checkpoints_whose_accuracy_is_compared(run_dir, tmp_path):
    """The demo's segmentation checkpoints (cIoU, no accuracy) do not enter the accuracy's chance."""
    fours = np.full(len(TARGET_K), 4)
    data = load_run(_with_stores(run_dir, tmp_path, lambda n: TARGET_K if n.startswith("mri-") else fours))
    assert "(chance 1/4 = 0.250; 3 seeds each" in _line(data, "**Is the Related")


def test_checkpoints_whose_items_differ_say_chance_as_a_range(run_dir, tmp_path):
    fours = np.full(len(TARGET_K), 4)
    data = load_run(_with_stores(run_dir, tmp_path, lambda n: TARGET_K if n == "related-s0" else fours))
    lo, hi = 0.25, float(np.mean(1.0 / TARGET_K[SCORED]))
    assert (f"(chance {lo:.3f}–{hi:.3f} by checkpoint, each the mean of 1/options over its held-out target's "
            "items; 3 seeds each") in _line(data, "**Is the Related")


# ------------------------------------------------------------------------------ F3: the verdict's adjustment
def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment, written out: the i-th smallest p times (m - i), running max, at most 1."""
    order = np.argsort(p)
    out = np.empty_like(p)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, (len(p) - i) * p[j])
        out[j] = min(1.0, running)
    return out


def _set_accuracy_p(data, p_acc: float, family: str = "all") -> dict:
    sig = data.significance
    acc = sig["metric"] == "accuracy"
    sig.loc[acc, "p"] = p_acc
    p = sig["p"].to_numpy(dtype=float)
    sig["p_holm"] = _holm(p) if family == "all" else p  # per metric: one test each, nothing to adjust
    return sig[acc].iloc[0].to_dict()


def _head(r: dict) -> str:
    return (f"Paired t-test t({r['df']:.0f}) = {r['t']:.2f}, p = {r['p']:.3g} and 95% CI of Δ "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}], both unadjusted; Holm-adjusted over the 7 tests of the "
            f"Significance section, p = {r['p_holm']:.3g}. ")


def test_an_unadjusted_p_below_alpha_beside_holm_s_verdict_says_which_is_which(run_dir):
    data = load_run(run_dir)
    r = _set_accuracy_p(data, 0.0489)
    assert len(data.significance) == 7 and r["p_holm"] == pytest.approx(7 * 0.0489)  # the smallest of 7
    line = _line(data, "**Is the Related")
    assert (_head(r) + "Not significant at α = 0.05 after Holm's adjustment; taken alone, unadjusted, this test "
            "would be significant (its p below 0.05, its interval excluding 0). The exact sign-flip test") in line
    assert "): not significant" not in line  # the study's sentence


def test_the_verdict_after_holm_and_where_both_agree(run_dir):
    data = load_run(run_dir)
    r = _set_accuracy_p(data, 0.001)
    assert _head(r) + "Significant at α = 0.05 after Holm's adjustment." in _line(data, "**Is the Related")
    data = load_run(run_dir)
    r = _set_accuracy_p(data, 0.3)
    assert r["p_holm"] >= 0.3
    assert _head(r) + "Not significant at α = 0.05, unadjusted or after Holm's adjustment." in _line(
        data, "**Is the Related")


def test_a_per_metric_holm_family_is_said(run_dir):
    """`matprobe significance --family metric`: the demo's accuracy is the only test of its metric."""
    data = load_run(run_dir)
    r = _set_accuracy_p(data, 0.0489, family="metric")
    assert findings(data)["significance"][0]["holm_family"] == 1
    assert (f"Paired t-test t({r['df']:.0f}) = {r['t']:.2f}, p = 0.0489 (95% CI of Δ [{r['ci_low']:.3f}, "
            f"{r['ci_high']:.3f}]). Significant at α = 0.05 (the Significance section's only accuracy test, so "
            "Holm's adjustment leaves p as it is).") in _line(data, "**Is the Related")


# ------------------------------------------------------------------------------ F8a: "Z determines"
def _factors(data) -> list[str]:
    return [t for t in dict.fromkeys(data.terms["term"]) if "label" not in t]


def test_z_determines_a_factor_only_where_every_lower_end_is_near_the_cap(run_dir):
    data = load_run(run_dir)
    t = data.terms
    modality, anatomy, task = _factors(data)
    t.loc[:, "estimate"] = t["h_upper"]  # every point estimate at its cap
    t.loc[t["term"] == modality, "ci_low"] = 0.95 * t["h_upper"]  # and modality's lower ends near it
    names = list(dict.fromkeys(t.loc[t["main"], "checkpoint"]))
    for i, name in enumerate(names):
        at = t["main"] & (t["checkpoint"] == name)
        t.loc[at & (t["term"] == anatomy), "ci_low"] = (0.50 + 0.01 * i) * t["h_upper"]
        t.loc[at & (t["term"] == task), "ci_low"] = (0.30 if name == "unrelated-s1" else 0.6) * t["h_upper"]
    main = t[t["main"]]

    def lowest(term: str) -> str:
        rows = main[main["term"] == term]
        share = (rows["ci_low"] / rows["h_upper"]).to_numpy()
        r = rows.iloc[int(np.argmin(share))]
        return f"{share.min():.0%} of its cap ({r['ci_low']:.3f} of {r['h_upper']:.3f} nats, {r['checkpoint']})"

    assert lowest(anatomy).startswith("50% ") and lowest(task).startswith("30% ")
    line = _most_encoded_line(findings(data)["most_encoded"])
    assert line.startswith(f"**Which MAT factor is most encoded?** {modality}, ")
    assert (f"Its point estimate sits within 10% of its entropy cap, as {anatomy} and {task} do (means over the "
            "checkpoints), but near its cap an estimate is one-sided: only its interval's lower end is a statement. "
            f"Z determines {modality}: every checkpoint's lower end for it is within 10% of the cap too. For "
            f"{anatomy} the lower ends go down to {lowest(anatomy)}; for {task} to {lowest(task)}, so these "
            "estimates do not show that Z determines them. Near their caps the point estimates rank the terms' "
            "entropies, not how well Z encodes them.") in line
    assert "Z determines each of them" not in line


def test_the_leader_alone_at_its_cap_with_its_lower_ends_far_below(run_dir):
    data = load_run(run_dir)
    t = data.terms
    modality = _factors(data)[0]
    m = t["term"] == modality
    t.loc[~m, "estimate"] = np.minimum(t["estimate"], 0.8 * t["h_upper"])  # the others below their caps
    t.loc[m, "estimate"] = t["h_upper"]
    t.loc[m, "ci_low"] = 0.63 * t["h_upper"]
    t.loc[m & (t["checkpoint"] == "related-s2"), "ci_low"] = 0.62 * t["h_upper"]
    main = t[t["main"] & m]
    r = main[main["checkpoint"] == "related-s2"].iloc[0]
    line = _most_encoded_line(findings(data)["most_encoded"])
    assert (f"Its point estimate sits within 10% of its entropy cap (means over the checkpoints), but near its "
            f"cap an estimate is one-sided: only its interval's lower end is a statement. For {modality} the lower "
            f"ends go down to 62% of its cap ({r['ci_low']:.3f} of {r['h_upper']:.3f} nats, related-s2), so this "
            "estimate does not show that Z determines it. Its point estimate is about its entropy, not a measure "
            "of how well Z encodes it.") in line


def test_with_every_lower_end_near_the_cap_z_determines_the_factors(run_dir):
    data = load_run(run_dir)
    t = data.terms
    modality, anatomy, task = _factors(data)
    t.loc[:, "estimate"] = t["h_upper"]
    t.loc[:, "ci_low"] = 0.91 * t["h_upper"]
    t.loc[t["term"] == anatomy, "estimate"] = 0.5 * t["h_upper"]  # below its cap: not among them
    line = _most_encoded_line(findings(data)["most_encoded"])
    assert (f"It sits within 10% of its entropy cap, as {task} does: Z determines each of them (the question "
            "text may name them), so this ranks their entropies, not how well Z encodes them.") in line


# ------------------------------------------------------------------------------ F8b: "but only k of n"
def test_some_below_cap_says_only_k_of_n_individually():
    assert _some_below_cap([("a", 0.95, 1.0), ("b", 0.81, 1.0), ("c", 0.99, 1.0)], "checkpoints") == (
        "but only 2 of the 3 checkpoints are individually (the lowest, b, at 81% of it)")
    assert _some_below_cap([("a", 0.95, 1.0), ("b", 0.5, 1.0)], "checkpoints") == (
        "but only 1 of the 2 checkpoints is individually (the lowest, b, at 50% of it)")
    assert _some_below_cap([("a", 0.89, 1.0), ("b", 0.85, 1.0)], "checkpoints") == (
        "but none of the 2 checkpoints is individually (the lowest, b, at 85% of it)")
    assert _some_below_cap([("a", 0.95, 1.0)], "checkpoints") == ""


def test_the_task_term_s_at_cap_sentence_reads_as_the_study_s_numbers(run_dir):
    data = load_run(run_dir)
    t = data.terms
    task = _factors(data)[2]
    at = t["term"] == task
    t.loc[at, "estimate"] = 0.97 * t["h_upper"]
    low = at & (t["checkpoint"] == "unrelated-s0")
    t.loc[low, "estimate"] = 0.81 * t["h_upper"]
    # the summary's means are the paired test's (over results.csv's runs): the same edit there
    # (unrelated-s0 is the first target's Unrelated seed 0; every run's cap is the same here)
    r = data.results
    cap = float(t.loc[at, "h_upper"].iloc[0])
    rows = r["metric"] == f"{task} nats"
    r.loc[rows, "value"] = 0.97 * cap
    first = r.loc[rows, "target"].iloc[0] if "segmentation" not in str(r.loc[rows, "target"].iloc[0]).lower() else \
        next(x for x in r.loc[rows, "target"] if "segmentation" not in str(x).lower())
    r.loc[rows & (r["condition"] == "Unrelated") & (r["target"] == first) & (r["seed"] == 0), "value"] = 0.81 * cap
    n = t.loc[at & t["main"], "checkpoint"].nunique()
    assert n == 12
    line = _line(data, "**Did Related training raise I(Z;T|M,A)")
    assert (f"Both means are within 10% of the cap, but only {n - 1} of the {n} checkpoints are individually (the "
            "lowest, unrelated-s0, at 81% of it): near the cap this term has little room to separate the "
            "conditions.") in line
