"""The report of a run with several held-out targets names every one of them.

A user study (`[design] target` plus `extra_targets`: two held-out triplets, 2 seeds each) got a
report that read as if it had one target: its first line named only the first triplet, the
composition figure labelled the second held-out triplet by its relation to the first ("30
(zero-overlap)", as if it were a training triplet), the Dataset section gave the training rows of the
first target only, and findings.json counted 2 seeds x 2 targets as "n_seeds": 4.

The run here is the committed demo's results (tests/test_report.py's `make_run`), which hold out two
triplets (MRI / Brain / Exposure and MRI / Brain / Segmentation, 6 checkpoints each); accuracy rows
are added for the second target so that the held-out accuracy spans both. A one-target copy (the
first target's checkpoints and results only) must read as before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from matprobe.report.render import Doc, load_run, write_report
from test_report import make_run

FIRST, SECOND = ("MRI", "Brain", "Exposure"), ("MRI", "Brain", "Segmentation")


def _edit(run: Path, fn) -> Path:
    doc = json.loads((run / "run.json").read_text())
    fn(doc)
    (run / "run.json").write_text(json.dumps(doc, indent=2))
    return run


def _accuracy_on_both_targets(run: Path) -> None:
    """results.csv with the first target's accuracy rows copied to the second, 0.1 higher."""
    results = pd.read_csv(run / "results.csv")
    acc = results[(results["metric"] == "accuracy") & (results["target"] == ",".join(FIRST))]
    second = acc.assign(target=",".join(SECOND), value=acc["value"] + 0.1)
    pd.concat([results, second], ignore_index=True).to_csv(run / "results.csv", index=False)


def _one_target(doc: dict) -> None:
    """run.json of the same study holding out its first target only."""
    doc["targets"] = [doc["target"]]
    doc["config"]["extra_targets"] = []
    doc["checkpoints"] = [ck for ck in doc["checkpoints"] if tuple(ck["target"]) == FIRST]
    doc["train_sizes_by_target"] = {",".join(FIRST): doc["train_sizes"]}


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory) -> Path:
    """The two-target run with its report written (report.md, findings.json, figures)."""
    run = make_run(tmp_path_factory.mktemp("several") / "run", extra_layer=False)
    _accuracy_on_both_targets(run)
    _write_report(run)
    return run


@pytest.fixture(scope="module")
def one_target(tmp_path_factory) -> Path:
    """The same study with one held-out target, its report written."""
    run = _edit(make_run(tmp_path_factory.mktemp("single") / "run", extra_layer=False), _one_target)
    results = pd.read_csv(run / "results.csv")
    results[results["target"] == ",".join(FIRST)].to_csv(run / "results.csv", index=False)
    _write_report(run)
    return run


def _write_report(run: Path) -> None:
    """`write_report` with its figures drawn but not saved as PNG and SVG (empty files instead): half
    the time, and the figures' data are tested through their draw functions."""
    from matprobe.report import figures

    def drawn(fig, path: Path) -> None:
        figures.plt.close(fig)
        path.parent.mkdir(parents=True, exist_ok=True)
        for p in (path, path.with_suffix(".svg")):
            p.write_bytes(b"")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "_save", drawn)
        write_report(run)


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "study"))


def _lines(run: Path) -> list[str]:
    return (run / "report.md").read_text().splitlines()


def test_the_header_names_every_held_out_target(two_targets):
    header = _lines(two_targets)[2]
    assert header.startswith("12 checkpoints, 480 samples, 2 held-out target triplets, **MRI / Brain / Exposure** "
                             "(6 checkpoints), **MRI / Brain / Segmentation** (6 checkpoints). Information is in "
                             "nats;"), header


def test_the_training_rows_are_given_per_target(two_targets, tmp_path):
    line = next(x for x in _lines(two_targets) if x.startswith("Training samples per condition"))
    assert line == ("Training samples per condition (equalised): for MRI / Brain / Exposure related 144, "
                    "unrelated 144; for MRI / Brain / Segmentation related 144, unrelated 144.")
    # checkpoints trained elsewhere (the user study's layout): its rows per target, as run.json has them
    from matprobe.report.render import _dataset_section

    def trained_elsewhere(doc):
        doc["train_rows"] = "triplets"
        doc["train_sizes_by_target"] = {",".join(FIRST): {"related": 75, "unrelated": 156},
                                        ",".join(SECOND): {"related": 80, "unrelated": 150}}
        doc["train_sizes"] = {"related": 75, "unrelated": 156}

    run = _edit(_copy(two_targets, tmp_path), trained_elsewhere)
    doc = Doc(run)
    _dataset_section(doc, load_run(run), run / "figures")
    assert ("Training rows per condition, as this run takes them: for MRI / Brain / Exposure related 75, unrelated "
            "156; for MRI / Brain / Segmentation related 80, unrelated 150 (every row of each condition's "
            "training triplets") in doc.markdown()


def test_the_composition_marks_every_held_out_target(two_targets):
    from matprobe.report import figures
    from matprobe.report.render import composition_by_target, run_targets

    data = load_run(two_targets)
    targets = run_targets(data.summary)
    assert targets == [FIRST, SECOND]
    comp = data.composition
    key = list(zip(comp["modality"], comp["anatomy"], comp["task"]))
    assert [k for k, h in zip(key, comp["held_out"]) if h] == [FIRST, SECOND]  # listed first, in order
    panels = composition_by_target(comp, targets)
    for target in targets:
        panel = panels[panels["target"] == " / ".join(target)]
        trips = list(zip(panel["modality"], panel["anatomy"], panel["task"]))
        rel = dict(zip(trips, panel["relation"]))
        assert rel[target] == "target"  # each target is held out in its own panel
        (other,) = [t for t in targets if t != target]
        assert rel[other] == "related"  # the two share modality and anatomy
        assert {t for t, h in zip(trips, panel["held_out"]) if h} == {FIRST, SECOND}
        assert [t for t, o in zip(trips, panel["other_target"]) if o] == [other]
    fig = figures.draw_composition(panels)
    try:
        titles = [ax.get_title() for ax in fig.axes]
        assert titles == [f"relation to held-out target\n{' / '.join(t)}" for t in targets]
        for ax in fig.axes:
            labels = [t.get_text() for t in ax.texts]
            assert sum(label.endswith("(target)") for label in labels) == 1
            assert sum(label.endswith("(related; another held-out target)") for label in labels) == 1
    finally:
        figures.plt.close(fig)
    md = (two_targets / "report.md").read_text()
    assert "one panel per held-out target (2: MRI / Brain / Exposure; MRI / Brain / Segmentation)" in md


def test_each_checkpoint_s_own_target_is_its_target_stratum(two_targets):
    """The circled points of the MI-vs-accuracy figure and the summary's H(Y | target): each
    checkpoint's own held-out triplet, not the first target for every checkpoint."""
    data = load_run(two_targets)
    own = {ck.name: " / ".join(ck.extra["target"]) for ck in data.summary.checkpoints}
    st = data.strata[data.strata["is_target"]]
    assert dict(zip(st["checkpoint"], st["stratum"])) == own and len(st) == len(own)


def test_findings_count_target_seed_runs(two_targets):
    acc = json.loads((two_targets / "findings.json").read_text())["target_accuracy"]
    results = pd.read_csv(two_targets / "results.csv")
    for cond in ("Related", "Unrelated"):
        rows = results[(results["metric"] == "accuracy") & (results["condition"] == cond)]
        got = acc[cond]
        assert "n_seeds" not in got and got["n_runs"] == 6 and got["runs"] == "(target, seed)"
        assert got["mean"] == pytest.approx(rows["value"].mean())
        assert set(got["by_target"]) == {"MRI / Brain / Exposure", "MRI / Brain / Segmentation"}
        for target, each in got["by_target"].items():
            mine = rows[rows["target"] == target.replace(" / ", ",")]
            assert each["n_seeds"] == 3 and each["mean"] == pytest.approx(mine["value"].mean())
    summary = "\n".join(_lines(two_targets))
    assert ("Accuracy on the held-out targets (MRI / Brain / Exposure; MRI / Brain / Segmentation): "
            "Related ") in summary


def test_one_target_reads_as_before(one_target):
    """With one held-out target: the header, training rows, figure and findings as they were (this
    test passes on the code before several targets were named, too)."""
    from matprobe.report import figures

    md = (one_target / "report.md").read_text()
    assert _lines(one_target)[2] == (
        "6 checkpoints, 480 samples, held-out target triplet **MRI / Brain / Exposure**. Information is in nats; "
        "intervals are 95% for MI estimates, 95% for error rates and 95% for mean differences. Every column is "
        "explained in the [Glossary](#glossary).")
    assert ("*Samples per Modality / Anatomy / Task triplet; colour and label give each triplet's relation to the "
            "held-out target (CrossMed §III: related shares two of M, A, T; unrelated at most one, so a zero-overlap "
            "triplet, sharing none, is unrelated too and Unrelated training takes it).*") in md
    assert "\nTraining samples per condition (equalised): related 144, unrelated 144.\n" in md
    assert "Accuracy on the held-out target: Related " in md
    acc = json.loads((one_target / "findings.json").read_text())["target_accuracy"]
    assert {c: sorted(v) for c, v in acc.items()} == {c: ["mean", "n_seeds", "sd"] for c in ("Related", "Unrelated")}
    assert acc["Related"]["n_seeds"] == 3
    data = load_run(one_target)
    fig = figures.draw_composition(data.composition)
    try:
        assert len(fig.axes) == 1 and fig.axes[0].get_title() == "Dataset composition per (M, A, T)"
        assert [t.get_text() for t in fig.axes[0].texts][0] == " 48 (target)"
    finally:
        figures.plt.close(fig)
