"""Quiet hours in the editor's journey settings form and its read-only summary; a contact's
zone on the contact page."""

import pytest

from journeys.actions.versions import create_journey
from journeys.forms import SettingsForm
from journeys.models import Journey
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import definition
from journeys.tests.test_views import draft_definition, htmx

pytestmark = pytest.mark.django_db

MAIL = [{"key": "mail", "type": "send_email", "subject": "Hi", "body": "Hello", "next": None}]
SETTINGS = {"name": "Night", "reentry": "once", "holdout_percent": "0"}


@pytest.fixture
def journey(db):
    journey, _, _ = create_journey(definition=definition(MAIL, key="night", name="Night"))
    return journey


def test_quiet_hours_are_set_and_cleared_in_the_settings_form(client, editor, journey):
    client.force_login(editor)

    response = htmx(
        client,
        "post",
        "/journeys/night/settings/",
        {**SETTINGS, "quiet_start": "21:00", "quiet_end": "08:00"},
        target="left-panel",
    )

    assert response.status_code == 200
    assert draft_definition(journey)["settings"]["quiet_hours"] == {
        "start": "21:00",
        "end": "08:00",
    }
    page = client.get("/journeys/night/").content.decode()
    assert 'value="21:00"' in page and 'value="08:00"' in page

    htmx(client, "post", "/journeys/night/settings/", SETTINGS, target="left-panel")
    assert "quiet_hours" not in draft_definition(Journey.objects.get(key="night"))["settings"]


@pytest.mark.parametrize(
    ("times", "field", "message"),
    [
        ({"quiet_start": "21:00"}, "quiet_end", "Give both times, or neither."),
        ({"quiet_end": "08:00"}, "quiet_start", "Give both times, or neither."),
        (
            {"quiet_start": "21:00", "quiet_end": "21:00"},
            "quiet_end",
            "Must differ from the start.",
        ),
        ({"quiet_start": "9pm", "quiet_end": "08:00"}, "quiet_start", "Use a 24-hour time HH:MM"),
    ],
)
def test_bad_quiet_hours_are_inline_errors(client, editor, journey, times, field, message):
    form = SettingsForm({**SETTINGS, **times})
    assert not form.is_valid()
    assert message in " ".join(form.errors[field])

    client.force_login(editor)
    response = htmx(
        client, "post", "/journeys/night/settings/", {**SETTINGS, **times}, target="left-panel"
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert "quiet_hours" not in draft_definition(journey)["settings"]


def test_the_settings_summary_shows_the_quiet_hours(client, viewer):
    create_journey(
        definition=definition(
            MAIL,
            key="night",
            settings={
                "reentry": "once",
                "holdout_percent": 0,
                "quiet_hours": {"start": "21:00", "end": "08:00"},
            },
        )
    )
    client.force_login(viewer)

    page = client.get("/journeys/night/").content.decode()

    assert "21:00 to 08:00, contact's time zone" in page


def test_the_contact_page_shows_the_zone_or_the_default(client, viewer, settings):
    settings.DEFAULT_TIMEZONE = "America/New_York"
    ContactFactory(external_id="ann", timezone="Europe/Paris")
    ContactFactory(external_id="bob")
    client.force_login(viewer)

    assert "Europe/Paris" in client.get("/contacts/ann/").content.decode()
    page = client.get("/contacts/bob/").content.decode()
    assert "America/New_York" in page and "(default)" in page
