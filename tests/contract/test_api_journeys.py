"""docs/contract.md §2, the journey calls: the list with status, live versions and
conversion keys, a definition that round-trips through `POST .../versions` unchanged, a new
draft that replaces an unpublished one, and enrollments answering 201, or 409 when re-entry
forbids them."""

import copy

import pytest

from journeys.tests.contract_example import CONTRACT_EXAMPLE
from tests.contract.public_surface import assert_error_shape, create, definition, live

pytestmark = pytest.mark.django_db


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
