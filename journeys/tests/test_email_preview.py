"""The email side panel: fields, Liquid data, preview (sandboxed, its own CSP) and test send
(contract 6.1, issue 13)."""

import pytest
from django.core import mail

from journeys.actions.versions import create_journey
from journeys.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

HTML = (
    "<html><head><style>p { color: #c00 }</style></head><body>"
    "<p>Hi {{ contact.attributes.first_name }}</p><script>document.title = 'ran'</script>"
    "</body></html>"
)
EMAIL = {
    "key": "welcome",
    "type": "send_email",
    "subject": "Welcome {{ contact.attributes.first_name }}",
    "preheader": "Start here",
    "body": "",
    "html": HTML,
    "next": None,
}


@pytest.fixture
def journey(db):
    journey, _, _ = create_journey(
        definition={"key": "welcome", "name": "Welcome", "steps": [EMAIL]}
    )
    return journey


@pytest.fixture
def ann():
    return ContactFactory(
        external_id="ann", email="ann@example.com", attributes={"first_name": "Ann", "plan": "pro"}
    )


def test_the_panel_edits_every_email_field_and_lists_liquid_data(client, editor, journey, ann):
    client.force_login(editor)
    html = client.get("/journeys/welcome/steps/welcome/").content.decode()
    for name in ("subject", "preheader", "body", "html", "from_email", "reply_to", "category"):
        assert f'name="{name}"' in html
    for name in ("contact.email", "contact.attributes.first_name", "contact.attributes.plan"):
        assert f"<code>{name}</code>" in html
    assert "Preview" in html and "Send test" in html

    response = client.post(
        "/journeys/welcome/steps/welcome/",
        {
            "subject": "Hi",
            "preheader": "",
            "body": "",
            "html": "<p>Hi</p>",
            "from_email": "News <news@example.com>",
            "reply_to": "",
            "category": "transactional",
            "go_next": "",
        },
    )
    assert response.status_code in (200, 302)
    step = journey.versions.get().definition["steps"][0]
    assert step == {
        "key": "welcome",
        "type": "send_email",
        "subject": "Hi",
        "body": "",
        "html": "<p>Hi</p>",
        "from_email": "News <news@example.com>",
        "category": "transactional",
        "next": None,
    }


def test_a_bad_sender_or_no_body_is_an_inline_error(client, editor, journey):
    client.force_login(editor)
    response = client.post(
        "/journeys/welcome/steps/welcome/",
        {"subject": "Hi", "body": "", "html": "", "from_email": "nobody", "category": "marketing"},
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "Enter an email address, e.g. news@example.com" in html
    assert "Write a text body, an HTML body, or both." in html


def test_preview_renders_for_the_contact_picked_and_frames_the_html_sandboxed(
    client, editor, journey, ann
):
    ContactFactory(external_id="bob", email="bob@example.com", attributes={"first_name": "Bob"})
    client.force_login(editor)
    response = client.get(
        "/journeys/welcome/steps/welcome/preview/", {"contact": "bob@example.com"}
    )
    html = response.content.decode()
    assert "Welcome Bob" in html
    assert "Start here" in html
    assert "<iframe" in html and " sandbox " in html and "allow-scripts" not in html

    frame = client.get("/journeys/welcome/steps/welcome/preview/html/", {"contact": "bob"})
    assert frame["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
        "frame-ancestors 'self'; sandbox"
    )
    assert frame["X-Frame-Options"] == "SAMEORIGIN"
    body = frame.content.decode()
    assert '<p style="color: #c00;">Hi Bob</p>' in body
    assert "/u/preview" in body  # a placeholder: a preview unsubscribes nobody

    missing = client.get("/journeys/welcome/steps/welcome/preview/", {"contact": "zed"})
    assert "No contact has the email or external id &#x27;zed&#x27;." in missing.content.decode()


def test_preview_without_a_query_uses_the_first_contact(client, editor, journey, ann):
    client.force_login(editor)
    html = client.get("/journeys/welcome/steps/welcome/preview/").content.decode()
    assert "Welcome Ann" in html


def test_test_send_mails_the_rendered_email_marked_test_and_says_where(
    client, editor, journey, ann
):
    client.force_login(editor)
    response = client.post(
        "/journeys/welcome/steps/welcome/test-send/", {"test-to": "me@example.org"}
    )
    assert "Test email sent to me@example.org." in response.content.decode()
    [email] = mail.outbox
    assert email.to == ["me@example.org"]
    assert email.subject == "[Test] Welcome Ann"
    assert email.alternatives[0][1] == "text/html"


def test_test_send_to_an_invalid_address_is_an_inline_error(client, editor, journey, ann):
    client.force_login(editor)
    response = client.post("/journeys/welcome/steps/welcome/test-send/", {"test-to": "nope"})
    assert response.status_code == 200
    assert "Enter a valid email address." in response.content.decode()
    assert mail.outbox == []


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/journeys/welcome/steps/welcome/preview/"),
        ("get", "/journeys/welcome/steps/welcome/preview/html/"),
        ("post", "/journeys/welcome/steps/welcome/test-send/"),
    ],
)
def test_viewers_cannot_preview_or_send_tests(client, viewer, journey, ann, method, url):
    client.force_login(viewer)
    assert getattr(client, method)(url, {"test-to": "me@example.org"}).status_code == 403
    assert mail.outbox == []
