"""Classes too small for the folds (fewer than 2 rows per fold): refused by default, merged into
one class per factor with rare_classes="merge" (the pipeline's default), the terms flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from matprobe.errors import EstimationError
from matprobe.mi.chain import ChainResult, chain_terms, merge_rare_classes, results_json

torch.set_num_threads(1)


def _task(seed: int = 0, n: int = 500):
    """Y: 3 common classes and a tail of 6 rare ones (1-4 rows each), the first common class shifted in Z."""
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 2, n)
    y = rng.integers(0, 3, n)
    tail = rng.choice(n, 15, replace=False)
    y[tail] = np.repeat(np.arange(3, 9), [1, 2, 2, 3, 3, 4])
    z = rng.standard_normal((n, 4))
    z[:, 0] += m
    z[:, 1] += 1.5 * (y == 0)
    return z, m, y


def test_merge_maps_exactly_the_rare_classes_to_one_and_keeps_the_rest():
    _, m, y = _task()
    names = tuple(f"class{k}" for k in range(9))
    for folds in (2, 3, 5):
        need = 2 * folds
        new, labels, merged = merge_rare_classes({"M": m, "Y": y}, ["M", "Y"], folds, {"Y": names})
        counts = np.bincount(y, minlength=9)
        rare = [k for k in range(9) if counts[k] < need]
        assert "M" not in merged and np.array_equal(new["M"], m)
        assert merged["Y"]["classes"] == [names[k] for k in rare] and merged["Y"]["rows"] == counts[rare].sum()
        # the map is a function of the class: same class, same new code; rare ones share one code
        for k in range(9):
            codes = np.unique(new["Y"][y == k])
            assert len(codes) == 1
            assert labels["Y"][codes[0]] == (labels["Y"][-1] if k in rare else names[k])
        assert np.bincount(new["Y"]).min() >= need


def test_merged_chain_equals_the_chain_on_the_merged_labels_and_is_flagged():
    z, m, y = _task()
    with pytest.raises(EstimationError, match="--rare-classes merge"):
        chain_terms(z, {"M": m, "Y": y}, seeds=1, folds=3, pca=None)
    merged = chain_terms(z, {"M": m, "Y": y}, seeds=1, folds=3, pca=None, rare_classes="merge")
    by_hand = np.where(y >= 3, 3, y)  # every tail class has fewer than 6 rows
    plain = chain_terms(z, {"M": m, "Y": by_hand}, seeds=1, folds=3, pca=None)
    for (name, a), (_, b) in zip(merged.terms["probe"], plain.terms["probe"], strict=True):
        assert a.value == b.value and (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high), name
        assert a.bound == b.bound
    (_, em), (_, ey) = merged.terms["probe"]
    assert "merged-rare-classes" not in em.flags
    # each tail class named with its own rows (the _task's 1, 2, 2, 3, 3, 4), all under 6 = 2 x 3 folds
    tail = ", ".join(f"'{k}' ({c} row{'' if c == 1 else 's'})" for k, c in zip(range(3, 9), [1, 2, 2, 3, 3, 4]))
    assert "merged-rare-classes" in ey.flags
    assert f"rare classes merged (Y: {tail} are under 6; merged into one class (15 rows))" in ey.note, ey.note
    assert "merged-rare-classes" in merged.direct["probe"].flags
    # the results document carries the merges and reads back
    doc = json.loads(json.dumps(results_json(merged)))
    assert doc["merged_classes"]["Y"]["rows"] == 15
    assert ChainResult.from_json(doc).merged_classes == merged.merged_classes
    assert "merged_classes" not in results_json(plain)


def _store(tmp_path):
    from matprobe.store import EmbeddingStore

    z, m, y = _task(1, 300)
    store = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(store, [f"s{i}" for i in range(len(z))],
                               {"modality": np.array(["CT", "MRI"])[m], "anatomy": np.full(len(z), "Head"),
                                "task": np.full(len(z), "Cls"), "label": np.array([f"y{k}" for k in y])},
                               {("4", "last"): z.astype("float32")}).close()
    return store


def test_mi_command_refuses_by_default_and_merges_when_asked(tmp_path):
    from typer.testing import CliRunner

    from matprobe.cli import app

    store = _store(tmp_path)
    runner = CliRunner(env={"COLUMNS": "200"})
    args = ["mi", str(store), "--factors", "M,label", "--seeds", "1", "--folds", "3", "--pca", "0"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--rare-classes merge" in res.output, res.output
    out = tmp_path / "mi.json"
    res = runner.invoke(app, [*args, "--rare-classes", "merge", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["merged_classes"]["label"]["classes"] == [f"y{k}" for k in range(3, 9)]
    assert doc["terms"][1]["flags"].count("merged-rare-classes") == 1


def test_sweep_says_which_cells_failed_and_merges_when_asked(tmp_path):
    """A sweep writes every cell; cells that failed (here: rare classes, refused by default) were
    left out of the table silently (their columns were empty), and are now named under it."""
    import pandas as pd
    from typer.testing import CliRunner

    from matprobe.cli import app

    store = _store(tmp_path)
    runner = CliRunner(env={"COLUMNS": "200"})
    args = ["sweep", str(store), "--factors", "M,label", "--seeds", "1", "--folds", "3", "--pca", "0",
            "--no-pointwise"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a.csv")])
    assert res.exit_code == 2, res.output  # its one cell failed: nothing estimated, the table written
    said = " ".join(res.output.split())
    assert "warning: 1 of 1 cells failed" in said and "factor 'label' class 'y3' has 1 row," in said, said
    assert (tmp_path / "a.csv").is_file()
    res = runner.invoke(app, [*args, "--rare-classes", "merge", "--out", str(tmp_path / "b.csv")])
    assert res.exit_code == 0 and "failed" not in res.output, res.output
    table = pd.read_csv(tmp_path / "b.csv")
    assert table["estimate"].notna().all()
    assert list(table["flags"].fillna("").str.contains("merged-rare-classes")) == [False, True]


def test_check_bounds_a_merged_answer_as_the_merged_label(tmp_path):
    """An Î of Y with rare classes merged is of Y' (the merged label): every Fano number of a row is
    of Y' (H(Y'|s), K, the floor), and a floor on the error of predicting Y' is one on Y's (a right
    answer on Y is right on Y'). A row mixing H(Y|s) of 4 classes with Î capped at ln 3 read as if
    I <= 1.099 < H (an outside study, twenty-ninth session)."""
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.store import EmbeddingStore
    from matprobe.theory.check import run_check

    z, m, y = _task(2, 400)
    rng = np.random.default_rng(3)
    correct = (rng.random(len(y)) < 0.6).astype("int8")
    pred = np.where(correct == 1, y, (y + 1) % 9)
    store = tmp_path / "s.h5"
    a, t = rng.integers(0, 2, len(y)), rng.integers(0, 2, len(y))
    EmbeddingStore.from_arrays(store, [f"s{i}" for i in range(len(z))],
                               {"modality": np.array(["CT", "MRI"])[m], "anatomy": np.array(["Head", "Chest"])[a],
                                "task": np.array(["Cls", "Det"])[t], "label": np.array([f"y{k}" for k in y])},
                               {("4", "last"): z.astype("float32")},
                               answers={"pred": pred, "correct": correct,
                                        "probs": np.eye(9, dtype="float32")[pred]}).close()
    runner = CliRunner(env={"COLUMNS": "250"})
    base = ["mi", str(store), "--factors", "M,A,T,label", "--seeds", "1", "--folds", "3", "--pca", "0"]
    merged_mi, plain_mi = tmp_path / "merged.json", tmp_path / "plain.json"
    assert runner.invoke(app, [*base, "--rare-classes", "merge", "--out", str(merged_mi)]).exit_code == 0
    merged = run_check(store, merged_mi)
    assert merged.merged_target["rows"] == 15 and merged.merged_target["fano"] == "merged"
    assert all(s.error_floor is not None and s.classes <= s.extra["classes_unmerged"] for s in merged.strata)
    res = runner.invoke(app, ["check", str(store), "--mi", str(merged_mi), "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 0 and "the ε floor are all of Y'" in " ".join(res.output.split()), res.output
    # the same labels merged by hand, as an ordinary factor: floors are computed as always
    doc = json.loads(merged_mi.read_text())
    doc.pop("merged_classes")
    plain_mi.write_text(json.dumps(doc))
    plain = run_check(store, plain_mi)
    assert plain.merged_target is None and all(s.error_floor is not None for s in plain.strata)


def test_compare_refuses_rare_target_classes_and_merges_them_on_both_sides(tmp_path):
    """compare estimated ΔI on a target whose classes were missing from training folds without a
    word; it refuses them now as `mi` does, and with rare_classes="merge" equals the comparison of
    the same stores with the labels merged by hand."""
    from matprobe.mi.compare import compare_stores
    from matprobe.store import EmbeddingStore

    z, m, y = _task(4, 300)
    z_b = z + np.random.default_rng(5).standard_normal(z.shape)  # B: the same rows, noisier
    stores = {}
    for name, labels in (("rare", np.array([f"y{k}" for k in y])),
                         ("hand", np.array([f"y{k}" if k < 3 else "zz" for k in y]))):
        for side, zz in (("a", z), ("b", z_b)):
            path = tmp_path / f"{name}-{side}.h5"
            EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(len(z))],
                                       {"modality": np.array(["CT", "MRI"])[m], "label": labels},
                                       {("4", "last"): zz.astype("float32")}).close()
            stores[name, side] = path
    # the hand-merged class sorts last, where the merge puts it: the same codes, so the same folds
    kw = dict(term="Y|M", seeds=1, folds=3, pca=None, n_boot=200)
    with pytest.raises(EstimationError, match="class 'y3' has 1 row,"):
        compare_stores(stores["rare", "a"], stores["rare", "b"], **kw)
    merged = compare_stores(stores["rare", "a"], stores["rare", "b"], rare_classes="merge", **kw)
    hand = compare_stores(stores["hand", "a"], stores["hand", "b"], **kw)
    assert merged.difference.delta == hand.difference.delta
    assert (merged.side_a["estimate"], merged.side_b["estimate"]) == (hand.side_a["estimate"], hand.side_b["estimate"])
    counts = {f"y{k}": int((y == k).sum()) for k in range(3, 9)}
    tail = ", ".join(f"'{k}' ({c} row{'' if c == 1 else 's'})" for k, c in counts.items())
    assert f"rare classes merged on both sides (Y: {tail} are under 6; merged into one class (15 rows))" \
        in merged.note, merged.note


def _store_study(root, n, init_folds=5, run_folds=None):
    """items.jsonl over 3 triplets (row i in triplet i % 3) with 6 answer classes (row i: class i % 6),
    and two stores of it written from arrays, given to `init` at `init_folds`; returns the pipeline
    file, its [mi] folds then edited to `run_folds` where given (as a user edits it)."""
    import json

    import matprobe as mp

    root.mkdir()
    mat = np.array([("MRI", "Brain", "Plane"), ("CT", "Chest", "Grade"), ("MRI", "Knee", "Plane")])[np.arange(n) % 3]
    options = [f"o{k}" for k in range(6)]
    answers = np.arange(n) % 6
    with open(root / "items.jsonl", "w") as fh:
        for i, (m, a, t) in enumerate(mat):
            print(json.dumps({"id": f"q{i}", "question": "Which?", "options": options, "answer": int(answers[i]),
                              "modality": m, "anatomy": a, "task": t}), file=fh)
    labels = {**dict(zip(("modality", "anatomy", "task"), mat.T)), "label": np.array(options)[answers]}
    stores = [root / "related-s0.h5", root / "unrelated-s0.h5"]
    for store in stores:
        mp.EmbeddingStore.from_arrays(store, [f"q{i}" for i in range(n)], labels,
                                      {("3", "last"): np.zeros((n, 2), "float32")},
                                      answers={"pred": answers, "correct": np.ones(n, dtype=int)}).close()
    path = mp.init(data=root / "items.jsonl", target=["MRI,Knee,Plane"], store=stores, out=root / "study.toml",
                   folds=init_folds)
    if run_folds is not None:
        text = path.read_text()
        assert f"folds = {init_folds}  #" in text
        path.write_text(text.replace(f"folds = {init_folds}  #", f"folds = {run_folds}  #"))
    return path


def test_run_refuses_a_factor_the_merge_leaves_one_class_or_too_small_before_any_work(tmp_path):
    """Every class of the answer rarer than 2 rows per fold: merged, the label is one class, and the MI
    step refused it after every store's work; the same where the merged class is still too small
    (CT's 8 rows, the only rare modality). The run refuses both first, naming the key and the fixes."""
    from typer.testing import CliRunner

    from matprobe.cli import app

    # 36 rows: 6 answer classes of 6 rows each, all fewer than 10 (2 per fold of 5); every M, A, T
    # class has 12 or more. The items name no image file: stores given as they are need none, and the
    # preflight's image check (for checkpoints to extract) lets them through
    res = CliRunner().invoke(app, ["run", str(_store_study(tmp_path / "label", 36, init_folds=2, run_folds=5))])
    said = " ".join(res.output.split())
    assert res.exit_code == 2
    assert ("[mi] factors: every class of 'label' has fewer than 10 rows (2 per fold), so merged they are one class "
            "and its terms are 0 by definition; add samples, lower [mi] folds (= 5), or drop 'label'") in said, said
    assert not (tmp_path / "label" / "study-run" / "mi").exists()
    # 24 rows: CT has 8, the one rare modality, and nothing else of modality is small enough to join it
    res = CliRunner().invoke(app, ["run", str(_store_study(tmp_path / "ct", 24, init_folds=2, run_folds=5))])
    said = " ".join(res.output.split())
    assert res.exit_code == 2
    assert ("[mi] factors: the rare classes of 'modality' merged hold 8 rows, still fewer than 10 (2 per fold); add "
            "samples, lower [mi] folds (= 5), or drop 'modality' from [mi] factors") in said, said
    assert not (tmp_path / "ct" / "study-run" / "mi").exists()


def test_merge_record_names_each_class_with_its_rows_and_old_records_read_without_them():
    from matprobe.mi.chain import merged_classes_phrase

    _, m, y = _task()
    _, _, merged = merge_rare_classes({"M": m, "Y": y}, ["M", "Y"], 3)
    assert merged["Y"]["class_rows"] == {str(k): int((y == k).sum()) for k in range(3, 9)}
    said = merged_classes_phrase("Y", merged["Y"])
    assert said.startswith("Y: '3' (1 row), '4' (2 rows), '5' (2 rows)") and "(15 rows)" in said, said
    # a record written before the rows were kept (an older MI file) is said without guessing them
    old = {k: v for k, v in merged["Y"].items() if k != "class_rows"}
    assert merged_classes_phrase("Y", old) == ("Y: 6 classes ('3', '4', '5', '6', '7', '8'; 15 rows) merged into "
                                               "one, the classes with fewer than 6 rows and, where those are still "
                                               "fewer, the smallest other class")


def test_init_writes_no_factor_that_run_would_refuse(tmp_path):
    """`init` at 5 folds on the studies `run` refuses above: the answer whose every class is rarer than
    2 rows per fold is left out of the written factors with a comment (merged, it is one class: its
    terms are 0 by definition), and the file is one `run`'s check takes; a modality whose merged rare
    classes are still too few is refused at once, naming --folds, and no file is left."""
    import matprobe as mp
    from matprobe.data import load_dataset
    from matprobe.errors import InitError
    from matprobe.pipeline import _rare_class_note, load_pipeline

    path = _store_study(tmp_path / "label", 36)
    cfg = load_pipeline(path)
    assert list(cfg.factors) == ["modality", "anatomy", "task"]
    assert ("# label left out of factors: every class has fewer than 10 rows (2 per fold at folds = 5), merged they "
            "are one class and its terms are 0 by definition") in path.read_text()
    dataset = load_dataset(tmp_path / "label" / "items.jsonl")
    assert _rare_class_note(dataset, cfg) is None  # run's own check: nothing to merge, nothing refused
    # at 3 folds (6 rows needed) every answer class has its 6 rows: label stays
    again = mp.init(data=tmp_path / "label" / "items.jsonl", target=["MRI,Knee,Plane"],
                    store=[tmp_path / "label" / "related-s0.h5", tmp_path / "label" / "unrelated-s0.h5"],
                    out=tmp_path / "label" / "three.toml", folds=3)
    assert list(load_pipeline(again).factors) == ["modality", "anatomy", "task", "label"]
    with pytest.raises(InitError) as err:
        _store_study(tmp_path / "ct", 24)
    said = str(err.value)
    # the Python API names its own argument beside the flag
    assert said.startswith("--folds (folds=) 5: the rare classes of 'modality' in ") and \
        "merged hold 8 rows, still fewer than 10 (2 per fold)" in said and said.endswith("pass a lower --folds (folds=)"), said
    assert not (tmp_path / "ct" / "study.toml").exists()


def test_a_stratum_whose_answers_are_one_class_only_once_merged_is_said_so(tmp_path):
    """A stratum whose every answer class is rare over the whole data is one class to the MI
    after the merge: the report said it "has one answer class (H(Y|s) = 0)" and that its accuracy
    "only counts how often the model gives that answer", of a stratum with four answers. It now
    says the merge made it so, with the entropy of the stratum's own answers (scipy's)."""
    import json

    from scipy.stats import entropy as scipy_entropy
    from typer.testing import CliRunner

    import matprobe as mp
    from matprobe.cli import app

    root = tmp_path / "s"
    root.mkdir()
    # Brain and Knee: 16 rows each of answers o0 / o1 (8 each); Chest: 16 rows of o2..o5, 4 each,
    # which no other stratum answers: under 2 rows per fold at 3 folds (6), all merged into one
    mat = [("MRI", "Brain", "Plane")] * 16 + [("CT", "Chest", "Grade")] * 16 + [("MRI", "Knee", "Plane")] * 16
    answers = [i % 2 for i in range(16)] + [2 + i % 4 for i in range(16)] + [i % 2 for i in range(16)]
    options = [f"o{k}" for k in range(6)]
    with open(root / "items.jsonl", "w") as fh:
        for i, ((m, a, t), y) in enumerate(zip(mat, answers)):
            print(json.dumps({"id": f"q{i}", "question": "Which?", "options": options, "answer": y,
                              "modality": m, "anatomy": a, "task": t}), file=fh)
    n = len(mat)
    labels = {**dict(zip(("modality", "anatomy", "task"), np.array(mat).T)), "label": np.array(options)[answers]}
    stores = [root / "related-s0.h5", root / "unrelated-s0.h5"]
    rng = np.random.default_rng(0)
    for store in stores:
        mp.EmbeddingStore.from_arrays(store, [f"q{i}" for i in range(n)], labels,
                                      {("3", "last"): rng.normal(size=(n, 2)).astype("float32")},
                                      answers={"pred": np.array(answers), "correct": np.ones(n, dtype=int)}).close()
    path = mp.init(data=root / "items.jsonl", target=["MRI,Knee,Plane"], store=stores, out=root / "study.toml",
                   seeds=1, folds=3)
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    report = " ".join((root / "study-run" / "report.md").read_text().split())
    own = scipy_entropy([4, 4, 4, 4])  # ln 4: the Chest stratum's own answers
    assert (f"1 stratum(s) have one answer class only once the MI's rare answer classes are merged ([mi] "
            f"rare_classes = \"merge\" merges the classes rare over the whole data): CT / Chest / Grade (H(Y|s) = "
            f"{own:.3f} nats of its own answers)") in report, report
    assert "stratum(s) have one answer class (H(Y|s) = 0)" not in report
    assert "-0.000" not in report


def test_a_rerun_says_which_mi_results_it_recomputes_and_why(tmp_path):
    """After an [mi] edit a rerun recomputed every cell without a word, beside the stores it said it
    reused: each reason is said with the cells it recomputes, values as the MI files record them."""
    from typer.testing import CliRunner

    from matprobe.cli import app

    path = _store_study(tmp_path / "s", 36, init_folds=2)
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    assert "recomputed" not in res.output  # nothing earlier to recompute
    text = path.read_text()
    assert "pca = 64  #" in text
    path.write_text(text.replace("pca = 64  #", "pca = 2  #"))
    res = CliRunner().invoke(app, ["run", str(path)])
    said = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "estimating the MI chain for 2 (checkpoint, layer, pool) cells" in said, said
    assert "2 of them recomputed: MI settings pca 64 -> 2" in said, said
    res = CliRunner().invoke(app, ["run", str(path)])  # nothing changed: nothing recomputed
    assert res.exit_code == 0 and "estimating the MI chain" not in res.output, res.output
