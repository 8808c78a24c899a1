"""Every write of the conversions app that matters, one transaction each."""

import dataclasses
import datetime
import logging
from collections.abc import Iterable
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from conversions.models import Conversion, ConversionAward, Counting, Goal, GoalAchievement
from journeys.models import Enrollment, Event

logger = logging.getLogger(__name__)


# --- Awards and goal achievements (the engine's) --------------------------------------------
#
# Every conversion is awarded through `award_conversions`: by the Convert step, by Evaluate
# goal (the goal's linked conversion), by matching events and by the API. The counting mode
# is copied onto the award row, where a partial unique constraint per mode lets the database
# refuse a second count, whatever races or retries happen. The internal event that an award
# emits has an id made of the same identity as that constraint, so it is stored exactly once
# too, by the transaction that stored the award.


@dataclasses.dataclass(frozen=True)
class AwardRequest:
    """One conversion to award to one enrollment. `enrollment` needs its `journey` and
    `version` loaded (their key and number go into the emitted event)."""

    conversion: Conversion
    enrollment: Enrollment
    source: str
    value: Decimal | None = None  # None: the conversion's own value
    step_key: str = ""
    source_event_id: int | None = None
    # What makes an every_time award distinct: "event:<id>" or "seq:<visit seq>".
    dedupe_key: str = ""
    # The depth of the event that caused the award (its trigger event for step awards).
    cause_depth: int = 0

    @property
    def identity(self) -> str:
        conversion = self.conversion
        if conversion.counting == Counting.ONCE_PER_CONTACT:
            return f"conversion:{conversion.pk}:c{self.enrollment.contact_id}"
        if conversion.counting == Counting.EVERY_TIME:
            return f"conversion:{conversion.pk}:e{self.enrollment.pk}:{self.dedupe_key}"
        return f"conversion:{conversion.pk}:e{self.enrollment.pk}"


@dataclasses.dataclass(frozen=True)
class AchievementRequest:
    goal: Goal
    enrollment: Enrollment
    step_key: str = ""
    cause_depth: int = 0

    @property
    def identity(self) -> str:
        return f"goal:{self.goal.pk}:e{self.enrollment.pk}"


def internal_event(
    *, event_id: str, contact_id: int, name: str, properties: dict, now, cause_depth: int
) -> Event:
    """The event an award or achievement emits. Past EVENT_CHAIN_MAX_DEPTH it is stored as
    dropped, with the reason, so a loop of journeys triggering each other ends and shows up
    in the admin."""
    depth = cause_depth + 1
    event = Event(
        event_id=event_id,
        contact_id=contact_id,
        name=name,
        properties=properties,
        timestamp=now,
        source=Event.Source.INTERNAL,
        depth=depth,
    )
    if depth > settings.EVENT_CHAIN_MAX_DEPTH:
        event.status = Event.Status.DROPPED
        event.processed_at = now
        event.error = (
            f"Chain of internal events deeper than {settings.EVENT_CHAIN_MAX_DEPTH}: not "
            "processed, so that journeys triggering each other cannot loop forever."
        )
        logger.warning(
            "Dropped internal event %s (depth %s) for contact %s: %s",
            event_id,
            depth,
            contact_id,
            event.error,
        )
    return event


def _distinct(requests: Iterable) -> list:
    # The first request per identity wins, and rows go in identity order, so that two
    # transactions inserting overlapping awards take their index locks in the same order.
    seen: dict[str, object] = {}
    for request in requests:
        seen.setdefault(request.identity, request)
    return [seen[identity] for identity in sorted(seen)]


@transaction.atomic
def award_conversions(*, requests: Iterable[AwardRequest], now: datetime.datetime) -> None:
    """Award conversions, each counted at most once per its counting mode.

    Locks: the unique index entries of the award rows (and of their events) it inserts; a
    concurrent transaction inserting the same award waits for this one and then skips it.
    Safe to run twice: a repeated award conflicts with the stored one and is ignored
    (INSERT ... ON CONFLICT DO NOTHING), and so is its event, whose id is the award's identity.
    """
    requests = _distinct(requests)
    if not requests:
        return
    awards = []
    events = []
    for request in requests:
        conversion = request.conversion
        enrollment = request.enrollment
        value = conversion.value if request.value is None else request.value
        awards.append(
            ConversionAward(
                conversion=conversion,
                journey_id=enrollment.journey_id,
                version_id=enrollment.version_id,
                enrollment_id=enrollment.pk,
                contact_id=enrollment.contact_id,
                counting=conversion.counting,
                value=value,
                source=request.source,
                step_key=request.step_key,
                source_event_id=request.source_event_id,
                dedupe_key=request.dedupe_key,
                awarded_at=now,
            )
        )
        events.append(
            internal_event(
                event_id=request.identity,
                contact_id=enrollment.contact_id,
                name="conversion",
                properties={
                    "journey": enrollment.journey.key,
                    "version": enrollment.version.number,
                    "key": conversion.key,
                    "value": float(value),
                    "step": request.step_key or None,
                    "source": request.source,
                },
                now=now,
                cause_depth=request.cause_depth,
            )
        )
    # Awards first, then their events, in every caller: the transaction that wins an award's
    # row is the one that also stores its event.
    ConversionAward.objects.bulk_create(awards, ignore_conflicts=True)
    Event.objects.bulk_create(events, ignore_conflicts=True)


def award_conversion(
    *,
    conversion: Conversion,
    enrollment: Enrollment,
    source: str,
    now: datetime.datetime,
    value: Decimal | None = None,
    step_key: str = "",
    source_event: Event | None = None,
    dedupe_key: str = "",
) -> bool:
    """Award one conversion (see `award_conversions`); True when it was counted now, False
    when its counting mode had already counted it."""
    request = AwardRequest(
        conversion=conversion,
        enrollment=enrollment,
        source=source,
        value=value,
        step_key=step_key,
        source_event_id=source_event.pk if source_event else None,
        dedupe_key=dedupe_key or (f"event:{source_event.pk}" if source_event else ""),
        cause_depth=source_event.depth if source_event else 0,
    )
    with transaction.atomic():
        existed = Event.objects.filter(event_id=request.identity).exists()
        award_conversions(requests=[request], now=now)
    return not existed


@transaction.atomic
def record_goal_achievements(
    *, requests: Iterable[AchievementRequest], now: datetime.datetime
) -> None:
    """Record goals as achieved, once per goal and enrollment, each with its
    `goal_achieved` event.

    Locks and safety as `award_conversions`: a repeat conflicts on the unique (goal,
    enrollment) row and on the event id, and is ignored.
    """
    requests = _distinct(requests)
    if not requests:
        return
    achievements = []
    events = []
    for request in requests:
        enrollment = request.enrollment
        achievements.append(
            GoalAchievement(
                goal=request.goal,
                enrollment_id=enrollment.pk,
                journey_id=enrollment.journey_id,
                version_id=enrollment.version_id,
                contact_id=enrollment.contact_id,
                step_key=request.step_key,
                achieved_at=now,
            )
        )
        linked = request.goal.conversion
        events.append(
            internal_event(
                event_id=request.identity,
                contact_id=enrollment.contact_id,
                name="goal_achieved",
                properties={
                    "journey": enrollment.journey.key,
                    "version": enrollment.version.number,
                    "key": request.goal.key,
                    "value": float(linked.value) if linked is not None else None,
                    "step": request.step_key or None,
                },
                now=now,
                cause_depth=request.cause_depth,
            )
        )
    GoalAchievement.objects.bulk_create(achievements, ignore_conflicts=True)
    Event.objects.bulk_create(events, ignore_conflicts=True)


def record_goal_achievement(
    *, goal: Goal, enrollment: Enrollment, now: datetime.datetime, step_key: str = ""
) -> None:
    """Record one goal as achieved (see `record_goal_achievements`)."""
    depth = enrollment.trigger_event.depth if enrollment.trigger_event_id else 0
    record_goal_achievements(
        requests=[
            AchievementRequest(goal=goal, enrollment=enrollment, step_key=step_key, cause_depth=depth)
        ],
        now=now,
    )
