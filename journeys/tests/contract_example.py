"""The definition example of docs/contract.md §1, as tests use it (the two other journeys
it references do not exist, so it comes with two warnings)."""

import copy

CONTRACT_EXAMPLE = {
    "key": "trial-nurture",
    "name": "Trial nurture",
    "description": "Turn trials into paid plans",
    "settings": {"reentry": "once", "holdout_percent": 0},
    "triggers": [
        {
            "type": "event",
            "event": "trial_started",
            "where": [{"property": "plan", "op": "eq", "value": "pro"}],
        },
        {"type": "conversion", "journey": "lead-nurture", "conversion": "became-customer"},
        {"type": "goal", "journey": "onboarding", "goal": "activated"},
    ],
    "exit_when": [
        {"type": "event", "event": "unsubscribed"},
        {"type": "conversion", "conversion": "paid"},
    ],
    "goals": [
        {
            "key": "activated",
            "name": "Activated",
            "criteria": {"event": "project_created"},
            "conversion": "activation",
        }
    ],
    "conversions": [
        {
            "key": "paid",
            "name": "Started paid plan",
            "value": 49.0,
            "counting": "once_per_enrollment",
            "window": "P30D",
            "event": {"event": "subscription_started", "value_property": "amount"},
        },
        {"key": "activation", "name": "Activated account"},
    ],
    "steps": [
        {
            "key": "welcome",
            "type": "send_email",
            "subject": "Welcome {{ contact.attributes.first_name }}",
            "body": "...",
            "next": "wait-2d",
        },
        {"key": "wait-2d", "type": "wait", "duration": "P2D", "next": "ab"},
        {
            "key": "ab",
            "type": "split",
            "paths": [{"weight": 50, "next": "nudge"}, {"weight": 50, "next": "check"}],
        },
        {"key": "nudge", "type": "send_sms", "text": "Need a hand?", "next": "check"},
        {
            "key": "check",
            "type": "evaluate_goal",
            "goal": "activated",
            "wait": "P7D",
            "achieved": "is-pro",
            "not_achieved": None,
        },
        {
            "key": "is-pro",
            "type": "condition",
            "if": {"attribute": "plan", "op": "eq", "value": "pro"},
            "then": "convert",
            "else": "tag",
        },
        {
            "key": "tag",
            "type": "update_contact",
            "attributes": {"stage": "activated"},
            "next": None,
        },
        {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
    ],
}


def contract_example(**changes) -> dict:
    """A deep copy of the example, with top-level fields replaced."""
    return {**copy.deepcopy(CONTRACT_EXAMPLE), **changes}


def simple_definition(key: str = "simple", **changes) -> dict:
    """A small valid definition: one trigger, one conversion, two steps."""
    return {
        "key": key,
        "name": f"Journey {key}",
        "triggers": [{"type": "event", "event": "signed_up"}],
        "conversions": [{"key": "paid", "name": "Paid"}],
        "steps": [
            {"key": "hello", "type": "send_email", "subject": "Hi", "body": "Hello", "next": "pay"},
            {"key": "pay", "type": "convert", "conversion": "paid", "next": None},
        ],
        **changes,
    }
