"""Journeys and messages the action tests share, made through the public actions."""

import datetime

from journeys import sms
from journeys.actions.events import ingest_events
from journeys.actions.sweep import run_due

T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)


NURTURE_STEPS = [
    {
        "key": "welcome",
        "type": "send_email",
        "subject": "Welcome {{ contact.attributes.first_name }}",
        "body": "Hello {{ contact.attributes.first_name }}, your plan is {{ contact.attributes.plan }}.",
        "next": "tag",
    },
    {"key": "tag", "type": "update_contact", "attributes": {"stage": "welcomed"}, "next": "is-pro"},
    {
        "key": "is-pro",
        "type": "condition",
        "if": {"attribute": "plan", "op": "eq", "value": "pro"},
        "then": "convert",
        "else": None,
    },
    {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
]


PAID = {"key": "paid", "name": "Paid", "value": 49.0}


def send(*events, now=None):
    """Ingest events given as (id, contact, name[, properties])."""
    return ingest_events(
        events=[
            {"id": e[0], "contact": e[1], "name": e[2], "properties": e[3] if len(e) > 3 else {}}
            for e in events
        ],
        now=now,
    )


def run(now=None):
    return run_due(now=now)


WAIT_STEPS = [
    {"key": "w", "type": "wait", "duration": "P2D", "next": "tag"},
    {"key": "tag", "type": "update_contact", "attributes": {"done": True}, "next": None},
]


GOAL_STEPS = [
    {
        "key": "check",
        "type": "evaluate_goal",
        "goal": "activated",
        "wait": "P7D",
        "achieved": "yay",
        "not_achieved": "nay",
    },
    {"key": "yay", "type": "update_contact", "attributes": {"result": "yes"}, "next": None},
    {"key": "nay", "type": "update_contact", "attributes": {"result": "no"}, "next": None},
]


GOALS = [
    {
        "key": "activated",
        "name": "Activated",
        "criteria": {"event": "project_created"},
        "conversion": "activation",
    }
]


ACTIVATION = {"key": "activation", "name": "Activation", "value": 5.0}


EVENT_CONVERSION_STEPS = [{"key": "w", "type": "wait", "duration": "P10D", "next": None}]


class BrokenSMS(sms.BaseSMSBackend):
    def send(self, *, to, text):
        raise ConnectionError("provider down")


AWKWARD_TEXT = [
    'a"b',
    "back\\slash",
    "{braces},comma",
    "NULL",
    "",
    "  spaced ",
    "é ✓ 😀",
    "'quote'",
]
