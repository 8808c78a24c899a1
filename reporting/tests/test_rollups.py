"""The rollups plus the not-yet-rolled-up tail equal the raw facts, at every stage of
incremental refreshing and after a rebuild."""

import dataclasses
import datetime

import pytest
from anymail.signals import AnymailTrackingEvent
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum

from conversions.models import ConversionAward, GoalAchievement
from conversions.tests.factories import ConversionAwardFactory, GoalAchievementFactory
from journeys.actions.delivery import record_delivery_events
from journeys.models import DeliveryEvent, Enrollment, OutboxMessage, StepVisit
from reporting import rollups, selectors
from reporting.models import (
    ConversionDay,
    ConvertTimeDay,
    GoalTimeDay,
    MessageChunkDay,
    MessageCreditDay,
    MessageDay,
    PathConversionDay,
    PathDay,
    StepConversionDay,
    StepDay,
    VersionDay,
)
from reporting.tasks import refresh_report_rollups
from reporting.tests.factories import StepVisitFactory, enroll, trial_history
from reporting.tests.test_selectors import T0, D, H, history  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db


def contexts(journey):
    """The report under several filters: each conversion, a date range, one version."""
    found = [selectors.report_context(journey=journey)]
    for conversion in journey.conversions.all():
        found.append(selectors.report_context(journey=journey, conversion_key=conversion.key))
    first = journey.enrollments.order_by("started_at").first()
    if first:
        day = first.started_at.date()
        found.append(
            selectors.report_context(
                journey=journey,
                start=day + datetime.timedelta(days=1),
                end=day + datetime.timedelta(days=9),
            )
        )
    numbers = list(
        journey.versions.filter(published_at__isnull=False)
        .order_by("number")
        .values_list("number", flat=True)
    )
    if len(numbers) > 1:
        found.append(selectors.report_context(journey=journey, versions=[numbers[0]]))
    return found


def assert_rollups_equal_facts(journey):
    for ctx in contexts(journey):
        assert selectors.cohorts(ctx) == selectors.cohorts_from_facts(ctx)
        assert selectors.step_funnel(ctx) == selectors.step_funnel_from_facts(ctx)
        assert selectors.time_to_convert(ctx) == selectors.time_to_convert_from_facts(ctx)
        assert selectors.goal_achievements(ctx) == selectors.goal_achievements_from_facts(ctx)
        assert selectors.common_paths(ctx) == selectors.common_paths_from_facts(ctx)
        for attribution in selectors.ATTRIBUTIONS:
            by = dataclasses.replace(ctx, attribution=attribution)
            assert selectors.message_attribution(by) == selectors.message_attribution_from_facts(by)


def visit(enrollment, key, seq, at):
    """A visit as the engine writes it: with the step appended to the enrollment's path."""
    StepVisitFactory(enrollment=enrollment, step_key=key, seq=seq, entered_at=at)
    enrollment.refresh_from_db()
    enrollment.path = [*enrollment.path, key]
    enrollment.save(update_fields=["path"])


def test_rebuilt_rollups_equal_the_facts(history):  # noqa: F811
    journey = history["journey"]
    rollups.rebuild_rollups()
    assert rollups.rolled_up() == {
        "enrollment": Enrollment.objects.order_by("-id").first().id,
        "visit": StepVisit.objects.order_by("-id").first().id,
        "award": ConversionAward.objects.order_by("-id").first().id,
        "achievement": GoalAchievement.objects.order_by("-id").first().id,
        "message_event": DeliveryEvent.objects.order_by("-id").first().id,
    }
    assert sum(VersionDay.objects.values_list("enrolled", flat=True)) == Enrollment.objects.count()
    assert ConversionDay.objects.exists() and StepDay.objects.exists()
    assert StepConversionDay.objects.exists()
    assert ConvertTimeDay.objects.exists() and GoalTimeDay.objects.exists()
    assert PathDay.objects.exists() and PathConversionDay.objects.exists()
    assert MessageDay.objects.exists() and MessageCreditDay.objects.exists()
    # The day totals are the sums of the chunks' rows.
    assert MessageDay.objects.aggregate(n=Sum("sent")) == MessageChunkDay.objects.aggregate(
        n=Sum("sent")
    )
    assert_rollups_equal_facts(journey)


def test_a_believable_history_rolls_up_exactly():
    journey = trial_history(days=24, per_day=14, seed=3)
    assert_rollups_equal_facts(journey)  # nothing rolled up: the tail is everything
    rollups.rebuild_rollups()
    assert_rollups_equal_facts(journey)


def path_rows():
    return (
        sorted(
            PathDay.objects.exclude(enrolled=0).values_list(
                "version_id", "day", "path_hash", "path", "enrolled"
            )
        ),
        sorted(
            PathConversionDay.objects.exclude(converted=0).values_list(
                "conversion_id", "version_id", "day", "path_hash", "converted"
            )
        ),
    )


def test_a_rebuild_counts_paths_in_sql_as_refreshes_count_them_in_python(monkeypatch):
    """The rebuild joins each enrollment's step keys in SQL, a chunk of ids at a time; the
    refresh moves enrollments in Python. Both must give the same rows."""
    journey = trial_history(days=12, per_day=9, seed=5)
    refresh_report_rollups()
    refresh_report_rollups()
    by_refresh = path_rows()
    assert len(by_refresh[0]) > 20 and by_refresh[1]
    monkeypatch.setattr(rollups, "REBUILD_CHUNK", 7)
    rollups.rebuild_rollups()
    assert path_rows() == by_refresh
    assert_rollups_equal_facts(journey)


def test_incremental_refreshes_equal_the_facts_at_every_stage(history):  # noqa: F811
    journey, paid = history["journey"], history["paid"]
    activated = journey.goals.get(key="activated")
    v1 = journey.versions.get(number=1)
    refresh_report_rollups()  # records what it saw; folds it in next time
    assert rollups.rolled_up()["enrollment"] == 0
    assert_rollups_equal_facts(journey)
    refresh_report_rollups()
    assert rollups.rolled_up()["enrollment"] > 0
    assert_rollups_equal_facts(journey)

    # New facts arrive in every order: an award before the visits it pairs with, visits of
    # enrollments converted long ago, a second visit of a step, a second award.
    late = enroll(v1, T0 + 2 * D, path=("welcome",))
    ConversionAwardFactory(enrollment=late, conversion=paid, awarded_at=T0 + 3 * D, dedupe_key="x")
    GoalAchievementFactory(enrollment=late, goal=activated, achieved_at=T0 + 2 * D + 5 * H)
    assert_rollups_equal_facts(journey)
    refresh_report_rollups()
    assert_rollups_equal_facts(journey)
    visit(late, "wait", 1, T0 + 3 * D)
    visit(late, "welcome", 2, T0 + 4 * D)
    converted_long_ago = (
        Enrollment.objects.filter(awards__conversion=paid, held_out=False).order_by("id").first()
    )
    visit(converted_long_ago, "nudge", 10, T0 + 9 * D)
    assert_rollups_equal_facts(journey)
    refresh_report_rollups()
    assert_rollups_equal_facts(journey)
    ConversionAwardFactory(enrollment=late, conversion=paid, awarded_at=T0 + 5 * D, dedupe_key="y")
    fresh = enroll(
        v1, T0 + 3 * D, path=("welcome", "wait"), awards=((paid, H),), goals=((activated, 30 * H),)
    )
    refresh_report_rollups()
    assert_rollups_equal_facts(journey)
    refresh_report_rollups()
    assert_rollups_equal_facts(journey)
    assert rollups.rolled_up()["award"] == fresh.awards.get().id

    # Once rolled up, the figures come from the rollups alone.
    ctx = selectors.report_context(journey=journey)
    before = selectors.version_counts(ctx, selectors.cohorts(ctx))
    VersionDay.objects.update(enrolled=0)
    after = selectors.version_counts(ctx, selectors.cohorts(ctx))
    assert [c.total.enrolled for c in after] == [0, 0] != [c.total.enrolled for c in before]
    paths = selectors.common_paths(ctx)
    PathDay.objects.update(enrolled=0)
    assert paths and selectors.common_paths(ctx) == []


def test_rebuild_command_repairs_drifted_rollups(history, capsys):  # noqa: F811
    journey = history["journey"]
    call_command("rebuild_report_rollups")
    assert "Rebuilt the report rollups" in capsys.readouterr().out
    StepDay.objects.update(entered=999)
    assert selectors.step_funnel(selectors.report_context(journey=journey)) != (
        selectors.step_funnel_from_facts(selectors.report_context(journey=journey))
    )
    call_command("rebuild_report_rollups")
    assert_rollups_equal_facts(journey)
    call_command("refresh_report_rollups")
    assert "Report rollups now hold" in capsys.readouterr().out
    assert_rollups_equal_facts(journey)


def test_message_figures_stay_exact_as_messages_change_after_they_are_rolled_up(history):  # noqa: F811
    """Feedback about a message rolled up long ago (even backdated before an award, which
    moves the award's credit), a window edited, a message sent: rollup + touched chunks
    equal the facts before and after each refresh, under every attribution."""
    journey, paid = history["journey"], history["paid"]
    rollups.rebuild_rollups()
    assert_rollups_equal_facts(journey)
    award = ConversionAward.objects.filter(conversion=paid).order_by("id").first()
    welcome = OutboxMessage.objects.get(enrollment=award.enrollment_id, step_key="welcome")
    before = message_figures(journey, "last_opened")

    # Opened and clicked before the award, reported afterwards: the credit moves to it.
    record_delivery_events(
        events=[
            AnymailTrackingEvent(
                event_type=kind,
                timestamp=award.awarded_at - H,
                event_id=f"late-{kind}",
                metadata={"outbox_id": str(welcome.pk)},
            )
            for kind in ("opened", "clicked")
        ],
        provider="Test",
        now=award.awarded_at + 9 * D,
    )
    assert message_figures(journey, "last_opened") != before
    assert_rollups_equal_facts(journey)
    for _ in range(2):
        refresh_report_rollups()
        assert_rollups_equal_facts(journey)

    # A window so short that no message is in it, then none at all.
    for window in (datetime.timedelta(seconds=1), None):
        paid.window = window
        paid.save(update_fields=["window"])
        assert_rollups_equal_facts(journey)
        refresh_report_rollups()
        assert_rollups_equal_facts(journey)

    # A message sent to an enrollment that has none yet.
    late = enroll(journey.versions.get(number=2), T0 + 2 * D, path=("welcome",))
    assert_rollups_equal_facts(journey)
    for _ in range(2):
        refresh_report_rollups()
        assert_rollups_equal_facts(journey)
    assert rollups.rolled_up()["message_event"] == (
        DeliveryEvent.objects.get(message__enrollment=late).pk
    )

    # Once rolled up, the figures come from the rollups alone.
    MessageDay.objects.update(sent=0)
    MessageCreditDay.objects.update(awards=0)
    figures = message_figures(journey, "last_sent")
    assert {sent for sent, _ in figures.values()} == {0}
    assert {awards for _, awards in figures.values()} == {0}


def message_figures(journey, attribution):
    ctx = selectors.report_context(journey=journey, attribution=attribution)
    return {
        (m.version, m.step): (m.sent, m.conversions) for m in selectors.message_attribution(ctx)
    }


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="planner statistics: PostgreSQL"
)  # fmt: skip
@pytest.mark.django_db(transaction=True)
def test_a_refresh_first_analyses_the_fact_tables_that_grew(monkeypatch):
    """With statistics from when the visits table was empty, the tail's NOT EXISTS probes
    were planned as scans of the whole table (88 s a report under the engine benchmark)."""
    monkeypatch.setattr(rollups, "STALE_ROWS", 20)
    journey = trial_history(days=2, per_day=10, seed=1)  # about a hundred visits, committed
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    with connection.cursor() as cursor:  # the statistics of the inserts are flushed by now
        cursor.execute("SELECT pg_stat_clear_snapshot()")

    assert "journeys_stepvisit" in rollups.analyze_grown_facts()
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'journeys_stepvisit'")
        assert cursor.fetchone()[0] == StepVisit.objects.count()
    assert rollups.analyze_grown_facts() == []  # nothing changed since
    refresh_report_rollups()
    assert_rollups_equal_facts(journey)
