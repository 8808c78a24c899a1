"""Messages out: due outbox rows rendered for the contact as it is now and sent, email
through Django's backend and SMS through SMS_BACKEND, with retries and back-off."""

import functools
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import F, Q
from django.template import Context as TemplateContext

from journeys import engine
from journeys.bulk import bulk_update_rows, claim
from journeys.definition import TEMPLATE_ENGINE
from journeys.models import Contact, OutboxMessage
from journeys.sms import get_sms_backend
from journeys.templating import read_only

MESSAGE_MAX_ATTEMPTS = 5


@functools.lru_cache(maxsize=512)
def _compiled(template_text: str):
    return TEMPLATE_ENGINE.from_string(template_text)


def _render(template_text: str, contact: dict) -> str:
    # Read-only: a template must not be able to change what the next message sees.
    return _compiled(template_text).render(
        TemplateContext({"contact": read_only(contact)}, autoescape=False)
    )


def deliver_due_messages(*, limit: int | None = None, now: datetime) -> int:
    """Send due outbox messages; returns how many were attempted.

    Subjects, bodies and texts are rendered with Django's template engine from a plain dict
    of the contact as it is now. A template error or a contact without an address marks
    that message failed with the reason; a backend error is retried with backoff, then the
    message is failed. Locks: the claimed rows (FOR UPDATE SKIP LOCKED) while a lease is
    committed; sending happens outside any transaction. Safe to run twice: a sent message is
    not pending any more, and a leased one is skipped until its lease runs out (a process
    killed between sending and recording may send that one message again: at least once).
    """
    limit = limit or settings.ENGINE_BATCH_SIZE
    lease_until = now + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)
    with transaction.atomic():
        messages = claim(
            OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING, due_at__lte=now)
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
            .order_by("due_at"),
            limit,
        )
        if not messages:
            return 0
        OutboxMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
            leased_until=lease_until, attempts=F("attempts") + 1
        )
    contacts = {
        contact.pk: engine.contact_data(contact.external_id, contact.email, contact.attributes)
        for contact in Contact.objects.filter(pk__in={m.contact_id for m in messages})
    }
    email_connection = None
    sms_backend = None
    for message in messages:
        message.attempts += 1
        message.leased_until = None
        contact = contacts.get(message.contact_id, {"attributes": {}})
        recipient = message.recipient or (
            contact.get("email") if message.channel == OutboxMessage.Channel.EMAIL else ""
        )
        if not recipient:
            what = (
                "email address"
                if message.channel == OutboxMessage.Channel.EMAIL
                else "phone number (attribute 'phone')"
            )
            _fail(message, f"The contact has no {what}.")
            continue
        try:
            subject = " ".join(_render(message.subject, contact).split())
            body = _render(message.body, contact)
        except Exception as exc:
            _fail(message, f"Template error: {type(exc).__name__}: {exc}")
            continue
        try:
            if message.channel == OutboxMessage.Channel.EMAIL:
                email_connection = email_connection or get_connection()
                EmailMessage(
                    subject,
                    body,
                    settings.DEFAULT_FROM_EMAIL,
                    [recipient],
                    connection=email_connection,
                ).send()
            else:
                sms_backend = sms_backend or get_sms_backend()
                sms_backend.send(to=recipient, text=body)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if message.attempts >= MESSAGE_MAX_ATTEMPTS:
                _fail(message, f"Gave up after {message.attempts} attempts; last error: {error}")
            else:
                message.error = error
                message.due_at = now + engine.retry_delay(message.attempts)
            continue
        message.status = OutboxMessage.Status.SENT
        message.sent_at = now
        message.error = ""
    bulk_update_rows(
        OutboxMessage,
        messages,
        ["status", "attempts", "leased_until", "sent_at", "error", "due_at"],
    )
    return len(messages)


def _fail(message: OutboxMessage, reason: str) -> None:
    message.status = OutboxMessage.Status.FAILED
    message.error = reason[:2000]
