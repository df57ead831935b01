"""The radially damped features' radius (the whole norm or the block of columns that share the
scale, `prep.shared_scale_weights`) and offset (`ProbeEstimator(radial_offsets=...)`) are chosen
per fold by the linear path's validation loss: the choice is the argmin of the losses it records,
each recorded loss is the one a run offered that offset alone reaches, a run offered only the
chosen offset gives the same held-out value bit for bit, on heavy tails whose best offset is far
from 0.5 the choice reads nearer the truth than the former fixed 0.5, and heavy tails on a few
columns beside massive ones are detected by the block's kappa and damped along the block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi import make_estimator
from matprobe.mi.groundtruth import LatentMixtureTask

torch.set_num_threads(1)

# the calibration benchmark's `small-t2` family (nu = 2, MI of a few hundredths of a nat)
_SMALL_T2 = dict(k_classes=4, d=32, signal_dim=8, family="t", nu=2.0, separation=0.3)


def _probe(**kw):
    # the radial, quadratic, second-moment and hinge checks off: they offer representations of their own;
    # the linear level alone: the radius and offset are chosen on the linear path, before the
    # non-linear levels, which would take the same representation (and 14x the time)
    return make_estimator("probe", seeds=2, radial_check=False, quadratic_check=False, second_moment_check=False,
                          additive_check=False, index_check=False, calibration_check=False, ladder=("linear",), **kw)


def _damped_folds(res):
    return [d for d in res.diagnostics["folds"] if d["seed"] == 0]


@pytest.fixture(scope="module")
def heavy_tails():
    task = LatentMixtureTask(**_SMALL_T2, seed=101)
    z, f = task.sample(5000, seed=1)
    return task, z, f["Y"]


@pytest.fixture(scope="module")
def offered(heavy_tails):
    """`offered(offsets)`: the probe offered those radial offsets on the heavy-tails sample, each
    estimated once for the module (the two tests below fit the same three: both offsets, then each
    alone); the tests only read the results."""
    _, z, y = heavy_tails
    done = {}

    def estimate(offsets):
        if offsets not in done:
            done[offsets] = _probe(radial_offsets=offsets).estimate(z, y)
        return done[offsets]

    return estimate


def test_the_choice_is_the_argmin_of_the_recorded_losses_and_each_loss_is_that_candidates_own(offered):
    offsets = (0.03125, 0.5)
    res = offered(offsets)
    folds = _damped_folds(res)
    assert all(d["row_scale_variance"] > 0.1 for d in folds)  # the damped features were tried in each fold
    for d in folds:
        losses = d["radial_damping_losses"]
        assert set(losses) == {f"{r} {o:g}" for r in ("norm", "block", "unmapped block") for o in offsets}
        assert losses[f"{d['radial_radius']} {d['radial_offset']:g}"] == min(losses.values())
    # each offset offered alone: the same path, so the same validation losses for both radii (no
    # candidate's fit depends on another's)
    for o in offsets:
        alone = _damped_folds(offered((o,)))
        for d, a in zip(folds, alone):
            assert set(a["radial_damping_losses"]) == {f"norm {o:g}", f"block {o:g}", f"unmapped block {o:g}"}
            for key, loss in a["radial_damping_losses"].items():
                assert d["radial_damping_losses"][key] == loss


def test_offered_only_the_chosen_offset_the_held_out_value_is_the_same_bits(offered):
    res = offered((0.03125, 0.5))
    chosen = {d["radial_offset"] for d in _damped_folds(res)}
    assert len(chosen) == 1, chosen  # every fold chose one offset on this draw
    alone = offered(tuple(chosen))  # a fit of its own: offered only that offset
    assert alone is not res
    assert (res.value, res.ci_low, res.ci_high) == (alone.value, alone.ci_low, alone.ci_high)


# The two comparisons below fit the linear level alone: the offset and the radius are chosen on
# the linear path, and on these tasks the default estimator's non-linear level is not kept, so the
# full ladder read the same draws to within 0.01 of the truth's share (t2 draws 1/3/5: 1.7%, 20.9%,
# 4.5% against the fixed offset's 9.1%, 23.6%, 9.2%; t1.2 draws 1/2/3: 12.9%, 2.6%, 7.0% against
# 24.8%, 12.7%, 21.4%; the same on draws 7-11 and 4-6) at 4.4x the CPU (RESULTS.md, issue 22,
# thirty-seventh session).
_LINEAR = dict(seeds=2, ladder=("linear",))


def test_heavy_tails_read_nearer_the_truth_than_with_the_fixed_offset():
    # nu = 2: the offset's best value (nu / median |x|^2) is far below 0.5; over three draws the
    # chosen offsets read nearer the truth, and each stays a lower bound that covers
    errors_grid, errors_fixed = [], []
    for draw in (1, 3, 5):
        task = LatentMixtureTask(**_SMALL_T2, seed=100 + draw)
        z, f = task.sample(5000, seed=draw)
        truth, se = task.truth(100_000)["I(Z;Y)"]
        grid = make_estimator("probe", **_LINEAR).estimate(z, f["Y"])
        fixed = make_estimator("probe", **_LINEAR, radial_offsets=(0.5,)).estimate(z, f["Y"])
        assert grid.bound == "lower" and grid.ci_low - 3 * se <= truth
        errors_grid.append(abs(grid.value - truth) / truth)
        errors_fixed.append(abs(fixed.value - truth) / truth)
    assert np.mean(errors_grid) < np.mean(errors_fixed), (errors_grid, errors_fixed)


@pytest.mark.parametrize("offsets", [(), (0.0, 0.5), (-0.1,), (float("nan"),)])
def test_offsets_must_be_positive_and_given(offsets):
    with pytest.raises(ValueError, match="radial_offsets"):
        make_estimator("probe", radial_offsets=offsets)


def test_heavy_tails_on_a_few_columns_beside_massive_ones_are_found_and_damped_along_them():
    # t-massive at d = 256: the shared scale lives on the 8 signal columns; the plain norm's kappa
    # is diluted below the 0.1 threshold by the noise components, the block's is not, and the
    # critic fitted on features damped along the block reads nearer the truth
    task = LatentMixtureTask(k_classes=4, d=256, signal_dim=8, massive=6, family="t", nu=3.0, separation=1.5,
                             seed=101)
    z, f = task.sample(2000, seed=1)
    truth = task.truth(100_000)["I(Z;Y)"][0]
    res = make_estimator("probe", seeds=2).estimate(z, f["Y"])
    plain = make_estimator("probe", seeds=2, radial_damping=False).estimate(z, f["Y"])
    folds = _damped_folds(res)
    assert all(d["row_scale_variance"] < 0.1 < d["row_scale_variance_block"] for d in folds)
    assert sum(d["representation"] == "radially damped" and d["radial_radius"] == "block" for d in folds) >= 4
    assert res.bound == "lower" and "columns that share the scale" in res.note
    assert abs(res.value - truth) < 0.5 * abs(plain.value - truth), (res.value, plain.value, truth)


def test_the_unmapped_reduction_is_the_label_free_reduction_without_the_quantile_map():
    """`FoldPlan.unmapped` is `label_free_reduction(z, pca, gaussianize=False)`'s features exactly,
    computed once; a plan that maps nothing (or maps per fold) has none."""
    from matprobe.mi.base import make_plan
    from matprobe.mi.prep import label_free_reduction

    rng = np.random.default_rng(4)
    z = (rng.standard_normal((600, 40)) / np.sqrt(rng.chisquare(2.0, 600) / 2.0)[:, None]).astype(np.float32)
    groups = rng.integers(0, 3, 600)
    plan = make_plan(z, groups, k=3, pca=16)
    got = plan.unmapped(z)
    assert np.array_equal(got, label_free_reduction(z, 16, False, seed=0).features)
    assert plan.unmapped(z) is got  # computed once, shared by every fold and term
    assert not np.array_equal(got, plan.transformed(z, 0))  # the quantile map moves the features
    assert make_plan(z, groups, k=3, pca=16, gaussianize=False).unmapped(z) is None


def test_rotated_heavy_tails_read_nearer_the_truth_with_the_unmapped_radius():
    """Student-t classes at nu = 1.2 seen through a rotation into d = 128 (the benchmark's `small-t1.2`
    shape at n = 8,000): the per-coordinate quantile map bends the shared scale out of shape, and the
    radius on the reduction without it, along the columns whose log |x| co-vary, reads much nearer
    the truth over three draws (here 13%, 3% and 7% low against 25%, 13% and 21%; RESULTS.md, issue
    22 nineteenth session; the linear level alone, as above)."""
    with_unmapped, without = [], []
    for draw in (1, 2, 3):
        task = LatentMixtureTask(k_classes=2, d=128, signal_dim=8, family="t", nu=1.2, separation=0.5,
                                 seed=200 + draw)
        z, f = task.sample(8000, seed=draw)
        truth, se = task.truth(100_000)["I(Z;Y)"]
        res = make_estimator("probe", **_LINEAR).estimate(z, f["Y"])
        plain = make_estimator("probe", **_LINEAR, radial_unmapped=False).estimate(z, f["Y"])
        folds = _damped_folds(res)
        assert all(any(k.startswith("unmapped block ") for k in d["radial_damping_losses"]) for d in folds)
        assert not any(k.startswith("unmapped") for d in _damped_folds(plain) for k in d["radial_damping_losses"])
        assert res.bound == "lower" and res.ci_low - 3 * se <= truth
        with_unmapped.append(abs(res.value - truth) / truth)
        without.append(abs(plain.value - truth) / truth)
    assert np.mean(with_unmapped) < 0.6 * np.mean(without), (with_unmapped, without)
