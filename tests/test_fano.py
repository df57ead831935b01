"""Fano bounds against closed forms computed independently from joint distributions."""

import math

import numpy as np
import pytest
from scipy import stats

from matprobe.errors import BoundsError
from matprobe.theory import fano


def _cond_entropy_from_joint(joint: np.ndarray) -> float:
    """H(Y|X) in nats from a joint table p[x, y], via scipy (independent of fano.py)."""
    px = joint.sum(axis=1)
    return float(stats.entropy(joint.ravel()) - stats.entropy(px))


def _symmetric_channel(k: int, eps: float) -> np.ndarray:
    """Uniform X on K symbols; Y = X w.p. 1-ε, else one of the K-1 others uniformly."""
    ch = np.full((k, k), eps / (k - 1))
    np.fill_diagonal(ch, 1 - eps)
    return ch / k


@pytest.mark.parametrize("p", [0.01, 0.1, 0.168, 0.3, 0.49])
def test_binary_symmetric_channel_is_tight_for_k2(p):
    joint = _symmetric_channel(2, p)
    # MAP estimate Ŷ = X errs with probability p (< 1/2), and Fano holds with equality.
    map_error = 1 - joint.max(axis=1).sum()
    assert map_error == pytest.approx(p)
    assert fano.fano_entropy_upper(map_error, 2) == pytest.approx(
        _cond_entropy_from_joint(joint), abs=1e-12
    )
    assert fano.binary_entropy(p) == pytest.approx(stats.entropy([p, 1 - p]), abs=1e-14)


@pytest.mark.parametrize("k,eps", [(3, 0.2), (4, 0.168), (4, 0.513), (10, 0.05), (4, 0.75)])
def test_k_ary_symmetric_channel_equality(k, eps):
    joint = _symmetric_channel(k, eps)
    h = _cond_entropy_from_joint(joint)
    assert fano.fano_entropy_upper(eps, k, "K-1") == pytest.approx(h, abs=1e-12)
    # the log K variant is strictly looser by ε ln(K/(K-1))
    assert fano.fano_entropy_upper(eps, k, "K") - h == pytest.approx(
        eps * math.log(k / (k - 1)), abs=1e-12
    )
    # and the inverse recovers ε from H(Y|X) (channel errors <= 1 - 1/K)
    assert fano.fano_min_error(h, k) == pytest.approx(eps, abs=1e-10)


def test_fano_holds_for_a_random_channel():
    rng = np.random.default_rng(3)
    k = 5
    for _ in range(20):
        joint = rng.dirichlet(np.ones(k * k) * 0.5).reshape(k, k)
        h = _cond_entropy_from_joint(joint)
        eps = 1 - joint.max(axis=1).sum()  # MAP error
        assert h <= fano.fano_entropy_upper(eps, k) + 1e-12
        assert fano.fano_min_error(h, k) <= eps + 1e-10


@pytest.mark.parametrize("k", [2, 4, 7])
@pytest.mark.parametrize("variant", ["K-1", "K"])
def test_inverse_round_trip(k, variant):
    top = 1 - 1 / k if variant == "K-1" else k / (k + 1)
    for eps in np.linspace(0, top, 13):
        h = fano.fano_entropy_upper(eps, k, variant)
        if h > math.log(k):  # the K variant goes beyond any real H(Y|X)
            continue
        assert fano.fano_min_error(h, k, variant) == pytest.approx(eps, abs=1e-9)


def test_min_error_given_mi():
    k, h = 4, math.log(4)
    eps = 0.168
    mi = h - fano.fano_entropy_upper(eps, k)
    assert fano.fano_min_error_given_mi(mi, h, k) == pytest.approx(eps, abs=1e-10)
    assert fano.fano_min_error_given_mi(h + 0.1, h, k) == 0.0  # I >= H(Y|C): no floor
    assert fano.fano_min_error_given_mi(0.0, h, k) == pytest.approx(0.75, abs=1e-12)  # useless Z


def test_units_are_consistent():
    eps, k = 0.168, 4
    nats = fano.fano_entropy_upper(eps, k)
    assert fano.fano_entropy_upper(eps, k, unit="bits") == pytest.approx(nats / math.log(2))
    # closed form in bits: h2(ε) + ε log2(K-1)
    h2 = -eps * math.log2(eps) - (1 - eps) * math.log2(1 - eps)
    assert fano.fano_entropy_upper(eps, k, unit="bits") == pytest.approx(h2 + eps * math.log2(3))
    assert fano.fano_mi_lower(2.0, eps, k, unit="bits") == pytest.approx(
        2.0 - h2 - eps * math.log2(3)
    )
    assert fano.fano_min_error(1.5, k, unit="bits") == pytest.approx(
        fano.fano_min_error(1.5 * math.log(2), k)
    )


def test_entropy_of_distribution_in_both_units():
    p = [0.5, 0.25, 0.125, 0.125]
    assert fano.entropy_of(p, unit="bits") == pytest.approx(1.75)  # closed form
    assert fano.entropy_of(p) == pytest.approx(stats.entropy(p))
    with pytest.raises(BoundsError, match="sum to 1"):
        fano.entropy_of([0.5, 0.6])


def test_stratified_is_tighter_and_matches_hand_average():
    k = 4
    w = np.array([0.5, 0.5])
    hs = np.array([math.log(4), math.log(4)])
    es = np.array([0.05, 0.45])
    by_hand = sum(wi * max(hi - fano.fano_entropy_upper(ei, k), 0) for wi, hi, ei in zip(w, hs, es))
    strat = fano.fano_mi_lower_stratified(w, hs, es, k)
    assert strat == pytest.approx(by_hand)
    pooled = fano.fano_mi_lower(float(w @ hs), float(w @ es), k)
    assert strat > pooled  # concavity of φ


def test_finite_sample_uses_clopper_pearson_upper_limit():
    k, n, errors, delta = 4, 4500, 756, 0.05
    res = fano.fano_mi_lower_finite(errors, n, math.log(4), k, delta)
    eps_up = stats.beta.ppf(1 - delta, errors + 1, n - errors)
    assert res.error_upper == pytest.approx(eps_up, rel=1e-9)
    assert res.bound == pytest.approx(math.log(4) - fano.fano_entropy_upper(eps_up, k), rel=1e-9)
    assert res.bound < fano.fano_mi_lower(math.log(4), errors / n, k)
    # estimated entropy: δ split in two, and H lowered by the McDiarmid deviation
    res2 = fano.fano_mi_lower_finite(errors, n, 1.2, k, delta, entropy_n=n)
    t = 2 * (1 + math.log(n)) / n * math.sqrt(n * math.log(2 / delta) / 2)
    assert res2.pieces == 2 and res2.entropy_lower == pytest.approx(1.2 - t)
    assert res2.error_upper == pytest.approx(
        stats.beta.ppf(1 - delta / 2, errors + 1, n - errors), rel=1e-9
    )


def test_plugin_entropy_lower_limit_covers_truth():
    # Monte Carlo check of the McDiarmid lower limit on H(Y|C): coverage >= 1 - δ.
    from matprobe.data.entropy import conditional_entropy

    rng = np.random.default_rng(0)
    n, delta = 200, 0.2
    pc = np.array([0.3, 0.7])
    py_c = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.4, 0.1]])
    truth = float(sum(pc[c] * stats.entropy(py_c[c]) for c in range(2)))
    t = fano.plugin_entropy_deviation(n, delta)
    misses = 0
    for _ in range(200):
        c = rng.choice(2, n, p=pc)
        y = np.array([rng.choice(4, p=py_c[ci]) for ci in c])
        misses += conditional_entropy(y, c) - t > truth
    assert misses / 200 <= delta


def test_counterexample_marginal_entropy_is_invalid():
    ce = fano.marginal_entropy_counterexample()
    assert ce["error"] == 0.0
    assert ce["H(T|M,A)"] == pytest.approx(0.0, abs=1e-12)
    assert ce["H(T)"] == pytest.approx(math.log(2))
    audit = ce["audit"]
    assert audit.paper == pytest.approx(math.log(2))  # eq. 8 claims ln 2 nats ...
    assert audit.paper > ce["true I(Z;T|M,A)"]  # ... of a quantity that is exactly 0
    assert audit.correct == pytest.approx(0.0, abs=1e-12)
    assert audit.verdict == "invalid"
    # plug-in I(Z;T|M,A) on a binned Z is exactly 0 too: T is a function of M
    from matprobe.data.entropy import conditional_entropy

    zbin = np.digitize(ce["z"], [-1, 0, 1])
    m, a, t = ce["modality"], ce["anatomy"], ce["task"]
    i_plugin = conditional_entropy(t, [m, a]) - conditional_entropy(t, [zbin, m, a])
    assert abs(i_plugin) < 1e-12 and audit.paper - i_plugin > 0.69


def test_audit_verdicts():
    k = 4
    # independence (H(T) = H(T|M,A)) and ε > 0: only the log K costs -> looser
    a = fano.audit_paper_fano(math.log(4), math.log(4), 0.168, k)
    assert a.verdict == "looser"
    assert a.correct - a.paper == pytest.approx(0.168 * math.log(4 / 3))
    # ε = 0 and independence: identical
    assert fano.audit_paper_fano(1.0, 1.0, 0.0, k).verdict == "valid"
    # dependence larger than ε ln(K/(K-1)): invalid
    assert fano.audit_paper_fano(1.2, 1.0, 0.1, k).verdict == "invalid"
    with pytest.raises(BoundsError, match="conditioning cannot raise entropy"):
        fano.audit_paper_fano(0.5, 1.0, 0.1, k)


@pytest.mark.parametrize("bad", [-0.1, 1.2, float("nan")])
def test_bad_error_one_line(bad):
    with pytest.raises(BoundsError, match="outside \\[0, 1\\]"):
        fano.fano_mi_lower(1.0, bad, 4)


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5])
def test_bad_classes(bad):
    with pytest.raises(BoundsError, match="K"):
        fano.fano_entropy_upper(0.1, bad)


def test_entropy_above_log_k_is_refused():
    with pytest.raises(BoundsError, match="exceeds ln K"):
        fano.fano_min_error(math.log(4) + 0.01, 4)


def test_cli_bounds_fano_prints_closed_forms():
    from typer.testing import CliRunner

    from matprobe.cli import app

    r = CliRunner().invoke(
        app,
        ["bounds", "fano", "--error", "0.168", "--classes", "4", "--entropy", "1.3863"],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    e = 0.168
    phi = -e * math.log(e) - (1 - e) * math.log(1 - e) + e * math.log(3)
    assert f"{phi:.6g}" in r.output
    assert f"{math.log(4) - phi:.6g}" in r.output  # the rounded 1.3863 is read as ln 4
    bad = CliRunner().invoke(app, ["bounds", "fano", "--error", "16.8", "--classes", "4"])
    assert bad.exit_code == 2
    assert bad.output.strip().startswith("error:") and len(bad.output.strip().splitlines()) == 1
    bad = CliRunner().invoke(app, ["bounds", "fano", "--error", "0.1", "--classes", "1"])
    assert bad.exit_code == 2 and "K = 1" in bad.output


def test_fano_table_in_bits_writes_its_formulas_with_log2():
    """A README-only study: `bounds fano --unit bits` printed "ln K | 2 | bits" (log2 4 = 2, not ln 4)."""
    nats = {r["quantity"]: r for r in fano.fano_table(0.3, 4, entropy=1.2)}
    bits = {r["quantity"]: r for r in fano.fano_table(0.3, 4, entropy=1.2 / math.log(2), unit="bits")}
    assert bits["log2 K"]["value"] == pytest.approx(2.0) and nats["ln K"]["value"] == pytest.approx(math.log(4))
    assert bits["H(Y|X) <= h(ε) + ε log2(K-1)"]["value"] == pytest.approx(
        nats["H(Y|X) <= h(ε) + ε ln(K-1)"]["value"] / math.log(2))
    assert not any("ln" in q for q in bits) and all(r["unit"] in ("bits", "probability") for r in bits.values())
    assert "ε log2(K/(K-1))" in bits["paper eq. 8: H(T) - h(ε) - ε log2 K"]["note"]


def test_bounds_refuse_an_mi_outside_its_range_and_give_the_pac_inputs_in_the_unit_asked():
    """`bounds fano --mi -0.1` printed an error floor above the one of a useless Z, and --mi above
    H(Y|C) passed; `bounds pac --bits` converted only its title, every note still said nats."""
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.theory.fano import fano_min_error, fano_table

    for bad in (-0.1, 1.5):
        with pytest.raises(BoundsError, match=rf"--mi {bad} nats is outside \[0, H\(Y\|C\) = 1.2 nats\]"):
            fano_table(0.35, 4, entropy=1.2, mi=bad)
    rows = fano_table(0.35, 4, entropy=1.2, mi=1.2)  # I = H(Y|C): Z determines Y, no error floor
    assert rows[-1]["value"] == pytest.approx(fano_min_error(0.0, 4))
    with pytest.raises(BoundsError, match="in bits\\? pass --unit bits"):
        fano_table(0.35, 4, entropy=1.731)  # 1.731 bits of a K = 4 label, typed without the unit
    res = CliRunner().invoke(app, ["bounds", "pac", "--kl", "100", "--unit", "bits", "--emp-risk", "0.1", "--n", "1000"])
    assert res.exit_code == 0, res.output
    bits = f"{100 / math.log(2):.4g}"
    assert res.output.count(f"KL(Q||P) = {bits} bits") >= 4 and "100 nats" not in res.output, res.output


def test_an_error_at_chance_respects_the_floor_of_a_uniform_stratum_to_the_last_bit():
    """A stratum split 6/6/6 has H = ln 3 up to rounding (1.0986122886681096); its floor was computed
    1e-16 above an error of 12/18, and seven of a study's cells read 'within CI' for 'yes'."""
    from matprobe.theory.fano import fano_min_error

    for k in range(2, 11):
        for per in (1, 3, 6, 7, 50):
            counts = np.full(k, per)
            p = counts / counts.sum()
            h = float(-(p * np.log(p)).sum())  # the plug-in entropy as check computes it
            chance_errors = counts.sum() - per  # the model right on one class's items only
            assert fano_min_error(h, k) <= chance_errors / counts.sum(), (k, per)
            assert fano_min_error(h, k) == pytest.approx((k - 1) / k, abs=1e-15)
