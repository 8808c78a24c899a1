import json

from ninja import Router
from ninja.responses import Status

from config.api import ApiError, manage_auth
from journeys import selectors
from journeys.actions import (
    VersionStateError,
    create_journey,
    publish_version,
    save_draft_version,
)
from journeys.definition import DefinitionError
from journeys.models import Journey, JourneyVersion

router = Router()


# --- Journeys (CONTRACT §2) -------------------------------------------------------------------

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


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _json_body(request, *, required: bool = True) -> object:
    """The body parsed here rather than by ninja, so a definition's errors come from
    definition.py with its locations."""
    if not request.body.strip():
        if required:
            raise ApiError.single(400, "The body must be a JSON object.", ["body"])
        return {}
    try:
        return json.loads(request.body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise ApiError.single(400, "The body is not valid JSON.", ["body"]) from None
    except RecursionError:
        raise ApiError.single(400, "The body is nested too deeply.", ["body"]) from None


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
        "goals": [selectors.goal_definition(goal) for goal in journey.active_goals],
        "conversions": [
            selectors.conversion_definition(conversion) for conversion in journey.active_conversions
        ],
    }


def _definition_errors(exc: DefinitionError) -> ApiError:
    return ApiError(400, exc.errors)


@router.get("/journeys", auth=manage_auth, tags=["journeys"])
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
    response={201: dict},
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


@router.get("/journeys/{key}", auth=manage_auth, tags=["journeys"])
def get_journey(request, key: str):
    """The journey with its versions, goals and conversions."""
    journey = selectors.journey_detail(key=key)
    if journey is None:
        raise ApiError.single(404, f"No journey has the key '{key}'.", ["key"])
    return _journey_out(journey)


@router.get("/journeys/{key}/definition", auth=manage_auth, tags=["journeys"])
def get_definition(request, key: str, version: int | None = None):
    """The canonical definition of a version (default: the newest); it round-trips through
    POST .../versions unchanged."""
    journey = _journey_or_404(key)
    chosen = _version_or_404(journey, version, "version") if version is not None else None
    return selectors.journey_definition(journey=journey, version=chosen)


@router.post(
    "/journeys/{key}/versions",
    auth=manage_auth,
    tags=["journeys"],
    response={201: dict},
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
