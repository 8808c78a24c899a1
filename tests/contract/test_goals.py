"""docs/contract.md §1, `evaluate_goal`: achieved now or while it waits (an incoming event
re-checks at once), `not_achieved` when the wait runs out or there is none, the goal's
linked conversion awarded, and which events count (since the enrollment started, or within
the criteria's duration)."""

import datetime

import pytest

from tests.contract.public_surface import contact, definition, event, live, run_due, send

pytestmark = pytest.mark.django_db

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
