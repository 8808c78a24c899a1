"""journeys.actions.messages: due outbox messages rendered and sent, a bad one failed alone, retries with back-off."""

import datetime

import pytest

from journeys import sms
from journeys.actions.messages import MESSAGE_MAX_ATTEMPTS
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
