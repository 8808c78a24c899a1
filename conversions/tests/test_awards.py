"""The one award function: every counting mode counted once, whatever path or race."""

import datetime
import threading
from decimal import Decimal

import pytest
from django.db import connection

from conversions.actions import award_conversion, record_goal_achievement
from conversions.models import ConversionAward, Counting, GoalAchievement
from conversions.tests.factories import ConversionFactory, GoalFactory
from journeys.actions import ingest_events, run_due
from journeys.models import Enrollment, Event
from journeys.tests.factories import ContactFactory, EnrollmentFactory, EventFactory
from journeys.tests.flows import live_journey

T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)


def award(conversion, enrollment, **kwargs):
    kwargs.setdefault("source", ConversionAward.Source.EVENT)
    return award_conversion(conversion=conversion, enrollment=enrollment, now=T0, **kwargs)


@pytest.mark.django_db
def test_once_per_enrollment_counts_the_first_award_only():
    enrollment = EnrollmentFactory()
    conversion = ConversionFactory(journey=enrollment.journey, value=Decimal("12.50"))
    assert award(conversion, enrollment) is True
    assert award(conversion, enrollment, source=ConversionAward.Source.CONVERT_STEP) is False
    stored = ConversionAward.objects.get()
    assert (stored.source, stored.value, stored.counting) == (
        "event",
        Decimal("12.50"),
        "once_per_enrollment",
    )
    event = Event.objects.get(name="conversion")
    assert event.event_id == f"conversion:{conversion.pk}:e{enrollment.pk}"
    assert event.properties["key"] == conversion.key and event.properties["value"] == 12.5


@pytest.mark.django_db
def test_once_per_contact_counts_once_across_enrollments():
    first = EnrollmentFactory()
    second = EnrollmentFactory(version=first.version, contact=first.contact)
    conversion = ConversionFactory(journey=first.journey, counting=Counting.ONCE_PER_CONTACT)
    assert award(conversion, first) is True
    assert award(conversion, second) is False
    assert ConversionAward.objects.count() == 1


@pytest.mark.django_db
def test_every_time_counts_each_distinct_source_once():
    enrollment = EnrollmentFactory()
    conversion = ConversionFactory(journey=enrollment.journey, counting=Counting.EVERY_TIME)
    one, two = EventFactory(contact=enrollment.contact), EventFactory(contact=enrollment.contact)
    assert award(conversion, enrollment, source_event=one) is True
    assert award(conversion, enrollment, source_event=two) is True
    assert award(conversion, enrollment, source_event=one) is False
    assert sorted(ConversionAward.objects.values_list("dedupe_key", flat=True)) == [
        f"event:{one.pk}",
        f"event:{two.pk}",
    ]
    assert Event.objects.filter(name="conversion").count() == 2


@pytest.mark.django_db
def test_award_events_carry_the_depth_and_are_dropped_past_eight(caplog):
    enrollment = EnrollmentFactory()
    conversion = ConversionFactory(journey=enrollment.journey, counting=Counting.EVERY_TIME)
    shallow = EventFactory(contact=enrollment.contact, depth=7)
    deep = EventFactory(contact=enrollment.contact, depth=8)
    award(conversion, enrollment, source_event=shallow)
    award(conversion, enrollment, source_event=deep)
    by_depth = dict(Event.objects.filter(name="conversion").values_list("depth", "status"))
    assert by_depth == {8: Event.Status.PENDING, 9: Event.Status.DROPPED}
    assert "Dropped internal event" in caplog.text


@pytest.mark.django_db
def test_goal_achievement_is_recorded_once_with_its_event():
    enrollment = EnrollmentFactory()
    goal = GoalFactory(journey=enrollment.journey)
    record_goal_achievement(goal=goal, enrollment=enrollment, now=T0, step_key="check")
    record_goal_achievement(goal=goal, enrollment=enrollment, now=T0, step_key="check")
    assert GoalAchievement.objects.count() == 1
    event = Event.objects.get(name="goal_achieved")
    assert event.properties["key"] == goal.key and event.properties["step"] == "check"


THREE_PATHS = {
    "goals": [
        {
            "key": "activated",
            "name": "Activated",
            "criteria": {"event": "purchase"},
            "conversion": "paid",
        }
    ],
    "conversions": [{"key": "paid", "name": "Paid", "value": 30.0, "event": {"event": "purchase"}}],
}
THREE_PATH_STEPS = [
    {"key": "wait", "type": "wait", "duration": "PT1H", "next": "check"},
    {
        "key": "check",
        "type": "evaluate_goal",
        "goal": "activated",
        "achieved": "buy",
        "not_achieved": "buy",
    },
    {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
]


@pytest.mark.django_db
def test_the_three_award_paths_for_one_enrollment_count_once():
    live_journey(THREE_PATH_STEPS, **THREE_PATHS)
    ingest_events(events=[{"id": "s", "contact": "ann", "name": "signed_up"}], now=T0)
    run_due(now=T0)
    later = T0 + datetime.timedelta(hours=1)
    ingest_events(events=[{"id": "p", "contact": "ann", "name": "purchase"}], now=later)
    run_due(now=later)
    enrollment = Enrollment.objects.get()
    assert enrollment.path == ["wait", "check", "buy"]
    assert GoalAchievement.objects.count() == 1
    award = ConversionAward.objects.get()
    assert award.source == ConversionAward.Source.EVENT  # the event was matched first
    assert Event.objects.filter(name="conversion").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_three_award_paths_racing_for_one_enrollment_award_once():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite runs one writer at a time, so nothing races")
    enrollment = EnrollmentFactory(contact=ContactFactory())
    conversion = ConversionFactory(journey=enrollment.journey)
    source_event = EventFactory(contact=enrollment.contact)
    sources = [
        {"source": ConversionAward.Source.CONVERT_STEP, "step_key": "buy", "dedupe_key": "seq:2"},
        {"source": ConversionAward.Source.GOAL, "step_key": "check", "dedupe_key": "seq:1"},
        {"source": ConversionAward.Source.EVENT, "source_event": source_event},
    ]
    for _ in range(5):
        ConversionAward.objects.all().delete()
        Event.objects.filter(name="conversion").delete()
        barrier = threading.Barrier(len(sources))
        results = []

        def race(kwargs, barrier=barrier, results=results):
            try:
                barrier.wait()
                results.append(award(conversion, enrollment, **kwargs))
            finally:
                connection.close()

        threads = [threading.Thread(target=race, args=(kwargs,)) for kwargs in sources]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert ConversionAward.objects.count() == 1
        assert Event.objects.filter(name="conversion").count() == 1
        assert results.count(True) <= 1
