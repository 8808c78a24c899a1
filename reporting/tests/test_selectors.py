"""Report panels against figures computed here, in plain Python, from the same small history."""

import dataclasses
import datetime
from decimal import Decimal

import numpy as np
import pytest
import time_machine
from django.db import connection

from conversions.models import Counting, Revision
from conversions.tests.factories import ConversionFactory, GoalFactory
from journeys.models import JourneyVersion
from journeys.tests.factories import JourneyFactory, JourneyVersionFactory
from reporting import selectors, stats
from reporting.tests.factories import enroll

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
H = datetime.timedelta(hours=1)
D = datetime.timedelta(days=1)


def definition(*steps):
    return {
        "settings": {"reentry": "once", "holdout_percent": 10},
        "triggers": [{"type": "event", "event": "trial_started", "where": []}],
        "exit_when": [],
        "steps": [{"key": key, "type": kind} for key, kind in steps],
    }


V1_STEPS = [
    ("welcome", "send_email"),
    ("wait", "wait"),
    ("nudge", "send_sms"),
    ("convert", "convert"),
]
V2_STEPS = [
    ("welcome", "send_email"),
    ("wait", "wait"),
    ("tips", "send_email"),
    ("convert", "convert"),
]

# (version, start offset, held out, path, awards of "paid" as (hours after start, value),
#  goal "activated" achieved after hours or None)
HISTORY = [
    (1, 0 * D, False, ["welcome", "wait", "nudge", "convert"], [(30, 49)], None),
    (1, 0 * D + 2 * H, False, ["welcome", "wait", "nudge"], [], 5),
    (1, 1 * D, False, ["welcome", "wait", "nudge", "convert"], [(50, 20)], 3),
    (1, 2 * D, False, ["welcome", "wait"], [], None),
    (1, 2 * D + H, True, [], [(5, 49)], None),
    (1, 3 * D, True, [], [], None),
    (1, 3 * D + H, False, ["welcome", "wait", "nudge", "convert"], [(80, 49)], 10),
    (1, 4 * D, False, ["welcome", "wait", "nudge", "wait", "nudge"], [(20, 49), (40, 15)], 1),
    (2, 10 * D, False, ["welcome", "wait", "tips", "convert"], [(24, 49)], None),
    (2, 11 * D, False, ["welcome", "wait", "tips"], [], 7),
    (2, 11 * D + 3 * H, False, ["welcome", "wait", "tips", "convert"], [(72, 30)], None),
    (2, 12 * D, False, ["welcome"], [], 2),
    (2, 12 * D + H, True, [], [], None),
]


@pytest.fixture
def history():
    journey = JourneyFactory(key="trial", name="Trial nurture")
    paid = ConversionFactory(
        journey=journey,
        key="paid",
        name="Paid",
        value=Decimal("49"),
        counting=Counting.EVERY_TIME,
        window=datetime.timedelta(days=7),
        position=0,
    )
    activation = ConversionFactory(journey=journey, key="activation", name="Activation", position=1)
    goal = GoalFactory(journey=journey, key="activated", name="Activated")
    v1 = JourneyVersionFactory(
        journey=journey,
        number=1,
        state=JourneyVersion.State.RETIRED,
        definition=definition(*V1_STEPS),
        published_at=T0 - H,
        retired_at=T0 + 10 * D,
    )
    v2 = JourneyVersionFactory(
        journey=journey,
        number=2,
        state=JourneyVersion.State.LIVE,
        definition=definition(*V2_STEPS),
        published_at=T0 + 10 * D,
    )
    JourneyVersionFactory(
        journey=journey,
        number=3,
        state=JourneyVersion.State.DRAFT,
        definition=definition(*V2_STEPS),
        published_at=None,
    )
    versions = {1: v1, 2: v2}
    for number, offset, held_out, path, awards, goal_hours in HISTORY:
        enroll(
            versions[number],
            T0 + offset,
            held_out=held_out,
            path=tuple(path),
            awards=tuple((paid, h * H, Decimal(v)) for h, v in awards),
            goals=((goal, goal_hours * H),) if goal_hours is not None else (),
        )
    # A conversion of another kind, to prove panels only count the chosen one.
    other = enroll(v2, T0 + 12 * D + 2 * H, path=("welcome",), awards=((activation, 3 * H),))
    return {"journey": journey, "paid": paid, "activation": activation, "other": other}


def expected_history():
    """HISTORY plus the extra enrollment the fixture adds, in the same shape."""
    return [*HISTORY, (2, 12 * D + 2 * H, False, ["welcome"], [], None)]


def counts_of(ctx):
    return selectors.version_counts(ctx, selectors.cohorts(ctx))


def cohorts_of(ctx):
    return selectors.cohorts(ctx)


def context(history, **kwargs):
    return selectors.report_context(journey=history["journey"], **kwargs)


def test_report_covers_published_versions_and_defaults_to_the_first_conversion(history):
    ctx = context(history)
    assert [v.number for v in ctx.versions] == [1, 2]
    assert ctx.conversion.key == "paid"
    assert ctx.baseline == 1


def test_version_counts_match_the_history(history):
    counts = {c.version: c for c in counts_of(context(history))}
    for number in (1, 2):
        for held_out in (False, True):
            rows = [h for h in expected_history() if h[0] == number and h[2] == held_out]
            got = counts[number].held_out if held_out else counts[number].treated
            assert got.enrolled == len(rows)
            assert got.converted == sum(1 for h in rows if h[4])
            assert got.value == sum(v for h in rows for _, v in h[4])
    assert counts[1].total.enrolled == 8
    assert counts[1].total.converted == 5


def test_version_rows_carry_wilson_interval_and_comparison_to_the_baseline(history):
    ctx = context(history)
    rows = selectors.version_rows(ctx, counts_of(ctx))
    v1, v2 = rows
    assert (v1.enrolled, v1.converted) == (8, 5)
    assert (v2.enrolled, v2.converted) == (6, 2)
    assert (v1.ci_low, v1.ci_high) == stats.wilson_interval(5, 8)
    assert v1.comparison is None
    assert v2.comparison.diff == pytest.approx(2 / 6 - 5 / 8)
    assert v2.comparison.p_value == stats.two_proportion_p_value(2, 6, 5, 8)
    assert v2.comparison.kind == stats.SEQUENTIAL


def test_baseline_can_be_any_version_in_the_report(history):
    ctx = context(history, baseline=2)
    rows = selectors.version_rows(ctx, counts_of(ctx))
    assert rows[1].comparison is None
    assert rows[0].comparison.diff == pytest.approx(5 / 8 - 2 / 6)


def test_date_range_filters_on_enrollment_start_days(history):
    ctx = context(history, start=(T0 + D).date(), end=(T0 + 3 * D).date())
    counts = {c.version: c.total for c in counts_of(ctx)}
    rows = [h for h in HISTORY if 1 <= (T0 + h[1]).date().toordinal() - T0.date().toordinal() <= 3]
    assert counts[1].enrolled == len(rows) == 5
    assert counts[2].enrolled == 0


def test_versions_filter_limits_the_report(history):
    ctx = context(history, versions=[2])
    assert [c.version for c in counts_of(ctx)] == [2]
    assert ctx.baseline == 2


def test_another_conversion_counts_only_its_own_awards(history):
    counts = {c.version: c.total for c in counts_of(context(history, conversion_key="activation"))}
    assert counts[1].converted == 0
    assert counts[2].converted == 1


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"conversion_key": "nope"}, "conversion"),
        ({"versions": [1, 9]}, "versions"),
        ({"versions": [3]}, "versions"),  # a draft is not in any report
        ({"baseline": 5}, "baseline"),
        ({"versions": [2], "baseline": 1}, "baseline"),
        ({"start": T0.date(), "end": (T0 - D).date()}, "end"),
    ],
)
def test_unknown_inputs_name_the_parameter(history, kwargs, field):
    with pytest.raises(selectors.ReportInputError) as raised:
        context(history, **kwargs)
    assert raised.value.field == field


def test_journey_without_conversions_cannot_be_reported():
    journey = JourneyFactory()
    with pytest.raises(selectors.ReportInputError) as raised:
        selectors.report_context(journey=journey)
    assert raised.value.field == "conversion"


def test_daily_counts_are_cohorts_by_start_day(history):
    got = {
        (d.day, d.version): (d.enrolled, d.converted)
        for d in selectors.daily_counts(context(history), selectors.cohorts(context(history)))
    }
    expected: dict = {}
    for number, offset, _, _, awards, _ in expected_history():
        entry = expected.setdefault(((T0 + offset).date(), number), [0, 0])
        entry[0] += 1
        entry[1] += bool(awards)
    assert got == {k: tuple(v) for k, v in expected.items()}


def test_step_funnel_lines_steps_up_by_key_and_counts_each_enrollment_once(history):
    funnel = {
        (s.version, s.step): (s.entered, s.converted)
        for s in selectors.step_funnel(context(history))
    }
    for number, steps in ((1, V1_STEPS), (2, V2_STEPS)):
        for key, _ in steps:
            rows = [h for h in expected_history() if h[0] == number and key in h[3]]
            assert funnel[(number, key)] == (len(rows), sum(1 for h in rows if h[4]))
    assert funnel[(1, "nudge")] == (5, 4)  # one enrollment went round twice, counted once
    assert (2, "nudge") not in funnel
    assert funnel[(2, "tips")] == (3, 2)
    assert selectors.step_order(context(history)) == ["welcome", "wait", "tips", "convert", "nudge"]


def test_common_paths_rank_routes_with_their_conversion_rate(history):
    paths = selectors.common_paths(context(history))
    by_path: dict = {}
    for _, _, held_out, path, awards, _ in expected_history():
        if not held_out:
            entry = by_path.setdefault(tuple(path), [0, 0])
            entry[0] += 1
            entry[1] += bool(awards)
    assert {p.path: (p.enrolled, p.converted) for p in paths} == {
        k: tuple(v) for k, v in by_path.items()
    }
    assert paths[0].path == ("welcome", "wait", "nudge", "convert")
    assert (paths[0].enrolled, paths[0].converted) == (3, 3)
    assert [p.enrolled for p in paths] == sorted((p.enrolled for p in paths), reverse=True)


def test_path_enrollments_are_the_contacts_who_took_it(history):
    ctx = context(history)
    found = list(selectors.path_enrollments(ctx, path=["welcome"]))
    assert len(found) == 2
    assert {e.converted for e in found} == {False}


def test_messages_are_credited_with_the_last_message_before_each_award(history):
    got = {
        (m.version, m.step): (m.sent, m.conversions, m.value)
        for m in selectors.message_attribution(context(history))
    }
    # Messages are sent at their visit (an hour per step); each award goes to the last
    # message sent before it, within the conversion's 7-day window.
    credit: dict = {}
    sent: dict = {}
    types = {1: dict(V1_STEPS), 2: dict(V2_STEPS)}
    for number, _, _, path, awards, _ in expected_history():
        messages = [
            (seq, key) for seq, key in enumerate(path) if types[number][key].startswith("send_")
        ]
        for _, key in messages:
            sent[(number, key)] = sent.get((number, key), 0) + 1
        for hours, value in awards:
            before = [(seq, key) for seq, key in messages if seq <= hours and hours - seq <= 7 * 24]
            if before:
                entry = credit.setdefault((number, before[-1][1]), [0, 0])
                entry[0] += 1
                entry[1] += value
    expected = {k: (n, *credit.get(k, (0, 0))) for k, n in sent.items()}
    assert got == expected
    assert got[(1, "nudge")] == (6, 5, 49 + 20 + 49 + 49 + 15)


def test_message_attribution_respects_the_window_and_ignores_later_messages():
    journey = JourneyFactory()
    paid = ConversionFactory(
        journey=journey, window=datetime.timedelta(days=2), value=Decimal("10")
    )
    version = JourneyVersionFactory(
        journey=journey,
        number=1,
        definition=definition(("welcome", "send_email"), ("later", "send_sms")),
    )
    # Award a day after the email, before the SMS: the email gets it.
    enroll(version, T0, path=("welcome", "later"), sent={"later": 2 * D}, awards=((paid, D),))
    # Award three days after the email: outside the 2-day window, nobody gets it.
    enroll(version, T0, path=("welcome",), awards=((paid, 3 * D),))
    ctx = selectors.report_context(journey=journey)
    got = {m.step: (m.sent, m.conversions, m.value) for m in selectors.message_attribution(ctx)}
    assert got == {"welcome": (2, 1, 10.0), "later": (1, 0, 0.0)}


# Percentiles are read from log-spaced buckets (reporting/rollups.py): within 4.5%.
BUCKET_ERROR = 0.045


def nearest_rank(values, q):
    return float(np.percentile(values, q, method="inverted_cdf"))


def test_goal_achievements_with_time_to_achieve(history):
    got = {(g.goal, g.version): g for g in selectors.goal_achievements(context(history))}
    for number in (1, 2):
        hours = [h[5] for h in expected_history() if h[0] == number and h[5] is not None]
        row = got[("activated", number)]
        assert row.achieved == len(hours)
        assert row.median_seconds == pytest.approx(nearest_rank(hours, 50) * 3600, rel=BUCKET_ERROR)
        assert row.p90_seconds == pytest.approx(nearest_rank(hours, 90) * 3600, rel=BUCKET_ERROR)


def test_time_to_convert_median_and_p90_per_version(history):
    got = {t.version: t for t in selectors.time_to_convert(context(history))}
    for number in (1, 2):
        firsts = [
            min(h for h, _ in row[4]) for row in expected_history() if row[0] == number and row[4]
        ]
        assert got[number].converted == len(firsts)
        assert got[number].median_seconds == pytest.approx(
            nearest_rank(firsts, 50) * 3600, rel=BUCKET_ERROR
        )
        assert got[number].p90_seconds == pytest.approx(
            nearest_rank(firsts, 90) * 3600, rel=BUCKET_ERROR
        )


def test_revisions_of_the_conversion_are_listed_in_order(history):
    for day, kind in ((3, Revision.Kind.CREATED), (6, Revision.Kind.CHANGED)):
        Revision.objects.create(
            journey=history["journey"],
            conversion=history["paid"],
            kind=kind,
            snapshot={},
            changes={"value": [49, 59]} if kind == Revision.Kind.CHANGED else {},
            created_at=T0 + day * D,
        )
    marks = selectors.conversion_revisions(context(history))
    assert [(m.at, m.summary) for m in marks] == [
        (T0 + 3 * D, "Created"),
        (T0 + 6 * D, "Changed: value"),
    ]


def test_holdout_lift_compares_treated_with_held_out(history):
    counts = counts_of(context(history))
    lift = selectors.holdout(counts)
    treated = [h for h in expected_history() if not h[2]]
    held = [h for h in expected_history() if h[2]]
    assert (lift.treated_enrolled, lift.treated_converted) == (
        len(treated),
        sum(1 for h in treated if h[4]),
    )
    assert (lift.held_out_enrolled, lift.held_out_converted) == (
        len(held),
        sum(1 for h in held if h[4]),
    )


def test_split_versions_are_randomized_and_their_sample_ratio_uses_the_split_period():
    journey = JourneyFactory()
    ConversionFactory(journey=journey)
    v1 = JourneyVersionFactory(journey=journey, number=1, published_at=T0)
    v2 = JourneyVersionFactory(
        journey=journey, number=2, published_at=T0 + 5 * D, split_with=v1, traffic=20
    )
    JourneyVersionFactory(journey=journey, number=3, published_at=T0 + 9 * D)
    for _ in range(7):
        enroll(v1, T0 + D)  # before the split: not part of the sample ratio
    for _ in range(8):
        enroll(v1, T0 + 6 * D)
    for _ in range(2):
        enroll(v2, T0 + 6 * D)
    ctx = selectors.report_context(journey=journey)
    rows = {r.version: r for r in selectors.version_rows(ctx, counts_of(ctx))}
    assert rows[2].comparison.kind == stats.RANDOMIZED
    assert rows[3].comparison.kind == stats.SEQUENTIAL
    ratio = rows[2].comparison.sample_ratio
    assert ratio.observed == (8, 2)
    assert ratio.expected_shares == (80, 20)
    assert ratio.p_value == pytest.approx(1.0)
    assert rows[1].enrolled == 15
    # Retired before v2 came: no time side by side, so a before/after comparison.
    retired_early = dataclasses.replace(ctx.by_number(1), retired_at=T0 + 3 * D)
    assert selectors.comparison_kind(retired_early, ctx.by_number(2)) == stats.SEQUENTIAL


def test_full_report_takes_the_same_number_of_queries_whatever_the_data(
    history, django_assert_num_queries
):
    # One more on PostgreSQL: the check of the planner's statistics.
    queries = 21 + (connection.vendor == "postgresql")
    with django_assert_num_queries(queries):
        ctx = context(history)
        report = selectors.full_report(ctx)
    assert report.versions and report.steps and report.daily and report.paths
    assert report.messages and report.goals and report.convert_times
    versions = {v.number: v for v in history["journey"].versions.all()}
    for number, offset, _, path, _, _ in HISTORY * 2:
        enroll(versions[number], T0 + offset, path=tuple(path), awards=((history["paid"], H),))
    with django_assert_num_queries(queries):
        selectors.full_report(context(history))


def test_api_part_of_the_report_takes_five_queries(history, django_assert_num_queries):
    with django_assert_num_queries(5 + (connection.vendor == "postgresql")):
        selectors.version_report(context(history))


def test_a_finished_split_keeps_its_sample_ratio_check():
    """Publishing the winner alone ends the split and clears `traffic`; the comparison of the
    split period is still randomized and still checked against the share it ran at."""
    from journeys.actions.versions import publish_version

    journey = JourneyFactory()
    ConversionFactory(journey=journey)
    v1 = JourneyVersionFactory(journey=journey, number=1, state=JourneyVersion.State.DRAFT)
    v2 = JourneyVersionFactory(journey=journey, number=2, state=JourneyVersion.State.RETIRED)
    with time_machine.travel(T0, tick=False):
        publish_version(version=v1)
    with time_machine.travel(T0 + D, tick=False):
        publish_version(version=v2, traffic=20)
    for _ in range(40):
        enroll(v1, T0 + 2 * D)
    for _ in range(60):
        enroll(v2, T0 + 2 * D)
    with time_machine.travel(T0 + 3 * D, tick=False):
        publish_version(version=v2)  # v2 wins: alone from now on
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.traffic, v2.traffic) == (None, None)
    assert (v1.split_traffic, v2.split_traffic) == (80, 20)

    ctx = selectors.report_context(journey=journey)
    rows = {r.version: r for r in selectors.version_rows(ctx, counts_of(ctx))}
    comparison = rows[2].comparison
    assert comparison.kind == stats.RANDOMIZED
    assert comparison.sample_ratio.observed == (40, 60)
    assert comparison.sample_ratio.expected_shares == (80, 20)
    assert comparison.sample_ratio.mismatch


def test_a_split_is_judged_by_its_daily_looks_with_chance_to_beat_and_outlook():
    journey = JourneyFactory()
    paid = ConversionFactory(journey=journey)
    v1 = JourneyVersionFactory(journey=journey, number=1, published_at=T0)
    v2 = JourneyVersionFactory(
        journey=journey, number=2, published_at=T0, split_with=v1, traffic=50
    )
    # Three days of cohorts: v2 converts 30 of 40 a day, v1 10 of 40.
    for day in range(3):
        for i in range(40):
            enroll(v1, T0 + day * D, awards=((paid, H),) if i < 10 else ())
            enroll(v2, T0 + day * D, awards=((paid, H),) if i < 30 else ())
    ctx = selectors.report_context(journey=journey)
    rows = {r.version: r for r in selectors.version_rows(ctx, counts_of(ctx), cohorts_of(ctx))}
    comparison = rows[2].comparison
    looks = [(30 * d, 40 * d, 10 * d, 40 * d) for d in (1, 2, 3)]
    assert comparison.p_value_always_valid is not None
    assert comparison.p_value_always_valid == pytest.approx(stats.always_valid_p_value(looks))
    assert comparison.chance_to_beat == pytest.approx(stats.chance_to_beat(90, 120, 30, 120))
    assert comparison.outlook.detectable_now is not None
    # Forty enrollments a day in each group over the three days there were.
    expected = stats.outlook(
        enrolled=120, base_converted=30, base_enrolled=120, enrolled_per_day=40
    )
    assert comparison.outlook == expected
    assert rows[1].comparison is None
