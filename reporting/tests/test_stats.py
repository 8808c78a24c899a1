"""Each figure against a value known independently: the textbook formula written out here, or
a published worked example (Newcombe 1998)."""

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import beta, norm

from reporting import stats

Z = 1.959963984540054  # the 97.5% normal quantile


def wilson_by_formula(x, n):
    p = x / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n * n))
    return centre - half, centre + half


def pooled_z_p_by_formula(x1, n1, x2, n2):
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (x1 / n1 - x2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def compare(converted, base_converted, **kwargs):
    """A version against baseline v1, 1,000 enrollments each unless given."""
    figures = {"version": 2, "enrolled": 1000, "baseline": 1, "base_enrolled": 1000,
               "kind": stats.RANDOMIZED, **kwargs}  # fmt: skip
    return stats.compare(converted=converted, base_converted=base_converted, **figures)


@pytest.mark.parametrize("x,n", [(81, 263), (0, 20), (20, 20), (7, 1000), (412, 1900)])
def test_wilson_interval_matches_the_score_formula(x, n):
    low, high = stats.wilson_interval(x, n)
    expected_low, expected_high = wilson_by_formula(x, n)
    assert low == pytest.approx(expected_low, abs=1e-9)
    assert high == pytest.approx(expected_high, abs=1e-9)


def test_wilson_interval_matches_newcombes_worked_example():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion": 81/263.
    low, high = stats.wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_wilson_interval_of_no_enrollments_is_absent():
    assert stats.wilson_interval(0, 0) == (None, None)
    assert stats.rate(0, 0) is None


@pytest.mark.parametrize("counts", [(56, 70, 48, 80), (230, 1000, 200, 1000), (5, 40, 9, 41)])
def test_p_value_is_the_two_sided_pooled_z_test(counts):
    assert stats.two_proportion_p_value(*counts) == pytest.approx(
        pooled_z_p_by_formula(*counts), rel=1e-9
    )


def test_p_value_is_absent_when_no_test_exists():
    assert stats.two_proportion_p_value(0, 50, 0, 60) is None
    assert stats.two_proportion_p_value(50, 50, 60, 60) is None
    assert stats.two_proportion_p_value(3, 10, 0, 0) is None


def test_difference_interval_matches_newcombes_worked_example():
    # Newcombe (1998), "Interval estimation for the difference between independent
    # proportions", example (a): 56/70 - 48/80, method 10 gives 0.0524 to 0.3339.
    low, high = stats.difference_interval(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize("counts", [(230, 1000, 200, 1000), (9, 10, 3, 10), (0, 25, 4, 30)])
def test_difference_interval_matches_the_hybrid_score_formula(counts):
    x1, n1, x2, n2 = counts
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_by_formula(x1, n1)
    l2, u2 = wilson_by_formula(x2, n2)
    d = p1 - p2
    low, high = stats.difference_interval(*counts)
    assert low == pytest.approx(d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), abs=1e-9)
    assert high == pytest.approx(d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2), abs=1e-9)


def mover_r_by_formula(x1, n1, x2, n2):
    # Donner and Zou (2012), equations for the ratio from each rate's own limits.
    p1, p2 = x1 / n1, x2 / n2
    (l1, u1), (l2, u2) = wilson_by_formula(x1, n1), wilson_by_formula(x2, n2)
    low = (p1 * p2 - math.sqrt((p1 * p2) ** 2 - l1 * u2 * (2 * p1 - l1) * (2 * p2 - u2))) / (
        u2 * (2 * p2 - u2)
    )
    high = (p1 * p2 + math.sqrt((p1 * p2) ** 2 - u1 * l2 * (2 * p1 - u1) * (2 * p2 - l2))) / (
        l2 * (2 * p2 - l2)
    )
    return low, high


@pytest.mark.parametrize("counts", [(270, 1800, 20, 200), (56, 70, 48, 80), (3, 40, 9, 41)])
def test_ratio_interval_is_mover_r_from_wilson_limits(counts):
    low, high = stats.ratio_interval(*counts)
    expected_low, expected_high = mover_r_by_formula(*counts)
    assert low == pytest.approx(expected_low, rel=1e-9)
    assert high == pytest.approx(expected_high, rel=1e-9)
    assert stats.ratio_interval(5, 100, 0, 100) == (None, None)


def test_relative_and_absolute_intervals_agree_on_whether_there_is_a_change():
    # One method (MOVER, from the same Wilson limits) for both: over every small table, the
    # ratio's interval holds 1 exactly when the difference's holds 0.
    sizes = (1, 2, 3, 7, 20, 60)
    disagreements = []
    for n1 in sizes:
        for n2 in sizes:
            for x1 in range(n1 + 1):
                for x2 in range(1, n2 + 1):
                    d_low, d_high = stats.difference_interval(x1, n1, x2, n2)
                    r_low, r_high = stats.ratio_interval(x1, n1, x2, n2)
                    no_change_diff = d_low <= 0 <= d_high
                    no_change_ratio = r_low <= 1 <= (math.inf if r_high is None else r_high)
                    if no_change_diff != no_change_ratio:
                        disagreements.append((x1, n1, x2, n2))
    assert disagreements == []


def test_holdout_lift_of_one_converted_held_out_contact_is_not_called_a_loss():
    # The report used to say "-73.0 pts (95% CI -82.4 to 7.2)" and yet "relative lift -73%
    # (95% CI -82% to -59%)": Katz's log interval against Newcombe's.
    lift = stats.holdout_lift(
        treated_converted=27, treated_enrolled=100, held_out_converted=1, held_out_enrolled=1
    )
    assert lift.diff_ci_low < 0 < lift.diff_ci_high
    assert lift.lift_ci_low < 0 < lift.lift_ci_high


def test_sample_ratio_is_a_chi_square_against_the_configured_split():
    observed, shares = [5200, 4800], [50, 50]
    expected = [5000, 5000]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    result = stats.sample_ratio(observed, shares)
    # With one degree of freedom the chi-square tail is erfc(sqrt(x/2)).
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-9)
    assert result.p_value < stats.SRM_ALPHA
    assert result.mismatch


def test_sample_ratio_accepts_a_split_that_matches_its_setting():
    result = stats.sample_ratio([2010, 990], [2, 1])
    assert result.p_value > 0.5
    assert not result.mismatch


def test_enough_data_needs_150_conversions_and_non_conversions_in_each_group():
    assert stats.enough_data((150, 300), (150, 300))
    assert not stats.enough_data((149, 300), (150, 300))
    assert not stats.enough_data((200, 300), (150, 300))  # only 100 non-conversions


def test_randomized_significant_comparison_names_the_better_version():
    comparison = compare(300, 220)
    assert comparison.diff == pytest.approx(0.08)
    assert comparison.p_value == pytest.approx(pooled_z_p_by_formula(300, 1000, 220, 1000))
    low, high = stats.difference_interval(300, 1000, 220, 1000)
    assert comparison.verdict == (
        f"v2 converts better than v1 (diff +8.0 pts, 95% CI {low * 100:.1f} to {high * 100:.1f}, "
        "always-valid p = 0.003; > 99% chance v2 is better)."
    )


def test_a_split_is_judged_by_its_always_valid_p_value_not_a_daily_z_test():
    # p = 0.025 read on one day would "find" a winner; the always-valid figure does not.
    comparison = compare(265, 222)
    assert comparison.p_value < stats.ALPHA < comparison.p_value_always_valid
    assert not comparison.significant
    assert comparison.verdict.startswith("No clear difference between v2 and v1 yet")
    assert "always-valid p = 0.942" in comparison.verdict


def test_randomized_worse_version_is_called_worse():
    comparison = compare(180, 260, version=3)
    assert comparison.verdict.startswith("v3 converts worse than v1 (diff -8.0 pts, 95% CI")


def test_sequential_comparison_is_labelled_before_after_not_proof():
    comparison = compare(300, 220, kind=stats.SEQUENTIAL)
    assert "before/after comparison, not proof" in comparison.verdict
    assert "better" not in comparison.verdict


def test_small_samples_get_no_verdict():
    comparison = compare(40, 10, enrolled=100, base_enrolled=100)
    assert comparison.significant
    assert comparison.verdict.startswith("Not enough data yet")


def test_sample_ratio_mismatch_withholds_the_verdict():
    comparison = compare(300, 220, sample_ratio=stats.sample_ratio([1000, 1000], [90, 10]))
    assert comparison.verdict.startswith("No verdict for v2 vs v1: the traffic split")


def test_holdout_lift_has_difference_and_relative_intervals():
    lift = stats.holdout_lift(
        treated_converted=270, treated_enrolled=1800, held_out_converted=20, held_out_enrolled=200
    )
    assert lift.treated_rate == pytest.approx(0.15)
    assert lift.held_out_rate == pytest.approx(0.10)
    assert lift.diff == pytest.approx(0.05)
    assert lift.lift == pytest.approx(0.5)
    assert (lift.diff_ci_low, lift.diff_ci_high) == stats.difference_interval(270, 1800, 20, 200)
    ratio_low, ratio_high = stats.ratio_interval(270, 1800, 20, 200)
    assert lift.lift_ci_low == pytest.approx(ratio_low - 1)
    assert lift.lift_ci_high == pytest.approx(ratio_high - 1)
    assert lift.lift_ci_low < 0.5 < lift.lift_ci_high
    assert not lift.enough_data


def johari_bernoulli_ratio(x_mean, y_mean, n, tau2):
    # Johari, Koomen, Pekelis and Walsh (2017), the closed form for Bernoulli data with n per
    # group, as the mixtureSPRT package documents it.
    v = x_mean * (1 - x_mean) + y_mean * (1 - y_mean)
    return math.sqrt(v / (v + n * tau2)) * math.exp(
        n**2 * tau2 * (y_mean - x_mean) ** 2 / (2 * v * (v + n * tau2))
    )


@pytest.mark.parametrize("counts", [(120, 1000, 100, 1000), (31, 200, 45, 200), (7, 50, 2, 50)])
def test_mixture_likelihood_ratio_is_the_published_closed_form(counts):
    converted, n, base_converted, _ = counts
    tau2 = 0.0004
    assert stats.mixture_likelihood_ratio(*counts, tau2=tau2) == pytest.approx(
        johari_bernoulli_ratio(base_converted / n, converted / n, n, tau2), rel=1e-12
    )


def test_mixture_likelihood_ratio_is_the_mixture_it_is_named_for():
    # Its definition, integrated numerically: the likelihood of the observed difference under
    # each true difference, averaged over the N(0, tau2) mixture, over that under no difference.
    converted, enrolled, base_converted, base_enrolled = 130, 900, 100, 1100
    tau2 = 0.001
    p1, p2 = converted / enrolled, base_converted / base_enrolled
    s = math.sqrt(p1 * (1 - p1) / enrolled + p2 * (1 - p2) / base_enrolled)
    observed = p1 - p2
    mixed, _ = integrate.quad(
        lambda theta: norm.pdf(observed, theta, s) * norm.pdf(theta, 0, math.sqrt(tau2)),
        -1,
        1,
        points=[0, observed],
    )
    expected = mixed / norm.pdf(observed, 0, s)
    assert stats.mixture_likelihood_ratio(
        converted, enrolled, base_converted, base_enrolled, tau2=tau2
    ) == pytest.approx(expected, rel=1e-6)


def test_mixture_variance_is_the_published_tuning():
    # mixtureSPRT's calcTau(alpha = 0.05, sigma = 1, truncation = 10000) reports 0.08 (it
    # rounds to two places).
    assert round(stats.mixture_variance(variance=1, horizon=10_000), 2) == 0.08


def test_always_valid_p_value_only_falls_and_is_absent_without_variance():
    looks = [(10, 100, 10, 100), (30, 200, 20, 200), (40, 300, 40, 300), (90, 400, 40, 400)]
    looks = [(10, 50, 10, 50), *looks]  # before the burn-in: skipped
    values = [stats.always_valid_p_value(looks[: i + 1]) for i in range(len(looks))]
    assert values[0] is None
    values = values[1:]
    assert values == sorted(values, reverse=True)
    assert values[-1] < 0.001
    assert stats.always_valid_p_value([]) is None
    assert stats.always_valid_p_value([(0, 100, 0, 100)]) is None
    assert stats.always_valid_p_value([(0, 0, 5, 10)]) is None


def test_a_tiny_unconverted_first_day_does_not_make_a_winner():
    # A split whose new version got 3 enrollments on its first day, none converted: its
    # estimated variance is zero and the likelihood ratio exploded (p = 1e-9 against a
    # fixed-sample p of 0.47 at the end). Looks before the burn-in do not count.
    looks = [(0, 3, 40, 300), (10, 100, 60, 500), (100, 1000, 110, 1000)]
    assert stats.always_valid_p_value(looks) > 0.5


def test_looking_every_day_at_aa_tests_rarely_finds_a_winner():
    # 1,000 A/A tests at a 10% rate, 200 enrollments a group a day, looked at every day for
    # 30 days. The fixed-sample p-value read daily "finds" a winner in far more than 5% of
    # them; the always-valid one in at most 5% (plus three standard errors of the estimate).
    rng = np.random.default_rng(20261130)
    experiments, days, daily = 1000, 30, 200
    a = rng.binomial(daily, 0.10, size=(experiments, days)).cumsum(axis=1)
    b = rng.binomial(daily, 0.10, size=(experiments, days)).cumsum(axis=1)
    enrolled = daily * np.arange(1, days + 1)
    naive_winners = always_valid_winners = 0
    for row_a, row_b in zip(a, b, strict=True):
        looks = [
            (int(x), int(n), int(y), int(n)) for x, y, n in zip(row_a, row_b, enrolled, strict=True)
        ]
        if any(stats.two_proportion_p_value(*look) < stats.ALPHA for look in looks):
            naive_winners += 1
        if stats.always_valid_p_value(looks) < stats.ALPHA:
            always_valid_winners += 1
    tolerance = 3 * math.sqrt(0.05 * 0.95 / experiments)
    assert always_valid_winners / experiments <= 0.05 + tolerance
    assert naive_winners / experiments > 0.15


def test_always_valid_p_value_finds_a_real_difference():
    looks = [(150 * d, 1000 * d, 100 * d, 1000 * d) for d in range(1, 8)]
    assert stats.always_valid_p_value(looks) < 0.001


@pytest.mark.parametrize(
    "counts", [(120, 1000, 100, 1000), (3, 20, 5, 22), (0, 10, 1, 10), (45, 50, 40, 50)]
)
def test_chance_to_beat_by_numerical_integration(counts):
    x, n, y, m = counts
    version, base = beta(1 + x, 1 + n - x), beta(1 + y, 1 + m - y)
    expected, _ = integrate.quad(lambda t: base.pdf(t) * version.sf(t), 0, 1, limit=200)
    assert stats.chance_to_beat(*counts) == pytest.approx(expected, abs=1e-6)


def test_chance_to_beat_is_even_for_equal_counts_and_complementary():
    assert stats.chance_to_beat(100, 1000, 100, 1000) == pytest.approx(0.5, abs=1e-9)
    assert stats.chance_to_beat(130, 1000, 100, 900) + stats.chance_to_beat(
        100, 900, 130, 1000
    ) == pytest.approx(1, abs=1e-9)
    assert stats.chance_to_beat(0, 0, 1, 10) is None


def test_outlook_is_the_textbook_sample_size():
    # n per group = 2 ((z_alpha/2 + z_power) / h)^2 with Cohen's h (Cohen 1988, chapter 6,
    # whose table 6.4.1 gives n = 392 for h = 0.2: 2 (2.8016 / 0.2)^2 = 392.4).
    z = Z + 0.8416212335729143
    assert round(2 * (z / 0.2) ** 2) == 392
    h = 2 * math.asin(math.sqrt(0.12)) - 2 * math.asin(math.sqrt(0.10))
    needed = 2 * (z / h) ** 2
    outlook = stats.outlook(
        enrolled=1000, base_converted=100, base_enrolled=1000, enrolled_per_day=100
    )
    assert outlook.days_to_effect == pytest.approx((needed - 1000) / 100, rel=1e-3)
    # And at that size, the detectable difference is the effect asked about.
    at_size = stats.outlook(
        enrolled=round(needed), base_converted=round(needed * 0.1), base_enrolled=round(needed),
        enrolled_per_day=100,
    )  # fmt: skip
    assert at_size.detectable_now == pytest.approx(0.02, rel=1e-2)
    assert at_size.days_to_effect == 0


def test_outlook_without_traffic_or_rate_projects_nothing():
    outlook = stats.outlook(enrolled=0, base_converted=0, base_enrolled=0, enrolled_per_day=0)
    assert outlook.detectable_now is None
    assert outlook.days_to_effect is None
