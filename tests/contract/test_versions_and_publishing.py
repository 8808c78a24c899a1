"""docs/contract.md §1 and §2 on versions: editing a live journey (over the API or in the
editor) makes a draft and never changes the live version; publishing retires the live one
while its running enrollments stay on it; `traffic` (1 to 99) keeps both live and gives the
published version that share of new enrollments at random."""

import datetime

import pytest
from django.test import Client

from tests.contract.public_surface import (
    assert_error_shape,
    awards,
    contact,
    definition,
    event,
    live,
    locs,
    publish,
    run_due,
    send,
)

pytestmark = pytest.mark.django_db


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


def test_traffic_share_goes_to_the_published_version(api, clock):
    data = definition("share", [{"key": "x", "type": "exit"}])
    live(api, data)
    api.post("/api/v1/journeys/share/versions", data)
    publish(api, "share", 2, traffic=10)
    send(api, *[event(f"c{i}", "signed_up") for i in range(100)])
    run_due()
    versions = [contact(api, f"c{i}")["enrollments"][0]["version"] for i in range(100)]
    assert versions.count(2) < 30  # 10% expected; 30 of 100 is beyond any plausible draw


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
