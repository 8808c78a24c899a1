"""Consent writes: a contact's subscription on one channel, from the unsubscribe page, the
contact page, or an SMS reply (docs/messages.md)."""

from collections.abc import Iterable

from django.db import transaction

from journeys.models import Contact, Event, Subscription, validate_subscriptions

# The event an SMS provider's inbound message becomes (its `text` property is the reply);
# the keywords are the carriers' standard ones (CTIA), matched whole, trimmed, any case.
SMS_INBOUND_EVENT = "sms_inbound"
SMS_KEYWORDS = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"), "unsubscribed"),
    **dict.fromkeys(("START", "UNSTOP", "SUBSCRIBE"), "subscribed"),
}


def set_subscription(*, contact_id: int, channel: str, status: str) -> Contact | None:
    """Set one channel's status; returns the contact, or None when it is gone.

    Locks the contact row (FOR NO KEY UPDATE, the contact first like every writer) so that
    a concurrent change of the other channel is kept. Safe to run twice: the second call
    writes the same value.
    """
    validate_subscriptions({channel: status})
    with transaction.atomic():
        contact = Contact.objects.select_for_update(no_key=True).filter(pk=contact_id).first()
        if contact is None:
            return None
        contact.subscriptions = {**(contact.subscriptions or {}), channel: status}
        contact.save(update_fields=["subscriptions", "updated_at"])
    return contact


def sms_keyword_changes(events: Iterable[Event]) -> dict[int, str]:
    """The sms status each contact's STOP or START replies among `events` ask for, the last
    one winning; pure, for the event batch to apply."""
    changes = {}
    for event in events:
        if event.name != SMS_INBOUND_EVENT or not isinstance(event.properties, dict):
            continue
        status = SMS_KEYWORDS.get(str(event.properties.get("text", "")).strip().upper())
        if status is not None:
            changes[event.contact_id] = status
    return changes


def apply_sms_keywords(events: list[Event]) -> None:
    """Unsubscribe (STOP) or resubscribe (START) the contacts of `events` on SMS.

    Runs inside the event batch's transaction, before it locks any enrollment: the contact
    rows are locked FOR NO KEY UPDATE in id order (the batch already holds them FOR KEY
    SHARE), so an API update of the same contact is not lost. Safe to run twice.
    """
    changes = sms_keyword_changes(events)
    if not changes:
        return
    contacts = Contact.objects.filter(pk__in=changes).order_by("pk").select_for_update(no_key=True)
    for contact in contacts:
        current, wanted = contact.subscription("sms"), changes[contact.pk]
        # START lifts the contact's own STOP, never a provider's bounce or complaint.
        if current == wanted or (
            wanted == Subscription.SUBSCRIBED and current != Subscription.UNSUBSCRIBED
        ):
            continue
        contact.subscriptions = {**(contact.subscriptions or {}), "sms": wanted}
        contact.save(update_fields=["subscriptions", "updated_at"])
