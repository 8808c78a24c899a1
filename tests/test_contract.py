"""The acceptance suite: docs/contract.md checked from the outside, the way an integration or
a marketer uses the product. Everything goes through HTTP (`/api/v1/`, the pages) or the
management commands; time moves with time-machine and work is done by `run_due`, the same
entry point an operator uses."""

import copy
import datetime
import io
import json
import math
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from journeys.tests.contract_example import CONTRACT_EXAMPLE

pytestmark = pytest.mark.django_db

START = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
ERROR_KEYS = {"loc", "message"}


# --- helpers: only the public surface ---------------------------------------------------------


def run_due():
    call_command("run_due", stdout=io.StringIO())


def definition(key, steps, **parts):
    data = {
        "key": key,
        "name": parts.pop("name", key.replace("-", " ").title()),
        "settings": {"reentry": "once", "holdout_percent": 0},
        "triggers": [{"type": "event", "event": "signed_up"}],
        "exit_when": [],
        "goals": [],
        "conversions": [],
        "steps": copy.deepcopy(steps),
    }
    data.update(copy.deepcopy(parts))
    return data


def create(api, data):
    response = api.post("/api/v1/journeys", data)
    assert response.status_code == 201, response.content
    return response.json()


def publish(api, key, number, **body):
    response = api.post(f"/api/v1/journeys/{key}/versions/{number}/publish", body or None)
    assert response.status_code == 200, response.content
    return response.json()


def live(api, data):
    create(api, data)
    publish(api, data["key"], 1)


def send(api, *events):
    response = api.post("/api/v1/events", {"events": list(events)})
    assert response.status_code == 202, response.content
    return response.json()


_ids = iter(range(1, 10**9))


def event(contact, name, **extra):
    return {"id": extra.pop("id", f"ev-{next(_ids)}"), "contact": contact, "name": name, **extra}


def contact(api, external_id):
    response = api.get(f"/api/v1/contacts/{external_id}")
    assert response.status_code == 200, response.content
    return response.json()


def assert_error_shape(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"errors"}
    assert body["errors"]
    for error in body["errors"]:
        assert set(error) == ERROR_KEYS
        assert isinstance(error["loc"], list)
        assert isinstance(error["message"], str) and error["message"]
    return body["errors"]


def locs(errors):
    return [error["loc"] for error in errors]


def wilson(converted, n, z=1.959963984540054):
    p = converted / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return (centre - margin) / denominator, (centre + margin) / denominator


def pooled_z_p_value(c1, n1, c0, n0):
    pooled = (c1 + c0) / (n1 + n0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    z = (c1 / n1 - c0 / n0) / se
    return math.erfc(abs(z) / math.sqrt(2))


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


# --- §1 Journey definition --------------------------------------------------------------------


def test_contract_example_is_created_with_warnings_shaped_like_errors(api):
    body = create(api, CONTRACT_EXAMPLE)
    assert body["key"] == "trial-nurture"
    assert body["status"] == "draft"
    assert [(v["number"], v["state"]) for v in body["versions"]] == [(1, "draft")]
    warnings = body["warnings"]
    for warning in warnings:
        assert set(warning) == ERROR_KEYS
        assert isinstance(warning["loc"], list) and warning["message"]
    assert {tuple(w["loc"][:2]) for w in warnings} == {("triggers", 1), ("triggers", 2)}
    text = " ".join(w["message"] for w in warnings)
    assert "lead-nurture" in text and "onboarding" in text
    assert {g["key"] for g in body["goals"]} == {"activated"}
    assert {c["key"] for c in body["conversions"]} == {"paid", "activation"}


def test_definition_round_trips_through_versions_unchanged(api):
    create(api, CONTRACT_EXAMPLE)
    first = api.get("/api/v1/journeys/trial-nurture/definition?version=1")
    assert first.status_code == 200
    exported = first.json()
    # The definition as given comes back: every part of the example is there.
    for part in ("key", "name", "description", "settings", "triggers", "exit_when", "steps"):
        assert exported[part] == CONTRACT_EXAMPLE[part], part
    assert exported["goals"] == CONTRACT_EXAMPLE["goals"]
    by_key = {c["key"]: c for c in exported["conversions"]}
    assert by_key["paid"]["window"] == "P30D"
    assert by_key["paid"]["event"]["value_property"] == "amount"
    assert by_key["paid"]["value"] == 49.0

    response = api.post("/api/v1/journeys/trial-nurture/versions", exported)
    assert response.status_code == 201
    assert response.json()["state"] == "draft"
    again = api.get(
        f"/api/v1/journeys/trial-nurture/definition?version={response.json()['number']}"
    )
    assert again.json() == exported


def test_posting_a_version_replaces_the_unpublished_draft(api):
    create(api, CONTRACT_EXAMPLE)
    changed = copy.deepcopy(CONTRACT_EXAMPLE)
    changed["steps"][1]["duration"] = "P3D"
    response = api.post("/api/v1/journeys/trial-nurture/versions", changed)
    assert response.status_code == 201
    assert response.json()["number"] == 1
    journey = api.get("/api/v1/journeys/trial-nurture").json()
    assert [(v["number"], v["state"]) for v in journey["versions"]] == [(1, "draft")]
    steps = api.get("/api/v1/journeys/trial-nurture/definition").json()["steps"]
    assert steps[1]["duration"] == "P3D"


BROKEN_STEPS = [
    {"key": "start", "type": "send_email", "subject": "Hi", "body": "x", "next": "nowhere"},
    {"key": "island", "type": "update_contact", "attributes": {"a": 1}, "next": None},
    {"key": "loop-a", "type": "send_sms", "text": "a", "next": "loop-b"},
    {"key": "loop-b", "type": "evaluate_goal", "goal": "ghost-goal", "achieved": "loop-a"},
    {"key": "buy", "type": "convert", "conversion": "ghost-conversion", "next": None},
]


def test_every_refusal_of_a_definition_is_listed_at_once(api):
    data = definition(
        "broken",
        BROKEN_STEPS,
        triggers=[
            {"type": "event", "event": "signed_up"},
            {"type": "conversion", "conversion": "paid"},
            {"type": "goal", "goal": "activated"},
        ],
        conversions=[
            {"key": "booked", "name": "Booked meeting"},
            {"key": "booked-again", "name": "booked-meeting "},
        ],
    )
    errors = assert_error_shape(api.post("/api/v1/journeys", data), 400)
    found = locs(errors)
    # Missing step, goal and conversion references.
    assert ["steps", 0, "next"] in found
    assert any(
        loc[:2] == ["steps", 3] and "ghost-goal" in e["message"]
        for loc, e in zip(found, errors, strict=True)
    )
    assert any(
        loc[:2] == ["steps", 4] and "ghost-conversion" in e["message"]
        for loc, e in zip(found, errors, strict=True)
    )
    # A step nothing leads to.
    assert any(
        loc[:2] == ["steps", 1] and "island" in e["message"]
        for loc, e in zip(found, errors, strict=True)
    )
    # A loop with no wait in it.
    assert any(
        "wait" in e["message"] and e["loc"][:1] == ["steps"]
        for e in errors
        if e["loc"][1:2] in ([2], [3])
    )
    # A duplicate name names the existing one.
    duplicate = next(e for e in errors if e["loc"] == ["conversions", 1, "name"])
    assert "Booked meeting" in duplicate["message"]
    # `journey` is required on conversion and goal triggers.
    assert ["triggers", 1, "journey"] in found
    assert ["triggers", 2, "journey"] in found
    assert api.get("/api/v1/journeys/broken").status_code == 404


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        (lambda d: d.update(key="Not A Slug"), ["key"]),
        (lambda d: d.update(key="a" * 65), ["key"]),
        (lambda d: d["steps"][0].update(key="Bad Key", next=None), ["steps", 0, "key"]),
        (lambda d: d["settings"].update(holdout_percent=51), ["settings", "holdout_percent"]),
        (lambda d: d["settings"].update(reentry="twice"), ["settings", "reentry"]),
        (lambda d: d["steps"][0].update(duration="two days"), ["steps", 0, "duration"]),
    ],
)
def test_invalid_parts_of_a_definition_are_located(api, change, loc):
    data = definition("bad", [{"key": "pause", "type": "wait", "duration": "P1D", "next": None}])
    change(data)
    errors = assert_error_shape(api.post("/api/v1/journeys", data), 400)
    assert any(error["loc"][: len(loc)] == loc for error in errors), errors


def test_split_weights_must_be_positive_integers(api):
    steps = [
        {
            "key": "ab",
            "type": "split",
            "paths": [{"weight": 0, "next": "a"}, {"weight": 1.5, "next": "a"}],
        },
        {"key": "a", "type": "exit"},
    ]
    errors = assert_error_shape(api.post("/api/v1/journeys", definition("w", steps)), 400)
    assert any(loc[:4] == ["steps", 0, "paths", 0] for loc in locs(errors))
    assert any(loc[:4] == ["steps", 0, "paths", 1] for loc in locs(errors))


def test_duplicate_keys_within_a_list_are_refused(api):
    steps = [
        {"key": "same", "type": "wait", "duration": "PT1H", "next": None},
        {"key": "same", "type": "exit"},
    ]
    errors = assert_error_shape(api.post("/api/v1/journeys", definition("dup", steps)), 400)
    assert any(loc[:2] == ["steps", 1] for loc in locs(errors))


def test_duplicate_goal_name_names_the_existing_goal(api):
    data = definition(
        "goals",
        [{"key": "check", "type": "evaluate_goal", "goal": "a", "achieved": None}],
        goals=[
            {"key": "a", "name": "Booked meeting", "criteria": {"event": "booked"}},
            {"key": "b", "name": "BOOKED  meeting!", "criteria": {"event": "booked"}},
        ],
    )
    errors = assert_error_shape(api.post("/api/v1/journeys", data), 400)
    (error,) = [e for e in errors if e["loc"] == ["goals", 1, "name"]]
    assert "Booked meeting" in error["message"]


def test_a_cycle_with_a_wait_is_accepted(api):
    steps = [
        {"key": "ping", "type": "send_email", "subject": "s", "body": "b", "next": "pause"},
        {"key": "pause", "type": "wait", "duration": "P1D", "next": "ping"},
    ]
    create(api, definition("cycle-ok", steps))


# --- §2 HTTP API: authentication, error shape, schema -------------------------------------------

ROUTES = [
    ("put", "/api/v1/contacts/ann", {"email": "ann@example.com"}),
    ("get", "/api/v1/contacts/ann", None),
    ("post", "/api/v1/events", {"events": [{"id": "1", "contact": "ann", "name": "x"}]}),
    ("get", "/api/v1/journeys", None),
    ("post", "/api/v1/journeys", CONTRACT_EXAMPLE),
    ("get", "/api/v1/journeys/trial-nurture", None),
    ("get", "/api/v1/journeys/trial-nurture/definition?version=1", None),
    ("post", "/api/v1/journeys/trial-nurture/versions", CONTRACT_EXAMPLE),
    ("post", "/api/v1/journeys/trial-nurture/versions/1/publish", {}),
    ("post", "/api/v1/journeys/trial-nurture/enrollments", {"contact": "ann"}),
    ("get", "/api/v1/journeys/trial-nurture/report?conversion=paid&baseline=1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer not-a-key", "Basic abc"])
def test_every_route_answers_401_without_a_valid_key(client, method, path, body, header):
    kwargs = {"content_type": "application/json"}
    if body is not None:
        kwargs["data"] = json.dumps(body)
    if header:
        kwargs["headers"] = {"Authorization": header}
    errors = assert_error_shape(getattr(client, method)(path, **kwargs), 401)
    assert errors


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/api/v1/nothing-here", None, 404),
        ("get", "/api/v1/journeys/nope", None, 404),
        ("get", "/api/v1/journeys/nope/definition", None, 404),
        ("get", "/api/v1/journeys/nope/report", None, 404),
        ("get", "/api/v1/contacts/nobody", None, 404),
        ("post", "/api/v1/journeys/nope/versions/1/publish", None, 404),
        ("post", "/api/v1/journeys/nope/enrollments", {"contact": "x"}, 404),
        ("post", "/api/v1/events", "{not json", 400),
        ("post", "/api/v1/events", [], 400),
        ("post", "/api/v1/journeys", "[1, 2", 400),
        ("post", "/api/v1/journeys", [], 400),
        ("put", "/api/v1/contacts/ann", {"email": 5}, 400),
        ("delete", "/api/v1/journeys", None, 405),
    ],
)
def test_errors_are_always_the_contract_shape_never_html(api, method, path, body, status):
    response = getattr(api, method)(path, body) if body is not None else getattr(api, method)(path)
    assert_error_shape(response, status)
    assert b"<html" not in response.content.lower()


def test_openapi_schema_lists_every_route(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for route in [
        "/api/v1/contacts/{external_id}",
        "/api/v1/events",
        "/api/v1/journeys",
        "/api/v1/journeys/{key}",
        "/api/v1/journeys/{key}/definition",
        "/api/v1/journeys/{key}/versions",
        "/api/v1/journeys/{key}/versions/{number}/publish",
        "/api/v1/journeys/{key}/enrollments",
        "/api/v1/journeys/{key}/report",
    ]:
        assert route in paths, route
    assert set(paths["/api/v1/contacts/{external_id}"]) >= {"get", "put"}


# --- §2 contacts and events -------------------------------------------------------------------

ENROLLMENT_KEYS = {"journey", "version", "state", "held_out", "started_at", "ended_at", "path"}
CONVERSION_KEYS = {"journey", "version", "conversion", "value", "source", "step", "awarded_at"}


def test_put_contact_answers_201_then_200_with_the_contact(api):
    response = api.put(
        "/api/v1/contacts/ann", {"email": "ann@example.com", "attributes": {"plan": "pro"}}
    )
    assert response.status_code == 201
    assert response.json()["email"] == "ann@example.com"
    assert response.json()["attributes"] == {"plan": "pro"}
    response = api.put(
        "/api/v1/contacts/ann", {"email": "ann@example.org", "attributes": {"seats": 3}}
    )
    assert response.status_code == 200
    assert response.json()["email"] == "ann@example.org"
    assert response.json()["attributes"]["seats"] == 3


def test_get_contact_has_enrollments_and_conversions_with_contract_keys(api, clock):
    steps = [
        {"key": "hello", "type": "send_email", "subject": "Hi", "body": "x", "next": "buy"},
        {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
    ]
    live(
        api, definition("shop", steps, conversions=[{"key": "paid", "name": "Paid", "value": 12.5}])
    )
    api.put("/api/v1/contacts/ann", {"email": "ann@example.com"})
    send(api, event("ann", "signed_up"))
    run_due()
    body = contact(api, "ann")
    (enrollment,) = body["enrollments"]
    assert set(enrollment) >= ENROLLMENT_KEYS
    assert enrollment["journey"] == "shop"
    assert enrollment["version"] == 1
    assert enrollment["state"] == "completed"
    assert enrollment["held_out"] is False
    assert enrollment["path"] == ["hello", "buy"]
    assert datetime.datetime.fromisoformat(enrollment["started_at"]) == START
    assert datetime.datetime.fromisoformat(enrollment["ended_at"]) == START
    (award,) = body["conversions"]
    assert set(award) >= CONVERSION_KEYS
    assert {k: award[k] for k in CONVERSION_KEYS - {"awarded_at"}} == {
        "journey": "shop",
        "version": 1,
        "conversion": "paid",
        "value": 12.5,
        "source": "convert_step",
        "step": "buy",
    }
    assert datetime.datetime.fromisoformat(award["awarded_at"]) == START


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


# --- §2 journeys, versions, publishing, enrollments -------------------------------------------


def test_journey_list_has_key_name_status_live_versions_and_conversion_keys(api):
    live(
        api,
        definition(
            "one", [{"key": "x", "type": "exit"}], conversions=[{"key": "paid", "name": "Paid"}]
        ),
    )
    create(api, definition("two", [{"key": "x", "type": "exit"}]))
    response = api.get("/api/v1/journeys")
    assert response.status_code == 200
    rows = {row["key"]: row for row in response.json()}
    assert rows["one"]["name"] == "One"
    assert rows["one"]["status"] == "live"
    assert rows["one"]["live_versions"] == [1]
    assert rows["one"]["conversions"] == ["paid"]
    assert rows["two"]["status"] == "draft"
    assert rows["two"]["live_versions"] == []


def test_publishing_retires_the_live_version_and_running_enrollments_stay_on_it(api, clock):
    steps = [
        {"key": "pause", "type": "wait", "duration": "P2D", "next": "done"},
        {"key": "done", "type": "update_contact", "attributes": {"v": 1}, "next": None},
    ]
    data = definition("edit-live", steps)
    live(api, data)
    send(api, event("ann", "signed_up"))
    run_due()

    # Editing the live journey makes a new draft; version 1 stays live and unchanged.
    data["steps"][1]["attributes"] = {"v": 2}
    data["steps"].insert(1, {"key": "extra", "type": "send_sms", "text": "hi", "next": "done"})
    data["steps"][0]["next"] = "extra"
    response = api.post("/api/v1/journeys/edit-live/versions", data)
    assert response.status_code == 201
    assert (response.json()["number"], response.json()["state"]) == (2, "draft")
    states = {
        v["number"]: v["state"] for v in api.get("/api/v1/journeys/edit-live").json()["versions"]
    }
    assert states == {1: "live", 2: "draft"}
    v1 = api.get("/api/v1/journeys/edit-live/definition?version=1").json()
    assert [s["key"] for s in v1["steps"]] == ["pause", "done"]

    publish(api, "edit-live", 2)
    journey = api.get("/api/v1/journeys/edit-live").json()
    assert journey["status"] == "live"
    assert {v["number"]: v["state"] for v in journey["versions"]} == {1: "retired", 2: "live"}

    send(api, event("bob", "signed_up"))
    run_due()
    clock.shift(datetime.timedelta(days=2))
    run_due()
    ann = contact(api, "ann")["enrollments"][0]
    bob = contact(api, "bob")["enrollments"][0]
    assert (ann["version"], ann["path"], ann["state"]) == (1, ["pause", "done"], "completed")
    assert (bob["version"], bob["path"], bob["state"]) == (
        2,
        ["pause", "extra", "done"],
        "completed",
    )


def test_publish_with_traffic_keeps_both_versions_live_and_splits_new_enrollments(api, clock):
    data = definition(
        "split",
        [{"key": "x", "type": "exit"}],
        settings={"reentry": "concurrent", "holdout_percent": 0},
    )
    live(api, data)
    api.post("/api/v1/journeys/split/versions", data)
    publish(api, "split", 2, traffic=50)
    states = {v["number"]: v["state"] for v in api.get("/api/v1/journeys/split").json()["versions"]}
    assert states == {1: "live", 2: "live"}
    assert api.get("/api/v1/journeys").json()[0]["live_versions"] == [1, 2]
    send(api, *[event(f"c{i}", "signed_up") for i in range(60)])
    run_due()
    versions = [contact(api, f"c{i}")["enrollments"][0]["version"] for i in range(60)]
    assert 10 < versions.count(2) < 50  # 50% at random; 60 draws stay far from either end
    # Publishing one alone ends the split.
    publish(api, "split", 2)
    states = {v["number"]: v["state"] for v in api.get("/api/v1/journeys/split").json()["versions"]}
    assert states == {1: "retired", 2: "live"}


@pytest.mark.parametrize("traffic", [0, 100, "half"])
def test_publish_refuses_traffic_outside_1_to_99(api, traffic):
    data = definition("t", [{"key": "x", "type": "exit"}])
    live(api, data)
    api.post("/api/v1/journeys/t/versions", data)
    response = api.post("/api/v1/journeys/t/versions/2/publish", {"traffic": traffic})
    errors = assert_error_shape(response, 400)
    assert ["traffic"] in locs(errors)


def test_enrollments_answer_201_then_409_when_reentry_forbids(api, clock):
    live(
        api,
        definition("manual", [{"key": "pause", "type": "wait", "duration": "P1D", "next": None}]),
    )
    api.put("/api/v1/contacts/ann", {})
    response = api.post("/api/v1/journeys/manual/enrollments", {"contact": "ann"})
    assert response.status_code == 201
    assert response.json()["journey"] == "manual" and response.json()["state"] == "active"
    errors = assert_error_shape(
        api.post("/api/v1/journeys/manual/enrollments", {"contact": "ann"}), 409
    )
    assert errors


# --- §1 engine semantics, end to end ----------------------------------------------------------

GOAL_STEPS = [
    {
        "key": "check",
        "type": "evaluate_goal",
        "goal": "activated",
        "wait": "P7D",
        "achieved": "won",
        "not_achieved": "lost",
    },
    {"key": "won", "type": "update_contact", "attributes": {"result": "won"}, "next": None},
    {"key": "lost", "type": "update_contact", "attributes": {"result": "lost"}, "next": None},
]
GOALS = [
    {
        "key": "activated",
        "name": "Activated",
        "criteria": {"event": "project_created"},
        "conversion": "activation",
    }
]
ACTIVATION = [
    {"key": "activation", "name": "Activated account", "value": 5},
    {"key": "other", "name": "Other"},
]


def goal_journey(api, steps=GOAL_STEPS):
    live(api, definition("goals", steps, goals=GOALS, conversions=ACTIVATION))


def test_evaluate_goal_waits_and_an_incoming_event_achieves_it_at_once(api, clock):
    goal_journey(api)
    send(api, event("ann", "signed_up"))
    run_due()
    assert contact(api, "ann")["enrollments"][0]["state"] == "active"
    clock.shift(datetime.timedelta(days=3))
    send(api, event("ann", "project_created"))
    run_due()  # no time passes: the event wakes the wait
    body = contact(api, "ann")
    (enrollment,) = body["enrollments"]
    assert enrollment["path"] == ["check", "won"]
    assert enrollment["state"] == "completed"
    (award,) = body["conversions"]
    assert (award["conversion"], award["source"], award["value"], award["step"]) == (
        "activation",
        "goal",
        5.0,
        "check",
    )


def test_evaluate_goal_not_achieved_when_the_wait_runs_out(api, clock):
    goal_journey(api)
    send(api, event("ann", "signed_up"))
    run_due()
    clock.shift(datetime.timedelta(days=7, minutes=1))
    run_due()
    body = contact(api, "ann")
    assert body["enrollments"][0]["path"] == ["check", "lost"]
    assert body["conversions"] == []
    # An event after the wait ran out awards nothing.
    send(api, event("ann", "project_created"))
    run_due()
    assert contact(api, "ann")["conversions"] == []


def test_evaluate_goal_ignores_events_from_before_the_enrollment(api, clock):
    goal_journey(api)
    send(api, event("ann", "project_created"))
    run_due()
    clock.shift(datetime.timedelta(hours=1))
    send(api, event("ann", "signed_up"))
    run_due()
    assert contact(api, "ann")["enrollments"][0]["state"] == "active"


def test_evaluate_goal_achieved_now_without_waiting(api, clock):
    steps = [{"key": "pause", "type": "wait", "duration": "PT1H", "next": "check"}, *GOAL_STEPS]
    goal_journey(api, steps)
    send(api, event("ann", "signed_up"))
    run_due()
    send(api, event("ann", "project_created"))
    clock.shift(datetime.timedelta(hours=1))
    run_due()
    body = contact(api, "ann")
    assert body["enrollments"][0]["path"] == ["pause", "check", "won"]
    assert [a["conversion"] for a in body["conversions"]] == ["activation"]


def test_convert_awards_only_its_conversion(api, clock):
    steps = [{"key": "buy", "type": "convert", "conversion": "paid", "next": None}]
    conversions = [
        {"key": "paid", "name": "Paid", "value": 10},
        {"key": "also", "name": "Also", "value": 3, "event": {"event": "signed_up"}},
        {"key": "later", "name": "Later"},
    ]
    live(api, definition("only", steps, conversions=conversions))
    send(api, event("ann", "signed_up"))
    run_due()
    assert [(a["conversion"], a["source"]) for a in contact(api, "ann")["conversions"]] == [
        ("paid", "convert_step")
    ]


def event_conversion_journey(api, **conversion):
    steps = [{"key": "pause", "type": "wait", "duration": "P10D", "next": None}]
    paid = {"key": "paid", "name": "Paid", "value": 49.0, **conversion}
    live(
        api,
        definition(
            "events",
            steps,
            conversions=[paid],
            settings={"reentry": "after_exit", "holdout_percent": 0},
        ),
    )


def awards(api, who="ann"):
    return [(a["conversion"], a["value"], a["source"]) for a in contact(api, who)["conversions"]]


def test_event_conversion_awards_while_active_with_value_property_or_default(api, clock):
    event_conversion_journey(api, event={"event": "purchase", "value_property": "amount"})
    send(api, event("ann", "signed_up"))
    run_due()
    send(api, event("ann", "purchase", properties={"amount": 99.5}))
    run_due()
    assert awards(api) == [("paid", 99.5, "event")]
    # once_per_enrollment is the default: a second purchase counts nothing.
    send(api, event("ann", "purchase", properties={"amount": 10}))
    run_due()
    assert len(awards(api)) == 1
    # Without the property, the conversion's value; after the enrollment ended, nothing.
    send(api, event("bob", "signed_up"))
    run_due()
    send(api, event("bob", "purchase"))
    run_due()
    assert awards(api, "bob") == [("paid", 49.0, "event")]
    clock.shift(datetime.timedelta(days=11))
    run_due()
    send(api, event("ann", "purchase", properties={"amount": 5}))
    run_due()
    assert len(awards(api)) == 1


def test_event_conversion_without_value_property_defaults_value_to_zero(api, clock):
    steps = [{"key": "pause", "type": "wait", "duration": "P10D", "next": None}]
    live(
        api,
        definition(
            "zero", steps, conversions=[{"key": "c", "name": "C", "event": {"event": "purchase"}}]
        ),
    )
    send(api, event("ann", "signed_up"))
    run_due()
    send(api, event("ann", "purchase", properties={"amount": 7}))
    run_due()
    assert awards(api) == [("c", 0.0, "event")]


def test_event_conversion_window_counts_after_the_enrollment_ended(api, clock):
    steps = [{"key": "x", "type": "update_contact", "attributes": {"a": 1}, "next": None}]
    conversion = {
        "key": "paid",
        "name": "Paid",
        "value": 1,
        "window": "P30D",
        "event": {"event": "purchase"},
    }
    live(api, definition("window", steps, conversions=[conversion]))
    send(api, event("ann", "signed_up"), event("bob", "signed_up"))
    run_due()
    assert contact(api, "ann")["enrollments"][0]["state"] == "completed"
    clock.shift(datetime.timedelta(days=29))
    send(api, event("ann", "purchase"))
    run_due()
    clock.shift(datetime.timedelta(days=2))
    send(api, event("bob", "purchase"))
    run_due()
    assert awards(api, "ann") == [("paid", 1.0, "event")]
    assert awards(api, "bob") == []


def test_event_conversion_counting_every_time_and_once_per_contact(api, clock):
    steps = [{"key": "pause", "type": "wait", "duration": "P10D", "next": None}]
    conversions = [
        {
            "key": "each",
            "name": "Each",
            "value": 1,
            "counting": "every_time",
            "event": {"event": "purchase"},
        },
        {
            "key": "first",
            "name": "First",
            "value": 1,
            "counting": "once_per_contact",
            "event": {"event": "purchase"},
        },
    ]
    live(
        api,
        definition(
            "count",
            steps,
            conversions=conversions,
            settings={"reentry": "concurrent", "holdout_percent": 0},
        ),
    )
    send(api, event("ann", "signed_up"))
    run_due()
    send(api, event("ann", "signed_up"))
    run_due()
    assert len(contact(api, "ann")["enrollments"]) == 2
    send(api, event("ann", "purchase"))
    run_due()
    send(api, event("ann", "purchase"))
    run_due()
    counted = [a["conversion"] for a in contact(api, "ann")["conversions"]]
    assert counted.count("first") == 1
    assert counted.count("each") == 4  # two purchases, two active enrollments


def test_event_conversion_where_filters_the_event(api, clock):
    conversion = {
        "key": "pro",
        "name": "Pro",
        "event": {"event": "purchase", "where": [{"property": "plan", "op": "eq", "value": "pro"}]},
    }
    live(
        api,
        definition(
            "where",
            [{"key": "pause", "type": "wait", "duration": "P1D", "next": None}],
            conversions=[conversion],
        ),
    )
    send(api, event("ann", "signed_up"))
    run_due()
    send(api, event("ann", "purchase", properties={"plan": "basic"}))
    run_due()
    assert awards(api) == []
    send(api, event("ann", "purchase", properties={"plan": "pro"}))
    run_due()
    assert [a[0] for a in awards(api)] == ["pro"]


def test_trigger_where_filters_entrants(api, clock):
    live(
        api,
        definition(
            "pro-only",
            [{"key": "x", "type": "exit"}],
            triggers=[
                {
                    "type": "event",
                    "event": "trial_started",
                    "where": [{"property": "plan", "op": "eq", "value": "pro"}],
                }
            ],
        ),
    )
    send(
        api,
        event("ann", "trial_started", properties={"plan": "basic"}),
        event("bob", "trial_started", properties={"plan": "pro"}),
    )
    run_due()
    assert contact(api, "ann")["enrollments"] == []
    (enrollment,) = contact(api, "bob")["enrollments"]
    assert enrollment["state"] == "exited"


def test_conversion_and_goal_events_start_other_journeys_and_exit_via_exit_when(api, clock):
    live(
        api,
        definition(
            "source",
            [
                {"key": "buy", "type": "convert", "conversion": "customer", "next": "check"},
                {"key": "check", "type": "evaluate_goal", "goal": "engaged", "achieved": None},
            ],
            goals=[
                {
                    "key": "engaged",
                    "name": "Engaged",
                    "criteria": {"attribute": "plan", "op": "eq", "value": "pro"},
                }
            ],
            conversions=[{"key": "customer", "name": "Became customer", "value": 100}],
        ),
    )
    live(
        api,
        definition(
            "after-conversion",
            [{"key": "pause", "type": "wait", "duration": "P5D", "next": None}],
            triggers=[{"type": "conversion", "journey": "source", "conversion": "customer"}],
        ),
    )
    live(
        api,
        definition(
            "after-goal",
            [{"key": "pause", "type": "wait", "duration": "P5D", "next": None}],
            triggers=[{"type": "goal", "journey": "source", "goal": "engaged"}],
        ),
    )
    # Waits until its own conversion (exit_when defaults to this journey) or another's goal.
    live(
        api,
        definition(
            "waiting",
            [
                {"key": "pause", "type": "wait", "duration": "P5D", "next": None},
            ],
            triggers=[{"type": "event", "event": "signed_up"}],
            exit_when=[
                {"type": "conversion", "conversion": "own"},
                {"type": "goal", "journey": "source", "goal": "engaged"},
            ],
            conversions=[{"key": "own", "name": "Own", "event": {"event": "purchase"}}],
        ),
    )
    api.put("/api/v1/contacts/ann", {"attributes": {"plan": "pro"}})
    api.put("/api/v1/contacts/bob", {"attributes": {"plan": "pro"}})
    send(api, event("ann", "signed_up"))
    run_due()
    by_journey = {e["journey"]: e for e in contact(api, "ann")["enrollments"]}
    assert set(by_journey) == {"source", "after-conversion", "after-goal", "waiting"}
    assert by_journey["after-conversion"]["state"] == "active"
    assert by_journey["after-goal"]["state"] == "active"
    assert by_journey["waiting"]["state"] == "exited"  # the goal_achieved event of "source"

    # Bob is only in "waiting" (not pro when he joins it) and leaves it on its own conversion.
    api.put("/api/v1/contacts/bob", {"attributes": {"plan": "basic"}})
    live(
        api,
        definition(
            "bob-starter",
            [{"key": "pause", "type": "wait", "duration": "P1D", "next": None}],
            triggers=[{"type": "event", "event": "other"}],
        ),
    )
    send(api, event("bob", "signed_up"))
    run_due()
    send(api, event("bob", "purchase"))
    run_due()
    waiting = [e for e in contact(api, "bob")["enrollments"] if e["journey"] == "waiting"]
    assert [e["state"] for e in waiting] == ["exited"]


def test_internal_event_chain_is_cut_off_past_depth_8(api, clock, caplog):
    concurrent = {"reentry": "concurrent", "holdout_percent": 0}
    live(
        api,
        definition(
            "ping",
            [{"key": "award", "type": "convert", "conversion": "pinged", "next": None}],
            settings=concurrent,
            triggers=[
                {"type": "event", "event": "start"},
                {"type": "conversion", "journey": "pong", "conversion": "ponged"},
            ],
            conversions=[{"key": "pinged", "name": "Pinged"}],
        ),
    )
    live(
        api,
        definition(
            "pong",
            [{"key": "award", "type": "convert", "conversion": "ponged", "next": None}],
            settings=concurrent,
            triggers=[{"type": "conversion", "journey": "ping", "conversion": "pinged"}],
            conversions=[{"key": "ponged", "name": "Ponged"}],
        ),
    )
    send(api, event("ann", "start"))
    with caplog.at_level("INFO"):
        run_due()
    body = contact(api, "ann")
    # The API event (depth 0) starts ping; awards emit events of depth 1..8, each starting
    # the other journey; the ninth award's event (depth 9) is dropped.
    assert len(body["enrollments"]) == 9
    assert len(body["conversions"]) == 9
    assert all(e["state"] == "completed" for e in body["enrollments"])
    assert any("depth" in record.getMessage().lower() for record in caplog.records)


def test_holdout_takes_no_step_but_event_conversions_count(api, clock):
    steps = [
        {"key": "hello", "type": "send_email", "subject": "Hi", "body": "x", "next": "pause"},
        {"key": "pause", "type": "wait", "duration": "P3D", "next": None},
    ]
    conversions = [{"key": "paid", "name": "Paid", "value": 1, "event": {"event": "purchase"}}]
    live(
        api,
        definition(
            "holdout",
            steps,
            conversions=conversions,
            settings={"reentry": "once", "holdout_percent": 50},
        ),
    )
    people = [f"c{i}" for i in range(60)]
    send(api, *[event(p, "signed_up") for p in people])
    run_due()
    send(api, *[event(p, "purchase") for p in people])
    run_due()
    enrollments = {p: contact(api, p)["enrollments"][0] for p in people}
    held = [p for p, e in enrollments.items() if e["held_out"]]
    assert 10 < len(held) < 50
    for p, e in enrollments.items():
        assert e["path"] == ([] if e["held_out"] else ["hello", "pause"]), p
        assert awards(api, p) == [("paid", 1.0, "event")], p


def test_holdout_percent_defaults_to_zero(api, clock):
    data = definition("default-holdout", [{"key": "x", "type": "exit"}])
    data["settings"] = {}
    live(api, data)
    assert (
        api.get("/api/v1/journeys/default-holdout/definition").json()["settings"]["holdout_percent"]
        == 0
    )
    send(api, *[event(f"c{i}", "signed_up") for i in range(20)])
    run_due()
    assert not any(contact(api, f"c{i}")["enrollments"][0]["held_out"] for i in range(20))


def test_reentry_defaults_to_once(api, clock):
    data = definition("default-once", [{"key": "x", "type": "exit"}])
    data["settings"] = {}
    live(api, data)
    assert (
        api.get("/api/v1/journeys/default-once/definition").json()["settings"]["reentry"] == "once"
    )
    send(api, event("ann", "signed_up"))
    run_due()
    send(api, event("ann", "signed_up"))
    run_due()
    assert len(contact(api, "ann")["enrollments"]) == 1


@pytest.mark.parametrize(
    ("reentry", "expected"),
    [("once", 1), ("after_exit", 2), ("concurrent", 3)],
)
def test_reentry_rules(api, clock, reentry, expected):
    steps = [{"key": "pause", "type": "wait", "duration": "P1D", "next": None}]
    live(api, definition("again", steps, settings={"reentry": reentry, "holdout_percent": 0}))
    send(api, event("ann", "signed_up"))
    run_due()
    send(api, event("ann", "signed_up"))  # while the first is active
    run_due()
    clock.shift(datetime.timedelta(days=2))
    run_due()  # the first one(s) complete
    send(api, event("ann", "signed_up"))
    run_due()
    assert len(contact(api, "ann")["enrollments"]) == expected
    enroll = api.post("/api/v1/journeys/again/enrollments", {"contact": "ann"})
    assert enroll.status_code == (409 if reentry in ("once", "after_exit") else 201)


def test_exit_step_ends_the_enrollment_as_exited(api, clock):
    live(
        api,
        definition(
            "bye",
            [
                {"key": "tag", "type": "update_contact", "attributes": {"x": 1}, "next": "out"},
                {"key": "out", "type": "exit"},
            ],
        ),
    )
    send(api, event("ann", "signed_up"))
    run_due()
    (enrollment,) = contact(api, "ann")["enrollments"]
    assert (enrollment["state"], enrollment["path"]) == ("exited", ["tag", "out"])


def test_condition_and_update_contact_work_on_attributes(api, clock):
    steps = [
        {
            "key": "is-pro",
            "type": "condition",
            "if": {"attribute": "plan", "op": "eq", "value": "pro"},
            "then": "tag",
            "else": None,
        },
        {
            "key": "tag",
            "type": "update_contact",
            "attributes": {"stage": "activated"},
            "next": None,
        },
    ]
    live(api, definition("cond", steps))
    api.put("/api/v1/contacts/ann", {"attributes": {"plan": "pro"}})
    api.put("/api/v1/contacts/bob", {"attributes": {"plan": "basic"}})
    send(api, event("ann", "signed_up"), event("bob", "signed_up"))
    run_due()
    assert contact(api, "ann")["attributes"]["stage"] == "activated"
    assert "stage" not in contact(api, "bob")["attributes"]
    assert contact(api, "bob")["enrollments"][0]["path"] == ["is-pro"]


def test_contract_example_runs_end_to_end(api, clock, mailoutbox):
    create(api, CONTRACT_EXAMPLE)
    publish(api, "trial-nurture", 1)
    api.put(
        "/api/v1/contacts/ann",
        {"email": "ann@example.com", "attributes": {"first_name": "Ann", "plan": "pro"}},
    )
    send(api, event("ann", "trial_started", properties={"plan": "pro"}))
    run_due()
    assert [m.subject for m in mailoutbox] == ["Welcome Ann"]
    clock.shift(datetime.timedelta(days=2))
    run_due()
    send(api, event("ann", "project_created"))
    run_due()
    body = contact(api, "ann")
    (enrollment,) = body["enrollments"]
    assert enrollment["path"][:3] == ["welcome", "wait-2d", "ab"]
    assert enrollment["path"][-3:] == ["check", "is-pro", "convert"]
    # Converting "paid" emits a conversion event that exit_when names, but the enrollment
    # had already completed; activation comes from the goal, paid from the convert step.
    assert enrollment["state"] == "completed"
    assert sorted((a["conversion"], a["source"]) for a in body["conversions"]) == [
        ("activation", "goal"),
        ("paid", "convert_step"),
    ]


# --- §2 report --------------------------------------------------------------------------------

REPORT_STEPS = [
    {"key": "hello", "type": "send_email", "subject": "Hi", "body": "x", "next": "pause"},
    {"key": "pause", "type": "wait", "duration": "P10D", "next": None},
]
REPORT_CONVERSIONS = [
    {
        "key": "paid",
        "name": "Started paid plan",
        "value": 10,
        "event": {"event": "purchase", "value_property": "amount"},
    },
    {"key": "other", "name": "Other"},
]


def enroll_and_convert(api, prefix, enrolled, converted, amount):
    send(api, *[event(f"{prefix}{i}", "signed_up") for i in range(enrolled)])
    run_due()
    send(
        api,
        *[
            event(f"{prefix}{i}", "purchase", properties={"amount": amount})
            for i in range(converted)
        ],
    )
    run_due()


def test_report_has_contract_keys_and_hand_checked_statistics(api, clock):
    data = definition("rep", REPORT_STEPS, conversions=REPORT_CONVERSIONS)
    live(api, data)
    enroll_and_convert(api, "a", 10, 3, 20)
    clock.shift(datetime.timedelta(days=1))
    data["steps"][1]["duration"] = "P9D"
    api.post("/api/v1/journeys/rep/versions", data)
    publish(api, "rep", 2)
    enroll_and_convert(api, "b", 8, 6, 5)

    response = api.get("/api/v1/journeys/rep/report?conversion=paid&baseline=1")
    assert response.status_code == 200
    report = response.json()
    assert {"journey", "conversion", "versions", "steps"} <= set(report)
    assert report["journey"] == "rep"
    assert report["conversion"] == {"key": "paid", "name": "Started paid plan"}
    version_keys = {
        "version",
        "enrolled",
        "converted",
        "rate",
        "ci_low",
        "ci_high",
        "value",
        "diff",
        "p_value",
        "comparison",
    }
    for row in report["versions"]:
        assert version_keys <= set(row)
    v1, v2 = report["versions"]
    assert (v1["version"], v1["enrolled"], v1["converted"]) == (1, 10, 3)
    assert (v2["version"], v2["enrolled"], v2["converted"]) == (2, 8, 6)
    assert v1["rate"] == pytest.approx(0.3)
    assert v2["rate"] == pytest.approx(0.75)
    assert (v1["ci_low"], v1["ci_high"]) == pytest.approx(wilson(3, 10), abs=1e-9)
    assert (v2["ci_low"], v2["ci_high"]) == pytest.approx(wilson(6, 8), abs=1e-9)
    assert v1["ci_low"] == pytest.approx(0.1078, abs=1e-4)
    assert v1["ci_high"] == pytest.approx(0.6032, abs=1e-4)
    assert v1["value"] == pytest.approx(60.0)
    assert v2["value"] == pytest.approx(30.0)
    assert (v1["diff"], v1["p_value"]) == (None, None)
    assert v2["diff"] == pytest.approx(0.45)
    assert v2["p_value"] == pytest.approx(pooled_z_p_value(6, 8, 3, 10), abs=1e-9)
    assert v2["p_value"] == pytest.approx(0.0578, abs=1e-4)
    assert v2["comparison"] == "sequential"

    steps = {(s["version"], s["step"]): s for s in report["steps"]}
    for s in report["steps"]:
        assert set(s) == {"version", "step", "entered", "converted"}
    assert (steps[(1, "hello")]["entered"], steps[(1, "hello")]["converted"]) == (10, 3)
    assert (steps[(2, "pause")]["entered"], steps[(2, "pause")]["converted"]) == (8, 6)

    # Baseline 2: the other row carries the comparison, mirrored.
    swapped = api.get("/api/v1/journeys/rep/report?conversion=paid&baseline=2").json()
    s1, s2 = swapped["versions"]
    assert s1["diff"] == pytest.approx(-0.45)
    assert s1["p_value"] == pytest.approx(v2["p_value"])
    assert (s2["diff"], s2["p_value"]) == (None, None)


def test_report_defaults_to_the_lowest_version_and_marks_a_random_split(api, clock):
    data = definition(
        "ab",
        REPORT_STEPS,
        conversions=REPORT_CONVERSIONS,
        settings={"reentry": "once", "holdout_percent": 0},
    )
    live(api, data)
    api.post("/api/v1/journeys/ab/versions", data)
    publish(api, "ab", 2, traffic=50)
    enroll_and_convert(api, "c", 40, 10, 1)
    report = api.get("/api/v1/journeys/ab/report?conversion=paid").json()
    v1, v2 = report["versions"]
    # No baseline given: version 1, the lowest, is the baseline row.
    assert (v1["version"], v1["diff"], v1["p_value"]) == (1, None, None)
    assert v2["comparison"] == "randomized"
    c1, e1, c2, e2 = v1["converted"], v1["enrolled"], v2["converted"], v2["enrolled"]
    assert e1 + e2 == 40 and c1 + c2 == 10
    assert v2["diff"] == pytest.approx(c2 / e2 - c1 / e1)
    if 0 < c1 + c2 < e1 + e2:
        assert v2["p_value"] == pytest.approx(pooled_z_p_value(c2, e2, c1, e1), abs=1e-9)

    # Version 2 wins and is published alone: the two still took enrollments side by side.
    clock.shift(datetime.timedelta(days=1))
    publish(api, "ab", 2)
    after = api.get("/api/v1/journeys/ab/report?conversion=paid").json()
    assert [v["comparison"] for v in after["versions"]] == [None, "randomized"]
    assert [(v["enrolled"], v["converted"]) for v in after["versions"]] == [(e1, c1), (e2, c2)]


@pytest.mark.parametrize(
    ("query", "loc_part"),
    [
        ("conversion=nope", "conversion"),
        ("conversion=paid&baseline=7", "baseline"),
        ("conversion=paid&baseline=x", "baseline"),
    ],
)
def test_report_refuses_unknown_parameters_by_name(api, query, loc_part):
    live(api, definition("r", REPORT_STEPS, conversions=REPORT_CONVERSIONS))
    errors = assert_error_shape(api.get(f"/api/v1/journeys/r/report?{query}"), 400)
    assert any(loc_part in error["loc"] for error in errors)


# --- §3 commands ------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [None, "ingest", "manage", "all"])
def test_create_api_key_prints_the_key_alone_on_its_last_line(client, scope):
    out = io.StringIO()
    args = ["create_api_key", "my-integration"] + (["--scope", scope] if scope else [])
    call_command(*args, stdout=out)
    raw = out.getvalue().strip().splitlines()[-1]
    assert raw and " " not in raw
    headers = {"Authorization": f"Bearer {raw}"}
    journeys = client.get("/api/v1/journeys", headers=headers).status_code
    events = client.post(
        "/api/v1/events",
        json.dumps({"events": [{"id": f"k-{scope}", "contact": "a", "name": "x"}]}),
        content_type="application/json",
        headers=headers,
    ).status_code
    expected = {None: (200, 202), "all": (200, 202), "ingest": (403, 202), "manage": (200, 403)}
    assert (journeys, events) == expected[scope]
    from journeys.models import ApiKey

    assert not ApiKey.objects.filter(key_hash=raw).exists()  # only a hash is stored


def test_create_api_key_refuses_an_unknown_scope():
    with pytest.raises(CommandError):
        call_command("create_api_key", "x", "--scope", "everything", stdout=io.StringIO())


def test_run_due_is_safe_to_run_at_any_time(api, clock):
    run_due()  # nothing to do
    live(
        api, definition("due", [{"key": "pause", "type": "wait", "duration": "PT1H", "next": None}])
    )
    send(api, event("ann", "signed_up"))
    run_due()
    run_due()
    assert contact(api, "ann")["enrollments"][0]["path"] == ["pause"]
    assert contact(api, "ann")["enrollments"][0]["state"] == "active"
    clock.shift(datetime.timedelta(hours=1))
    run_due()
    run_due()
    enrollment = contact(api, "ann")["enrollments"][0]
    assert (enrollment["state"], enrollment["path"]) == ("completed", ["pause"])


def test_export_then_import_round_trips(api, tmp_path):
    create(api, CONTRACT_EXAMPLE)
    out = io.StringIO()
    call_command("export_journey", "trial-nurture", stdout=out)
    exported = json.loads(out.getvalue())
    assert exported == api.get("/api/v1/journeys/trial-nurture/definition").json()
    exported["key"] = "copy"
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(exported))
    call_command("import_journey", str(path), stdout=io.StringIO())
    copied = api.get("/api/v1/journeys/copy/definition").json()
    assert copied == exported
    # Importing an existing key makes a new draft of it.
    call_command("import_journey", str(path), stdout=io.StringIO())
    assert [v["state"] for v in api.get("/api/v1/journeys/copy").json()["versions"]] == ["draft"]


def test_import_journey_refuses_an_invalid_definition_with_every_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(definition("bad-import", BROKEN_STEPS)))
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_journey", str(path), stdout=io.StringIO(), stderr=err)
    assert "nowhere" in err.getvalue() and "ghost-goal" in err.getvalue()
    with pytest.raises(CommandError):
        call_command("import_journey", str(Path(tmp_path / "missing.json")), stdout=io.StringIO())
    with pytest.raises(CommandError):
        call_command("export_journey", "bad-import", stdout=io.StringIO())


def test_seed_demo_loads_four_journeys_with_two_versions_and_reports(api):
    call_command("seed_demo", "--days", "4", "--contacts-per-day", "3", stdout=io.StringIO())
    journeys = api.get("/api/v1/journeys").json()
    assert len(journeys) == 4
    for row in journeys:
        detail = api.get(f"/api/v1/journeys/{row['key']}").json()
        assert len(detail["versions"]) >= 2, row["key"]
        report = api.get(f"/api/v1/journeys/{row['key']}/report").json()
        assert len(report["versions"]) >= 2, row["key"]
        assert sum(v["enrolled"] for v in report["versions"]) > 0, row["key"]


# --- §4 pages behind login --------------------------------------------------------------------

PAGES = [
    "/journeys/",
    "/journeys/trial-nurture/",
    "/journeys/trial-nurture/report/",
    "/journeys/trial-nurture/report.csv",
    "/admin/",
]


@pytest.fixture
def example_live(api):
    create(api, CONTRACT_EXAMPLE)
    publish(api, "trial-nurture", 1)


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_login(example_live, path):
    response = Client().get(path)
    assert response.status_code == 302
    assert "login" in response["Location"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_render_for_a_logged_in_user(example_live, superuser, path):
    client = Client()
    client.force_login(superuser)
    response = client.get(path)
    assert response.status_code == 200
    if path.endswith(".csv"):
        assert response["Content-Type"].startswith("text/csv")
        assert response.content.decode().splitlines()[0].startswith("Version,Enrolled")
        assert response["Content-Disposition"].startswith("attachment;")


def test_journeys_page_shows_status_and_headline_rate(api, viewer, clock):
    live(
        api, definition("rated", REPORT_STEPS, name="Rated journey", conversions=REPORT_CONVERSIONS)
    )
    enroll_and_convert(api, "r", 4, 1, 1)
    client = Client()
    client.force_login(viewer)
    html = client.get("/journeys/").content.decode()
    assert "Rated journey" in html
    assert ">Live<" in html or "Live" in html
    assert "25%" in html


def test_admin_lists_every_model(superuser):
    from django.apps import apps

    client = Client()
    client.force_login(superuser)
    html = client.get("/admin/").content.decode()
    for app in ("journeys", "conversions", "reporting"):
        for model in apps.get_app_config(app).get_models():
            assert f"/admin/{app}/{model._meta.model_name}/" in html, model


# --- §1 criteria ------------------------------------------------------------------------------

ATTRIBUTES = {"n": 5, "tags": ["a", "b"], "name": "Anna", "plan": "pro"}


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({"attribute": "n", "op": "eq", "value": 5}, True),
        ({"attribute": "n", "op": "eq", "value": 4}, False),
        ({"attribute": "n", "op": "ne", "value": 4}, True),
        ({"attribute": "n", "op": "gt", "value": 4}, True),
        ({"attribute": "n", "op": "gt", "value": 5}, False),
        ({"attribute": "n", "op": "gte", "value": 5}, True),
        ({"attribute": "n", "op": "lt", "value": 6}, True),
        ({"attribute": "n", "op": "lt", "value": 5}, False),
        ({"attribute": "n", "op": "lte", "value": 5}, True),
        ({"attribute": "tags", "op": "contains", "value": "a"}, True),
        ({"attribute": "name", "op": "contains", "value": "nn"}, True),
        ({"attribute": "tags", "op": "contains", "value": "z"}, False),
        ({"attribute": "plan", "op": "in", "value": ["pro", "team"]}, True),
        ({"attribute": "plan", "op": "in", "value": ["basic"]}, False),
        ({"attribute": "n", "op": "exists"}, True),
        ({"attribute": "missing", "op": "exists"}, False),
        ({"attribute": "missing", "op": "eq", "value": 5}, False),
        (
            {
                "all": [
                    {"attribute": "n", "op": "eq", "value": 5},
                    {"attribute": "plan", "op": "eq", "value": "pro"},
                ]
            },
            True,
        ),
        (
            {
                "all": [
                    {"attribute": "n", "op": "eq", "value": 5},
                    {"attribute": "plan", "op": "eq", "value": "x"},
                ]
            },
            False,
        ),
        (
            {
                "any": [
                    {"attribute": "n", "op": "eq", "value": 1},
                    {"attribute": "plan", "op": "eq", "value": "pro"},
                ]
            },
            True,
        ),
        (
            {
                "any": [
                    {"attribute": "n", "op": "eq", "value": 1},
                    {"attribute": "plan", "op": "eq", "value": "x"},
                ]
            },
            False,
        ),
    ],
)
def test_condition_criteria_ops(api, clock, criteria, expected):
    steps = [
        {"key": "test", "type": "condition", "if": criteria, "then": "yes", "else": "no"},
        {"key": "yes", "type": "exit"},
        {"key": "no", "type": "exit"},
    ]
    live(api, definition("ops", steps))
    api.put("/api/v1/contacts/ann", {"attributes": ATTRIBUTES})
    send(api, event("ann", "signed_up"))
    run_due()
    assert contact(api, "ann")["enrollments"][0]["path"] == ["test", "yes" if expected else "no"]


def test_event_criteria_since_the_enrollment_started_with_where_and_within(api, clock):
    steps = [
        {"key": "pause", "type": "wait", "duration": "P3D", "next": "test"},
        {
            "key": "test",
            "type": "condition",
            "if": {
                "any": [
                    {
                        "event": "visit",
                        "where": [{"property": "page", "op": "eq", "value": "pricing"}],
                    },
                    {"event": "login", "within": "P1D"},
                ]
            },
            "then": "yes",
            "else": "no",
        },
        {"key": "yes", "type": "exit"},
        {"key": "no", "type": "exit"},
    ]
    live(api, definition("events-criteria", steps))
    people = ["before", "pricing", "home", "old-login", "new-login"]
    send(api, event("before", "visit", properties={"page": "pricing"}))
    run_due()
    clock.shift(datetime.timedelta(hours=1))
    send(api, *[event(p, "signed_up") for p in people])
    run_due()
    clock.shift(datetime.timedelta(hours=1))
    send(
        api,
        event("pricing", "visit", properties={"page": "pricing"}),
        event("home", "visit", properties={"page": "home"}),
        event("old-login", "login"),
    )
    run_due()
    clock.shift(datetime.timedelta(days=2, hours=12))
    send(api, event("new-login", "login"))
    run_due()
    clock.shift(datetime.timedelta(hours=12))
    run_due()
    outcome = {p: contact(api, p)["enrollments"][0]["path"][-1] for p in people}
    assert outcome == {
        "before": "no",
        "pricing": "yes",
        "home": "no",
        "old-login": "no",
        "new-login": "yes",
    }


def test_traffic_share_goes_to_the_published_version(api, clock):
    data = definition("share", [{"key": "x", "type": "exit"}])
    live(api, data)
    api.post("/api/v1/journeys/share/versions", data)
    publish(api, "share", 2, traffic=10)
    send(api, *[event(f"c{i}", "signed_up") for i in range(100)])
    run_due()
    versions = [contact(api, f"c{i}")["enrollments"][0]["version"] for i in range(100)]
    assert versions.count(2) < 30  # 10% expected; 30 of 100 is beyond any plausible draw


def test_internal_conversion_event_is_an_event_of_the_contact_with_its_properties(api, clock):
    live(
        api,
        definition(
            "src",
            [{"key": "buy", "type": "convert", "conversion": "paid", "next": None}],
            conversions=[{"key": "paid", "name": "Paid", "value": 30}],
        ),
    )
    live(
        api,
        definition(
            "listener",
            [{"key": "x", "type": "exit"}],
            triggers=[
                {
                    "type": "event",
                    "event": "conversion",
                    "where": [
                        {"property": "journey", "op": "eq", "value": "src"},
                        {"property": "key", "op": "eq", "value": "paid"},
                        {"property": "value", "op": "eq", "value": 30},
                        {"property": "version", "op": "eq", "value": 1},
                        {"property": "step", "op": "eq", "value": "buy"},
                    ],
                }
            ],
        ),
    )
    send(api, event("ann", "signed_up"))
    run_due()
    assert {e["journey"] for e in contact(api, "ann")["enrollments"]} == {"src", "listener"}


def test_exit_when_goal_defaults_to_this_journey(api, clock):
    steps = [
        {
            "key": "check",
            "type": "evaluate_goal",
            "goal": "g",
            "achieved": "pause",
            "not_achieved": None,
        },
        {"key": "pause", "type": "wait", "duration": "P5D", "next": None},
    ]
    data = definition(
        "self-exit",
        steps,
        goals=[
            {"key": "g", "name": "G", "criteria": {"attribute": "plan", "op": "eq", "value": "pro"}}
        ],
        exit_when=[{"type": "goal", "goal": "g"}],
    )
    live(api, data)
    exported = api.get("/api/v1/journeys/self-exit/definition").json()
    assert exported["exit_when"] == [{"type": "goal", "goal": "g"}]
    api.put("/api/v1/contacts/ann", {"attributes": {"plan": "pro"}})
    send(api, event("ann", "signed_up"))
    run_due()
    assert contact(api, "ann")["enrollments"][0]["state"] == "exited"


def test_report_counts_a_converted_enrollment_once_and_sums_every_value(api, clock):
    conversions = [
        {
            "key": "buy",
            "name": "Buy",
            "counting": "every_time",
            "event": {"event": "purchase", "value_property": "amount"},
        }
    ]
    live(api, definition("sum", REPORT_STEPS, conversions=conversions))
    send(api, event("ann", "signed_up"), event("bob", "signed_up"))
    run_due()
    send(
        api,
        event("ann", "purchase", properties={"amount": 10}),
        event("ann", "purchase", properties={"amount": 15}),
    )
    run_due()
    (row,) = api.get("/api/v1/journeys/sum/report").json()["versions"]
    assert (row["enrolled"], row["converted"], row["rate"], row["value"]) == (2, 1, 0.5, 25.0)


def test_report_page_marks_changes_of_the_conversion(api, superuser, clock):
    data = definition("changed", REPORT_STEPS, conversions=REPORT_CONVERSIONS)
    live(api, data)
    clock.shift(datetime.timedelta(days=3))
    data["conversions"][0]["value"] = 99
    assert api.post("/api/v1/journeys/changed/versions", data).status_code == 201
    client = Client()
    client.force_login(superuser)
    html = client.get("/journeys/changed/report/").content.decode()
    assert "Changes to" in html
    assert (
        "2026-03-05" in html
        or "5 Mar 2026" in html
        or "Mar 5, 2026" in html
        or "March 5, 2026" in html
    )


# --- more edges of §1 and §2 ------------------------------------------------------------------


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
    ("key", "ok"),
    [("a", True), ("a_b-9", True), ("a" * 64, True), ("-a", False), ("Ab", False), ("a b", False)],
)
def test_keys_are_slugs_of_at_most_64(api, key, ok):
    steps = [{"key": key, "type": "exit"}]
    data = definition(key if key[0].isalnum() and key.islower() else "slugs", steps)
    data["conversions"] = [{"key": key, "name": "C"}]
    data["goals"] = [{"key": key, "name": "G", "criteria": {"event": "x"}}]
    response = api.post("/api/v1/journeys", data)
    if ok:
        assert response.status_code == 201, response.content
    else:
        found = locs(assert_error_shape(response, 400))
        for loc in (["steps", 0, "key"], ["conversions", 0, "key"], ["goals", 0, "key"]):
            assert loc in found, (loc, found)


def test_evaluate_goal_without_wait_goes_to_not_achieved_at_once(api, clock):
    steps = [
        {
            "key": "check",
            "type": "evaluate_goal",
            "goal": "activated",
            "achieved": "won",
            "not_achieved": "lost",
        },
        GOAL_STEPS[1],
        GOAL_STEPS[2],
    ]
    goal_journey(api, steps)
    send(api, event("ann", "signed_up"))
    run_due()
    enrollment = contact(api, "ann")["enrollments"][0]
    assert (enrollment["path"], enrollment["state"]) == (["check", "lost"], "completed")


def test_goal_within_looks_back_before_the_enrollment(api, clock):
    steps = [
        {
            "key": "check",
            "type": "evaluate_goal",
            "goal": "g",
            "achieved": "won",
            "not_achieved": None,
        },
        {"key": "won", "type": "update_contact", "attributes": {"won": True}, "next": None},
    ]
    goals = [{"key": "g", "name": "G", "criteria": {"event": "login", "within": "P7D"}}]
    live(api, definition("lookback", steps, goals=goals))
    send(api, event("ann", "login"), event("bob", "login"))
    run_due()
    clock.shift(datetime.timedelta(days=2))
    send(api, event("ann", "signed_up"))
    run_due()
    clock.shift(datetime.timedelta(days=6))
    send(api, event("bob", "signed_up"))
    run_due()
    assert contact(api, "ann")["enrollments"][0]["path"] == ["check", "won"]
    assert contact(api, "bob")["enrollments"][0]["path"] == ["check"]


def test_event_conversion_counts_while_active_even_past_its_window(api, clock):
    steps = [{"key": "pause", "type": "wait", "duration": "P10D", "next": None}]
    conversion = {"key": "paid", "name": "Paid", "window": "P1D", "event": {"event": "purchase"}}
    live(api, definition("active-window", steps, conversions=[conversion]))
    send(api, event("ann", "signed_up"))
    run_due()
    clock.shift(datetime.timedelta(days=5))
    send(api, event("ann", "purchase"))
    run_due()
    assert awards(api) == [("paid", 0.0, "event")]


def test_sequential_report_page_shows_p_value_as_before_after_with_charts_and_table(
    api, superuser, clock
):
    data = definition("seq", REPORT_STEPS, conversions=REPORT_CONVERSIONS)
    live(api, data)
    enroll_and_convert(api, "a", 6, 2, 1)
    api.post("/api/v1/journeys/seq/versions", data)
    publish(api, "seq", 2)
    enroll_and_convert(api, "b", 6, 4, 1)
    client = Client()
    client.force_login(superuser)
    html = client.get("/journeys/seq/report/").content.decode()
    assert "<table" in html and "<svg" in html
    assert "before/after" in html.lower()
    csv = client.get("/journeys/seq/report.csv").content.decode().splitlines()
    assert len(csv) == 3  # header and one row per version


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/journeys/t/definition?version=abc", 400),
        ("/api/v1/journeys/t/definition?version=9", 404),
        ("/api/v1/journeys/t/report?baseline=1.5", 400),
    ],
)
def test_bad_query_parameters_are_contract_errors(api, path, status):
    create(api, definition("t", [{"key": "x", "type": "exit"}]))
    assert_error_shape(api.get(path), status)


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


@pytest.mark.parametrize("external_id", ["crm/123", "tenant/42/user/7", "ann@example.com", "a b+c"])
def test_any_external_id_an_event_creates_can_be_read_and_updated(api, external_id):
    send(api, event(external_id, "signed_up"))
    path = "/api/v1/contacts/" + quote(external_id, safe="")
    assert api.get(path).json()["external_id"] == external_id
    response = api.put(path, {"attributes": {"plan": "pro"}})
    assert response.status_code == 200
    assert api.get(path).json()["attributes"] == {"plan": "pro"}
    # Unquoted slashes reach the same contact.
    assert api.get(f"/api/v1/contacts/{external_id}").json()["external_id"] == external_id


def test_contract_example_exits_on_its_own_paid_conversion_from_an_event(api, clock):
    create(api, CONTRACT_EXAMPLE)
    publish(api, "trial-nurture", 1)
    api.put("/api/v1/contacts/ann", {"email": "ann@example.com", "attributes": {"plan": "pro"}})
    send(api, event("ann", "trial_started", properties={"plan": "pro"}))
    run_due()
    clock.shift(datetime.timedelta(days=1))
    send(api, event("ann", "subscription_started", properties={"amount": 99}))
    run_due()
    body = contact(api, "ann")
    (enrollment,) = body["enrollments"]
    assert (enrollment["state"], enrollment["path"]) == ("exited", ["welcome", "wait-2d"])
    (award,) = body["conversions"]
    assert (award["conversion"], award["value"], award["source"], award["step"]) == (
        "paid",
        99.0,
        "event",
        None,
    )


def test_a_missing_conversion_or_goal_of_an_existing_journey_is_a_warning(api):
    create(api, definition("lead-nurture", [{"key": "x", "type": "exit"}]))
    body = create(api, CONTRACT_EXAMPLE)
    warnings = {tuple(w["loc"]): w["message"] for w in body["warnings"]}
    assert set(warnings) >= {("triggers", 1, "conversion"), ("triggers", 2, "journey")}
    assert "became-customer" in warnings[("triggers", 1, "conversion")]
    response = api.post("/api/v1/journeys/trial-nurture/versions", CONTRACT_EXAMPLE)
    assert response.status_code == 201
    assert [w["loc"] for w in response.json()["warnings"]] == [w["loc"] for w in body["warnings"]]


def test_internal_goal_achieved_event_carries_journey_version_key_and_step(api, clock):
    live(
        api,
        definition(
            "goal-src",
            [{"key": "check", "type": "evaluate_goal", "goal": "active", "achieved": None}],
            goals=[
                {
                    "key": "active",
                    "name": "Active",
                    "criteria": {"attribute": "plan", "op": "exists"},
                }
            ],
        ),
    )
    where = [
        {"property": "journey", "op": "eq", "value": "goal-src"},
        {"property": "key", "op": "eq", "value": "active"},
        {"property": "version", "op": "eq", "value": 1},
        {"property": "step", "op": "eq", "value": "check"},
    ]
    live(
        api,
        definition(
            "goal-listener",
            [{"key": "x", "type": "exit"}],
            triggers=[{"type": "event", "event": "goal_achieved", "where": where}],
        ),
    )
    api.put("/api/v1/contacts/ann", {"attributes": {"plan": "pro"}})
    send(api, event("ann", "signed_up"))
    run_due()
    assert {e["journey"] for e in contact(api, "ann")["enrollments"]} == {
        "goal-src",
        "goal-listener",
    }


def test_exit_when_event_ends_an_active_enrollment_as_exited(api, clock):
    create(api, CONTRACT_EXAMPLE)
    publish(api, "trial-nurture", 1)
    send(
        api,
        event("ann", "trial_started", properties={"plan": "pro"}),
        event("bob", "trial_started", properties={"plan": "pro"}),
    )
    run_due()
    clock.shift(datetime.timedelta(hours=5))
    send(api, event("ann", "unsubscribed"))
    run_due()
    ann = contact(api, "ann")["enrollments"][0]
    assert (ann["state"], ann["path"]) == ("exited", ["welcome", "wait-2d"])
    assert datetime.datetime.fromisoformat(ann["ended_at"]) == START + datetime.timedelta(hours=5)
    assert contact(api, "bob")["enrollments"][0]["state"] == "active"
    # Nothing more happens to an exited enrollment.
    clock.shift(datetime.timedelta(days=3))
    run_due()
    assert contact(api, "ann")["enrollments"][0]["path"] == ["welcome", "wait-2d"]


def test_report_steps_list_every_step_of_each_version_even_unentered(api, clock):
    steps = [
        {
            "key": "is-pro",
            "type": "condition",
            "if": {"attribute": "plan", "op": "eq", "value": "pro"},
            "then": "pro-mail",
            "else": None,
        },
        {"key": "pro-mail", "type": "send_email", "subject": "s", "body": "b", "next": None},
    ]
    live(api, definition("funnel", steps, conversions=REPORT_CONVERSIONS))
    send(api, event("ann", "signed_up"))
    run_due()
    report = api.get("/api/v1/journeys/funnel/report").json()
    assert [(s["step"], s["entered"], s["converted"]) for s in report["steps"]] == [
        ("is-pro", 1, 0),
        ("pro-mail", 0, 0),
    ]


def test_run_due_delivers_due_email_and_sms(api, clock, mailoutbox):
    from journeys import sms

    sms.outbox.clear()
    steps = [
        {
            "key": "mail",
            "type": "send_email",
            "subject": "Hi {{ contact.attributes.first_name }}",
            "body": "Welcome",
            "next": "pause",
        },
        {"key": "pause", "type": "wait", "duration": "PT1H", "next": "text"},
        {
            "key": "text",
            "type": "send_sms",
            "text": "Need a hand, {{ contact.attributes.first_name }}?",
        },
    ]
    live(api, definition("messages", steps))
    api.put(
        "/api/v1/contacts/ann",
        {"email": "ann@example.com", "attributes": {"first_name": "Ann", "phone": "+15550100"}},
    )
    send(api, event("ann", "signed_up"))
    run_due()
    assert [(m.to, m.subject) for m in mailoutbox] == [(["ann@example.com"], "Hi Ann")]
    assert sms.outbox == []
    clock.shift(datetime.timedelta(hours=1))
    run_due()
    assert sms.outbox == [{"to": "+15550100", "text": "Need a hand, Ann?"}]
    run_due()
    assert len(mailoutbox) == 1 and len(sms.outbox) == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("put", "/api/v1/contacts/ann", ""),
        ("put", "/api/v1/contacts/ann", "[]"),
        ("post", "/api/v1/events", ""),
        ("post", "/api/v1/events", "null"),
        ("post", "/api/v1/journeys/any/enrollments", ""),
        ("post", "/api/v1/journeys", ""),
    ],
)
def test_a_body_that_is_not_an_object_is_named_as_the_body(api, method, path, body):
    (error,) = assert_error_shape(getattr(api, method)(path, body), 400)
    assert error["loc"] == ["body"]
    assert "JSON object" in error["message"]


def test_a_draft_that_drops_an_event_conversion_does_not_change_the_live_version(api, clock):
    steps = [{"key": "pause", "type": "wait", "duration": "P5D", "next": None}]
    paid = {"key": "paid", "name": "Paid", "value": 3, "event": {"event": "purchase"}}
    live(api, definition("drop", steps, conversions=[paid]))
    send(api, event("ann", "signed_up"))
    run_due()
    draft = definition("drop", steps, conversions=[{"key": "other", "name": "Other"}])
    assert api.post("/api/v1/journeys/drop/versions", draft).status_code == 201
    send(api, event("ann", "purchase"))
    run_due()
    assert awards(api) == [("paid", 3.0, "event")]


def test_admin_pages_of_report_rollups_load_and_are_read_only(api, superuser, clock):
    from django.apps import apps

    live(api, definition("rolled", REPORT_STEPS, conversions=REPORT_CONVERSIONS))
    enroll_and_convert(api, "r", 3, 1, 5)
    call_command("rebuild_report_rollups", stdout=io.StringIO())
    client = Client()
    client.force_login(superuser)
    for model in apps.get_app_config("reporting").get_models():
        base = f"/admin/reporting/{model._meta.model_name}/"
        assert client.get(base).status_code == 200, model
        assert client.get(base + "add/").status_code == 403, model
        for pk in model.objects.values_list("pk", flat=True):
            page = client.get(f"{base}{pk}/change/")
            assert page.status_code == 200, model
            assert b'name="_save"' not in page.content


def test_an_event_sent_after_the_trigger_counts_even_if_processed_together(api, clock):
    steps = [
        {
            "key": "check",
            "type": "evaluate_goal",
            "goal": "g",
            "achieved": "won",
            "not_achieved": None,
        },
        {"key": "won", "type": "exit"},
    ]
    goals = [{"key": "g", "name": "G", "criteria": {"event": "project_created"}}]
    live(api, definition("lag", steps, goals=goals))
    send(api, event("ann", "signed_up"))
    clock.shift(datetime.timedelta(minutes=1))
    send(api, event("ann", "project_created"))
    clock.shift(datetime.timedelta(minutes=1))
    run_due()  # the worker comes by a minute later
    assert contact(api, "ann")["enrollments"][0]["path"] == ["check", "won"]


def test_reports_show_lift_over_the_holdout(api, superuser, clock):
    settings = {"reentry": "once", "holdout_percent": 50}
    live(api, definition("lift", REPORT_STEPS, conversions=REPORT_CONVERSIONS, settings=settings))
    enroll_and_convert(api, "h", 40, 20, 1)
    people = [contact(api, f"h{i}")["enrollments"][0] for i in range(40)]
    held = sum(e["held_out"] for e in people)
    held_converted = sum(e["held_out"] for e in people[:20])
    report = api.get("/api/v1/journeys/lift/report").json()
    (row,) = report["versions"]
    assert (row["enrolled"], row["converted"]) == (40, 20)
    assert report["holdout"]["held_out"]["enrolled"] == held
    assert report["holdout"]["held_out"]["converted"] == held_converted
    client = Client()
    client.force_login(superuser)
    html = client.get("/journeys/lift/report/").content.decode()
    assert "Lift over the holdout" in html


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_create_api_key_refuses_a_blank_or_too_long_name(name):
    from journeys.models import ApiKey

    with pytest.raises(CommandError, match="name"):
        call_command("create_api_key", name, stdout=io.StringIO())
    assert not ApiKey.objects.exists()


def test_editing_a_live_journey_in_the_editor_makes_a_draft_and_keeps_the_live_version(
    api, publisher, clock
):
    steps = [{"key": "pause", "type": "wait", "duration": "P1D", "next": None}]
    live(api, definition("edited", steps))
    before = api.get("/api/v1/journeys/edited/definition?version=1").json()
    client = Client()
    client.force_login(publisher)
    response = client.post(
        "/journeys/edited/steps/add/", {"after": "pause", "port": "next", "type": "send_sms"}
    )
    assert response.status_code in (200, 302)
    versions = {
        v["number"]: v["state"] for v in api.get("/api/v1/journeys/edited").json()["versions"]
    }
    assert versions == {1: "live", 2: "draft"}
    assert api.get("/api/v1/journeys/edited/definition?version=1").json() == before
    send(api, event("ann", "signed_up"))
    run_due()
    assert contact(api, "ann")["enrollments"][0]["version"] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_run_due_at_once_do_nothing_twice(api, mailoutbox):
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks (SKIP LOCKED) to run two at once")
    steps = [
        {"key": "hello", "type": "send_email", "subject": "Hi", "body": "x", "next": "buy"},
        {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
    ]
    conversions = [{"key": "paid", "name": "Paid", "value": 1}]
    live(api, definition("together", steps, conversions=conversions))
    people = [f"p{i}" for i in range(40)]
    for person in people:
        api.put(f"/api/v1/contacts/{person}", {"email": f"{person}@example.com"})
    send(api, *[event(p, "signed_up") for p in people])
    errors = []

    def worker():
        try:
            run_due()
        except Exception as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run_due()
    assert errors == []
    assert sorted(m.to[0] for m in mailoutbox) == sorted(f"{p}@example.com" for p in people)
    for person in people:
        body = contact(api, person)
        assert len(body["enrollments"]) == 1
        assert [a["conversion"] for a in body["conversions"]] == ["paid"]


def test_event_conversions_count_from_when_the_contact_entered(api, clock):
    paid = {
        "key": "paid",
        "name": "Paid",
        "value": 1,
        "window": "P7D",
        "event": {"event": "purchase"},
    }
    # Active for a day: a purchase made before entering must not count for it.
    pause = [{"key": "pause", "type": "wait", "duration": "P1D", "next": None}]
    live(api, definition("entered-active", pause, conversions=[paid]))
    # Over at once: a purchase right after entering counts within the window, even when a
    # worker processed the trigger after the purchase was sent.
    tag = [{"key": "tag", "type": "update_contact", "attributes": {"in": True}, "next": None}]
    live(
        api,
        definition(
            "entered-window",
            tag,
            conversions=[paid],
            triggers=[{"type": "event", "event": "registered"}],
        ),
    )
    send(api, event("ann", "signed_up"), event("bob", "registered"))
    clock.shift(datetime.timedelta(minutes=1))
    send(api, event("bob", "purchase"))
    send(api, event("ann", "purchase", timestamp=(START - datetime.timedelta(days=2)).isoformat()))
    clock.shift(datetime.timedelta(minutes=1))
    run_due()
    assert contact(api, "ann")["enrollments"][0]["state"] == "active"
    assert awards(api, "ann") == []
    assert contact(api, "bob")["enrollments"][0]["state"] == "completed"
    assert awards(api, "bob") == [("paid", 1.0, "event")]
