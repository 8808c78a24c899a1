"""Contacts: created or updated by the API and by events, and erased on request.

(Personal data: the erasure's owner is security, see docs/security.md.)
"""

import logging
import secrets
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from journeys.actions.enrollments import end_fields
from journeys.audit import record_erasure
from journeys.bulk import retrying_deadlocks
from journeys.models import Contact, Enrollment, Event, OutboxMessage

logger = logging.getLogger(__name__)


def contact_ids_by_external_id(external_ids: set[str]) -> dict[str, int]:
    """Contact ids by external id, creating the contacts not seen before."""
    found = dict(
        Contact.objects.filter(external_id__in=external_ids).values_list("external_id", "pk")
    )
    missing = external_ids - found.keys()
    if missing:
        # A concurrent request may create the same contact: the conflict is ignored and the
        # row read back.
        Contact.objects.bulk_create(
            [Contact(external_id=external_id) for external_id in sorted(missing)],
            ignore_conflicts=True,
        )
        found.update(
            Contact.objects.filter(external_id__in=missing).values_list("external_id", "pk")
        )
    return found


def upsert_contact(
    *, external_id: str, email: str | None = None, attributes: dict | None = None
) -> tuple[Contact, bool]:
    """Create or update a contact; returns it and whether it was created. Given attributes
    are merged into the stored ones, and an attribute set to null is removed; an email left
    out stays as it is.

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
        if attributes:
            merged = {**(contact.attributes or {}), **attributes}
            contact.attributes = {key: value for key, value in merged.items() if value is not None}
        contact.save(update_fields=["email", "attributes", "updated_at"])
    return contact, created


ERASED_PREFIX = "erased-"


def erase_contact(*, contact: Contact, now: datetime | None = None) -> Contact:
    """Remove a contact's personal data and keep what reports count (see `_erase_contact`).

    Erasure locks the contact, then its enrollments; a worker's batch holds the enrollments
    and then updates the contact. When both meet, PostgreSQL rolls one back: a batch is
    retried by the engine, an erasure here (at most 3 times, unless the caller holds a
    transaction of its own)."""
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
    remain, so every report shows the same numbers. Locks the contact and its enrollments
    (FOR UPDATE), so an ingest or a worker touching them waits. Safe to run twice: the
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
    contact.save(update_fields=["external_id", "erased_at", "email", "attributes", "updated_at"])
    Event.objects.filter(contact=contact).delete()
    active = list(
        Enrollment.objects.select_for_update()
        .filter(contact=contact, state=Enrollment.State.ACTIVE)
        .values_list("pk", flat=True)
    )
    Enrollment.objects.filter(pk__in=active).update(
        **end_fields(Enrollment.State.EXITED, now, "Contact erased")
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
