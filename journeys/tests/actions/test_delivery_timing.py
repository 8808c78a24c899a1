"""Quiet hours and the frequency cap (contract 6.1) through the real engine: a marketing
message due at night waits for the morning in the contact's zone, on both sides of a daylight
saving change; the cap skips the messages beyond it over all journeys; transactional
messages pass both; the contact's timeline says which."""

import datetime
import threading

import pytest
from django.core import mail
from django.db import connection, transaction

from journeys.actions.contacts import erase_contact
from journeys.actions.enrollments import advance_due_enrollments
from journeys.actions.events import process_pending_events
from journeys.actions.messages import deliver_due_messages, message_id
from journeys.models import Contact, OutboxMessage
from journeys.selectors import contact_timeline
from journeys.tests.actions.scenarios import run, send
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db

UTC = datetime.UTC
NIGHT = {"reentry": "once", "holdout_percent": 0, "quiet_hours": {"start": "21:00", "end": "08:00"}}
MAIL = {"key": "mail", "type": "send_email", "subject": "Hi", "body": "Hello", "next": None}
HELD = "held until 08:00 Europe/Paris (quiet hours)"


def mails(count, prefix="m"):
    return [
        {
            **MAIL,
            "key": f"{prefix}{index}",
            "next": f"{prefix}{index + 1}" if index + 1 < count else None,
        }
        for index in range(count)
    ]


@pytest.mark.parametrize(
    ("due", "morning"),
    [
        # 22:30 CET the night Paris springs forward: 08:00 CEST is 06:00 UTC.
        (
            datetime.datetime(2026, 3, 28, 21, 30, tzinfo=UTC),
            datetime.datetime(2026, 3, 29, 6, 0, tzinfo=UTC),
        ),
        # 22:30 CEST the night it falls back: 08:00 CET is 07:00 UTC.
        (
            datetime.datetime(2026, 10, 24, 20, 30, tzinfo=UTC),
            datetime.datetime(2026, 10, 25, 7, 0, tzinfo=UTC),
        ),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_a_marketing_email_due_at_night_waits_for_the_morning_in_the_contacts_zone(due, morning):
    live_journey([MAIL], settings=NIGHT)
    ContactFactory(external_id="ann", timezone="Europe/Paris")
    send(("e1", "ann", "signed_up"), now=due)

    run(now=due)

    message = OutboxMessage.objects.get()
    assert message.status == OutboxMessage.Status.PENDING
    assert message.due_at == morning
    assert message.error == HELD
    assert message.attempts == 0
    assert mail.outbox == []
    (entry,) = [e for e in contact_timeline(contact=message.contact) if e.kind == "message"]
    assert HELD in entry.detail

    run(now=morning - datetime.timedelta(minutes=1))
    assert mail.outbox == []

    run(now=morning)
    message.refresh_from_db()
    assert message.status == OutboxMessage.Status.SENT
    assert message.sent_at == morning
    assert message.error == ""
    (email,) = mail.outbox
    assert email.extra_headers["Message-ID"] == message_id(message)


def test_quiet_hours_use_the_default_timezone_for_a_contact_without_one(settings):
    settings.DEFAULT_TIMEZONE = "America/New_York"
    live_journey([MAIL], settings=NIGHT)
    ContactFactory(external_id="ann")
    # 23:30 in New York (EST), 04:30 UTC: held to 08:00 EST, 13:00 UTC.
    night = datetime.datetime(2026, 1, 15, 4, 30, tzinfo=UTC)
    send(("e1", "ann", "signed_up"), now=night)

    run(now=night)

    message = OutboxMessage.objects.get()
    assert message.due_at == datetime.datetime(2026, 1, 15, 13, 0, tzinfo=UTC)
    assert message.error == "held until 08:00 America/New_York (quiet hours)"


def test_a_journey_without_quiet_hours_sends_at_night():
    live_journey([MAIL])
    ContactFactory(external_id="ann", timezone="Europe/Paris")
    night = datetime.datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    send(("e1", "ann", "signed_up"), now=night)

    run(now=night)

    assert OutboxMessage.objects.get().status == OutboxMessage.Status.SENT
    assert len(mail.outbox) == 1


def _queue(now):
    """The engine's outbox rows for the events sent, not delivered yet."""
    process_pending_events(now=now)
    advance_due_enrollments(now=now)


def test_a_transactional_message_is_sent_at_night_and_past_the_cap(settings):
    settings.MESSAGE_FREQUENCY_CAP = "1/P1D"
    live_journey(mails(2), settings=NIGHT)
    ContactFactory(external_id="ann", timezone="Europe/Paris")
    night = datetime.datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    send(("e1", "ann", "signed_up"), now=night)
    _queue(night)
    OutboxMessage.objects.update(category="transactional")

    deliver_due_messages(now=night)

    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"sent"}
    assert len(mail.outbox) == 2


CAP_MOMENT = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_the_frequency_cap_skips_the_fourth_marketing_email_in_a_day_over_all_journeys(settings):
    settings.MESSAGE_FREQUENCY_CAP = "3/P1D"
    live_journey(mails(2, "a"), key="first")
    live_journey(mails(2, "b"), key="second")
    live_journey([{"key": "text", "type": "send_sms", "text": "Hi", "next": None}], key="texting")
    ann = ContactFactory(external_id="ann", attributes={"phone": "+331"})
    ContactFactory(external_id="bob")
    send(("e1", "ann", "signed_up"), ("e2", "bob", "signed_up"), now=CAP_MOMENT)

    run(now=CAP_MOMENT)

    emails = OutboxMessage.objects.filter(contact=ann, channel="email").order_by("pk")
    # Sent in due order, which ties here: which one is skipped is not fixed.
    assert sorted(m.status for m in emails) == ["sent", "sent", "sent", "skipped"]
    skipped = emails.get(status="skipped")
    assert skipped.reason == "frequency_cap"
    assert skipped.sent_at is None
    assert [m.to for m in mail.outbox].count(["ann@example.com"]) == 3
    # Another channel, another contact: counted apart.
    assert OutboxMessage.objects.get(contact=ann, channel="sms").status == "sent"
    bob = OutboxMessage.objects.filter(contact__external_id="bob", channel="email")
    assert sorted(bob.values_list("status", flat=True)) == ["sent", "sent", "sent", "skipped"]
    entries = [e for e in contact_timeline(contact=ann) if e.kind == "message"]
    assert sum("skipped: frequency cap" in e.detail for e in entries) == 1
    assert sum(e.title.startswith("Email skipped") for e in entries) == 1


def test_the_cap_counts_a_trailing_window_not_a_calendar_day(settings):
    settings.MESSAGE_FREQUENCY_CAP = "1/P1D"
    journey, _ = live_journey(
        [MAIL], key="first", settings={"reentry": "after_exit", "holdout_percent": 0}
    )
    ContactFactory(external_id="ann")
    send(("e1", "ann", "signed_up"), now=CAP_MOMENT)
    run(now=CAP_MOMENT)

    almost = CAP_MOMENT + datetime.timedelta(hours=23, minutes=59)
    send(("e2", "ann", "signed_up"), now=almost)
    run(now=almost)
    day = CAP_MOMENT + datetime.timedelta(days=1)
    send(("e3", "ann", "signed_up"), now=day)
    run(now=day)

    assert list(OutboxMessage.objects.order_by("pk").values_list("status", flat=True)) == [
        "sent",
        "skipped",
        "sent",
    ]


def _two_emails_queued_for_ann():
    live_journey(mails(2))
    ann = ContactFactory(external_id="ann")
    send(("e1", "ann", "signed_up"), now=CAP_MOMENT)
    _queue(CAP_MOMENT)
    return (ann, *OutboxMessage.objects.order_by("pk"))


def _mark_sending(message):
    """As the worker sending it does, right before handing it to the provider."""
    OutboxMessage.objects.filter(pk=message.pk).update(
        sending_since=CAP_MOMENT, leased_until=CAP_MOMENT + datetime.timedelta(minutes=5)
    )


def test_the_cap_counts_a_message_another_worker_is_sending(settings):
    """The race of two workers: one marked its message (under the contact's lock) and is
    talking to the provider; the other, counting next, must see it."""
    settings.MESSAGE_FREQUENCY_CAP = "1/P1D"
    _, first, second = _two_emails_queued_for_ann()
    _mark_sending(first)

    deliver_due_messages(now=CAP_MOMENT)

    second.refresh_from_db()
    assert second.status == OutboxMessage.Status.SKIPPED
    assert second.reason == "frequency_cap"
    assert mail.outbox == []


def test_without_a_cap_every_message_is_sent(settings):
    settings.MESSAGE_FREQUENCY_CAP = ""
    live_journey(mails(5))
    ContactFactory(external_id="ann")
    send(("e1", "ann", "signed_up"), now=CAP_MOMENT)

    run(now=CAP_MOMENT)

    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"sent"}
    assert len(mail.outbox) == 5


@pytest.mark.django_db(transaction=True)
def test_the_cap_count_waits_for_a_worker_holding_the_contact_lock(settings):
    """Two workers at once: the first holds the contact's row lock and has marked its
    message, not committed yet. The second's count must wait for it, then see it; counting
    without the lock it would see nothing and send too."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks between connections: PostgreSQL")
    settings.MESSAGE_FREQUENCY_CAP = "1/P1D"
    ann, first, second = _two_emails_queued_for_ann()

    def second_worker():
        try:
            deliver_due_messages(now=CAP_MOMENT)
        finally:
            connection.close()

    worker = threading.Thread(target=second_worker)
    with transaction.atomic():
        list(Contact.objects.select_for_update(no_key=True).filter(pk=ann.pk))
        _mark_sending(first)
        worker.start()
        worker.join(timeout=2)
        assert worker.is_alive(), "the second worker counted without waiting for the lock"
    worker.join(timeout=30)

    second.refresh_from_db()
    assert second.status == OutboxMessage.Status.SKIPPED
    assert second.reason == "frequency_cap"
    assert mail.outbox == []


def test_erasing_a_contact_forgets_its_timezone():
    ann = ContactFactory(external_id="ann", timezone="Europe/Paris")

    erase_contact(contact=ann)

    assert Contact.objects.get(pk=ann.pk).timezone == ""
