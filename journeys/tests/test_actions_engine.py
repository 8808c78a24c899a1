"""The engine's writes: events matched, enrollments advanced, messages delivered."""

import datetime
import logging
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from conversions.models import ConversionAward, GoalAchievement
from journeys import actions, sms
from journeys.models import Contact, Enrollment, Event, OutboxMessage, StepVisit
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)

NURTURE_STEPS = [
    {
        "key": "welcome",
        "type": "send_email",
        "subject": "Welcome {{ contact.attributes.first_name }}",
        "body": "Hello {{ contact.attributes.first_name }}, your plan is {{ contact.attributes.plan }}.",
        "next": "tag",
    },
    {"key": "tag", "type": "update_contact", "attributes": {"stage": "welcomed"}, "next": "is-pro"},
    {
        "key": "is-pro",
        "type": "condition",
        "if": {"attribute": "plan", "op": "eq", "value": "pro"},
        "then": "convert",
        "else": None,
    },
    {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
]
PAID = {"key": "paid", "name": "Paid", "value": 49.0}


def send(*events, now=None):
    """Ingest events given as (id, contact, name[, properties])."""
    return actions.ingest_events(
        events=[
            {"id": e[0], "contact": e[1], "name": e[2], "properties": e[3] if len(e) > 3 else {}}
            for e in events
        ],
        now=now,
    )


def run(now=None):
    return actions.run_due(now=now)


def test_trigger_event_runs_the_contact_through_every_step_and_delivers_the_email():
    journey, version = live_journey(NURTURE_STEPS, conversions=[PAID])
    contact = ContactFactory(
        external_id="ann", email="ann@example.com", attributes={"first_name": "Ann", "plan": "pro"}
    )

    assert send(("e1", "ann", "signed_up"), now=T0) == (1, 0)
    totals = run(now=T0)

    enrollment = Enrollment.objects.get(contact=contact)
    assert enrollment.version == version
    assert enrollment.state == Enrollment.State.COMPLETED
    assert enrollment.path == ["welcome", "tag", "is-pro", "convert"]
    assert enrollment.ended_at == T0 and enrollment.due_at is None
    assert list(
        StepVisit.objects.filter(enrollment=enrollment)
        .order_by("seq")
        .values_list("seq", "step_key", "outcome")
    ) == [
        (0, "welcome", "queued"),
        (1, "tag", "updated"),
        (2, "is-pro", "then"),
        (3, "convert", "converted"),
    ]
    contact.refresh_from_db()
    assert contact.attributes == {"first_name": "Ann", "plan": "pro", "stage": "welcomed"}
    award = ConversionAward.objects.get()
    assert (award.enrollment, award.source, award.step_key, award.value) == (
        enrollment,
        ConversionAward.Source.CONVERT_STEP,
        "convert",
        Decimal("49.00"),
    )
    conversion_event = Event.objects.get(name="conversion")
    assert conversion_event.depth == 1 and conversion_event.source == Event.Source.INTERNAL
    assert conversion_event.properties == {
        "journey": journey.key,
        "version": version.number,
        "key": "paid",
        "value": 49.0,
        "step": "convert",
        "source": "convert_step",
    }
    assert conversion_event.status == Event.Status.PROCESSED
    message = OutboxMessage.objects.get()
    assert (message.status, message.recipient, message.sent_at) == (
        OutboxMessage.Status.SENT,
        "ann@example.com",
        T0,
    )
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Welcome Ann"
    assert mail.outbox[0].body == "Hello Ann, your plan is pro."
    assert mail.outbox[0].to == ["ann@example.com"]
    assert totals == {"events": 2, "enrollments": 1, "messages": 1}


def test_unknown_contact_is_created_by_its_first_event():
    live_journey(NURTURE_STEPS, conversions=[PAID])
    send(("e1", "new-person", "signed_up"), now=T0)
    run(now=T0)
    contact = Contact.objects.get(external_id="new-person")
    enrollment = contact.enrollments.get()
    # No email address: the message fails with the reason, the journey goes on.
    assert enrollment.state == Enrollment.State.COMPLETED
    message = OutboxMessage.objects.get()
    assert message.status == OutboxMessage.Status.FAILED
    assert message.error == "The contact has no email address."


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


WAIT_STEPS = [
    {"key": "w", "type": "wait", "duration": "P2D", "next": "tag"},
    {"key": "tag", "type": "update_contact", "attributes": {"done": True}, "next": None},
]


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


def test_a_wait_of_days_is_due_exactly_when_it_should_be():
    live_journey(WAIT_STEPS)
    with time_machine.travel(T0, tick=False) as traveller:
        send(("e1", "ann", "signed_up"))
        run()
        enrollment = Enrollment.objects.get()
        assert enrollment.due_at == T0 + datetime.timedelta(days=2)
        traveller.move_to(T0 + datetime.timedelta(days=2) - datetime.timedelta(seconds=1))
        run()
        enrollment.refresh_from_db()
        assert enrollment.state == Enrollment.State.ACTIVE and enrollment.path == ["w"]
        traveller.move_to(T0 + datetime.timedelta(days=2))
        run()
        enrollment.refresh_from_db()
        assert enrollment.state == Enrollment.State.COMPLETED
        assert enrollment.path == ["w", "tag"]


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


GOAL_STEPS = [
    {
        "key": "check",
        "type": "evaluate_goal",
        "goal": "activated",
        "wait": "P7D",
        "achieved": "yay",
        "not_achieved": "nay",
    },
    {"key": "yay", "type": "update_contact", "attributes": {"result": "yes"}, "next": None},
    {"key": "nay", "type": "update_contact", "attributes": {"result": "no"}, "next": None},
]
GOALS = [
    {
        "key": "activated",
        "name": "Activated",
        "criteria": {"event": "project_created"},
        "conversion": "activation",
    }
]
ACTIVATION = {"key": "activation", "name": "Activation", "value": 5.0}


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


def test_evaluate_goal_wait_runs_out_to_not_achieved():
    live_journey(GOAL_STEPS, goals=GOALS, conversions=[ACTIVATION])
    with time_machine.travel(T0, tick=False) as traveller:
        send(("e1", "ann", "signed_up"))
        run()
        traveller.move_to(T0 + datetime.timedelta(days=7))
        run()
    enrollment = Enrollment.objects.get()
    assert enrollment.path == ["check", "nay"]
    assert StepVisit.objects.get(step_key="check").outcome == "not_achieved"
    assert not GoalAchievement.objects.exists() and not ConversionAward.objects.exists()


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


def test_traffic_split_sends_new_enrollments_to_both_live_versions_at_random():
    from journeys.actions import publish_version, save_draft_version
    from journeys.selectors import journey_definition

    journey, first = live_journey(
        WAIT_STEPS, settings={"reentry": "concurrent", "holdout_percent": 0}
    )
    draft = save_draft_version(
        journey=journey, definition=journey_definition(journey=journey)
    ).version
    second = publish_version(version=draft, traffic=30)
    send(*[(f"s{i}", f"c{i}", "signed_up") for i in range(500)], now=T0)
    run(now=T0)
    on_second = Enrollment.objects.filter(version=second).count()
    assert Enrollment.objects.filter(version=first).count() + on_second == 500
    assert 110 < on_second < 190


EVENT_CONVERSION_STEPS = [{"key": "w", "type": "wait", "duration": "P10D", "next": None}]


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
    actions.ingest_events(
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


def test_a_template_error_fails_that_message_only():
    live_journey(
        [
            {
                "key": "mail",
                "type": "send_email",
                "subject": "Hi",
                "body": "{% include 'missing.txt' %}",
                "next": "text",
            },
            {
                "key": "text",
                "type": "send_sms",
                "text": "Hi {{ contact.attributes.first_name }}",
                "next": None,
            },
        ]
    )
    sms.outbox.clear()
    ContactFactory(external_id="ann", attributes={"phone": "+4400", "first_name": "Ann", "n": 1})
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    assert Enrollment.objects.get().state == Enrollment.State.COMPLETED
    email = OutboxMessage.objects.get(channel="email")
    text = OutboxMessage.objects.get(channel="sms")
    assert email.status == OutboxMessage.Status.FAILED
    assert email.error == "Template error: TemplateDoesNotExist: missing.txt"
    assert text.status == OutboxMessage.Status.SENT
    assert sms.outbox == [{"to": "+4400", "text": "Hi Ann"}]


class BrokenSMS(sms.BaseSMSBackend):
    def send(self, *, to, text):
        raise ConnectionError("provider down")


def test_delivery_retries_with_backoff_then_fails(settings):
    settings.SMS_BACKEND = "journeys.tests.test_actions_engine.BrokenSMS"
    live_journey([{"key": "text", "type": "send_sms", "text": "Hi", "next": None}])
    ContactFactory(external_id="ann", attributes={"phone": "+4400"})
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    message = OutboxMessage.objects.get()
    assert message.status == OutboxMessage.Status.PENDING
    assert message.attempts == 1 and message.error == "ConnectionError: provider down"
    assert message.due_at == T0 + datetime.timedelta(seconds=30)
    moment = T0
    for _ in range(10):
        moment += datetime.timedelta(hours=2)
        run(now=moment)
    message.refresh_from_db()
    assert message.status == OutboxMessage.Status.FAILED
    assert message.attempts == actions.MESSAGE_MAX_ATTEMPTS
    assert "provider down" in message.error


def test_an_enrollment_that_keeps_failing_is_parked_without_blocking_others(settings):
    settings.ENGINE_MAX_ATTEMPTS = 3
    live_journey(WAIT_STEPS, settings={"reentry": "concurrent", "holdout_percent": 0})
    send(("e1", "ann", "signed_up"), ("e2", "bob", "signed_up"), now=T0)
    process = actions.process_pending_events(now=T0)
    assert process == 2
    broken = Enrollment.objects.get(contact__external_id="ann")
    broken.current_step = "gone"
    broken.save(update_fields=["current_step"])

    run(now=T0)
    healthy = Enrollment.objects.get(contact__external_id="bob")
    assert healthy.path == ["w"]
    broken.refresh_from_db()
    assert broken.state == Enrollment.State.ACTIVE and broken.attempts == 1
    assert broken.last_error == "EngineError: The version has no step 'gone'"
    moment = T0
    for _ in range(5):
        moment += datetime.timedelta(hours=1)
        run(now=moment)
    broken.refresh_from_db()
    assert broken.state == Enrollment.State.FAILED
    assert broken.current_step == "gone" and "no step 'gone'" in broken.last_error

    broken.current_step = "tag"
    broken.save(update_fields=["current_step"])
    assert actions.retry_enrollments(enrollments=[broken], now=moment) == 1
    run(now=moment)
    broken.refresh_from_db()
    assert broken.state == Enrollment.State.COMPLETED and broken.last_error == ""


def test_a_leased_batch_is_taken_again_once_its_lease_runs_out(settings):
    live_journey(WAIT_STEPS)
    send(("e1", "ann", "signed_up"), now=T0)
    actions.process_pending_events(now=T0)
    # A worker claims the enrollment, then dies before writing anything.
    ids, _ = actions._claim_due_enrollments(limit=10, now=T0)
    assert len(ids) == 1
    assert actions.advance_due_enrollments(now=T0) == 0
    lease_end = T0 + datetime.timedelta(seconds=settings.ENGINE_LEASE_SECONDS + 1)
    assert actions.advance_due_enrollments(now=lease_end) == 1
    enrollment = Enrollment.objects.get()
    assert enrollment.path == ["w"] and enrollment.attempts == 0
    assert StepVisit.objects.count() == 1


def test_enroll_contact_refuses_a_second_entry_under_once():
    journey, _ = live_journey(WAIT_STEPS)
    contact = ContactFactory()
    enrollment = actions.enroll_contact(journey=journey, contact=contact, now=T0)
    assert enrollment.current_step == "w" and enrollment.due_at == T0
    with pytest.raises(actions.EnrollmentRefused, match="already been enrolled once"):
        actions.enroll_contact(journey=journey, contact=contact, now=T0)


def test_run_due_command_processes_everything(capsys):
    from django.core.management import call_command

    live_journey(NURTURE_STEPS, conversions=[PAID])
    send(("e1", "ann", "signed_up"))
    call_command("run_due")
    assert (
        "Processed 1 events, advanced 1 enrollments, delivered 1 messages."
        in capsys.readouterr().out
    )
    assert Enrollment.objects.get().state == Enrollment.State.COMPLETED
    assert timezone.now() - Enrollment.objects.get().ended_at < datetime.timedelta(minutes=1)


def test_an_archived_event_conversion_still_counts_for_versions_published_before():
    from journeys.actions import publish_version, save_draft_version
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


def test_insert_rows_splits_what_sqlite_cannot_take_in_one_statement():
    ContactFactory(external_id="ann")
    contact = Contact.objects.get()
    rows = [
        {
            "event_id": f"bulk-{index}",
            "contact": contact.pk,
            "name": "x",
            "properties": {"i": index},
            "timestamp": T0,
            "received_at": T0,
            "source": Event.Source.API,
            "depth": 0,
            "status": Event.Status.PROCESSED,
            "attempts": 0,
            "error": "",
        }
        for index in range(4000)
    ]
    stored = actions.insert_rows(Event, rows, conflict_target="event_id", returning=("event_id",))
    assert len(stored) == 4000
    assert (
        actions.insert_rows(Event, rows[:10], conflict_target="event_id", returning=("event_id",))
        == []
    )
    assert Event.objects.get(event_id="bulk-3999").properties == {"i": 3999}


AWKWARD_TEXT = [
    'a"b',
    "back\\slash",
    "{braces},comma",
    "NULL",
    "",
    "  spaced ",
    "é ✓ 😀",
    "'quote'",
]


def test_insert_rows_and_bulk_update_rows_store_any_text_and_json_as_given():
    contact = ContactFactory(external_id="ann")
    rows = [
        {
            "event_id": f"odd-{index}",
            "contact": contact.pk,
            "name": text,
            "properties": {"text": text, "list": [text, None, 1.5], text: {"n": index}},
            "timestamp": T0 + datetime.timedelta(microseconds=index),
            "received_at": T0,
            "source": Event.Source.API,
            "depth": index,
            "status": Event.Status.PROCESSED,
            "attempts": 0,
            "error": text,
        }
        for index, text in enumerate(AWKWARD_TEXT)
    ]
    actions.insert_rows(Event, rows)
    stored = {event.event_id: event for event in Event.objects.all()}
    for row in rows:
        event = stored[row["event_id"]]
        assert (event.name, event.error, event.properties) == (
            row["name"],
            row["error"],
            row["properties"],
        )
        assert (event.timestamp, event.depth) == (row["timestamp"], row["depth"])

    contacts = [ContactFactory(external_id=f"c{index}") for index in range(len(AWKWARD_TEXT))]
    for contact, text in zip(contacts, AWKWARD_TEXT, strict=True):
        contact.email = text
        contact.attributes = {"note": text, text: None} if text else {}
    actions.bulk_update_rows(Contact, contacts, ["email", "attributes"])
    for contact, text in zip(contacts, AWKWARD_TEXT, strict=True):
        contact.refresh_from_db()
        assert contact.email == text
        assert contact.attributes == ({"note": text, text: None} if text else {})


def test_an_enrollment_whose_worker_died_every_time_is_parked_when_claimed(settings):
    live_journey(WAIT_STEPS)
    send(("e1", "ann", "signed_up"), ("e2", "bob", "signed_up"), now=T0)
    actions.process_pending_events(now=T0)
    # ann's batch was leased ENGINE_MAX_ATTEMPTS times and never written: its worker died.
    Enrollment.objects.filter(contact__external_id="ann").update(
        attempts=settings.ENGINE_MAX_ATTEMPTS
    )
    ids, _ = actions._claim_due_enrollments(limit=10, now=T0)
    bob = Enrollment.objects.get(contact__external_id="bob")
    assert ids == [bob.pk] and bob.attempts == 1 and bob.leased_until is not None
    ann = Enrollment.objects.get(contact__external_id="ann")
    assert ann.state == Enrollment.State.FAILED and ann.leased_until is None
    assert ann.attempts == settings.ENGINE_MAX_ATTEMPTS and "Gave up after" in ann.last_error


def test_fact_rows_carry_their_enrollments_journey_version_and_contact():
    """The journey, version and contact of visits, messages, awards and achievements are
    copies of their enrollment's (the database checks only the enrollment's foreign key):
    every path that writes them copies them right."""
    live_journey(NURTURE_STEPS, conversions=[PAID])
    live_journey(GOAL_STEPS, goals=GOALS, conversions=[ACTIVATION])
    live_journey(
        EVENT_CONVERSION_STEPS,
        conversions=[{"key": "bought", "name": "Bought", "event": {"event": "purchase"}}],
    )
    for name in ("ann", "bob", "cy"):
        ContactFactory(external_id=name, email=f"{name}@example.com", attributes={"plan": "pro"})
    send(*[(f"s-{name}", name, "signed_up") for name in ("ann", "bob", "cy")], now=T0)
    run(now=T0)
    send(("p1", "bob", "project_created"), ("p2", "cy", "purchase"), now=T0)
    run(now=T0)

    facts = {
        StepVisit: ("version",),
        OutboxMessage: ("contact",),
        ConversionAward: ("journey", "version", "contact"),
        GoalAchievement: ("journey", "version", "contact"),
    }
    for model, copies in facts.items():
        rows = model.objects.values_list(
            *[f"{field}_id" for field in copies], *[f"enrollment__{field}_id" for field in copies]
        )
        assert rows, model.__name__
        for row in rows:
            assert row[: len(copies)] == row[len(copies) :], model.__name__
    sources = set(ConversionAward.objects.values_list("source", flat=True))
    assert sources == {"convert_step", "goal", "event"}
