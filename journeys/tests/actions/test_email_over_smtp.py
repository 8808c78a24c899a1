"""A marketing email with HTML, delivered by the worker to a real SMTP server (aiosmtpd):
its MIME parts, headers and Message-ID as they arrive (issue 13)."""

import datetime
import email
from email import policy

import pytest

from journeys.actions.events import ingest_events
from journeys.actions.messages import message_id
from journeys.actions.sweep import run_due
from journeys.consent import read_unsubscribe_token
from journeys.models import OutboxMessage
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)


def test_a_marketing_html_email_arrives_over_smtp_whole(smtp_server):
    live_journey(
        [
            {
                "key": "mail",
                "type": "send_email",
                "subject": "Hello {{ contact.attributes.first_name }}",
                "preheader": "Three tips inside",
                "body": "",
                "html": "<html><head><style>.cta { color: #0a0 }</style></head><body>"
                '<p>Hi {{ contact.attributes.first_name }},</p><a class="cta" '
                'href="https://example.com/start">Start</a></body></html>',
                "from_email": "News <news@example.com>",
                "reply_to": "help@example.com",
                "next": None,
            }
        ]
    )
    contact = ContactFactory(
        external_id="ann", email="ann@example.com", attributes={"first_name": "Ann"}
    )
    ingest_events(
        events=[{"id": "e1", "contact": "ann", "name": "signed_up", "properties": {}}], now=T0
    )
    run_due(now=T0)

    outbox = OutboxMessage.objects.get()
    assert outbox.status == OutboxMessage.Status.SENT
    [received] = smtp_server.messages
    assert received.recipients == ["ann@example.com"]
    assert received.sender == "news@example.com"
    parsed = email.message_from_bytes(received.data, policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Message-ID"] == message_id(outbox)
    assert parsed["Subject"] == "Hello Ann"
    assert parsed["Reply-To"] == "help@example.com"
    url = parsed["List-Unsubscribe"].strip().strip("<>")
    assert read_unsubscribe_token(url.rsplit("/", 1)[1]) == (contact.pk, "email")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    text_part, html_part = parsed.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    text = text_part.get_content().replace("\r\n", "\n")
    html = html_part.get_content()
    assert text.startswith("Hi Ann,\nStart (https://example.com/start)")
    assert "Three tips inside" not in text
    assert url in text
    assert '<a class="cta" href="https://example.com/start" style="color: #0a0;">' in html
    assert "<style>" not in html
    assert html.index("Three tips inside") < html.index("Hi Ann")
    assert f'href="{url}"' in html
