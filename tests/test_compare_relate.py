"""MI vs accuracy per (checkpoint, M-A-T stratum): accuracy, Spearman and Fano against
independent computations (pandas, scipy, closed forms)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from scipy.stats import norm

from matprobe.errors import EstimationError, StoreError
from matprobe.store import EmbeddingStore
from matprobe.theory.relate import fano_accuracy_ceiling, relate, spearman_with_interval

torch.set_num_threads(1)

MUS = {"ckpt0": (0.1, 0.4, 0.7, 1.0), "ckpt1": (0.25, 0.55, 0.85, 1.3), "ckpt2": (0.05, 0.3, 1.15, 1.6)}
TRIPLETS = [("CT", "Lung", "cls"), ("CT", "Lung", "vqa"), ("MR", "Brain", "cls"), ("MR", "Brain", "vqa")]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Per stratum s, Y ~ Bernoulli(1/2), Z_1 = mu_s (2Y - 1) + N(0, 1); the model answers sign(Z_1)."""
    root = tmp_path_factory.mktemp("relate")
    rng = np.random.default_rng(4)
    n_per = 150
    paths, truth = [], []
    for name, mus in MUS.items():
        s = np.repeat(np.arange(4), n_per)
        y = rng.integers(0, 2, len(s))
        z = rng.standard_normal((len(s), 3)).astype(np.float32)
        z[:, 0] += np.asarray(mus)[s] * (2 * y - 1)
        pred = (z[:, 0] > 0).astype(np.int64)
        correct = (pred == y).astype(np.int8)
        labels = {"modality": [TRIPLETS[i][0] for i in s], "anatomy": [TRIPLETS[i][1] for i in s],
                  "task": [TRIPLETS[i][2] for i in s], "label": [f"y{v}" for v in y]}
        p = root / f"{name}.h5"
        EmbeddingStore.from_arrays(p, [f"{name}-{i}" for i in range(len(s))], labels, {("4", "last"): z},
                                   answers={"pred": pred, "correct": correct},
                                   provenance={"checkpoint": name}).close()
        paths.append(p)
        truth.append(pd.DataFrame({"checkpoint": name, "s": s, "correct": correct}))
    return paths, pd.concat(truth)


def test_relation_points_correlation_and_fano(checkpoints):
    paths, truth = checkpoints
    rel = relate(paths, target="label", seeds=1, pca=None, n_boot=500, penalties=(1e-4, 1e-2), max_iter=30)
    pts = rel.points
    assert len(pts) == 12 and rel.n_points == 12 and rel.unit == "nats"
    # accuracy per (checkpoint, stratum) straight from the generated answers
    for name in MUS:
        for i, (m, a, t) in enumerate(TRIPLETS):
            row = pts[(pts.checkpoint == name) & (pts.modality == m) & (pts.anatomy == a) & (pts.task == t)].iloc[0]
            acc = truth[(truth.checkpoint == name) & (truth.s == i)]["correct"].mean()
            assert row.accuracy == pytest.approx(acc, abs=1e-12) and row.n == 150
            ci = stats.binomtest(int(round(acc * 150)), 150).proportion_ci(0.95, method="exact")
            assert (row.acc_ci_low, row.acc_ci_high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    # Spearman is scipy's on the returned points; the bootstrap interval holds it
    ref = stats.spearmanr(pts["mi"], pts["accuracy"])
    assert rel.spearman == pytest.approx(ref.statistic, abs=1e-12)
    assert rel.ci_low <= rel.spearman <= rel.ci_high
    # the p permutes the 4 strata's accuracies the same way in each of the 3 checkpoints: each of the
    # 4! arrangements scored by scipy, the share at least as extreme as the observed one
    import itertools

    acc = {(r.checkpoint, (r.modality, r.anatomy, r.task)): r.accuracy for r in pts.itertuples()}
    null = [stats.spearmanr(pts["mi"], [acc[(r.checkpoint, TRIPLETS[perm[TRIPLETS.index((r.modality, r.anatomy,
                                                                                         r.task))]])]
                                         for r in pts.itertuples()]).statistic
            for perm in itertools.permutations(range(4))]
    assert rel.p_value == pytest.approx(np.mean(np.abs(null) >= abs(ref.statistic) - 1e-12), abs=1e-12)
    assert (rel.n_strata, rel.n_checkpoints, rel.n_permutations) == (4, 3, 24)
    # accuracy and information both grow with mu, so the ranks agree strongly; with 4 strata the p
    # cannot go below 1/24, where scipy's, counting 12 independent points, is far smaller
    assert rel.spearman > 0.7 and rel.p_value == pytest.approx(1 / 24) and ref.pvalue < 1e-4
    # the curve runs from the I = 0 ceiling, 1 - e with h(e) = H (K = 2), to 1 at I = H
    from scipy.optimize import brentq

    h_ref = rel.reference["h"]
    assert rel.reference["classes"] == 2 and h_ref == pytest.approx(pts["h"].mean(), abs=1e-12)
    e0 = brentq(lambda e: -(e * np.log(e) + (1 - e) * np.log(1 - e)) - h_ref, 1e-12, 0.5)
    assert rel.fano_curve[0]["fano_acc_max"] == pytest.approx(1 - e0, abs=1e-9)
    assert rel.fano_curve[-1]["fano_acc_max"] == pytest.approx(1.0, abs=1e-9)
    accs = [c["fano_acc_max"] for c in rel.fano_curve]
    assert all(b >= a for a, b in zip(accs, accs[1:]))
    # each point's ceiling comes with the ceilings at its MI interval's ends: for K = 2 the ceiling a
    # at I solves h(1 - a) = H - I (brentq on the binary entropy), and a one-sided point's upper end
    # (its entropy cap) allows every accuracy
    from matprobe.present.views import relation_bounds, relation_table

    def ceiling(i, h):
        if h - max(i, 0.0) <= 1e-12:
            return 1.0
        e = brentq(lambda e: -(e * np.log(e) + (1 - e) * np.log(1 - e)) - (h - max(i, 0.0)), 1e-15, 0.5)
        return 1 - e

    for r, bound in zip(pts.itertuples(), relation_bounds(pts)):
        assert r.fano_acc_max_ci_low == pytest.approx(ceiling(r.mi_ci_low, r.h), abs=1e-7)
        assert r.fano_acc_max_ci_high == pytest.approx(ceiling(min(r.mi_ci_high, r.h), r.h), abs=1e-7)
        assert r.fano_acc_max_ci_low <= r.fano_acc_max <= r.fano_acc_max_ci_high
        if bound == "lower":
            assert r.fano_acc_max_ci_high == 1.0
    shown = relation_table(rel)
    cells = [row["fano_acc_max"] for row in shown.rows]
    from matprobe.present import OneSided

    assert all(isinstance(c, OneSided) == (b == "lower") for c, b in zip(cells, relation_bounds(pts)))
    assert [tuple(c) for c in cells if not isinstance(c, OneSided)] == \
        [(r.fano_acc_max, r.fano_acc_max_ci_low, r.fano_acc_max_ci_high)
         for r, b in zip(pts.itertuples(), relation_bounds(pts)) if b != "lower"]
    machine = shown.machine_form()
    assert {"fano_acc_max_ci_low", "fano_acc_max_ci_high"} <= {c.key for c in machine.columns}


@pytest.mark.parametrize("mu", [0.3, 0.8, 1.5])
def test_fano_ceiling_closed_form_and_bayes_decoder(mu):
    """K = 2: ceiling a solves h(1 - a) = H - I. The Bayes decoder sign(z) (accuracy Phi(mu))
    must stay under the ceiling computed from the exact I(Z;Y) (quadrature)."""
    from scipy import integrate
    from scipy.special import expit

    def integrand(z):
        p = expit(2 * mu * z)
        h = -(p * np.log(p) + (1 - p) * np.log1p(-p)) if 0 < p < 1 else 0.0
        return 0.5 * (norm.pdf(z, mu) + norm.pdf(z, -mu)) * h

    h_cond = integrate.quad(integrand, -12, 12, limit=200)[0]  # H(Y|Z)
    mi = np.log(2) - h_cond
    a = fano_accuracy_ceiling(mi, np.log(2), 2)
    e = 1 - a
    assert -(e * np.log(e) + (1 - e) * np.log(1 - e)) == pytest.approx(h_cond, abs=1e-9)
    assert norm.cdf(mu) <= a + 1e-12


def test_spearman_interval_is_a_bootstrap_over_pairs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(40)
    y = x + rng.standard_normal(40)
    rho, lo, hi, p = spearman_with_interval(x, y, 0.9, 3000, seed=2)
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    # Fisher-z interval for rank correlation (Bonett & Wright 2000 variance) as an independent check
    zr = np.arctanh(rho)
    se = np.sqrt((1 + rho**2 / 2) / (40 - 3))
    fz = np.tanh([zr - norm.ppf(0.95) * se, zr + norm.ppf(0.95) * se])
    assert lo == pytest.approx(fz[0], abs=0.08) and hi == pytest.approx(fz[1], abs=0.08)


def test_relate_needs_answers(tmp_path):
    p = tmp_path / "noans.h5"
    z = np.random.default_rng(0).standard_normal((40, 2)).astype(np.float32)
    EmbeddingStore.from_arrays(p, [str(i) for i in range(40)], {"modality": ["CT"] * 40, "anatomy": ["L"] * 40,
                                                                 "task": ["c"] * 40, "label": ["a", "b"] * 20},
                               {("1", "last"): z}).close()
    with pytest.raises(StoreError, match="no stored answers"):
        relate([p])


def test_relate_cli_prints_and_writes(checkpoints, tmp_path):
    import json

    from typer.testing import CliRunner

    from matprobe.cli import app

    paths, _ = checkpoints
    out = tmp_path / "rel.json"
    res = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["relate", *map(str, paths), "--seeds", "1", "--pca", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "matprobe.relate" and len(doc["points"]) == 12
    assert f"rho(MI, accuracy) = {doc['spearman']:.3f}" in res.output
    res = CliRunner().invoke(app, ["relate", str(paths[0]), "--target", "nope"])
    assert res.exit_code == 2 and "no label column 'nope'" in res.output


@pytest.mark.parametrize("bad", ["-1", "2.5"])
def test_relate_refuses_a_negative_or_fractional_min_stratum(checkpoints, bad):
    from typer.testing import CliRunner

    from matprobe.cli import app

    paths, _ = checkpoints
    res = CliRunner().invoke(app, ["relate", str(paths[0]), "--min-stratum", bad])
    assert res.exit_code == 2
    if bad == "-1":  # typer reads the int; matprobe refuses it in one line naming the flag and the fix
        assert "--min-stratum -1: give a number of rows >= 0" in res.output and "Traceback" not in res.output


def test_relate_names_adapter_runs_on_one_base_apart_and_says_an_undefined_rho(tmp_path):
    """Two LoRA runs on one base: the stores' checkpoint is the base, so both rows were named alike;
    named base+run now (as sweep names them). A rank correlation with a constant column is undefined:
    said in words, not as 'rho = nan, p = nan'."""
    import dataclasses

    from conftest import synthetic_mat_store
    from matprobe.present.views import relation_table

    stores = [synthetic_mat_store(tmp_path / f"{run}.h5", seed=0, n=240, d=4, signal=[("label", "yes", 2.0)],
                                  accuracy=0.7, provenance={"checkpoint": "/models/vicuna", "adapter": f"/runs/{run}"})
              for run in ("related-s0", "unrelated-s0")]
    rel = relate(stores, seeds=1, folds=2, pca=None, min_stratum=5, n_boot=200)
    assert list(dict.fromkeys(rel.points["checkpoint"])) == ["/models/vicuna+related-s0", "/models/vicuna+unrelated-s0"]
    flat = dataclasses.replace(rel, spearman=float("nan"), p_value=float("nan"), points=rel.points.assign(mi=0.0))
    note = " ".join(relation_table(flat).footnotes)
    assert "undefined: Î is the same at all" in note and "nan" not in note


def test_relate_with_every_stratum_too_small_names_the_setting_that_keeps_points(tmp_path):
    """Every stratum smaller than --min-stratum (a study of 150 items over 6 triplets under the default
    30): the error said only "got 0 points"; it now gives the strata's sizes and the setting that keeps 3."""
    from conftest import synthetic_mat_store

    stores = [synthetic_mat_store(tmp_path / f"{k}.h5", seed=0, n=200, d=4, signal=[("label", "yes", 2.0)],
                                  accuracy=0.7, provenance={"checkpoint": f"/models/{k}"}) for k in "ab"]
    sizes = sorted(relate(stores, seeds=1, folds=2, pca=None, min_stratum=0, n_boot=200).points["n"], reverse=True)
    with pytest.raises(EstimationError, match=rf"0 of 16 have --min-stratum {sizes[0] + 1} answered rows \(the "
                       rf"largest strata hold {sizes[0]}, {sizes[1]}, {sizes[2]}\).*--min-stratum {sizes[2]} keeps"):
        relate(stores, seeds=1, folds=2, pca=None, min_stratum=sizes[0] + 1, n_boot=200)


def test_relate_refuses_a_too_large_min_stratum_before_estimating(tmp_path, monkeypatch):
    """A user study's `relate` refused --min-stratum 30 after 35 s of estimation: the strata's sizes
    need labels only, so the refusal now comes before any estimator is built."""
    import matprobe.theory.relate as relate_module
    from conftest import synthetic_mat_store

    stores = [synthetic_mat_store(tmp_path / f"{k}.h5", seed=0, n=200, d=4, signal=[("label", "yes", 2.0)],
                                  accuracy=0.7, provenance={"checkpoint": f"/models/{k}"}) for k in "ab"]
    built = []
    real = relate_module.make_estimator
    monkeypatch.setattr(relate_module, "make_estimator", lambda *a, **k: built.append(a) or real(*a, **k))
    with pytest.raises(EstimationError, match=r"0 of 16 have --min-stratum 1000 answered rows"):
        relate(stores, seeds=1, folds=2, pca=None, min_stratum=1000, n_boot=200)
    assert built == []
    relate(stores, seeds=1, folds=2, pca=None, min_stratum=0, n_boot=200)
    assert len(built) == 2  # the spy sees the estimators a run that goes on builds, one per store


def test_points_of_one_stratum_get_no_interval_for_rho(tmp_path):
    """Every stratum but one sparse: the bootstrap over whole strata drew that stratum every time and
    printed "95% bootstrap interval [0.345, 0.345]" (a Med-MAT study). No interval, said why."""
    from matprobe.present.views import relation_table

    rng = np.random.default_rng(3)
    n = 400
    # one stratum of 120 rows, seven of 40
    cells = [(m, a, t) for m in ("CT", "MRI") for a in ("Lung", "Brain") for t in ("Cls", "Det")]
    which = np.repeat(np.arange(8), [120] + [40] * 7)
    labels = {f: np.array([c[j] for c in cells])[which] for j, f in enumerate(("modality", "anatomy", "task"))}
    y = rng.integers(0, 2, n)
    labels["label"] = np.array(["no", "yes"])[y]
    stores = []
    for k, (w, acc) in enumerate(((0.5, 0.6), (1.0, 0.7), (2.0, 0.8))):  # more signal, more right answers
        z = rng.normal(size=(n, 3)).astype("float32")
        z[:, 0] += w * y
        pred = np.where(rng.random(n) < acc, y, 1 - y)
        path = tmp_path / f"c{k}.h5"
        EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)], labels, {("4", "last"): z},
                                   answers={"pred": pred, "correct": (pred == y).astype("int8")},
                                   provenance={"checkpoint": f"/models/c{k}"}).close()
        stores.append(path)
    rel = relate(stores, seeds=1, folds=2, pca=None, min_stratum=100, n_boot=200)
    used = rel.points[~rel.points["sparse"]]
    assert len(used) == 3 and used[["modality", "anatomy", "task"]].drop_duplicates().shape[0] == 1
    assert rel.spearman == pytest.approx(stats.spearmanr(used["mi"], used["accuracy"]).statistic, abs=1e-12)
    assert np.isnan(rel.ci_low) and np.isnan(rel.ci_high)
    assert any("its 3 points fall in one stratum" in n for n in rel.notes), rel.notes
    assert "no bootstrap interval (see the note)" in " ".join(relation_table(rel).footnotes)
