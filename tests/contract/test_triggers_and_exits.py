"""docs/contract.md §1, what starts and ends an enrollment: `triggers` with `where`
filters; awarded conversions and achieved goals as events of the contact (`conversion`,
`goal_achieved`, with journey, version, key, value and step) that start journeys and trip
`exit_when` (whose `journey` defaults to this one); such chains cut off past depth 8."""

import datetime

import pytest

from journeys.tests.contract_example import CONTRACT_EXAMPLE
from tests.contract.public_surface import (
    START,
    contact,
    create,
    definition,
    event,
    live,
    publish,
    run_due,
    send,
)

pytestmark = pytest.mark.django_db


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
