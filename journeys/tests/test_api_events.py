"""Contacts, events and enrollments through the HTTP API (docs/contract.md §2)."""

import datetime

import pytest
from django.utils import timezone

from journeys.actions.sweep import run_due
from journeys.models import Contact, Enrollment, Event
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db

STEPS = [
    {"key": "tag", "type": "update_contact", "attributes": {"stage": "in"}, "next": "buy"},
    {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
]
PAID = {"key": "paid", "name": "Paid", "value": 20.0}


def event(event_id, contact="ann", name="signed_up", **extra):
    return {"id": event_id, "contact": contact, "name": name, **extra}


def test_put_contact_creates_then_merges_attributes(api):
    response = api.put(
        "/api/v1/contacts/ann",
        {"email": "ann@example.com", "attributes": {"plan": "pro", "age": 30}},
    )
    assert response.status_code == 201
    assert response.json()["attributes"] == {"plan": "pro", "age": 30}

    response = api.put("/api/v1/contacts/ann", {"attributes": {"plan": "team", "age": None}})
    assert response.status_code == 200
    body = response.json()
    assert body["email"] == "ann@example.com"
    assert body["attributes"] == {"plan": "team"}
    assert Contact.objects.get(external_id="ann").attributes == {"plan": "team"}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"email": "not-an-email"}, ["email"]),
        ({"attributes": []}, ["attributes"]),
        ({"nickname": "x"}, ["nickname"]),
    ],
)
def test_put_contact_refuses_bad_fields(api, body, loc):
    response = api.put("/api/v1/contacts/ann", body)
    assert response.status_code == 400
    assert [error["loc"] for error in response.json()["errors"]] == [loc]
    assert not Contact.objects.exists()


def test_get_contact_shows_enrollments_with_path_and_conversions(api):
    journey, version = live_journey(STEPS, conversions=[PAID])
    api.post("/api/v1/events", {"events": [event("e1")]})
    run_due()
    response = api.get("/api/v1/contacts/ann")
    assert response.status_code == 200
    body = response.json()
    (enrollment,) = body["enrollments"]
    assert enrollment["journey"] == journey.key
    assert enrollment["version"] == version.number
    assert enrollment["state"] == "completed"
    assert enrollment["held_out"] is False
    assert enrollment["path"] == ["tag", "buy"]
    assert enrollment["started_at"] and enrollment["ended_at"]
    (conversion,) = body["conversions"]
    assert {
        key: conversion[key]
        for key in ("journey", "version", "conversion", "value", "source", "step")
    } == {
        "journey": journey.key,
        "version": version.number,
        "conversion": "paid",
        "value": 20.0,
        "source": "convert_step",
        "step": "buy",
    }
    assert body["attributes"] == {"stage": "in"}


def test_get_unknown_contact_is_a_404(api):
    response = api.get("/api/v1/contacts/nobody")
    assert response.status_code == 404
    assert response.json()["errors"][0]["loc"] == ["external_id"]


def test_post_events_accepts_and_counts_replays(api):
    response = api.post(
        "/api/v1/events", {"events": [event("e1"), event("e2", "bob", "x", properties={"a": 1})]}
    )
    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "duplicates": 0}
    response = api.post("/api/v1/events", {"events": [event("e1"), event("e3")]})
    assert response.json() == {"accepted": 1, "duplicates": 1}
    assert Event.objects.count() == 3
    assert set(Contact.objects.values_list("external_id", flat=True)) == {"ann", "bob"}
    assert Event.objects.get(event_id="e2").properties == {"a": 1}


def test_event_timestamp_is_kept_and_defaults_to_now(api):
    then = "2026-01-05T10:00:00+01:00"
    api.post("/api/v1/events", {"events": [event("e1", timestamp=then), event("e2")]})
    assert Event.objects.get(event_id="e1").timestamp == datetime.datetime(
        2026, 1, 5, 9, 0, tzinfo=datetime.UTC
    )
    assert timezone.now() - Event.objects.get(event_id="e2").timestamp < datetime.timedelta(
        minutes=1
    )


def test_a_batch_with_bad_events_is_refused_whole_with_each_index(api):
    future = (timezone.now() + datetime.timedelta(days=2)).isoformat()
    response = api.post(
        "/api/v1/events",
        {
            "events": [
                event("ok-1"),
                event("x" * 101),
                event("ok-2"),
                event("e4", timestamp=future),
                {"id": "e5", "name": "x"},
                event("e6", properties="nope"),
            ]
        },
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    locs = [error["loc"] for error in errors]
    assert ["events", 1, "id"] in locs
    assert ["events", 3, "timestamp"] in locs
    assert ["events", 4, "contact"] in locs
    assert ["events", 5, "properties"] in locs
    assert all(loc[1] not in (0, 2) for loc in locs)
    assert "more than a day in the future" in next(e["message"] for e in errors if e["loc"][1] == 3)
    assert not Event.objects.exists()


def test_a_timestamp_less_than_a_day_ahead_is_accepted(api):
    soon = (timezone.now() + datetime.timedelta(hours=23)).isoformat()
    assert api.post("/api/v1/events", {"events": [event("e1", timestamp=soon)]}).status_code == 202


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_size_limits(api, count):
    response = api.post("/api/v1/events", {"events": [event(f"e{i}") for i in range(count)]})
    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["events"]


def test_a_thousand_events_are_accepted(api):
    response = api.post(
        "/api/v1/events", {"events": [event(f"e{i}", f"c{i % 10}") for i in range(1000)]}
    )
    assert response.json() == {"accepted": 1000, "duplicates": 0}


def test_a_body_over_512_kb_is_a_413(api):
    big = "x" * 1000
    response = api.post(
        "/api/v1/events", {"events": [event(f"e{i}", properties={"blob": big}) for i in range(600)]}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["loc"] == ["body"]


def test_malformed_json_is_a_400(api):
    response = api.post("/api/v1/events", "{not json")
    assert response.status_code == 400


def test_events_need_an_ingest_or_all_key(make_api_client):
    manage = make_api_client("manage")
    assert manage.post("/api/v1/events", {"events": [event("e1")]}).status_code == 403
    ingest = make_api_client("ingest")
    assert ingest.post("/api/v1/events", {"events": [event("e1")]}).status_code == 202
    assert ingest.put("/api/v1/contacts/ann", {}).status_code == 200


def test_post_enrollment_201_then_409_under_once(api):
    journey, version = live_journey(STEPS, conversions=[PAID])
    api.put("/api/v1/contacts/ann", {"email": "ann@example.com"})
    response = api.post(f"/api/v1/journeys/{journey.key}/enrollments", {"contact": "ann"})
    assert response.status_code == 201
    body = response.json()
    assert (body["contact"], body["journey"], body["version"], body["state"]) == (
        "ann",
        journey.key,
        version.number,
        "active",
    )
    again = api.post(f"/api/v1/journeys/{journey.key}/enrollments", {"contact": "ann"})
    assert again.status_code == 409
    assert again.json()["errors"][0]["loc"] == ["contact"]
    assert "already been enrolled once" in again.json()["errors"][0]["message"]
    assert Enrollment.objects.count() == 1


def test_post_enrollment_unknown_journey_contact_or_nothing_live(api):
    assert api.post("/api/v1/journeys/nope/enrollments", {"contact": "ann"}).status_code == 404
    journey, _ = live_journey(STEPS, conversions=[PAID])
    response = api.post(f"/api/v1/journeys/{journey.key}/enrollments", {"contact": "ghost"})
    assert response.status_code == 404 and response.json()["errors"][0]["loc"] == ["contact"]
    journey.versions.update(state="retired")
    api.put("/api/v1/contacts/ann", {})
    response = api.post(f"/api/v1/journeys/{journey.key}/enrollments", {"contact": "ann"})
    assert response.status_code == 409
    assert "no live version" in response.json()["errors"][0]["message"]


def test_enrollments_need_a_manage_key(make_api_client):
    journey, _ = live_journey(STEPS, conversions=[PAID])
    ingest = make_api_client("ingest")
    ingest.put("/api/v1/contacts/ann", {})
    assert (
        ingest.post(f"/api/v1/journeys/{journey.key}/enrollments", {"contact": "ann"}).status_code
        == 403
    )


@pytest.mark.parametrize(
    "timestamp", ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z"]
)
def test_an_unset_timestamp_is_refused_naming_the_event(api, timestamp):
    # Go's zero time reached the worker and stopped every event batch (issue 12).
    response = api.post(
        "/api/v1/events", {"events": [event("ok"), event("zero", timestamp=timestamp)]}
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["loc"] == ["events", 1, "timestamp"]
    assert "before 2000-01-01" in error["message"]
    assert not Event.objects.exists()


def test_the_timestamp_floor_itself_is_accepted(api):
    response = api.post("/api/v1/events", {"events": [event("e1", timestamp="2000-01-01T00:00Z")]})
    assert response.status_code == 202


HUGE = 10**400


@pytest.mark.parametrize(
    ("properties", "loc"),
    [
        ({"amount": HUGE}, ["events", 1, "properties", "amount"]),
        ({"amount": -HUGE}, ["events", 1, "properties", "amount"]),
        ({"cart": {"items": [{"price": 1}, {"price": HUGE}]}},
         ["events", 1, "properties", "cart", "items", 1, "price"]),
        ({"n": 2 * 10**308}, ["events", 1, "properties", "n"]),
    ],
)  # fmt: skip
def test_numbers_beyond_a_double_are_refused_naming_their_path(api, properties, loc):
    response = api.post(
        "/api/v1/events", {"events": [event("ok"), event("big", properties=properties)]}
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["loc"] == loc
    assert "too large" in error["message"]
    assert not Event.objects.exists()


def test_a_float_literal_that_overflows_is_refused_naming_its_path(api):
    raw = b'{"events": [{"id": "e1", "contact": "c", "name": "x", "properties": {"v": 1e309}}]}'
    response = api.post("/api/v1/events", raw)
    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["events", 0, "properties", "v"]


def test_a_number_of_five_thousand_digits_is_refused_not_misread_as_bad_json(api):
    raw = b'{"attributes": {"score": ' + b"9" * 5000 + b"}}"
    response = api.put("/api/v1/contacts/ann", raw)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["loc"] == ["attributes", "score"]
    assert "5000 characters" in error["message"]


def test_contact_attributes_beyond_a_double_are_refused_naming_their_path(api):
    response = api.put("/api/v1/contacts/ann", {"attributes": {"score": HUGE}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["attributes", "score"]
    assert not Contact.objects.exists()


def test_numbers_up_to_a_double_are_kept(api):
    properties = {"big": 10**308, "float": 1.7e308, "id": 2**64, "neg": -(10**300)}
    response = api.post("/api/v1/events", {"events": [event("e1", properties=properties)]})
    assert response.status_code == 202
    stored = Event.objects.get().properties
    # PostgreSQL's jsonb writes 1.7e308 out in full digits, which reads back as an int.
    assert float(stored.pop("float")) == 1.7e308
    assert stored == {"big": 10**308, "id": 2**64, "neg": -(10**300)}
