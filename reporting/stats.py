"""The statistics behind the report, taken from statsmodels and scipy rather than re-derived.

Proportions are enrollments that converted over enrollments started. Every function takes
plain counts and returns plain floats (or None where a figure does not exist, such as a rate
of zero enrollments), so the selectors stay free of statistics and these stay free of the ORM.

The minimum-sample rule: no verdict until each of the two versions compared has at least
MIN_CONVERSIONS conversions and as many non-conversions. 150 is the usual rule of thumb for
conversion tests; below it the normal approximation behind the z-test is shaky and a
"significant" result at an early peek is far more often noise than signal.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, logsumexp
from scipy.stats import chisquare, norm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
MIN_CONVERSIONS = 150
# A sample ratio this unlikely means the split itself is broken (assignment or logging bug),
# so no difference between the versions can be trusted until it is explained.
SRM_ALPHA = 0.001
POWER = 0.8
# The mSPRT's tuning: the mixture is chosen to detect soonest the effects that become
# visible by about this many enrollments per version. It changes how fast a real effect is
# declared, never the error rate.
SEQUENTIAL_HORIZON = 10_000
# Looks before each group has this many enrollments do not count (mixtureSPRT's burn-in): a
# day-one group of three, all unconverted, has an estimated variance of zero and would make
# the normal approximation, and so the likelihood ratio, explode.
SEQUENTIAL_BURN_IN = 100

RANDOMIZED = "randomized"
SEQUENTIAL = "sequential"


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def rate(converted: int, enrolled: int) -> float | None:
    return converted / enrolled if enrolled else None


def wilson_interval(converted: int, enrolled: int) -> tuple[float | None, float | None]:
    """The 95% Wilson score interval of converted/enrolled."""
    if not enrolled:
        return None, None
    low, high = proportion_confint(converted, enrolled, alpha=ALPHA, method="wilson")
    return _finite(low), _finite(high)


def two_proportion_p_value(
    converted: int, enrolled: int, base_converted: int, base_enrolled: int
) -> float | None:
    """Two-sided pooled two-proportion z-test of a version against the baseline.

    None when the test does not exist: an empty group, or both groups at 0% or both at 100%
    (the pooled variance is zero).
    """
    if not enrolled or not base_enrolled:
        return None
    pooled = (converted + base_converted) / (enrolled + base_enrolled)
    if pooled in (0, 1):
        return None
    _, p_value = proportions_ztest(
        [converted, base_converted], [enrolled, base_enrolled], alternative="two-sided"
    )
    return _finite(p_value)


def difference_interval(
    converted: int, enrolled: int, base_converted: int, base_enrolled: int
) -> tuple[float | None, float | None]:
    """Newcombe's hybrid score interval (his method 10) of rate minus the baseline's rate."""
    if not enrolled or not base_enrolled:
        return None, None
    low, high = confint_proportions_2indep(
        converted,
        enrolled,
        base_converted,
        base_enrolled,
        method="newcomb",
        compare="diff",
        alpha=ALPHA,
    )
    return _finite(low), _finite(high)


def ratio_interval(
    converted: int, enrolled: int, base_converted: int, base_enrolled: int
) -> tuple[float | None, float | None]:
    """95% interval of the rate ratio by MOVER-R (Donner and Zou 2012), built from the same
    Wilson limits as Newcombe's difference interval (MOVER-D): the two are one method, so the
    relative interval excludes "no change" exactly when the absolute one does. None when the
    baseline has no conversions (no ratio exists); the upper limit is None (unbounded) when
    the baseline's lower Wilson limit is zero.
    """
    if not enrolled or not base_enrolled or not base_converted:
        return None, None
    p1, p2 = converted / enrolled, base_converted / base_enrolled
    l1, u1 = wilson_interval(converted, enrolled)
    l2, u2 = wilson_interval(base_converted, base_enrolled)
    product = p1 * p2
    low = (product - math.sqrt(max(product**2 - l1 * u2 * (2 * p1 - l1) * (2 * p2 - u2), 0))) / (
        u2 * (2 * p2 - u2)
    )
    high_denominator = l2 * (2 * p2 - l2)
    high = None
    if high_denominator > 0:
        spread = max(product**2 - u1 * l2 * (2 * p1 - u1) * (2 * p2 - l2), 0)
        high = (product + math.sqrt(spread)) / high_denominator
    return _finite(low), None if high is None else _finite(high)


def mixture_variance(*, variance: float, horizon: int = SEQUENTIAL_HORIZON) -> float:
    """The spread τ² of the mSPRT's normal mixture over the true difference, chosen (Johari,
    Pekelis and Walsh 2017, section 4) to detect soonest the effects that matter by about
    `horizon` enrollments per version; `variance` is one pair's variance of the difference."""
    b = 2 * math.log(1 / ALPHA) / math.sqrt(horizon * variance)
    return variance * norm.cdf(-b) / (norm.pdf(b) / b - norm.cdf(-b))


def mixture_likelihood_ratio(
    converted: int, enrolled: int, base_converted: int, base_enrolled: int, *, tau2: float
) -> float | None:
    """The mSPRT's likelihood ratio of "the rates differ" (the difference drawn from a
    N(0, τ²) mixture) against "they are equal", from the normal approximation of the
    difference of rates. With equal groups it is Johari et al.'s closed form for Bernoulli
    data, sqrt(V / (V + nτ²)) · exp(n²τ²Δ² / (2V(V + nτ²))). None when the difference has no
    variance yet (an empty group, or both rates at 0% or at 100%)."""
    if not enrolled or not base_enrolled:
        return None
    p1, p2 = converted / enrolled, base_converted / base_enrolled
    s2 = p1 * (1 - p1) / enrolled + p2 * (1 - p2) / base_enrolled
    if s2 <= 0:
        return None
    exponent = tau2 * (p1 - p2) ** 2 / (2 * s2 * (s2 + tau2))
    return math.sqrt(s2 / (s2 + tau2)) * math.exp(min(exponent, 700.0))


def always_valid_p_value(looks: list[tuple[int, int, int, int]]) -> float | None:
    """The mSPRT's always-valid p-value of a version against the baseline (Johari, Pekelis
    and Walsh 2017, "Always valid inference"): after each look, min(previous, 1/Λ).

    `looks` are the cumulative (converted, enrolled, base_converted, base_enrolled) at each
    look, oldest first (the report passes one per day). However often anyone looks, the
    chance that this ever drops below α while the versions are equal is at most α. τ² is
    set from the pooled rate at the last look (a plug-in, as Optimizely's Stats Engine
    does) and held for every look. Looks before each group has SEQUENTIAL_BURN_IN
    enrollments, or while a group is at 0% or 100%, are skipped. None before any look counts.
    """
    if not looks:
        return None
    converted, enrolled, base_converted, base_enrolled = looks[-1]
    total = enrolled + base_enrolled
    if not total:
        return None
    pooled = (converted + base_converted) / total
    if pooled in (0, 1):
        return None
    tau2 = mixture_variance(variance=2 * pooled * (1 - pooled))
    p_value = None
    for look in looks:
        converted, enrolled, base_converted, base_enrolled = look
        if min(enrolled, base_enrolled) < SEQUENTIAL_BURN_IN or not (
            0 < converted < enrolled and 0 < base_converted < base_enrolled
        ):
            continue
        ratio = mixture_likelihood_ratio(*look, tau2=tau2)
        if ratio is None:
            continue
        p_value = min(1.0 if p_value is None else p_value, 1 / ratio)
    return p_value


def chance_to_beat(
    converted: int, enrolled: int, base_converted: int, base_enrolled: int
) -> float | None:
    """The posterior probability that this rate is above the baseline's, with uniform
    Beta(1, 1) priors, computed exactly (Evan Miller's sum, "Formulas for Bayesian A/B
    testing", 2015) over the smaller of the two success counts. None for an empty group."""
    if not enrolled or not base_enrolled:
        return None
    a_v, b_v = converted + 1, enrolled - converted + 1
    a_b, b_b = base_converted + 1, base_enrolled - base_converted + 1
    if a_v <= a_b:
        return _probability_above(a_v, b_v, a_b, b_b)
    return 1 - _probability_above(a_b, b_b, a_v, b_v)


def _probability_above(a_x: int, b_x: int, a_y: int, b_y: int) -> float:
    """P(X > Y) for X ~ Beta(a_x, b_x), Y ~ Beta(a_y, b_y), with integer a_x (a_x terms)."""
    i = np.arange(a_x)
    terms = betaln(a_y + i, b_y + b_x) - np.log(b_x + i) - betaln(1 + i, b_x) - betaln(a_y, b_y)
    return float(min(max(np.exp(logsumexp(terms)), 0.0), 1.0))


@dataclass(frozen=True)
class Outlook:
    """ "When will we know?" for one version against the baseline, by the fixed-sample
    two-proportion test at 80% power (the always-valid test needs somewhat more)."""

    detectable_now: float | None  # the smallest difference (a rate difference) seen by now
    effect: float  # the difference asked about
    days_to_effect: float | None  # None: no traffic to project, or no such rate exists


def outlook(
    *,
    enrolled: int,
    base_converted: int,
    base_enrolled: int,
    enrolled_per_day: float,
    effect: float = 0.02,
) -> Outlook:
    """From the traffic so far (both groups, `enrolled_per_day` in the smaller one) and the
    baseline's rate: the difference detectable now, and the days until `effect` would be."""
    power = NormalIndPower()
    base_rate = rate(base_converted, base_enrolled)
    smaller = min(enrolled, base_enrolled)
    detectable = None
    if base_rate is not None and 0 < base_rate < 1 and smaller >= 2:
        h = power.solve_power(
            nobs1=smaller, alpha=ALPHA, power=POWER, ratio=1.0, alternative="two-sided"
        )
        upper = math.asin(math.sqrt(base_rate)) + float(h) / 2
        detectable = math.sin(min(upper, math.pi / 2)) ** 2 - base_rate
    days = None
    target = None if base_rate is None else base_rate + effect
    if target is not None and 0 < base_rate < 1 and 0 < target < 1 and enrolled_per_day > 0:
        needed = power.solve_power(
            effect_size=abs(proportion_effectsize(target, base_rate)),
            alpha=ALPHA,
            power=POWER,
            ratio=1.0,
            alternative="two-sided",
        )
        days = max(float(needed) - smaller, 0.0) / enrolled_per_day
    return Outlook(detectable_now=detectable, effect=effect, days_to_effect=days)


@dataclass(frozen=True)
class SampleRatio:
    observed: tuple[int, ...]
    expected_shares: tuple[float, ...]
    p_value: float | None

    @property
    def mismatch(self) -> bool:
        return self.p_value is not None and self.p_value < SRM_ALPHA


def sample_ratio(observed: list[int], expected_shares: list[float]) -> SampleRatio:
    """Chi-square goodness of fit of the enrollments each version got against the traffic
    split that was configured (shares need not sum to 1; they are normalised)."""
    total = sum(observed)
    share_total = sum(expected_shares)
    p_value = None
    if total and share_total and all(share > 0 for share in expected_shares):
        expected = [total * share / share_total for share in expected_shares]
        p_value = _finite(chisquare(observed, f_exp=expected).pvalue)
    return SampleRatio(tuple(observed), tuple(expected_shares), p_value)


def enough_data(*conversion_counts: tuple[int, int]) -> bool:
    """(converted, enrolled) of each group: each needs MIN_CONVERSIONS of both outcomes."""
    return all(
        converted >= MIN_CONVERSIONS and enrolled - converted >= MIN_CONVERSIONS
        for converted, enrolled in conversion_counts
    )


@dataclass(frozen=True)
class Comparison:
    """One version against the baseline."""

    version: int
    baseline: int
    kind: str  # RANDOMIZED or SEQUENTIAL
    diff: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    p_value: float | None
    enough_data: bool
    sample_ratio: SampleRatio | None = None
    # What a split's verdict rests on, safe to look at every day.
    p_value_always_valid: float | None = None
    chance_to_beat: float | None = None
    outlook: Outlook | None = None  # randomized only: "when will we know?"

    @property
    def significant(self) -> bool:
        """A split is judged by its always-valid p-value, so a daily look cannot manufacture
        a winner; a before/after comparison has no such guarantee and keeps its z-test."""
        p_value = self.p_value if self.kind == SEQUENTIAL else self.p_value_always_valid
        return p_value is not None and p_value < ALPHA

    @property
    def verdict(self) -> str:
        """One sentence a marketer can repeat without overstating it."""
        if not self.enough_data:
            return (
                f"Not enough data yet to compare v{self.version} with v{self.baseline}: "
                f"each needs at least {MIN_CONVERSIONS} conversions and {MIN_CONVERSIONS} "
                "non-conversions."
            )
        figures = self._figures()
        if self.kind == SEQUENTIAL:
            return (
                f"v{self.version} vs v{self.baseline} is a before/after comparison, not proof: "
                f"{figures}, {_format_p(self.p_value)}."
            )
        if self.sample_ratio is not None and self.sample_ratio.mismatch:
            return (
                f"No verdict for v{self.version} vs v{self.baseline}: the traffic split does not "
                f"match its setting (sample ratio mismatch, {_format_p(self.sample_ratio.p_value)})."
            )
        figures = f"{figures}, always-valid {_format_p(self.p_value_always_valid)}"
        if self.chance_to_beat is not None:
            figures += f"; {format_chance(self.chance_to_beat)} chance v{self.version} is better"
        if self.significant:
            direction = "better" if self.diff > 0 else "worse"
            return f"v{self.version} converts {direction} than v{self.baseline} ({figures})."
        return f"No clear difference between v{self.version} and v{self.baseline} yet ({figures})."

    def _figures(self) -> str:
        if self.diff is None:
            return "no difference can be computed"
        interval = ""
        if self.diff_ci_low is not None:
            interval = (
                f", 95% CI {format_points(self.diff_ci_low)} to {format_points(self.diff_ci_high)}"
            )
        return f"diff {format_points(self.diff, sign=True)} pts{interval}"


def compare(
    *,
    version: int,
    converted: int,
    enrolled: int,
    baseline: int,
    base_converted: int,
    base_enrolled: int,
    kind: str,
    sample_ratio: SampleRatio | None = None,
    looks: list[tuple[int, int, int, int]] | None = None,
    enrolled_per_day: float = 0.0,
) -> Comparison:
    """One version against the baseline. `looks`: the cumulative counts (as for
    `always_valid_p_value`) at each earlier look, the totals given being the last;
    `enrolled_per_day`: the recent daily enrollments of the smaller group, for the outlook."""
    this_rate, base_rate = rate(converted, enrolled), rate(base_converted, base_enrolled)
    counts = (converted, enrolled, base_converted, base_enrolled)
    randomized = kind == RANDOMIZED
    diff = this_rate - base_rate if this_rate is not None and base_rate is not None else None
    low, high = difference_interval(converted, enrolled, base_converted, base_enrolled)
    return Comparison(
        version=version,
        baseline=baseline,
        kind=kind,
        diff=diff,
        diff_ci_low=low,
        diff_ci_high=high,
        p_value=two_proportion_p_value(converted, enrolled, base_converted, base_enrolled),
        enough_data=enough_data((converted, enrolled), (base_converted, base_enrolled)),
        sample_ratio=sample_ratio,
        p_value_always_valid=always_valid_p_value([*(looks or []), counts]),
        chance_to_beat=chance_to_beat(*counts),
        outlook=outlook(
            enrolled=enrolled,
            base_converted=base_converted,
            base_enrolled=base_enrolled,
            enrolled_per_day=enrolled_per_day,
        )
        if randomized
        else None,
    )


@dataclass(frozen=True)
class Lift:
    """Treated enrollments against the held-out ones (who received nothing)."""

    treated_converted: int
    treated_enrolled: int
    held_out_converted: int
    held_out_enrolled: int
    diff: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    # Relative lift: treated rate / held-out rate - 1.
    lift: float | None
    lift_ci_low: float | None
    lift_ci_high: float | None
    p_value: float | None

    @property
    def treated_rate(self) -> float | None:
        return rate(self.treated_converted, self.treated_enrolled)

    @property
    def held_out_rate(self) -> float | None:
        return rate(self.held_out_converted, self.held_out_enrolled)

    @property
    def enough_data(self) -> bool:
        return enough_data(
            (self.treated_converted, self.treated_enrolled),
            (self.held_out_converted, self.held_out_enrolled),
        )


def holdout_lift(
    *,
    treated_converted: int,
    treated_enrolled: int,
    held_out_converted: int,
    held_out_enrolled: int,
) -> Lift:
    counts = (treated_converted, treated_enrolled, held_out_converted, held_out_enrolled)
    treated_rate, held_rate = rate(*counts[:2]), rate(*counts[2:])
    diff = treated_rate - held_rate if treated_rate is not None and held_rate is not None else None
    diff_low, diff_high = difference_interval(*counts)
    ratio_low, ratio_high = ratio_interval(*counts)
    lift = treated_rate / held_rate - 1 if diff is not None and held_rate else None
    return Lift(
        *counts,
        diff=diff,
        diff_ci_low=diff_low,
        diff_ci_high=diff_high,
        lift=lift,
        lift_ci_low=None if ratio_low is None else ratio_low - 1,
        lift_ci_high=None if ratio_high is None else ratio_high - 1,
        p_value=two_proportion_p_value(*counts),
    )


def format_points(fraction: float | None, *, sign: bool = False) -> str:
    """A difference of rates in percentage points: 0.0123 -> "1.2" ("+1.2" with sign)."""
    if fraction is None:
        return "–"
    return f"{fraction * 100:+.1f}" if sign else f"{fraction * 100:.1f}"


def format_chance(probability: float | None) -> str:
    """0.873 -> "87%"; never a certain "100%" or "0%" from a posterior."""
    if probability is None:
        return "–"
    if probability > 0.99:
        return "> 99%"
    if probability < 0.01:
        return "< 1%"
    return f"{probability:.0%}"


def _format_p(p_value: float | None) -> str:
    if p_value is None:
        return "p n/a"
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"
