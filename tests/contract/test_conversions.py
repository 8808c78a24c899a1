"""docs/contract.md §1, awarding conversions: `convert` awards its conversion and only
that; a conversion with `event` is awarded while the enrollment is active or within
`window` after it started, valued by `value_property` or `value` (default 0), counted
`once_per_enrollment` (default), `once_per_contact` or `every_time`, filtered by `where`."""

import datetime

import pytest

from tests.contract.public_surface import (
    START,
    awards,
    contact,
    definition,
    event,
    live,
    run_due,
    send,
)

pytestmark = pytest.mark.django_db


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
