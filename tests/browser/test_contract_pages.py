"""docs/contract.md §4 in Chromium: the page landmarks by the accessible names the contract
gives them, used the way a marketer would. The journey is made over the API, like an integration
would; everything else happens on the pages."""

import pytest
from playwright.sync_api import expect

from journeys.tests.contract_example import CONTRACT_EXAMPLE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, user):
    page.goto(f"{live_server.url}/journeys/")
    assert "/login" in page.url  # behind login
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill("pass-word-123")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/journeys/")


@pytest.fixture
def live_example(make_api_client):
    api = make_api_client("manage")
    assert api.post("/api/v1/journeys", CONTRACT_EXAMPLE).status_code == 201
    assert api.post("/api/v1/journeys/trial-nurture/versions/1/publish").status_code == 200


def open_panel(page, live_server):
    page.goto(f"{live_server.url}/journeys/trial-nurture/")
    page.evaluate("window.__noReload = true")
    opener = page.get_by_role("link", name="Goals & conversions").or_(
        page.get_by_role("tab", name="Goals & conversions")
    )
    opener.click()
    expect(page.get_by_role("button", name="Add conversion")).to_be_visible()
    # HTMX swapped the panel in: the page itself was not reloaded.
    assert page.evaluate("window.__noReload") is True


def test_goals_and_conversions_panel_lists_each_item_with_where_it_is_used(
    page, live_server, editor, live_example
):
    log_in(page, live_server, editor)
    page.get_by_role("link", name="Trial nurture").click()
    open_panel(page, live_server)
    for name in ("Started paid plan", "Activated account", "Activated"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    # Where each is used: the convert step and exit rule, the goal's step, the goal's award.
    expect(page.get_by_text("Convert step 'convert'")).to_be_visible()
    expect(page.get_by_text("Evaluate goal step 'check'")).to_be_visible()
    expect(page.get_by_text("Goal “Activated” awards it")).to_be_visible()
    expect(page.get_by_role("button", name="Add goal")).to_be_visible()


def test_a_swapped_in_form_is_focused_and_live_when_it_appears(
    page, live_server, editor, live_example
):
    # Typing into a form that has just appeared must land where it is typed. With htmx's
    # default 20 ms settle delay, the form's autofocus (and the wiring of its hx- attributes)
    # came after the swap, so text typed at once into "Value" moved to "Name" on its way.
    # Read in a microtask after the swap: the form must already be settled by then.
    log_in(page, live_server, editor)
    open_panel(page, live_server)
    page.evaluate(
        """document.body.addEventListener("htmx:afterSwap", () => queueMicrotask(() => {
            window.__focusedAfterSwap = document.activeElement && document.activeElement.name;
        }))"""
    )
    page.get_by_role("button", name="Add conversion").click()
    expect(page.get_by_label("Name")).to_be_focused()
    assert page.evaluate("window.__focusedAfterSwap") == "name"


def test_add_conversion_form_errors_inline_and_saves(page, live_server, editor, live_example):
    log_in(page, live_server, editor)
    open_panel(page, live_server)
    page.get_by_role("button", name="Add conversion").click()
    expect(page.get_by_label("Name")).to_be_visible()
    expect(page.get_by_label("Value")).to_be_visible()
    expect(page.get_by_label("Counting")).to_be_visible()
    expect(page.get_by_label("Window")).to_be_visible()

    # A name that duplicates an existing one, ignoring case and punctuation: refused inline,
    # next to the field, naming the existing conversion.
    page.get_by_label("Name").fill("started-paid plan ")
    page.get_by_label("Value").fill("20")
    page.get_by_role("button", name="Save").click()
    name = page.get_by_label("Name")
    expect(name).to_have_value("started-paid plan ")
    field = name.locator("xpath=ancestor::*[contains(@class, 'field')][1]")
    expect(field).to_contain_text("Started paid plan")
    assert page.evaluate("window.__noReload") is True

    name.fill("Upgraded seats")
    page.get_by_label("Counting").select_option("every_time")
    page.get_by_label("Window").fill("whenever")
    page.get_by_role("button", name="Save").click()
    window = page.get_by_label("Window").locator("xpath=ancestor::*[contains(@class, 'field')][1]")
    expect(window.locator(".field-error")).to_be_visible()
    expect(page.get_by_label("Name")).to_have_value("Upgraded seats")

    page.get_by_label("Window").fill("30 days")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Upgraded seats", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Save")).to_have_count(0)


def test_add_goal_form_refuses_a_duplicate_name_inline(page, live_server, editor, live_example):
    log_in(page, live_server, editor)
    open_panel(page, live_server)
    page.get_by_role("button", name="Add goal").click()
    expect(page.get_by_label("Name")).to_be_visible()
    page.get_by_label("Name").fill("ACTIVATED!")
    page.get_by_label("Event", exact=True).fill("project_created")
    page.get_by_role("button", name="Save").click()
    field = page.get_by_label("Name").locator("xpath=ancestor::*[contains(@class, 'field')][1]")
    expect(field).to_contain_text("Activated")
    expect(field.locator(".field-error")).to_be_visible()
    assert page.evaluate("window.__noReload") is True

    page.get_by_label("Name").fill("Created a project")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Created a project", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Save")).to_have_count(0)


def test_editing_a_conversion_of_a_live_journey_warns_to_review(
    page, live_server, editor, live_example
):
    log_in(page, live_server, editor)
    open_panel(page, live_server)
    page.get_by_role("button", name="Edit conversion Started paid plan").click()
    expect(page.get_by_text("reports and automation logic should be reviewed")).to_be_visible()
