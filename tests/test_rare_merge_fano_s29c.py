"""Rare classes merged for the MI, as `run` says it and as `check` holds Fano against it.

F6 (a first-time user's study): the warning said "classes with fewer than 6 rows (2 per fold) are
merged ... (label: 2 classes (14 rows))" where only 'left' (3 rows) was under 6 and 'down' (11 rows)
joined it so that the merged class reached 6. It now names the classes under the minimum apart
from the class that joined them, each with its rows.

F7: a check row showed H(Y|s) = 1.227 with 4 classes (Y itself) beside an Î interval capped at
ln 3 (the merged label's). Every Fano column of a row is now of Y' = Y as the MI saw it (merged);
the error is the error on Y itself, at least the error on Y', and φ̄ does not fall as ε grows, so
Fano's bound and floor for Y' hold for it. The values here are computed in the test (numpy
entropies, φ from its formula, the floor by root finding).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq

# imported here, at collection: the merge module brings torch in, seconds not of any one test
from matprobe.mi.chain import merge_rare_classes
from matprobe.mi.merge import merge_words
from matprobe.pipeline import PipelineConfig, _rare_class_note
from matprobe.theory.check import CheckResult, load_check, run_check

MAT = ("modality", "anatomy", "task")


def _h(values) -> float:
    """Plug-in entropy (nats) of the values, by hand."""
    _, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _phi(eps: float, k: int) -> float:
    """Fano's h(ε) + ε ln(K - 1), at min(ε, 1 - 1/K) (where it is largest; it never falls with ε)."""
    e = min(eps, 1.0 - 1.0 / k)
    h2 = 0.0 if e in (0.0, 1.0) else -e * math.log(e) - (1 - e) * math.log(1 - e)
    return h2 + e * math.log(k - 1)


def _floor(h_cond: float, k: int) -> float:
    """The smallest ε with φ(ε) = H(Y|Z, s) (0 where that is 0)."""
    if h_cond <= 0:
        return 0.0
    return brentq(lambda e: _phi(e, k) - h_cond, 0.0, 1.0 - 1.0 / k, xtol=1e-14)


# ------------------------------------------------------------------ F6: the merge warning


def _dataset(label_counts: dict[str, int]):
    from matprobe.data.model import MATDataset, Sample

    labels = [name for name, n in label_counts.items() for _ in range(n)]
    options = tuple(label_counts)
    return MATDataset([Sample(f"q{i}", None, "Which?", options, options.index(lab), "MRI", "Brain", "Plane", label=lab)
                       for i, lab in enumerate(labels)])


def test_the_warning_names_the_class_under_the_minimum_and_the_class_that_joined_it():
    # the study's label: 'left' 3 rows, under 6 (3 folds); alone still under 6, so the smallest
    # other class, 'down' (11 rows), joins it
    counts = {"up": 40, "right": 25, "down": 11, "left": 3}
    note = _rare_class_note(_dataset(counts), PipelineConfig(factors=("label",), mi_folds=3))
    assert ("label: 'left' (3 rows) is under 6; merged with 'down' (11 rows), the smallest other class, so the "
            "merged class reaches 6 (14 rows)") in note, note
    assert "2 classes (14 rows)" not in note and "'up'" not in note and "'right'" not in note
    assert note.startswith("classes with fewer than 6 rows (2 per fold) are merged into one class per factor")


def test_the_warning_names_every_class_under_the_minimum_and_no_joiner_when_they_reach_it_together():
    counts = {"up": 40, "right": 25, "down": 4, "left": 3}  # 7 rows together: nothing joins
    note = _rare_class_note(_dataset(counts), PipelineConfig(factors=("label",), mi_folds=3))
    assert "label: 'down' (4 rows), 'left' (3 rows) are under 6; merged into one class (7 rows)" in note, note
    assert "smallest other class," not in note
    # the rule itself is unchanged: the record merges exactly these
    ds = _dataset(counts)
    labels = {"label": ds.vocabularies["label"].labels}
    assert merge_rare_classes({"label": ds.codes("label")}, ["label"], 3, labels)[2]["label"] == {
        "classes": ["down", "left"], "rows": 7, "need": 6, "class_rows": {"down": 4, "left": 3}}


def test_merge_words_without_matching_rows_does_not_guess_which_class_joined():
    record = {"classes": ["down", "left"], "rows": 14, "need": 6}
    said = merge_words("label", record, {"down": 10, "left": 3})  # 13 rows: other rows than the merge's
    assert "'down', 'left'" in said and "14 rows" in said and "under" not in said, said
    assert merge_words("label", record, None) == said


# ------------------------------------------------------------------ F7: one label per Fano row

# (M, A, T) -> {label: rows}: S1 as the study's MRI / Brain / Orientation (4 classes, 'left' and
# 'down' merged: 3), S2 a stratum whose merged label has 3 classes and no errors
STRATA = {("MRI", "Brain", "Orientation"): {"up": 10, "right": 8, "down": 9, "left": 3},
          ("CT", "Chest", "Severity"): {"up": 10, "right": 6, "down": 2}}
ERRORS = {("MRI", "Brain", "Orientation"): 3, ("CT", "Chest", "Severity"): 0}
MI = {("MRI", "Brain", "Orientation"): (0.80, 0.55, 1.00), ("CT", "Chest", "Severity"): (0.10, 0.02, 0.20)}
RECORD = {"classes": ["down", "left"], "rows": 14, "need": 10}  # 5 folds: 'left' 3 rows, 'down' 11 joins


def _store(tmp_path):
    from matprobe.store import EmbeddingStore

    cols = {f: [] for f in (*MAT, "label")}
    correct = []
    for key, counts in STRATA.items():
        labels = [name for name, n in counts.items() for _ in range(n)]
        for lab in labels:
            for f, v in zip(MAT, key):
                cols[f].append(v)
            cols["label"].append(lab)
        wrong = ERRORS[key]
        correct += [0] * wrong + [1] * (len(labels) - wrong)
    n = len(correct)
    path = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)], {k: np.array(v) for k, v in cols.items()},
                               {("4", "last"): np.random.default_rng(0).standard_normal((n, 3)).astype("float32")},
                               answers={"pred": np.zeros(n, dtype=int), "correct": np.array(correct)}).close()
    with EmbeddingStore.open(path) as st:
        fingerprint = st.content_id
    return path, fingerprint, cols


def _mi_doc(fingerprint, record=RECORD):
    strata = [{"target": "label", "given": dict(zip(MAT, key)), "estimator": "probe", "estimate": est,
               "ci_low": lo, "ci_high": hi, "ci_level": 0.95} for key, (est, lo, hi) in MI.items()]
    return {"kind": "matprobe.mi", "store_fingerprint": fingerprint, "unit": "nats", "ci_level": 0.95,
            "factors": [*MAT, "label"], "terms": [], "strata": strata, "merged_classes": {"label": record}}


def test_the_record_is_what_the_merge_rule_gives_for_these_rows(tmp_path):
    _, _, cols = _store(tmp_path)
    record = merge_rare_classes({"label": np.array(cols["label"])}, ["label"], 5)[2]["label"]
    assert record == {**RECORD, "class_rows": {"down": 11, "left": 3}}


def test_every_fano_column_of_a_row_is_of_the_merged_label(tmp_path):
    from matprobe.theory import pac
    store, fingerprint, cols = _store(tmp_path)
    res = run_check(store, _mi_doc(fingerprint), delta=0.05)
    assert res.merged_target["fano"] == "merged"
    assert res.merged_target["class_rows"] == {"down": 11, "left": 3}
    rows = {tuple(s.given[f] for f in MAT): s for s in res.strata}
    for key, counts in STRATA.items():
        s = rows[key]
        own = [name for name, n in counts.items() for _ in range(n)]
        merged = ["rare" if lab in RECORD["classes"] else lab for lab in own]
        h, k = _h(merged), len(set(merged))
        eps = ERRORS[key] / len(own)
        eps_up = pac.test_set_bound(ERRORS[key], len(own), 0.05)
        est, lo, hi = MI[key]
        assert (s.classes, s.extra["classes_unmerged"]) == (k, len(set(own))), key
        assert s.h_y == pytest.approx(h, abs=1e-12) and s.extra["h_y_unmerged"] == pytest.approx(_h(own), abs=1e-12)
        assert s.fano_mi_lower == pytest.approx(h - _phi(eps, k), abs=1e-9)
        assert s.fano_mi_lower_finite == pytest.approx(h - _phi(eps_up, k), abs=1e-9)
        # the floor Î implies on the merged label's error, a floor on Y's error too (ε >= ε on Y')
        floor, floor_len = _floor(h - est, k), _floor(h - hi, k)
        assert s.error_floor == pytest.approx(floor, abs=1e-7) and s.error_floor_lenient == pytest.approx(
            floor_len, abs=1e-7)
        respects = "yes" if eps >= floor else ("within CI" if s.error_ci[1] >= floor_len else "NO")
        meets = "yes" if est >= h - _phi(eps, k) else ("within CI" if hi >= h - _phi(eps_up, k) else "NO")
        assert (s.error_respects_floor, s.mi_meets_bound) == (respects, meets), key
    # S1 as the study's row: 3 classes of Y' (not Y's 4), its H below Î's cap ln 3
    s1 = rows["MRI", "Brain", "Orientation"]
    assert s1.classes == 3 and s1.h_y <= math.log(3) < s1.extra["h_y_unmerged"]
    assert s1.mi_meets_bound == "yes"
    # S2: with no error, Fano demands all of H(Y'|s) and Î's interval ends at 0.2 below it: NO, which
    # is a statement about Î of Y' (the label it estimates), no longer withheld
    assert rows["CT", "Chest", "Severity"].mi_meets_bound == "NO"
    assert rows["CT", "Chest", "Severity"].error_respects_floor == "NO"
    # the aggregate's entropies are of Y' too, Y's own beside them
    every = np.array(cols["label"])
    strata = ["|".join(t) for t in zip(*(cols[f] for f in MAT))]
    merged_all = np.where(np.isin(every, RECORD["classes"]), "rare", every)
    h_mat = sum(np.mean(np.array(strata) == s) * _h(merged_all[np.array(strata) == s]) for s in set(strata))
    assert res.aggregate.h_y == pytest.approx(_h(merged_all), abs=1e-12)
    assert res.aggregate.h_y_given_mat == pytest.approx(h_mat, abs=1e-12)
    assert res.aggregate.extra["h_y_unmerged"] == pytest.approx(_h(every), abs=1e-12)


def test_the_bound_for_the_merged_label_holds_for_the_error_on_the_label_itself():
    """Fano for Y' bounds the error of predicting Y', which is at most the error on Y: the bound
    taken at Y's error is never above the one at Y''s own error (φ̄ does not fall)."""
    rng = np.random.default_rng(1)
    y = rng.choice(["up", "right", "down", "left"], 200, p=[0.4, 0.3, 0.25, 0.05])
    pred = np.where(rng.random(200) < 0.5, y, rng.choice(["up", "right", "down", "left"], 200))
    f = np.vectorize(lambda v: "rare" if v in ("down", "left") else v)
    eps, eps_merged = float(np.mean(pred != y)), float(np.mean(f(pred) != f(y)))
    assert eps_merged <= eps
    for k in (2, 3, 5):
        grid = np.linspace(0, 1, 201)
        assert all(_phi(a, k) <= _phi(b, k) + 1e-15 for a, b in zip(grid, grid[1:]))
        assert _h(f(y)) - _phi(eps, k) <= _h(f(y)) - _phi(eps_merged, k)


def test_the_table_heads_and_note_say_which_label(tmp_path):
    from typer.testing import CliRunner

    from matprobe.cli import app

    store, fingerprint, _ = _store(tmp_path)
    mi = tmp_path / "mi.json"
    mi.write_text(json.dumps(_mi_doc(fingerprint)))
    out = tmp_path / "check.json"
    res = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["check", str(store), "--mi", str(mi), "--out", str(out)])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "H(Y'|s)" in said and "Î(Z;Y'|s) [CI]" in said and "H(Y|s)" not in said
    assert ("Y' = label as the MI saw it, rare classes merged into one (label: 'left' (3 rows) is under 10; "
            "merged with 'down' (11 rows), the smallest other class, so the merged class reaches 10 (14 rows)") in said
    assert "H(Y'|s), K, Î, Fano's bound and the ε floor are all of Y'; the error is of label itself" in said
    assert "H(Y'|M,A,T)" in said and "no error floor is shown" not in said
    doc = json.loads(out.read_text())
    assert doc["merged_target"]["fano"] == "merged"
    machine = load_check(out).to_table().machine
    cols = {c.key: c for c in machine.columns}
    assert "Y' = Y with the MI's rare classes merged" in cols["h_y"].description
    assert {"h_y_unmerged", "classes_unmerged"} <= set(cols)


def test_a_merge_whose_names_are_not_ys_keeps_ys_own_columns_and_withholds_the_floor(tmp_path):
    """Where the record's classes are not among Y's values, Y' cannot be formed: the row stays of Y
    itself, Î (of some coarser label) gives no floor and no 'NO', and the note says so."""
    store, fingerprint, _ = _store(tmp_path)
    res = run_check(store, _mi_doc(fingerprint, {"classes": ["zz", "yy"], "rows": 14, "need": 10}))
    assert res.merged_target["fano"] == "unmerged"
    s1 = next(s for s in res.strata if s.given["task"] == "Orientation")
    own = [name for name, n in STRATA["MRI", "Brain", "Orientation"].items() for _ in range(n)]
    assert s1.classes == 4 and s1.h_y == pytest.approx(_h(own), abs=1e-12) and "h_y_unmerged" not in s1.extra
    assert all(s.error_floor is None and s.mi_meets_bound != "NO" for s in res.strata)
    note = " ".join(res.to_table().footnotes)
    assert "no error floor is shown" in note and "Y' =" not in note


def test_a_check_file_written_before_the_merged_label_keeps_its_note(tmp_path):
    """A check JSON of Y itself with a merged Î (no "fano" in its merge record) reads back with the
    note it had: no floor, Y's own columns."""
    store, fingerprint, _ = _store(tmp_path)
    doc = run_check(store, _mi_doc(fingerprint)).to_dict()
    doc["merged_target"] = dict(RECORD)
    table = CheckResult.from_dict(doc).to_table()
    assert any("no error floor is shown" in f and "2 classes ('down', 'left'; 14 rows)" in f
               for f in table.footnotes), table.footnotes
    assert [c.name for c in table.columns if c.key == "h_y"] == ["H(Y|s)"]


def test_the_pipeline_note_reads_names_through_the_vocabulary():
    # codes are indices into the vocabulary: the names counted are the vocabulary's, as the merge's
    from matprobe.pipeline import _class_names

    vocab = ("down", "left", "up")
    assert _class_names(np.array([2, 0, 0, 1]), vocab).tolist() == ["up", "down", "down", "left"]
