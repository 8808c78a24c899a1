"""journeys.actions.enrollments: enrollments started, advanced through the engine in leased batches, parked when they keep failing, and retried."""

import datetime
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.db import OperationalError, connection, connections, transaction

from conversions.models import ConversionAward, GoalAchievement
from journeys.actions import enrollments as enrollment_actions
from journeys.actions.enrollments import (
    EnrollmentRefused,
    _claim_due_enrollments,
    advance_due_enrollments,
    enroll_contact,
    retry_enrollments,
)
from journeys.actions.events import process_pending_events
from journeys.models import Contact, EngineLease, Enrollment, Event, OutboxMessage, StepVisit
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
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db


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
    # A marketing email: the unsubscribe footer follows the body.
    assert mail.outbox[0].body.startswith("Hello Ann, your plan is pro.\n\n--\nUnsubscribe: ")
    assert mail.outbox[0].to == ["ann@example.com"]
    assert totals == {"events": 2, "enrollments": 1, "messages": 1, "webhooks": 0}


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


def test_traffic_split_sends_new_enrollments_to_both_live_versions_at_random():
    from journeys.actions.versions import publish_version, save_draft_version
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


def test_an_enrollment_that_keeps_failing_is_parked_without_blocking_others(settings):
    settings.ENGINE_MAX_ATTEMPTS = 3
    live_journey(WAIT_STEPS, settings={"reentry": "concurrent", "holdout_percent": 0})
    send(("e1", "ann", "signed_up"), ("e2", "bob", "signed_up"), now=T0)
    process = process_pending_events(now=T0)
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
    assert retry_enrollments(enrollments=[broken], now=moment) == 1
    run(now=moment)
    broken.refresh_from_db()
    assert broken.state == Enrollment.State.COMPLETED and broken.last_error == ""


def test_a_leased_batch_is_taken_again_once_its_lease_runs_out(settings):
    live_journey(WAIT_STEPS)
    send(("e1", "ann", "signed_up"), now=T0)
    process_pending_events(now=T0)
    # A worker claims the enrollment, then dies before writing anything.
    ids, _ = _claim_due_enrollments(limit=10, now=T0)
    assert len(ids) == 1
    assert advance_due_enrollments(now=T0) == 0
    lease_end = T0 + datetime.timedelta(seconds=settings.ENGINE_LEASE_SECONDS + 1)
    assert advance_due_enrollments(now=lease_end) == 1
    enrollment = Enrollment.objects.get()
    assert enrollment.path == ["w"] and enrollment.attempts == 0
    assert StepVisit.objects.count() == 1


def test_enroll_contact_refuses_a_second_entry_under_once():
    journey, _ = live_journey(WAIT_STEPS)
    contact = ContactFactory()
    enrollment = enroll_contact(journey=journey, contact=contact, now=T0)
    assert enrollment.current_step == "w" and enrollment.due_at == T0
    with pytest.raises(EnrollmentRefused, match="already been enrolled once"):
        enroll_contact(journey=journey, contact=contact, now=T0)


def test_a_lease_that_ran_out_unwritten_counts_an_attempt_and_parks_the_last(settings):
    """A worker died with a batch leased: once the lease has run out, the next claim reaps
    it. Each of its enrollments counts one more attempt; the one whose runs killed workers
    ENGINE_MAX_ATTEMPTS times is parked, the others are taken again."""
    live_journey(WAIT_STEPS)
    send(("e1", "ann", "signed_up"), ("e2", "bob", "signed_up"), now=T0)
    process_pending_events(now=T0)
    ids, lease = _claim_due_enrollments(limit=10, now=T0)
    assert len(ids) == 2 and EngineLease.objects.get(pk=lease).enrollment_ids == ids
    Enrollment.objects.filter(contact__external_id="ann").update(
        attempts=settings.ENGINE_MAX_ATTEMPTS - 1
    )
    # While the lease holds, no other claim takes its enrollments.
    assert _claim_due_enrollments(limit=10, now=T0) == ([], None)

    later = T0 + datetime.timedelta(seconds=settings.ENGINE_LEASE_SECONDS + 1)
    again, _ = _claim_due_enrollments(limit=10, now=later)
    bob = Enrollment.objects.get(contact__external_id="bob")
    assert again == [bob.pk] and bob.attempts == 1
    ann = Enrollment.objects.get(contact__external_id="ann")
    assert ann.state == Enrollment.State.FAILED and ann.attempts == settings.ENGINE_MAX_ATTEMPTS
    assert "Gave up after" in ann.last_error
    assert not EngineLease.objects.filter(pk=lease).exists()


def test_a_batch_whose_lease_was_reaped_is_left_to_the_worker_that_took_it_again(settings):
    """A worker that stalled past its lease finds it reaped when it comes back: it writes
    nothing, and the worker that took the enrollments again runs them once."""
    live_journey(THANKS)
    send(("e1", "ann", "signed_up"), now=T0)
    process_pending_events(now=T0)
    ids, lease = _claim_due_enrollments(limit=10, now=T0)
    later = T0 + datetime.timedelta(seconds=settings.ENGINE_LEASE_SECONDS + 1)
    assert advance_due_enrollments(now=later) == 1
    with transaction.atomic():
        assert not enrollment_actions._take_lease(lease, release=True)
    enrollment = Enrollment.objects.get(pk=ids[0])
    assert enrollment.state == Enrollment.State.COMPLETED and enrollment.attempts == 0
    assert StepVisit.objects.filter(enrollment=enrollment).count() == 1
    assert EngineLease.objects.count() == 0


def test_claims_that_race_run_an_enrollment_once():
    """Two claims took the same enrollment (one read the leases before the other's lease
    committed): the batch that runs second re-reads it under lock, finds it no longer due,
    and leaves it."""
    live_journey(WAIT_STEPS)
    send(("e1", "ann", "signed_up"), now=T0)
    process_pending_events(now=T0)
    ids, first = _claim_due_enrollments(limit=10, now=T0)
    second = EngineLease.objects.create(enrollment_ids=ids, leased_until=T0).pk
    for lease in (first, second):
        with transaction.atomic():
            assert enrollment_actions._take_lease(lease, release=True)
            enrollment_actions._advance_batch(ids=ids, now=T0)
    enrollment = Enrollment.objects.get(pk=ids[0])
    assert enrollment.current_step == "tag" and enrollment.due_at > T0
    assert StepVisit.objects.filter(enrollment=enrollment).count() == 1


def test_fact_rows_carry_their_enrollments_journey_version_and_contact():
    """The journey, version and contact of visits, messages, awards and achievements are
    copies of their enrollment's, and a message's enrollment is its visit's, none of them
    checked by the database (journeys.models.COPIED_FROM_ENROLLMENT): every path that
    writes them copies them right."""
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
    messages = OutboxMessage.objects.values_list("enrollment_id", "visit__enrollment_id")
    assert messages and all(mine == visits for mine, visits in messages)
    sources = set(ConversionAward.objects.values_list("source", flat=True))
    assert sources == {"convert_step", "goal", "event"}


THANKS = [{"key": "x", "type": "update_contact", "attributes": {"thanked": True}, "next": None}]


def _failing_write_for(monkeypatch, bad_id):
    """The batch's bulk write raises (any exception) when it holds enrollment `bad_id`: a
    stand-in for whatever one enrollment's outcome may break in the writes."""
    real = enrollment_actions.bulk_update_rows

    def bulk_update_rows(model, objs, fields):
        if model is Enrollment and any(obj.pk == bad_id for obj in objs):
            raise ZeroDivisionError(f"injected for enrollment {bad_id}")
        return real(model, objs, fields)

    monkeypatch.setattr(enrollment_actions, "bulk_update_rows", bulk_update_rows)


def test_a_batch_whose_write_fails_for_one_enrollment_advances_the_rest(monkeypatch, settings):
    settings.ENGINE_MAX_ATTEMPTS = 2
    live_journey(THANKS)
    send(*[(f"e{index}", f"c{index}", "signed_up") for index in range(12)], now=T0)
    assert process_pending_events(now=T0) == 12
    bad = Enrollment.objects.order_by("pk")[5]
    _failing_write_for(monkeypatch, bad.pk)

    assert advance_due_enrollments(now=T0) == 12
    assert Enrollment.objects.filter(state=Enrollment.State.COMPLETED).count() == 11
    bad.refresh_from_db()
    assert (bad.state, bad.attempts, bad.path) == (Enrollment.State.ACTIVE, 1, [])
    assert bad.last_error == f"ZeroDivisionError: injected for enrollment {bad.pk}"
    assert bad.due_at == T0 + datetime.timedelta(seconds=30)

    # Its next attempt, once its back-off has passed, is its last: parked as failed.
    later = T0 + datetime.timedelta(minutes=1)
    assert advance_due_enrollments(now=later) == 1
    bad.refresh_from_db()
    assert (bad.state, bad.current_step) == (Enrollment.State.FAILED, "x")
    assert "injected" in bad.last_error
    assert advance_due_enrollments(now=later) == 0

    # Retried from the admin once the cause is gone, it goes on from its step.
    monkeypatch.undo()
    assert retry_enrollments(enrollments=[bad], now=later) == 1
    assert advance_due_enrollments(now=later) == 1
    bad.refresh_from_db()
    assert (bad.state, bad.path, bad.last_error) == (Enrollment.State.COMPLETED, ["x"], "")


def test_run_due_finishes_with_a_failing_event_and_a_failing_enrollment(monkeypatch, settings):
    settings.ENGINE_MAX_ATTEMPTS = 1
    live_journey(THANKS)
    send(*[(f"e{index}", f"c{index}", "signed_up") for index in range(6)], now=T0)
    process_pending_events(now=T0)
    bad = Enrollment.objects.order_by("pk")[2]
    _failing_write_for(monkeypatch, bad.pk)
    send(("p1", "c0", "signed_up", {"amount": 10**400}), ("p2", "c1", "signed_up"), now=T0)
    real = enrollment_actions.engine.rule_matches_event

    def rule_matches_event(rule, *, journey_key, name, properties):
        if properties.get("amount"):
            raise ValueError("bad event")
        return real(rule, journey_key=journey_key, name=name, properties=properties)

    monkeypatch.setattr(enrollment_actions.engine, "rule_matches_event", rule_matches_event)

    totals = run(now=T0)

    assert totals["enrollments"] == 6 and totals["events"] == 1
    assert Enrollment.objects.filter(state=Enrollment.State.COMPLETED).count() == 5
    assert Enrollment.objects.get(pk=bad.pk).state == Enrollment.State.FAILED
    assert Event.objects.get(event_id="p1").status == Event.Status.FAILED
    assert Event.objects.get(event_id="p2").status == Event.Status.PROCESSED


def test_a_failing_write_is_bisected_down_to_its_enrollment(monkeypatch):
    live_journey(THANKS)
    send(*[(f"e{index}", f"c{index}", "signed_up") for index in range(64)], now=T0)
    process_pending_events(now=T0)
    bad = Enrollment.objects.order_by("pk")[40]
    _failing_write_for(monkeypatch, bad.pk)
    real = enrollment_actions._advance_batch
    sizes = []

    def counting(*, ids, now):
        sizes.append(len(ids))
        return real(ids=ids, now=now)

    monkeypatch.setattr(enrollment_actions, "_advance_batch", counting)
    assert advance_due_enrollments(now=T0) == 64
    # The batch, then both halves at each of 6 levels (one at a time would be 64 more).
    assert sorted(sizes, reverse=True) == [64, 32, 32, 16, 16, 8, 8, 4, 4, 2, 2, 1, 1]
    assert Enrollment.objects.filter(state=Enrollment.State.COMPLETED).count() == 63
    assert "injected" in Enrollment.objects.get(pk=bad.pk).last_error


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_batch_holds_its_contacts_against_writes_but_not_against_new_events():
    """The batch reads its contacts FOR NO KEY UPDATE: their attributes stay as read until it
    has merged its own updates, while events of those contacts can still be stored (their
    foreign-key checks take KEY SHARE)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite takes no row locks")
    live_journey(WAIT_STEPS)  # the first run only waits: the contact is read, not written
    send(("e1", "ann", "signed_up"), now=T0)
    process_pending_events(now=T0)
    ids, lease = _claim_due_enrollments(limit=10, now=T0)
    contact = Contact.objects.get(external_id="ann")
    other = connections.create_connection("default")
    try:
        with transaction.atomic():
            assert enrollment_actions._take_lease(lease, release=True)
            enrollment_actions._advance_batch(ids=ids, now=T0)
            with other.cursor() as cursor:
                cursor.execute("SET lock_timeout = '100ms'")
                sql = "SELECT id FROM journeys_contact WHERE id = %s FOR {}"
                cursor.execute(sql.format("KEY SHARE"), [contact.pk])
                with pytest.raises(OperationalError):
                    cursor.execute(sql.format("NO KEY UPDATE"), [contact.pk])
    finally:
        other.close()
    assert Enrollment.objects.get(pk=ids[0]).current_step == "tag"
