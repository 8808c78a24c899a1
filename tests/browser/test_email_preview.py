"""The email step's preview and test send in Chromium: the marketer's HTML is shown in a
sandboxed frame where its script does not run, and a test goes to the address typed in."""

import pytest
from django.core import mail
from playwright.sync_api import expect

from journeys.actions.versions import create_journey
from journeys.tests.factories import ContactFactory
from tests.browser.test_editor import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HTML = (
    "<html><head><style>.hello { color: rgb(0, 128, 0) }</style></head><body>"
    '<p class="hello">Hi {{ contact.attributes.first_name }}</p>'
    "<script>document.write('<p id=ran>script ran</p>');"
    "parent.postMessage('ran', '*');</script></body></html>"
)


def test_preview_shows_the_html_sandboxed_without_running_its_script_and_test_send(
    page, live_server, editor
):
    create_journey(
        definition={
            "key": "welcome",
            "name": "Welcome",
            "steps": [
                {
                    "key": "hello",
                    "type": "send_email",
                    "subject": "Welcome {{ contact.attributes.first_name }}",
                    "preheader": "Start here",
                    "body": "",
                    "html": HTML,
                }
            ],
        }
    )
    ContactFactory(external_id="ann", email="ann@example.com", attributes={"first_name": "Ann"})
    ContactFactory(external_id="bob", email="bob@example.com", attributes={"first_name": "Bob"})
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/journeys/welcome/?step=hello")
    page.evaluate("window.seen = []; addEventListener('message', (e) => seen.push(e.data))")
    panel = page.locator("#step-panel")
    expect(panel.locator("code", has_text="contact.attributes.first_name")).to_be_attached()

    panel.get_by_label("Preview for contact").fill("bob@example.com")
    panel.get_by_role("button", name="Preview").click()
    expect(panel.locator(".preview-subject")).to_have_text("Welcome Bob")
    expect(panel.locator(".preview-preheader")).to_have_text("Start here")
    frame_element = panel.locator("iframe.preview-html")
    assert frame_element.get_attribute("sandbox") == ""
    frame = panel.frame_locator("iframe.preview-html")
    expect(frame.locator("p.hello", has_text="Hi Bob")).to_have_css("color", "rgb(0, 128, 0)")
    expect(frame.locator("#ran")).to_have_count(0)
    assert page.evaluate("window.seen") == []

    panel.get_by_label("Send a test to").fill("not an address")
    panel.get_by_role("button", name="Send test").click()
    expect(panel.get_by_text("Enter a valid email address.")).to_be_visible()
    assert mail.outbox == []
    panel.get_by_label("Send a test to").fill("me@example.org")
    panel.get_by_role("button", name="Send test").click()
    expect(panel.get_by_text("Test email sent to me@example.org.")).to_be_visible()
    [sent] = mail.outbox
    assert sent.subject == "[Test] Welcome Ann"
