"""Definitions that several contract modules share: steps that break every rule of
docs/contract.md §1 at once (the API and `import_journey` must both list every error), and
the report journey with the traffic that fills it (the report API and the report pages)."""

from tests.contract.public_surface import event, run_due, send

BROKEN_STEPS = [
    {"key": "start", "type": "send_email", "subject": "Hi", "body": "x", "next": "nowhere"},
    {"key": "island", "type": "update_contact", "attributes": {"a": 1}, "next": None},
    {"key": "loop-a", "type": "send_sms", "text": "a", "next": "loop-b"},
    {"key": "loop-b", "type": "evaluate_goal", "goal": "ghost-goal", "achieved": "loop-a"},
    {"key": "buy", "type": "convert", "conversion": "ghost-conversion", "next": None},
]


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
