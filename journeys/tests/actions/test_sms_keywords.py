"""An SMS reply of STOP, arriving as an `sms_inbound` event, unsubscribes the contact's SMS
channel; START resubscribes it (docs/messages.md)."""

import datetime

import pytest

from journeys.actions.events import ingest_events, process_pending_events
from journeys.models import Contact, Event
from journeys.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)


def _reply(event_id, text, contact="ann", name="sms_inbound"):
    ingest_events(
        events=[{"id": event_id, "contact": contact, "name": name, "properties": {"text": text}}],
        now=T0,
    )
    process_pending_events(now=T0)


def _sms(contact="ann"):
    return Contact.objects.get(external_id=contact).subscriptions["sms"]


@pytest.mark.parametrize("text", ["STOP", " stop\n", "Unsubscribe", "cancel", "END", "quit"])
def test_a_stop_reply_unsubscribes_sms_only(text):
    ContactFactory(external_id="ann")
    _reply("e1", text)
    contact = Contact.objects.get()
    assert contact.subscriptions == {"email": "subscribed", "sms": "unsubscribed"}
    assert Event.objects.get().status == Event.Status.PROCESSED


@pytest.mark.parametrize(
    ("text", "name"),
    [("please stop", "sms_inbound"), ("STOP", "sms_reply"), ("", "sms_inbound")],
)
def test_other_replies_and_other_events_change_nothing(text, name):
    ContactFactory(external_id="ann")
    _reply("e1", text, name=name)
    assert _sms() == "subscribed"


def test_start_resubscribes_after_stop_but_not_after_a_bounce():
    ContactFactory(external_id="ann")
    ContactFactory(external_id="bob", subscriptions={"email": "subscribed", "sms": "bounced"})
    _reply("e1", "STOP")
    _reply("e2", "start")
    _reply("e3", "UNSTOP", contact="bob")
    assert (_sms("ann"), _sms("bob")) == ("subscribed", "bounced")


def test_the_last_keyword_of_a_batch_wins():
    ContactFactory(external_id="ann")
    ingest_events(
        events=[
            {"id": "e1", "contact": "ann", "name": "sms_inbound", "properties": {"text": "STOP"}},
            {"id": "e2", "contact": "ann", "name": "sms_inbound", "properties": {"text": "START"}},
            {"id": "e3", "contact": "ann", "name": "sms_inbound", "properties": {"text": "STOP"}},
        ],
        now=T0,
    )
    process_pending_events(now=T0)
    assert _sms() == "unsubscribed"
