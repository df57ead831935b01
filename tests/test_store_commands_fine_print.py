"""`compare` and `relate` on a small study's stores (found by a study that is not the demo):

- a side whose raw estimate fell below 0 was said to have "exceeded its entropy cap", and a ΔI
  beyond what two MIs within their caps can differ by came with p = 0.03;
- `relate` gave a bootstrap interval excluding 0 beside p = 1, when most resamples of its 4 strata
  had no rank correlation (15 of 16 MIs tied at 0) and were dropped;
- `compare --out cmp.csv` and `relate --out rel.txt` were refused after the estimates were made,
  and `check --out ck.csv` wrote JSON under a .csv name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.mi.compare import compare_stores
from matprobe.theory.relate import spearman_with_interval
from test_compare import make_store

torch.set_num_threads(1)


def _pair(tmp_path, seed=0):
    """A: T read off one coordinate (I(Z;T|M) near its cap ln 2); B: 40 noise coordinates on 60 rows,
    where the held-out critic predicts T worse than its frequencies (a raw estimate well below 0)."""
    rng = np.random.default_rng(seed)
    n = 60
    m, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
    ids = [f"q{i}" for i in range(n)]
    za = rng.standard_normal((n, 8)).astype(np.float32)
    za[:, 0] += 4 * (2 * t - 1)
    zb = rng.standard_normal((n, 40)).astype(np.float32)
    make_store(tmp_path / "a.h5", ids, m, t, {("8", "last"): za}).close()
    make_store(tmp_path / "b.h5", ids, m, t, {("8", "last"): zb}).close()
    return tmp_path / "a.h5", tmp_path / "b.h5"


def test_a_side_below_zero_is_said_so_and_a_difference_past_the_caps_has_no_p(tmp_path):
    a, b = _pair(tmp_path)
    comp = compare_stores(a, b, "T|M", seeds=2, folds=3)
    assert "below-zero" in comp.side_b["flags"] and comp.side_b["estimate"] == 0.0
    note = comp.note
    assert "B's raw estimate fell below 0 and is shown as 0" in note, note
    assert "B's raw estimate exceeded" not in note
    assert comp.difference.delta > comp.side_a["h_upper"]  # the case: past what two MIs can differ by
    assert comp.difference.p_value is None
    assert f"|ΔI| exceeds {comp.side_a['h_upper']:.4f} nats" in note and "has no p (p n/a)" in note
    assert "entropy caps (estimates at" not in note  # not the both-saturated sentence
    # strata are named by their labels, as `mi` names them (the notes said "0: 26 rows")
    assert "sparse strata (n < 30): m0: 26 rows" in comp.side_a["note"], comp.side_a["note"]


def test_a_difference_within_the_caps_keeps_its_p(tmp_path):
    # seed 5: B below 0 by little, ΔI inside what the caps allow: the p stays, the note says why ΔI differs
    a, b = _pair(tmp_path, seed=5)
    comp = compare_stores(a, b, "T|M", seeds=2, folds=3)
    assert "B's raw estimate fell below 0" in comp.note
    assert abs(comp.difference.delta) <= comp.side_a["h_upper"]
    assert comp.difference.p_value is not None and 0 < comp.difference.p_value <= 1


def test_a_rank_correlation_over_mostly_tied_points_gets_no_interval():
    # 4 strata x 4 checkpoints, every MI 0 but one: most whole-strata resamples are constant in MI
    strata = [s for _ in range(4) for s in range(4)]
    mi = np.zeros(16)
    mi[5] = 0.2
    acc = np.random.default_rng(0).uniform(0.2, 0.6, 16)
    rho, lo, hi, p = spearman_with_interval(mi, acc, clusters=strata)
    assert rho == pytest.approx(stats.spearmanr(mi, acc).statistic)
    assert np.isnan(lo) and np.isnan(hi)
    # untied points keep their interval, and it holds rho's resampling spread
    mi = np.random.default_rng(1).uniform(0, 0.5, 16)
    rho, lo, hi, p = spearman_with_interval(mi, acc, clusters=strata)
    assert lo <= rho <= hi and hi - lo > 0


@pytest.mark.parametrize("command, out, kinds", [
    ("compare", "cmp.csv", ".json"),
    ("relate", "rel.txt", ".json (everything) or .csv (the points)"),
    ("check", "ck.csv", ".json"),
])
def test_an_out_name_the_command_cannot_write_is_refused_before_any_work(tmp_path, command, out, kinds,
                                                                          monkeypatch):
    a, b = _pair(tmp_path)
    import matprobe.mi.compare as compare_mod
    import matprobe.theory.check as check_mod
    import matprobe.theory.relate as relate_mod

    def no_work(*args, **kwargs):
        raise AssertionError("estimated before refusing --out")

    for mod, name in ((compare_mod, "compare_stores"), (relate_mod, "relate"), (check_mod, "run_check")):
        monkeypatch.setattr(mod, name, no_work)
    stores = {"compare": [a, b], "relate": [a, b], "check": [a]}[command]
    res = CliRunner().invoke(app, [command, *map(str, stores), "--out", str(tmp_path / out)])
    assert res.exit_code == 2, res.output
    assert f"--out {tmp_path / out}: use a {kinds} file name" in " ".join(res.output.split())
    assert not (tmp_path / out).exists()


def test_sweep_takes_one_dataset_in_another_row_order_and_names_a_relabelled_one(tmp_path):
    """`sweep` refused stores of the items file sorted anew ('the same ids with different labels',
    which they were not); `compare` aligned the same pair. A store with one label changed is refused
    naming that id and both labels."""
    rng = np.random.default_rng(3)
    n = 80
    m, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
    ids = [f"q{i}" for i in range(n)]
    z = rng.standard_normal((n, 4)).astype(np.float32)
    z[:, 0] += 2 * (2 * t - 1)
    make_store(tmp_path / "a.h5", ids, m, t, {("8", "last"): z}).close()
    back = np.arange(n)[::-1]
    make_store(tmp_path / "rev.h5", [ids[i] for i in back], m[back], t[back], {("8", "last"): z[back]}).close()
    t2 = t.copy()
    t2[7] = 1 - t2[7]
    make_store(tmp_path / "relabelled.h5", ids, m, t2, {("8", "last"): z}).close()
    args = ["sweep", "--factors", "M,T", "--seeds", "1", "--folds", "2", "--pca", "0"]
    res = CliRunner().invoke(app, [*args, str(tmp_path / "a.h5"), str(tmp_path / "rev.h5"),
                                   "--out", str(tmp_path / "ok.csv")])
    assert res.exit_code == 0, res.output
    import pandas as pd

    table = pd.read_csv(tmp_path / "ok.csv")
    assert table["store"].nunique() == 2 and len(table) == 4  # 2 stores x 2 terms
    res = CliRunner().invoke(app, [*args, str(tmp_path / "a.h5"), str(tmp_path / "relabelled.h5"),
                                   "--out", str(tmp_path / "no.csv")])
    line = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert f"the same ids, 1 of them labelled differently (first: id 'q7': m{m[7]}, t{t[7]} vs m{m[7]}, t{t2[7]})" in line, line
    assert not (tmp_path / "no.csv").exists()


def test_a_resumed_sweep_with_a_failed_cell_prints_its_numbers_as_the_first_run_did(tmp_path):
    """A failed cell's empty numbers made the resumed table's columns text: every estimate then printed
    at full length (0.3678760791991014). The failed cell's note gives the fix, not 'rerun to retry'."""
    from matprobe.errors import EstimationError
    from matprobe.mi.sweep import Cell, SweepSettings, failed_rows, read_table, write_table
    from matprobe.present import render
    from matprobe.present.views import sweep_table

    rng = np.random.default_rng(4)
    n = 60
    m, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
    z = rng.standard_normal((n, 4)).astype(np.float32)
    z[:, 0] += 2 * (2 * t - 1)
    make_store(tmp_path / "a.h5", [f"q{i}" for i in range(n)], m, t, {("8", "last"): z}).close()
    out = tmp_path / "s.csv"
    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "a.h5"), "--factors", "M,T", "--seeds", "1", "--folds",
                                   "2", "--pca", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    done = read_table(out)
    settings = SweepSettings(factors=("M", "T"), seeds=1, folds=2, pca=None)
    bad = failed_rows(Cell(str(tmp_path / "b.h5"), "b", "8", "last"), settings,
                      EstimationError("factor 'T' class 'x' has 1 row"))
    write_table(pd.concat([done, pd.DataFrame(bad)], ignore_index=True), out)
    table = read_table(out)
    for col in ("estimate", "ci_low", "ci_high", "h_upper"):
        assert pd.api.types.is_numeric_dtype(table[col]), col
    shown = render([sweep_table(type("R", (), {"table": table, "out": out})())], "markdown")
    value = float(done.loc[done["term"] == "I(Z;T|M)", "estimate"].iloc[0])
    assert f"{value:.3f}" in shown and repr(value) not in shown
    assert all("; do what it says, then rerun the sweep" in r["note"] for r in bad)
    other = failed_rows(Cell("x.h5", "x", "8", "last"), settings, MemoryError("out of memory"))
    assert all(r["note"].endswith("rerun the sweep to retry") for r in other)  # a passing trouble: retry


def test_a_term_whose_target_has_one_class_is_refused_with_a_term_to_compare(tmp_path):
    """A study of one task compared on the default term read "factor 'T' has one class (np.int64(0))"."""
    rng = np.random.default_rng(6)
    n = 40
    m = rng.integers(0, 2, n)
    z = rng.standard_normal((n, 3)).astype(np.float32)
    for name in ("a", "b"):
        make_store(tmp_path / f"{name}.h5", [f"q{i}" for i in range(n)], m, np.zeros(n, int), {("8", "last"): z}).close()
    from matprobe.errors import EstimationError

    with pytest.raises(EstimationError, match=r"term I\(Z;T\|M\): T has one class \('t0'\) in .*a.h5, so the term is 0 "
                                              r"by definition; compare a term whose target varies with --term "
                                              r"\(e.g. --term M\)"):
        compare_stores(tmp_path / "a.h5", tmp_path / "b.h5", "T|M", seeds=1, folds=2)


def test_sweep_still_refuses_the_same_ids_and_labels_made_from_other_records(tmp_path):
    """Reordered rows are one dataset only if their records agree too: a question changed is another."""
    from matprobe.errors import ProvenanceMismatch
    from matprobe.mi.sweep import run_sweep
    from matprobe.store import EmbeddingStore

    n = 24
    rng = np.random.default_rng(8)
    frame = pd.DataFrame({"id": [f"s{i:03d}" for i in range(n)], "modality": [("CT", "MRI")[i % 2] for i in range(n)],
                          "anatomy": ["Lung"] * n, "task": [("a", "b")[(i // 2) % 2] for i in range(n)],
                          "question": ["What?"] * n})
    z = rng.standard_normal((n, 3)).astype(np.float32)
    back = frame.iloc[::-1].reset_index(drop=True)
    back.loc[3, "question"] = "Which organ?"
    for name, f, zz in (("a", frame, z), ("b", back, z[::-1].copy())):
        st = EmbeddingStore.create(tmp_path / f"{name}.h5", f, {"source": "test"}, {("0", "last"): 3})
        st.append(np.arange(n), {("0", "last"): zz})
        st.finalize().close()
    with pytest.raises(ProvenanceMismatch, match="different records for 1 shared sample"):
        run_sweep([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "s.csv", factors=("M", "T"), seeds=1,
                  folds=2, pca=None)
