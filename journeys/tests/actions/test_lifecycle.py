"""journeys.actions.lifecycle: pause holds running enrollments and their messages, resume lets
them go on, stop exits them (contract 6.2)."""

import datetime

import pytest

from conversions.models import ConversionAward
from journeys.actions.enrollments import EnrollmentRefused, advance_due_enrollments, enroll_contact
from journeys.actions.events import process_pending_events
from journeys.actions.lifecycle import (
    LifecycleRefused,
    pause_journey,
    resume_journey,
    stop_journey,
)
from journeys.actions.messages import deliver_due_messages
from journeys.actions.sweep import enqueue_due_work
from journeys.actions.versions import VersionStateError, publish_version, save_draft_version
from journeys.models import Enrollment, Event, Journey, OutboxMessage
from journeys.selectors import due_work_ages, engine_status, journey_definition
from journeys.tests.actions.scenarios import (
    EVENT_CONVERSION_STEPS,
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

DAY = datetime.timedelta(days=1)


def test_a_paused_journey_holds_a_wait_that_ran_out_and_runs_it_at_the_resume():
    journey, _ = live_journey(WAIT_STEPS)
    ContactFactory(external_id="ann")
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)

    pause_journey(journey=journey)
    run(now=T0 + 3 * DAY)

    enrollment = Enrollment.objects.get()
    assert (enrollment.state, enrollment.current_step) == ("active", "tag")
    assert enrollment.due_at == T0 + 2 * DAY

    resume_journey(journey=journey)
    assert advance_due_enrollments(now=T0 + 3 * DAY) == 1
    enrollment.refresh_from_db()
    assert enrollment.state == "completed"


def test_a_paused_journey_takes_nobody_new_but_stores_events_and_counts_conversions():
    journey, _ = live_journey(
        EVENT_CONVERSION_STEPS,
        conversions=[{"key": "bought", "name": "Bought", "event": {"event": "purchase"}}],
    )
    ann = ContactFactory(external_id="ann")
    bob = ContactFactory(external_id="bob")
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)

    pause_journey(journey=journey)
    send(("e2", "bob", "signed_up"), ("e3", "ann", "purchase"), now=T0 + DAY)
    run(now=T0 + DAY)

    assert not Enrollment.objects.filter(contact=bob).exists()
    assert Event.objects.get(contact=bob).status == "processed"
    assert ConversionAward.objects.get().enrollment.contact == ann
    with pytest.raises(EnrollmentRefused, match="is paused"):
        enroll_contact(journey=Journey.objects.get(pk=journey.pk), contact=bob, now=T0 + DAY)


def test_a_paused_journeys_messages_wait_and_go_out_at_the_resume():
    journey, _ = live_journey(NURTURE_STEPS, conversions=[PAID])
    ContactFactory(external_id="ann", email="ann@example.com")
    send(("e1", "ann", "signed_up"), now=T0)
    process_pending_events(now=T0)
    advance_due_enrollments(now=T0)
    pause_journey(journey=journey)

    assert deliver_due_messages(now=T0) == 0
    assert OutboxMessage.objects.get().status == "pending"

    resume_journey(journey=journey)
    assert deliver_due_messages(now=T0) == 1
    assert OutboxMessage.objects.get().status == "sent"


def test_stop_exits_running_enrollments_and_skips_their_unsent_messages():
    journey, _ = live_journey(NURTURE_STEPS, conversions=[PAID])
    ContactFactory(external_id="ann", email="ann@example.com")
    ContactFactory(external_id="bob", email="bob@example.com")
    send(("e1", "ann", "signed_up"), ("e2", "bob", "signed_up"), now=T0)
    process_pending_events(now=T0)
    advance_due_enrollments(now=T0)
    # Bob's message is in a provider's hands: it is left to its sender, never skipped.
    OutboxMessage.objects.filter(contact__external_id="bob").update(sending_since=T0)
    Enrollment.objects.update(state="active", due_at=T0 + DAY, current_step="tag")

    stopped, exited = stop_journey(journey=journey, now=T0 + DAY)

    assert (stopped.status, exited) == ("stopped", 2)
    assert set(Enrollment.objects.values_list("state", "exit_reason", "ended_at")) == {
        ("exited", "journey_stopped", T0 + DAY)
    }
    assert dict(OutboxMessage.objects.values_list("contact__external_id", "status")) == {
        "ann": "skipped",
        "bob": "pending",
    }
    assert OutboxMessage.objects.get(contact__external_id="ann").reason == "journey_stopped"
    ContactFactory(external_id="cid")
    send(("e3", "cid", "signed_up"), now=T0 + DAY)
    run(now=T0 + DAY)
    assert Enrollment.objects.count() == 2


def test_a_stopped_journey_is_read_only_until_a_new_version_is_published():
    journey, version = live_journey(WAIT_STEPS)
    stop_journey(journey=journey, now=T0)

    with pytest.raises(LifecycleRefused, match="is stopped"):
        pause_journey(journey=journey)
    with pytest.raises(LifecycleRefused, match="is stopped"):
        resume_journey(journey=journey)
    with pytest.raises(LifecycleRefused, match="is stopped"):
        stop_journey(journey=journey, now=T0)
    with pytest.raises(VersionStateError, match="is stopped"):
        publish_version(version=version)

    draft = save_draft_version(
        journey=journey, definition=journey_definition(journey=journey, version=version)
    ).version
    publish_version(version=draft)
    journey.refresh_from_db()
    assert journey.status == "live"


def test_each_change_is_refused_in_a_state_that_does_not_allow_it():
    journey, _ = live_journey(WAIT_STEPS)
    with pytest.raises(LifecycleRefused, match="only a paused journey can be resumed"):
        resume_journey(journey=journey)
    pause_journey(journey=journey)
    with pytest.raises(LifecycleRefused, match="only a live journey can be paused"):
        pause_journey(journey=journey)
    draft = Journey.objects.create(key="never", name="Never")
    with pytest.raises(LifecycleRefused, match="is draft"):
        stop_journey(journey=draft, now=T0)


def test_work_a_paused_journey_holds_is_not_late_for_health_metrics_or_the_sweep():
    # The claim leaves it due on purpose: /healthz must not turn 503, and the sweep must not
    # wake workers that would find nothing to do.
    journey, _ = live_journey(WAIT_STEPS)
    ContactFactory(external_id="ann")
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    pause_journey(journey=journey)
    later = T0 + 3 * DAY
    assert due_work_ages(now=later)["enrollments"] is None
    assert engine_status(now=later).enrollments_due == 0
    assert "advance_enrollments" not in enqueue_due_work(now=later)
    resume_journey(journey=journey)
    assert due_work_ages(now=later)["enrollments"] == DAY.total_seconds()
    assert "advance_enrollments" in enqueue_due_work(now=later)
