"""The canvas shows who is where on the version shown; clicking a number lists them."""

import datetime

import pytest
from django.conf import settings
from playwright.sync_api import expect

from journeys.actions.versions import create_journey, publish_version
from journeys.tests.factories import ContactFactory
from reporting.tests.factories import enroll

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

T0 = datetime.datetime(2026, 6, 1, 8, 0, tzinfo=datetime.UTC)
DEFINITION = {
    "key": "numbers",
    "name": "Numbers",
    "triggers": [{"type": "event", "event": "signed_up"}],
    "conversions": [{"key": "paid", "name": "Paid", "value": 10.0}],
    "steps": [
        {"key": "welcome", "type": "send_email", "subject": "Hi", "body": "Hi", "next": "wait"},
        {"key": "wait", "type": "wait", "duration": "P2D", "next": None},
    ],
}


def test_clicking_a_step_number_lists_those_contacts(page, live_server, client, viewer):
    journey, version, _ = create_journey(definition=DEFINITION)
    version = publish_version(version=version)
    paid = journey.conversions.get(key="paid")
    enroll(version, T0, contact=ContactFactory(external_id="ann"), path=("welcome", "wait"))
    enroll(
        version,
        T0,
        contact=ContactFactory(external_id="bob"),
        path=("welcome", "wait"),
        awards=((paid, datetime.timedelta(hours=3)),),
    )
    enroll(version, T0, contact=ContactFactory(external_id="cid"), path=("welcome",))
    client.force_login(viewer)
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
          "url": live_server.url}]
    )  # fmt: skip
    page.goto(f"{live_server.url}/journeys/numbers/")
    numbers = page.get_by_label("People at wait in version 1")
    expect(numbers).to_contain_text("2 entered")
    converted = numbers.get_by_role("link", name="1 converted")
    assert "first conversion" in converted.get_attribute("title")
    converted.click()
    page.wait_for_url("**/contacts/?journey=numbers*")
    rows = page.get_by_role("table").locator("a.row-title")
    expect(rows).to_have_text(["bob"])
    expect(page.get_by_role("status")).to_contain_text("1 contact matches")
