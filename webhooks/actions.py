"""Webhook endpoints and their delivery: every write of the webhooks app that matters.

Delivery is at least once. Each due delivery is claimed under a lease (FOR UPDATE SKIP
LOCKED), posted outside any transaction with a short timeout, and its outcome committed
with a logged attempt. A worker that dies after the receiver answered but before that
commit leaves the delivery to be sent again when its lease runs out: receivers drop the
copy by its `webhook-id`, as the Standard Webhooks specification asks.
"""

import base64
import json
import random
import secrets
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from standardwebhooks.webhooks import Webhook

from journeys.bulk import claim, insert_rows
from journeys.wakeups import wake
from webhooks.models import (
    SUBSCRIBABLE,
    EventType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from webhooks.outbox import forget_subscriptions, new_msg_id
from webhooks.transport import Refused, post, resolve

# An endpoint that has failed every attempt for this long is disabled.
DISABLE_AFTER = timedelta(days=1)
# Tries of one delivery: with the back-off below, about ten hours.
MAX_ATTEMPTS = 15


class EndpointInvalid(Exception):
    """Errors in the contract's shape: a list of {"loc": [...], "message": ...}."""

    def __init__(self, errors: list[dict]):
        super().__init__("; ".join(error["message"] for error in errors))
        self.errors = errors


def _forget_now_and_on_commit() -> None:
    # Now, for this transaction's own facts; on commit, for a read made meanwhile.
    forget_subscriptions()
    transaction.on_commit(forget_subscriptions)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_endpoint(*, url: object, events: object) -> list[dict]:
    """Every error of an endpoint's fields, each naming its field (empty when valid). The
    URL is resolved now; it is resolved again at each send, where it counts."""
    errors = []
    if not isinstance(url, str) or not url.strip():
        errors.append({"loc": ["body", "url"], "message": "A URL is required."})
    elif len(url) > 2000:
        errors.append({"loc": ["body", "url"], "message": "The URL is longer than 2000."})
    else:
        try:
            resolve(url.strip(), allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
        except Refused as exc:
            errors.append({"loc": ["body", "url"], "message": str(exc)})
    if not isinstance(events, list) or not events:
        errors.append(
            {
                "loc": ["body", "events"],
                "message": f"A non-empty list of event types: {', '.join(SUBSCRIBABLE)}.",
            }
        )
    else:
        for index, name in enumerate(events):
            if name not in SUBSCRIBABLE:
                errors.append(
                    {
                        "loc": ["body", "events", index],
                        "message": f"Unknown event type {name!r}; known: "
                        f"{', '.join(SUBSCRIBABLE)}.",
                    }
                )
    return errors


@transaction.atomic
def create_endpoint(*, url: object, events: object, now: datetime) -> WebhookEndpoint:
    """A new enabled endpoint with a new secret (on the returned row, to show once).
    EndpointInvalid naming each bad field. Locks nothing; running it twice makes two
    endpoints, as two requests would."""
    errors = check_endpoint(url=url, events=events)
    if errors:
        raise EndpointInvalid(errors)
    endpoint = WebhookEndpoint.objects.create(
        url=url.strip(), events=list(dict.fromkeys(events)), secret=new_secret(), created_at=now
    )
    _forget_now_and_on_commit()
    return endpoint


@transaction.atomic
def delete_endpoint(*, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint with its deliveries and their log. Safe to run twice: the
    second finds nothing to delete."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()
    _forget_now_and_on_commit()


@transaction.atomic
def enable_endpoints(*, endpoints, now: datetime) -> int:
    """Enable disabled endpoints again (the admin's action): their pending deliveries are
    due at once. Running it twice changes nothing more."""
    ids = list(endpoints.filter(enabled=False).values_list("pk", flat=True))
    WebhookEndpoint.objects.filter(pk__in=ids).update(
        enabled=True, failing_since=None, disabled_at=None, disabled_reason=""
    )
    WebhookDelivery.objects.filter(
        endpoint_id__in=ids, status=WebhookDelivery.Status.PENDING
    ).update(due_at=now)
    _forget_now_and_on_commit()
    if ids:
        wake("deliver_webhooks")
    return len(ids)


@transaction.atomic
def send_test_event(*, endpoint: WebhookEndpoint, now: datetime) -> WebhookEvent:
    """Queue a `webhook.test` event for this endpoint alone. Each call sends one more."""
    event = WebhookEvent.objects.create(
        msg_id=new_msg_id(),
        event_type=EventType.TEST,
        payload={"endpoint": endpoint.pk, "message": "A test event from Waypoint."},
        created_at=now,
        endpoint=endpoint,
    )
    wake("deliver_webhooks")
    return event


def retry_delay(attempts: int, rng: random.Random) -> timedelta:
    """Exponential back-off, 10 s doubling up to an hour, with jitter (between half and the
    whole of it) so endpoints that fail together are not all retried at the same moment."""
    ceiling = min(10 * 2 ** max(attempts - 1, 0), 3600)
    return timedelta(seconds=ceiling * rng.uniform(0.5, 1.0))


def _fan_out(*, now: datetime, limit: int) -> int:
    """Turn a batch of queued events into one delivery per subscribed enabled endpoint."""
    with transaction.atomic():
        events = claim(WebhookEvent.objects.filter(fanned_out=False).order_by("id"), limit)
        if not events:
            return 0
        endpoints = list(WebhookEndpoint.objects.filter(enabled=True))
        rows = [
            {
                "event": event.pk,
                "endpoint": endpoint.pk,
                "status": WebhookDelivery.Status.PENDING,
                "attempts": 0,
                "due_at": now,
                "leased_until": None,
                "delivered_at": None,
                "last_error": "",
                "created_at": now,
            }
            for event in events
            for endpoint in endpoints
            if (event.endpoint_id == endpoint.pk)
            or (event.endpoint_id is None and event.event_type in endpoint.events)
        ]
        insert_rows(WebhookDelivery, rows, ignore_conflicts=True)
        WebhookEvent.objects.filter(pk__in=[event.pk for event in events]).update(fanned_out=True)
    return len(events)


def signed_request(delivery: WebhookDelivery, *, now: datetime) -> tuple[bytes, dict]:
    """The body and the Standard Webhooks headers of one attempt."""
    event = delivery.event
    body = json.dumps(
        {
            "type": event.event_type,
            "timestamp": event.created_at.isoformat(),
            "data": event.payload,
        },
        separators=(",", ":"),
    )
    signature = Webhook(delivery.endpoint.secret).sign(event.msg_id, now, body)
    headers = {
        "webhook-id": event.msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    return body.encode(), headers


def deliver_due_webhooks(*, limit: int | None = None, now: datetime) -> int:
    """Fan queued events out to their endpoints, then attempt a batch of due deliveries;
    returns how many events and deliveries were handled.

    Steps, each its own short transaction so that nothing waits on a slow receiver:
    1. Queued events become deliveries, one per subscribed enabled endpoint (the unique
       (event, endpoint) pair makes a repeat harmless).
    2. A batch of due deliveries of enabled endpoints is claimed (FOR UPDATE SKIP LOCKED)
       and leased until now + ENGINE_LEASE_SECONDS, attempts + 1.
    3. Each is posted (outside any transaction, WEBHOOK_TIMEOUT_SECONDS at most) unless its
       lease passed to another worker, and its outcome is committed with its attempt.
    An error of one delivery, whatever it is, is that delivery's failed attempt: the others
    go on. Safe to run twice, concurrently too: see the lease. At least once: see the module.
    """
    limit = limit or settings.WEBHOOK_BATCH_SIZE
    fanned = _fan_out(now=now, limit=settings.ENGINE_BATCH_SIZE)
    lease_until = now + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)
    with transaction.atomic():
        deliveries = claim(
            WebhookDelivery.objects.filter(
                status=WebhookDelivery.Status.PENDING, due_at__lte=now, endpoint__enabled=True
            )
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
            .select_related("event", "endpoint")
            .order_by("due_at"),
            limit,
        )
        WebhookDelivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(
            leased_until=lease_until, attempts=F("attempts") + 1
        )
    rng = random.Random()
    for delivery in deliveries:
        delivery.attempts += 1
        ours = WebhookDelivery.objects.filter(
            pk=delivery.pk, leased_until=lease_until, status=WebhookDelivery.Status.PENDING
        )
        if not ours.exists():
            continue  # The lease ran out and another worker has it now.
        started = time.monotonic()
        status_code, error = None, ""
        try:
            body, headers = signed_request(delivery, now=now)
            status_code, answer = post(
                delivery.endpoint.url,
                body=body,
                headers=headers,
                timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
                allow_private=settings.WEBHOOK_ALLOW_PRIVATE,
            )
            if 300 <= status_code < 400:
                error = f"HTTP {status_code}: redirects are not followed."
            elif not 200 <= status_code < 300:
                error = f"HTTP {status_code}: {answer[:500]}"
        except Refused as exc:
            error = f"Refused: {exc}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        _record_attempt(
            delivery,
            status_code=status_code,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
            now=now,
            rng=rng,
        )
    return fanned + len(deliveries)


@transaction.atomic
def _record_attempt(
    delivery: WebhookDelivery,
    *,
    status_code: int | None,
    error: str,
    duration_ms: int,
    now: datetime,
    rng: random.Random,
) -> None:
    WebhookAttempt.objects.create(
        delivery=delivery,
        attempted_at=now,
        status_code=status_code,
        error=error[:2000],
        duration_ms=duration_ms,
    )
    row = WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.PENDING)
    endpoint = WebhookEndpoint.objects.filter(pk=delivery.endpoint_id)
    if not error:
        row.update(
            status=WebhookDelivery.Status.DELIVERED,
            delivered_at=now,
            last_error="",
            leased_until=None,
        )
        endpoint.filter(failing_since__isnull=False).update(failing_since=None)
        return
    if delivery.attempts >= MAX_ATTEMPTS:
        row.update(
            status=WebhookDelivery.Status.FAILED,
            last_error=f"Gave up after {delivery.attempts} attempts; last error: {error}"[:2000],
            leased_until=None,
        )
    else:
        row.update(
            last_error=error[:2000],
            due_at=now + retry_delay(delivery.attempts, rng),
            leased_until=None,
        )
    # Conditional UPDATEs, so concurrent workers failing on the same endpoint agree without
    # locking its row: the first failure dates the streak, a day later one disables it.
    endpoint.filter(failing_since__isnull=True).update(failing_since=now)
    if endpoint.filter(enabled=True, failing_since__lte=now - DISABLE_AFTER).update(
        enabled=False,
        disabled_at=now,
        disabled_reason=f"Every attempt failed for more than a day; the last: {error}"[:2000],
    ):
        _forget_now_and_on_commit()
