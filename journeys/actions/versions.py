"""Journeys and their versions: create, save the one draft, publish (alone or on a split).

Every function locks the journey row first, so saves and publishes of one journey run one
after the other.
"""

import dataclasses

from django.db import IntegrityError, transaction
from django.utils import timezone

from conversions.actions import sync_journey_definitions
from conversions.selectors import resolve_journey_refs
from journeys.definition import (
    VERSION_PARTS,
    Definition,
    DefinitionError,
    parse_definition,
    render_definition,
    storable_errors,
)
from journeys.models import Journey, JourneyVersion
from journeys.selectors import journey_definition


class VersionStateError(Exception):
    """A version cannot be published in its current state (the API answers 409)."""

    def __init__(self, message: str, loc: list | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc or []


@dataclasses.dataclass(frozen=True)
class DraftResult:
    version: JourneyVersion
    errors: list[dict]
    warnings: list[dict]


# jsonb turns a float written with an exponent (1e+16 and up) into an integer, and
# PostgreSQL stores no NUL character in text or jsonb: both are refused before they reach
# the database, so a definition is stored, and round-trips, the same on every database
# (the API refuses such text in any body already; import_journey and the editor need this).
def _version_part(rendered: dict) -> dict:
    return {part: rendered[part] for part in VERSION_PARTS}


def _store_draft(
    *, journey: Journey, definition: Definition | None, raw: dict | None, user
) -> JourneyVersion:
    """Create or replace the journey's one draft. A valid definition is stored canonical,
    with its steps and the journey's goals and conversions synced; an invalid one keeps its
    goals and conversions in the row until it is fixed (see journey_definition)."""
    if definition is not None:
        rendered = render_definition(definition)
        stored = _version_part(rendered)
        journey.name = definition.name
        journey.description = definition.description or ""
    else:
        stored = {
            part: raw[part] for part in (*VERSION_PARTS, "goals", "conversions") if part in raw
        }
        stored.setdefault("goals", [])
        stored.setdefault("conversions", [])
        if isinstance(raw.get("name"), str) and raw["name"].strip():
            journey.name = raw["name"][:200]
        if isinstance(raw.get("description"), str):
            journey.description = raw["description"]
    journey.save(update_fields=["name", "description", "updated_at"])

    draft = (
        JourneyVersion.objects.select_for_update()
        .filter(journey=journey, state=JourneyVersion.State.DRAFT)
        .first()
    )
    if draft is None:
        last = journey.versions.order_by("-number").values_list("number", flat=True).first()
        draft = JourneyVersion.objects.create(
            journey=journey, number=(last or 0) + 1, definition=stored, created_by=user
        )
    else:
        draft.definition = stored
        draft.save(update_fields=["definition"])
    if definition is not None:
        sync_journey_definitions(
            journey=journey, goals=definition.goals, conversions=definition.conversions, user=user
        )
    return draft


@transaction.atomic
def create_journey(*, definition: dict, user=None) -> tuple[Journey, JourneyVersion, list[dict]]:
    """Create a journey from a definition, with version 1 as a draft; returns the journey,
    the version and the warnings (references to journeys that do not exist yet).

    Raises DefinitionError (every error) for an invalid definition or a key already taken;
    the unique key constraint refuses a concurrent duplicate, reported the same way. Not
    idempotent by design: a second call with the same key is that error.
    """
    unstorable = storable_errors(definition)
    if unstorable:
        raise DefinitionError(unstorable)
    parsed, warnings = parse_definition(definition, resolve_journey=resolve_journey_refs)
    taken = DefinitionError(
        [
            {
                "loc": ["key"],
                "message": f"A journey with the key '{parsed.key}' already exists; "
                "post the definition as a new version of it instead",
            }
        ]
    )
    if Journey.objects.filter(key=parsed.key).exists():
        raise taken
    try:
        with transaction.atomic():
            journey = Journey.objects.create(
                key=parsed.key,
                name=parsed.name,
                description=parsed.description or "",
                created_by=user,
            )
    except IntegrityError:
        raise taken from None
    version = _store_draft(journey=journey, definition=parsed, raw=None, user=user)
    return journey, version, warnings


@transaction.atomic
def create_empty_journey(*, key: str, name: str, description: str = "", user=None) -> Journey:
    """A new journey whose draft has no step yet, as the editor starts one.

    create_journey only takes a valid definition, and a valid one needs a step: version 1 is
    made with a placeholder exit step and at once replaced by the empty draft, in one
    transaction. Raises DefinitionError as create_journey does (a bad or taken key).
    """
    definition: dict = {"key": key, "name": name, "steps": []}
    if description:
        definition["description"] = description
    seed = {**definition, "steps": [{"key": "end", "type": "exit"}]}
    journey, _, _ = create_journey(definition=seed, user=user)
    save_draft_version(journey=journey, definition=definition, user=user, allow_invalid=True)
    return journey


@transaction.atomic
def save_draft_version(
    *, journey: Journey, definition: dict, user=None, allow_invalid: bool = False
) -> DraftResult:
    """Create the journey's draft version, or replace the one unpublished draft.

    The definition's key must be the journey's. With allow_invalid=False (the API, import)
    an invalid definition raises DefinitionError and nothing is written; with True (the
    editor) a JSON object is stored as it is, its errors are returned, and it cannot be
    published until a valid one replaces it. Locks the journey row, so a concurrent publish
    or second save waits; saving the same definition twice leaves one draft with the same
    content and records no second revision.
    """
    unstorable = storable_errors(definition)
    if unstorable:
        raise DefinitionError(unstorable)
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    errors: list[dict] = []
    warnings: list[dict] = []
    parsed = None
    try:
        parsed, warnings = parse_definition(definition, resolve_journey=resolve_journey_refs)
    except DefinitionError as exc:
        if not allow_invalid or not isinstance(definition, dict):
            raise
        errors = exc.errors
    key = parsed.key if parsed is not None else definition.get("key")
    if key != journey.key:
        key_error = {
            "loc": ["key"],
            "message": f"The key must stay '{journey.key}': a new version belongs to the "
            "same journey (create a new journey to use another key)",
        }
        if not allow_invalid:
            raise DefinitionError([key_error])
        errors = [key_error, *errors]
    if errors:
        version = _store_draft(journey=journey, definition=None, raw=definition, user=user)
    else:
        version = _store_draft(journey=journey, definition=parsed, raw=None, user=user)
    return DraftResult(version=version, errors=errors, warnings=warnings)


@transaction.atomic
def publish_version(
    *, version: JourneyVersion, traffic: int | None = None, user=None
) -> JourneyVersion:
    """Make a version live for new enrollments; enrollments already running stay on theirs.

    Without `traffic`, every other live version is retired. With `traffic` (1 to 99), the
    version takes that share of new enrollments at random and the one live version keeps
    the rest; both stay live (`split_with` each other) until one is published alone.
    Drafts and retired versions (a rollback) can be published, and a live version that
    shares traffic; raises VersionStateError otherwise and DefinitionError for an invalid
    draft.

    Locks the journey row first, so two concurrent publishes run one after the other and
    can never leave two versions live without a split; every version row is re-read under
    that lock. Publishing the same version twice alone: the second call is refused (409).
    """
    journey = Journey.objects.select_for_update().get(pk=version.journey_id)
    version = JourneyVersion.objects.select_for_update().get(pk=version.pk)
    if traffic is not None and (
        isinstance(traffic, bool) or not isinstance(traffic, int) or not 1 <= traffic <= 99
    ):
        raise DefinitionError(
            [{"loc": ["traffic"], "message": "traffic must be a whole number from 1 to 99"}]
        )
    others = list(
        JourneyVersion.objects.select_for_update()
        .filter(journey=journey, state=JourneyVersion.State.LIVE)
        .exclude(pk=version.pk)
        .order_by("number")
    )
    if journey.status == Journey.Status.STOPPED and version.state == JourneyVersion.State.LIVE:
        # Contract 6.2: a stopped journey is read-only until a new version is published.
        raise VersionStateError(
            f"Journey '{journey.key}' is stopped; publish a draft or a retired version to make "
            "it live again"
        )
    if version.state == JourneyVersion.State.LIVE and not others:
        raise VersionStateError(
            f"Version {version.number} is already live, alone; publish a draft or a retired "
            "version instead"
        )
    if version.state == JourneyVersion.State.DRAFT:
        # The stored draft may be one the editor saved with errors.
        parse_definition(
            journey_definition(journey=journey, version=version),
            resolve_journey=resolve_journey_refs,
        )

    now = timezone.now()
    if version.state != JourneyVersion.State.LIVE:
        # A live version published alone (ending its split) has been live since it was
        # published: its time stays, so the report still knows when the split ran.
        version.published_at = now
        version.published_by = user
    version.state = JourneyVersion.State.LIVE
    version.retired_at = None
    if traffic is None:
        version.traffic = None
        for other in others:
            other.state = JourneyVersion.State.RETIRED
            other.retired_at = now
            other.traffic = None
            other.save(update_fields=["state", "retired_at", "traffic"])
    else:
        if len(others) != 1:
            message = (
                "No other version is live to share traffic with; publish this one without traffic"
                if not others
                else "Versions "
                + " and ".join(str(other.number) for other in others)
                + " already share traffic; publish one of them alone first"
            )
            raise VersionStateError(message, loc=["traffic"])
        (current,) = others
        version.traffic = version.split_traffic = traffic
        version.split_with = current
        current.traffic = current.split_traffic = 100 - traffic
        current.split_with = version
        current.save(update_fields=["traffic", "split_traffic", "split_with"])
    version.save(
        update_fields=[
            "state",
            "published_at",
            "published_by",
            "retired_at",
            "traffic",
            "split_traffic",
            "split_with",
        ]
    )
    if journey.status != Journey.Status.LIVE:
        journey.status = Journey.Status.LIVE
        journey.save(update_fields=["status", "updated_at"])
    return version
