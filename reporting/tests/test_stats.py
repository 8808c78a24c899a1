"""Each figure against a value known independently: the textbook formula written out here, or
a published worked example (Newcombe 1998)."""

import math

import pytest

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


def test_ratio_interval_is_katz_log_interval():
    x1, n1, x2, n2 = 120, 1000, 80, 1000
    log_rr = math.log((x1 / n1) / (x2 / n2))
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
    low, high = stats.ratio_interval(x1, n1, x2, n2)
    assert low == pytest.approx(math.exp(log_rr - Z * se), rel=1e-9)
    assert high == pytest.approx(math.exp(log_rr + Z * se), rel=1e-9)
    assert stats.ratio_interval(0, 100, 5, 100) == (None, None)


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
        f"v2 converts better than v1 (diff +8.0 pts, 95% CI {low * 100:.1f} to {high * 100:.1f})."
    )


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
