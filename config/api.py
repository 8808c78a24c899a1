"""The `/api/v1/` surface: one NinjaAPI, its key authentication and the contract's error shape.

Every error leaves as `{"errors": [{"loc": [...], "message": "..."}]}` with a 4xx status (503
while the database is down), so an integration never has to parse an HTML page or a
framework-specific body.
"""

import json
import logging
import math

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import InterfaceError, OperationalError
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer

from config.ratelimit import RateLimited
from journeys.models import ApiKey

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with the contract's shape, raised from any route."""

    def __init__(self, status: int, errors: list[dict]):
        super().__init__(errors)
        self.status = status
        self.errors = errors

    @classmethod
    def single(cls, status: int, message: str, loc: list | None = None) -> "ApiError":
        return cls(status, [{"loc": loc or [], "message": message}])


class KeyAuth(HttpBearer):
    """Bearer API key, looked up by its SHA-256; scope decides which routes it may call."""

    def __init__(self, *scopes: str):
        super().__init__()
        self.scopes = scopes

    def authenticate(self, request, token):
        from journeys.actions import authenticate_api_key

        key = authenticate_api_key(raw_key=token)
        if key is None:
            return None
        if key.scope != ApiKey.Scope.ALL and key.scope not in self.scopes:
            needed = "' or '".join(self.scopes)
            raise ApiError.single(
                403, f"This API key has the '{key.scope}' scope; this call needs '{needed}'."
            )
        request.api_key = key
        _audit_as_api_key(key)
        return key


def _audit_as_api_key(key: ApiKey) -> None:
    # AuditlogMiddleware opened a context for this request (actor: no user on the API);
    # name the key in each entry's additional_data so API changes say who made them.
    from auditlog.context import auditlog_value

    try:
        context = auditlog_value.get()
    except LookupError:
        return
    context["additional_data"] = {"api_key": f"{key.name} ({key.prefix}…)", "api_key_id": key.pk}


class BodyError(ValueError):
    """A request body that is not JSON the API accepts; the message says why."""


def _reject_constant(name: str):
    # NaN and Infinity: Python accepts them, JSON and PostgreSQL do not.
    raise BodyError("The body is not valid JSON.")


def _finite_float(text: str) -> float:
    # 1e999 parses to infinity, which neither JSON nor PostgreSQL can hold.
    value = float(text)
    if math.isinf(value):
        raise BodyError(f"The number {text[:30]} is too large.")
    return value


def _unstorable(text: str) -> bool:
    # NUL cannot be stored in a PostgreSQL text or jsonb value, and an unpaired surrogate
    # (valid in JSON's \u escapes, not in UTF-8) cannot be encoded to be sent there at all.
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_body(value, limit: int) -> None:
    """Depth and strings of a parsed body, walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _unstorable(item):
                raise BodyError(
                    "The body contains a NUL character or an unpaired surrogate (\\u0000, "
                    "\\ud800-\\udfff), which cannot be stored."
                )
            continue
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise BodyError(f"The body is nested too deeply (more than {limit} levels).")
        stack.extend((child, depth + 1) for child in children)


def parse_json(raw: bytes) -> object:
    """The body as JSON, refusing NaN/Infinity and numbers too large to be finite (not
    JSON, and PostgreSQL's jsonb rejects them), strings the database cannot store, and
    nesting deeper than API_MAX_JSON_DEPTH, before any route reads it."""
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except BodyError:
        raise
    except RecursionError:
        raise BodyError("The body is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError):
        raise BodyError("The body is not valid JSON.") from None
    _check_body(data, settings.API_MAX_JSON_DEPTH)
    return data


class JsonParser(Parser):
    def parse_body(self, request):
        return parse_json(request.body)


ingest_auth = KeyAuth(ApiKey.Scope.INGEST)
manage_auth = KeyAuth(ApiKey.Scope.MANAGE)
# Erasing a contact is open to both: whoever sends the data or runs the journeys may have to
# honour a deletion request.
erase_auth = KeyAuth(ApiKey.Scope.INGEST, ApiKey.Scope.MANAGE)

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


@api.exception_handler(AuthenticationError)
def _auth_error(request, exc):
    response = _errors(
        request,
        401,
        [
            {
                "loc": ["header", "Authorization"],
                "message": "A valid API key is required: send 'Authorization: Bearer <key>'.",
            }
        ],
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


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
        # ninja wraps parser errors as "Cannot parse request body"; keep the reason.
        return _errors(request, exc.status_code, [{"loc": ["body"], "message": str(exc.__cause__)}])
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


def _register_routers():
    # Imported here: the routers import this module for its auth objects and ApiError.
    from journeys.api import router as journeys_router
    from reporting.api import router as reporting_router

    api.add_router("", journeys_router)
    api.add_router("", reporting_router)


_register_routers()
