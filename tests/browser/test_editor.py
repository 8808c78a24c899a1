"""The journey editor in Chromium, used the way a marketer uses it: log in through the login
page, click, type, save; nothing is set up behind the page's back except the users."""

import json
import urllib.request

import pytest
from playwright.sync_api import expect

from conversions.tests.factories import ConversionFactory
from journeys.actions.api_keys import create_api_key
from journeys.actions.versions import create_journey

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIMPLE = {
    "key": "onboarding",
    "name": "Onboarding",
    "triggers": [{"type": "event", "event": "signed_up"}],
    "steps": [{"key": "welcome", "type": "send_email", "subject": "Hi", "body": "Welcome"}],
}


def log_in(page, live_server, user):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill("pass-word-123")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/journeys/")


def add_step(page, where: str, kind: str):
    page.get_by_label(f"Add a step {where}", exact=True).click()
    page.locator("details.add-step[open]").get_by_role("button", name=kind, exact=True).click()
    expect(page.locator("#step-panel")).to_be_visible()


def update_step(page):
    page.locator("#step-panel").get_by_role("button", name="Update step").click()
    expect(page.get_by_text("Step saved to the draft.")).to_be_visible()


def test_build_and_publish_a_journey_end_to_end(page, live_server, publisher):
    log_in(page, live_server, publisher)
    page.get_by_role("link", name="New journey").click()
    page.get_by_label("Name").fill("Trial to paid")
    page.get_by_label("Key").fill("trial-to-paid")
    page.get_by_role("button", name="Create journey").click()
    page.wait_for_url(f"{live_server.url}/journeys/trial-to-paid/")
    expect(page.get_by_text("A journey needs at least one step")).to_be_visible()

    # An event trigger.
    page.get_by_text("Add trigger…").click()
    trigger = page.locator("form[action$='/triggers/']")
    trigger.get_by_label("When").select_option("goal")
    expect(trigger.get_by_label("Event", exact=True)).to_be_hidden()
    expect(trigger.get_by_label("Goal", exact=True)).to_be_visible()
    trigger.get_by_label("When").select_option("event")
    expect(trigger.get_by_label("Goal", exact=True)).to_be_hidden()
    trigger.get_by_label("Event", exact=True).fill("trial_started")
    trigger.get_by_role("button", name="Add trigger").click()
    expect(page.get_by_text("Event trial_started")).to_be_visible()

    # A message, then a wait after it.
    add_step(page, "at the start", "Send email")
    panel = page.locator("#step-panel")
    panel.get_by_label("Subject").fill("Welcome {{ contact.email }}")
    panel.get_by_label("Text body").fill("Glad you are trying us.")
    update_step(page)
    add_step(page, "after send-email-1", "Wait")
    page.locator("#step-panel").get_by_label("Duration").fill("2 days")
    update_step(page)

    # A conversion, made in the Goals & conversions panel.
    page.get_by_role("link", name="Goals & conversions").click()
    page.get_by_role("button", name="Add conversion").click()
    page.get_by_label("Name").fill("Started paid plan")
    page.get_by_label("Value").fill("49")
    page.get_by_label("Counting").select_option("once_per_enrollment")
    page.get_by_label("Window").fill("30 days")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Conversion “Started paid plan” added.")).to_be_visible()

    # A Convert step that uses it, picked from the list.
    add_step(page, "after wait-1", "Convert")
    page.locator("#step-panel").get_by_label("Conversion", exact=True).select_option(
        label="Started paid plan"
    )
    update_step(page)
    expect(page.locator(".errors-box")).to_have_count(0)

    page.get_by_role("button", name="Publish", exact=True).click()
    review = page.locator("dialog#publish-review")
    expect(review).to_contain_text("This is the journey's first version")
    review.get_by_role("button", name="Publish version 1").click()
    expect(page.get_by_text("Version 1 is live.")).to_be_visible()
    # The title and the version history follow without a reload.
    expect(page.locator("h1 #journey-status")).to_have_text("Live")
    expect(page.locator("#left-panel .history")).to_contain_text("Published")

    _, raw_key = create_api_key(name="browser-test")
    request = urllib.request.Request(
        f"{live_server.url}/api/v1/journeys/trial-to-paid/definition",
        headers={"Authorization": f"Bearer {raw_key}"},
    )
    with urllib.request.urlopen(request) as response:
        definition = json.load(response)
    assert definition == {
        "key": "trial-to-paid",
        "name": "Trial to paid",
        "settings": {"reentry": "once", "holdout_percent": 0},
        "triggers": [{"type": "event", "event": "trial_started"}],
        "exit_when": [],
        "goals": [],
        "conversions": [
            {
                "key": "started-paid-plan",
                "name": "Started paid plan",
                "value": 49.0,
                "counting": "once_per_enrollment",
                "window": "P30D",
            }
        ],
        "steps": [
            {
                "key": "send-email-1",
                "type": "send_email",
                "subject": "Welcome {{ contact.email }}",
                "body": "Glad you are trying us.",
                "next": "wait-1",
            },
            {"key": "wait-1", "type": "wait", "duration": "P2D", "next": "convert-1"},
            {
                "key": "convert-1",
                "type": "convert",
                "conversion": "started-paid-plan",
                "next": None,
            },
        ],
    }


def test_goals_and_conversions_panel_opens_and_saves_without_a_reload(page, live_server, editor):
    create_journey(definition=SIMPLE)
    problems = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("response", lambda r: r.status >= 400 and problems.append(r.url))
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/journeys/onboarding/")
    page.evaluate("window.__marker = 1")

    page.get_by_role("link", name="Goals & conversions").click()
    expect(page.get_by_role("heading", name="Conversions")).to_be_visible()
    page.get_by_role("button", name="Add goal").click()
    page.get_by_label("Name").fill("Activated")
    page.get_by_label("Event", exact=True).fill("project_created")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Goal “Activated” added.")).to_be_visible()

    page.get_by_role("button", name="Add conversion").click()
    page.get_by_label("Name").fill("Booked meeting")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Conversion “Booked meeting” added.")).to_be_visible()
    expect(page.get_by_role("heading", name="Booked meeting")).to_have_count(0)
    expect(page.locator("#conversion-booked-meeting")).to_have_text("Booked meeting")

    assert page.evaluate("window.__marker") == 1
    assert problems == []  # no script errors, no content-security-policy violations


def test_duplicate_conversion_name_shows_the_inline_error_naming_the_existing_one(
    page, live_server, editor
):
    journey, _, _ = create_journey(definition=SIMPLE)
    ConversionFactory(journey=journey, key="booked-meeting", name="Booked meeting")
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/journeys/onboarding/")
    page.get_by_role("link", name="Goals & conversions").click()
    page.get_by_role("button", name="Add conversion").click()
    page.get_by_label("Name").fill("booked-meeting ")
    page.get_by_role("button", name="Save").click()

    name_field = page.locator(".field", has=page.get_by_label("Name"))
    error = name_field.locator(".field-error")
    expect(error).to_contain_text('the existing conversion "Booked meeting"')
    assert journey.conversions.count() == 1


def test_a_viewer_sees_no_edit_controls(page, live_server, viewer):
    create_journey(definition=SIMPLE)
    log_in(page, live_server, viewer)
    expect(page.get_by_role("link", name="New journey")).to_have_count(0)
    page.get_by_role("link", name="Onboarding").click()
    expect(page.get_by_role("heading", name="Onboarding")).to_be_visible()
    page.get_by_role("link", name="welcome").click()
    expect(page.locator("#step-panel")).to_be_visible()
    page.get_by_role("link", name="Goals & conversions").click()
    expect(page.get_by_role("heading", name="Conversions")).to_be_visible()

    expect(page.locator("main form[method=post]")).to_have_count(0)
    for name in ("Publish", "Update step", "Delete step", "Add conversion", "Add goal", "Remove"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.locator("details.add-step")).to_have_count(0)
    expect(page.locator("main input:not([type=hidden]), main textarea, main select")).to_have_count(
        0
    )


def test_convert_step_new_conversion_inline_cannot_duplicate_a_name(page, live_server, editor):
    journey, _, _ = create_journey(definition=SIMPLE)
    ConversionFactory(journey=journey, key="booked-meeting", name="Booked meeting")
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/journeys/onboarding/")
    add_step(page, "after welcome", "Convert")
    panel = page.locator("#step-panel")
    new_name = panel.get_by_label("New conversion called")
    expect(new_name).to_be_hidden()
    panel.get_by_label("Conversion", exact=True).select_option(label="New conversion…")
    new_name.fill("Booked  Meeting!")
    panel.get_by_role("button", name="Update step").click()
    expect(panel.locator(".field-error")).to_contain_text('"Booked meeting"')
    assert journey.conversions.count() == 1

    page.locator("#step-panel").get_by_label("New conversion called").fill("Signed contract")
    update_step(page)
    expect(page.locator(".step-card", has_text="Award: Signed contract")).to_be_visible()
    assert journey.conversions.count() == 2


TWO_STEPS = {
    **SIMPLE,
    "steps": [
        {
            "key": "welcome",
            "type": "send_email",
            "subject": "Hi",
            "body": "Welcome",
            "next": "nudge",
        },
        {"key": "nudge", "type": "send_email", "subject": "Still there?", "body": "Hello"},
    ],
}


def test_an_unsaved_step_edit_is_not_lost_without_asking(page, live_server, editor):
    create_journey(definition=TWO_STEPS)
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/journeys/onboarding/")
    page.get_by_role("link", name="welcome").click()
    panel = page.locator("#step-panel")
    panel.get_by_label("Subject").fill("Hi there")

    # Another step: the browser asks, and "Cancel" keeps the edit in place.
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.get_by_role("link", name="nudge").click()
    expect(panel.get_by_label("Subject")).to_have_value("Hi there")
    assert questions == ["This step has changes that are not saved. Leave them?"]

    # Escape closes the panel the same way; accepting leaves the edit.
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("Escape")
    expect(page.locator("#step-panel")).to_have_count(0)

    # Saved, or untouched: no question.
    page.get_by_role("link", name="welcome").click()
    page.locator("#step-panel").get_by_label("Subject").fill("Hi again")
    update_step(page)
    page.on("dialog", lambda dialog: pytest.fail(f"asked: {dialog.message}"))
    page.get_by_role("link", name="nudge").click()
    expect(page.locator("#step-panel").get_by_label("Subject")).to_have_value("Still there?")
    page.keyboard.press("Escape")
    expect(page.locator("#step-panel")).to_have_count(0)


def test_an_any_condition_is_built_from_rows(page, live_server, editor):
    steps = [
        {
            "key": "is-pro",
            "type": "condition",
            "if": {"attribute": "plan", "op": "eq", "value": "free"},
            "then": "welcome",
            "else": None,
        },
        {"key": "welcome", "type": "send_email", "subject": "Hi", "body": "Welcome"},
    ]
    create_journey(definition={**SIMPLE, "steps": steps})
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/journeys/onboarding/")
    page.get_by_role("link", name="is-pro").click()
    panel = page.locator("#step-panel")
    panel.get_by_label("Match").select_option("any")
    panel.get_by_label("Compared with").fill("pro")
    panel.get_by_role("button", name="Add condition").click()

    second = panel.locator("fieldset.criteria-row").nth(1)
    expect(second.get_by_label("Event", exact=True)).to_be_hidden()
    second.get_by_label("Check").select_option("event")
    # Each row shows the fields of its own choice; the first row keeps its attribute.
    expect(second.get_by_label("Attribute")).to_be_hidden()
    expect(panel.locator("fieldset.criteria-row").first.get_by_label("Attribute")).to_be_visible()
    second.get_by_label("Event", exact=True).fill("demo_booked")
    second.get_by_label("Within").fill("7 days")
    update_step(page)
    expect(page.locator(".step-card", has_text="did demo_booked within 1 week")).to_be_visible()

    _, raw_key = create_api_key(name="browser-test")
    request = urllib.request.Request(
        f"{live_server.url}/api/v1/journeys/onboarding/definition",
        headers={"Authorization": f"Bearer {raw_key}"},
    )
    with urllib.request.urlopen(request) as response:
        definition = json.load(response)
    assert definition["steps"][0]["if"] == {
        "any": [
            {"attribute": "plan", "op": "eq", "value": "pro"},
            {"event": "demo_booked", "within": "P7D"},
        ]
    }
