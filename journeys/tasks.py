"""Thin Celery tasks: stable names, no arguments but primitives, one action each.

A task only says "there is work": it can arrive twice, late or never, and the periodic
sweep still finds the work in the database. Waits are rows with `due_at`, never ETAs.
"""

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from journeys.actions.enrollments import advance_due_enrollments
from journeys.actions.events import process_pending_events
from journeys.actions.imports import run_pending_import
from journeys.actions.messages import deliver_due_messages
from journeys.actions.sweep import enqueue_due_work
from webhooks.actions import deliver_due_webhooks

# Each task takes at most this many batches, then hands over (re-enqueuing itself if work
# is left), so one long backlog is shared between workers.
BATCHES_PER_TASK = 20


def _limit() -> int:
    return settings.ENGINE_BATCH_SIZE * BATCHES_PER_TASK


@shared_task(name="journeys.process_events")
def process_events() -> int:
    done = 0
    while done < _limit():
        processed = process_pending_events(now=timezone.now())
        done += processed
        # A batch may leave a contact's later events for the next one: go on while any
        # progress is made, not only after full batches.
        if not processed:
            return done
    enqueue_due_work(now=timezone.now())
    return done


@shared_task(name="journeys.advance_enrollments")
def advance_enrollments() -> int:
    limit = _limit()
    taken = advance_due_enrollments(limit=limit, now=timezone.now())
    if taken >= limit:
        enqueue_due_work(now=timezone.now())
    return taken


@shared_task(name="journeys.deliver_messages")
def deliver_messages() -> int:
    done = 0
    while done < _limit():
        sent = deliver_due_messages(now=timezone.now())
        done += sent
        if sent < settings.ENGINE_BATCH_SIZE:
            return done
    enqueue_due_work(now=timezone.now())
    return done


@shared_task(name="journeys.deliver_webhooks")
def deliver_webhooks() -> int:
    done = 0
    while done < _limit():
        handled = deliver_due_webhooks(now=timezone.now())
        done += handled
        if not handled:
            return done
    enqueue_due_work(now=timezone.now())
    return done


@shared_task(name="journeys.import_contacts")
def import_contacts() -> int | None:
    # One import per task: a long one holds this worker, and the next waits for the sweep or
    # another worker's wake-up.
    contact_import = run_pending_import(now=timezone.now())
    if contact_import is not None:
        enqueue_due_work(now=timezone.now())
    return contact_import and contact_import.pk


@shared_task(name="journeys.sweep")
def sweep() -> list[str]:
    return enqueue_due_work(now=timezone.now())
