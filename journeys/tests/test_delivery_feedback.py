"""Delivery feedback (issue 13): email sent through anymail keeps its provider id, and the
providers' tracking webhooks, posted as Postmark and Mailgun post them (payload shapes from
anymail's own tests, signed the way those providers sign), move the message's status and the
contact's subscription through journeys.actions.delivery."""

import base64
import hashlib
import hmac
import json

import pytest
from anymail.signals import AnymailTrackingEvent
from django.core import mail

from journeys.actions.delivery import record_delivery_events
from journeys.actions.messages import message_id
from journeys.models import Contact, DeliveryEvent, OutboxMessage
from journeys.tests.actions.scenarios import T0, run, send
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db

POSTMARK_URL = "/webhooks/email/postmark/tracking/"
MAILGUN_URL = "/webhooks/email/mailgun/tracking/"
SIGNING_KEY = "mailgun-signing-key"
POSTMARK_ID = "883953f4-6105-42a2-a16a-77a8eac79483"
MAIL_STEP = [
    {"key": "welcome", "type": "send_email", "subject": "Hi", "body": "Hello", "next": None}
]


@pytest.fixture
def webhooks(settings):
    settings.ANYMAIL = {
        "WEBHOOK_SECRET": "hook:s3cret",
        "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
    }


@pytest.fixture
def sent(settings):
    """One welcome email to ann, sent through anymail's test backend at T0."""
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    live_journey(MAIL_STEP)
    ContactFactory(external_id="ann", email="ann@example.com")
    mail.outbox = []
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    return OutboxMessage.objects.get()


def basic_auth(user="hook", password="s3cret"):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def post_postmark(client, payload, **auth):
    return client.post(
        POSTMARK_URL, json.dumps(payload), content_type="application/json", **(auth or basic_auth())
    )


def mailgun_signed(event_data, token, key=SIGNING_KEY):
    """A Mailgun webhook body: the event and its signature, an HMAC-SHA256 of timestamp and
    token with the webhook signing key, as Mailgun signs."""
    timestamp = str(int(event_data["timestamp"]))
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature.hexdigest()},
        "event-data": event_data,
    }


def post_mailgun(client, body):
    return client.post(
        MAILGUN_URL, json.dumps(body), content_type="application/json", **basic_auth()
    )


def postmark_delivery(record_type, **fields):
    base = {
        "Delivery": {"DeliveredAt": "2026-03-02T09:00:05.2735393-04:00", "Details": "ok"},
        "Open": {"FirstOpen": True, "ReceivedAt": "2026-03-02T10:21:41.2493688-04:00"},
        "Click": {
            "ClickLocation": "HTML",
            "OriginalLink": "https://example.com/click/me",
            "ReceivedAt": "2026-03-02T11:21:11.9065619Z",
        },
    }[record_type]
    return {
        "RecordType": record_type,
        "ServerID": 23,
        "MessageID": POSTMARK_ID,
        "Recipient": "ann@example.com",
        "Tag": "welcome",
        "Metadata": {},
        **base,
        **fields,
    }


def postmark_bounce(record_type="Bounce", bounce_id=901542550, **fields):
    return {
        "RecordType": record_type,
        "ID": bounce_id,
        "Type": "HardBounce" if record_type == "Bounce" else "SpamComplaint",
        "TypeCode": 1 if record_type == "Bounce" else 512,
        "ServerID": 23,
        "Name": "Hard bounce",
        "MessageID": POSTMARK_ID,
        "Description": "The server was unable to deliver your message.",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "ann@example.com",
        "From": "journeys@localhost",
        "BouncedAt": "2026-03-02T09:28:50.3963933-04:00",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Hi",
        **fields,
    }


def as_postmark(message):
    """The provider id Postmark would have answered the send with."""
    OutboxMessage.objects.filter(pk=message.pk).update(provider_message_id=POSTMARK_ID)


def test_sending_through_anymail_keeps_the_provider_id_metadata_and_message_id(sent):
    assert sent.status == OutboxMessage.Status.SENT
    [email] = mail.outbox
    assert email.anymail_test_params["metadata"] == {"outbox_id": str(sent.pk)}
    assert email.anymail_test_params["tags"] == ["welcome"]
    assert email.extra_headers["Message-ID"] == message_id(sent)
    # The test backend's id is the message's index in the outbox.
    assert sent.provider_message_id == "0"
    # The send is the message's first event (the report's rollups are refreshed from them).
    [event] = DeliveryEvent.objects.all()
    assert (event.message_id, event.event_type, event.occurred_at) == (
        sent.pk,
        "sent",
        sent.sent_at,
    )


def feedback_events():
    """The provider's events, without the message's own "sent"."""
    return DeliveryEvent.objects.exclude(event_type="sent")


def test_postmark_feedback_moves_the_status_forward_only_and_keeps_each_first_time(
    client, webhooks, sent
):
    as_postmark(sent)
    for record in ("Delivery", "Click", "Open"):
        assert post_postmark(client, postmark_delivery(record)).status_code == 200
    sent.refresh_from_db()
    # The open arrived after the click: still clicked, and opened is kept for the report.
    assert sent.status == OutboxMessage.Status.CLICKED
    assert sent.delivered_at.isoformat() == "2026-03-02T13:00:05.273539+00:00"
    assert sent.opened_at is not None and sent.clicked_at is not None
    assert Contact.objects.get().subscriptions["email"] == "subscribed"
    assert feedback_events().count() == 3


def test_a_postmark_bounce_bounces_the_contact_once_however_often_it_is_posted(
    client, webhooks, sent
):
    as_postmark(sent)
    post_postmark(client, postmark_delivery("Delivery"))
    for _ in range(2):
        assert post_postmark(client, postmark_bounce()).status_code == 200
    sent.refresh_from_db()
    assert sent.status == OutboxMessage.Status.BOUNCED
    assert sent.bounced_at is not None
    assert Contact.objects.get().subscriptions == {"email": "bounced", "sms": "subscribed"}
    assert list(feedback_events().values_list("event_type", flat=True).order_by("pk")) == [
        "delivered",
        "bounced",
    ]


def test_a_postmark_spam_complaint_marks_the_contact_complained(client, webhooks, sent):
    as_postmark(sent)
    post_postmark(client, postmark_bounce("SpamComplaint", bounce_id=77))
    sent.refresh_from_db()
    assert sent.status == OutboxMessage.Status.COMPLAINED
    assert Contact.objects.get().subscriptions["email"] == "complained"


def test_postmark_with_wrong_credentials_is_refused_with_403_and_changes_nothing(
    client, webhooks, sent
):
    as_postmark(sent)
    for auth in (basic_auth("hook", "guess"), {}):
        response = client.post(
            POSTMARK_URL, json.dumps(postmark_bounce()), content_type="application/json", **auth
        )
        assert response.status_code == 403
    sent.refresh_from_db()
    assert sent.status == OutboxMessage.Status.SENT and sent.bounced_at is None
    assert Contact.objects.get().subscriptions["email"] == "subscribed"
    assert not feedback_events().exists()


def mailgun_event(event, outbox, **fields):
    return {
        "event": event,
        "id": f"id-{event}",
        "timestamp": 1772442000.153125,
        "recipient": "ann@example.com",
        "tags": ["welcome"],
        "user-variables": {"outbox_id": str(outbox.pk)},
        "message": {"headers": {"message-id": message_id(outbox).strip("<>")}},
        **fields,
    }


def test_mailgun_feedback_found_by_metadata_or_message_id_moves_status_and_subscription(
    client, webhooks, sent
):
    delivered = mailgun_event("delivered", sent, **{"user-variables": {}})
    assert post_mailgun(client, mailgun_signed(delivered, "token-1")).status_code == 200
    sent.refresh_from_db()
    assert sent.status == OutboxMessage.Status.DELIVERED  # found by our Message-ID alone
    opened = mailgun_event("opened", sent, message={"headers": {"message-id": "other@x"}})
    post_mailgun(client, mailgun_signed(opened, "token-2"))  # found by the metadata alone
    unsubscribed = mailgun_event("unsubscribed", sent)
    post_mailgun(client, mailgun_signed(unsubscribed, "token-3"))
    sent.refresh_from_db()
    assert sent.status == OutboxMessage.Status.OPENED
    assert sent.opened_at.isoformat() == "2026-03-02T09:00:00.153125+00:00"
    assert sent.unsubscribed_at is not None
    assert Contact.objects.get().subscriptions["email"] == "unsubscribed"


def test_mailgun_permanent_failure_bounces_and_a_complaint_complains(client, webhooks, sent):
    failed = mailgun_event(
        "failed",
        sent,
        severity="permanent",
        reason="bounce",
        **{"delivery-status": {"code": 550, "message": "5.1.1 does not exist", "description": ""}},
    )
    post_mailgun(client, mailgun_signed(failed, "token-1"))
    assert Contact.objects.get().subscriptions["email"] == "bounced"
    post_mailgun(client, mailgun_signed(mailgun_event("complained", sent), "token-2"))
    sent.refresh_from_db()
    assert sent.status == OutboxMessage.Status.COMPLAINED
    assert Contact.objects.get().subscriptions["email"] == "complained"


def test_mailgun_with_a_bad_signature_is_refused_with_403_and_changes_nothing(
    client, webhooks, sent
):
    forged = mailgun_signed(mailgun_event("complained", sent), "token-1", key="not-the-key")
    assert post_mailgun(client, forged).status_code == 403
    sent.refresh_from_db()
    assert sent.status == OutboxMessage.Status.SENT and sent.complained_at is None
    assert Contact.objects.get().subscriptions["email"] == "subscribed"
    assert not feedback_events().exists()


def test_a_bounce_of_an_address_the_contact_has_replaced_leaves_the_new_one_subscribed(sent):
    Contact.objects.update(email="ann@new.example.com")
    event = AnymailTrackingEvent(
        event_type="bounced",
        event_id="b1",
        recipient="ann@example.com",
        metadata={"outbox_id": str(sent.pk)},
    )
    assert record_delivery_events(events=[event], provider="Postmark", now=T0)
    sent.refresh_from_db()
    assert sent.status == OutboxMessage.Status.BOUNCED
    assert Contact.objects.get().subscriptions["email"] == "subscribed"


def test_events_about_no_message_of_ours_are_answered_200_and_ignored(client, webhooks, sent):
    stranger = postmark_bounce(MessageID="00000000-0000-0000-0000-000000000000")
    assert post_postmark(client, stranger).status_code == 200
    forged_ours = mailgun_event("complained", sent, **{"user-variables": {}})
    # Our id's shape, but another database's creation stamp.
    forged_ours["message"]["headers"]["message-id"] = f"outbox-{sent.pk}.1@localhost"
    assert post_mailgun(client, mailgun_signed(forged_ours, "t")).status_code == 200
    sent.refresh_from_db()
    assert sent.status == OutboxMessage.Status.SENT
    assert not feedback_events().exists()


def test_feedback_does_not_touch_a_message_being_sent_but_keeps_its_times(sent):
    OutboxMessage.objects.filter(pk=sent.pk).update(status=OutboxMessage.Status.PENDING)
    event = AnymailTrackingEvent(
        event_type="delivered", event_id="d1", metadata={"outbox_id": str(sent.pk)}
    )
    record_delivery_events(events=[event], provider="Postmark", now=T0)
    sent.refresh_from_db()
    assert sent.status == OutboxMessage.Status.PENDING
    assert sent.delivered_at == T0


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '"x"'])
@pytest.mark.parametrize("url", [POSTMARK_URL, MAILGUN_URL])
def test_a_body_that_is_not_the_providers_json_is_a_400_not_a_500(client, webhooks, url, body):
    client.raise_request_exception = False
    response = client.post(url, body, content_type="application/json", **basic_auth())
    assert response.status_code in (400, 403)


def test_without_a_webhook_secret_unsigned_providers_are_refused(client, settings, sent):
    # Postmark does not sign: without basic auth anyone could bounce our contacts.
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    as_postmark(sent)
    response = client.post(
        POSTMARK_URL, json.dumps(postmark_bounce()), content_type="application/json"
    )
    assert response.status_code == 403
    assert Contact.objects.get().subscriptions["email"] == "subscribed"
    # Mailgun signs every post: its signature is enough.
    body = mailgun_signed(mailgun_event("delivered", sent), "token-1")
    assert (
        client.post(MAILGUN_URL, json.dumps(body), content_type="application/json").status_code
        == 200
    )
