"""`relate` after a user study (8 strata x 4 checkpoints, every checkpoint answering one letter):

1. its p counted the 32 (checkpoint, stratum) points as independent (scipy's Spearman p, 0.018);
   now it permutes whole strata, the same way at every checkpoint (`stratum_permutation_test`),
   checked against enumerated permutation distributions and, on data with stratum effects on both
   MI and accuracy but no relation, for its rejection rate (near 0.05; scipy's far above);
2. it did not say that a checkpoint answering one option for nearly every item has an accuracy
   that is that option's share (the report's design warning, same rule and threshold);
3. its --out CSV lacked the `mi_bound` and `unit` columns of --format csv;
4. it had no --folds.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.store import EmbeddingStore
from matprobe.theory.relate import relate, spearman_with_interval, stratum_permutation_test

torch.set_num_threads(1)

TRIPLETS = [("CT", "Lung", "cls"), ("CT", "Lung", "vqa"), ("MR", "Brain", "cls"), ("MR", "Brain", "vqa")]
FAST = ["--seeds", "1", "--pca", "0"]


def _enumerated_p(x, y, strata, checkpoints) -> float:
    """The two-sided permutation p by brute force: every permutation of the strata applied to y in each
    checkpoint, scipy's Spearman over the pairs then present, the share with |rho| >= the observed."""
    names = sorted(set(strata))
    y_at = dict(zip(zip(checkpoints, strata), y))
    observed = stats.spearmanr(x, y).statistic
    hits, total = 0, 0
    for perm in itertools.permutations(names):
        to = dict(zip(names, perm))
        pairs = [(xi, y_at[(c, to[s])]) for xi, c, s in zip(x, checkpoints, strata) if (c, to[s]) in y_at]
        xs, ys = zip(*pairs)
        rho = stats.spearmanr(xs, ys).statistic
        hits += bool(abs(rho) >= abs(observed) - 1e-10)
        total += 1
    return hits / total


def _grid(n_strata, n_checkpoints):
    strata = [f"s{j}" for _ in range(n_checkpoints) for j in range(n_strata)]
    checkpoints = [f"c{i}" for i in range(n_checkpoints) for _ in range(n_strata)]
    return strata, checkpoints


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_p_is_the_enumerated_strata_permutation_distributions(seed):
    rng = np.random.default_rng(seed)
    strata, checkpoints = _grid(5, 3)
    x = rng.standard_normal(15)
    y = rng.integers(0, 4, 15) / 4  # accuracies of 4 items: ties, as a stratum's accuracies have
    res = stratum_permutation_test(x, y, strata, checkpoints)
    assert res["p_value"] == pytest.approx(_enumerated_p(x, y, strata, checkpoints), abs=1e-12)
    assert (res["n_strata"], res["n_checkpoints"], res["n_permutations"], res["exact"]) == (5, 3, 120, True)
    assert res["method"] == ("permutation of the 5 strata's identities, the same across the 3 checkpoints "
                             "(all 120 arrangements)")


def test_a_stratum_missing_at_a_checkpoint_leaves_its_pairs_out():
    rng = np.random.default_rng(5)
    strata, checkpoints = _grid(4, 3)
    x, y = rng.standard_normal(12), rng.standard_normal(12)
    keep = np.ones(12, bool)
    keep[[2, 7]] = False  # s2 sparse at c0, s3 at c1
    xs, ys = x[keep], y[keep]
    st, ck = [s for s, k in zip(strata, keep) if k], [c for c, k in zip(checkpoints, keep) if k]
    res = stratum_permutation_test(xs, ys, st, ck)
    assert res["p_value"] == pytest.approx(_enumerated_p(xs, ys, st, ck), abs=1e-12)
    assert res["n_permutations"] == 24


def test_a_tiny_case_by_hand():
    # one checkpoint, three strata: x = (1, 2, 3), y = (1, 2, 3); rho = 1; of the 6 arrangements only
    # the identity (rho 1) and the reversal (rho -1) reach |rho| = 1: p = 2/6
    res = stratum_permutation_test([1, 2, 3], [1, 2, 3], ["a", "b", "c"], ["c0"] * 3)
    assert res["p_value"] == pytest.approx(1 / 3, abs=1e-15)
    # two checkpoints of the same three strata, the second reversed in x only: rho over six points is
    # 0, so every arrangement is as extreme: p = 1
    res = stratum_permutation_test([1, 2, 3, 3, 2, 1], [1, 2, 3, 1, 2, 3], ["a", "b", "c"] * 2,
                                   ["c0"] * 3 + ["c1"] * 3)
    assert res["p_value"] == 1.0


def test_drawn_arrangements_agree_with_enumeration_and_count_the_observed_one():
    rng = np.random.default_rng(3)
    strata, checkpoints = _grid(6, 3)
    x = rng.standard_normal(18)
    y = 0.6 * np.tile(x[:6], 3) + rng.standard_normal(18)  # a stratum-level relation: small p
    exact = stratum_permutation_test(x, y, strata, checkpoints)
    drawn = stratum_permutation_test(x, y, strata, checkpoints, n_perm=4999, seed=1, enumerate_max=100)
    assert exact["exact"] and not drawn["exact"] and drawn["n_permutations"] == 5000
    se = np.sqrt(exact["p_value"] * (1 - exact["p_value"]) / 5000)
    assert abs(drawn["p_value"] - exact["p_value"]) < 4 * se + 1e-3
    assert drawn["p_value"] >= 1 / 5000  # (1 + hits) / (1 + draws): never 0
    assert "the observed and 4999 random arrangements" in drawn["method"]


def _null_datasets(n_sets, n_strata=6, n_checkpoints=4, seed=28):
    """MI and accuracy per (checkpoint, stratum) = a stratum effect + a checkpoint effect + noise, drawn
    independently for the two: no relation between them, but points sharing a stratum alike."""
    rng = np.random.default_rng(seed)
    for _ in range(n_sets):
        def draw():
            return (rng.standard_normal(n_strata)[None] + 0.3 * rng.standard_normal(n_checkpoints)[:, None]
                    + 0.3 * rng.standard_normal((n_checkpoints, n_strata))).ravel()
        yield draw(), draw()


def test_with_stratum_effects_and_no_relation_the_p_rejects_at_its_level_and_scipys_does_not():
    strata, checkpoints = _grid(6, 4)
    new, naive = [], []
    for mi, acc in _null_datasets(400):
        new.append(stratum_permutation_test(mi, acc, strata, checkpoints)["p_value"])
        naive.append(stats.spearmanr(mi, acc).pvalue)
    new_rate, naive_rate = np.mean(np.array(new) <= 0.05), np.mean(np.array(naive) <= 0.05)
    # exact test of 720 arrangements: size 36/720 = 0.05; 400 sets put the rate within about +-0.022
    assert 0.02 <= new_rate <= 0.08, new_rate
    # the 24 points as independent (6 strata really): rejects about six times as often
    assert naive_rate >= 0.2, naive_rate


# ---------------------------------------------------------------------------------------- stores


def _store(path, name, pred, y, s):
    labels = {"modality": [TRIPLETS[i][0] for i in s], "anatomy": [TRIPLETS[i][1] for i in s],
              "task": [TRIPLETS[i][2] for i in s], "label": [f"y{v}" for v in y], "answer_index": y}
    z = np.random.default_rng(len(name)).standard_normal((len(s), 3)).astype(np.float32)
    z[:, 0] += 1.5 * (2 * y - 1)
    EmbeddingStore.from_arrays(path, [f"r{i}" for i in range(len(s))], labels, {("4", "last"): z},
                               answers={"pred": pred}, provenance={"checkpoint": name}).close()
    return path


@pytest.fixture(scope="module")
def answering(tmp_path_factory):
    """Three checkpoints of the same 160 items (4 strata of 40, Y binary): "stuck" answers option A
    for 144 of 160 (90%, the threshold), "almost" for 143 (89%), "reads" answers from the features."""
    root = tmp_path_factory.mktemp("relate_study")
    rng = np.random.default_rng(0)
    s = np.repeat(np.arange(4), 40)
    y = rng.integers(0, 2, len(s))
    stuck = np.zeros(len(s), np.int64)
    stuck[rng.choice(len(s), 16, replace=False)] = 1
    almost = np.zeros(len(s), np.int64)
    almost[rng.choice(len(s), 17, replace=False)] = 1
    paths = [_store(root / "stuck.h5", "stuck", stuck, y, s), _store(root / "almost.h5", "almost", almost, y, s),
             _store(root / "reads.h5", "reads", np.where(rng.random(len(s)) < 0.8, y, 1 - y), y, s)]
    return root, paths


def test_relate_says_a_checkpoint_answers_one_option_as_the_report_does(answering):
    from matprobe.report.design import one_option_sentences, top_answer

    root, paths = answering
    rel = relate(paths, target="answer", seeds=1, folds=2, pca=None, n_boot=100, min_stratum=10)
    said = [n for n in rel.notes if "answers option" in n]
    # the report's rule and sentence on the same store: only "stuck" (90%) is flagged, not "almost" (89%)
    rec = top_answer(paths[0])
    assert (rec["option"], rec["count"], rec["answered"]) == ("A", 144, 160)
    assert top_answer(paths[1])["count"] == 143
    (report,) = one_option_sentences({"stuck": ("A", 144, 160)})
    assert said == [report + "; here each stratum's accuracy is likewise how often A is its correct answer"]
    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["relate", *map(str, paths), "--target", "answer",
                                                          *FAST, "--folds", "2", "--min-stratum", "10"])
    assert res.exit_code == 0, res.output
    assert "note: checkpoint stuck answers option A for 144 of 160 items (90%)" in res.output
    assert "checkpoint almost answers" not in res.output and "checkpoint reads answers" not in res.output


def test_relate_out_csv_has_the_columns_of_format_csv_in_bits(answering):
    root, paths = answering
    out = root / "points-bits.csv"
    res = CliRunner().invoke(app, ["relate", str(paths[0]), str(paths[2]), *FAST, "--min-stratum", "10", "--bits",
                                   "--format", "csv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    shown = pd.read_csv(io.StringIO(res.stdout))
    written = pd.read_csv(out)
    pd.testing.assert_frame_equal(shown, written)
    assert {"mi_bound", "unit"} <= set(written.columns) and (written["unit"] == "bits").all()
    assert set(written["mi_bound"]) <= {"two-sided", "lower"}


def test_relate_folds_reach_the_estimator_from_the_cli_and_the_api(answering, monkeypatch):
    import matprobe as mp
    import matprobe.theory.relate as theory

    root, paths = answering
    seen = []
    real = theory.relate

    def spy(*args, **kwargs):
        seen.append(kwargs["folds"])
        return real(*args, **kwargs)

    monkeypatch.setattr(theory, "relate", spy)
    out = root / "folds3.csv"
    res = CliRunner().invoke(app, ["relate", str(paths[0]), str(paths[2]), *FAST, "--folds", "3",
                                   "--min-stratum", "10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rel = mp.relate([paths[0], paths[2]], seeds=1, folds=3, pca=0, min_stratum=10, progress=False)
    assert seen == [3, 3]
    # the same numbers as the theory function at 3 folds, and not those of the default 5
    three = real([paths[0], paths[2]], seeds=1, folds=3, pca=None, min_stratum=10)
    five = real([paths[0], paths[2]], seeds=1, pca=None, min_stratum=10)
    assert pd.read_csv(out)["mi"].tolist() == rel.points["mi"].tolist() == three.points["mi"].tolist()
    assert three.points["mi"].tolist() != five.points["mi"].tolist()
    res = CliRunner().invoke(app, ["relate", str(paths[0]), "--folds", "1"])
    assert res.exit_code == 2  # at least 2 folds, as `mi` asks


def test_with_stratum_effects_and_no_relation_the_interval_drawing_strata_covers_zero():
    # the interval a claim: over null data sets whose points share stratum effects, one drawing whole
    # strata excludes rho = 0 near its nominal 10% (90% intervals); one drawing points far more often
    strata, _ = _grid(6, 4)
    by_stratum, by_point = [], []
    for mi, acc in _null_datasets(150, seed=29):
        _, lo, hi, _ = spearman_with_interval(mi, acc, 0.9, 400, seed=1, clusters=strata)
        by_stratum.append(lo > 0 or hi < 0)
        _, lo, hi, _ = spearman_with_interval(mi, acc, 0.9, 400, seed=1)
        by_point.append(lo > 0 or hi < 0)
    assert np.mean(by_stratum) <= 0.2, np.mean(by_stratum)
    assert np.mean(by_point) >= 0.3, np.mean(by_point)


def test_strata_of_unequal_size_are_drawn_whole_too():
    # a stratum missing at one checkpoint: the loop over draws, the same clusters' points
    strata, _ = _grid(4, 3)
    x, y = np.arange(12.0), np.arange(12.0) % 5
    keep = np.ones(12, bool)
    keep[0] = False
    args = (x[keep], y[keep], 0.9, 200)
    rho, lo, hi, _ = spearman_with_interval(*args, seed=3, clusters=[s for s, k in zip(strata, keep) if k])
    assert rho == pytest.approx(stats.spearmanr(x[keep], y[keep]).statistic)
    assert -1 <= lo <= rho + 1e-12 and rho - 1e-12 <= hi <= 1
