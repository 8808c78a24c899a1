"""journeys.actions.events: events stored once, then matched against triggers, re-entry rules, exit rules, goal waits and event conversions."""

import datetime
import logging
from decimal import Decimal

import pytest
import time_machine
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from conversions.models import ConversionAward, GoalAchievement
from journeys import engine
from journeys.actions import events as event_actions
from journeys.actions.events import ingest_events, process_pending_events, retry_events
from journeys.actions.sweep import run_due
from journeys.models import Contact, Enrollment, Event, OutboxMessage, StepVisit
from journeys.tests.actions.scenarios import (
    ACTIVATION,
    EVENT_CONVERSION_STEPS,
    GOAL_STEPS,
    GOALS,
    NURTURE_STEPS,
    PAID,
    T0,
    WAIT_STEPS,
    run,
    send,
)
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db


def test_unknown_contact_is_created_by_its_first_event():
    live_journey(NURTURE_STEPS, conversions=[PAID])
    send(("e1", "new-person", "signed_up"), now=T0)
    run(now=T0)
    contact = Contact.objects.get(external_id="new-person")
    enrollment = contact.enrollments.get()
    # No email address: the message is skipped with the reason, the journey goes on.
    assert enrollment.state == Enrollment.State.COMPLETED
    message = OutboxMessage.objects.get()
    assert (message.status, message.reason) == ("skipped", "no_address")


def test_trigger_where_filters_on_event_properties():
    live_journey(
        [{"key": "x", "type": "update_contact", "attributes": {"in": True}, "next": None}],
        triggers=[
            {
                "type": "event",
                "event": "trial_started",
                "where": [{"property": "plan", "op": "eq", "value": "pro"}],
            }
        ],
    )
    send(
        ("e1", "a", "trial_started", {"plan": "free"}),
        ("e2", "b", "trial_started", {"plan": "pro"}),
        now=T0,
    )
    run(now=T0)
    assert list(Enrollment.objects.values_list("contact__external_id", flat=True)) == ["b"]
    assert Event.objects.filter(status=Event.Status.PROCESSED).count() == 2


@pytest.mark.parametrize(
    ("reentry", "during", "after"),
    [("once", 1, 1), ("after_exit", 1, 2), ("concurrent", 2, 3)],
)
def test_reentry_modes(reentry, during, after):
    live_journey(WAIT_STEPS, settings={"reentry": reentry, "holdout_percent": 0})
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    send(("e2", "ann", "signed_up"), now=T0)
    run(now=T0)
    assert Enrollment.objects.count() == during
    later = T0 + datetime.timedelta(days=2)
    run(now=later)
    assert not Enrollment.objects.filter(state=Enrollment.State.ACTIVE).exists()
    send(("e3", "ann", "signed_up"), now=later)
    run(now=later)
    assert Enrollment.objects.count() == after


def test_exit_when_event_exits_a_waiting_enrollment_at_once():
    live_journey(
        WAIT_STEPS,
        settings={"reentry": "after_exit", "holdout_percent": 0},
        exit_when=[{"type": "event", "event": "unsubscribed"}],
    )
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    send(("e2", "ann", "unsubscribed"), now=T0 + datetime.timedelta(hours=1))
    run(now=T0 + datetime.timedelta(hours=1))
    enrollment = Enrollment.objects.get()
    assert enrollment.state == Enrollment.State.EXITED
    assert enrollment.exit_reason == "exit_when: event 'unsubscribed'"
    assert enrollment.due_at is None and enrollment.entry_lock is None
    run(now=T0 + datetime.timedelta(days=3))
    enrollment.refresh_from_db()
    assert enrollment.path == ["w"]


def test_exit_when_on_this_journeys_conversion():
    live_journey(
        [
            {"key": "buy", "type": "convert", "conversion": "paid", "next": "w"},
            {"key": "w", "type": "wait", "duration": "P1D", "next": None},
        ],
        conversions=[PAID],
        exit_when=[{"type": "conversion", "conversion": "paid"}],
    )
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    enrollment = Enrollment.objects.get()
    assert enrollment.state == Enrollment.State.EXITED
    assert enrollment.exit_reason == "exit_when: conversion 'paid'"


def status_of(*event_ids):
    return [Event.objects.get(event_id=event_id).status for event_id in event_ids]


def test_events_nothing_listens_to_are_stored_processed_and_never_queued():
    live_journey(
        WAIT_STEPS,
        exit_when=[{"type": "event", "event": "unsubscribed"}],
        conversions=[{**PAID, "event": {"event": "purchase"}}],
    )
    with CaptureQueriesContext(connection) as queries:
        send(
            ("e1", "ann", "signed_up"),
            ("e2", "ann", "page_viewed"),
            ("e3", "bob", "unsubscribed"),
            ("e4", "bob", "purchase"),
            ("e5", "bob", "sms_inbound", {"text": "STOP"}),
            ("e6", "cat", "page_viewed"),
            now=T0,
        )
    # No version waits on a goal: no contact's enrollments need looking at.
    assert not [q for q in queries if "waiting_for_goal" in q["sql"]]
    assert status_of("e1", "e2", "e3", "e4", "e5", "e6") == [
        "pending", "processed", "pending", "pending", "pending", "processed"
    ]  # fmt: skip
    assert Event.objects.get(event_id="e2").processed_at == T0
    assert run(now=T0)["events"] == 4


def test_a_journey_published_later_hears_the_events_stored_after_it():
    send(("e1", "ann", "page_viewed"), now=T0)
    live_journey(WAIT_STEPS, triggers=[{"type": "event", "event": "page_viewed"}])
    send(("e2", "bob", "page_viewed"), now=T0)
    assert status_of("e1", "e2") == ["processed", "pending"]
    run(now=T0)
    assert list(Enrollment.objects.values_list("contact__external_id", flat=True)) == ["bob"]


def test_any_event_of_a_contact_waiting_on_a_goal_is_matched():
    """Contract: a goal wait is re-checked by an incoming event, whatever its name."""
    live_journey(GOAL_STEPS, goals=GOALS, conversions=[ACTIVATION])
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    assert Enrollment.objects.get().waiting_for_goal == "activated"
    send(("e2", "ann", "page_viewed"), ("e3", "bob", "page_viewed"), now=T0)
    assert status_of("e2", "e3") == ["pending", "processed"]


def test_evaluate_goal_wait_is_woken_by_a_matching_event():
    journey, _ = live_journey(GOAL_STEPS, goals=GOALS, conversions=[ACTIVATION])
    with time_machine.travel(T0, tick=False) as traveller:
        send(("e1", "ann", "signed_up"))
        run()
        enrollment = Enrollment.objects.get()
        assert enrollment.waiting_for_goal == "activated"
        assert enrollment.due_at == T0 + datetime.timedelta(days=7)

        traveller.move_to(T0 + datetime.timedelta(days=1))
        send(("e2", "ann", "page_viewed"))
        run()
        enrollment.refresh_from_db()
        assert enrollment.waiting_for_goal == "activated"
        assert enrollment.due_at == T0 + datetime.timedelta(days=7)

        traveller.move_to(T0 + datetime.timedelta(days=2))
        send(("e3", "ann", "project_created"))
        run()
    enrollment.refresh_from_db()
    assert enrollment.state == Enrollment.State.COMPLETED
    assert enrollment.path == ["check", "yay"]
    assert list(
        StepVisit.objects.filter(enrollment=enrollment)
        .order_by("seq")
        .values_list("step_key", "outcome")
    ) == [
        ("check", "achieved"),
        ("yay", "updated"),
    ]
    achievement = GoalAchievement.objects.get()
    assert (achievement.goal.key, achievement.step_key) == ("activated", "check")
    assert achievement.achieved_at == T0 + datetime.timedelta(days=2)
    award = ConversionAward.objects.get()
    assert (award.conversion.key, award.source, award.value) == (
        "activation",
        "goal",
        Decimal("5.00"),
    )
    goal_event = Event.objects.get(name="goal_achieved")
    assert goal_event.properties["journey"] == journey.key
    assert goal_event.properties["key"] == "activated"


def test_exit_when_exits_an_enrollment_waiting_on_a_goal():
    live_journey(
        GOAL_STEPS,
        goals=GOALS,
        conversions=[ACTIVATION],
        exit_when=[{"type": "event", "event": "unsubscribed"}],
    )
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    send(("e2", "ann", "unsubscribed"), now=T0)
    run(now=T0)
    enrollment = Enrollment.objects.get()
    assert enrollment.state == Enrollment.State.EXITED
    assert enrollment.waiting_for_goal == ""


def test_holdout_share_takes_no_step_but_event_conversions_still_count():
    live_journey(
        [
            {"key": "w", "type": "wait", "duration": "P3D", "next": "tag"},
            {"key": "tag", "type": "update_contact", "attributes": {"done": True}, "next": None},
        ],
        settings={"reentry": "once", "holdout_percent": 50},
        conversions=[{"key": "paid", "name": "Paid", "event": {"event": "purchase"}}],
    )
    send(*[(f"s{i}", f"c{i}", "signed_up") for i in range(400)], now=T0)
    run(now=T0)
    held_out = Enrollment.objects.filter(held_out=True)
    assert 150 < held_out.count() < 250
    assert not StepVisit.objects.filter(enrollment__held_out=True).exists()
    assert all(e.due_at == T0 + datetime.timedelta(days=3) for e in held_out)
    one = held_out.first()
    send(("p1", one.contact.external_id, "purchase"), now=T0 + datetime.timedelta(days=1))
    run(now=T0 + datetime.timedelta(days=1))
    assert ConversionAward.objects.get().enrollment == one
    run(now=T0 + datetime.timedelta(days=3))
    assert not Enrollment.objects.filter(state=Enrollment.State.ACTIVE).exists()
    assert not StepVisit.objects.filter(enrollment__held_out=True).exists()


@pytest.mark.parametrize(
    ("counting", "expected"),
    [("once_per_enrollment", 1), ("every_time", 2)],
)
def test_event_conversion_counting_per_enrollment(counting, expected):
    live_journey(
        EVENT_CONVERSION_STEPS,
        conversions=[
            {
                "key": "paid",
                "name": "Paid",
                "value": 10.0,
                "counting": counting,
                "event": {"event": "purchase"},
            }
        ],
    )
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    send(("p1", "ann", "purchase"), ("p2", "ann", "purchase"), now=T0)
    run(now=T0)
    send(("p1", "ann", "purchase"), now=T0)  # a replay
    run(now=T0)
    assert ConversionAward.objects.count() == expected
    assert Event.objects.filter(name="conversion").count() == expected


def test_once_per_contact_counts_one_award_across_enrollments():
    live_journey(
        EVENT_CONVERSION_STEPS,
        settings={"reentry": "concurrent", "holdout_percent": 0},
        conversions=[
            {
                "key": "paid",
                "name": "Paid",
                "counting": "once_per_contact",
                "event": {"event": "purchase"},
            }
        ],
    )
    send(("e1", "ann", "signed_up"), ("e2", "ann", "signed_up"), now=T0)
    run(now=T0)
    assert Enrollment.objects.count() == 2
    send(("p1", "ann", "purchase"), now=T0)
    send(("p2", "ann", "purchase"), now=T0)
    run(now=T0)
    assert ConversionAward.objects.count() == 1


def test_a_once_per_contact_event_award_goes_to_the_contacts_newest_enrollment():
    live_journey(
        EVENT_CONVERSION_STEPS,
        settings={"reentry": "concurrent", "holdout_percent": 0},
        conversions=[
            {
                "key": "paid",
                "name": "Paid",
                "counting": "once_per_contact",
                "event": {"event": "purchase"},
            }
        ],
    )
    later = T0 + datetime.timedelta(hours=1)
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    send(("e2", "ann", "signed_up"), now=later)
    run(now=later)
    send(("p1", "ann", "purchase"), now=later)
    run(now=later)
    award = ConversionAward.objects.get()
    assert award.enrollment == Enrollment.objects.get(trigger_event__event_id="e2")


def test_conversion_window_counts_events_after_the_enrollment_ended():
    live_journey(
        [{"key": "x", "type": "update_contact", "attributes": {"a": 1}, "next": None}],
        conversions=[
            {"key": "paid", "name": "Paid", "window": "P30D", "event": {"event": "purchase"}}
        ],
    )
    send(("e1", "ann", "signed_up"), ("e2", "bob", "signed_up"), now=T0)
    run(now=T0)
    assert Enrollment.objects.filter(state=Enrollment.State.COMPLETED).count() == 2
    ingest_events(
        events=[
            {
                "id": "p1",
                "contact": "ann",
                "name": "purchase",
                "timestamp": T0 + datetime.timedelta(days=29),
            },
            {
                "id": "p2",
                "contact": "bob",
                "name": "purchase",
                "timestamp": T0 + datetime.timedelta(days=31),
            },
        ],
        now=T0 + datetime.timedelta(days=31),
    )
    run(now=T0 + datetime.timedelta(days=31))
    assert list(ConversionAward.objects.values_list("contact__external_id", flat=True)) == ["ann"]


def test_without_window_only_active_enrollments_convert():
    live_journey(
        [{"key": "x", "type": "update_contact", "attributes": {"a": 1}, "next": None}],
        conversions=[{"key": "paid", "name": "Paid", "event": {"event": "purchase"}}],
    )
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    send(("p1", "ann", "purchase"), now=T0)
    run(now=T0)
    assert not ConversionAward.objects.exists()


@pytest.mark.parametrize(
    ("properties", "value"),
    [
        ({"amount": 99.5}, Decimal("99.50")),
        ({"amount": "12"}, Decimal("12.00")),
        ({"amount": "n/a"}, Decimal("7.00")),
        ({}, Decimal("7.00")),
    ],
)
def test_value_property_reads_the_award_value_from_the_event(properties, value):
    live_journey(
        EVENT_CONVERSION_STEPS,
        conversions=[
            {
                "key": "paid",
                "name": "Paid",
                "value": 7.0,
                "event": {
                    "event": "purchase",
                    "where": [{"property": "currency", "op": "ne", "value": "XXX"}],
                    "value_property": "amount",
                },
            }
        ],
    )
    send(("e1", "ann", "signed_up"), now=T0)
    send(("p1", "ann", "purchase", properties), now=T0)
    run(now=T0)
    assert ConversionAward.objects.get().value == value


def test_two_journeys_triggering_each_other_stop_at_the_depth_guard(caplog):
    ping_key, pong_key = "ping", "pong"
    live_journey(
        [{"key": "c", "type": "convert", "conversion": "done", "next": None}],
        key=ping_key,
        settings={"reentry": "concurrent", "holdout_percent": 0},
        triggers=[
            {"type": "event", "event": "start"},
            {"type": "conversion", "journey": pong_key, "conversion": "done"},
        ],
        conversions=[{"key": "done", "name": "Done"}],
    )
    live_journey(
        [{"key": "c", "type": "convert", "conversion": "done", "next": None}],
        key=pong_key,
        settings={"reentry": "concurrent", "holdout_percent": 0},
        triggers=[{"type": "conversion", "journey": ping_key, "conversion": "done"}],
        conversions=[{"key": "done", "name": "Done"}],
    )
    send(("e1", "ann", "start"), now=T0)
    with caplog.at_level(logging.WARNING, logger="conversions.actions"):
        run(now=T0)
    # depth 0 starts ping; awards at depths 1..8 start the next journey; the 9th is dropped.
    assert Enrollment.objects.count() == 9
    assert ConversionAward.objects.count() == 9
    dropped = Event.objects.get(status=Event.Status.DROPPED)
    assert dropped.depth == 9 and "deeper than 8" in dropped.error
    assert not Event.objects.filter(status=Event.Status.PENDING).exists()
    assert "Dropped internal event" in caplog.text


def test_same_event_three_times_is_one_event_one_award_one_downstream_enrollment():
    live_journey(
        EVENT_CONVERSION_STEPS,
        key="shop",
        conversions=[{"key": "paid", "name": "Paid", "event": {"event": "purchase"}}],
    )
    live_journey(
        [{"key": "x", "type": "update_contact", "attributes": {"thanked": True}, "next": None}],
        settings={"reentry": "concurrent", "holdout_percent": 0},
        triggers=[{"type": "conversion", "journey": "shop", "conversion": "paid"}],
    )
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    results = [send(("p1", "ann", "purchase"), now=T0) for _ in range(3)]
    assert results == [(1, 0), (0, 1), (0, 1)]
    run(now=T0)
    results.append(send(("p1", "ann", "purchase"), now=T0))
    run(now=T0)
    assert results[-1] == (0, 1)
    assert Event.objects.filter(event_id="p1").count() == 1
    assert ConversionAward.objects.count() == 1
    assert Enrollment.objects.exclude(journey__key="shop").count() == 1


def test_duplicates_within_one_batch_are_counted():
    assert send(("x", "ann", "a"), ("x", "ann", "a"), ("y", "ann", "b"), now=T0) == (2, 1)


def test_an_archived_event_conversion_still_counts_for_versions_published_before():
    from journeys.actions.versions import publish_version, save_draft_version
    from journeys.selectors import journey_definition

    paid = {"key": "paid", "name": "Paid", "event": {"event": "purchase"}}
    with time_machine.travel(T0, tick=False) as traveller:
        journey, first = live_journey(
            EVENT_CONVERSION_STEPS,
            settings={"reentry": "concurrent", "holdout_percent": 0},
            conversions=[paid],
        )
        send(("e1", "ann", "signed_up"))
        run()
        traveller.move_to(T0 + datetime.timedelta(minutes=30))
        definition = journey_definition(journey=journey)
        definition["conversions"] = []
        draft = save_draft_version(journey=journey, definition=definition).version
        # The draft archived the conversion; the live version still counts it.
        send(("p0", "ann", "purchase"))
        run()
        assert ConversionAward.objects.count() == 1
        traveller.move_to(T0 + datetime.timedelta(hours=1))
        second = publish_version(version=draft)
        send(("e2", "bob", "signed_up"))
        run()
        send(("p1", "ann", "purchase"), ("p2", "bob", "purchase"))
        run()
    assert list(ConversionAward.objects.values_list("version", flat=True)) == [first.pk]
    assert Enrollment.objects.get(contact__external_id="bob").version == second


# --- Poison: one event that cannot be matched fails alone (issue 12) ---------------------------


@pytest.fixture
def poison(monkeypatch):
    """Matching raises (any exception, here a made-up one) for events whose properties say
    `poison`: a stand-in for whatever a bad event may trigger in the engine or the writes."""

    class Poisoned(Exception):
        pass

    real = engine.rule_matches_event

    def rule_matches_event(rule, *, journey_key, name, properties):
        if properties.get("poison"):
            raise Poisoned("cannot digest this event")
        return real(rule, journey_key=journey_key, name=name, properties=properties)

    monkeypatch.setattr(engine, "rule_matches_event", rule_matches_event)
    return monkeypatch


def _signed_up(count, poisoned=(), contact=lambda index: f"c{index}"):
    ingest_events(
        events=[
            {
                "id": f"e{index}",
                "contact": contact(index),
                "name": "signed_up",
                "properties": {"poison": True} if index in poisoned else {},
            }
            for index in range(count)
        ],
        now=T0,
    )


def test_a_failing_event_fails_alone_and_the_rest_of_its_batch_is_processed(poison, settings):
    settings.ENGINE_MAX_ATTEMPTS = 3
    live_journey(WAIT_STEPS)
    _signed_up(40, poisoned={17})

    assert process_pending_events(now=T0) == 39
    assert Enrollment.objects.count() == 39
    bad = Event.objects.get(event_id="e17")
    assert (bad.status, bad.attempts) == (Event.Status.PENDING, 1)
    assert bad.error == "Poisoned: cannot digest this event"
    assert Event.objects.filter(status=Event.Status.PROCESSED).count() == 39

    # Tried again by the next runs, then parked as failed after its attempts.
    assert process_pending_events(now=T0) == 0
    assert Event.objects.get(event_id="e17").status == Event.Status.PENDING
    assert process_pending_events(now=T0) == 0
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == (Event.Status.FAILED, 3)
    assert bad.error == "Poisoned: cannot digest this event"
    assert process_pending_events(now=T0) == 0


def test_two_failing_events_of_a_batch_are_each_found(poison):
    live_journey(WAIT_STEPS)
    _signed_up(50, poisoned={0, 49})
    assert process_pending_events(now=T0) == 48
    assert set(
        Event.objects.filter(status=Event.Status.PENDING).values_list("event_id", flat=True)
    ) == {"e0", "e49"}


def test_bisection_matches_a_500_event_batch_with_one_bad_event_in_few_tries(poison, monkeypatch):
    live_journey(WAIT_STEPS)
    _signed_up(500, poisoned={321})
    real = event_actions._match_events
    sizes = []

    def counting(events, *, now):
        sizes.append(len(events))
        return real(events, now=now)

    monkeypatch.setattr(event_actions, "_match_events", counting)
    assert process_pending_events(now=T0) == 499
    # The whole batch, then two halves a level for 9 levels: 19 tries, about three
    # batches' worth of events (one event at a time would be 500 tries).
    assert len(sizes) == 19
    assert sum(sizes) < 3 * 500


def test_a_contacts_later_events_wait_behind_its_failing_one(poison, settings):
    settings.ENGINE_MAX_ATTEMPTS = 2
    live_journey(WAIT_STEPS, settings={"reentry": "concurrent", "holdout_percent": 0})
    # ann: e0 (bad), e1, e3; bob: e2.
    _signed_up(4, poisoned={0}, contact=lambda index: "bob" if index == 2 else "ann")

    assert process_pending_events(now=T0) == 1
    assert list(Enrollment.objects.values_list("contact__external_id", flat=True)) == ["bob"]
    assert set(
        Event.objects.filter(status=Event.Status.PENDING).values_list("event_id", flat=True)
    ) == {"e0", "e1", "e3"}

    # Once the bad event is parked as failed, ann's later events go on, in order (each in a
    # batch of its own, since e1 starts an enrollment that e3 must see).
    assert process_pending_events(now=T0) == 0
    assert Event.objects.get(event_id="e0").status == Event.Status.FAILED
    assert process_pending_events(now=T0) == 1
    assert process_pending_events(now=T0) == 1
    assert Enrollment.objects.filter(contact__external_id="ann").count() == 2


def test_a_database_error_is_not_blamed_on_an_event(monkeypatch):
    live_journey(WAIT_STEPS)
    _signed_up(3)

    def down(events, *, now):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(event_actions, "_match_events", down)
    with pytest.raises(OperationalError):
        process_pending_events(now=T0)
    assert set(Event.objects.values_list("status", "attempts", "error")) == {
        (Event.Status.PENDING, 0, "")
    }


def test_run_due_goes_on_past_a_failing_event_and_a_retried_one_is_processed(poison, settings):
    settings.ENGINE_MAX_ATTEMPTS = 1
    live_journey(WAIT_STEPS)
    _signed_up(5, poisoned={2})
    run_due(now=T0)
    assert Enrollment.objects.count() == 4
    bad = Event.objects.get(event_id="e2")
    assert bad.status == Event.Status.FAILED

    poison.undo()
    assert retry_events(ids=[bad.pk]) == 1
    assert retry_events(ids=[bad.pk]) == 0
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == (Event.Status.PENDING, 0)
    run_due(now=T0)
    bad.refresh_from_db()
    assert (bad.status, bad.error) == (Event.Status.PROCESSED, "")
    assert Enrollment.objects.count() == 5


def test_an_event_of_year_one_with_a_windowed_conversion_is_processed():
    # Go's zero time, stored by a path that skipped the API's floor: the window counted
    # back from it ran off the calendar (OverflowError) and stopped every batch.
    live_journey(
        WAIT_STEPS,
        conversions=[
            {"key": "paid", "name": "Paid", "window": "P30D", "event": {"event": "purchase"}}
        ],
    )
    send(("s1", "ann", "signed_up"), now=T0)
    run(now=T0)
    ingest_events(
        events=[
            {
                "id": "zero",
                "contact": "ann",
                "name": "purchase",
                "timestamp": datetime.datetime(1, 1, 1, tzinfo=datetime.UTC),
            },
            {"id": "p1", "contact": "ann", "name": "purchase"},
        ],
        now=T0,
    )
    run(now=T0)
    assert set(Event.objects.values_list("status", flat=True)) == {Event.Status.PROCESSED}
    # The year-one purchase is from before the enrollment: only p1 counts.
    assert ConversionAward.objects.get().source_event.event_id == "p1"


def test_an_integer_beyond_a_double_in_a_numeric_where_is_processed():
    live_journey(
        WAIT_STEPS,
        triggers=[
            {
                "type": "event",
                "event": "signed_up",
                "where": [{"property": "amount", "op": "gt", "value": 100}],
            }
        ],
    )
    send(
        ("huge", "ann", "signed_up", {"amount": 10**400}),
        ("small", "bob", "signed_up", {"amount": -(10**400)}),
        now=T0,
    )
    run(now=T0)
    assert set(Event.objects.values_list("status", flat=True)) == {Event.Status.PROCESSED}
    assert list(Enrollment.objects.values_list("contact__external_id", flat=True)) == ["ann"]
