"""journeys.actions.messages: due outbox messages rendered and sent, a bad one failed alone, retries with back-off."""

import datetime

import pytest
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from journeys import sms
from journeys.actions.messages import (
    MESSAGE_MAX_ATTEMPTS,
    deliver_due_messages,
    message_id,
    retry_messages,
)
from journeys.models import Enrollment, OutboxMessage
from journeys.tests.actions.scenarios import T0, run, send
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db


def test_a_template_error_fails_that_message_only():
    live_journey(
        [
            {
                "key": "mail",
                "type": "send_email",
                "subject": "Hi",
                "body": "{{ contact.email | divided_by: 0 }}",
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
    assert email.error.startswith("Template error: ")
    assert text.status == OutboxMessage.Status.SENT
    assert sms.outbox == [{"to": "+4400", "text": "Hi Ann"}]


def test_delivery_retries_with_backoff_then_fails(settings):
    settings.SMS_BACKEND = "journeys.tests.actions.scenarios.BrokenSMS"
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
    assert message.attempts == MESSAGE_MAX_ATTEMPTS
    assert "provider down" in message.error


# --- At most once -----------------------------------------------------------------------------

LEASE = datetime.timedelta(seconds=300)
MAIL_STEP = [{"key": "mail", "type": "send_email", "subject": "Hi", "body": "Hello", "next": None}]


def _queued_emails(count):
    """`count` contacts with one email each, due at T0 and not sent yet."""
    live_journey(MAIL_STEP)
    for index in range(count):
        ContactFactory(external_id=f"c{index}", email=f"c{index}@example.com")
    send(*[(f"e{index}", f"c{index}", "signed_up") for index in range(count)], now=T0)
    # The sweep that enqueues them delivers them too: put them back as they were before.
    run(now=T0)
    OutboxMessage.objects.update(status=OutboxMessage.Status.PENDING, sent_at=None, attempts=0)
    mail.outbox.clear()


class SlowProviderBackend(EmailBackend):
    """Sends, and on its first message lets another worker run as if this one's lease had
    run out: the probe of issue 12, where 10 contacts got 4 copies each."""

    other_worker_at = None

    def send_messages(self, messages):
        sent = super().send_messages(messages)
        moment, SlowProviderBackend.other_worker_at = SlowProviderBackend.other_worker_at, None
        if moment is not None:
            deliver_due_messages(now=moment)
        return sent


def test_a_lease_running_out_mid_batch_sends_no_message_twice(settings):
    settings.EMAIL_BACKEND = "journeys.tests.actions.test_messages.SlowProviderBackend"
    settings.ENGINE_LEASE_SECONDS = int(LEASE.total_seconds())
    _queued_emails(10)
    SlowProviderBackend.other_worker_at = T0 + LEASE + datetime.timedelta(seconds=1)

    deliver_due_messages(now=T0)

    recipients = sorted(address for message in mail.outbox for address in message.to)
    assert recipients == sorted(f"c{index}@example.com" for index in range(10))
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"sent"}


class DiesAfterSendingBackend(EmailBackend):
    """The provider took the message, then the worker was killed before recording it."""

    def send_messages(self, messages):
        super().send_messages(messages)
        raise KeyboardInterrupt("killed")


def test_a_message_whose_worker_died_while_sending_is_failed_not_resent(settings):
    settings.ENGINE_LEASE_SECONDS = int(LEASE.total_seconds())
    _queued_emails(1)
    settings.EMAIL_BACKEND = "journeys.tests.actions.test_messages.DiesAfterSendingBackend"
    with pytest.raises(KeyboardInterrupt):
        deliver_due_messages(now=T0)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    assert deliver_due_messages(now=T0 + datetime.timedelta(seconds=60)) == 0
    later = T0 + LEASE + datetime.timedelta(seconds=1)
    assert deliver_due_messages(now=later) == 0

    message = OutboxMessage.objects.get()
    assert len(mail.outbox) == 1
    assert message.status == OutboxMessage.Status.FAILED
    assert message.error.startswith("Outcome unknown: the worker stopped while sending it")
    assert message.sending_since is None

    assert retry_messages(messages=OutboxMessage.objects.all(), now=later) == 1
    deliver_due_messages(now=later)
    assert len(mail.outbox) == 2
    assert OutboxMessage.objects.get().status == OutboxMessage.Status.SENT


def test_a_message_past_its_attempts_is_failed_when_claiming_not_sent():
    _queued_emails(1)
    # Every worker that took it died before recording anything: only its attempts show it.
    OutboxMessage.objects.update(attempts=MESSAGE_MAX_ATTEMPTS)

    assert deliver_due_messages(now=T0) == 0

    message = OutboxMessage.objects.get()
    assert mail.outbox == []
    assert message.status == OutboxMessage.Status.FAILED
    assert message.error.startswith(f"Gave up after {MESSAGE_MAX_ATTEMPTS} attempts")


def test_every_email_carries_a_stable_message_id_of_its_own():
    live_journey(MAIL_STEP)
    for index in range(3):
        ContactFactory(external_id=f"c{index}", email=f"c{index}@example.com")
    send(*[(f"e{index}", f"c{index}", "signed_up") for index in range(3)], now=T0)
    run(now=T0)

    rows = {row.contact.email: row for row in OutboxMessage.objects.select_related("contact")}
    ids = {message.to[0]: message.extra_headers["Message-ID"] for message in mail.outbox}
    assert len(set(ids.values())) == 3
    for address, header in ids.items():
        row = rows[address]
        assert header == message_id(OutboxMessage.objects.get(pk=row.pk))
        assert header.startswith(f"<outbox-{row.pk}.") and header.endswith("@localhost>")
    first = mail.outbox[0]
    assert f"Message-ID: {ids[first.to[0]]}" in first.message().as_string()


def test_the_admin_retries_failed_messages_only(client, superuser):
    _queued_emails(2)
    OutboxMessage.objects.filter(contact__external_id="c0").update(
        status=OutboxMessage.Status.FAILED, attempts=3, error="Outcome unknown: ..."
    )
    sent = OutboxMessage.objects.get(contact__external_id="c1")
    OutboxMessage.objects.filter(pk=sent.pk).update(status=OutboxMessage.Status.SENT)
    client.force_login(superuser)

    client.post(
        reverse("admin:journeys_outboxmessage_changelist"),
        {
            "action": "retry_failed_messages",
            "_selected_action": list(OutboxMessage.objects.values_list("pk", flat=True)),
        },
    )

    statuses = dict(OutboxMessage.objects.values_list("contact__external_id", "status"))
    assert statuses == {"c0": "pending", "c1": "sent"}
    retried = OutboxMessage.objects.get(contact__external_id="c0")
    assert (retried.attempts, retried.error) == (0, "")


def test_skipped_messages_of_a_batch_are_written_in_one_statement():
    """A commit per skipped message was most of a worker's time on a run of contacts without
    an address; the skips are one UPDATE a reason, next to the sends."""
    live_journey([{"key": "hi", "type": "send_email", "subject": "Hi", "body": "Hi", "next": None}])
    ContactFactory(external_id="with-address", email="ann@example.com")
    send(
        *[(f"e{index}", f"c{index}", "signed_up") for index in range(6)],
        ("e-ann", "with-address", "signed_up"),
        now=T0,
    )
    run(now=T0)
    # The sweep that enqueues them delivers them too: put them back as they were before.
    OutboxMessage.objects.update(
        status=OutboxMessage.Status.PENDING, reason="", sent_at=None, attempts=0
    )
    mail.outbox.clear()
    with CaptureQueriesContext(connection) as queries:
        assert deliver_due_messages(now=T0) == 7
    skips = [q["sql"] for q in queries if "UPDATE" in q["sql"] and "'skipped'" in q["sql"]]
    assert len(skips) == 1
    assert sorted(OutboxMessage.objects.values_list("status", "reason")) == [
        ("sent", ""), *[("skipped", "no_address")] * 6
    ]  # fmt: skip
    assert [message.to for message in mail.outbox] == [["ann@example.com"]]
