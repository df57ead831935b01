"""The report of a study that is not the demo (the twenty-third session's README-only study: its own
Qwen2-VL checkpoints in [[checkpoints]], its own CSV manifest, a held-out triplet of 4 items).

- The configuration table lists the settings the run used: with the checkpoints given, none of the
  tiny models' fine-tuning settings; with the data read from a manifest, none of the demo data's.
  One line says what was left out and why. The demo's table (fine-tuned here, demo data) is as it was.
- A held-out target of too few items for its accuracy (and its I(Z;Y | target)) to read as a finding
  is named in the design warnings with its count; the committed demo's (48 items each) is not.

Runs are the committed demo's results (tests/test_report.py's `make_run`), with run.json edited as such
a study writes it; only run.json is read here (no figures are drawn), so these tests are fast.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matprobe.report.design import design_warnings
from matprobe.report.render import Doc, _provenance_section, load_run
from matprobe.rundir import resolve_run_path
from test_report import DEMO, make_run

FINE_TUNING = ["train_steps", "train_batch_size", "train_lr", "train_seeds", "train_size", "base_seed"]
DEMO_DATA = ["n_per_triplet", "image_size", "data_seed"]


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "study"))


def _edit(run: Path, fn) -> Path:
    doc = json.loads((run / "run.json").read_text())
    fn(doc)
    (run / "run.json").write_text(json.dumps(doc, indent=2))
    return run


def _given_checkpoints(doc: dict) -> None:
    """run.json as `matprobe run` writes it for [[checkpoints]] and [data] file = "...csv"."""
    doc["config"].update(demo_data=False, data_file="/study/manifest.csv", image_root="/study/images",
                         checkpoints=[{"name": ck["name"], "condition": ck["condition"], "seed": ck["seed"],
                                       "ckpt": f"/study/ckpts/{ck['name']}"} for ck in doc["checkpoints"]])
    doc["train_rows"] = "triplets"
    for ck in doc["checkpoints"]:
        ck.update(trained_here=False, ckpt=f"/study/ckpts/{ck['name']}")
        ck.pop("n_train", None)


def _provenance(run: Path) -> str:
    doc = Doc(run)
    _provenance_section(doc, load_run(run))
    return doc.markdown()


def _settings(md: str) -> list[str]:
    """The setting column of the configuration table."""
    table = md.split("The run's configuration.", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # the header row dropped
    return [row.split(" | ")[0][2:] for row in rows]


def _omitted_line(md: str) -> str | None:
    return next((line for line in md.splitlines() if line.startswith("Not listed")), None)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("given") / "demo", extra_layer=False)


def test_given_checkpoints_and_own_data_list_only_the_settings_used(demo_run, tmp_path):
    run = _edit(_copy(demo_run, tmp_path), _given_checkpoints)
    md = _provenance(run)
    settings = _settings(md)
    config = json.loads((run / "run.json").read_text())["config"]
    assert settings == [k for k in config if k not in {"out", *FINE_TUNING, *DEMO_DATA}]
    assert "checkpoints" in settings and "data_file" in settings and "rendering" in settings
    assert _omitted_line(md) == (
        "Not listed, as this run did not use them: the fine-tuning settings `train_steps`, `train_batch_size`, "
        "`train_lr`, `train_seeds`, `train_size`, `base_seed` (the checkpoints were given in `[[checkpoints]]`, "
        "not fine-tuned here) and the demo data's `n_per_triplet`, `image_size`, `data_seed` (the data is the "
        "manifest `data_file`, not the demo's).")


def test_given_stores_list_no_extraction_settings(demo_run, tmp_path):
    """Every store given as it is ([[checkpoints]] store = ...): a study's report listed `max_pixels null`
    beside stores its user had cut at 50,176 pixels. The settings read only to extract are not listed;
    layers and pools (the stored cells the MI reads) are; one checkpoint extracted here lists them all."""
    extraction = ["extract_batch_size", "dtype", "device", "max_pixels", "rendering"]

    def given_stores(doc):
        _given_checkpoints(doc)
        for ck in doc["checkpoints"]:
            ck.update(ckpt=None, given_store=f"/study/stores/{ck['name']}.h5")

    run = _edit(_copy(demo_run, tmp_path / "a"), given_stores)
    md = _provenance(run)
    config = json.loads((run / "run.json").read_text())["config"]
    assert _settings(md) == [k for k in config if k not in {"out", *FINE_TUNING, *DEMO_DATA, *extraction}]
    assert "layers" in _settings(md) and "pools" in _settings(md)
    assert _omitted_line(md).startswith(
        "Not listed, as this run did not use them: the extraction settings `extract_batch_size`, `dtype`, `device`, "
        "`max_pixels`, `rendering` (every store was given as it is, extracted before this run: each records its "
        "own, `matprobe store info --verbose STORE` lists them) and the fine-tuning settings")

    def one_extracted(doc):
        given_stores(doc)
        doc["checkpoints"][0]["given_store"] = None

    run = _edit(_copy(demo_run, tmp_path / "b"), one_extracted)
    assert "max_pixels" in _settings(_provenance(run))


def test_given_checkpoints_on_the_demo_data_keep_the_demo_data_settings(demo_run, tmp_path):
    def given_on_demo_data(doc):
        _given_checkpoints(doc)
        doc["config"].update(demo_data=True, data_file=None, image_root=None)

    run = _edit(_copy(demo_run, tmp_path), given_on_demo_data)
    md = _provenance(run)
    config = json.loads((run / "run.json").read_text())["config"]
    assert _settings(md) == [k for k in config if k not in {"out", *FINE_TUNING}]
    assert _omitted_line(md) == (
        "Not listed, as this run did not use them: the fine-tuning settings `train_steps`, `train_batch_size`, "
        "`train_lr`, `train_seeds`, `train_size`, `base_seed` (the checkpoints were given in `[[checkpoints]]`, "
        "not fine-tuned here).")


def test_tiny_models_fine_tuned_on_own_data_keep_the_training_settings(demo_run, tmp_path):
    """No [[checkpoints]] with a manifest: the tiny models are fine-tuned here (on rows drawn with
    data_seed), and only the demo data's size settings went unused."""
    run = _edit(_copy(demo_run, tmp_path),
                lambda doc: doc["config"].update(demo_data=False, data_file="/study/manifest.jsonl"))
    md = _provenance(run)
    config = json.loads((run / "run.json").read_text())["config"]
    assert _settings(md) == [k for k in config if k not in {"out", "n_per_triplet", "image_size"}]
    assert _omitted_line(md) == (
        "Not listed, as this run did not use them: the demo data's `n_per_triplet`, `image_size` (the data is "
        "the manifest `data_file`, not the demo's).")


def test_the_demo_keeps_every_setting_as_its_committed_report_lists_them(demo_run):
    md = _provenance(demo_run)
    config = json.loads((DEMO / "run.json").read_text())["config"]
    assert _settings(md) == [k for k in config if k != "out"]
    assert _omitted_line(md) is None
    committed = (DEMO / "report.md").read_text().split("The run's configuration.", 1)[1].split("\n## ", 1)[0]
    assert md.split("The run's configuration.", 1)[1] == committed


# ------------------------------------------------------------------------ a tiny held-out target
ABSENT_STORES = "stores are not where run.json puts them"


def _warnings(run: Path, absent_stores: bool = False) -> list[str]:
    """The run's design warnings; the runs these tests build hold no stores/, so the warning that says
    so is left out unless asked for (`absent_stores`)."""
    data = load_run(run)
    lines = design_warnings(data, lambda p: resolve_run_path(run, p, data.summary))
    return lines if absent_stores else [w for w in lines if ABSENT_STORES not in w]


def _target_items(n: int):
    def edit(doc):
        for row in doc["composition"]:
            if [row["modality"], row["anatomy"], row["task"]] == doc["target"]:
                row["n"] = n
        doc["n_samples"] = sum(row["n"] for row in doc["composition"])
    return edit


def test_a_four_item_held_out_target_is_a_design_warning(demo_run, tmp_path):
    run = _edit(_copy(demo_run, tmp_path), _target_items(4))
    assert _warnings(run) == [
        "held-out target MRI / Brain / Exposure has 4 items, fewer than 25: its accuracy is a share of 4 "
        "answers, whose 95% interval spans about ±0.49 (±0.2 needs 25 items), and its I(Z;Y | target) is "
        "estimated on the same 4 rows, so neither reads as a finding; add items to this triplet (25 or more) "
        "or hold out a larger one"]


@pytest.mark.parametrize("n, warned", [(24, True), (25, False)])
def test_the_threshold_is_where_the_interval_reaches_plus_minus_0_2(demo_run, tmp_path, n, warned):
    """1.96 · 0.5 / √n > 0.2 for n ≤ 24: 24 items are flagged (±0.20), 25 are not."""
    run = _edit(_copy(demo_run, tmp_path), _target_items(n))
    found = [w for w in _warnings(run) if w.startswith("held-out target")]
    assert found == (["held-out target MRI / Brain / Exposure has 24 items, fewer than 25: its accuracy is a "
                      "share of 24 answers, whose 95% interval spans about ±0.20 (±0.2 needs 25 items), and its "
                      "I(Z;Y | target) is estimated on the same 24 rows, so neither reads as a finding; add "
                      "items to this triplet (25 or more) or hold out a larger one"] if warned else [])


def test_an_extra_target_is_checked_too(demo_run, tmp_path):
    def small_segmentation(doc):
        for row in doc["composition"]:
            if (row["modality"], row["anatomy"], row["task"]) == ("MRI", "Brain", "Segmentation"):
                row["n"] = 9

    run = _edit(_copy(demo_run, tmp_path), small_segmentation)
    assert [w.split(":")[0] for w in _warnings(run)] == [
        "held-out target MRI / Brain / Segmentation has 9 items, fewer than 25"]


def test_the_committed_demo_gets_no_design_warning(demo_run):
    summary = json.loads((DEMO / "run.json").read_text())
    counts = {(r["modality"], r["anatomy"], r["task"]): r["n"] for r in summary["composition"]}
    assert [counts[tuple(t)] for t in summary["targets"]] == [48, 48]
    assert _warnings(demo_run) == []
    assert "## Design warnings" not in (DEMO / "report.md").read_text()


def test_the_items_counted_are_those_scored_not_the_rows(demo_run, tmp_path):
    """A target of 48 rows, of which one checkpoint holding it out scored 20 (the rest unanswered or
    unparseable: its check counts the answered rows): its accuracy is a share of 20 answers, so the
    target is flagged with that count; a checkpoint that does not hold the target out scoring few
    of its items does not count."""
    run = _copy(demo_run, tmp_path)

    def scored(name: str, n: int) -> None:
        path = run / "check" / f"{name}.json"
        doc = json.loads(path.read_text())
        for s in doc["strata"]:
            if (s["given"]["modality"], s["given"]["anatomy"], s["given"]["task"]) == ("MRI", "Brain", "Exposure"):
                s["n"], s["errors"] = n, min(s["errors"], n)
        path.write_text(json.dumps(doc))

    scored("mri-brain-segmentation-related-s0", 3)  # trained with Exposure: not held out there
    assert _warnings(run) == []
    scored("related-s1", 20)
    scored("unrelated-s2", 22)
    assert _warnings(run) == [
        "held-out target MRI / Brain / Exposure has 48 items, of which checkpoint related-s1 has 20 scored (the "
        "other 28 unanswered or unparseable), fewer than 25: its accuracy is a share of 20 answers, whose 95% "
        "interval spans about ±0.22 (±0.2 needs 25 scored items), so it does not read as a finding; add items "
        "to this triplet (25 or more scored) or see why the other answers are not scored"]


def test_the_most_encoded_factor_is_not_claimed_over_a_term_inside_its_interval(demo_run):
    """A README-only user study read "most encoded: I(Z;anatomy|modality), 0.449 nats" where
    I(Z;task|modality,anatomy) read 0.449 too (0.0004 apart): where the runner-up's estimate lies
    within the leader's interval, the answer says the estimates do not rank the two."""
    from matprobe.report.render import _most_encoded_line, findings

    data = load_run(demo_run)
    main = data.terms[data.terms["main"]]
    factors = [t for t in main["term"].unique() if "label" not in t]
    means = main.groupby("term")["estimate"].mean()
    leader, runner = sorted(factors, key=lambda t: -means[t])[:2]
    low = main.loc[main["term"] == leader, "ci_low"].mean()
    assert means[runner] < low  # the demo: told apart, and its answer says nothing more
    m = findings(data)["most_encoded"]
    assert m["term"] == leader and "not_told_apart_from" not in m
    assert "rank" not in _most_encoded_line(m)
    # the runner-up moved to just below the leader: inside its interval
    shift = means[leader] - means[runner] - 0.0004
    data.terms.loc[data.terms["main"] & (data.terms["term"] == runner), "estimate"] += shift
    m = findings(data)["most_encoded"]
    tie = m["not_told_apart_from"]
    assert m["term"] == leader and tie["term"] == runner
    assert tie["mean_estimate_nats"] == pytest.approx(means[leader] - 0.0004, abs=1e-12)
    assert tie["leader_mean_ci_low_nats"] == pytest.approx(low, abs=1e-12)
    assert (f"It is not told apart from {runner} ({means[leader] - 0.0004:.3f} nats), whose estimate lies within its "
            f"interval (lower end {low:.3f} nats on average), so these estimates do not rank the two.") in \
        _most_encoded_line(m)


def test_the_summary_s_held_out_comparison_says_when_its_target_is_too_small(demo_run, tmp_path):
    """The README-only user study's summary gave Related vs Unrelated I(Z;Y | target) with p = 0.0143
    on a 12-item target, the caveat only in Design warnings: the summary line says it too."""
    from matprobe.report.render import findings, summary_lines

    def answer_line(run):
        data = load_run(run)
        return next(line for line in summary_lines(data, findings(data)) if "I(Z;Y | target)" in line)

    assert "scored items" not in answer_line(demo_run)  # two targets of 48 items: nothing to say
    line = answer_line(_edit(_copy(demo_run, tmp_path), _target_items(12)))
    assert line.endswith(". 1 of the held-out targets has fewer than 25 scored items (Design warnings), so this "
                         "comparison does not read as a finding.")


def _dataset(run: Path) -> str:
    """The report's Dataset section of `run` (a copy: its figure is drawn into the run)."""
    from matprobe.report.render import _dataset_section

    (run / "figures").mkdir(exist_ok=True)
    doc = Doc(run)
    _dataset_section(doc, load_run(run), run / "figures")
    return doc.markdown()


def test_own_data_through_the_toy_fine_tuning_says_what_its_models_are(demo_run, tmp_path):
    """A pipeline file with the user's manifest and [train] but no [[checkpoints]] fine-tunes the
    demo's tiny random-initialised models on it; the README-only user study's report never said so
    (its glossary called them "the fine-tuned model(s)"). The demo, whose models these are, and
    given checkpoints say nothing of it."""
    sentence = ("The checkpoints are tiny random-initialised LLaVA models that this run fine-tuned on these rows "
                "([train], 60 steps): a trial of the whole path on your data; their numbers say nothing about a "
                "real model.")
    assert sentence not in _dataset(_copy(demo_run, tmp_path / "demo"))
    own = _edit(_copy(demo_run, tmp_path / "own"), lambda doc: doc["config"].update(demo_data=False, train_steps=60))
    md = _dataset(own)
    assert "Training samples per condition (equalised): " in md and sentence in md
    given = _edit(_copy(demo_run, tmp_path / "given"), _given_checkpoints)
    assert "tiny random-initialised" not in _dataset(given)


def test_the_software_table_speaks_of_the_demo_only_in_the_demo(demo_run, tmp_path):
    """An own study's report said "The demo's numbers are reproducible for these versions"."""
    assert "The demo's numbers are reproducible for these versions" in _provenance(demo_run)
    md = _provenance(_edit(_copy(demo_run, tmp_path), _given_checkpoints))
    assert "demo's numbers" not in md and "Its numbers are reproducible for these versions" in md


def test_the_mi_chain_says_why_its_intervals_are_one_sided():
    """A README-only user study: every MI interval read "≥ x (one-sided)" and the report never said
    why for its terms (the reasons were in the MI files' flags): a paragraph under the table does."""
    import pandas as pd

    from matprobe.report.render import ONE_SIDED_REASONS, one_sided_reasons

    terms = pd.DataFrame({
        "term": ["I(Z;M)", "I(Z;A|M)", "I(Z;M)", "I(Z;A|M)", "I(Z;T|M,A)", "I(Z;T|M,A)"],
        "bound": ["lower", "lower", "two-sided", "lower", "lower", "lower"],
        "degenerate": [False, False, False, False, False, True],
        "flags": ["misspecified-linear,small-cells", "small-cells,low-n", "", "misspecified-linear", "", ""]})
    assert one_sided_reasons(terms) == (
        "4 of 6 intervals above are one-sided (≥ x: only the lower end is a statement). Why, from the terms' "
        f"flags (a term can have several): misspecified-linear ({ONE_SIDED_REASONS['misspecified-linear']}): "
        "I(Z;M) at 1 of 2 checkpoints, I(Z;A|M) at 1 of 2 checkpoints; small-cells "
        f"({ONE_SIDED_REASONS['small-cells']}): I(Z;M) at 1 of 2 checkpoints, I(Z;A|M) at 1 of 2 checkpoints; "
        "the estimator's own bound (its estimates are lower bounds by construction): 1 term.")
    assert one_sided_reasons(terms.assign(bound="two-sided")) == ""
    md = (DEMO / "report.md").read_text()  # the committed demo: all 48 one-sided, said under its table
    assert "48 of 48 intervals above are one-sided" in md and "near-saturated (" in md


def test_an_accuracy_comparison_of_one_option_checkpoints_says_so_in_the_summary(demo_run, tmp_path):
    """A README-only user study's summary compared held-out accuracy 0.300 with 0.200 from four
    checkpoints that each answered one option for every item (said only in Design warnings): the
    summary's line says it, for all or some of the checkpoints compared."""
    from matprobe.report.design import one_option_answers
    from matprobe.report.render import findings, summary_lines
    from matprobe.store import EmbeddingStore

    data = load_run(demo_run)

    def accuracy_line(one_option):
        return next(line for line in summary_lines(data, findings(data), one_option)
                    if line.startswith("**Is the Related–Unrelated difference significant?**"))

    plain = accuracy_line({})
    assert "one option" not in plain
    names = [ck.name for ck in data.summary.checkpoints if ck.condition in ("related", "unrelated")]
    every = accuracy_line({n: ("A", 48, 48) for n in names})
    assert every == plain + (" Every checkpoint compared answers one option for 90% or more of the items (Design "
                             "warnings): these accuracies are shares of that option among the target's answers, "
                             "not evidence that the models read the images.")
    some = accuracy_line({names[0]: ("A", 48, 48)})
    assert f" 1 of the {len(names)} checkpoints compared ({names[0]}) answer one option" in some
    # what the stores say: 9 of 10 answers one option (90%) counts, 8 of 10 does not
    stores = []
    for name, pred in (("stuck", [2] * 9 + [0]), ("mixed", [2] * 8 + [0, 1])):
        path = tmp_path / f"{name}.h5"
        EmbeddingStore.from_arrays(path, [f"{name}-{i}" for i in range(10)],
                                   {"modality": ["CT"] * 10, "anatomy": ["Chest"] * 10, "task": ["Q"] * 10,
                                    "answer_index": [0] * 10},
                                   {("0", "last"): np.zeros((10, 2), np.float32)},
                                   answers={"pred": np.array(pred), "probs": np.full((10, 4), 0.25, np.float32)}
                                   ).close()
        stores.append(type("Ck", (), {"name": name, "store": str(path)})())
    assert one_option_answers(stores, lambda p: p) == {"stuck": ("C", 9, 10)}


def test_the_training_rows_sentence_says_what_is_measured_on_them(demo_run, tmp_path):
    """Checkpoints trained elsewhere: the Dataset section said "only the PAC bounds' training error is
    measured on these rows" where the run had no training-set bound at all."""
    with_bounds = _dataset(_edit(_copy(demo_run, tmp_path / "a"), _given_checkpoints))
    assert "only the training-set PAC bounds' training error is measured on these rows" in with_bounds
    run = _edit(_copy(demo_run, tmp_path / "b"), _given_checkpoints)
    for ck in json.loads((run / "run.json").read_text())["checkpoints"]:
        path = resolve_run_path(run, ck["check"], load_run(run).summary)
        doc = json.loads(Path(path).read_text())
        doc["pac"]["bounds"] = []
        Path(path).write_text(json.dumps(doc))
    without = _dataset(run)
    assert "no number in this report is measured on them" in without
    assert "training error is measured" not in without


def _set_check_target(run: Path, target: str) -> Path:
    for ck in json.loads((run / "run.json").read_text())["checkpoints"]:
        path = Path(resolve_run_path(run, ck["check"], load_run(run).summary))
        doc = json.loads(path.read_text())
        doc["target"] = target
        path.write_text(json.dumps(doc))
    return run


def test_the_report_says_what_y_is_and_when_its_target_term_sits_at_its_cap(demo_run, tmp_path):
    """A README-only user study's report called Y "the answer" in its summary, Fano table and glossary
    while its checks took the label column (a per-item shuffled answer index is another variable), and
    compared I(Z;Y | target) of 1.367 against 1.367 nats, each at its cap, without saying so."""
    from matprobe.report.render import Y_WORDS, findings, glossary, summary_lines

    def y_line(run):
        data = load_run(run)
        return next(line for line in summary_lines(data, findings(data)) if "I(Z;Y | target)" in line), data

    line, data = y_line(demo_run)  # the demo's checks take the label column
    assert data.y_targets == ("label",)
    assert line.startswith(f"Information about Y, {Y_WORDS['label']}, inside the held-out targets")
    assert "within 10% of its cap" not in line  # 0.320 against caps of about 1.3 nats
    assert glossary(data)["H(Y|s) (nats)"].startswith(f"entropy of Y ({Y_WORDS['label']})")
    line, data = y_line(_set_check_target(_copy(demo_run, tmp_path / "a"), "answer"))
    assert line.startswith(f"Information about Y, {Y_WORDS['answer']}, inside")
    # every checkpoint at the cap: the mean H(Y|s) of the target strata, written into results.csv
    run = _copy(demo_run, tmp_path / "b")
    data = load_run(run)
    cap = float(data.strata.loc[data.strata["is_target"], "h_y"].mean())
    path = Path(resolve_run_path(run, data.summary.results, data.summary))
    results = pd.read_csv(path)
    results.loc[results["metric"] == "I(Z;Y|target) nats", "value"] = cap
    results.to_csv(path, index=False)
    line, _ = y_line(run)
    assert line.endswith(f"Both are within 10% of its cap H(Y | target) = {cap:.3f} nats: Y is read off Z there in "
                         "every checkpoint, and this comparison cannot separate the conditions.")


def test_the_glossary_defines_every_condition_of_the_run(demo_run, tmp_path):
    """The glossary defined only Related and Unrelated in a run with a Without Task condition."""
    from matprobe.report.render import CONDITION_MEANINGS, glossary

    assert "Without Task" not in glossary(load_run(demo_run))["condition"]

    def add_ablation(doc):
        doc["checkpoints"][0]["condition"] = "without-task"

    words = glossary(load_run(_edit(_copy(demo_run, tmp_path), add_ablation)))["condition"]
    for key in ("related", "unrelated", "without-task"):
        assert CONDITION_MEANINGS[key] in words


def test_most_encoded_says_when_the_leader_sits_at_its_cap(demo_run, tmp_path):
    """A README-only study's three factor terms each sat at their entropy caps and the one with the
    largest entropy was called "most encoded" with no caveat: the line says what that ranks."""
    from matprobe.report.render import _most_encoded_line, findings

    data = load_run(demo_run)
    m = findings(data)["most_encoded"]
    # the factor terms whose mean over the checkpoints is within 10% of the mean cap, computed here
    main = data.terms[data.terms["main"]]
    means = main.groupby("term", sort=False)[["estimate", "h_upper"]].mean()
    expected = [t for t, r in means.iterrows() if "label" not in t and r["estimate"] >= 0.9 * r["h_upper"]]
    assert m["at_cap"] == expected and m["term"] not in expected  # the demo: modality 0.90 of 1.36 leads
    assert "entropy cap," not in _most_encoded_line(m)  # the leader is below its cap: no caveat
    # every factor term of every checkpoint moved to its cap, its interval's lower end too (only then
    # does Z determine the factor: tests/test_report_wording_s29.py has lower ends below the cap)
    data.terms.loc[:, "estimate"] = data.terms["h_upper"]
    data.terms.loc[:, "ci_low"] = 0.95 * data.terms["h_upper"]
    m = findings(data)["most_encoded"]
    factors = [t for t in dict.fromkeys(data.terms["term"]) if "label" not in t]
    assert m["at_cap"] == factors and len(factors) == 3
    line = _most_encoded_line(m)
    others = [t for t in factors if t != m["term"]]
    assert (f"It sits within 10% of its entropy cap, as {others[0]} and {others[1]} do: Z determines each of "
            "them (the question text may name them), so this ranks their entropies, not how well Z encodes "
            "them.") in line
    # the leader alone at its cap
    m["at_cap"] = [m["term"]]
    assert "its value is its entropy, not a measure of how well Z encodes it." in _most_encoded_line(m)


def test_the_source_table_says_how_much_of_modality_the_source_fixes_and_where_its_chains_disagree():
    """A README-only study: modality 80% from one source each and the two chains of I(Z;modality,source)
    at 1.14 and 1.46 nats, neither said (Table "Modality and source" had only the rows)."""
    from matprobe.report.render import _source_sentences

    caps = {"I(Z;modality)": 1.090, "I(Z;source|modality)": 0.502, "I(Z;source)": 1.373,
            "I(Z;modality|source)": 0.220}
    est = {"a": [1.090, 0.050, 1.240, 0.220], "b": [1.090, 0.040, 0.870, 0.220]}
    src = pd.DataFrame([{"checkpoint": ck, "term": t, "estimate": v, "h_upper": caps[t], "bound": "lower"}
                        for ck, vals in est.items() for t, v in zip(caps, vals)])
    fixed, chains = _source_sentences(src, "nats")
    assert fixed.startswith(f"The source fixes {1 - 0.220 / 1.090:.0%} of modality's entropy (H(modality|source) "
                            "= 0.220 of H(modality) = 1.090 nats)")
    assert chains.startswith("The two chains estimate the same I(Z;modality,source) and differ by up to 0.320 nats "
                             "(a: 1.140 through modality first, 1.460 through the source first)")
    assert chains.endswith("the smaller sum falls short by at least the gap.")
    # a source that fixes little, and chains that agree: nothing to say
    src.loc[src["term"] == "I(Z;modality|source)", "h_upper"] = 0.9
    src.loc[src["term"] == "I(Z;source)", "estimate"] = [0.92, 0.91]
    assert _source_sentences(src, "nats") == []


def test_the_source_table_says_when_its_modality_term_differs_from_the_mi_chains():
    """A README-only study: related-s0's I(Z;modality) read 1.182 in the MI chain (M, A, T, label)
    and 1.295 in the source table (chain modality, source), neither table saying why."""
    from matprobe.report.render import _source_sentences

    caps = {"I(Z;modality)": 1.30, "I(Z;source|modality)": 0.5, "I(Z;source)": 1.4, "I(Z;modality|source)": 0.9}
    est = {"related-s0": [1.295, 0.1, 1.3, 0.095], "related-s1": [1.20, 0.1, 1.2, 0.1]}
    src = pd.DataFrame([{"checkpoint": ck, "term": t, "estimate": v, "h_upper": caps[t], "bound": "lower"}
                        for ck, vals in est.items() for t, v in zip(caps, vals)])
    main = pd.DataFrame({"checkpoint": ["related-s0", "related-s0", "related-s1"],
                         "term": ["I(Z;modality)", "I(Z;anatomy|modality)", "I(Z;modality)"],
                         "estimate": [1.182, 0.3, 1.19]})
    said = _source_sentences(src, "nats", main)
    assert said == ["I(Z;modality) is estimated in two chains, here and in the MI chain, and the two differ by up "
                    "to 0.113 nats (related-s0: 1.295 here, 1.182 there): each chain stratifies its folds by all its "
                    "factors and gives the critic its later factors as sub-classes, so one MI has an estimate per "
                    "chain, each with its own interval."]
    main.loc[0, "estimate"] = 1.27  # within 0.05: nothing to say
    assert _source_sentences(src, "nats", main) == []


def test_a_run_without_its_stores_says_which_warnings_it_could_not_check(tmp_path):
    """A user study copied a run without stores/ and rendered it: the one-option warnings and the
    summary's caveat vanished, unsaid. Now a design warning names the absent stores."""
    import shutil

    run = tmp_path / "moved ü run"
    shutil.copytree(DEMO, run, ignore=shutil.ignore_patterns("checkpoints", "data", "figures", "report.*"))
    with_stores = _warnings(run, absent_stores=True)
    assert not any(ABSENT_STORES in w for w in with_stores)
    shutil.rmtree(run / "stores", ignore_errors=True)  # a clean clone has none (they are not committed)
    # run.json records each checkpoint's most given answer (`top_answer`): the warnings need no store
    assert _warnings(run, absent_stores=True) == with_stores
    doc = json.loads((run / "run.json").read_text())
    for ck in doc["checkpoints"]:  # a run written before it did
        del ck["top_answer"]
    (run / "run.json").write_text(json.dumps(doc))
    without = _warnings(run, absent_stores=True)
    n = len(load_run(run).summary.checkpoints)
    said = [w for w in without if "stores are not where run.json puts them" in w]
    assert len(said) == 1 and said[0].startswith(f"{n} of the {n} checkpoints' stores are not where run.json")
    assert str(run / "stores") in said[0]


def test_run_json_records_the_answer_the_one_option_warning_reads(tmp_path):
    """One-option checkpoints are found from run.json alone, as from the stores."""
    import shutil

    from matprobe.report.design import one_option_answers, top_answer

    run = tmp_path / "run"
    shutil.copytree(DEMO, run, ignore=shutil.ignore_patterns("checkpoints", "data", "figures", "report.*", "stores"))
    doc = json.loads((run / "run.json").read_text())
    for ck in doc["checkpoints"]:
        store = DEMO / ck["store"]
        if store.exists():  # the stores are not committed: checked where `make demo` made them
            assert ck["top_answer"] == top_answer(store)
    doc["checkpoints"][0]["top_answer"] = {"option": "B", "count": 470, "answered": 480}
    (run / "run.json").write_text(json.dumps(doc))
    data = load_run(run)
    found = one_option_answers(data.summary.checkpoints, lambda p: resolve_run_path(run, p, data.summary))
    assert found == {doc["checkpoints"][0]["name"]: ("B", 470, 480)}
    assert any(w.startswith(f"checkpoint {doc['checkpoints'][0]['name']} answers option B for 470 of 480 items")
               for w in _warnings(run))


def test_the_report_names_the_prompt_each_checkpoint_was_given(tmp_path):
    """A study of LLaVA-Med checkpoints found no word of their prompt (mistral_instruct) in the report;
    run.json now records each store's template and the Provenance section names it."""
    import shutil

    from matprobe.report.design import prompt_of
    from matprobe.report.render import _prompt_sentence

    doc = json.loads((DEMO / "run.json").read_text())
    for ck in doc["checkpoints"]:
        if (DEMO / ck["store"]).exists():  # where `make demo` made the stores: as recorded
            assert ck["prompt"] == prompt_of(DEMO / ck["store"])
    assert "Prompt: matprobe's multiple-choice prompt" in (DEMO / "report.md").read_text()
    run = tmp_path / "run"
    shutil.copytree(DEMO, run, ignore=shutil.ignore_patterns("checkpoints", "data", "figures", "report.*", "stores"))
    doc["checkpoints"][0]["prompt"] = {"name": "mistral_instruct", "style": "LLAMA_2"}
    (run / "run.json").write_text(json.dumps(doc))
    said = _prompt_sentence(load_run(run).summary)
    first, rest = doc["checkpoints"][0]["name"], [ck["name"] for ck in doc["checkpoints"][1:]]
    assert said == ("Prompts: LLaVA's conversation template mistral_instruct (`mistral_instruct`) for " + first
                    + "; matprobe's multiple-choice prompt (the question, its option lines 'A: text' and \"Answer "
                    "with the option's letter from the given choices directly.\") in each checkpoint's own chat "
                    f"template (`medmat-mcq-v1`) for {', '.join(rest)}.")


def test_a_p_on_a_term_at_its_cap_is_said_to_compare_the_caps():
    """A study's report showed p = 0.046 on I(Z;anatomy|modality), Related's mean at its cap, with no
    caveat (`compare` gives such a term no p)."""
    from matprobe.report.render import _capped_metrics_sentence

    data = load_run(DEMO)
    main = data.terms[data.terms["main"]]
    # the demo's terms whose two conditions' means are both within 10% of the mean cap, computed here
    both = [t for t, g in main.groupby("term", sort=False)
            if all(x["estimate"].mean() >= 0.9 * x["h_upper"].mean() for _, x in g.groupby("condition"))
            and f"{t} nats" in set(data.significance["metric"])]
    said = _capped_metrics_sentence(data, data.significance)
    assert [t for t in dict.fromkeys(main["term"]) if said.startswith(f"{t} nats:") or f"; {t} nats:" in said] == both
    # below: every term moved below its cap, then one term moved to 97% of it
    data.terms["estimate"] = np.minimum(data.terms["estimate"], 0.8 * data.terms["h_upper"])
    assert _capped_metrics_sentence(data, data.significance) == ""
    term = "I(Z;anatomy|modality)"
    at = data.terms["term"] == term
    data.terms.loc[at, "estimate"] = data.terms.loc[at, "h_upper"] * 0.97
    said = _capped_metrics_sentence(data, data.significance)
    assert said.startswith(f"{term} nats: both conditions' estimates sit within 10% of the term's entropy cap")
    data.terms.loc[at & (data.terms["condition"] == "Unrelated"), "estimate"] *= 0.5  # one side below: no caveat
    assert _capped_metrics_sentence(data, data.significance) == ""
