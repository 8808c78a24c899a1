"""The one call every producer of a reported fact makes: `enqueue_webhook_events`, in the
transaction that writes the fact, so a fact is reported if and only if it is stored.

It sits in the core layer (beside journeys.models) so that conversions and the journeys
actions can all import it. It costs nothing when nobody listens: the set of subscribed
event types is cached per process for `WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS`, and a type
nobody subscribes to writes no row and runs no query. An endpoint created in another
process is therefore heard from at most that many seconds late; this process forgets its
cache at once when it changes an endpoint itself (`forget_subscriptions`).
"""

import json
import time
import uuid
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from journeys.bulk import insert_rows
from journeys.models import Contact
from webhooks.models import WebhookEndpoint, WebhookEvent

_cache: dict = {"types": None, "loaded": 0.0}


def forget_subscriptions() -> None:
    """Read the subscriptions again at the next fact (after an endpoint changes here)."""
    _cache["types"] = None


def subscribed_types() -> frozenset[str]:
    """The event types at least one enabled endpoint subscribes to, cached per process.
    A monotonic clock times the cache: it is the process's bookkeeping, not the engine's."""
    clock = time.monotonic()
    if _cache["types"] is None or clock - _cache["loaded"] > (
        settings.WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS
    ):
        types: set[str] = set()
        for events in WebhookEndpoint.objects.filter(enabled=True).values_list("events", flat=True):
            types.update(events)
        _cache["types"] = frozenset(types)
        _cache["loaded"] = clock
    return _cache["types"]


def new_msg_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _plain(data: dict) -> dict:
    # Decimals, dates and UUIDs as JSON has them, so the stored payload is what is signed.
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def enqueue_webhook_events(*, event_type: str, facts: Iterable[dict], now: datetime) -> int:
    """Queue one webhook event per fact (the `data` of the Standard Webhooks body), in the
    caller's transaction: one INSERT for the whole batch, plus one read of the contacts'
    external ids. None at all when no enabled endpoint subscribes to `event_type`: `facts`
    may be a generator, which is then never run. A fact's `contact_id` (the row id) becomes
    `contact: {"external_id": ...}`, the id the integration knows. Returns how many.

    Locks only the index entries of the rows it inserts. Running it twice reports the facts
    twice (each row has its own message id); callers call it in the transaction that stores
    the fact, which happens once."""
    if event_type not in subscribed_types():
        return 0
    facts = list(facts)
    if not facts:
        return 0
    external_ids = dict(
        Contact.objects.filter(pk__in={fact["contact_id"] for fact in facts}).values_list(
            "pk", "external_id"
        )
    )
    rows = []
    for fact in facts:
        data = dict(fact)
        data["contact"] = {"external_id": external_ids.get(data.pop("contact_id"))}
        rows.append(
            {
                "msg_id": new_msg_id(),
                "event_type": event_type,
                "payload": _plain(data),
                "created_at": now,
                "fanned_out": False,
                "endpoint": None,
            }
        )
    insert_rows(WebhookEvent, rows)
    return len(rows)
