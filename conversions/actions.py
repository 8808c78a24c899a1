"""Every write of the conversions app that matters, one transaction each."""

import dataclasses
import datetime
import logging
from collections.abc import Iterable
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversions.models import (
    Conversion,
    ConversionAward,
    Counting,
    Goal,
    GoalAchievement,
    Revision,
)
from conversions.selectors import conversion_definition, goal_definition
from journeys.bulk import insert_rows
from journeys.definition import Conversion as ConversionDefinition
from journeys.definition import (
    DefinitionError,
    normalize_name,
    parse_definition,
    storable_errors,
    version_references,
)
from journeys.definition import Goal as GoalDefinition
from journeys.models import Enrollment, Event, Journey, JourneyVersion
from webhooks.outbox import enqueue_webhook_events

logger = logging.getLogger(__name__)


# --- Goals and conversions: their definitions (the journeys-API engineer's) ------------------
#
# Goals and conversions belong to a journey, not to a version: each create, change, archive
# or restore leaves a dated Revision (marked `while_live` when the journey had a live
# version), and reports mark the date of every change.


def _lock_journey(journey: Journey) -> Journey:
    # Every write to a journey's goals and conversions holds the journey row, so two editors
    # (or an editor and an import) cannot interleave their name checks and revisions.
    return Journey.objects.select_for_update().get(pk=journey.pk)


def _has_live_version(journey: Journey) -> bool:
    return JourneyVersion.objects.filter(journey=journey, state=JourneyVersion.State.LIVE).exists()


def _validate_item(journey: Journey, section: str, data: object, *, conversions=()) -> object:
    """One goal or conversion checked with the definition's own rules, errors located
    relative to the item (["name"], ["event", "event"], ...)."""
    if not isinstance(data, dict):
        raise DefinitionError([{"loc": [], "message": f"A {section[:-1]} must be a JSON object"}])
    unstorable = storable_errors(data)
    if unstorable:
        raise DefinitionError(unstorable)
    wrapper = {
        "key": journey.key,
        "name": journey.name,
        "goals": [data] if section == "goals" else [],
        "conversions": [data] if section == "conversions" else list(conversions),
        "steps": [{"key": "end", "type": "exit"}],
    }
    try:
        definition, _ = parse_definition(wrapper)
    except DefinitionError as exc:
        errors = [
            {"loc": error["loc"][2:], "message": error["message"]}
            for error in exc.errors
            if error["loc"][:2] == [section, 0]
        ]
        raise DefinitionError(errors or exc.errors) from None
    return getattr(definition, section)[0]


def _name_clash_message(kind: str, name: str, existing) -> str:
    archived = ", archived" if existing.archived_at else ""
    return (
        f'"{name}" is the same name as the existing {kind} "{existing.name}" '
        f"(key '{existing.key}'{archived}): names must differ in more than case, spacing "
        "and punctuation"
    )


def _conversion_fields(item: ConversionDefinition) -> dict:
    event = item.event.model_dump(mode="json", by_alias=True) if item.event else {}
    return {
        "name": item.name,
        "normalized_name": normalize_name(item.name),
        "description": item.description or "",
        "value": Decimal(repr(item.value)).quantize(Decimal("0.01")),
        "counting": item.counting,
        "window": item.window_delta,
        "event_name": event.get("event", ""),
        "event_where": event.get("where", []),
        "value_property": event.get("value_property") or "",
    }


def _goal_fields(item: GoalDefinition, conversions_by_key: dict) -> dict:
    return {
        "name": item.name,
        "normalized_name": normalize_name(item.name),
        "description": item.description or "",
        "criteria": item.criteria.model_dump(mode="json", by_alias=True),
        "conversion": conversions_by_key.get(item.conversion) if item.conversion else None,
    }


def _changes(before: dict, after: dict) -> dict:
    return {
        field: [before.get(field), after.get(field)]
        for field in dict.fromkeys([*before, *after])
        if before.get(field) != after.get(field)
    }


def _revise(row, kind: str, *, render, before: dict | None, **revision) -> Revision | None:
    """Record a row's new state as a revision; None when nothing changed."""
    snapshot = render(row)
    changes = _changes(before, snapshot) if before is not None else {}
    if kind == Revision.Kind.CHANGED and not changes:
        return None
    subject = {"conversion": row} if isinstance(row, Conversion) else {"goal": row}
    return Revision.objects.create(
        journey_id=row.journey_id,
        kind=kind,
        snapshot=snapshot,
        changes=changes,
        **subject,
        **revision,
    )


def _revision_fields(journey: Journey, user) -> dict:
    return {
        "while_live": _has_live_version(journey),
        "created_at": timezone.now(),
        "created_by": user,
    }


def _archive(row, *, render, revision: dict) -> None:
    row.archived_at = revision["created_at"]
    row.save(update_fields=["archived_at", "updated_at"])
    _revise(row, Revision.Kind.ARCHIVED, render=render, before=None, **revision)


def _revision_kind(before: dict | None, restored: bool) -> str:
    if before is None:
        return Revision.Kind.CREATED
    return Revision.Kind.RESTORED if restored else Revision.Kind.CHANGED


def _save_row(row, fields: dict, *, kind_name: str, loc: list) -> None:
    for field, value in fields.items():
        setattr(row, field, value)
    try:
        # A savepoint, so a lost race on the name leaves the outer transaction usable.
        with transaction.atomic():
            row.save()
    except IntegrityError:
        clash = (
            type(row)
            .objects.filter(journey_id=row.journey_id, normalized_name=row.normalized_name)
            .exclude(pk=row.pk)
            .first()
        )
        if clash is None:
            raise
        raise DefinitionError(
            [{"loc": loc, "message": _name_clash_message(kind_name, row.name, clash)}]
        ) from None


def _check_name_free(model, journey: Journey, name: str, *, key: str, kind: str) -> None:
    clash = (
        model.objects.filter(journey=journey, normalized_name=normalize_name(name))
        .exclude(key=key)
        .first()
    )
    if clash is not None:
        raise DefinitionError(
            [{"loc": ["name"], "message": _name_clash_message(kind, name, clash)}]
        )


def _existing(model, journey: Journey, key: str | None, data: object, kind: str):
    """The row being edited (key given) or None for a new one; the key cannot change."""
    if key is None:
        new_key = data.get("key") if isinstance(data, dict) else None
        if isinstance(new_key, str) and model.objects.filter(journey=journey, key=new_key).exists():
            raise DefinitionError(
                [{"loc": ["key"], "message": f"This journey already has a {kind} '{new_key}'"}]
            )
        return None
    row = model.objects.filter(journey=journey, key=key).first()
    if row is None:
        raise DefinitionError([{"loc": ["key"], "message": f"No {kind} has the key '{key}'"}])
    if isinstance(data, dict) and data.get("key", key) != key:
        raise DefinitionError(
            [{"loc": ["key"], "message": f"The key of a {kind} cannot change (it is '{key}')"}]
        )
    return row


def _checked_conversion(journey: Journey, data: object, key: str | None):
    row = _existing(Conversion, journey, key, data, "conversion")
    if row is not None and isinstance(data, dict):
        data = {**data, "key": key}
    item = _validate_item(journey, "conversions", data)
    _check_name_free(Conversion, journey, item.name, key=item.key, kind="conversion")
    return row, item


def check_conversion(
    *, journey: Journey, data: dict, key: str | None = None
) -> ConversionDefinition:
    """The errors save_conversion would raise (DefinitionError), without writing: for forms
    that show them beside their fields before saving."""
    return _checked_conversion(journey, data, key)[1]


@transaction.atomic
def save_conversion(
    *, journey: Journey, data: dict, key: str | None = None, user=None
) -> Conversion:
    """Create a conversion (key None) or edit the one with `key`, with its revision.

    `data` is the conversion as the definition writes it. Raises DefinitionError with locs
    relative to it (["name"], ["window"], ...). Locks the journey row for the name check; a
    concurrent duplicate that still gets through is refused by the unique constraint and
    reported the same way. Saving the same data twice records no second revision.
    """
    journey = _lock_journey(journey)
    row, item = _checked_conversion(journey, data, key)
    before = conversion_definition(row) if row is not None else None
    restored = row is not None and row.archived_at is not None
    if row is None:
        position = Conversion.objects.filter(journey=journey).count()
        row = Conversion(journey=journey, key=item.key, position=position)
    _save_row(
        row, {**_conversion_fields(item), "archived_at": None}, kind_name="conversion", loc=["name"]
    )
    _revise(
        row,
        _revision_kind(before, restored),
        render=conversion_definition,
        before=before,
        **_revision_fields(journey, user),
    )
    return row


def _checked_goal(journey: Journey, data: object, key: str | None):
    row = _existing(Goal, journey, key, data, "goal")
    if row is not None and isinstance(data, dict):
        data = {**data, "key": key}
    active = list(Conversion.objects.filter(journey=journey, archived_at__isnull=True))
    item = _validate_item(
        journey, "goals", data, conversions=[conversion_definition(c) for c in active]
    )
    _check_name_free(Goal, journey, item.name, key=item.key, kind="goal")
    return row, item, active


def check_goal(*, journey: Journey, data: dict, key: str | None = None) -> GoalDefinition:
    """The errors save_goal would raise (DefinitionError), without writing."""
    return _checked_goal(journey, data, key)[1]


@transaction.atomic
def save_goal(*, journey: Journey, data: dict, key: str | None = None, user=None) -> Goal:
    """Create a goal (key None) or edit the one with `key`, with its revision; its
    `conversion` must name an active conversion of the journey. Same locks, errors and
    idempotence as save_conversion."""
    journey = _lock_journey(journey)
    row, item, active = _checked_goal(journey, data, key)
    before = goal_definition(row) if row is not None else None
    restored = row is not None and row.archived_at is not None
    if row is None:
        position = Goal.objects.filter(journey=journey).count()
        row = Goal(journey=journey, key=item.key, position=position)
    fields = _goal_fields(item, {c.key: c for c in active})
    _save_row(row, {**fields, "archived_at": None}, kind_name="goal", loc=["name"])
    _revise(
        row,
        _revision_kind(before, restored),
        render=goal_definition,
        before=before,
        **_revision_fields(journey, user),
    )
    return row


def _live_references(journey: Journey) -> tuple[set[str], set[str]]:
    conversions: set[str] = set()
    goals: set[str] = set()
    for definition in JourneyVersion.objects.filter(
        journey=journey, state=JourneyVersion.State.LIVE
    ).values_list("definition", flat=True):
        used_conversions, used_goals = version_references(
            journey_key=journey.key, definition=definition
        )
        conversions |= used_conversions
        goals |= used_goals
    return conversions, goals


@transaction.atomic
def archive_conversion(*, conversion: Conversion, user=None) -> Conversion:
    """Archive a conversion: it leaves the journey's definition, its awards stay.

    Refused (DefinitionError) while a live version uses it or an active goal awards it.
    Locks the journey row, so a publish cannot start using it meanwhile. Archiving an
    archived conversion changes nothing and records nothing.
    """
    journey = _lock_journey(conversion.journey)
    conversion = Conversion.objects.get(pk=conversion.pk)
    if conversion.archived_at is not None:
        return conversion
    used_conversions, _ = _live_references(journey)
    if conversion.key in used_conversions:
        message = (
            f"The live version uses conversion '{conversion.key}'; "
            "publish a version without it first"
        )
        raise DefinitionError([{"loc": [], "message": message}])
    goal = Goal.objects.filter(conversion=conversion, archived_at__isnull=True).first()
    if goal is not None:
        message = f"Goal '{goal.name}' awards this conversion; unlink or archive the goal first"
        raise DefinitionError([{"loc": [], "message": message}])
    _archive(conversion, render=conversion_definition, revision=_revision_fields(journey, user))
    return conversion


@transaction.atomic
def archive_goal(*, goal: Goal, user=None) -> Goal:
    """Archive a goal; refused while a live version uses it. Same locks and idempotence as
    archive_conversion."""
    journey = _lock_journey(goal.journey)
    goal = Goal.objects.select_related("conversion").get(pk=goal.pk)
    if goal.archived_at is not None:
        return goal
    _, used_goals = _live_references(journey)
    if goal.key in used_goals:
        message = f"The live version uses goal '{goal.key}'; publish a version without it first"
        raise DefinitionError([{"loc": [], "message": message}])
    _archive(goal, render=goal_definition, revision=_revision_fields(journey, user))
    return goal


def _sync_rows(
    queryset, journey, items: list, *, section: str, kind_name: str, render, fields_of, revision
) -> dict:
    """Make the journey's rows of one kind match `items`: create, change, restore, and
    archive the ones that are gone (rows are never deleted: awards and older versions
    point at them). Returns the rows by key."""
    model = queryset.model
    rows = {row.key: row for row in queryset.filter(journey=journey)}
    wanted = {item.key for item in items}

    # Names held by rows that stay outside the definition (archived, or about to be) are
    # still taken: the unique constraint counts them.
    kept = {row.normalized_name: row for key, row in rows.items() if key not in wanted}
    errors = [
        {
            "loc": [section, index, "name"],
            "message": _name_clash_message(kind_name, item.name, kept[normalize_name(item.name)]),
        }
        for index, item in enumerate(items)
        if normalize_name(item.name) in kept
    ]
    if errors:
        raise DefinitionError(errors)

    # Two rows may swap names in one definition; park the renamed ones on placeholder
    # names first so that no intermediate state breaks the unique constraint.
    for item in items:
        row = rows.get(item.key)
        if row is not None and row.normalized_name != normalize_name(item.name):
            model.objects.filter(pk=row.pk).update(normalized_name=f"~{row.pk}")

    for index, item in enumerate(items):
        row = rows.get(item.key)
        before = render(row) if row is not None else None
        restored = row is not None and row.archived_at is not None
        if row is None:
            row = rows[item.key] = model(journey=journey, key=item.key)
        fields = {**fields_of(item), "position": index, "archived_at": None}
        if before is not None and all(getattr(row, f) == v for f, v in fields.items()):
            continue
        _save_row(row, fields, kind_name=kind_name, loc=[section, index, "name"])
        _revise(row, _revision_kind(before, restored), render=render, before=before, **revision)

    for key, row in rows.items():
        if key not in wanted and row.archived_at is None:
            _archive(row, render=render, revision=revision)
    return rows


@transaction.atomic
def sync_journey_definitions(
    *,
    journey: Journey,
    goals: list[GoalDefinition],
    conversions: list[ConversionDefinition],
    user=None,
) -> None:
    """Make the journey's goals and conversions those of a validated definition (its
    typed `goals` and `conversions`).

    Creates new ones, changes edited ones, restores archived ones that came back and
    archives the ones left out; each with a dated Revision (`while_live` when the journey
    has a live version). Archived rows stay, so live and retired versions that use them
    keep their meaning and their awards. Takes the journey row lock and the rows' locks;
    running it twice with the same lists changes nothing and records nothing the second
    time. Raises DefinitionError (loc [section, index, "name"]) when a name is taken by a
    row left out of the definition.
    """
    journey = _lock_journey(journey)
    revision = _revision_fields(journey, user)
    conversion_rows = _sync_rows(
        Conversion.objects.select_for_update(),
        journey,
        conversions,
        section="conversions",
        kind_name="conversion",
        render=conversion_definition,
        fields_of=_conversion_fields,
        revision=revision,
    )
    _sync_rows(
        # of=self: PostgreSQL cannot lock the nullable side of the join to the conversion.
        Goal.objects.select_related("conversion").select_for_update(of=("self",)),
        journey,
        goals,
        section="goals",
        kind_name="goal",
        render=goal_definition,
        fields_of=lambda item: _goal_fields(item, conversion_rows),
        revision=revision,
    )


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
    """One conversion to award to one enrollment. `enrollment` is an Enrollment, or the
    engine batch's plain `LeasedEnrollment`, with its `journey` and `version` loaded (their
    key and number go into the emitted event)."""

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


def internal_event_row(
    *,
    event_id: str,
    contact_id: int,
    name: str,
    properties: dict,
    now: datetime.datetime,
    cause_depth: int,
) -> dict:
    """The event an award or achievement emits, as a row for `insert_rows`. Past
    EVENT_CHAIN_MAX_DEPTH it is stored as dropped, with the reason, so a loop of journeys
    triggering each other ends and shows up in the admin."""
    depth = cause_depth + 1
    row = {
        "event_id": event_id,
        "contact": contact_id,
        "name": name,
        "properties": properties,
        "timestamp": now,
        "received_at": now,
        "source": Event.Source.INTERNAL,
        "depth": depth,
        "status": Event.Status.PENDING,
        "processed_at": None,
        "attempts": 0,
        "error": "",
    }
    if depth > settings.EVENT_CHAIN_MAX_DEPTH:
        row["status"] = Event.Status.DROPPED
        row["processed_at"] = now
        row["error"] = (
            f"Chain of internal events deeper than {settings.EVENT_CHAIN_MAX_DEPTH}: not "
            "processed, so that journeys triggering each other cannot loop forever."
        )
        logger.warning(
            "Dropped internal event %s (depth %s) for contact %s: %s",
            event_id,
            depth,
            contact_id,
            row["error"],
        )
    return row


def _distinct(requests: Iterable) -> list:
    # The first request per identity wins, and rows go in identity order, so that two
    # transactions inserting overlapping awards take their index locks in the same order.
    seen: dict[str, object] = {}
    for request in requests:
        seen.setdefault(request.identity, request)
    return [seen[identity] for identity in sorted(seen)]


def _award_rows(request: AwardRequest, now: datetime.datetime) -> tuple[dict, dict]:
    """The award's row and its event's, as rows for `insert_rows` (by field name)."""
    conversion = request.conversion
    enrollment = request.enrollment
    value = conversion.value if request.value is None else request.value
    award = {
        "conversion": conversion.pk,
        "journey": enrollment.journey_id,
        "version": enrollment.version_id,
        "enrollment": enrollment.pk,
        "contact": enrollment.contact_id,
        "counting": conversion.counting,
        "value": value,
        "source": request.source,
        "step_key": request.step_key,
        "source_event": request.source_event_id,
        "dedupe_key": request.dedupe_key,
        "awarded_at": now,
    }
    event = internal_event_row(
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
    return award, event


def award_conversions(*, requests: Iterable[AwardRequest], now: datetime.datetime) -> int:
    """Award conversions, each counted at most once per its counting mode; returns how
    many were counted now. One transaction (a savepoint inside the caller's), opened only
    when there is something to award: the engine calls it for every batch.

    Locks: the unique index entries of the award rows (and of their events) it inserts; a
    concurrent transaction inserting the same award waits for this one and then skips it.
    Safe to run twice: a repeated award conflicts with the stored one and is ignored
    (INSERT ... ON CONFLICT DO NOTHING), and so is its event, whose id is the award's identity.
    """
    rows = [_award_rows(request, now) for request in _distinct(requests)]
    if not rows:
        return 0
    with transaction.atomic():
        # Awards first, then their events, in every caller: the transaction that wins an
        # award's row is the one that also stores its event.
        counted = insert_rows(
            ConversionAward,
            [award for award, _ in rows],
            ignore_conflicts=True,
            returning=("conversion", "enrollment", "dedupe_key"),
        )
        insert_rows(Event, [event for _, event in rows], ignore_conflicts=True)
        stored = set(counted)
        enqueue_webhook_events(
            event_type="conversion.awarded",
            facts=(
                {
                    **event["properties"],
                    "contact_id": award["contact"],
                    "enrollment": award["enrollment"],
                }
                for award, event in rows
                if (award["conversion"], award["enrollment"], award["dedupe_key"]) in stored
            ),
            now=now,
        )
    return len(counted)


def record_goal_achievements(
    *, requests: Iterable[AchievementRequest], now: datetime.datetime
) -> None:
    """Record goals as achieved, once per goal and enrollment, each with its
    `goal_achieved` event.

    Transaction, locks and safety as `award_conversions`: a repeat conflicts on the unique
    (goal, enrollment) row and on the event id, and is ignored.
    """
    requests = _distinct(requests)
    if not requests:
        return
    achievements = []
    events = []
    for request in requests:
        enrollment = request.enrollment
        achievements.append(
            {
                "goal": request.goal.pk,
                "enrollment": enrollment.pk,
                "journey": enrollment.journey_id,
                "version": enrollment.version_id,
                "contact": enrollment.contact_id,
                "step_key": request.step_key,
                "achieved_at": now,
            }
        )
        linked = request.goal.conversion
        events.append(
            internal_event_row(
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
    with transaction.atomic():
        stored = set(
            insert_rows(
                GoalAchievement,
                achievements,
                ignore_conflicts=True,
                returning=("goal", "enrollment"),
            )
        )
        insert_rows(Event, events, ignore_conflicts=True)
        enqueue_webhook_events(
            event_type="goal.achieved",
            facts=(
                {
                    **event["properties"],
                    "contact_id": row["contact"],
                    "enrollment": row["enrollment"],
                }
                for row, event in zip(achievements, events, strict=True)
                if (row["goal"], row["enrollment"]) in stored
            ),
            now=now,
        )
