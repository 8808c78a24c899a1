"""A journey's lifecycle (contract 6.2): pause, resume and stop; and discarding a draft and
duplicating a journey.

Paused: no new enrollments (live_flows and enroll_contact leave the journey out, events are
still stored and event conversions of running enrollments still count); the engine's claim
leaves its due enrollments due and the outbox leaves its pending messages pending, so all
of it goes on at the resume, a wait that ran out in between at once. Stopped: the running
enrollments exit with `journey_stopped`, their messages not yet handed to a provider are
skipped with that reason, and nothing changes until a new version is published
(publish_version makes the journey live again).
"""

from datetime import datetime

from django.db import transaction

from journeys.actions.enrollments import end_fields
from journeys.actions.versions import create_journey
from journeys.bulk import share_lock
from journeys.models import Contact, Enrollment, Journey, JourneyVersion, OutboxMessage
from journeys.selectors import journey_definition, latest_version
from webhooks.outbox import enqueue_webhook_events

JOURNEY_STOPPED = "journey_stopped"


class LifecycleRefused(Exception):
    """The journey's status does not allow the change (the API answers 409)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _locked(journey: Journey, *, allowed: tuple[str, ...], verb: str) -> Journey:
    row = Journey.objects.select_for_update().get(pk=journey.pk)
    if row.status not in allowed:
        raise LifecycleRefused(
            f"Journey '{row.key}' is {row.status}: only a "
            + " or ".join(allowed)
            + f" journey can be {verb}."
        )
    return row


def _set_status(journey: Journey, status: str) -> Journey:
    journey.status = status
    journey.save(update_fields=["status", "updated_at"])
    return journey


def pause_journey(*, journey: Journey) -> Journey:
    """Pause a live journey. Locks the journey row (FOR UPDATE), so two lifecycle changes
    or a publish take turns. Running it twice refuses the second (already paused); nothing
    else is written, so a retry after a lost answer is harmless."""
    with transaction.atomic():
        row = _locked(journey, allowed=(Journey.Status.LIVE,), verb="paused")
        return _set_status(row, Journey.Status.PAUSED)


def resume_journey(*, journey: Journey) -> Journey:
    """Resume a paused journey: its held enrollments are due already and the next claim
    takes them. Locks the journey row; a second run is refused (already live)."""
    with transaction.atomic():
        row = _locked(journey, allowed=(Journey.Status.PAUSED,), verb="resumed")
        return _set_status(row, Journey.Status.LIVE)


def stop_journey(*, journey: Journey, now: datetime) -> tuple[Journey, int]:
    """Stop a live or paused journey; returns it and how many enrollments exited.

    Locks, in the house's order: the journey row (FOR UPDATE: no enrollment starts once the
    status commits, and lifecycle changes take turns), the running enrollments' contacts
    (FOR KEY SHARE, as a worker's batch does), then the enrollments (FOR NO KEY UPDATE, in
    id order, as every engine writer does), so a worker and this wait for each other in a
    line, never a circle. The UPDATEs re-check `state` and `sending_since`: an enrollment
    a worker ended meanwhile stays as it ended, and a message already handed to a provider
    (marked `sending_since`) is left to its sender, so nothing is sent twice or lost track
    of. Running it twice refuses the second (already stopped)."""
    with transaction.atomic():
        row = _locked(journey, allowed=(Journey.Status.LIVE, Journey.Status.PAUSED), verb="stopped")
        _set_status(row, Journey.Status.STOPPED)
        running = Enrollment.objects.filter(journey=row, state=Enrollment.State.ACTIVE)
        share_lock(Contact, set(running.values_list("contact_id", flat=True)))
        ids = list(
            running.order_by("pk").select_for_update(no_key=True).values_list("pk", flat=True)
        )
        exited = Enrollment.objects.filter(pk__in=ids, state=Enrollment.State.ACTIVE).update(
            **end_fields(Enrollment.State.EXITED, now, JOURNEY_STOPPED)
        )
        OutboxMessage.objects.filter(
            enrollment_id__in=ids,
            status=OutboxMessage.Status.PENDING,
            sending_since__isnull=True,
        ).update(
            status=OutboxMessage.Status.SKIPPED,
            reason=OutboxMessage.Reason.JOURNEY_STOPPED,
            leased_until=None,
        )
        enqueue_webhook_events(
            event_type="enrollment.exited",
            facts=(
                {
                    "contact_id": contact,
                    "enrollment": pk,
                    "journey": row.key,
                    "version": number,
                    "exit_reason": JOURNEY_STOPPED,
                    "step": path[-1] if path else None,
                }
                for pk, contact, number, path in Enrollment.objects.filter(
                    pk__in=ids, state=Enrollment.State.EXITED, exit_reason=JOURNEY_STOPPED
                ).values_list("pk", "contact_id", "version__number", "path")
            ),
            now=now,
        )
    return row, exited


def discard_draft(*, journey: Journey) -> JourneyVersion:
    """Delete the journey's draft; the editor shows the live version again. Refused when the
    draft is the journey's only version (nothing would be left to show: delete the journey
    instead). Locks the journey row, as a publish does, so a draft being published is not
    discarded at the same time; a second run is refused (no draft left)."""
    with transaction.atomic():
        row = Journey.objects.select_for_update().get(pk=journey.pk)
        draft = row.versions.filter(state=JourneyVersion.State.DRAFT).first()
        if draft is None:
            raise LifecycleRefused(f"Journey '{row.key}' has no draft to discard.")
        if not row.versions.exclude(pk=draft.pk).exists():
            raise LifecycleRefused(
                f"Version {draft.number} of journey '{row.key}' was never published: it is "
                "the journey's only version; delete the journey instead."
            )
        draft.delete()
        row.save(update_fields=["updated_at"])
    return draft


def duplicate_journey(*, journey: Journey, key: str, name: str, user=None) -> Journey:
    """A new journey `key` whose version 1 is a draft of this one's newest version (the draft
    if there is one), with its goals and conversions copied. Raises DefinitionError (loc
    `key`, `name` or the definition's) for a key taken or invalid, or a draft that does not
    validate yet. Locks nothing but the new rows' unique keys: a second run is refused (the
    key is taken)."""
    version = latest_version(journey=journey)
    source = journey_definition(journey=journey, version=version) if version else {}
    definition = {**source, "key": key, "name": name}
    definition.setdefault("steps", [])
    new, _, _ = create_journey(definition=definition, user=user)
    return new
