"""The Segment-compatible surface (`/api/segment/v1/...`, docs/contract.md §6.3): what
Segment's and RudderStack's SDKs and Segment's HTTP destinations post, turned into the
API's events and contact updates.

Nothing here writes an event itself: every message becomes an `EventIn` (the same limits
as `POST /api/v1/events`: id and name lengths, the timestamp's floor and ceiling) and goes
through `ingest_events`, idempotent on `messageId`; `identify` traits go through
`upsert_contact`, as `PUT /api/v1/contacts` does. Errors and rate limits are the API's.

Choices (docs/integrations.md, "Segment"):
- A message with only an `anonymousId` is stored against the contact `anon:<anonymousId>`:
  refusing it would make the SDK drop the whole batch, identified events included.
- `alias` is stored as an event and merges no contacts.
- Every message is stored as an event named after its type (`track`: its `event`), so
  `identify`, `page`, `screen`, `group` and `alias` can trigger journeys too.
"""

import zlib
from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.utils import timezone
from ninja import Router
from ninja.errors import ValidationError
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from pydantic import ValidationError as PydanticValidationError

from journeys.actions.contacts import upsert_contact
from journeys.actions.events import ingest_events
from journeys.api import EventIn
from journeys.auth import ApiError, segment_auth
from journeys.models import Event
from journeys.parsers import BodyError, parse_json
from journeys.ratelimit import spend_ingest

router = Router(tags=["segment"])

ANONYMOUS_PREFIX = "anon:"
MessageType = Literal["track", "identify", "page", "screen", "group", "alias"]
Id = str | int | None


class SegmentMessageIn(BaseModel):
    """One message of Segment's spec. Fields the spec has and Waypoint does not use
    (`context`, `integrations`, `channel`, ...) are ignored, not refused: every SDK sends
    some, and each SDK version adds more."""

    model_config = ConfigDict(extra="ignore")

    type: MessageType
    messageId: str = PydanticField(min_length=1, max_length=100)
    userId: Id = None
    anonymousId: Id = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] = PydanticField(default_factory=dict)
    traits: dict[str, Any] = PydanticField(default_factory=dict)
    groupId: Id = None
    previousId: Id = None
    timestamp: datetime | None = None
    sentAt: datetime | None = None


class SegmentBatchIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    batch: list[SegmentMessageIn] = PydanticField(
        min_length=1, max_length=settings.API_MAX_EVENTS_PER_BATCH
    )
    sentAt: datetime | None = None


# EventIn's fields as a Segment message names them, to locate its errors.
_SEGMENT_FIELD = {"id": "messageId", "name": "event", "properties": "properties"}


def _body(request) -> dict:
    """The JSON object of the body, gunzipped when `Content-Encoding: gzip` (as the SDKs'
    `gzip=True` sends it), at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes once decompressed so a
    small zip bomb cannot take the process's memory."""
    raw = request.body
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding == "gzip":
        raw = _gunzip(raw, limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    elif encoding != "identity":
        raise ApiError.single(
            415,
            f"Content-Encoding '{encoding}' is not supported: send gzip or no encoding.",
            ["header", "Content-Encoding"],
        )
    if not raw.strip():
        raise ApiError.single(400, "The body must be a JSON object.", ["body"])
    try:
        data = parse_json(raw)
    except BodyError as exc:
        raise ApiError.single(400, str(exc), exc.loc) from None
    if not isinstance(data, dict):
        raise ApiError.single(400, "The body must be a JSON object.", ["body"])
    return data


def _gunzip(raw: bytes, *, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(raw, limit + 1)
    except zlib.error:
        raise ApiError.single(
            400, "The body is not valid gzip (Content-Encoding: gzip).", ["body"]
        ) from None
    if len(data) > limit:
        raise ApiError.single(
            413, f"The body is too large once decompressed (more than {limit} bytes).", ["body"]
        )
    if not decompressor.eof:
        raise ApiError.single(400, "The gzip body is truncated.", ["body"])
    return data


def _validated(model: type[BaseModel], data: dict, loc: list) -> BaseModel:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(
            [{"loc": [*loc, *error["loc"]], "msg": error["msg"]} for error in exc.errors()]
        ) from None


def _event_properties(message: SegmentMessageIn) -> dict:
    if message.type in ("page", "screen"):
        named = {
            key: getattr(message, key) for key in ("name", "category") if getattr(message, key)
        }
        return {**message.properties, **named}
    if message.type == "identify":
        return {"traits": message.traits}
    if message.type == "group":
        return {"groupId": message.groupId, "traits": message.traits}
    if message.type == "alias":
        return {"previousId": message.previousId}
    return message.properties


def _contact(message: SegmentMessageIn, loc: list) -> tuple[str, str]:
    """The contact's external id, and the field it came from (to locate errors)."""
    if message.userId not in (None, ""):
        return str(message.userId), "userId"
    if message.anonymousId not in (None, ""):
        return ANONYMOUS_PREFIX + str(message.anonymousId), "anonymousId"
    raise ApiError.single(400, "A message needs a userId or an anonymousId.", [*loc, "userId"])


def _corrected(message: SegmentMessageIn, sent_at: datetime | None, received_at: datetime):
    """The event's time as Segment computes it: the device's clock is corrected by how far
    it was off when the batch was sent (`timestamp + (received_at - sentAt)`)."""
    if message.timestamp is None:
        return received_at
    sent_at = message.sentAt or sent_at
    if sent_at is None:
        return message.timestamp
    try:
        return message.timestamp + (received_at - sent_at)
    except (OverflowError, TypeError):
        return message.timestamp


def to_event(
    message: SegmentMessageIn, *, sent_at: datetime | None, received_at: datetime, loc: list
) -> EventIn:
    """A Segment message as the API's event, validated by the same rules as
    `POST /api/v1/events`; errors name the message's own fields."""
    contact, contact_field = _contact(message, loc)
    timestamp = _corrected(message, sent_at, received_at)
    candidate = {
        "id": message.messageId,
        "contact": contact,
        "name": message.event if message.type == "track" else message.type,
        "properties": _event_properties(message),
        "timestamp": timestamp.isoformat() if timestamp else None,
    }
    try:
        return EventIn.model_validate(candidate)
    except PydanticValidationError as exc:
        fields = {**_SEGMENT_FIELD, "contact": contact_field, "timestamp": "timestamp"}
        raise ValidationError(
            [
                {"loc": [*loc, fields.get(error["loc"][0], error["loc"][0])], "msg": error["msg"]}
                for error in exc.errors()
            ]
        ) from None


def _identify_changes(message: SegmentMessageIn, loc: list) -> tuple[str | None, dict]:
    """`traits.email` as the contact's email (checked as PUT /contacts checks it), the
    other traits as its attributes."""
    attributes = dict(message.traits)
    email = attributes.pop("email", None)
    if email is not None:
        if not isinstance(email, str) or len(email) > 254:
            raise ApiError.single(400, "Enter a valid email address", [*loc, "traits", "email"])
        if email:
            try:
                validate_email(email)
            except DjangoValidationError:
                raise ApiError.single(
                    400, "Enter a valid email address", [*loc, "traits", "email"]
                ) from None
    return email, attributes


def ingest_messages(request, messages: list[tuple[SegmentMessageIn, list]], sent_at) -> dict:
    """Validate every message first (a batch with any invalid message is refused whole, as
    on /api/v1/events), spend the key's budget, apply `identify` traits, then store the
    events in one `ingest_events`.

    Traits are applied before the events are stored, and only for messages not stored yet:
    a retried request (its events not stored, or stored by a concurrent copy carrying the
    same traits) applies them again harmlessly, while an old `identify` replayed later
    (already stored) cannot undo newer traits."""
    received_at = timezone.now()
    events = []
    identifies = []
    for message, loc in messages:
        event = to_event(message, sent_at=sent_at, received_at=received_at, loc=loc)
        events.append(event)
        if message.type == "identify":
            identifies.append((event, *_identify_changes(message, loc)))
    spend_ingest(api_key=request.auth, events=len(events))
    if identifies:
        stored = set(
            Event.objects.filter(event_id__in=[event.id for event, _, _ in identifies]).values_list(
                "event_id", flat=True
            )
        )
        for event, email, attributes in identifies:
            if event.id not in stored:
                upsert_contact(external_id=event.contact, email=email, attributes=attributes)
    ingest_events(
        events=[event.model_dump() for event in events],
        source=Event.Source.SEGMENT,
        now=received_at,
    )
    return {"success": True}


_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}}


@router.post("/v1/batch", auth=segment_auth, openapi_extra=_BODY)
def post_batch(request):
    """Segment's batch call: `{"batch": [message, ...], "sentAt": ...}`, 1 to 1,000
    messages of any type. Answers `{"success": true}`."""
    payload = _validated(SegmentBatchIn, _body(request), [])
    return ingest_messages(
        request,
        [(message, ["batch", index]) for index, message in enumerate(payload.batch)],
        payload.sentAt,
    )


def _single(message_type: str):
    def route(request):
        data = {**_body(request), "type": message_type}
        message = _validated(SegmentMessageIn, data, [])
        return ingest_messages(request, [(message, [])], None)

    route.__name__ = f"post_{message_type}"
    route.__doc__ = f'Segment\'s `{message_type}` call: one message. Answers `{{"success": true}}`.'
    return route


for _type in MessageType.__args__:
    router.post(f"/v1/{_type}", auth=segment_auth, openapi_extra=_BODY)(_single(_type))
