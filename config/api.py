"""The `/api/v1/` surface: one NinjaAPI, its key authentication and the contract's error shape.

Every error leaves as `{"errors": [{"loc": [...], "message": "..."}]}` with a 4xx status, so
an integration never has to parse an HTML page or a framework-specific body.
"""

import logging

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer

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

    def __init__(self, scope: str):
        super().__init__()
        self.scope = scope

    def authenticate(self, request, token):
        from journeys.actions import authenticate_api_key

        key = authenticate_api_key(raw_key=token)
        if key is None:
            return None
        if key.scope not in (ApiKey.Scope.ALL, self.scope):
            raise ApiError.single(
                403, f"This API key has the '{key.scope}' scope; this call needs '{self.scope}'."
            )
        request.api_key = key
        return key


ingest_auth = KeyAuth(ApiKey.Scope.INGEST)
manage_auth = KeyAuth(ApiKey.Scope.MANAGE)

api = NinjaAPI(
    title="Waypoint API",
    version="1",
    description="Journeys with first-class conversions.",
    urls_namespace="api-v1",
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
        errors.append({"loc": _clean_loc(error.get("loc", [])), "message": message})
    return _errors(request, 400, errors)


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    return _errors(request, exc.status_code, [{"loc": [], "message": str(exc)}])


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
