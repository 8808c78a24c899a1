"""The report page in Chromium with a believable history; SAVE_SCREENSHOTS=1 also writes
docs/screenshots/report.png."""

import os
from pathlib import Path

import pytest
from django.conf import settings

from reporting.tests.factories import trial_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"


@pytest.fixture
def logged_in_page(page, live_server, client, viewer):
    client.force_login(viewer)
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
          "url": live_server.url}]
    )  # fmt: skip
    return page


def test_report_page_reads_like_a_report_and_filters_in_place(logged_in_page, live_server):
    page = logged_in_page
    trial_history()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{live_server.url}/journeys/trial-to-paid/report/")
    assert page.get_by_role("heading", name="Version comparison").is_visible()
    assert page.get_by_role(
        "img", name="Conversion rate per version with 95% intervals"
    ).is_visible()
    verdict = page.locator(".verdict").first.inner_text()
    assert verdict.startswith("v2 converts better than v1") or "No clear difference" in verdict
    for panel in ("paths", "messages", "goals", "time_to_convert"):
        page.wait_for_selector(f"#panel-{panel} table")
    assert page.get_by_role("link", name="welcome → wait-2d → ab → check").first.is_visible()
    assert all(url.startswith(live_server.url) for url in requests), requests
    if os.environ.get("SAVE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)

    page.get_by_label("v1", exact=True).uncheck()
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**versions=2**")
    assert "v2 (baseline)" in page.locator("#report table").first.inner_text()
    assert page.get_by_role("heading", name="Version comparison").is_visible()


def test_a_filter_out_of_range_shows_its_error_in_place(logged_in_page, live_server):
    page = logged_in_page
    trial_history()
    page.goto(f"{live_server.url}/journeys/trial-to-paid/report/")
    page.get_by_label("Enrolled until").fill("9999-12-31")
    with page.expect_response("**/report/?**") as answer:
        page.get_by_role("button", name="Apply").click()
    assert answer.value.status == 400
    page.get_by_text("Give a date from year 1 to 9998").first.wait_for()
    assert not page.locator("#request-problem").is_visible()


@pytest.mark.parametrize("width", [1280, 800])
def test_wide_tables_fit_or_scroll_inside_their_card(logged_in_page, live_server, width):
    # Issue 14 bug 4: the messages table looked cut off on the right of its half-width card.
    page = logged_in_page
    trial_history(days=14, per_day=20)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/journeys/trial-to-paid/report/")
    page.wait_for_selector("#panel-messages table")
    overflow = page.evaluate(
        """() => [...document.querySelectorAll('.report-table')].map(wrap => {
            const card = wrap.closest('.card').getBoundingClientRect();
            return wrap.getBoundingClientRect().right - card.right;
        }).filter(d => d > 1)"""
    )
    assert overflow == []
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    wrap = page.locator("#panel-messages .report-table")
    clipped = wrap.evaluate("w => w.scrollWidth > w.clientWidth + 1")
    assert clipped == (width < 1200)  # whole at desktop width, scrolls on a narrow one
    sticky = page.locator("#panel-messages tbody th").first.evaluate(
        "th => getComputedStyle(th).position"
    )
    assert sticky == "sticky"  # the step's name stays in view while scrolling
