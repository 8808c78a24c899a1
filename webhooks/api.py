"""`/api/v1/webhooks`: endpoints that receive the product's events (contract 6.3). The
secret is in the answer of the POST that creates the endpoint, and nowhere after."""

from datetime import datetime

from django.utils import timezone
from ninja import Router, Schema
from ninja.responses import Status

from journeys.auth import ApiError, manage_auth
from journeys.parsers import BodyError, parse_json
from webhooks.actions import EndpointInvalid, create_endpoint, delete_endpoint
from webhooks.models import WebhookEndpoint

router = Router()

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["url", "events"],
                    "properties": {
                        "url": {"type": "string", "format": "uri"},
                        "events": {"type": "array", "items": {"type": "string"}},
                    },
                }
            }
        },
    }
}


class EndpointOut(Schema):
    id: int
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str
    created_at: datetime


class CreatedEndpointOut(EndpointOut):
    secret: str


def _out(endpoint: WebhookEndpoint) -> dict:
    return {
        "id": endpoint.pk,
        "url": endpoint.url,
        "events": endpoint.events,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "created_at": endpoint.created_at,
    }


def _endpoint_or_404(endpoint_id: int) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:
        raise ApiError.single(404, f"No webhook endpoint has the id {endpoint_id}.", ["id"])
    return endpoint


@router.post(
    "/webhooks",
    auth=manage_auth,
    tags=["webhooks"],
    response={201: CreatedEndpointOut},
    openapi_extra=_BODY,
)
def create_webhook(request):
    """Subscribe a URL to events. The answer's `secret` signs every delivery; it is shown
    this once."""
    try:
        body = parse_json(request.body) if request.body.strip() else None
    except BodyError as exc:
        raise ApiError.single(400, str(exc), exc.loc) from None
    if not isinstance(body, dict):
        raise ApiError.single(400, "The body must be a JSON object.", ["body"])
    try:
        endpoint = create_endpoint(
            url=body.get("url"), events=body.get("events"), now=timezone.now()
        )
    except EndpointInvalid as exc:
        raise ApiError(400, exc.errors) from None
    return Status(201, {**_out(endpoint), "secret": endpoint.secret})


@router.get("/webhooks", auth=manage_auth, tags=["webhooks"], response=list[EndpointOut])
def list_webhooks(request):
    """Every endpoint, without secrets."""
    return [_out(endpoint) for endpoint in WebhookEndpoint.objects.order_by("id")]


@router.get("/webhooks/{endpoint_id}", auth=manage_auth, tags=["webhooks"], response=EndpointOut)
def get_webhook(request, endpoint_id: int):
    """One endpoint, without its secret."""
    return _out(_endpoint_or_404(endpoint_id))


@router.delete("/webhooks/{endpoint_id}", auth=manage_auth, tags=["webhooks"], response={204: None})
def delete_webhook(request, endpoint_id: int):
    """Delete the endpoint; nothing more is sent to it."""
    delete_endpoint(endpoint=_endpoint_or_404(endpoint_id))
    return Status(204, None)
