"""One rule for "was the model right on this row" (issue 24: one decision, one place): the stored
`correct` where known, else pred == answer_index where both are known, else unknown. Every
consumer (store info, per-triplet scores, check, relate, the pipeline's accuracy) reads it from
`EmbeddingStore.answers()`; a store written with predictions only used to be scored by check and
relate but left unanswered (accuracy NaN) by the pipeline."""

from __future__ import annotations

import numpy as np

import matprobe as mp
from matprobe.theory.check import _answered as check_answered
from matprobe.theory.relate import _answered as relate_answered

N = 60


def _store(tmp_path, with_correct: bool):
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, N)
    truth[:5] = -1  # no key for these rows
    pred = rng.integers(0, 3, N)
    pred[5:9] = -1  # no answer for these rows
    answers = {"pred": pred}
    stored = np.full(N, -1)
    if with_correct:
        stored[10:20] = 1 - (pred[10:20] == truth[10:20])  # a stored verdict wins, even against pred
        answers["correct"] = stored
    triplets = np.array(["CT", "MRI"])[np.arange(N) % 2]
    path = tmp_path / f"s{int(with_correct)}.h5"
    mp.EmbeddingStore.from_arrays(path, [f"r{i}" for i in range(N)],
                                  {"modality": triplets, "anatomy": ["Chest"] * N, "task": ["Cls"] * N,
                                   "answer_index": truth},
                                  {("0", "last"): rng.standard_normal((N, 2)).astype("float32")},
                                  answers=answers).close()
    # the rule, written out independently of the store
    expected = np.full(N, -1)
    for i in range(N):
        if stored[i] >= 0:
            expected[i] = stored[i]
        elif pred[i] >= 0 and truth[i] >= 0:
            expected[i] = int(pred[i] == truth[i])
    return path, expected, triplets


def test_every_consumer_reads_one_rule(tmp_path):
    for with_correct in (False, True):
        path, expected, triplets = _store(tmp_path, with_correct)
        with mp.open_store(path) as st:
            np.testing.assert_array_equal(st.answers()["correct"], expected)
            known = expected >= 0
            assert st.info()["accuracy"] == expected[known].mean()
            by = st.scores_by_triplet().set_index("modality")
            for m in ("CT", "MRI"):
                sel = known & (triplets == m)
                assert by.loc[m, "answered"] == sel.sum() and by.loc[m, "accuracy"] == expected[sel].mean()
            frame, check_correct = check_answered(st)
            assert list(frame["_correct"]) == list(expected[known])
            np.testing.assert_array_equal(relate_answered(st, path), expected)


def test_pipeline_accuracy_reads_the_rule(tmp_path):
    import json

    from matprobe.mi.chain import chain_terms, results_json
    from matprobe.pipeline import PipelineConfig, per_run_results

    path, expected, triplets = _store(tmp_path, with_correct=False)
    rng = np.random.default_rng(0)
    res = chain_terms(rng.standard_normal((N, 2)), {"M": triplets}, seeds=1, folds=2, pca=None,
                      direct=False, difference=False)
    main_mi = tmp_path / "mi.json"
    main_mi.write_text(json.dumps(results_json(res)))
    cfg = PipelineConfig(target=("MRI", "Chest", "Cls"))
    rows = per_run_results([{"store": str(path), "condition": "related", "seed": 0, "target": cfg.target,
                             "main_mi": str(main_mi)}], cfg)
    sel = (expected >= 0) & (triplets == "MRI")
    assert rows[rows.metric == "accuracy"].value.tolist() == [expected[sel].mean()]
