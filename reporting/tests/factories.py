"""Factories for the facts the engine writes, so report tests can build any history directly."""

import datetime

import factory

from conversions.models import ConversionAward, Counting
from conversions.tests.factories import ConversionAwardFactory, GoalAchievementFactory
from journeys.actions.messages import SENT_EVENT_PROVIDER, SENT_EVENT_TYPE
from journeys.models import DeliveryEvent, OutboxMessage, StepVisit
from journeys.tests.factories import EnrollmentFactory

MESSAGE_CHANNELS = {
    "send_email": OutboxMessage.Channel.EMAIL,
    "send_sms": OutboxMessage.Channel.SMS,
}


class StepVisitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StepVisit

    enrollment = factory.SubFactory(EnrollmentFactory)
    version = factory.SelfAttribute("enrollment.version")
    step_key = "welcome"
    seq = factory.Sequence(lambda n: n)
    entered_at = factory.SelfAttribute("enrollment.started_at")


class OutboxMessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OutboxMessage
        skip_postgeneration_save = True

    visit = factory.SubFactory(StepVisitFactory)
    enrollment = factory.SelfAttribute("visit.enrollment")
    contact = factory.SelfAttribute("visit.enrollment.contact")
    step_key = factory.SelfAttribute("visit.step_key")
    channel = OutboxMessage.Channel.EMAIL
    recipient = factory.LazyAttribute(lambda m: m.contact.email)
    subject = "Hello"
    body = "Hello"
    status = OutboxMessage.Status.SENT
    due_at = factory.SelfAttribute("visit.entered_at")
    sent_at = factory.SelfAttribute("visit.entered_at")

    @factory.post_generation
    def sent_event(message, create, extracted, **kwargs):
        """A sent message has its "sent" event, as journeys.actions.messages records it."""
        if create and message.sent_at is not None:
            DeliveryEvent.objects.bulk_create([sent_event_of(message)])


def sent_event_of(message: OutboxMessage) -> DeliveryEvent:
    return DeliveryEvent(
        message=message,
        provider=SENT_EVENT_PROVIDER,
        event_id=f"sent/{message.pk}",
        event_type=SENT_EVENT_TYPE,
        occurred_at=message.sent_at,
        received_at=message.sent_at,
    )


def enroll(
    version,
    started_at: datetime.datetime,
    *,
    contact=None,
    held_out: bool = False,
    path: tuple[str, ...] = (),
    awards: tuple[tuple, ...] = (),
    goals: tuple[tuple, ...] = (),
    sent: dict[str, datetime.timedelta] | None = None,
):
    """One enrollment with its history, as the engine would have written it.

    path: step keys visited in order (a visit each, an hour apart; message steps of the
    version's definition get a sent message at the visit, or at `sent[key]` after the start);
    awards: (conversion, time after start[, value]); goals: (goal, time after start).
    """
    kwargs = {"contact": contact} if contact is not None else {}
    enrollment = EnrollmentFactory(
        version=version, started_at=started_at, held_out=held_out, path=list(path), **kwargs
    )
    types = {s["key"]: s["type"] for s in version.definition.get("steps", [])}
    sent = sent or {}
    for seq, key in enumerate(path):
        visit = StepVisitFactory(
            enrollment=enrollment,
            step_key=key,
            seq=seq,
            entered_at=started_at + datetime.timedelta(hours=seq),
        )
        if types.get(key) in MESSAGE_CHANNELS:
            at = started_at + sent.get(key, datetime.timedelta(hours=seq))
            OutboxMessageFactory(
                visit=visit, channel=MESSAGE_CHANNELS[types[key]], sent_at=at, due_at=at
            )
    for n, (conversion, after, *value) in enumerate(awards):
        ConversionAwardFactory(
            enrollment=enrollment,
            conversion=conversion,
            value=value[0] if value else conversion.value,
            source=ConversionAward.Source.EVENT,
            dedupe_key=f"test:{n}" if conversion.counting == Counting.EVERY_TIME else "",
            awarded_at=started_at + after,
        )
    for goal, after in goals:
        GoalAchievementFactory(enrollment=enrollment, goal=goal, achieved_at=started_at + after)
    return enrollment


TRIAL_STEPS_V1 = [
    {"key": "welcome", "type": "send_email", "subject": "Welcome", "body": "...", "next": "wait-2d"},
    {"key": "wait-2d", "type": "wait", "duration": "P2D", "next": "ab"},
    {"key": "ab", "type": "split", "paths": [{"weight": 50, "next": "nudge"}, {"weight": 50, "next": "check"}]},
    {"key": "nudge", "type": "send_sms", "text": "Need a hand?", "next": "check"},
    {"key": "check", "type": "evaluate_goal", "goal": "activated", "wait": "P7D", "achieved": "convert", "not_achieved": None},
    {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
]  # fmt: skip
TRIAL_STEPS_V2 = [
    {**TRIAL_STEPS_V1[0]},
    {**TRIAL_STEPS_V1[1], "next": "case-study"},
    {
        "key": "case-study",
        "type": "send_email",
        "subject": "How Acme did it",
        "body": "...",
        "next": "ab",
    },
    *TRIAL_STEPS_V1[2:],
]


def trial_history(*, key="trial-to-paid", days=56, per_day=95, seed=7):
    """A believable trial-to-paid journey for screenshots and browser tests: v1 alone for
    three weeks, then v2 (with a case-study email) on a 50/50 split, 10% held out.

    Facts are written in bulk, as the engine would have left them; "now" is the end."""
    import random

    from django.utils import timezone

    from conversions.models import ConversionAward, GoalAchievement, Revision
    from conversions.tests.factories import ConversionFactory, GoalFactory
    from journeys.models import Contact, Enrollment, JourneyVersion
    from journeys.tests.factories import JourneyFactory, JourneyVersionFactory

    rng = random.Random(seed)
    end = timezone.now().replace(microsecond=0)
    start = end - datetime.timedelta(days=days)
    journey = JourneyFactory(key=key, name="Trial to paid", status="live")
    paid = ConversionFactory(
        journey=journey, key="paid", name="Started paid plan", value=49,
        window=datetime.timedelta(days=30),
    )  # fmt: skip
    goal = GoalFactory(journey=journey, key="activated", name="Activated", conversion=None)
    settings = {"reentry": "once", "holdout_percent": 10}
    base = {
        "settings": settings,
        "triggers": [{"type": "event", "event": "trial_started", "where": []}],
        "exit_when": [],
    }
    split_day = 21
    v1 = JourneyVersionFactory(
        journey=journey, number=1, state=JourneyVersion.State.LIVE, traffic=50,
        definition={**base, "steps": TRIAL_STEPS_V1}, published_at=start,
    )  # fmt: skip
    v2 = JourneyVersionFactory(
        journey=journey, number=2, state=JourneyVersion.State.LIVE, traffic=50, split_with=v1,
        definition={**base, "steps": TRIAL_STEPS_V2}, published_at=start + datetime.timedelta(days=split_day),
    )  # fmt: skip
    Revision.objects.create(journey=journey, conversion=paid, kind=Revision.Kind.CREATED,
                            snapshot={}, created_at=start)  # fmt: skip
    Revision.objects.create(
        journey=journey, conversion=paid, kind=Revision.Kind.CHANGED, snapshot={},
        changes={"window": ["P14D", "P30D"]}, while_live=True,
        created_at=start + datetime.timedelta(days=34, hours=10),
    )  # fmt: skip

    plans = []  # (contact, version, held_out, started_at)
    contacts = []
    for day in range(days):
        for _ in range(rng.randint(per_day - 20, per_day + 20)):
            at = start + datetime.timedelta(days=day, seconds=rng.randint(0, 86399))
            version = v2 if day >= split_day and rng.random() < 0.5 else v1
            n = len(contacts)
            contacts.append(Contact(external_id=f"{key}-{n}", email=f"person{n}@example.com"))
            plans.append((version, rng.random() < 0.10, at))
    contacts = Contact.objects.bulk_create(contacts)
    enrollments, histories = [], []
    for contact, (version, held_out, at) in zip(contacts, plans, strict=True):
        steps, goal_at, paid_at, value = [], None, None, rng.choice([49] * 9 + [490])
        if held_out:
            if rng.random() < 0.075:
                paid_at = at + datetime.timedelta(hours=rng.randint(6, 24 * 12))
        else:
            later = at + datetime.timedelta(days=2)
            steps = [("welcome", at), ("wait-2d", at)]
            if version == v2:
                steps.append(("case-study", later))
            steps.append(("ab", later))
            if rng.random() < 0.5:
                steps.append(("nudge", later))
            if later <= end:
                steps.append(("check", later))
                activation = 0.52 if version == v2 else 0.40
                if rng.random() < activation:
                    goal_at = later + datetime.timedelta(hours=rng.randint(1, 24 * 6))
                    if goal_at <= end and rng.random() < 0.36:
                        paid_at = goal_at
                        steps.append(("convert", goal_at))
            steps = [(k, t) for k, t in steps if t <= end]
            goal_at = goal_at if goal_at and goal_at <= end else None
        paid_at = paid_at if paid_at and paid_at <= end else None
        ended = paid_at or (
            steps[-1][1] if steps and steps[-1][1] + datetime.timedelta(days=7) < end else None
        )
        enrollments.append(Enrollment(
            contact=contact, journey=journey, version=version, held_out=held_out,
            path=[k for k, _ in steps], started_at=at, ended_at=ended,
            state=Enrollment.State.COMPLETED if ended else Enrollment.State.ACTIVE,
        ))  # fmt: skip
        histories.append((steps, goal_at, paid_at, value))
    enrollments = Enrollment.objects.bulk_create(enrollments)
    visits, awards, achievements = [], [], []
    for enrollment, (steps, goal_at, paid_at, value) in zip(enrollments, histories, strict=True):
        for seq, (step, t) in enumerate(steps):
            visits.append(StepVisit(enrollment=enrollment, version_id=enrollment.version_id,
                                    step_key=step, seq=seq, entered_at=t))  # fmt: skip
        if goal_at:
            achievements.append(GoalAchievement(
                goal=goal, enrollment=enrollment, journey=journey, version_id=enrollment.version_id,
                contact_id=enrollment.contact_id, step_key="check", achieved_at=goal_at,
            ))  # fmt: skip
        if paid_at:
            awards.append(ConversionAward(
                conversion=paid, journey=journey, version_id=enrollment.version_id,
                enrollment=enrollment, contact_id=enrollment.contact_id,
                counting=paid.counting, value=value,
                source=ConversionAward.Source.EVENT if enrollment.held_out else ConversionAward.Source.CONVERT_STEP,
                step_key="" if enrollment.held_out else "convert", awarded_at=paid_at,
            ))  # fmt: skip
    visits = StepVisit.objects.bulk_create(visits)
    types = {s["key"]: s["type"] for s in TRIAL_STEPS_V2}
    messages = [
        OutboxMessage(
            visit=visit, enrollment_id=visit.enrollment_id, contact_id=visit.enrollment.contact_id,
            step_key=visit.step_key, channel=MESSAGE_CHANNELS[types[visit.step_key]],
            recipient="", subject="", body="", status=OutboxMessage.Status.SENT,
            due_at=visit.entered_at, sent_at=visit.entered_at,
        )
        for visit in visits
        if types[visit.step_key] in MESSAGE_CHANNELS
    ]  # fmt: skip
    DeliveryEvent.objects.bulk_create(
        sent_event_of(m) for m in OutboxMessage.objects.bulk_create(messages)
    )
    ConversionAward.objects.bulk_create(awards)
    GoalAchievement.objects.bulk_create(achievements)
    return journey
