"""docs/contract.md §6.1, quiet hours and caps: a contact's `timezone` over the API, a
journey's `settings.quiet_hours` checked at save, a marketing email due at night held in the
contact's zone until the window ends (across Paris's spring-forward night, time moved with
time-machine), and MESSAGE_FREQUENCY_CAP skipping the rest with reason `frequency_cap`."""

import datetime

import pytest
from django.core import mail

from tests.contract.public_surface import (
    assert_error_shape,
    contact,
    definition,
    event,
    live,
    run_due,
    send,
)

pytestmark = pytest.mark.django_db

UTC = datetime.UTC
MAIL = {"key": "mail", "type": "send_email", "subject": "Hi", "body": "Hello", "next": None}
NIGHT = {"reentry": "once", "holdout_percent": 0, "quiet_hours": {"start": "21:00", "end": "08:00"}}


def test_a_contacts_timezone_is_written_and_read_back(api):
    response = api.put("/api/v1/contacts/ann", {"timezone": "Europe/Paris"})
    assert response.status_code == 201
    assert response.json()["timezone"] == "Europe/Paris"
    assert contact(api, "ann")["timezone"] == "Europe/Paris"
    # Left out, it stays; empty, the DEFAULT_TIMEZONE setting applies again (null).
    api.put("/api/v1/contacts/ann", {"attributes": {"plan": "pro"}})
    assert contact(api, "ann")["timezone"] == "Europe/Paris"
    api.put("/api/v1/contacts/ann", {"timezone": ""})
    assert contact(api, "ann")["timezone"] is None


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        ("Mars/Olympus", "Unknown time zone 'Mars/Olympus'"),
        ("CET+1", "Unknown time zone"),
        ("../../etc/passwd", "Unknown time zone"),
        (3, "string"),
        ("x" * 100, "at most 64"),
    ],
)
def test_an_unknown_timezone_is_refused_naming_the_field(api, zone, message):
    response = api.put("/api/v1/contacts/ann", {"timezone": zone})

    assert_error_shape(response, 400)
    (error,) = response.json()["errors"]
    assert error["loc"] == ["timezone"]
    assert message in error["message"]
    assert api.get("/api/v1/contacts/ann").status_code == 404


@pytest.mark.parametrize(
    ("quiet_hours", "loc"),
    [
        ({"start": "21:00", "end": "21:00"}, ["settings", "quiet_hours", "end"]),
        ({"start": "9pm", "end": "08:00"}, ["settings", "quiet_hours", "start"]),
        ({"start": "21:00", "end": "24:00"}, ["settings", "quiet_hours", "end"]),
        ({"start": "21:00"}, ["settings", "quiet_hours", "end"]),
        ("21:00-08:00", ["settings", "quiet_hours"]),
    ],
)
def test_bad_quiet_hours_are_refused_at_save(api, quiet_hours, loc):
    data = definition("night", [MAIL])
    data["settings"]["quiet_hours"] = quiet_hours

    response = api.post("/api/v1/journeys", data)

    assert_error_shape(response, 400)
    assert loc in [error["loc"] for error in response.json()["errors"]]


def test_a_marketing_email_due_at_night_is_held_until_08_00_in_the_contacts_zone(
    api, client, superuser, time_machine
):
    # 22:30 in Paris on 2026-03-28; the clocks spring forward before the morning.
    time_machine.move_to(datetime.datetime(2026, 3, 28, 21, 30, tzinfo=UTC), tick=False)
    live(api, definition("night", [MAIL], settings=NIGHT))
    api.put("/api/v1/contacts/ann", {"email": "ann@example.com", "timezone": "Europe/Paris"})
    send(api, event("ann", "signed_up"))

    run_due()
    assert mail.outbox == []
    client.force_login(superuser)
    page = client.get("/contacts/ann/").content.decode()
    assert "held until 08:00 Europe/Paris (quiet hours)" in page
    assert "Europe/Paris" in page

    time_machine.move_to(datetime.datetime(2026, 3, 29, 5, 59, tzinfo=UTC), tick=False)
    run_due()
    assert mail.outbox == []

    # 08:00 CEST.
    time_machine.move_to(datetime.datetime(2026, 3, 29, 6, 0, tzinfo=UTC), tick=False)
    run_due()
    assert [email.to for email in mail.outbox] == [["ann@example.com"]]


def test_the_fourth_marketing_email_in_a_day_is_skipped_for_the_frequency_cap(
    api, client, superuser, clock, settings
):
    settings.MESSAGE_FREQUENCY_CAP = "3/P1D"
    live(api, definition("one", [{**MAIL, "key": "a", "next": "b"}, {**MAIL, "key": "b"}]))
    live(api, definition("two", [{**MAIL, "key": "c", "next": "d"}, {**MAIL, "key": "d"}]))
    api.put("/api/v1/contacts/ann", {"email": "ann@example.com"})
    send(api, event("ann", "signed_up"))

    run_due()

    assert len(mail.outbox) == 3
    assert [e["state"] for e in contact(api, "ann")["enrollments"]] == ["completed", "completed"]
    client.force_login(superuser)
    page = client.get("/contacts/ann/").content.decode()
    assert page.count("skipped: frequency cap") == 1
