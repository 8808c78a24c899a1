"""Messages out: due outbox rows rendered for the contact as it is now and sent, email
through Django's backend and SMS through SMS_BACKEND, at most once each, with retries and
back-off for a provider that refuses."""

import dataclasses
from datetime import datetime, timedelta
from email.utils import parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import F, Q, QuerySet

from journeys import engine
from journeys.bulk import claim
from journeys.consent import unsubscribe_url
from journeys.delivery_rules import (
    MARKETING,
    FrequencyCap,
    QuietHours,
    parse_frequency_cap,
    quiet_until,
    zone_or_default,
)
from journeys.links import track_email_clicks
from journeys.message_templates import render_email, render_message
from journeys.models import (
    Contact,
    DeliveryEvent,
    Enrollment,
    Journey,
    OutboxMessage,
    Subscription,
)
from journeys.sms import get_sms_backend
from webhooks.outbox import enqueue_webhook_events

MESSAGE_MAX_ATTEMPTS = 5

# A message's own first event, beside the provider's feedback (journeys.actions.delivery).
SENT_EVENT_PROVIDER = "Waypoint"
SENT_EVENT_TYPE = "sent"

OUTCOME_UNKNOWN = (
    "Outcome unknown: the worker stopped while sending it (since {since}), so it may or may "
    "not have arrived. It is not sent again on its own; retry it from the admin if it did "
    "not arrive."
)


def message_id(message: OutboxMessage) -> str:
    """The email's Message-ID: derived from the row alone, so every attempt at the same
    message carries the same one and a provider or a reader can drop a copy. The creation
    time keeps ids of two databases (a restore, a staging copy) apart."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
    stamp = int(message.created_at.timestamp() * 1_000_000)
    return f"<outbox-{message.pk}.{stamp}@{domain}>"


def deliver_due_messages(*, limit: int | None = None, now: datetime) -> int:
    """Send due outbox messages, each at most once; returns how many were attempted.

    Steps, each its own short transaction so that nothing waits on a slow provider:
    1. Messages a worker stopped sending (marked `sending_since`, lease run out) are failed
       with an "outcome unknown" reason, and pending messages already past their attempts
       (a message that crashed every worker that took it) are failed: neither is claimed.
    2. A batch is claimed (FOR UPDATE SKIP LOCKED, then a lease until now + lease seconds,
       attempts + 1).
    3. For each message, right before sending, one UPDATE marks it `sending_since` only if
       the lease is still this call's and nobody marked it: when the lease ran out mid-batch
       and another worker claimed the rest, this call skips them. The send follows outside
       any transaction, and `sent` is committed at once after it. Before that mark, a
       marketing message due inside its journey's quiet hours is held (pending, due when
       they end) and one over MESSAGE_FREQUENCY_CAP is `skipped`; under a cap the count
       and the mark take the contact's row lock first (`_Timing`, docs/messages.md).

    Guarantee: at most once. A process killed between the send and the `sent` commit leaves
    the message marked `sending_since`; it is never resent automatically but failed by step 1
    once its lease runs out, visible and retryable in the admin. An email carries the same
    Message-ID (`message_id`) on every attempt. A template that does not render or breaks a
    limit fails that message alone with the reason; a provider error is retried with
    back-off, then failed. Consent is read as it is at send: a contact without an address,
    or a marketing message on a channel the contact is not subscribed to, is `skipped` with
    the `reason` (docs/messages.md). Safe to run twice, concurrently too: see step 3.
    """
    limit = limit or settings.ENGINE_BATCH_SIZE
    lease_until = now + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)
    _fail_stuck_messages(now=now)
    with transaction.atomic():
        messages = claim(
            OutboxMessage.objects.filter(
                status=OutboxMessage.Status.PENDING,
                due_at__lte=now,
                sending_since__isnull=True,
                attempts__lt=MESSAGE_MAX_ATTEMPTS,
            )
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
            # A paused journey's messages wait with its enrollments (contract 6.2).
            .exclude(
                enrollment__journey_id__in=Journey.objects.filter(
                    status=Journey.Status.PAUSED
                ).values("pk")
            )
            .order_by("due_at"),
            limit,
        )
        if not messages:
            return 0
        OutboxMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
            leased_until=lease_until, attempts=F("attempts") + 1
        )
    contacts = {
        contact.pk: contact
        for contact in Contact.objects.filter(pk__in={m.contact_id for m in messages}).only(
            "external_id", "email", "attributes", "subscriptions"
        )
    }
    timing = _Timing.of_batch(messages)
    sender = _Sender()
    skipped: dict[str, list[int]] = {}  # reason -> ids, written once for the batch
    try:
        _send_batch(messages, contacts, timing, sender, skipped, lease_until, now=now)
    finally:
        sender.close()
        for reason, ids in skipped.items():
            _still_ours(ids, lease_until).update(
                status=OutboxMessage.Status.SKIPPED, reason=reason, error="", leased_until=None
            )
    return len(messages)


def _still_ours(ids: list[int], lease_until: datetime) -> QuerySet:
    """The messages of this call's lease that no one has started sending."""
    return OutboxMessage.objects.filter(
        pk__in=ids,
        leased_until=lease_until,
        status=OutboxMessage.Status.PENDING,
        sending_since__isnull=True,
    )


def _send_batch(messages, contacts, timing, sender, skipped, lease_until, *, now) -> None:
    """Each message of a claimed batch in turn (see `deliver_due_messages`); the skipped
    ones are collected in `skipped`, for one UPDATE a reason (a commit per skipped message
    was most of the time of a run of contacts without an address)."""
    for message in messages:
        message.attempts += 1
        ours = _still_ours([message.pk], lease_until)
        try:
            prepared = _prepare(message, contacts.get(message.contact_id))
        except _Skipped as exc:
            skipped.setdefault(exc.reason, []).append(message.pk)
            continue
        except _Unsendable as exc:
            _fail(ours, message, now=now, error=str(exc)[:2000])
            continue
        except Exception as exc:
            # Whatever one message's data does to the code that builds it, the rest go on.
            _fail(
                ours,
                message,
                now=now,
                error=f"Could not prepare the message: {type(exc).__name__}: {exc}"[:2000],
            )
            continue
        if timing.hold(message, ours, now=now):
            continue
        if not timing.mark_sending(message, ours, now=now):
            continue  # Over the frequency cap, or the lease ran out and another worker has it.
        try:
            provider_id = sender.send(message, prepared)
        except Exception as exc:
            _record_send_error(message, f"{type(exc).__name__}: {exc}", now=now)
            continue
        _record_sent(message, provider_id, now=now)


def _record_sent(message: OutboxMessage, provider_id: str, *, now: datetime) -> None:
    """Mark the message sent, with its first event (the report's message rollups are
    refreshed from these events: reporting/rollups.py); one transaction."""
    with transaction.atomic():
        marked = OutboxMessage.objects.filter(
            pk=message.pk,
            status__in=[OutboxMessage.Status.PENDING, OutboxMessage.Status.FAILED],
        ).update(
            status=OutboxMessage.Status.SENT,
            sent_at=now,
            provider_message_id=provider_id,
            error="",
            sending_since=None,
            leased_until=None,
        )
        if marked:
            # Once per message: the row only becomes sent once (a failed message was never
            # marked sent). A conflict can only come from a row put back by hand.
            DeliveryEvent.objects.bulk_create(
                [
                    DeliveryEvent(
                        message_id=message.pk,
                        provider=SENT_EVENT_PROVIDER,
                        event_id=f"sent/{message.pk}",
                        event_type=SENT_EVENT_TYPE,
                        occurred_at=now,
                        received_at=now,
                    )
                ],
                ignore_conflicts=True,
            )


def retry_messages(*, messages: QuerySet, now: datetime) -> int:
    """Put failed messages back in the outbox, due now, with their attempts reset; returns
    how many. For the admin: a message whose outcome was unknown is only sent again when a
    person decides so. Locks nothing beyond the rows the UPDATE writes; running it twice
    retries nothing more, as the messages are pending by then."""
    return messages.filter(status=OutboxMessage.Status.FAILED).update(
        status=OutboxMessage.Status.PENDING,
        attempts=0,
        due_at=now,
        error="",
        leased_until=None,
        sending_since=None,
    )


class _Timing:
    """Quiet hours and the frequency cap (contract 6.1) for one batch; transactional
    messages pass both untouched."""

    def __init__(self, windows: dict[int, QuietHours], zones: dict[int, str]):
        self.windows = windows
        self.zones = zones
        self.cap: FrequencyCap | None = parse_frequency_cap(settings.MESSAGE_FREQUENCY_CAP)

    @classmethod
    def of_batch(cls, messages: list[OutboxMessage]) -> "_Timing":
        """The quiet hours of each marketing message's journey version, and the zones of
        the contacts that have some (2 queries at most)."""
        marketing = {m.enrollment_id for m in messages if m.category == MARKETING}
        windows = {
            enrollment_id: QuietHours.from_setting(setting)
            for enrollment_id, setting in Enrollment.objects.filter(
                pk__in=marketing, version__definition__settings__has_key="quiet_hours"
            ).values_list("pk", "version__definition__settings__quiet_hours")
        }
        quiet_contacts = {m.contact_id for m in messages if m.enrollment_id in windows}
        zones = dict(
            Contact.objects.filter(pk__in=quiet_contacts).values_list("pk", "timezone")
            if quiet_contacts
            else ()
        )
        return cls(windows, zones)

    def hold(self, message: OutboxMessage, ours: QuerySet, *, now: datetime) -> bool:
        """Move a marketing message due inside its quiet hours to their end, pending, with
        the reason in `error` for the timeline; True when held. The claim's attempt is
        given back: waiting for the morning is no failure."""
        window = self.windows.get(message.enrollment_id)
        if window is None or message.category != MARKETING:
            return False
        zone = zone_or_default(self.zones.get(message.contact_id, ""), settings.DEFAULT_TIMEZONE)
        until = quiet_until(now, zone, window)
        if until is None:
            return False
        ours.update(
            due_at=until,
            leased_until=None,
            attempts=F("attempts") - 1,
            error=f"held until {until.astimezone(zone):%H:%M} {zone.key} (quiet hours)",
        )
        return True

    def mark_sending(self, message: OutboxMessage, ours: QuerySet, *, now: datetime) -> bool:
        """Mark the message `sending_since` (the at-most-once mark); True when this call
        may send it. Over the cap, the message is `skipped` with reason `frequency_cap`.

        The count and the mark share one transaction under the contact's row lock (FOR NO
        KEY UPDATE: the house's lock order puts the contact first, and this lock does not
        wait on ingestion's KEY SHARE): two workers sending to one contact at once count
        one after the other, and each sees the other's message marked, so the cap holds.
        Messages marked but not yet sent count too."""
        if self.cap is None or message.category != MARKETING:
            return bool(ours.update(sending_since=now))
        with transaction.atomic():
            list(
                Contact.objects.select_for_update(no_key=True)
                .filter(pk=message.contact_id)
                .values_list("pk", flat=True)
            )
            sent = (
                OutboxMessage.objects.filter(
                    contact_id=message.contact_id, channel=message.channel, category=MARKETING
                )
                .filter(
                    Q(sent_at__gt=now - self.cap.period)
                    | Q(status=OutboxMessage.Status.PENDING, sending_since__isnull=False)
                )
                .count()
            )
            if self.cap.allows(sent_in_period=sent):
                return bool(ours.update(sending_since=now))
            ours.update(
                status=OutboxMessage.Status.SKIPPED,
                reason="frequency_cap",
                error=f"Over the frequency cap {self.cap.text}: {sent} sent already.",
                leased_until=None,
            )
            return False


class _Unsendable(Exception):
    """A message that no attempt can send; the text is the reason recorded."""


class _Skipped(Exception):
    """A message not to send, on purpose: `reason` is one of OutboxMessage.Reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class PreparedMessage:
    recipient: str
    subject: str
    text: str
    html: str = ""
    from_email: str = ""
    reply_to: str = ""
    unsubscribe_url: str = ""
    preheader: str = ""


def _prepare(message: OutboxMessage, contact: Contact | None) -> PreparedMessage:
    """What to send; raises _Skipped or _Unsendable."""
    email = message.channel == OutboxMessage.Channel.EMAIL
    data = (
        engine.contact_data(contact.external_id, contact.email, contact.attributes)
        if contact is not None
        else {"attributes": {}}
    )
    recipient = message.recipient or (data.get("email") if email else "")
    if not recipient:
        raise _Skipped(OutboxMessage.Reason.NO_ADDRESS)
    marketing = message.category != OutboxMessage.Category.TRANSACTIONAL
    if marketing and contact is not None:
        status = contact.subscription(message.channel)
        if status != Subscription.SUBSCRIBED:
            raise _Skipped(status)
    link = unsubscribe_url(contact_id=message.contact_id) if marketing and email else ""
    try:
        return compose_message(message, data, recipient=recipient, unsubscribe_link=link)
    except Exception as exc:
        # Limits, a filter given the wrong kind of value, a template stored before the
        # check: the reason reads the same for all of them.
        raise _Unsendable(f"Template error: {describe_template_error(exc)}") from None


def describe_template_error(exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {reason}"


def compose_message(
    message: OutboxMessage, contact: dict, *, recipient: str, unsubscribe_link: str = ""
) -> PreparedMessage:
    """The message rendered for the contact's plain data; raises what rendering raises.
    `unsubscribe_link` is given for a marketing email: its parts show it (see
    `render_email`) and `build_email` adds the one-click headers."""
    if message.channel != OutboxMessage.Channel.EMAIL:
        _, text = render_message("", message.body, contact)
        return PreparedMessage(recipient, "", text)
    rendered = render_email(
        subject=message.subject,
        body=message.body,
        contact=contact,
        preheader=message.preheader,
        html=message.html,
        unsubscribe_url=unsubscribe_link,
    )
    return PreparedMessage(
        recipient,
        rendered.subject,
        rendered.text,
        rendered.html,
        message.from_email,
        message.reply_to,
        unsubscribe_link,
        rendered.preheader,
    )


def build_email(
    prepared: PreparedMessage, *, headers: dict[str, str], connection=None
) -> EmailMultiAlternatives:
    """The email as sent: multipart/alternative when there is HTML, and the RFC 8058
    one-click unsubscribe headers on a marketing email."""
    headers = dict(headers)
    if prepared.unsubscribe_url:
        headers["List-Unsubscribe"] = f"<{prepared.unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email = EmailMultiAlternatives(
        prepared.subject,
        prepared.text,
        prepared.from_email or settings.DEFAULT_FROM_EMAIL,
        [prepared.recipient],
        reply_to=[prepared.reply_to] if prepared.reply_to else None,
        headers=headers,
        connection=connection,
    )
    if prepared.html:
        email.attach_alternative(prepared.html, "text/html")
    return email


class _Sender:
    """One email connection and one SMS backend for the whole batch."""

    def __init__(self):
        self.email_connection = None
        self.sms_backend = None

    def send(self, message: OutboxMessage, prepared: PreparedMessage) -> str:
        """Send it; returns the id the email provider gave it, or "" (SMTP, SMS)."""
        if message.channel == OutboxMessage.Channel.EMAIL:
            if self.email_connection is None:
                self.email_connection = get_connection()
            email = build_email(
                prepared,
                headers={"Message-ID": message_id(message)},
                connection=self.email_connection,
            )
            # Read by anymail's backends (ignored by SMTP): the provider hands the metadata
            # back in its tracking webhooks, so feedback finds the row (actions.delivery).
            email.metadata = {"outbox_id": str(message.pk)}
            email.tags = [message.step_key]
            track_email_clicks(email, outbox_id=message.pk)
            email.send()
            status = getattr(email, "anymail_status", None)
            provider_id = getattr(status, "message_id", None)
            # One recipient, one id (a set only comes with several recipients).
            return str(provider_id)[:255] if isinstance(provider_id, (str, int)) else ""
        if self.sms_backend is None:
            self.sms_backend = get_sms_backend()
        self.sms_backend.send(to=prepared.recipient, text=prepared.text)
        return ""

    def close(self) -> None:
        if self.email_connection is not None:
            self.email_connection.close()


def _record_send_error(message: OutboxMessage, error: str, *, now: datetime) -> None:
    # The provider refused: nothing went out, so the message may be tried again.
    row = OutboxMessage.objects.filter(pk=message.pk, status=OutboxMessage.Status.PENDING)
    if message.attempts >= MESSAGE_MAX_ATTEMPTS:
        _fail(
            row,
            message,
            now=now,
            error=f"Gave up after {message.attempts} attempts; last error: {error}"[:2000],
            sending_since=None,
            leased_until=None,
        )
    else:
        row.update(
            error=error[:2000],
            due_at=now + engine.retry_delay(message.attempts),
            sending_since=None,
            leased_until=None,
        )


def _fail(rows: QuerySet, message: OutboxMessage, *, now: datetime, **fields) -> None:
    """Mark the message failed, if `rows` still selects it, and report it on the
    `message.failed` webhook in the same transaction."""
    with transaction.atomic():
        if rows.update(status=OutboxMessage.Status.FAILED, **fields):
            enqueue_webhook_events(
                event_type="message.failed",
                facts=[
                    {
                        "contact_id": message.contact_id,
                        "message": message.pk,
                        "enrollment": message.enrollment_id,
                        "channel": message.channel,
                        "step": message.step_key,
                        "error": fields["error"],
                    }
                ],
                now=now,
            )


def _fail_stuck_messages(*, now: datetime) -> None:
    pending = OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING)
    for row in pending.filter(sending_since__isnull=False, leased_until__lt=now).only(
        "pk", "sending_since", "contact_id", "enrollment_id", "channel", "step_key"
    ):
        _fail(
            pending.filter(pk=row.pk, sending_since=row.sending_since, leased_until__lt=now),
            row,
            now=now,
            error=OUTCOME_UNKNOWN.format(since=row.sending_since.isoformat()),
            sending_since=None,
            leased_until=None,
        )
    pending.filter(
        sending_since__isnull=True, attempts__gte=MESSAGE_MAX_ATTEMPTS, due_at__lte=now
    ).filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now)).update(
        status=OutboxMessage.Status.FAILED,
        error=(
            f"Gave up after {MESSAGE_MAX_ATTEMPTS} attempts: every worker that took this "
            "message stopped before it was sent."
        ),
        leased_until=None,
    )
