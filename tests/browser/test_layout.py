"""Pages a marketer uses on a phone: nothing wider than the screen, Log out reachable, and
text shown as it was typed."""

import datetime

import pytest
from django.conf import settings
from playwright.sync_api import expect

from conversions.tests.factories import ConversionFactory
from journeys.tests.factories import ContactFactory, JourneyFactory, JourneyVersionFactory
from reporting.tests.factories import enroll, trial_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
T0 = datetime.datetime(2026, 6, 1, 8, 0, tzinfo=datetime.UTC)


@pytest.fixture
def logged_in_page(page, live_server, client, viewer):
    client.force_login(viewer)
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
          "url": live_server.url}]
    )  # fmt: skip
    return page


def _page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


@pytest.mark.parametrize(
    "path",
    ["/journeys/", "/contacts/", "/journeys/trial-to-paid/", "/journeys/trial-to-paid/report/"],
)
def test_pages_fit_a_phone_and_keep_log_out_on_screen(logged_in_page, live_server, path):
    page = logged_in_page
    trial_history(days=14, per_day=12)
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}{path}")
    page.wait_for_load_state("networkidle")
    assert _page_width(page) <= PHONE["width"]
    log_out = page.get_by_role("button", name="Log out")
    expect(log_out).to_be_in_viewport()


def test_external_ids_are_shown_as_typed(logged_in_page, live_server):
    page = logged_in_page
    journey = JourneyFactory(key="ux")
    ConversionFactory(journey=journey)
    version = JourneyVersionFactory(
        journey=journey,
        number=1,
        published_at=T0,
        definition={"steps": [{"key": "welcome", "type": "send_email", "next": None}]},
    )
    enroll(version, T0, contact=ContactFactory(external_id="ux-11"), path=("welcome",))
    page.goto(f"{live_server.url}/journeys/ux/report/contacts/?path=welcome")
    cell = page.get_by_role("rowheader").filter(has_text="ux-11")
    assert cell.inner_text() == "ux-11"
