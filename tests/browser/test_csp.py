"""The pages keep working under the content security policy: Chromium reports no violation
while a user logs in, opens the editor and its HTMX panel, and filters the report (whose SVG
charts are swapped in by HTMX)."""

import pytest
from playwright.sync_api import expect

from reporting.tests.factories import trial_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _watch_violations(page) -> list[str]:
    violations = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return violations


def test_pages_work_under_the_policy_without_a_violation(page, live_server, publisher):
    trial_history()
    violations = _watch_violations(page)

    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(publisher.username)
    page.get_by_label("Password").fill("pass-word-123")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/journeys/")
    policy = page.request.get(f"{live_server.url}/journeys/").headers["content-security-policy"]
    assert (
        "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src-attr")[0]
    )

    page.goto(f"{live_server.url}/journeys/trial-to-paid/")
    page.evaluate("window.__sameDocument = true")
    page.get_by_role("link", name="Goals & conversions").click()
    expect(page.get_by_role("button", name="Add conversion")).to_be_visible()
    # The panel came by HTMX: still the same document, so htmx ran under the policy.
    assert page.evaluate("window.__sameDocument") is True

    page.goto(f"{live_server.url}/journeys/trial-to-paid/report/")
    chart = page.get_by_role("img", name="Conversion rate per version with 95% intervals")
    expect(chart).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    page.get_by_label("v1", exact=True).uncheck()
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**versions=2**")
    expect(
        page.get_by_role("img", name="Conversion rate per version with 95% intervals")
    ).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    # pygal's own stylesheet applied: its background rect is transparent, not default black.
    fill = page.evaluate(
        "getComputedStyle(document.querySelector('figure.chart svg rect.background')).fill"
    )
    assert fill not in ("rgb(0, 0, 0)", "#000000"), fill

    assert violations == []


def test_api_docs_load_from_this_site_under_the_policy(page, live_server):
    violations = _watch_violations(page)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{live_server.url}/api/v1/docs")
    expect(page.get_by_text("POST/api/v1/events", exact=False).first).to_be_visible()
    assert all(url.startswith(live_server.url) for url in requests), requests
    assert violations == []
