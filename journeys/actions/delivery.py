"""Delivery feedback: what the email provider reports about messages it took (delivered,
bounced, complained, opened, clicked, unsubscribed), as anymail normalises it from each
provider's tracking webhook (docs/messages.md, "Providers and delivery feedback")."""

import re
from datetime import datetime

from anymail.signals import AnymailTrackingEvent, EventType
from django.db import transaction
from django.utils import timezone

from journeys.actions.messages import message_id
from journeys.models import Contact, DeliveryEvent, OutboxMessage, default_subscriptions

Status = OutboxMessage.Status

# Event type -> (the message's timestamp field, the status it moves to, the contact's email
# subscription it sets). An unsubscribe is the contact's answer, not the message's fate.
FEEDBACK = {
    EventType.DELIVERED: ("delivered_at", Status.DELIVERED, None),
    EventType.BOUNCED: ("bounced_at", Status.BOUNCED, "bounced"),
    EventType.COMPLAINED: ("complained_at", Status.COMPLAINED, "complained"),
    EventType.OPENED: ("opened_at", Status.OPENED, None),
    EventType.CLICKED: ("clicked_at", Status.CLICKED, None),
    EventType.UNSUBSCRIBED: ("unsubscribed_at", None, "unsubscribed"),
}

# Feedback only moves a status forward: an "opened" that arrives after "clicked" (providers
# do not keep order) leaves it clicked. A bounce outranks a delivery (providers report late
# bounces after accepting), a complaint everything. `failed` is moved on too: a message
# whose outcome was unknown (the worker died mid-send) did arrive if the provider says so.
# `pending` is not: the worker is sending it right now and commits `sent` after this; its
# timestamps are still kept, and the report counts those.
RANK = {
    Status.FAILED: 0,
    Status.SENT: 1,
    Status.DELIVERED: 2,
    Status.BOUNCED: 3,
    Status.OPENED: 4,
    Status.CLICKED: 5,
    Status.COMPLAINED: 6,
}

OUR_MESSAGE_ID = re.compile(r"<?outbox-(\d+)\.\d+@[^>]*>?")


def record_delivery_events(
    *, events: list[AnymailTrackingEvent], provider: str, now: datetime
) -> int:
    """Apply provider events to their outbox messages and the messages' contacts, in order;
    returns how many were recorded. Events of other types (queued, deferred, rejected...)
    and events naming no message of ours are ignored.

    A message is found by the `outbox_id` metadata we send with it, else by the provider's
    message id stored at send, else by our own Message-ID header. The first time of each
    kind is kept on the row (`delivered_at`, `opened_at`...), the status only moves forward
    (RANK), and a bounce, complaint or unsubscribe sets the contact's email subscription,
    unless the contact's address has changed since the message went out.

    One transaction. Locks the contact rows, then the message rows, each in pk order (the
    house's order, docs/engine.md), so two webhooks about the same messages wait for each
    other rather than deadlock. Safe to run twice: each provider event id is stored once
    (an event without an id counts once per message and type), and it is checked under the
    message's lock, so a webhook delivered again, even concurrently, changes nothing.
    """
    found = _find_messages([e for e in events if e.event_type in FEEDBACK])
    if not found:
        return 0
    with transaction.atomic():
        contacts = {
            c.pk: c
            for c in Contact.objects.select_for_update()
            .filter(pk__in={contact_pk for _, contact_pk in found.values()})
            .order_by("pk")
        }
        messages = {
            m.pk: m
            for m in OutboxMessage.objects.select_for_update()
            .filter(pk__in={message_pk for message_pk, _ in found.values()})
            .order_by("pk")
        }
        keyed = [
            (event, messages[found[id(event)][0]], _event_key(event, found[id(event)][0]))
            for event in events
            if id(event) in found and found[id(event)][0] in messages
        ]
        seen = set(
            DeliveryEvent.objects.filter(
                provider=provider[:32], event_id__in=[key for _, _, key in keyed]
            ).values_list("event_id", flat=True)
        )
        recorded, message_fields, touched_contacts = [], set(), {}
        for event, message, key in keyed:
            if key in seen:
                continue
            seen.add(key)
            recorded.append(
                DeliveryEvent(
                    message=message,
                    provider=provider[:32],
                    event_id=key,
                    event_type=event.event_type,
                    occurred_at=event.timestamp or now,
                    received_at=now,
                )
            )
            message_fields |= _apply_to_message(message, event, now=now)
            contact = contacts.get(message.contact_id)
            if contact is not None and _apply_to_contact(contact, message, event):
                touched_contacts[contact.pk] = contact
        DeliveryEvent.objects.bulk_create(recorded)
        if message_fields:
            OutboxMessage.objects.bulk_update(messages.values(), sorted(message_fields))
        for contact in touched_contacts.values():
            contact.updated_at = now
        Contact.objects.bulk_update(touched_contacts.values(), ["subscriptions", "updated_at"])
    return len(recorded)


def receive_tracking_event(sender, event, esp_name, **kwargs):
    """anymail's `tracking` signal (one event of a verified webhook), connected in
    JourneysConfig.ready: the action does the work."""
    record_delivery_events(events=[event], provider=esp_name, now=timezone.now())


def _event_key(event: AnymailTrackingEvent, message_pk: int) -> str:
    return (event.event_id or f"{event.event_type}/{message_pk}")[:255]


def _apply_to_message(message: OutboxMessage, event: AnymailTrackingEvent, *, now) -> set[str]:
    field, status, _ = FEEDBACK[event.event_type]
    changed = set()
    if getattr(message, field) is None:
        setattr(message, field, event.timestamp or now)
        changed.add(field)
    if status is not None and RANK[status] > RANK.get(message.status, RANK[status]):
        message.status = status
        changed.add("status")
    return changed


def _apply_to_contact(contact: Contact, message: OutboxMessage, event) -> bool:
    subscription = FEEDBACK[event.event_type][2]
    if not subscription or not _same_address(contact, message, event):
        return False
    current = {**default_subscriptions(), **(contact.subscriptions or {})}
    if current["email"] == subscription:
        return False
    contact.subscriptions = {**current, "email": subscription}
    return True


def _find_messages(events: list[AnymailTrackingEvent]) -> dict[int, tuple[int, int]]:
    """id(event) -> (message pk, contact pk) for the events about a message of ours; at
    most three queries whatever their number."""
    rows = OutboxMessage.objects.filter(channel=OutboxMessage.Channel.EMAIL)
    by_metadata, by_provider, by_ours = {}, {}, {}
    for event in events:
        metadata = event.metadata if isinstance(event.metadata, dict) else {}
        outbox_id = str(metadata.get("outbox_id", ""))
        provider_id = event.message_id.strip() if isinstance(event.message_id, str) else ""
        ours = OUR_MESSAGE_ID.fullmatch(provider_id)
        if outbox_id.isdigit():
            by_metadata[id(event)] = int(outbox_id)
        if provider_id:
            by_provider[id(event)] = provider_id
        if ours:
            by_ours[id(event)] = (int(ours.group(1)), provider_id.strip("<>"))
    metadata_rows = dict(
        rows.filter(pk__in=set(by_metadata.values())).values_list("pk", "contact_id")
    )
    provider_rows = {
        provider_id: (pk, contact_pk)
        for provider_id, pk, contact_pk in rows.filter(
            provider_message_id__in=set(by_provider.values())
        ).values_list("provider_message_id", "pk", "contact_id")
    }
    # Our Message-ID carries the row's creation time: an id from another database (a
    # staging copy sending through the same account) does not match this row.
    our_rows = {
        row.pk: row
        for row in rows.filter(pk__in={pk for pk, _ in by_ours.values()}).only(
            "pk", "contact_id", "created_at"
        )
    }
    found = {}
    for event in events:
        key = id(event)
        if by_metadata.get(key) in metadata_rows:
            found[key] = (by_metadata[key], metadata_rows[by_metadata[key]])
        elif by_provider.get(key) in provider_rows:
            found[key] = provider_rows[by_provider[key]]
        elif key in by_ours:
            pk, text = by_ours[key]
            row = our_rows.get(pk)
            if row is not None and message_id(row).strip("<>") == text:
                found[key] = (row.pk, row.contact_id)
    return found


def _same_address(contact: Contact, message: OutboxMessage, event: AnymailTrackingEvent) -> bool:
    """Whether the event is about the contact's current address: a bounce of an address the
    contact has since replaced says nothing about the new one."""
    address = (event.recipient or message.recipient or contact.email or "").strip().lower()
    return bool(address) and address == (contact.email or "").strip().lower()


def record_click(*, outbox_id: int, url: str, now: datetime) -> bool:
    """A click on one of our signed redirects (journeys.clicks): recorded like a provider's
    click event, through record_delivery_events. Locks and idempotence are that action's; the
    first click of a message counts, later ones change nothing."""
    event = AnymailTrackingEvent(
        event_type=EventType.CLICKED,
        timestamp=now,
        event_id=f"waypoint-click/{outbox_id}",
        metadata={"outbox_id": str(outbox_id)},
        click_url=url,
    )
    return bool(record_delivery_events(events=[event], provider="Waypoint", now=now))
