"""PAC bounds against closed forms and scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from matprobe.errors import BoundsError
from matprobe.theory import pac


def test_paper_bound_is_exactly_twice_the_two_sided_gap():
    for r, n, ln_h, d in [(0.168, 4500, 10.0, 0.05), (0.0, 100, 0.0, 0.01), (0.5, 7, 3.3, 0.5)]:
        paper_gap = pac.paper_bound(r, n, ln_h, d) - r
        assert paper_gap == pytest.approx(
            2 * pac.hoeffding_gap(n, ln_h, d, two_sided=True), rel=1e-14
        )


def test_hoeffding_formula():
    r, n, ln_h, d = 0.168, 4500, 12.5, 0.05
    assert pac.hoeffding_bound(r, n, ln_h, d) == pytest.approx(
        r + math.sqrt((12.5 + math.log(40)) / 9000)
    )
    assert pac.hoeffding_bound(r, n, ln_h, d, two_sided=False) == pytest.approx(
        r + math.sqrt((12.5 + math.log(20)) / 9000)
    )
    assert pac.realizable_bound(n, ln_h, d) == pytest.approx((12.5 + math.log(20)) / 4500)


def test_hoeffding_single_hypothesis_coverage():
    # |H| = 1: one-sided bound at δ must cover the true risk in >= 1 - δ of draws.
    rng = np.random.default_rng(1)
    p, n, d = 0.3, 200, 0.1
    emp = rng.binomial(n, p, size=4000) / n
    covered = np.mean([pac.hoeffding_bound(e, n, 0.0, d, two_sided=False) >= p for e in emp])
    assert covered >= 1 - d


def test_log_hypothesis_count():
    assert pac.log_hypothesis_count(7e9, 16) == pytest.approx(7e9 * 16 * math.log(2))
    assert pac.log_hypothesis_count(1, 1) == pytest.approx(math.log(2))  # |H| = 2


@pytest.mark.parametrize(
    "k,m,d", [(0, 100, 0.05), (3, 100, 0.05), (756, 4500, 0.05), (50, 60, 0.01), (1, 2, 0.3)]
)
def test_test_set_bound_equals_beta_quantile(k, m, d):
    # computed by root finding on the binomial cdf; must equal Clopper-Pearson's beta form
    assert pac.test_set_bound(k, m, d) == pytest.approx(
        stats.beta.ppf(1 - d, k + 1, m - k), rel=1e-9, abs=1e-12
    )


def test_test_set_bound_zero_errors_closed_form():
    # P(Bin(m, p) = 0) = (1-p)^m = δ  ->  p = 1 - δ^(1/m)
    assert pac.test_set_bound(0, 500, 0.05) == pytest.approx(1 - 0.05 ** (1 / 500), rel=1e-10)
    assert pac.test_set_bound(9, 9, 0.05) == 1.0


def test_clopper_pearson_interval():
    lo, hi = pac.clopper_pearson(756, 4500, 0.95)
    assert lo == pytest.approx(stats.beta.ppf(0.025, 756, 3745))
    assert hi == pytest.approx(stats.beta.ppf(0.975, 757, 3744))
    # statsmodels' "beta" method is Clopper-Pearson
    from statsmodels.stats.proportion import proportion_confint

    ref = proportion_confint(756, 4500, alpha=0.05, method="beta")
    assert (lo, hi) == pytest.approx(ref, rel=1e-9)


def test_kl_inverse_at_zero_is_one_minus_exp():
    c = np.array([0.0, 0.01, 0.5, 2.0, 10.0])
    got = pac.kl_inverse_upper(0.0, c)
    exact = -np.expm1(-c)
    assert got == pytest.approx(exact, abs=1e-12)
    assert np.all(got >= exact)  # upper end of the bracket: never below the root


def test_kl_inverse_is_vectorised_root():
    q = np.array([0.05, 0.168, 0.5, 0.9])
    c = np.array([0.01, 0.1, 0.2, 0.05])
    p = pac.kl_inverse_upper(q, c)
    assert p.shape == q.shape
    assert np.all(p >= q)
    assert pac.kl_bernoulli(q, p) == pytest.approx(c, abs=1e-9)
    # kl written out by hand
    assert pac.kl_bernoulli(0.2, 0.5) == pytest.approx(0.2 * math.log(0.4) + 0.8 * math.log(1.6))


def test_pinsker_kl_inverse_within_sqrt_bound():
    # Pinsker: kl(q||p) >= 2 (p-q)^2, so kl⁻¹(q, c) <= q + sqrt(c/2)
    qs, cs = np.meshgrid(np.linspace(0, 0.95, 20), np.geomspace(1e-4, 2, 20))
    inv = pac.kl_inverse_upper(qs, cs)
    assert np.all(inv <= qs + np.sqrt(cs / 2) + 1e-12)
    assert np.all(pac.kl_bernoulli(qs, inv) >= 2 * (inv - qs) ** 2 - 1e-12)


def test_pac_bayes_and_occam_and_mcallester_formulas():
    r, n, kl, d = 0.168, 4500, 20.0, 0.05
    comp = (kl + math.log(2 * math.sqrt(n) / d)) / n
    pb = pac.pac_bayes_kl_bound(r, n, kl, d)
    assert pac.kl_bernoulli(r, pb) == pytest.approx(comp, abs=1e-9)
    mc = pac.mcallester_bound(r, n, kl, d)
    assert mc == pytest.approx(r + math.sqrt(comp / 2))
    assert pb <= mc  # Pinsker makes McAllester the looser of the two
    occ = pac.occam_kl_bound(r, n, kl, d)
    assert pac.kl_bernoulli(r, occ) == pytest.approx((kl + math.log(1 / d)) / n, abs=1e-9)


def test_catoni_single_c_closed_form_and_union_bound():
    r, n, kl, d = 0.168, 4500, 20.0, 0.05
    val, c = pac.catoni_bound(r, n, kl, d, grid=[2.0])
    assert c == 2.0
    assert val == pytest.approx(
        (1 - math.exp(-2 * r - (kl + math.log(1 / d)) / n)) / (1 - math.exp(-2))
    )
    # a grid pays ln|grid| but can pick a better C; it is never below the
    # best single-C value at the full δ
    grid = np.geomspace(0.01, 100, 41)
    best, _ = pac.catoni_bound(r, n, kl, d, grid=grid)
    singles = [pac.catoni_bound(r, n, kl, d, grid=[g])[0] for g in grid]
    assert best >= min(singles)
    per = [pac.catoni_bound(r, n, kl, d / 41, grid=[g])[0] for g in grid]
    assert best == pytest.approx(min(per))


def test_pac_bounds_vacuous_for_7b_model():
    bounds = pac.pac_bounds(0.168, 4500, 0.05, params=7e9, bits=16, test_errors=756, test_n=4500)
    names = [b.name for b in bounds]
    assert names[0].startswith("paper")
    by = {b.name: b for b in bounds}
    assert all(b.vacuous for b in bounds if not b.name.startswith("test-set"))
    assert not by["test-set (binomial tail inversion)"].vacuous
    ln_h = 7e9 * 16 * math.log(2)
    assert by["paper eq. 3 (CrossMed Thm 1)"].value == pytest.approx(
        0.168 + math.sqrt(2 * (ln_h + math.log(40)) / 4500)
    )


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: pac.paper_bound(1.5, 100, 1.0, 0.05), "outside \\[0, 1\\]"),
        (lambda: pac.paper_bound(0.1, 0, 1.0, 0.05), "positive number"),
        (lambda: pac.paper_bound(0.1, -5, 1.0, 0.05), "positive number"),
        (lambda: pac.paper_bound(0.1, 100, 1.0, 0.0), "outside \\(0, 1\\)"),
        (lambda: pac.paper_bound(0.1, 100, 1.0, 1.0), "outside \\(0, 1\\)"),
        (lambda: pac.test_set_bound(11, 10, 0.05), "must lie in"),
        (lambda: pac.pac_bounds(0.1, 100, 0.05, test_errors=3), "both"),
    ],
)
def test_bad_input_one_line(call, match):
    with pytest.raises(BoundsError, match=match):
        call()


def test_cli_bounds_pac_prints_all_side_by_side():
    from typer.testing import CliRunner

    from matprobe.cli import app

    args = [
        "bounds",
        "pac",
        "--emp-risk",
        "0.168",
        "--n",
        "4500",
        "--params",
        "7e9",
        "--bits-per-param",
        "16",
        "--delta",
        "0.05",
        "--test-errors",
        "756",
        "--test-n",
        "4500",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    # the old spelling (--bits N = bits per parameter) is refused with the new name
    old = [a if a != "--bits-per-param" else "--bits" for a in args]
    r_old = CliRunner().invoke(app, old)
    assert r_old.exit_code == 2 and "--bits-per-param 16" in r_old.output
    ln_h = 7e9 * 16 * math.log(2)
    assert f"{0.168 + math.sqrt(2 * (ln_h + math.log(40)) / 4500):.6g}" in r.output
    assert f"{stats.beta.ppf(0.95, 757, 3744):.6g}" in r.output
    assert r.output.count("VACUOUS") == 7
    for bad, msg in [
        (["--n", "0"], "n = 0"),
        (["--delta", "1.5"], "delta"),
        (["--emp-risk", "-0.1"], "empirical"),
    ]:
        a = list(args)
        i = a.index(bad[0])
        a[i + 1] = bad[1]
        out = CliRunner().invoke(app, a)
        assert (
            out.exit_code == 2 and msg in out.output and len(out.output.strip().splitlines()) == 1
        )
