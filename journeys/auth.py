"""API authentication: an API key, looked up by its SHA-256, sent as a bearer token (the
`/api/v1/` surface) or as the user name of HTTP Basic auth (the Segment-compatible surface,
what Segment's and RudderStack's SDKs send), and the scopes each route needs; and `ApiError`, the contract's error shape raised from any route (and by the
authentication itself, for a key whose scope does not reach the route)."""

from auditlog.context import auditlog_value
from ninja.security import HttpBasicAuth, HttpBearer

from journeys.actions.api_keys import authenticate_api_key
from journeys.models import ApiKey


class ApiError(Exception):
    """An error with the contract's shape, raised from any route."""

    def __init__(self, status: int, errors: list[dict]):
        super().__init__(errors)
        self.status = status
        self.errors = errors

    @classmethod
    def single(cls, status: int, message: str, loc: list | None = None) -> "ApiError":
        return cls(status, [{"loc": loc or [], "message": message}])


def _authorize(request, raw_key: str, scopes: tuple[str, ...]) -> ApiKey | None:
    key = authenticate_api_key(raw_key=raw_key)
    if key is None:
        return None
    if key.scope != ApiKey.Scope.ALL and key.scope not in scopes:
        needed = "' or '".join(scopes)
        raise ApiError.single(
            403, f"This API key has the '{key.scope}' scope; this call needs '{needed}'."
        )
    request.api_key = key
    _audit_as_api_key(key)
    return key


class KeyAuth(HttpBearer):
    """Bearer API key, looked up by its SHA-256; scope decides which routes it may call."""

    def __init__(self, *scopes: str):
        super().__init__()
        self.scopes = scopes

    def authenticate(self, request, token):
        return _authorize(request, token, self.scopes)


class BasicKeyAuth(HttpBasicAuth):
    """An API key as the user name of HTTP Basic auth (`Basic base64("KEY:")`), as Segment's
    and RudderStack's SDKs send their write key. The password is not read: they send it
    empty, and the key alone is the secret. A `writeKey` in the body is not read either (see
    docs/integrations.md)."""

    def __init__(self, *scopes: str):
        super().__init__()
        self.scopes = scopes

    def authenticate(self, request, username, password):
        return _authorize(request, username, self.scopes) if username else None


def _audit_as_api_key(key: ApiKey) -> None:
    # AuditlogMiddleware opened a context for this request (actor: no user on the API);
    # name the key in each entry's additional_data so API changes say who made them.
    try:
        context = auditlog_value.get()
    except LookupError:
        return
    context["additional_data"] = {"api_key": f"{key.name} ({key.prefix}…)", "api_key_id": key.pk}


ingest_auth = KeyAuth(ApiKey.Scope.INGEST)
manage_auth = KeyAuth(ApiKey.Scope.MANAGE)
# Erasing a contact is open to both: whoever sends the data or runs the journeys may have to
# honour a deletion request.
erase_auth = KeyAuth(ApiKey.Scope.INGEST, ApiKey.Scope.MANAGE)
segment_auth = BasicKeyAuth(ApiKey.Scope.INGEST)
