"""Factories for the facts the engine writes, so report tests can build any history directly."""

import datetime

import factory

from conversions.models import ConversionAward, Counting
from conversions.tests.factories import ConversionAwardFactory, GoalAchievementFactory
from journeys.models import OutboxMessage, StepVisit
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
