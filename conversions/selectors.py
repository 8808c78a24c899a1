"""Reads of goals, conversions and their revisions, each written once.

The journeys app's pages, API and engine read goal and conversion rows through here, and the
definition format through `conversion_definition` and `goal_definition`: one shape for a
row wherever it is shown or parsed.
"""

from django.db.models import Prefetch, Q
from django.utils.text import slugify

from conversions.models import Conversion, Goal, Revision
from journeys.definition import JourneyRefs, format_duration, version_references
from journeys.models import Journey, JourneyVersion


def conversion_definition(conversion) -> dict:
    """A conversion row as the definition writes it (canonical field order and omissions)."""
    data = {
        "key": conversion.key,
        "name": conversion.name,
        "value": float(conversion.value),
        "counting": conversion.counting,
    }
    if conversion.window:
        data["window"] = format_duration(conversion.window)
    if conversion.event_name:
        event = {"event": conversion.event_name}
        if conversion.event_where:
            event["where"] = conversion.event_where
        if conversion.value_property:
            event["value_property"] = conversion.value_property
        data["event"] = event
    if conversion.description:
        data["description"] = conversion.description
    return data


def goal_definition(goal) -> dict:
    """A goal row as the definition writes it; needs `conversion` selected."""
    data = {"key": goal.key, "name": goal.name, "criteria": goal.criteria}
    if goal.conversion_id is not None:
        data["conversion"] = goal.conversion.key
    if goal.description:
        data["description"] = goal.description
    return data


def resolve_journey_refs(key: str) -> JourneyRefs | None:
    """What another journey offers to reference (its active conversion and goal keys), for
    parse_definition; None when there is no such journey yet."""
    journey = Journey.objects.filter(key=key).only("pk").first()
    if journey is None:
        return None
    return JourneyRefs(
        conversion_keys=frozenset(
            Conversion.objects.filter(journey=journey, archived_at__isnull=True).values_list(
                "key", flat=True
            )
        ),
        goal_keys=frozenset(
            Goal.objects.filter(journey=journey, archived_at__isnull=True).values_list(
                "key", flat=True
            )
        ),
    )


def version_goals_and_conversions(journey: Journey, version: JourneyVersion) -> tuple[list, list]:
    """The journey's current goals and conversions, plus any archived ones this version
    still uses, so that an older version's definition stays complete."""
    used_conversions, used_goals = version_references(
        journey_key=journey.key, definition=version.definition
    )
    goals = list(
        Goal.objects.filter(journey=journey)
        .filter(Q(archived_at__isnull=True) | Q(key__in=used_goals))
        .select_related("conversion")
        .order_by("position", "key")
    )
    used_conversions |= {goal.conversion.key for goal in goals if goal.conversion_id}
    conversions = list(
        Conversion.objects.filter(journey=journey)
        .filter(Q(archived_at__isnull=True) | Q(key__in=used_conversions))
        .order_by("position", "key")
    )
    return goals, conversions


def active_goals_and_conversions() -> tuple[Prefetch, Prefetch]:
    """Prefetches of a journey's active goals (with their conversion) and active
    conversions, in definition order, as `active_goals` and `active_conversions`."""
    return (
        Prefetch(
            "goals",
            queryset=Goal.objects.filter(archived_at__isnull=True)
            .select_related("conversion")
            .order_by("position", "key"),
            to_attr="active_goals",
        ),
        Prefetch(
            "conversions",
            queryset=Conversion.objects.filter(archived_at__isnull=True).order_by(
                "position", "key"
            ),
            to_attr="active_conversions",
        ),
    )


def rule_choices() -> tuple[list, list]:
    """Every active conversion and goal of every journey, as ("journey:key", label) choices
    for triggers and exit rules (2 queries)."""

    def choices(model):
        rows = (
            model.objects.filter(archived_at__isnull=True)
            .select_related("journey")
            .only("key", "name", "journey__key", "journey__name")
            .order_by("journey__name", "position", "key")
        )
        return [
            (f"{row.journey.key}:{row.key}", f"{row.journey.name} → {row.name}") for row in rows
        ]

    return choices(Conversion), choices(Goal)


def journey_revisions(*, journey: Journey, limit: int = 30) -> list:
    """The newest dated changes to the journey's goals and conversions, with who made them
    (1 query)."""
    return list(
        Revision.objects.filter(journey=journey)
        .select_related("conversion", "goal", "created_by")
        .order_by("-created_at", "-id")[:limit]
    )


def goals_and_conversions_by_journey() -> tuple[dict, dict]:
    """Every goal (with its conversion) and conversion of every journey, archived ones too,
    as lists by journey id (2 queries): what the engine's flows are built from, read once
    per change of the catalogue (`journeys.flows`)."""
    goals: dict[int, list[Goal]] = {}
    conversions: dict[int, list[Conversion]] = {}
    for goal in Goal.objects.select_related("conversion"):
        goals.setdefault(goal.journey_id, []).append(goal)
    for conversion in Conversion.objects.all():
        conversions.setdefault(conversion.journey_id, []).append(conversion)
    return goals, conversions


def new_definition_key(journey: Journey, kind: str, name: str) -> str:
    """A free key for a new goal or conversion, made from its name; archived ones keep
    theirs, so they are avoided too. Duplicate names are refused by the action, not here."""
    model = Conversion if kind == "conversion" else Goal
    base = slugify(name)[:56].strip("-_") or kind
    taken = set(
        model.objects.filter(journey=journey, key__startswith=base).values_list("key", flat=True)
    )
    key, number = base, 2
    while key in taken:
        key, number = f"{base}-{number}", number + 1
    return key
