"""docs/contract.md §2, `POST /api/v1/events`: 202 with `accepted` and `duplicates`, the
event's id as its idempotency key, 1 to 1,000 events a batch, a batch with any invalid event
refused whole with each bad event's index, and `timestamp` defaulting to now and refused
more than a day ahead."""

import datetime

import pytest

from tests.contract.public_surface import (
    START,
    assert_error_shape,
    contact,
    definition,
    event,
    live,
    run_due,
    send,
)

pytestmark = pytest.mark.django_db


def test_events_answer_202_with_accepted_and_duplicates(api):
    first = api.post(
        "/api/v1/events", {"events": [event("ann", "a", id="e1"), event("bob", "a", id="e2")]}
    )
    assert first.status_code == 202
    assert first.json() == {"accepted": 2, "duplicates": 0}
    again = api.post(
        "/api/v1/events", {"events": [event("ann", "a", id="e1"), event("ann", "b", id="e3")]}
    )
    assert again.status_code == 202
    assert again.json() == {"accepted": 1, "duplicates": 1}
    # Unknown contacts were created.
    assert contact(api, "bob")["enrollments"] == []


def test_a_replayed_event_is_processed_only_once(api, clock):
    steps = [{"key": "buy", "type": "convert", "conversion": "paid", "next": None}]
    live(
        api,
        definition(
            "replay",
            steps,
            settings={"reentry": "concurrent", "holdout_percent": 0},
            conversions=[{"key": "paid", "name": "Paid", "value": 1}],
        ),
    )
    send(api, event("ann", "signed_up", id="same"))
    run_due()
    assert send(api, event("ann", "signed_up", id="same")) == {"accepted": 0, "duplicates": 1}
    run_due()
    body = contact(api, "ann")
    assert len(body["enrollments"]) == 1
    assert len(body["conversions"]) == 1


def test_a_batch_with_invalid_events_is_refused_whole_with_their_indexes(api):
    batch = [
        event("ann", "ok"),
        {"id": "x", "contact": "ann"},  # no name
        event("ann", "ok"),
        event("ann", "ok", timestamp="not a time"),
    ]
    errors = assert_error_shape(api.post("/api/v1/events", {"events": batch}), 400)
    indexes = {error["loc"][1] for error in errors if error["loc"][:1] == ["events"]}
    assert indexes == {1, 3}
    assert api.get("/api/v1/contacts/ann").status_code == 404


def test_timestamps_more_than_a_day_ahead_are_refused(api, clock):
    soon = (START + datetime.timedelta(hours=23)).isoformat()
    assert send(api, event("ann", "a", timestamp=soon)) == {"accepted": 1, "duplicates": 0}
    late = (START + datetime.timedelta(days=1, minutes=1)).isoformat()
    errors = assert_error_shape(
        api.post("/api/v1/events", {"events": [event("ann", "a", timestamp=late)]}), 400
    )
    assert errors[0]["loc"][:2] == ["events", 0]


@pytest.mark.parametrize("count", [0, 1001])
def test_a_batch_holds_1_to_1000_events(api, count):
    batch = [event(f"c{i}", "a") for i in range(count)]
    errors = assert_error_shape(api.post("/api/v1/events", {"events": batch}), 400)
    assert errors[0]["loc"][:1] == ["events"]


def test_a_batch_of_1000_events_is_accepted(api):
    assert send(api, *[event("ann", "a") for _ in range(1000)]) == {
        "accepted": 1000,
        "duplicates": 0,
    }


def test_event_timestamp_defaults_to_now_for_within_criteria(api, clock):
    # A goal checked "within P1D": an event without a timestamp counts as sent now.
    steps = [
        {"key": "pause", "type": "wait", "duration": "PT1H", "next": "check"},
        {
            "key": "check",
            "type": "evaluate_goal",
            "goal": "g",
            "achieved": "yes",
            "not_achieved": None,
        },
        {"key": "yes", "type": "update_contact", "attributes": {"hit": True}, "next": None},
    ]
    live(
        api,
        definition(
            "ts",
            steps,
            goals=[{"key": "g", "name": "G", "criteria": {"event": "ping", "within": "P1D"}}],
        ),
    )
    send(api, event("ann", "signed_up"))
    run_due()
    clock.shift(datetime.timedelta(minutes=10))
    send(api, event("ann", "ping"))
    run_due()
    clock.shift(datetime.timedelta(hours=1))
    run_due()
    assert contact(api, "ann")["enrollments"][0]["path"] == ["pause", "check", "yes"]


def test_the_same_event_id_twice_in_one_batch_counts_once(api, clock):
    live(
        api,
        definition(
            "twice",
            [{"key": "x", "type": "exit"}],
            settings={"reentry": "concurrent", "holdout_percent": 0},
        ),
    )
    body = send(api, event("ann", "signed_up", id="dup"), event("ann", "signed_up", id="dup"))
    assert body == {"accepted": 1, "duplicates": 1}
    run_due()
    assert len(contact(api, "ann")["enrollments"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"events": [{"id": "1", "contact": "a", "name": "x", "properties": []}]},
        {"events": [{"id": "1", "contact": "a", "name": "x", "surprise": 1}]},
        {"events": [{"id": "", "contact": "a", "name": "x"}]},
        {"events": [{"id": "1", "contact": "", "name": "x"}]},
        {"events": [{"id": "1", "contact": "a", "name": ""}]},
        {"events": [{"id": 1, "contact": "a", "name": "x"}]},
        {"events": "nope"},
        {},
    ],
)
def test_invalid_events_are_refused_with_a_location(api, body):
    errors = assert_error_shape(api.post("/api/v1/events", body), 400)
    assert all(error["loc"] for error in errors)
