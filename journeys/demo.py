"""The demo a newcomer sees: the product's four use cases, run by the real engine.

`seed_demo` creates each journey through the same actions the API uses, publishes two
versions of each (one pair as a randomized split), then plays eight weeks of contacts and
their events day by day, moving `now` forward in-process and letting `run_due` do the
work. Nothing is written into report tables by hand: every figure a report shows comes from
enrollments, visits, messages and awards the engine produced.

Contact behaviour is drawn from a seeded random source with per-version odds, so version
comparisons have something real to find and every run of the demo looks the same.

Simulated: the email provider's feedback. No email leaves the demo, so nothing is really
delivered, opened or clicked; `_simulate_delivery_feedback` draws those events and hands
them to `record_delivery_events`, the action a provider's tracking webhook calls, so the
report's delivered, opened, clicked, bounced and unsubscribed figures come from the real
code path with made-up events.
"""

import copy
import dataclasses
import heapq
import itertools
import random
from datetime import UTC, datetime, timedelta

from anymail.signals import AnymailTrackingEvent, EventType
from django.test import override_settings
from django.utils import timezone

from conversions.models import Conversion, Goal, Revision
from journeys.actions import enrollments
from journeys.actions.delivery import record_delivery_events
from journeys.actions.events import ingest_events
from journeys.actions.sweep import run_due
from journeys.actions.versions import create_journey, publish_version, save_draft_version
from journeys.models import Contact, Enrollment, Journey, JourneyVersion, OutboxMessage

EMAIL_FOOTER = "\n\n— The Waypoint team\nUnsubscribe: reply STOP."


def _email(key, subject, body, next_key, name=""):
    step = {"key": key, "type": "send_email", "subject": subject, "body": body + EMAIL_FOOTER}
    if name:
        step["name"] = name
    step["next"] = next_key
    return step


LEAD_TO_CUSTOMER = {
    "key": "lead-to-customer",
    "name": "Lead to customer",
    "description": "Nurture new leads from the website until they become paying customers.",
    "settings": {"reentry": "once", "holdout_percent": 10},
    "triggers": [{"type": "event", "event": "lead_created"}],
    "exit_when": [
        {"type": "event", "event": "unsubscribed"},
        {"type": "conversion", "conversion": "became-customer"},
    ],
    "goals": [
        {
            "key": "engaged",
            "name": "Engaged with content",
            "criteria": {"event": "content_clicked"},
            "conversion": "engaged-lead",
        }
    ],
    "conversions": [
        {
            "key": "became-customer",
            "name": "Became customer",
            "value": 1200,
            "counting": "once_per_contact",
            "window": "P45D",
            "event": {"event": "deal_won", "value_property": "amount"},
        },
        {
            "key": "booked-meeting",
            "name": "Booked meeting",
            "value": 0,
            "event": {"event": "meeting_booked"},
        },
        {"key": "engaged-lead", "name": "Engaged lead", "value": 0},
    ],
    "steps": [
        _email(
            "welcome",
            "Thanks for your interest, {{ contact.attributes.first_name }}",
            "Here is the guide you asked for.",
            "wait-2d",
            name="Welcome",
        ),
        {"key": "wait-2d", "type": "wait", "duration": "P2D", "next": "case-study"},
        _email(
            "case-study",
            "How teams like {{ contact.attributes.company }} grow with us",
            "A five-minute read on what our customers changed.",
            "engaged-check",
            name="Case study",
        ),
        {
            "key": "engaged-check",
            "type": "evaluate_goal",
            "goal": "engaged",
            "wait": "P5D",
            "achieved": "is-large",
            "not_achieved": "last-nudge",
        },
        {
            "key": "is-large",
            "type": "condition",
            "if": {"attribute": "company_size", "op": "gte", "value": 50},
            "then": "sales-call",
            "else": "self-serve",
        },
        _email(
            "sales-call",
            "Shall we talk, {{ contact.attributes.first_name }}?",
            "Book 20 minutes with our team: we will tailor a plan to you.",
            None,
            name="Book a call",
        ),
        _email(
            "self-serve",
            "Start in minutes",
            "Pick a plan and start today.",
            None,
            name="Self-serve offer",
        ),
        _email(
            "last-nudge",
            "Still looking?",
            "Reply to this email and a person answers.",
            None,
            name="Last nudge",
        ),
    ],
}

TRIAL_TO_PAID = {
    "key": "trial-to-paid",
    "name": "Trial to paid",
    "description": "Turn trials into paid plans.",
    "settings": {"reentry": "once", "holdout_percent": 0},
    "triggers": [{"type": "event", "event": "trial_started"}],
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
            "value": 49,
            "counting": "once_per_enrollment",
            "window": "P30D",
            "event": {"event": "subscription_started", "value_property": "amount"},
        },
        {"key": "activation", "name": "Activated account", "value": 0},
    ],
    "steps": [
        _email(
            "welcome",
            "Welcome {{ contact.attributes.first_name }}",
            "Your trial is ready. Create your first project to see it work.",
            "wait-2d",
            name="Welcome",
        ),
        {"key": "wait-2d", "type": "wait", "duration": "P2D", "next": "check"},
        {
            "key": "check",
            "type": "evaluate_goal",
            "goal": "activated",
            "wait": "P5D",
            "achieved": "upgrade-offer",
            "not_achieved": "nudge",
        },
        {
            "key": "nudge",
            "type": "send_sms",
            "text": "Need a hand with your trial? Reply HELP.",
            "next": None,
        },
        _email(
            "upgrade-offer",
            "Keep your projects: upgrade",
            "Your trial ends soon. Upgrade to keep everything.",
            None,
            name="Upgrade offer",
        ),
    ],
}

SALES_FOLLOW_UP = {
    "key": "sales-follow-up",
    "name": "Sales follow-up",
    "description": "Follow up after a product demo until the proposal is accepted.",
    "settings": {"reentry": "after_exit", "holdout_percent": 0},
    "triggers": [{"type": "event", "event": "demo_completed"}],
    "exit_when": [{"type": "event", "event": "deal_lost"}],
    "goals": [
        {"key": "replied", "name": "Replied", "criteria": {"event": "email_replied"}},
    ],
    "conversions": [
        {
            "key": "proposal-accepted",
            "name": "Proposal accepted",
            "value": 2500,
            "counting": "once_per_enrollment",
            "window": "P30D",
            "event": {"event": "proposal_signed", "value_property": "amount"},
        },
        {"key": "second-meeting", "name": "Second meeting", "value": 0},
    ],
    "steps": [
        _email(
            "recap",
            "Your demo recap",
            "Thanks for your time, {{ contact.attributes.first_name }}. The recording and "
            "slides are attached.",
            "wait-3d",
            name="Demo recap",
        ),
        {"key": "wait-3d", "type": "wait", "duration": "P3D", "next": "replied-check"},
        {
            "key": "replied-check",
            "type": "evaluate_goal",
            "goal": "replied",
            "wait": "P4D",
            "achieved": "meeting",
            "not_achieved": "proposal",
        },
        {"key": "meeting", "type": "convert", "conversion": "second-meeting", "next": "proposal"},
        _email(
            "proposal",
            "Your proposal",
            "Here is the proposal we discussed.",
            "wait-5d",
            name="Proposal",
        ),
        {"key": "wait-5d", "type": "wait", "duration": "P5D", "next": "reminder"},
        {
            "key": "reminder",
            "type": "send_sms",
            "text": "Any questions on the proposal?",
            "next": None,
        },
    ],
}

RENEWAL = {
    "key": "renewal",
    "name": "Renewal",
    "description": "Remind customers before their subscription renews.",
    "settings": {"reentry": "after_exit", "holdout_percent": 0},
    "triggers": [{"type": "event", "event": "renewal_due"}],
    "exit_when": [{"type": "conversion", "conversion": "renewed"}],
    "goals": [],
    "conversions": [
        {
            "key": "renewed",
            "name": "Renewed",
            "value": 600,
            "counting": "once_per_enrollment",
            "window": "P30D",
            "event": {"event": "subscription_renewed", "value_property": "amount"},
        },
    ],
    "steps": [
        {
            "key": "auto-renew",
            "type": "condition",
            "if": {"attribute": "auto_renew", "op": "eq", "value": True},
            "then": "heads-up",
            "else": "reminder",
        },
        _email(
            "heads-up",
            "Your plan renews soon",
            "Nothing to do: it renews by itself.",
            None,
            name="Heads-up",
        ),
        _email(
            "reminder",
            "Time to renew, {{ contact.attributes.first_name }}",
            "Renew now to keep your plan and your price.",
            "wait-7d",
            name="Reminder",
        ),
        {"key": "wait-7d", "type": "wait", "duration": "P7D", "next": "last-call"},
        {
            "key": "last-call",
            "type": "send_sms",
            "text": "Your plan ends in a week. Renew now.",
            "next": "tag",
        },
        {
            "key": "tag",
            "type": "update_contact",
            "attributes": {"renewal_risk": "high"},
            "next": None,
        },
    ],
}


def _second_version(definition: dict, changes) -> dict:
    second = copy.deepcopy(definition)
    changes(second)
    return second


def _rekey(d, old: str, new: str) -> None:
    """Rename a step and every pointer to it: a key says what the step does (`wait-2d`
    waits two days), so a version that changes the wait names it anew."""
    for step in d["steps"]:
        if step["key"] == old:
            step["key"] = new
        for pointer in ("next", "then", "else", "achieved", "not_achieved"):
            if step.get(pointer) == old:
                step[pointer] = new


def _lead_v2(d):
    # Version 2 asks for the meeting straight away instead of waiting for engagement.
    steps = {s["key"]: s for s in d["steps"]}
    steps["welcome"]["subject"] = "{{ contact.attributes.first_name }}, your guide + a call?"
    steps["wait-2d"]["duration"] = "P1D"
    _rekey(d, "wait-2d", "wait-1d")


def _trial_v2(d):
    steps = {s["key"]: s for s in d["steps"]}
    steps["welcome"]["body"] = "Your trial is ready. Here is a 3-minute video to start."
    steps["check"]["wait"] = "P7D"


def _sales_v2(d):
    steps = {s["key"]: s for s in d["steps"]}
    steps["wait-3d"]["duration"] = "P2D"
    _rekey(d, "wait-3d", "wait-2d")


def _renewal_v2(d):
    steps = {s["key"]: s for s in d["steps"]}
    steps["reminder"]["subject"] = "Keep your price: renew today"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One use case: its two versions and how its contacts behave on each."""

    definition: dict
    second: dict
    trigger: str
    # Share of new enrollments for version 2 in a split test run from the demo's first day
    # (so the whole comparison is randomized); None = version 2 replaces version 1 halfway.
    split_traffic: int | None
    # Per version: [(event name, probability, delay in days, properties)] after entry.
    behaviour: dict
    # New contacts a day, as a multiple of `contacts_per_day`.
    traffic: float = 1.0


# The odds are sized so that, with the default seed, trial-to-paid's split reaches a verdict
# (each version past 150 conversions and 150 non-conversions, always-valid p < 0.05 for a
# 10-point difference) while renewal's split, 2 points apart, honestly does not; the lead
# journey's 10% holdout is large enough to convert a few contacts.
# journeys/tests/test_demo.py holds the default seed to those verdicts.
SCENARIOS = [
    Scenario(
        LEAD_TO_CUSTOMER,
        _second_version(LEAD_TO_CUSTOMER, _lead_v2),
        "lead_created",
        None,
        {
            1: [
                ("content_clicked", 0.45, 3, {}),
                ("meeting_booked", 0.20, 6, {}),
                ("deal_won", 0.12, 12, {"amount": 1200}),
            ],
            2: [
                ("content_clicked", 0.50, 2, {}),
                ("meeting_booked", 0.28, 4, {}),
                ("deal_won", 0.15, 10, {"amount": 1400}),
            ],
        },
        traffic=1.5,
    ),
    Scenario(
        TRIAL_TO_PAID,
        _second_version(TRIAL_TO_PAID, _trial_v2),
        "trial_started",
        50,
        {
            1: [
                ("project_created", 0.55, 1, {}),
                ("subscription_started", 0.30, 9, {"amount": 49}),
            ],
            2: [
                ("project_created", 0.65, 1, {}),
                ("subscription_started", 0.42, 8, {"amount": 49}),
            ],
        },
        traffic=2.2,
    ),
    Scenario(
        SALES_FOLLOW_UP,
        _second_version(SALES_FOLLOW_UP, _sales_v2),
        "demo_completed",
        None,
        {
            1: [("email_replied", 0.40, 4, {}), ("proposal_signed", 0.18, 14, {"amount": 2500})],
            2: [("email_replied", 0.42, 3, {}), ("proposal_signed", 0.21, 12, {"amount": 2800})],
        },
    ),
    Scenario(
        RENEWAL,
        _second_version(RENEWAL, _renewal_v2),
        "renewal_due",
        50,
        {
            1: [("subscription_renewed", 0.50, 6, {"amount": 600})],
            2: [("subscription_renewed", 0.51, 5, {"amount": 600})],
        },
        traffic=1.5,
    ),
]

FIRST_NAMES = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Ken",
    "Radia",
    "Linus",
    "Frances",
    "Donald",
    "Margaret",
    "Tim",
    "Katherine",
    "Guido",
    "Anita",
    "Dennis",
]
COMPANIES = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Soylent",
    "Tyrell",
    "Cyberdyne",
    "Aperture",
    "Wonka",
]


def _contact_attributes(rng: random.Random) -> dict:
    return {
        "first_name": rng.choice(FIRST_NAMES),
        "company": rng.choice(COMPANIES),
        "company_size": rng.choice([5, 12, 30, 60, 150, 800]),
        "plan": rng.choice(["free", "pro", "pro", "team"]),
        "auto_renew": rng.random() < 0.35,
        # Most, not all: a contact without a number shows how a failed SMS looks.
        **({"phone": f"+1555{rng.randint(0, 9999999):07d}"} if rng.random() < 0.95 else {}),
    }


def demo_definitions() -> list[dict]:
    """Both versions of every use case, for tests and the editor's examples."""
    return [d for s in SCENARIOS for d in (s.definition, s.second)]


def seed_demo(*, contacts_per_day: int = 14, days: int = 56, seed: int = 7, out=None) -> dict:
    """Create the four journeys and play `days` days of contacts through them, ending now.

    Version 1 of each journey runs for the first half; then version 2 is published, alone
    or as a split test (`split_traffic`). Messages are delivered to a dummy backend, not to
    the example addresses. Refuses (ValueError) when the demo journeys exist already.
    """
    if Journey.objects.filter(key__in=[s.definition["key"] for s in SCENARIOS]).exists():
        raise ValueError("The demo journeys already exist; seed_demo runs once per database.")
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
        SMS_BACKEND="journeys.sms.LocmemSMSBackend",
        # The demo runs the engine in this process: no worker needs waking up.
        ENGINE_WAKEUPS=False,
    ):
        # The engine draws splits and holdouts from its own source; seeding it too makes
        # every load of the demo show the same figures (and the verdicts the tests hold).
        enrollments._rng.seed(seed)
        return _play(contacts_per_day=contacts_per_day, days=days, rng=random.Random(seed), out=out)


def _backdate(journey: Journey, at: datetime) -> None:
    """Date the journey's goals and conversions, and their revisions, at the demo's start:
    they existed before the first contact that earned them."""
    Conversion.objects.filter(journey=journey).update(created_at=at, updated_at=at)
    Goal.objects.filter(journey=journey).update(created_at=at, updated_at=at)
    Revision.objects.filter(journey=journey).update(created_at=at)
    Journey.objects.filter(pk=journey.pk).update(created_at=at)


def _publish_second(journey: Journey, scenario: Scenario, at: datetime) -> None:
    draft = save_draft_version(journey=journey, definition=scenario.second).version
    publish_version(version=draft, traffic=scenario.split_traffic)
    JourneyVersion.objects.filter(pk=draft.pk).update(published_at=at, created_at=at)
    # Publishing writes no new goal or conversion here (both versions share them); any
    # revision it did write is dated when it happened, not when the demo ran.
    Revision.objects.filter(journey=journey, created_at__gt=at).update(created_at=at)


def _play(*, contacts_per_day: int, days: int, rng: random.Random, out) -> dict:
    end = timezone.now().replace(microsecond=0)
    # From a UTC midnight, so that a split published at the start covers whole days and
    # the report counts every enrollment as side by side.
    start = (end - timedelta(days=days)).astimezone(UTC).replace(hour=0, minute=0, second=0)
    journeys = {}
    for scenario in SCENARIOS:
        journey, first, _ = create_journey(definition=scenario.definition)
        publish_version(version=first)
        JourneyVersion.objects.filter(pk=first.pk).update(published_at=start, created_at=start)
        _backdate(journey, start)
        if scenario.split_traffic is not None:
            _publish_second(journey, scenario, start)
        journeys[journey.key] = (journey, scenario)

    # Behaviour events not yet sent, as (time, tie-breaker, event) in a heap.
    upcoming: list[tuple[datetime, int, dict]] = []
    tie = itertools.count()
    contacts = 0
    events = 0
    for day in range(days + 1):
        today = start + timedelta(days=day)
        day_end = min(today + timedelta(days=1), end)
        if day == days // 2:
            for journey, scenario in journeys.values():
                if scenario.split_traffic is None:
                    _publish_second(journey, scenario, today)

        new_contacts = []
        known_since = []
        batch = []
        for _journey, scenario in journeys.values():
            high = round(contacts_per_day * scenario.traffic)
            for _ in range(rng.randint(high // 2, high)):
                contacts += 1
                external_id = f"demo-{contacts:05d}"
                at = today + timedelta(minutes=rng.randint(0, 600))
                new_contacts.append(
                    Contact(
                        external_id=external_id,
                        email=f"{external_id}@example.com",
                        attributes=_contact_attributes(rng),
                    )
                )
                # Known for a while (up to 90 days) before the event that brings them in.
                known_since.append(at - timedelta(minutes=rng.randint(5, 60 * 24 * 90)))
                batch.append(_event(external_id, scenario.trigger, at, {}))
        created = Contact.objects.bulk_create(new_contacts)
        # bulk_create stamps auto_now_add fields with the clock; the drawn dates go in after.
        for contact, since in zip(created, known_since, strict=True):
            contact.created_at = since
        Contact.objects.bulk_update(created, ["created_at"], batch_size=500)
        while upcoming and upcoming[0][0] < day_end:
            batch.append(heapq.heappop(upcoming)[2])
        batch.sort(key=lambda event: event["timestamp"])
        events += len(batch)
        for chunk in range(0, len(batch), 1000):
            ingest_events(events=batch[chunk : chunk + 1000], source="demo", now=day_end)
        run_due(now=day_end)

        # Each new contact now behaves according to the version the engine put it on. The
        # random draws follow this order, newest enrollment first as before; pk breaks ties.
        entered = (
            Enrollment.objects.filter(
                contact__external_id__in=[c.external_id for c in new_contacts]
            )
            .order_by("-started_at", "pk")
            .values_list("contact__external_id", "journey__key", "version__number", "held_out")
        )
        for external_id, journey_key, number, held_out in entered:
            scenario = journeys[journey_key][1]
            # Held-out contacts get no messages; they convert at the first version's odds,
            # a little lower, which is what the holdout is there to measure.
            odds = scenario.behaviour[1 if held_out else min(number, 2)]
            for name, probability, delay, properties in odds:
                if rng.random() < probability * (0.6 if held_out else 1):
                    when = today + timedelta(days=delay, hours=rng.randint(0, 40))
                    if when < end:
                        event = _event(external_id, name, when, properties)
                        heapq.heappush(upcoming, (when, next(tie), event))
        if out and day % 7 == 0:
            out.write(f"  day {day:2d} of {days}: {contacts} contacts, {events} events\n")
    run_due(now=end)
    _simulate_delivery_feedback(end=end)
    return {"journeys": len(journeys), "contacts": contacts, "events": events}


# Simulated provider feedback per email sent: (event, chance given the one before, delay).
# About what a marketing list sees: 2% bounce, ~45% of delivered mail opened, a quarter of
# the opens clicked, a few unsubscribes and complaints.
FEEDBACK_ODDS = 0.98, 0.45, 0.25, 0.006, 0.001


def _simulate_delivery_feedback(*, end: datetime) -> None:
    """Provider feedback for every email the demo sent, drawn from its own seeded source
    (so the contacts' draws stay as they were) and recorded by the webhooks' action."""
    rng = random.Random(13)
    delivered, opened, clicked, unsubscribed, complained = FEEDBACK_ODDS
    emails = OutboxMessage.objects.filter(
        channel=OutboxMessage.Channel.EMAIL, sent_at__isnull=False
    ).order_by("pk")
    batch = []
    for pk, sent_at in emails.values_list("pk", "sent_at"):
        at = sent_at + timedelta(seconds=rng.randint(2, 90))
        if rng.random() >= delivered:
            events = [(EventType.BOUNCED, at)]
        else:
            events = [(EventType.DELIVERED, at)]
            if rng.random() < opened:
                at += timedelta(minutes=rng.randint(5, 48 * 60))
                events.append((EventType.OPENED, at))
                if rng.random() < clicked:
                    at += timedelta(seconds=rng.randint(10, 600))
                    events.append((EventType.CLICKED, at))
                if rng.random() < unsubscribed:
                    events.append((EventType.UNSUBSCRIBED, at + timedelta(seconds=30)))
                elif rng.random() < complained:
                    events.append((EventType.COMPLAINED, at + timedelta(seconds=30)))
        batch.extend(
            AnymailTrackingEvent(
                event_type=kind,
                timestamp=when,
                event_id=f"demo-{pk}-{n}",
                metadata={"outbox_id": str(pk)},
            )
            for n, (kind, when) in enumerate(events)
            if when <= end  # Later ones have not happened when the demo stops.
        )
        if len(batch) >= 1000:
            record_delivery_events(events=batch, provider="Demo", now=end)
            batch = []
    record_delivery_events(events=batch, provider="Demo", now=end)


def _event(contact: str, name: str, at: datetime, properties: dict) -> dict:
    # A contact enters each journey once and does each thing once: the pair is unique.
    return {
        "id": f"{contact}-{name}",
        "contact": contact,
        "name": name,
        "properties": properties,
        "timestamp": at.isoformat(),
    }
