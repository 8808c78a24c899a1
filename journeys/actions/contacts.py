"""Contacts: created or updated by the API and by events, and erased on request.

(Personal data: the erasure's owner is security, see docs/security.md.)
"""

import logging
import secrets
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from journeys.actions.enrollments import end_fields
from journeys.audit import record_erasure
from journeys.bulk import array_literal, retrying_deadlocks
from journeys.models import Contact, Enrollment, Event, OutboxMessage

logger = logging.getLogger(__name__)


def _share_locked_ids(external_ids: set[str]) -> dict[str, int]:
    """Contact ids by external id, locked FOR KEY SHARE in id order (see `erase_contact`).
    A contact that an erasure rewrote while this waited no longer matches its old
    external id (PostgreSQL re-checks the condition on the row it waited for), so it is
    not found: the caller creates a new contact, and no event reaches the erased one."""
    if not connection.features.has_select_for_update:
        return dict(
            Contact.objects.filter(external_id__in=external_ids).values_list("external_id", "pk")
        )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT external_id, id FROM {Contact._meta.db_table} "
            "WHERE external_id = ANY(%s::text[]) ORDER BY id FOR KEY SHARE",
            [array_literal(sorted(external_ids))],
        )
        return dict(cursor.fetchall())


def contact_ids_by_external_id(external_ids: set[str]) -> dict[str, int]:
    """Contact ids by external id, creating the contacts not seen before; each contact
    locked FOR KEY SHARE until the caller's transaction ends, so that rows written for it
    meanwhile cannot outlive an erasure."""
    found = _share_locked_ids(external_ids)
    missing = external_ids - found.keys()
    if missing:
        # A concurrent request may create the same contact: the conflict is ignored and the
        # row read back.
        Contact.objects.bulk_create(
            [Contact(external_id=external_id) for external_id in sorted(missing)],
            ignore_conflicts=True,
        )
        found.update(_share_locked_ids(missing))
    return found


def upsert_contact(
    *,
    external_id: str,
    email: str | None = None,
    attributes: dict | None = None,
    timezone: str | None = None,
    subscriptions: dict | None = None,
) -> tuple[Contact, bool]:
    """Create or update a contact; returns it and whether it was created. Given attributes
    are merged into the stored ones, and an attribute set to null is removed; an email or
    a timezone left out stays as it is (the caller checked the zone's name); given
    subscriptions change those channels only.

    Locks the contact row (FOR UPDATE) so that a concurrent update or an engine step
    writing attributes is never lost. Safe to run twice: the second call changes nothing.
    """
    with transaction.atomic():
        contact = (
            Contact.objects.select_for_update(no_key=True).filter(external_id=external_id).first()
        )
        created = contact is None
        if created:
            try:
                with transaction.atomic():
                    contact = Contact.objects.create(external_id=external_id)
            except IntegrityError:
                # Created by a concurrent call since the read above.
                contact = Contact.objects.select_for_update(no_key=True).get(
                    external_id=external_id
                )
                created = False
        if email is not None:
            contact.email = email
        if timezone is not None:
            contact.timezone = timezone
        if attributes:
            merged = {**(contact.attributes or {}), **attributes}
            contact.attributes = {key: value for key, value in merged.items() if value is not None}
        if subscriptions:
            contact.subscriptions = {**(contact.subscriptions or {}), **subscriptions}
        contact.save(
            update_fields=["email", "attributes", "timezone", "subscriptions", "updated_at"]
        )
    return contact, created


ERASED_PREFIX = "erased-"


# The stored exit_reason of an erased contact's enrollments (the API calls it `erased`).
ERASED_REASON = "Contact erased"


def erase_contact(*, contact: Contact, now: datetime | None = None) -> Contact:
    """Remove a contact's personal data and keep what reports count (see `_erase_contact`).

    Lock order: the contact row first, everywhere. Erasure takes it FOR UPDATE (it rewrites
    the external id, a key), then deletes the contact's events and locks its enrollments.
    Every writer of rows for a contact takes the contact's row FOR KEY SHARE before any of
    those rows: ingestion before inserting events (`contact_ids_by_external_id`), a worker
    advancing enrollments before locking them (`journeys.actions.enrollments`), a worker
    processing events right after claiming them, SKIP LOCKED, leaving the events of a
    contact being erased pending (`journeys.actions.events`). So an erasure and a writer
    wait for each other at most one way, and PostgreSQL never has a deadlock to break;
    the retry below is for a writer that ever forgets the order (it logs a warning)."""
    return retrying_deadlocks(
        lambda: _erase_contact(contact=contact, now=now), what=f"Erasing contact {contact.pk}"
    )


@transaction.atomic
def _erase_contact(*, contact: Contact, now: datetime | None = None) -> Contact:
    """Remove a contact's personal data and keep what reports count.

    The contact row stays, anonymous: its external id becomes a random `erased-…` token and
    its email and attributes are emptied; its events are deleted (enrollments and awards
    that pointed at one keep their place with no event); its messages lose recipient,
    subject and body, and pending ones fail; active enrollments exit ("Contact erased") so
    nothing more is sent. Enrollments, step visits, goal achievements and conversion awards
    remain, so every report shows the same numbers. Locks the contact (FOR UPDATE), so an
    ingest or a worker writing for it waits, then its events and enrollments (FOR NO KEY
    UPDATE: nothing else needs them once the contact is held). Safe to run twice: the
    second run finds nothing left and keeps the first token and time.
    """
    now = now or timezone.now()
    contact = Contact.objects.select_for_update().get(pk=contact.pk)
    first_time = contact.erased_at is None
    if first_time:
        contact.external_id = ERASED_PREFIX + secrets.token_hex(12)
        contact.erased_at = now
    contact.email = ""
    contact.attributes = {}
    # Where someone lives is personal data too.
    contact.timezone = ""
    contact.save(
        update_fields=["external_id", "erased_at", "email", "attributes", "timezone", "updated_at"]
    )
    Event.objects.filter(contact=contact).delete()
    active = list(
        Enrollment.objects.select_for_update(no_key=True)
        .filter(contact=contact, state=Enrollment.State.ACTIVE)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    Enrollment.objects.filter(pk__in=active).update(
        **end_fields(Enrollment.State.EXITED, now, ERASED_REASON)
    )
    Enrollment.objects.filter(contact=contact).exclude(last_error="").update(last_error="")
    # A delivery error may quote the address, so it goes too.
    OutboxMessage.objects.filter(contact=contact).update(
        recipient="", subject="", body="", error=""
    )
    OutboxMessage.objects.filter(contact=contact, status=OutboxMessage.Status.PENDING).update(
        status=OutboxMessage.Status.FAILED, error="Contact erased before sending."
    )
    if first_time:
        record_erasure(contact)
    logger.info("Contact %s erased", contact.pk)
    return contact
