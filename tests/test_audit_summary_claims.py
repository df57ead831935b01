"""An audit's findings on a run's report (its scratch /tmp/s28/audit): a summary sentence that claimed
"every checkpoint" of condition means, one-option answer heads unflagged on the held-out items,
Fano's K said nowhere, PAC inputs unstated, and a caveat about "the caps' rounding" at 92-94%."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from matprobe.report.render import findings, load_run, summary_lines
from matprobe.store import EmbeddingStore
from test_report import DEMO


def _y_line(data) -> str:
    return next(line for line in summary_lines(data, findings(data)) if line.startswith("Information about Y"))


def test_the_at_cap_sentence_claims_every_checkpoint_only_when_every_checkpoint_is_there():
    data = load_run(DEMO)
    data.strata.loc[data.strata["is_target"], "h_y"] = 1.0  # every target's cap H(Y | target) = 1
    y = data.results["metric"] == "I(Z;Y|target) nats"
    data.results.loc[y, "value"] = 0.97
    assert "Y is read off Z there in every checkpoint" in _y_line(data)
    # the audit: the conditions' means within 10% of the cap, one checkpoint at 82% of it
    low = y & (data.results["condition"] == "Unrelated") & (data.results["seed"] == 2) & (
        data.results["target"] == "MRI,Brain,Exposure")
    data.results.loc[low, "value"] = 0.82
    line = _y_line(data)
    n = int((y & data.results["condition"].isin(["Related", "Unrelated"])).sum())
    assert "in every checkpoint" not in line
    assert (f"Both means are within 10% of its cap H(Y | target) = 1.000 nats, but only {n - 1} of the {n} "
            "checkpoints are individually (the lowest, Unrelated seed 2 on MRI / Brain / Exposure, at 82% of it)") in line


def _store(path, target_pred, other_pred, n_options=4):
    n_t, n_o = len(target_pred), len(other_pred)
    n = n_t + n_o
    EmbeddingStore.from_arrays(
        path, [f"i{i}" for i in range(n)],
        {"modality": ["MRI"] * n_t + ["CT"] * n_o, "anatomy": ["Brain"] * n, "task": ["Exposure"] * n,
         "answer_index": [i % 4 for i in range(n)], "n_options": [n_options] * n},
        {("0", "last"): np.zeros((n, 2), np.float32)},
        answers={"pred": np.array(list(target_pred) + list(other_pred)),
                 "probs": np.full((n, 4), 0.25, np.float32)}).close()
    return str(path)


def test_one_option_is_read_on_the_held_out_target_items(tmp_path):
    """The audit's five of six checkpoints gave one letter for 36 of the 36 target items but at most
    75% of all 372: the rule read all items and said nothing."""
    from matprobe.report.design import one_option_answers, one_option_sentences, target_options

    target = ["MRI", "Brain", "Exposure"]
    cks = []
    for name, tp in (("stuck", [2] * 20), ("nearly", [2] * 18 + [0, 1]), ("mixed", [2] * 17 + [0, 1, 3])):
        path = _store(tmp_path / f"{name}.h5", tp, [0, 1, 3] * 7)  # all items: at most 20 of 41 one option
        cks.append(type("Ck", (), {"name": name, "store": path, "extra": {"target": target}})())
    found = one_option_answers(cks, lambda p: p)
    assert found == {"stuck": ("C", 20, 20, "MRI / Brain / Exposure"), "nearly": ("C", 18, 20, "MRI / Brain / Exposure")}
    assert one_option_sentences({"stuck": found["stuck"]}) == [
        "checkpoint stuck answers option C for 20 of the 20 items of its held-out target MRI / Brain / Exposure "
        "(100%): its accuracy there is the share of those items whose answer is C, not evidence that it reads "
        "the images"]
    assert target_options(cks, lambda p: p) == {"stuck": 4, "nearly": 4, "mixed": 4}


def test_the_accuracy_comparison_states_chance():
    data = load_run(DEMO)  # the committed run.json records each target's options (no store needed)
    line = next(x for x in summary_lines(data, findings(data)) if x.startswith("**Is the Related"))
    acc = pd.read_csv(DEMO / "results.csv").query("metric == 'accuracy'").groupby("condition")["value"].mean()
    assert (f"Related {acc['Related']:.3f}, Unrelated {acc['Unrelated']:.3f} (chance 1/4 = 0.250; 3 seeds each, "
            "paired by seed)") in line
    data.options = {k: 3 for k in data.options}
    line = next(x for x in summary_lines(data, findings(data)) if x.startswith("**Is the Related"))
    assert f"(chance 1/3 = {1 / 3:.3f}; 3 seeds each" in line


def test_fano_k_is_said_and_the_bound_matches_the_formula(tmp_path):
    """A stratum whose Y takes 3 of the 4 options: K = 3 (answers outside Y's classes mapped onto them
    cannot add errors), said in the output with the options offered; the bound as scipy computes it."""
    from matprobe.theory.check import run_check

    n = 40
    y = np.array([0, 1, 2, 0] * 10)
    pred = y.copy()
    pred[:12] = 3  # 12 answers outside Y's classes: errors
    path = tmp_path / "k.h5"
    EmbeddingStore.from_arrays(path, [f"i{i}" for i in range(n)],
                               {"modality": ["CT"] * n, "anatomy": ["Chest"] * n, "task": ["Exposure"] * n,
                                "answer_index": y, "n_options": [4] * n},
                               {("0", "last"): np.zeros((n, 2), np.float32)},
                               answers={"pred": pred, "probs": np.full((n, 4), 0.25, np.float32)}).close()
    s = run_check(path, None).to_dict()["strata"][0]
    assert s["classes"] == 3 and s["options"] == 4
    assert s["classes_basis"].startswith("Y's classes in the stratum (fewer than the 4 options offered")
    eps = 12 / 40
    h = stats.entropy(np.bincount(y))
    phi = -eps * math.log(eps) - (1 - eps) * math.log(1 - eps) + eps * math.log(3 - 1)
    assert s["fano_mi_lower"] == pytest.approx(h - phi, abs=1e-12)


def test_fano_with_k_the_labels_support_holds_when_answers_fall_outside_it():
    """Why K_s = |support of Y| is valid though the model can answer an option Y never takes (the
    audit asked for K = the options): H(Y|Ŷ) <= φ_K(min(ε, 1 - 1/K)) on random joints."""
    from matprobe.theory.fano import fano_entropy_upper

    rng = np.random.default_rng(0)
    worst = -np.inf
    for _ in range(600):
        k, extra = int(rng.integers(2, 5)), int(rng.integers(1, 3))
        p = rng.dirichlet(np.full(k * (k + extra), rng.choice([0.05, 0.3, 1.0]))).reshape(k, k + extra)
        eps = 1 - np.trace(p[:, :k])
        h = sum(p[:, j].sum() * stats.entropy(p[:, j]) for j in range(k + extra) if p[:, j].sum() > 0)
        worst = max(worst, h - float(fano_entropy_upper(min(eps, 1 - 1 / k), k)))
    assert worst < 1e-9


def _safetensors(path, tensors):
    header = {name: {"dtype": dt, "shape": shape, "data_offsets": [0, 0]} for name, (dt, shape) in tensors.items()}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def test_pac_bits_are_the_stored_precision_and_said(tmp_path):
    """The audit's ln|H| = 5.966e6 nats is 268,992 parameters at the 32 bits its checkpoint stores (not
    doubled); the pipeline took the bits from the extract dtype, so a bf16 checkpoint run in fp32 got 32."""
    from matprobe.pipeline import model_size, stored_bits_per_param
    from matprobe.theory.check import run_check

    ck = tmp_path / "ck"
    ck.mkdir()
    _safetensors(ck / "model.safetensors", {"w": ("BF16", [10, 10]), "b": ("F32", [5])})
    assert stored_bits_per_param(str(ck)) == pytest.approx((100 * 16 + 5 * 32) / 105)
    cfg = type("Cfg", (), {"dtype": "fp32"})()
    params, bits, source = model_size({"ckpt": str(ck)}, cfg)
    assert (params, source) == (105, "the dtype the checkpoint's safetensors store")
    assert bits == pytest.approx((100 * 16 + 5 * 32) / 105)
    # check records what it was given; Hoeffding as computed independently (the audit's 114.08 at 16 bits)
    store = _store(tmp_path / "s.h5", [0] * 12, [1] * 12)
    pac = run_check(store, None, emp_risk=0.681, n_train=116, params=268992, bits_per_param=16).to_dict()["pac"]
    ln_h = 268992 * 16 * np.log(2)
    assert pac["training"]["ln_h"] == pytest.approx(ln_h, rel=1e-12)
    assert (pac["training"]["params"], pac["training"]["bits_per_param"], pac["training"]["emp_risk"],
            pac["training"]["n_train"]) == (268992, 16, 0.681, 116)
    hoeff = next(b for b in pac["bounds"] if b["name"] == "Hoeffding, two-sided")["value"]
    assert hoeff == pytest.approx(0.681 + np.sqrt((ln_h + np.log(2 / 0.05)) / (2 * 116)), rel=1e-12)
    assert round(hoeff, 2) == 114.08


def test_the_report_states_the_pac_inputs():
    from matprobe.report.render import _pac_inputs_sentence

    data = load_run(DEMO)
    said = _pac_inputs_sentence(data.pac_inputs)
    assert said.startswith("The training-set bounds take ln|H| = parameters × bits × ln 2 with 268,992 parameters "
                           "(counted in the checkpoint's safetensors) at 32 bits per parameter (the dtype the "
                           f"checkpoint's safetensors store), ln|H| = {268992 * 32 * math.log(2):.4g} nats.")
    # R̂ as the check file records it: errors on the checkpoint's 144 training rows
    training = json.loads((DEMO / "check" / "related-s0.json").read_text())["pac"]["training"]
    assert training["n_train"] == 144 and abs(training["emp_risk"] * 144 - round(training["emp_risk"] * 144)) < 1e-9
    assert f"related-s0 {training['emp_risk']:.3f} (n = 144)" in said and "CrossMed's Theorem 1 (eq. 2–3)" in said
    assert said in (DEMO / "report.md").read_text()


def test_the_capped_caveat_says_what_is_true_below_the_cap():
    from matprobe.report.render import _capped_metrics_sentence

    data = load_run(DEMO)
    term = "I(Z;anatomy|modality)"
    at = data.terms["term"] == term
    data.terms.loc[at, "estimate"] = data.terms.loc[at, "h_upper"] * 0.93
    said = _capped_metrics_sentence(data, data.significance)
    assert "caps' rounding" not in said
    assert said.startswith(f"{term} nats: both conditions' estimates sit within 10% of the term's entropy cap "
                           "(Related at 93.0%, Unrelated at 93.0% of it, means over their checkpoints)")
    assert "at most 7.0% of the cap is left to differ in" in said
    data.terms.loc[at, "estimate"] = data.terms.loc[at, "h_upper"]
    assert "a p there compares the caps' rounding" in _capped_metrics_sentence(data, data.significance)
