"""Pause and resume a journey from the editor in Chromium, reading the confirmation first."""

import pytest
from playwright.sync_api import expect

from journeys.actions.versions import create_journey, publish_version
from journeys.models import Journey
from journeys.tests.actions.scenarios import T0, run, send
from journeys.tests.factories import ContactFactory
from tests.browser.test_editor import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEFINITION = {
    "key": "nurture",
    "name": "Nurture",
    "triggers": [{"type": "event", "event": "signed_up"}],
    "steps": [{"key": "wait", "type": "wait", "duration": "P2D"}],
}


def test_pause_then_resume_a_journey_from_the_editor(page, live_server, publisher):
    _, version, _ = create_journey(definition=DEFINITION)
    publish_version(version=version)
    for name in ("ann", "bob", "cy"):
        ContactFactory(external_id=name)
    send(*[(f"e-{name}", name, "signed_up") for name in ("ann", "bob", "cy")], now=T0)
    run(now=T0)
    log_in(page, live_server, publisher)
    page.goto(f"{live_server.url}/journeys/nurture/")

    page.get_by_text("Pause…").click()
    expect(
        page.get_by_text("3 contacts are running: they hold where they are until you resume.")
    ).to_be_visible()
    page.get_by_role("button", name="Pause the journey").click()
    expect(page.get_by_text("Journey paused.")).to_be_visible()
    expect(page.locator("h1 #journey-status")).to_have_text("Paused")
    assert Journey.objects.get(key="nurture").status == "paused"

    page.get_by_text("Resume…").click()
    expect(page.get_by_text("3 contacts are running: they go on")).to_be_visible()
    page.get_by_role("button", name="Resume the journey").click()
    expect(page.get_by_text("Journey resumed.")).to_be_visible()
    expect(page.locator("h1 #journey-status")).to_have_text("Live")
