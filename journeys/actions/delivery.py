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


def record_delivery_event(*, event: AnymailTrackingEvent, provider: str, now: datetime) -> bool:
    """Apply one provider event to its outbox message and the message's contact; returns
    whether it changed anything. Events of other types (queued, deferred...) and events
    naming no message of ours are ignored.

    The message is found by the `outbox_id` metadata we send with it, else by the provider's
    message id stored at send, else by our own Message-ID header. The first time of each
    kind is kept on the row (`delivered_at`, `opened_at`...), the status only moves forward
    (RANK), and a bounce, complaint or unsubscribe sets the contact's email subscription,
    unless the contact's address has changed since the message went out.

    Locks, in one transaction: the contact row, then the message row (the house's order,
    docs/engine.md). Safe to run twice: the provider's event id is stored once per provider
    (an event without an id counts once per message and type), so a webhook delivered again
    changes nothing.
    """
    feedback = FEEDBACK.get(event.event_type)
    if feedback is None:
        return False
    found = _find_message(event)
    if found is None:
        return False
    message_pk, contact_pk = found
    field, status, subscription = feedback
    with transaction.atomic():
        contact = Contact.objects.select_for_update().filter(pk=contact_pk).first()
        message = OutboxMessage.objects.select_for_update().filter(pk=message_pk).first()
        if message is None:
            return False
        _, new = DeliveryEvent.objects.get_or_create(
            provider=provider[:32],
            event_id=(event.event_id or f"{event.event_type}/{message.pk}")[:255],
            defaults={
                "message": message,
                "event_type": event.event_type,
                "occurred_at": event.timestamp or now,
                "received_at": now,
            },
        )
        if not new:
            return False
        changed = []
        if getattr(message, field) is None:
            setattr(message, field, event.timestamp or now)
            changed.append(field)
        if status is not None and RANK[status] > RANK.get(message.status, RANK[status]):
            message.status = status
            changed.append("status")
        if changed:
            message.save(update_fields=changed)
        if subscription and contact is not None and _same_address(contact, message, event):
            current = {**default_subscriptions(), **(contact.subscriptions or {})}
            if current["email"] != subscription:
                contact.subscriptions = {**current, "email": subscription}
                contact.save(update_fields=["subscriptions", "updated_at"])
    return True


def receive_tracking_event(sender, event, esp_name, **kwargs):
    """anymail's `tracking` signal (one event of a verified webhook), connected in
    JourneysConfig.ready: the action does the work."""
    record_delivery_event(event=event, provider=esp_name, now=timezone.now())


def _find_message(event: AnymailTrackingEvent) -> tuple[int, int] | None:
    """(message pk, contact pk) of the message the event is about, or None."""
    rows = OutboxMessage.objects.filter(channel=OutboxMessage.Channel.EMAIL)
    provider_id = event.message_id.strip() if isinstance(event.message_id, str) else ""
    outbox_id = str((event.metadata or {}).get("outbox_id", ""))
    if outbox_id.isdigit():
        row = rows.filter(pk=int(outbox_id)).only("pk", "contact_id").first()
        if row is not None:
            return row.pk, row.contact_id
    if provider_id:
        row = rows.filter(provider_message_id=provider_id).only("pk", "contact_id").first()
        if row is not None:
            return row.pk, row.contact_id
    ours = OUR_MESSAGE_ID.fullmatch(provider_id)
    if ours:
        row = rows.filter(pk=int(ours.group(1))).only("pk", "contact_id", "created_at").first()
        # Our Message-ID carries the row's creation time: an id from another database (a
        # staging copy sending through the same account) does not match this row.
        if row is not None and message_id(row).strip("<>") == provider_id.strip("<>"):
            return row.pk, row.contact_id
    return None


def _same_address(contact: Contact, message: OutboxMessage, event: AnymailTrackingEvent) -> bool:
    """Whether the event is about the contact's current address: a bounce of an address the
    contact has since replaced says nothing about the new one."""
    address = (event.recipient or message.recipient or contact.email or "").strip().lower()
    return bool(address) and address == (contact.email or "").strip().lower()
