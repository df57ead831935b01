"""A README-only study reran `matprobe sweep` into a table made with `--seeds 2 --folds 3`, now with
`--seeds 3`: the refusal named only digests ("settings 590cff15d180 vs 39510edec778") and the CSV
did not record the settings, so the user could not tell what to pass to resume. The refusal now
names each setting that differs with both values, and what to pass to resume or start afresh; the
table records them in its `options` column, and a table written before that column has them found
from its digest."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import synthetic_mat_store
from matprobe.errors import EstimationError
from matprobe.mi.sweep import SweepSettings, run_sweep, table_settings

KW = dict(factors=["M"], seeds=1, folds=3, pca=None, pointwise=False)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    store = synthetic_mat_store(root / "s.h5", seed=3, n=120, d=4, signal=[("modality", "CT", 2.0)], accuracy=0.7)
    out = root / "sweep.csv"
    run_sweep([store], out, **KW)
    return store, out


def _refusal(store, out, **change):
    with pytest.raises(EstimationError) as err:
        run_sweep([store], out, **{**KW, **change})
    return str(err.value)


def test_the_table_records_its_settings_in_words():
    assert SweepSettings(seeds=2, folds=3, pca=64).options() == "seeds=2 folds=3 pca=64 seed=0"
    assert SweepSettings(seeds=1, folds=4, pca=None, rare_classes="merge").options() == \
        "seeds=1 folds=4 pca=0 seed=0 rare_classes=merge"


def test_a_resume_with_other_seeds_names_both_values_and_how_to_resume(table):
    store, out = table
    assert set(pd.read_csv(out)["options"]) == {"seeds=1 folds=3 pca=0 seed=0"}
    said = _refusal(store, out, seeds=2)
    assert f"{out} was written with other settings (seeds 1 in the table, 2 asked;" in said, said
    assert "to resume it pass --seeds 1 (the table's: --seeds 1 --folds 3 --pca 0)" in said, said
    assert "--overwrite (its 1 row is replaced) or a new --out" in said, said
    said = _refusal(store, out, seeds=3, folds=4, rare_classes="merge")
    assert ("(seeds 1 in the table, 3 asked; folds 3 in the table, 4 asked; rare classes refuse in the table, "
            "merge asked;") in said, said
    assert "to resume it pass --seeds 1 --folds 3 --rare-classes refuse (" in said, said
    # what it says to pass resumes the table: nothing is recomputed
    assert run_sweep([store], out, **KW).n_computed == 0


def test_a_table_written_before_the_options_column_has_its_settings_found_from_its_digest(table, tmp_path):
    store, out = table
    legacy = tmp_path / "legacy.csv"
    pd.read_csv(out, dtype=str, keep_default_na=False).drop(columns=["options"]).to_csv(legacy, index=False)
    said = _refusal(store, legacy, seeds=3, folds=5, pca=2)
    assert ("(seeds 1 in the table, 3 asked; folds 3 in the table, 5 asked; pca 0 in the table, 2 asked;"
            in said), said
    assert "to resume it pass --seeds 1 --folds 3 --pca 0 (" in said, said
    found = table_settings(pd.read_csv(legacy, dtype=str, keep_default_na=False),
                           SweepSettings(factors=("M",), seeds=3, folds=5, pca=2))
    assert found is not None and (found.seeds, found.folds, found.pca) == (1, 3, None)
    assert run_sweep([store], legacy, **KW).n_computed == 0  # and it resumes


def test_a_table_no_nearby_settings_explain_says_so(table, tmp_path):
    store, out = table
    odd = tmp_path / "odd.csv"
    frame = pd.read_csv(out, dtype=str, keep_default_na=False).drop(columns=["options"])
    frame["settings"] = "0123456789ab"  # another version's digest: nothing near reproduces it
    frame.to_csv(odd, index=False)
    said = _refusal(store, odd)
    assert "none near these gives its digest" in said and "--overwrite" in said, said
