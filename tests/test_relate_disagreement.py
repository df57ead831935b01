"""`relate`: where rho's bootstrap interval and its strata-permutation p disagree at the level, a
note says which to read (a user's study, forty-first session: "[-0.471, -0.001], p = 0.649" on 11
strata, with nothing said)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from matprobe.theory import relate
from matprobe.theory.relate import interval_p_disagreement


def test_each_direction_and_agreement():
    both = interval_p_disagreement(-0.471, -0.001, 0.649, 0.95, 11)
    assert both.startswith("the interval excludes 0 but p = 0.649 >= 0.05: with 11 strata")
    assert both.endswith("read the p")
    other = interval_p_disagreement(-0.2, 0.4, 0.012, 0.95, 6)
    assert other.startswith("p = 0.012 < 0.05 but the interval holds 0: with 6 strata")
    # agreement either way, an undefined interval, and the level's own alpha
    assert interval_p_disagreement(0.1, 0.6, 0.01, 0.95, 9) == ""
    assert interval_p_disagreement(-0.1, 0.6, 0.3, 0.95, 9) == ""
    assert interval_p_disagreement(float("nan"), float("nan"), 0.01, 0.95, 9) == ""
    assert interval_p_disagreement(0.1, 0.6, 0.03, 0.99, 9).startswith("the interval excludes 0 but p = 0.03 >= 0.01")


def test_relation_carries_the_note(monkeypatch):
    rng = np.random.default_rng(0)
    rows = []
    for ck in ("a", "b"):
        for s in range(5):
            rows.append({"checkpoint": ck, "modality": f"m{s}", "anatomy": "x", "task": "t", "sparse": False,
                         "mi": rng.random(), "accuracy": rng.random(), "classes": 2, "h": 0.69})
    points = pd.DataFrame(rows)
    monkeypatch.setattr(relate, "spearman_with_interval", lambda *a, **k: (-0.2, -0.471, -0.001, None))
    real = relate.stratum_permutation_test
    monkeypatch.setattr(relate, "stratum_permutation_test", lambda *a, **k: {**real(*a, **k), "p_value": 0.649})
    rel = relate._relation(points, [], 0, 0.95, 200, 0, "nats")
    assert any(n.startswith("the interval excludes 0 but p = 0.649 >= 0.05: with 5 strata") for n in rel.notes)
