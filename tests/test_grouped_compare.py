"""`compare`, the online codelength, `relate` and `check`'s own estimate keep an item's rows
together as `mi` does (issue 22, forty-sixth session).

Before: `compare` drew its folds by row. Two stores of 300 null items seen 3 times read side A (16
columns a critic can memorise) at log 2 = 0.69 nats and ΔI up to +1.07 nats, one interval excluding 0;
two informative stores of 400 items seen 3 times read each side at log 3 (the truths 0.37-0.63). Now
each group's rows stay in one fold on both sides, and the paired bootstrap draws groups. The online
code sent copies by row: later copies were coded by a critic fitted on earlier ones; `relate` and
`check` read a null label of images seen 3 times at up to log 2. Truths by
Monte Carlo of the exact posterior (`test_grouped_folds._truth`), independent of matprobe.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi.compare import compare_arrays, compare_stores
from matprobe.mi.paired import paired_difference
from matprobe.mi.prep import joined_groups
from test_grouped_folds import _truth

torch.set_num_threads(1)


def _two_sides(draw: int, items: int = 400, copies: int = 3, d: int = 16, k: int = 3, sep=(0.35, 0.22)):
    """One set of `items` labelled items seen `copies` times (identical rows), embedded twice:
    class means at sep[0] (side A) and sep[1] (side B) x N(0, I) per coordinate, identity noise
    per item. Returns (z_a, z_b, y, item, one-row truth of A, of B)."""
    rng = np.random.default_rng(500 + draw)
    y_item = rng.integers(0, k, items)
    means = [rng.standard_normal((k, d)) * s for s in sep]
    z_item = [m[y_item] + rng.standard_normal((items, d)) for m in means]
    item = rng.permutation(np.repeat(np.arange(items), copies))
    return (z_item[0][item].astype(np.float32), z_item[1][item].astype(np.float32), y_item[item], item,
            _truth(means[0])[0], _truth(means[1])[0])


def test_the_group_bootstrap_of_copies_has_the_standard_error_of_one_row_per_group():
    # 500 groups of 4 identical values: the mean's standard error is that of 500 values, not 2,000
    rng = np.random.default_rng(0)
    per_group = rng.standard_normal(500)
    units = np.repeat(np.arange(500), 4)
    values = per_group[units]
    exact = per_group.std(ddof=0) / np.sqrt(500)  # the bootstrap's own SE of a mean of 500 draws
    grouped = paired_difference(values, np.zeros_like(values), units=units, n_boot=4000)
    by_row = paired_difference(values, np.zeros_like(values), n_boot=4000)
    assert grouped.se == pytest.approx(exact, rel=0.05)
    assert by_row.se == pytest.approx(exact / 2, rel=0.05)
    assert "group (a group's rows drawn together)" in grouped.method and "paired row" in by_row.method
    # unequal groups within strata: the stratum mean is the drawn rows' mean
    sizes = rng.integers(1, 6, 300)
    units = np.repeat(np.arange(300), sizes)
    strata = (np.arange(300) % 2)[units]
    values = rng.standard_normal(300)[units] + strata
    got = paired_difference(values, np.zeros_like(values), strata=strata, units=units, n_boot=4000)
    assert got.delta == pytest.approx(values.mean())
    # the ratio estimator's linearised SE: per stratum, sum_g (S_g - mean * n_g)^2 / n_c^2, weighted (n_c / n)^2
    var = 0.0
    for s in (0, 1):
        g = np.unique(units[strata == s])
        sums, counts = (np.bincount(units, weights=w)[g] for w in (values, np.ones_like(values)))
        m = sums.sum() / counts.sum()
        var += (counts.sum() / len(values)) ** 2 * ((sums - m * counts) ** 2).sum() / counts.sum() ** 2
    assert got.se == pytest.approx(np.sqrt(var), rel=0.08)


def test_groups_of_one_row_give_the_row_bootstraps_bits():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 400))
    strata = rng.integers(0, 3, 400)
    folds = rng.integers(0, 5, 400)
    plain = paired_difference(a, b, strata, folds=folds, n_boot=300)
    singles = paired_difference(a, b, strata, folds=folds, units=np.arange(400), n_boot=300)
    assert (plain.delta, plain.ci_low, plain.ci_high, plain.method) == \
        (singles.delta, singles.ci_low, singles.ci_high, singles.method)


def test_joined_groups_join_through_shared_rows():
    a = np.array([0, 0, 2, 3, 4, 5])
    b = np.array([0, 1, 1, 3, 4, 4])
    assert joined_groups(a, b).tolist() == [0, 0, 0, 3, 4, 4]
    assert joined_groups(None, b).tolist() == b.tolist()
    assert joined_groups(None, None) is None


def test_identical_rows_are_compared_in_one_fold_and_each_side_covers_its_one_row_truth():
    held = []
    for draw in range(2):
        za, zb, y, _, ta, tb = _two_sides(draw)
        side_a, side_b, diff = compare_arrays(za, zb, y, seeds=2)
        for side, truth in ((side_a, ta), (side_b, tb)):
            held.append(side["ci_low"] <= truth <= side["ci_high"])
            assert "1200 rows share a group with another row (400 groups of 2 or more, identical rows of Z_A or Z_B)" \
                in side["note"]
        held.append(diff.ci_low <= ta - tb <= diff.ci_high)
        assert "group (a group's rows drawn together)" in diff.method
    assert all(held), held


def test_rows_given_as_groups_are_kept_together_where_z_differs():
    za, zb, y, item, ta, tb = _two_sides(3, sep=(0.0, 0.0))
    noise = np.random.default_rng(7).standard_normal(za.shape).astype(np.float32)
    za, zb = za + 0.01 * noise, zb + 0.01 * noise[::-1]
    side_a, _, diff = compare_arrays(za, zb, y, seeds=1, groups=item, groups_name="rows of one item")
    assert "rows of one item" in side_a["note"] and side_a["ci_low"] <= 0.01
    assert diff.ci_low <= 0 <= diff.ci_high
    with pytest.raises(Exception, match="groups has 5 entries but Z has 1200 rows"):
        compare_arrays(za, zb, y, groups=item[:5])


def _null_stores(folder, draw: int, column: str = "image"):
    """Stores A (16 columns) and B (2 columns) of 300 null items seen 3 times (modality independent of Z),
    the item named in the sample column `column`; each item's rows differ by 0.01 noise."""
    from matprobe.store import EmbeddingStore

    rng = np.random.default_rng(draw)
    y_item = rng.integers(0, 2, 300)
    item = rng.permutation(np.repeat(np.arange(300), 3))
    paths = []
    for name, d in (("a", 16), ("b", 2)):
        z = rng.standard_normal((300, d))[item] + 0.01 * rng.standard_normal((900, d))
        path = folder / f"{name}.h5"
        EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(900)],
                                   {"modality": np.array(["CT", "MRI"])[y_item[item]],
                                    column: np.array([f"i{i}.png" for i in item])},
                                   {("4", "last"): z.astype(np.float32)}).close()
        paths.append(path)
    return paths


def test_stores_whose_images_repeat_compare_a_null_as_null(tmp_path):
    # by row: A read 0.69 [0.21, 0.69] and ΔI +1.03 [+0.13, +1.94]; grouped, 1 of 20 draws excluded 0
    excluded = 0
    for draw in range(6):
        folder = tmp_path / str(draw)
        folder.mkdir()
        a, b = _null_stores(folder, draw)
        comp = compare_stores(a, b, term="M", factors=["M"], seeds=1)
        assert comp.side_a["ci_low"] <= 0.01 and comp.side_a["estimate"] < 0.05
        assert "900 rows share a group with another row (300 groups of 2 or more, rows of one image)" \
            in comp.side_a["note"]
        assert "group (a group's rows drawn together)" in comp.difference.method
        excluded += not comp.difference.ci_low <= 0 <= comp.difference.ci_high
    assert excluded <= 1


def test_the_cli_compares_by_a_sample_column_and_names_a_wrong_one(tmp_path):
    import json

    from typer.testing import CliRunner

    from matprobe.cli import app

    a, b = _null_stores(tmp_path, 2, column="patient")
    runner = CliRunner(env={"COLUMNS": "250"})
    out = tmp_path / "cmp.json"
    res = runner.invoke(app, ["compare", str(a), str(b), "--term", "M", "--factors", "M", "--seeds", "1",
                              "--groups", "patient", "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert "rows of one patient" in got["side_a"]["note"] and got["side_a"]["ci_low"] <= 0.01
    bad = runner.invoke(app, ["compare", str(a), str(b), "--term", "M", "--factors", "M", "--groups", "visit"])
    assert bad.exit_code == 2 and "--groups 'visit' is not a sample column" in bad.output and "patient" in bad.output


def test_the_online_code_of_an_items_copies_is_that_of_the_items_sent_once():
    # 300 items seen 3 times, grouped: the schedule counts items and a block ends where an item's rows
    # end, so the compression is the items' own (by row: later copies were coded by a critic fitted on
    # their earlier copies, and the first blocks were fitted on 7 items)
    from matprobe.mi.codelength import online_codelength, probe_predictor

    grouped_gap, by_row_gap = [], []
    for draw in range(6):
        rng = np.random.default_rng(40 + draw)
        y = rng.integers(0, 2, 300)
        z = (rng.standard_normal((2, 32))[y] * 0.15 + rng.standard_normal((300, 32))).astype(np.float32)
        once = online_codelength(probe_predictor(seed=0), z, y, seed=draw)
        rep = np.repeat(np.arange(300), 3)
        zr = z[rep] + 0.01 * rng.standard_normal((900, 32)).astype(np.float32)
        grouped = online_codelength(probe_predictor(seed=0), zr, y[rep], seed=draw, groups=rep)
        by_row = online_codelength(probe_predictor(seed=0), zr, y[rep], seed=draw)
        assert grouped.block_ends == [3 * e for e in once.block_ends]
        assert grouped.notes == ["rows sent group by group (a group's rows in one block)"]
        grouped_gap.append(grouped.compression - once.compression)
        by_row_gap.append(by_row.compression - once.compression)
    # grouped: -0.09 to +0.02 about the items' own (mean -0.045); by row: +0.10 to +0.69 (mean +0.38)
    assert abs(np.mean(grouped_gap)) < 0.07 and max(np.abs(grouped_gap)) < 0.12, grouped_gap
    assert np.mean(by_row_gap) > 0.2, by_row_gap
    singles = online_codelength(probe_predictor(seed=0), z, y, seed=0, groups=np.arange(300))
    plain = online_codelength(probe_predictor(seed=0), z, y, seed=0)
    assert (singles.online_bits, singles.block_ends, singles.notes) == (plain.online_bits, plain.block_ends, [])


def _answered_copies_store(path, seed: int, items: int = 240, copies: int = 3, d: int = 16):
    """A store of `items` images seen `copies` times (Z: the image's N(0, I_d) vector + 0.01 noise), each
    image with one random modality, anatomy, task and a label independent of Z, and answers 70% right."""
    from matprobe.store import EmbeddingStore

    rng = np.random.default_rng(seed)
    item = rng.permutation(np.repeat(np.arange(items), copies))
    m, a, t = (rng.choice(v, items)[item] for v in (["CT", "MRI"], ["Lung", "Brain"], ["Cls", "Det"]))
    y = rng.integers(0, 2, items)[item]
    z = (rng.standard_normal((items, d))[item] + 0.01 * rng.standard_normal((len(item), d))).astype("float32")
    pred = np.where(rng.random(len(item)) < 0.7, y, 1 - y)
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(len(item))],
                               {"modality": m, "anatomy": a, "task": t, "label": np.array(["no", "yes"])[y],
                                "image": np.array([f"i{i}.png" for i in item])},
                               {("4", "last"): z},
                               answers={"pred": pred, "correct": (pred == y).astype("int8"),
                                        "probs": np.eye(2)[pred].astype("float32")}).close()
    return path


def test_relate_and_check_read_a_null_label_of_repeated_images_as_null(tmp_path):
    # by row: relate's strata read 0.25-0.69 and check's own estimate 0.42-0.68 with lower ends 0.20-0.31
    from matprobe.theory.check import estimate_target_term
    from matprobe.theory.relate import relate

    settings = {"estimator": "probe", "seeds": 1, "folds": 5, "pca": 64, "level": 0.95, "seed": 0}
    for seed in range(2):
        store = _answered_copies_store(tmp_path / f"s{seed}.h5", seed)
        points = relate([store], target="label", seeds=1).frame()
        assert points["mi"].max() < 0.2 and points["mi"].median() < 0.05, points["mi"].tolist()
        own = estimate_target_term(store, {"layer": "4", "pool": "last", "settings": settings}, "label")
        assert own["ci_low"] <= 0.01 and own["estimate"] < 0.05, own


def test_the_online_code_ends_blocks_at_group_ends_and_hands_the_predictor_the_training_groups():
    from matprobe.mi.codelength import block_ends, online_codelength

    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 5, 120)  # 120 groups of 1-4 rows
    groups = rng.permutation(np.repeat(np.arange(120), sizes))
    seen = []

    def predict(x_tr, y_tr, c_tr, sub_tr, x_ev, c_ev, y_ev, groups_tr=None):
        seen.append((x_tr[:, 0].astype(int), groups_tr, x_ev[:, 0].astype(int)))
        return np.full(len(y_ev), np.log(0.5))  # the uniform code of 2 classes: 1 bit a row

    x = np.c_[np.arange(len(groups)), np.zeros(len(groups))]  # column 0: the row's index
    code = online_codelength(predict, x, np.arange(len(groups)) % 2, groups=groups)
    assert code.online_bits == pytest.approx(len(groups)) and code.uniform_bits == pytest.approx(len(groups))
    for train, groups_tr, held in seen:
        np.testing.assert_array_equal(groups_tr, groups[train])  # the training rows' own groups
        assert not set(groups[train]) & set(groups[held])  # no group on both sides of a block end
    # the schedule counts groups: block k ends after the groups `block_ends(120)` counts
    groups_sent = [len(set(groups[np.r_[seen[0][0], *[h for _, _, h in seen[:i]]]])) for i in range(1, len(seen) + 1)]
    assert groups_sent == block_ends(120, 20)[1:]
    few = online_codelength(predict, x[:90], np.arange(90) % 2, groups=np.repeat(np.arange(30), 3))
    assert few.block_ends == [45, 90] and "the first block holds 15 groups, fewer than 20" in few.notes[0]


def test_identical_features_of_distinct_images_are_a_feature_not_copies(tmp_path):
    # a question pooled at the embedding layer: 20 templates, each fixing the task, shared by distinct
    # images. Grouped as copies (identical rows), I(Z;task) read 0 for log 2; the image column says
    # every row is its own item, so `mi`, `sweep` and `compare` read them by row. Arrays without
    # items still group identical rows.
    import matprobe as mp
    from matprobe.mi.sweep import run_sweep
    from matprobe.store import EmbeddingStore

    rng = np.random.default_rng(0)
    n, k = 1000, 20
    template = rng.integers(0, k, n)
    z = rng.standard_normal((k, 16)).astype(np.float32)[template]
    path = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)],
                               {"task": np.array(["Cls", "Det"])[template % 2],
                                "image": np.array([f"i{i}.png" for i in range(n)])},
                               {("0", "question"): z, ("1", "question"): z + 0.1}).close()
    e = mp.mi(path, "T", progress=False, seeds=1).terms["probe"][0][1]
    assert e.ci_low > 0.6 and "share a group" not in e.note  # H(task) = log 2 = 0.693
    table = run_sweep([str(path)], tmp_path / "sw.csv", factors=("T",), seeds=1, progress=False).table
    assert (table["ci_low"] > 0.6).all() and not table["note"].str.contains("share a group").any()
    comp = compare_stores(path, term="T", factors=["T"], layer="0", layer_b="1", seeds=1)
    assert comp.side_a["ci_low"] > 0.6 and comp.side_b["ci_low"] > 0.6
    arrays = mp.mi(z, {"T": template % 2}, progress=False, seeds=1).terms["probe"][0][1]
    assert "identical rows of Z" in arrays.note and arrays.ci_low < 0.1  # no items known: grouped
