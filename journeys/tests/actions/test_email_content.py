"""What an email carries (contract 6.1): HTML with inlined CSS, a text part, a preheader,
sender and reply-to, the unsubscribe link and headers on marketing email; and what is not
sent: marketing to a channel without consent, any message without an address."""

import datetime

import pytest
from django.core import mail

from journeys import sms
from journeys.actions.events import ingest_events
from journeys.actions.sweep import run_due
from journeys.consent import read_unsubscribe_token
from journeys.models import OutboxMessage
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)

HTML = (
    "<html><head><style>p { color: #c00 }</style></head><body>"
    "<h1>Hi {{ contact.attributes.first_name }}</h1>"
    '<p>See <a href="https://example.com/plans">our plans</a>.</p></body></html>'
)


def _email_step(**fields):
    return {"key": "mail", "type": "send_email", "subject": "Hi", "next": None, **fields}


def _run(steps, **contact):
    live_journey(steps)
    sms.outbox.clear()
    contact = ContactFactory(
        external_id="ann",
        **{"email": "ann@example.com", "attributes": {"first_name": "Ann", "phone": "+44"}}
        | contact,
    )
    ingest_events(
        events=[{"id": "e1", "contact": "ann", "name": "signed_up", "properties": {}}], now=T0
    )
    run_due(now=T0)
    return contact


def test_html_email_is_multipart_with_inlined_css_preheader_and_derived_text():
    contact = _run(
        [
            _email_step(
                body="",
                html=HTML,
                preheader="Your plan, {{ contact.attributes.first_name }}",
                from_email="News <news@example.com>",
                reply_to="help@example.com",
            )
        ]
    )
    [email] = mail.outbox
    html, mime = email.alternatives[0]
    assert mime == "text/html"
    assert '<p style="color: #c00;">' in html
    assert "<style>" not in html
    assert "Hi Ann" in html
    # The preheader is hidden text at the top of the HTML and nowhere in the text part.
    assert html.index("Your plan, Ann") < html.index("Hi Ann")
    assert "display:none" in html
    assert "Your plan" not in email.body
    assert email.body.startswith("Hi Ann\n\nSee our plans (https://example.com/plans).")
    assert email.from_email == "News <news@example.com>"
    assert email.reply_to == ["help@example.com"]
    # Marketing: a working unsubscribe link in both parts and the RFC 8058 headers.
    url = email.extra_headers["List-Unsubscribe"].strip("<>")
    assert email.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert url.startswith("http://127.0.0.1:8000/u/")
    assert read_unsubscribe_token(url.rsplit("/", 1)[1]) == (contact.pk, "email")
    assert url in email.body
    assert f'href="{url}"' in html


def test_html_escapes_contact_data_and_text_body_wins_when_given():
    _run(
        [_email_step(body="Plain text", html="<p>{{ contact.attributes.first_name }}</p>")],
        attributes={"first_name": "<script>x</script>"},
    )
    [email] = mail.outbox
    assert email.body.startswith("Plain text\n")
    assert "&lt;script&gt;x&lt;/script&gt;" in email.alternatives[0][0]
    assert "<script>" not in email.alternatives[0][0]


def test_a_template_using_unsubscribe_url_gets_no_footer():
    _run([_email_step(body="Bye: {{ unsubscribe_url }}")])
    [email] = mail.outbox
    assert email.body.count("/u/") == 1
    assert "--\nUnsubscribe" not in email.body


def test_transactional_email_has_no_unsubscribe_and_ignores_consent():
    _run(
        [_email_step(body="Your receipt", category="transactional")],
        subscriptions={"email": "unsubscribed", "sms": "subscribed"},
    )
    [email] = mail.outbox
    assert email.body == "Your receipt"
    assert "List-Unsubscribe" not in email.extra_headers
    assert email.alternatives == []
    assert email.from_email == "Waypoint <journeys@localhost>"


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_marketing_to_a_channel_not_subscribed_is_skipped_with_the_reason(status):
    _run(
        [
            _email_step(body="Offer", next="text"),
            {"key": "text", "type": "send_sms", "text": "Offer", "next": None},
        ],
        subscriptions={"email": status, "sms": "subscribed"},
    )
    assert mail.outbox == []
    assert sms.outbox == [{"to": "+44", "text": "Offer"}]
    email = OutboxMessage.objects.get(channel="email")
    assert (email.status, email.reason, email.sent_at) == ("skipped", status, None)
    assert email.enrollment.state == "completed"


def test_sms_marketing_respects_the_sms_subscription_and_transactional_sms_does_not():
    _run(
        [
            {"key": "promo", "type": "send_sms", "text": "Offer", "next": "code"},
            {
                "key": "code",
                "type": "send_sms",
                "text": "Code 1234",
                "category": "transactional",
                "next": None,
            },
        ],
        subscriptions={"email": "subscribed", "sms": "unsubscribed"},
    )
    assert sms.outbox == [{"to": "+44", "text": "Code 1234"}]
    promo = OutboxMessage.objects.get(step_key="promo")
    assert (promo.status, promo.reason) == ("skipped", "unsubscribed")


@pytest.mark.parametrize("category", ["marketing", "transactional"])
def test_a_message_without_an_address_is_skipped_not_failed(category):
    _run([_email_step(body="Hi", category=category)], email="")
    message = OutboxMessage.objects.get()
    assert (message.status, message.reason, message.error) == ("skipped", "no_address", "")
