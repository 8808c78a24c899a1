from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.utils import timezone
from ninja import Router, Schema
from ninja.responses import Status
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField

from conversions.models import ConversionAward
from conversions.selectors import conversion_definition, goal_definition
from journeys import selectors
from journeys.actions.contacts import ERASED_REASON, erase_contact, upsert_contact
from journeys.actions.enrollments import EnrollmentRefused, enroll_contact
from journeys.actions.events import ingest_events
from journeys.actions.lifecycle import (
    JOURNEY_STOPPED,
    LifecycleRefused,
    discard_draft,
    pause_journey,
    resume_journey,
    stop_journey,
)
from journeys.actions.versions import (
    VersionStateError,
    create_journey,
    publish_version,
    save_draft_version,
)
from journeys.auth import ApiError, erase_auth, ingest_auth, manage_auth
from journeys.definition import DefinitionError
from journeys.delivery_rules import check_timezone
from journeys.models import (
    Contact,
    Enrollment,
    Event,
    Journey,
    JourneyVersion,
    Subscription,
    default_subscriptions,
)
from journeys.parsers import BodyError, parse_json
from journeys.ratelimit import spend_contact_erasure, spend_contact_read, spend_ingest

router = Router()


# --- Journeys (docs/contract.md §2) -----------------------------------------------------------

_DEFINITION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "description": "A journey definition (CONTRACT §1)"}
            }
        },
    }
}
_PUBLISH_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"traffic": {"type": "integer", "minimum": 1, "maximum": 99}},
                }
            }
        },
    }
}


# The answers, field for field and in order as the routes build them: ninja checks each
# answer against its schema (and drops a key the schema does not name), and the OpenAPI
# document shows them. Goals, conversions and definitions stay free-form: definition.py
# validates them, and a schema here would write out as null the keys a definition leaves out.

JourneyStatus = Literal[tuple(Journey.Status.values)]
VersionState = Literal[tuple(JourneyVersion.State.values)]
EnrollmentState = Literal[tuple(Enrollment.State.values)]
ExitReason = Literal["exit_when", "journey_stopped", "erased"]


class WarningOut(Schema):
    loc: list[str | int]
    message: str


# Fields that several answers share, described once.
Traffic = Annotated[
    int | None, PydanticField(description="Its share of new enrollments while split.")
]
SplitWith = Annotated[
    int | None, PydanticField(description="The version it shares (or shared) traffic with.")
]
Warnings = Annotated[
    list[WarningOut],
    PydanticField(
        description="References to journeys, goals or conversions that do not exist yet."
    ),
]


class JourneyListItemOut(Schema):
    key: str
    name: str
    status: JourneyStatus
    live_versions: list[int]
    conversions: list[str] = PydanticField(description="Keys of the active conversions.")


class VersionSummaryOut(Schema):
    number: int
    state: VersionState
    traffic: Traffic
    split_with: SplitWith
    created_at: datetime
    published_at: datetime | None
    retired_at: datetime | None


class JourneyOut(Schema):
    key: str
    name: str
    description: str
    status: JourneyStatus
    created_at: datetime
    updated_at: datetime
    live_versions: list[int]
    versions: list[VersionSummaryOut]
    goals: list[dict[str, Any]] = PydanticField(
        description="Active goals, as the definition writes them."
    )
    conversions: list[dict[str, Any]] = PydanticField(
        description="Active conversions, as the definition writes them."
    )


class CreatedJourneyOut(JourneyOut):
    warnings: Warnings


class JourneyVersionOut(Schema):
    journey: str
    number: int
    state: VersionState
    traffic: Traffic
    split_with: SplitWith
    created_at: datetime
    published_at: datetime | None
    retired_at: datetime | None


class DraftVersionOut(JourneyVersionOut):
    warnings: Warnings


def _json_body(request, *, required: bool = True) -> object:
    """The body parsed here rather than by ninja, so a definition's errors come from
    definition.py with its locations."""
    if not request.body.strip():
        if required:
            raise ApiError.single(400, "The body must be a JSON object.", ["body"])
        return {}
    try:
        return parse_json(request.body)
    except BodyError as exc:
        raise ApiError.single(400, str(exc), exc.loc) from None


def _journey_or_404(key: str) -> Journey:
    journey = Journey.objects.filter(key=key).first()
    if journey is None:
        raise ApiError.single(404, f"No journey has the key '{key}'.", ["key"])
    return journey


def _version_or_404(journey: Journey, number: int, loc: str) -> JourneyVersion:
    version = journey.versions.filter(number=number).first()
    if version is None:
        raise ApiError.single(404, f"Journey '{journey.key}' has no version {number}.", [loc])
    return version


def _version_out(version: JourneyVersion, split_number: int | None) -> dict:
    return {
        "number": version.number,
        "state": version.state,
        "traffic": version.traffic,
        "split_with": split_number,
        "created_at": version.created_at,
        "published_at": version.published_at,
        "retired_at": version.retired_at,
    }


def _single_version_out(version: JourneyVersion) -> dict:
    split = version.split_with.number if version.split_with_id else None
    return {"journey": version.journey.key, **_version_out(version, split)}


def _journey_out(journey: Journey) -> dict:
    """A journey from selectors.journey_detail (its prefetches)."""
    numbers = {version.pk: version.number for version in journey.all_versions}
    return {
        "key": journey.key,
        "name": journey.name,
        "description": journey.description,
        "status": journey.status,
        "created_at": journey.created_at,
        "updated_at": journey.updated_at,
        "live_versions": [
            version.number
            for version in journey.all_versions
            if version.state == JourneyVersion.State.LIVE
        ],
        "versions": [
            _version_out(version, numbers.get(version.split_with_id))
            for version in journey.all_versions
        ],
        "goals": [goal_definition(goal) for goal in journey.active_goals],
        "conversions": [
            conversion_definition(conversion) for conversion in journey.active_conversions
        ],
    }


def _definition_errors(exc: DefinitionError) -> ApiError:
    return ApiError(400, exc.errors)


@router.get("/journeys", auth=manage_auth, tags=["journeys"], response=list[JourneyListItemOut])
def list_journeys(request):
    """Every journey: key, name, status, live version numbers and active conversion keys."""
    return [
        {
            "key": journey.key,
            "name": journey.name,
            "status": journey.status,
            "live_versions": [version.number for version in journey.live_versions],
            "conversions": [conversion.key for conversion in journey.active_conversions],
        }
        for journey in selectors.journey_list()
    ]


@router.post(
    "/journeys",
    auth=manage_auth,
    tags=["journeys"],
    response={201: CreatedJourneyOut},
    openapi_extra=_DEFINITION_BODY,
)
def create_journey_route(request):
    """Create a journey from a definition; version 1 is a draft. Unresolved references to
    other journeys come back in `warnings`."""
    try:
        journey, _, warnings = create_journey(definition=_json_body(request))
    except DefinitionError as exc:
        raise _definition_errors(exc) from None
    return Status(
        201, {**_journey_out(selectors.journey_detail(key=journey.key)), "warnings": warnings}
    )


@router.get("/journeys/{key}", auth=manage_auth, tags=["journeys"], response=JourneyOut)
def get_journey(request, key: str):
    """The journey with its versions, goals and conversions."""
    journey = selectors.journey_detail(key=key)
    if journey is None:
        raise ApiError.single(404, f"No journey has the key '{key}'.", ["key"])
    return _journey_out(journey)


@router.get(
    "/journeys/{key}/definition",
    auth=manage_auth,
    tags=["journeys"],
    response=dict[str, Any],
)
def get_definition(request, key: str, version: int | None = None):
    """The canonical definition of a version (default: the newest); it round-trips through
    POST .../versions unchanged."""
    journey = _journey_or_404(key)
    if version is not None:
        chosen = _version_or_404(journey, version, "version")
    else:
        chosen = selectors.latest_version(journey=journey)
        if chosen is None:
            raise ApiError.single(404, f"Journey '{key}' has no version yet.", ["version"])
    return selectors.journey_definition(journey=journey, version=chosen)


@router.post(
    "/journeys/{key}/versions",
    auth=manage_auth,
    tags=["journeys"],
    response={201: DraftVersionOut},
    openapi_extra=_DEFINITION_BODY,
)
def create_version(request, key: str):
    """A new draft version from a definition; it replaces an unpublished draft."""
    journey = _journey_or_404(key)
    try:
        result = save_draft_version(journey=journey, definition=_json_body(request))
    except DefinitionError as exc:
        raise _definition_errors(exc) from None
    return Status(201, {**_single_version_out(result.version), "warnings": result.warnings})


@router.post(
    "/journeys/{key}/versions/{number}/publish",
    auth=manage_auth,
    tags=["journeys"],
    response=JourneyVersionOut,
    openapi_extra=_PUBLISH_BODY,
)
def publish(request, key: str, number: int):
    """Make version `number` live; with {"traffic": P} it takes P% of new enrollments and
    the live version keeps the rest."""
    journey = _journey_or_404(key)
    version = _version_or_404(journey, number, "number")
    body = _json_body(request, required=False)
    if not isinstance(body, dict):
        raise ApiError.single(
            400, 'The body must be a JSON object, e.g. {"traffic": 20}.', ["body"]
        )
    unknown = [
        {"loc": [field], "message": f"Unknown field '{field}'"}
        for field in body
        if field != "traffic"
    ]
    if unknown:
        raise ApiError(400, unknown)
    try:
        published = publish_version(version=version, traffic=body.get("traffic"))
    except DefinitionError as exc:
        raise _definition_errors(exc) from None
    except VersionStateError as exc:
        raise ApiError.single(409, exc.message, exc.loc) from None
    return _single_version_out(published)


def _lifecycle(key: str, change) -> dict:
    journey = _journey_or_404(key)
    try:
        change(journey)
    except LifecycleRefused as exc:
        raise ApiError.single(409, exc.message, ["key"]) from None
    return _journey_out(selectors.journey_detail(key=key))


@router.post("/journeys/{key}/pause", auth=manage_auth, tags=["journeys"], response=JourneyOut)
def pause(request, key: str):
    """Pause a live journey: no new enrollments; running ones hold where they are (409 when
    it is not live)."""
    return _lifecycle(key, lambda journey: pause_journey(journey=journey))


@router.post("/journeys/{key}/resume", auth=manage_auth, tags=["journeys"], response=JourneyOut)
def resume(request, key: str):
    """Resume a paused journey: held enrollments go on, a wait that ran out at once (409
    when it is not paused)."""
    return _lifecycle(key, lambda journey: resume_journey(journey=journey))


@router.post("/journeys/{key}/stop", auth=manage_auth, tags=["journeys"], response=JourneyOut)
def stop(request, key: str):
    """Stop a live or paused journey: running enrollments exit with `journey_stopped`;
    read-only until a new version is published (409 when already stopped or a draft)."""
    return _lifecycle(key, lambda journey: stop_journey(journey=journey, now=timezone.now()))


@router.delete("/journeys/{key}/draft", auth=manage_auth, tags=["journeys"], response=JourneyOut)
def delete_draft(request, key: str):
    """Discard the draft version; 200 with the journey, 409 when there is no draft or it is
    the journey's only version."""
    return _lifecycle(key, lambda journey: discard_draft(journey=journey))


# --- Contacts, events and enrollments (docs/contract.md §2; the engine's) ---------------------

FUTURE_TOLERANCE = timedelta(days=1)
# Event times before this are unset clocks, not history: Go's zero time (0001-01-01), Unix
# time 0 (1970-01-01) and Excel's zero (1899-12-30) are what integrations send by accident,
# and windows counted back from them run off the calendar.
TIMESTAMP_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)


SubscriptionStatus = Literal[tuple(Subscription.values)]


class SubscriptionsIn(Schema):
    """Channels to change; a channel left out keeps its status (docs/messages.md)."""

    model_config = ConfigDict(extra="forbid")

    email: SubscriptionStatus | None = None
    sms: SubscriptionStatus | None = None


class ContactIn(Schema):
    model_config = ConfigDict(extra="forbid")

    email: str | None = PydanticField(default=None, max_length=254)
    attributes: dict[str, Any] = PydanticField(default_factory=dict)
    timezone: str | None = PydanticField(
        default=None,
        max_length=64,
        description="An IANA zone name (Europe/Paris); empty: the DEFAULT_TIMEZONE setting.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return check_timezone(value) if value else value

    subscriptions: SubscriptionsIn | None = None

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str | None) -> str | None:
        if value:
            try:
                validate_email(value)
            except DjangoValidationError:
                raise ValueError("Enter a valid email address") from None
        return value


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = PydanticField(min_length=1, max_length=100)
    contact: str = PydanticField(min_length=1, max_length=255)
    name: str = PydanticField(min_length=1, max_length=100)
    properties: dict[str, Any] = PydanticField(default_factory=dict)
    timestamp: datetime | None = None

    @field_validator("timestamp")
    @classmethod
    def _within_range(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if timezone.is_naive(value):
            value = value.replace(tzinfo=UTC)
        try:
            # In UTC: PostgreSQL refuses offsets past ±15:59 that ISO 8601 parsers accept.
            value = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("The timestamp is out of range") from None
        if value > timezone.now() + FUTURE_TOLERANCE:
            raise ValueError("The timestamp is more than a day in the future")
        if value < TIMESTAMP_FLOOR:
            raise ValueError(
                "The timestamp is before 2000-01-01, which no event can be meant to be (an "
                "unset time such as 0001-01-01 or 1970-01-01?)"
            )
        return value


class EventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = PydanticField(
        min_length=1, max_length=settings.API_MAX_EVENTS_PER_BATCH
    )


class EnrollmentIn(Schema):
    model_config = ConfigDict(extra="forbid")

    contact: str = PydanticField(min_length=1, max_length=255)


class EnrollmentOut(Schema):
    id: int
    journey: str
    version: int
    state: EnrollmentState
    held_out: bool
    started_at: datetime
    ended_at: datetime | None
    path: list[str] = PydanticField(description="The keys of the steps it visited, in order.")
    exit_reason: ExitReason | None = PydanticField(
        description="Why it exited early: exit_when, journey_stopped or erased; null otherwise."
    )


class NewEnrollmentOut(Schema):
    contact: str
    id: int
    journey: str
    version: int
    state: EnrollmentState
    held_out: bool
    started_at: datetime
    ended_at: datetime | None
    path: list[str] = PydanticField(description="The keys of the steps it visited, in order.")


class AwardOut(Schema):
    journey: str
    version: int
    conversion: str
    value: float
    source: str = PydanticField(description="convert_step, goal, event or api.")
    step: str | None
    awarded_at: datetime


class ContactOut(Schema):
    external_id: str
    email: str
    attributes: dict[str, Any]
    timezone: str | None = PydanticField(
        description="The contact's IANA zone; null: the DEFAULT_TIMEZONE setting applies."
    )
    subscriptions: dict[str, str]
    created_at: datetime
    updated_at: datetime


class ContactHistoryOut(ContactOut):
    enrollments: list[EnrollmentOut]
    conversions: list[AwardOut]


class EventsAcceptedOut(Schema):
    accepted: int
    duplicates: int = PydanticField(
        description="Events whose id was already stored: nothing was done."
    )


def _enrollment_out(enrollment: Enrollment) -> dict:
    return {
        "id": enrollment.pk,
        "journey": enrollment.journey.key,
        "version": enrollment.version.number,
        "state": enrollment.state,
        "held_out": enrollment.held_out,
        "started_at": enrollment.started_at,
        "ended_at": enrollment.ended_at,
        "path": enrollment.path,
        "exit_reason": _exit_reason(enrollment.exit_reason),
    }


def _exit_reason(stored: str) -> str | None:
    """The contract's name (6.2) for a stored exit reason: the stored text says more (which
    rule), for admin. An exit step, a completion or a failure is no early exit: null."""
    if stored.startswith("exit_when"):
        return "exit_when"
    if stored == JOURNEY_STOPPED:
        return "journey_stopped"
    if stored == ERASED_REASON:
        return "erased"
    return None


def _contact_out(contact: Contact, *, with_history: bool = True) -> dict:
    data = {
        "external_id": contact.external_id,
        "email": contact.email,
        "attributes": contact.attributes,
        "timezone": contact.timezone or None,
        "subscriptions": {**default_subscriptions(), **(contact.subscriptions or {})},
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
    }
    if not with_history:
        return data
    enrollments = contact.enrollments.select_related("journey", "version").order_by(
        "started_at", "pk"
    )
    awards = (
        ConversionAward.objects.filter(contact=contact)
        .select_related("journey", "version", "conversion")
        .order_by("awarded_at", "pk")
    )
    data["enrollments"] = [_enrollment_out(enrollment) for enrollment in enrollments]
    data["conversions"] = [
        {
            "journey": award.journey.key,
            "version": award.version.number,
            "conversion": award.conversion.key,
            "value": float(award.value),
            "source": award.source,
            "step": award.step_key or None,
            "awarded_at": award.awarded_at,
        }
        for award in awards
    ]
    return data


def _check_external_id(external_id: str) -> None:
    if len(external_id) > 255:
        raise ApiError.single(400, "Must be at most 255 characters", ["external_id"])


# `path:` lets an external id contain "/" ("crm/123"): events accept any id, so every id
# they create must be reachable here too.
@router.put(
    "/contacts/{path:external_id}",
    auth=ingest_auth,
    tags=["contacts"],
    response={200: ContactOut, 201: ContactOut},
)
def put_contact(request, external_id: str, payload: ContactIn):
    """Create (201) or update (200) a contact. `attributes` are merged into the stored ones
    (null removes one); `email` left out stays as it is."""
    _check_external_id(external_id)
    contact, created = upsert_contact(
        external_id=external_id,
        email=payload.email,
        attributes=payload.attributes,
        timezone=payload.timezone,
        subscriptions=payload.subscriptions.model_dump(exclude_none=True)
        if payload.subscriptions
        else None,
    )
    return Status(201 if created else 200, _contact_out(contact, with_history=False))


@router.get(
    "/contacts/{path:external_id}",
    auth=ingest_auth,
    tags=["contacts"],
    response=ContactHistoryOut,
)
def get_contact(request, external_id: str):
    """The contact with its enrollments (and the path of step keys each visited) and the
    conversions awarded to it. Rate-limited per key (429 with Retry-After)."""
    spend_contact_read(api_key=request.auth)
    contact = Contact.objects.filter(external_id=external_id).first()
    if contact is None:
        raise ApiError.single(404, f"No contact has the id '{external_id}'.", ["external_id"])
    return _contact_out(contact)


@router.delete(
    "/contacts/{path:external_id}", auth=erase_auth, tags=["contacts"], response={204: None}
)
def delete_contact(request, external_id: str):
    """Erase the contact's personal data (email, attributes, events, message contents); its
    anonymous enrollments and conversions stay so reports keep their numbers. Any scope.
    Rate-limited per key (429 with Retry-After)."""
    spend_contact_erasure(api_key=request.auth)
    _check_external_id(external_id)
    contact = Contact.objects.filter(external_id=external_id).first()
    if contact is None:
        raise ApiError.single(404, f"No contact has the id '{external_id}'.", ["external_id"])
    erase_contact(contact=contact)
    return Status(204, None)


@router.post("/events", auth=ingest_auth, tags=["events"], response={202: EventsAcceptedOut})
def post_events(request, payload: EventBatchIn):
    """Record 1 to 1,000 events. An event's `id` is its idempotency key: one already
    stored counts in `duplicates` and does nothing. Unknown contacts are created. A batch
    with any invalid event is refused whole, each error located by the event's index.
    Rate-limited per key in events (429 with Retry-After)."""
    spend_ingest(api_key=request.auth, events=len(payload.events))
    accepted, duplicates = ingest_events(
        events=[event.model_dump() for event in payload.events], source=Event.Source.API
    )
    return Status(202, {"accepted": accepted, "duplicates": duplicates})


@router.post(
    "/journeys/{key}/enrollments",
    auth=manage_auth,
    tags=["journeys"],
    response={201: NewEnrollmentOut},
)
def post_enrollment(request, key: str, payload: EnrollmentIn):
    """Enroll a contact in the journey's live version now; 409 when re-entry forbids it."""
    journey = _journey_or_404(key)
    contact = Contact.objects.filter(external_id=payload.contact).first()
    if contact is None:
        raise ApiError.single(404, f"No contact has the id '{payload.contact}'.", ["contact"])
    try:
        enrollment = enroll_contact(journey=journey, contact=contact, now=timezone.now())
    except EnrollmentRefused as exc:
        raise ApiError.single(409, exc.message, ["contact"]) from None
    return Status(201, {"contact": contact.external_id, **_enrollment_out(enrollment)})
