"""The `/api/v1/` surface: one NinjaAPI with the apps' routers, and the contract's error shape
for every failure (the key authentication is `journeys.auth`, the body parser
`journeys.parsers`).

Every error leaves as `{"errors": [{"loc": [...], "message": "..."}]}` with a 4xx status (503
while the database is down), so an integration never has to parse an HTML page or a
framework-specific body.
"""

import logging

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import InterfaceError, OperationalError
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from journeys.api import router as journeys_router
from journeys.auth import ApiError
from journeys.parsers import BodyError, JsonParser
from journeys.ratelimit import RateLimited
from journeys.segment import router as segment_router
from reporting.api import router as reporting_router
from webhooks.api import router as webhooks_router

logger = logging.getLogger(__name__)


api = NinjaAPI(
    title="Waypoint API",
    version="1",
    description="Journeys with first-class conversions.",
    urls_namespace="api-v1",
    parser=JsonParser(),
)


def _errors(request, status, errors):
    return api.create_response(request, {"errors": errors}, status=status)


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return _errors(request, exc.status, exc.errors)


def _unauthorized(request, message: str, challenge: str):
    response = _errors(request, 401, [{"loc": ["header", "Authorization"], "message": message}])
    response["WWW-Authenticate"] = challenge
    return response


@api.exception_handler(AuthenticationError)
def _auth_error(request, exc):
    return _unauthorized(
        request, "A valid API key is required: send 'Authorization: Bearer <key>'.", "Bearer"
    )


def _clean_loc(loc) -> list:
    # ninja prefixes where the value came from ("body", "payload", ...); keep the part that
    # names the field as the client sent it.
    loc = list(loc)
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
        where = loc.pop(0)
        if where == "body" and loc and loc[0] in ("payload", "data", "body"):
            loc.pop(0)
        if where != "body":
            loc.insert(0, where)
    return loc


@api.exception_handler(ValidationError)
def _validation_error(request, exc: ValidationError):
    errors = []
    for error in exc.errors:
        message = error.get("msg") or "Invalid value"
        if error.get("type") == "json_invalid" or "JSON" in message and "parse" in message.lower():
            message = "The body is not valid JSON."
        loc = _clean_loc(error.get("loc", []))
        if not loc and list(error.get("loc", []))[:1] == ["body"]:
            # The whole body is missing or not an object: pydantic would say "Field required"
            # or name the schema class, neither of which tells the client what to send.
            loc, message = ["body"], "The body must be a JSON object."
        errors.append({"loc": loc, "message": message})
    return _errors(request, 400, errors)


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    if isinstance(exc.__cause__, BodyError):
        # ninja wraps parser errors as "Cannot parse request body"; keep the reason and where.
        cause = exc.__cause__
        return _errors(request, exc.status_code, [{"loc": cause.loc, "message": str(cause)}])
    return _errors(request, exc.status_code, [{"loc": [], "message": str(exc)}])


@api.exception_handler(RateLimited)
def _rate_limited(request, exc: RateLimited):
    response = _errors(request, 429, [{"loc": [], "message": exc.message}])
    response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _database_unavailable(request, exc):
    # A database restart or a full disk: the write did not happen (nothing was answered as
    # accepted), so the client can safely send the same request again.
    logger.warning("Database unavailable on %s %s: %s", request.method, request.path, exc)
    response = _errors(
        request,
        503,
        [{"loc": [], "message": "The database is unavailable; retry the request shortly."}],
    )
    response["Retry-After"] = "5"
    return response


@api.exception_handler(Http404)
def _not_found(request, exc):
    message = str(exc) if str(exc) and "matches the given query" not in str(exc) else "Not found."
    return _errors(request, 404, [{"loc": [], "message": message}])


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    return _errors(request, 413, [{"loc": ["body"], "message": "The body is too large."}])


@api.exception_handler(TooManyFieldsSent)
def _too_many_fields(request, exc):
    return _errors(request, 413, [{"loc": ["body"], "message": "The body has too many fields."}])


@api.exception_handler(RecursionError)
def _too_deep(request, exc):
    return _errors(request, 400, [{"loc": ["body"], "message": "The body is nested too deeply."}])


@api.exception_handler(Exception)
def _unexpected(request, exc):
    logger.exception("Unexpected API error on %s %s", request.method, request.path)
    return _errors(request, 500, [{"loc": [], "message": "Internal error; it has been logged."}])


api.add_router("", journeys_router)
api.add_router("", reporting_router)
api.add_router("", webhooks_router)


# The Segment-compatible surface (docs/contract.md §6.3) lives at /api/segment/, where the
# SDKs append "/v1/batch" to the host they are given; its errors have the same shape.
segment_api = NinjaAPI(
    title="Waypoint Segment-compatible ingestion",
    version="1",
    description="What Segment's and RudderStack's SDKs post, stored as Waypoint events.",
    urls_namespace="api-segment",
    parser=JsonParser(),
)
for _exc_class, _handler in [
    (ApiError, _api_error),
    (ValidationError, _validation_error),
    (HttpError, _http_error),
    (RateLimited, _rate_limited),
    (OperationalError, _database_unavailable),
    (InterfaceError, _database_unavailable),
    (Http404, _not_found),
    (RequestDataTooBig, _too_big),
    (TooManyFieldsSent, _too_many_fields),
    (RecursionError, _too_deep),
    (Exception, _unexpected),
]:
    segment_api.add_exception_handler(_exc_class, _handler)


@segment_api.exception_handler(AuthenticationError)
def _basic_auth_error(request, exc):
    return _unauthorized(
        request,
        "A valid ingest key is required: HTTP Basic auth with the key as the user name and "
        "an empty password.",
        'Basic realm="waypoint"',
    )


segment_api.add_router("", segment_router)
