"""docs/contract.md §1, a journey's `settings`: `holdout_percent` (held-out entrants take
no step but their event conversions still count; default 0) and `reentry` (`once`, the
default, `after_exit`, `concurrent`)."""

import datetime

import pytest

from tests.contract.public_surface import awards, contact, definition, event, live, run_due, send

pytestmark = pytest.mark.django_db


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
