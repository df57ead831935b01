"""`check` estimates I(Z;Y|M,A,T) itself when the MI results lack it. A (M, A, T) triplet of a
few rows is a condition there, never a target: it is a stratum of its own, estimated with the
others (as `matprobe mi` treats a small stratum), where a chain over [stratum, Y] refused the whole check with advice (`--rare-classes`,
`--folds`) that `check` does not take (a user's study with a 4-item triplet)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.mi.chain import chain_terms
from matprobe.store import EmbeddingStore
from matprobe.theory.check import estimate_target_term

runner = CliRunner()


def _store(path, seed=0, rare_label=False):
    """Triplets of 60, 60 and 40 rows, and (MRI, Knöchel, Quality) of 4 (each M, A and T value on
    44 rows or more); labels a/b (c on 3 rows with rare_label)."""
    rng = np.random.default_rng(seed)
    sizes = {("CT", "Chest", "Quality"): 60, ("MRI", "Brain", "Exposure"): 60, ("MRI", "Knöchel", "Exposure"): 40,
             ("MRI", "Knöchel", "Quality"): 4}
    trip = [t for t, k in sizes.items() for _ in range(k)]
    mods, anas, tasks = (np.array([t[j] for t in trip]) for j in range(3))
    n = len(trip)
    labels = np.array(["a", "b"])[np.arange(n) % 2]
    if rare_label:
        labels[:3] = "c"
    z = np.stack([labels == "b", mods == "MRI", anas == "Knöchel", tasks == "Quality"], 1).astype(float)
    z = z + rng.normal(scale=0.7, size=z.shape)
    pred = rng.integers(0, 2, n)
    EmbeddingStore.from_arrays(
        path, [f"row-{i}" for i in range(n)], {"M": mods, "A": anas, "T": tasks, "label": labels},
        {("3", "last"): z.astype(np.float32)},
        answers={"pred": pred, "correct": (pred == (labels == "b")).astype(np.int8),
                 "probs": np.full((n, 2), 0.5, np.float32)}).close()
    return path, z, labels, mods, anas, tasks


def _mi_doc(folds=3, seeds=1):
    return {"layer": "3", "pool": "last", "settings": {"estimator": "probe", "seeds": seeds, "folds": folds, "pca": 0}}


def test_a_few_row_triplet_is_a_sparse_stratum_and_the_others_are_estimated(tmp_path):
    path, z, labels, mods, anas, tasks = _store(tmp_path / "s.h5")
    doc = estimate_target_term(path, _mi_doc(), "label")
    by = {tuple(e["given"][f] for f in ("modality", "anatomy", "task")): e for e in doc["strata"]}
    assert len(by) == 4
    small = by[("MRI", "Knöchel", "Quality")]
    assert small["n"] == 4 and 0.0 <= small["estimate"] <= np.log(2) + 1e-9  # estimated, at most its cap H(Y|s)
    # the other strata: near the same held-out term as `chain_terms` over [stratum, Y] on the
    # rows without the small triplet (its refusal was the bug; with it removed the fold plan has
    # one stratum fewer, so not bit for bit)
    big = ~((anas == "Knöchel") & (tasks == "Quality"))
    strata = np.array(["/".join(t) for t in zip(mods, anas, tasks)])[big]
    ref = chain_terms(z[big], {"stratum": strata, "Y": labels[big]}, order=["stratum", "Y"], seeds=1, folds=3,
                      pca=0, direct=False, difference=False).estimates("probe")[1].estimate
    ref_by = {s.given["stratum"]: s.estimate for s in ref.strata}
    for key, e in by.items():
        if key != ("MRI", "Knöchel", "Quality"):
            # estimated, not set to 0: each stratum's truth is 0.205 nats (two classes 1/0.7 s.d. apart,
            # numerical integral); on 40-60 rows seeds 0-3 read 0.04-0.37
            assert e["estimate"] > 0.05 and abs(e["estimate"] - ref_by["/".join(key)]) < 0.15


def _mi_file(tmp_path, path):
    out = tmp_path / "mi.json"
    res = runner.invoke(app, ["mi", str(path), "--factors", "M,A,T", "--seeds", "1", "--folds", "3", "--pca", "0",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_the_check_command_runs_on_such_a_store(tmp_path):
    path, *_ = _store(tmp_path / "s.h5")
    mi = _mi_file(tmp_path, path)
    res = runner.invoke(app, ["check", str(path), "--mi", str(mi), "--out", str(tmp_path / "check.json")])
    assert res.exit_code == 0, res.output
    check = json.loads((tmp_path / "check.json").read_text())
    assert len(check["strata"]) == 4


def test_a_rare_answer_class_names_what_check_can_do(tmp_path):
    # Y itself with 3 rows of a class at --folds 3 (6 needed): the refusal names the mi command
    # that merges them and --no-estimate, not options check lacks
    path, *_ = _store(tmp_path / "s.h5", rare_label=True)
    mi = _mi_file(tmp_path, path)
    res = runner.invoke(app, ["check", str(path), "--mi", str(mi), "--out", str(tmp_path / "check.json")])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "--rare-classes merge" in out and "matprobe mi" in out and "--no-estimate" in out
    assert "lower --folds" not in out
    assert not (tmp_path / "check.json").exists()


def test_an_estimator_given_pca_0_keeps_every_coordinate():
    # 0 is "no reduction" on the command line and in MI files; given to an estimator directly it
    # hung in the label-free reduction (found writing the tests above)
    from matprobe.mi import make_estimator

    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 5))
    y = (z[:, 0] + rng.normal(size=300) > 0).astype(int)
    a = make_estimator("probe", folds=3, seeds=1, pca=0).estimate(z, y)
    b = make_estimator("probe", folds=3, seeds=1, pca=None).estimate(z, y)
    assert (a.value, a.ci_low, a.ci_high) == (b.value, b.ci_low, b.ci_high)
