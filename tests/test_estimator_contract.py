"""The estimator contract: a plug-in written only against `matprobe.mi.interface` (a closed-form
Gaussian-class LDA estimator, below) registered by name runs through `matprobe mi`, `sweep` and
`compare`, and its numbers arrive unchanged: checked against the same quantities computed
independently with sklearn's LinearDiscriminantAnalysis. Also: the registry's refusals."""

from __future__ import annotations

import json
from statistics import NormalDist

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.errors import EstimationError
from matprobe.mi.interface import EstimatorTags, MIEstimate, MIEstimator, TermNames

torch.set_num_threads(1)
runner = CliRunner(env={"COLUMNS": "220"})
LEVEL = 0.9


# ---------------------------------------------------------------------- the plug-in (Protocol only)

class GaussianLDAPlugin:
    """I(Z;Y) from class-conditional Gaussians with one pooled (maximum-likelihood) covariance,
    by resubstitution: r_i = log q(y_i|z_i) - log p(y_i), value = mean r, normal interval.
    Implements I(Z;Y) only: no folds, no native conditioning, no sub-classes."""

    name = "lda-plugin"
    tags = EstimatorTags(pointwise=True)

    def __init__(self, ci_level: float = LEVEL, unit: str = "nats", **common_settings_ignored):
        self.ci_level, self.unit = ci_level, unit

    def params(self) -> dict:
        return {"ci_level": self.ci_level, "covariance": "pooled, maximum likelihood"}

    def estimate(self, z, y, c=None, *, sub=None, plan=None, names: TermNames | None = None,
                 pointwise: bool = False) -> MIEstimate:
        assert c is None, "not tagged conditional: callers must not pass c"
        z = np.asarray(z, dtype=np.float64)
        classes, yi, counts = np.unique(y, return_inverse=True, return_counts=True)
        n = len(yi)
        means = np.stack([z[yi == k].mean(axis=0) for k in range(len(classes))])
        resid = z - means[yi]
        cov = resid.T @ resid / n
        prec = np.linalg.inv(cov)
        log_prior = np.log(counts / n)
        # log N(z; mu_k, cov) + log pi_k up to a constant shared by every class
        scores = z @ prec @ means.T - 0.5 * np.einsum("kd,de,ke->k", means, prec, means) + log_prior
        scores -= scores.max(axis=1, keepdims=True)
        log_q = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
        r = log_q[np.arange(n), yi] - log_prior[yi]
        value, se = r.mean(), r.std(ddof=1) / np.sqrt(n)
        half = NormalDist().inv_cdf(0.5 + self.ci_level / 2) * se
        h = float(-(counts / n) @ log_prior)
        scale = 1.0 / np.log(2) if self.unit == "bits" else 1.0
        diag = {"pointwise": {"values": r[None, :]}} if pointwise else {}
        return MIEstimate(value=value * scale, ci_low=(value - half) * scale, ci_high=(value + half) * scale,
                          ci_level=self.ci_level, unit=self.unit, n_train=n, n_eval=n, estimator=self.name,
                          params=self.params(), diagnostics=diag, h_upper=h * scale)


def _register():
    from matprobe.mi.registry import register_estimator

    return register_estimator("lda-plugin", GaussianLDAPlugin, GaussianLDAPlugin.tags, replace=True)


# ---------------------------------------------------------------------- independent values (sklearn)

def sk_rows(z, y):
    """Per-row log q(y|z) - log p(y) from sklearn's LDA (its 'lsqr' solver uses the same
    maximum-likelihood pooled covariance and the class frequencies as priors)."""
    lda = LinearDiscriminantAnalysis(solver="lsqr").fit(z.astype(np.float64), y)
    classes, yi, counts = np.unique(y, return_inverse=True, return_counts=True)
    lp = lda.predict_log_proba(z.astype(np.float64))
    return lp[np.arange(len(y)), yi] - np.log(counts / len(y))[yi]


def sk_term(z, y, c=None):
    """(value, ci_low, ci_high) of I(Z;Y|C) = sum_c p(c) I_c, half-widths in quadrature."""
    zq = norm.ppf(0.5 + LEVEL / 2)
    c = np.zeros(len(y), dtype=np.int64) if c is None else c
    value, lo2, rows = 0.0, 0.0, np.zeros(len(y))
    for code in np.unique(c):
        sel = c == code
        if np.unique(y[sel]).size < 2:
            continue
        r = sk_rows(z[sel], y[sel])
        rows[sel] = r
        w = sel.mean()
        value += w * r.mean()
        lo2 += (w * zq * r.std(ddof=1) / np.sqrt(sel.sum())) ** 2
    return value, value - np.sqrt(lo2), value + np.sqrt(lo2), rows


def joint(*cols):
    return np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)[1].ravel()


# ---------------------------------------------------------------------- fixtures

NAMES = {"M": ["CT", "MRI"], "A": ["Brain", "Chest", "Lung"], "T": ["cls", "det", "seg"]}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two stores of the same 900 samples (B = A's features plus noise), layers 0 and 1."""
    from matprobe.mi.groundtruth import chain_task
    from matprobe.store import EmbeddingStore

    _register()
    task = chain_task((2, 3, 3), d=6, signal_dim=4, separations=(1.0, 1.0, 1.0), seed=3)
    z, f = task.sample(900, seed=5)
    zb = z + np.random.default_rng(1).standard_normal(z.shape).astype(np.float32)
    root = tmp_path_factory.mktemp("plugin")
    labels = {"modality": [NAMES["M"][v] for v in f["M"]], "anatomy": [NAMES["A"][v] for v in f["A"]],
              "task": [NAMES["T"][v] for v in f["T"]]}
    ids = [f"s{i:04d}" for i in range(900)]
    paths = []
    for name, feats in (("a", z), ("b", zb)):
        p = root / f"{name}.h5"
        EmbeddingStore.from_arrays(p, ids, labels, {("0", "last"): feats, ("1", "last"): 0.5 * feats},
                                   provenance={"checkpoint": name}).close()
        paths.append(p)
    yield paths, z, zb, f
    from matprobe.mi.registry import unregister_estimator

    unregister_estimator("lda-plugin")


# ---------------------------------------------------------------------- tests

def test_plugin_satisfies_the_protocol():
    assert isinstance(GaussianLDAPlugin(), MIEstimator)


def test_plugin_through_mi_cli(stores, tmp_path):
    paths, z, _, f = stores
    out = tmp_path / "mi.json"
    res = runner.invoke(app, ["mi", str(paths[0]), "--factors", "M,A,T", "--layer", "0", "--estimator",
                              "lda-plugin", "--level", str(LEVEL), "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    expect = [sk_term(z, f["M"]), sk_term(z, f["A"], f["M"]), sk_term(z, f["T"], joint(f["M"], f["A"]))]
    assert [t["term"] for t in doc["terms"]] == ["I(Z;M)", "I(Z;A|M)", "I(Z;T|M,A)"]
    for t, (v, lo, hi, _) in zip(doc["terms"], expect):
        assert t["estimator"] == "lda-plugin"
        assert (t["estimate"], t["ci_low"], t["ci_high"]) == pytest.approx((v, lo, hi), rel=1e-6, abs=1e-9)
    # per-stratum entries of I(Z;T|M,A): each stratum's own LDA value
    mc = joint(f["M"], f["A"])
    strata = [s for s in doc["strata"] if s["target"] == "T"]
    assert len(strata) == 6
    for s in strata:
        sel = (np.array(NAMES["M"])[f["M"]] == s["given"]["M"]) & (np.array(NAMES["A"])[f["A"]] == s["given"]["A"])
        assert s["n"] == sel.sum() and len(np.unique(mc[sel])) == 1
        assert s["estimate"] == pytest.approx(sk_rows(z[sel], f["T"][sel]).mean(), rel=1e-6)
    direct = sk_term(z, joint(f["M"], f["A"], f["T"]))[0]
    assert doc["direct"]["estimate"] == pytest.approx(direct, rel=1e-6)
    # the chain difference I(Z;M,A) - I(Z;M) for the middle term
    diff = sk_term(z, joint(f["M"], f["A"]))[0] - expect[0][0]
    assert doc["terms"][1]["chain_difference"] == pytest.approx(diff, rel=1e-6)


def test_plugin_through_sweep_with_worker_processes(stores, tmp_path):
    from matprobe.mi.sweep import Cell, pointwise_name, read_pointwise, run_sweep

    paths, z, _, f = stores
    out = tmp_path / "sweep.csv"
    # two cells in two spawned workers, which learn the plug-in from the registration they are sent
    res = run_sweep([paths[0]], out, factors=("M", "A"), estimator="lda-plugin", seeds=1, jobs=2,
                    ci_level=LEVEL)
    tab = res.table
    assert len(tab) == 4 and set(tab["layer"]) == {"0", "1"}
    for layer, feats in (("0", z), ("1", 0.5 * z)):
        rows = tab[tab["layer"] == layer]
        for row, (v, lo, hi, r) in zip(rows.itertuples(), [sk_term(feats, f["M"]), sk_term(feats, f["A"], f["M"])]):
            assert (row.estimate, row.ci_low, row.ci_high) == pytest.approx((v, lo, hi), rel=1e-5)
            pw = read_pointwise(tmp_path / "sweep.csv.pointwise" / pointwise_name(Cell(str(paths[0]), "a", layer, "last")))
            np.testing.assert_allclose(pw[f"{row.term}/values"][0], r, rtol=1e-4, atol=1e-5)


def test_plugin_through_compare(stores, tmp_path):
    paths, z, zb, f = stores
    out = tmp_path / "cmp.json"
    res = runner.invoke(app, ["compare", str(paths[0]), str(paths[1]), "--term", "A|M", "--layer", "0",
                              "--estimator", "lda-plugin", "--level", str(LEVEL), "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    va, vb = sk_term(z, f["A"], f["M"]), sk_term(zb, f["A"], f["M"])
    assert (doc["side_a"]["estimate"], doc["side_a"]["ci_low"]) == pytest.approx(va[:2], rel=1e-6)
    assert (doc["side_b"]["estimate"], doc["side_b"]["ci_high"]) == pytest.approx((vb[0], vb[2]), rel=1e-6)
    d = doc["difference"]
    assert d["delta"] == pytest.approx(va[0] - vb[0], rel=1e-6)
    assert d["ci_low"] < d["delta"] < d["ci_high"] and d["slack"] == 0.0


def test_registry_lists_and_refuses(stores):
    from matprobe.mi.compare import compare_arrays
    from matprobe.mi.registry import available_estimators, make_estimator, register_estimator

    names = available_estimators()
    assert {"probe", "mine", "nwj", "infonce", "smile", "ksg", "lda-plugin"} <= set(names)
    with pytest.raises(EstimationError, match="unknown estimator 'nope'; registered: probe, .*lda-plugin"):
        make_estimator("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("probe", GaussianLDAPlugin, GaussianLDAPlugin.tags)
    register_estimator("lda-no-rows", GaussianLDAPlugin, EstimatorTags(pointwise=False))
    try:
        _, z, zb, f = stores
        with pytest.raises(EstimationError, match="'lda-plugin' cannot return per-row terms"):
            compare_arrays(z, zb, f["A"], f["M"], estimator="lda-no-rows")
    finally:
        from matprobe.mi.registry import unregister_estimator

        unregister_estimator("lda-no-rows")


def test_unknown_estimator_on_the_cli_is_one_line(stores):
    paths, *_ = stores
    res = runner.invoke(app, ["mi", str(paths[0]), "--layer", "0", "--estimator", "nope"])
    assert res.exit_code == 2
    assert res.output.strip().startswith("error: unknown estimator 'nope'; registered: probe")
    assert len(res.output.strip().splitlines()) == 1
