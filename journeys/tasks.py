"""Thin Celery tasks: stable names, no arguments but primitives, one action each.

A task only says "there is work": it can arrive twice, late or never, and the periodic
sweep still finds the work in the database. Waits are rows with `due_at`, never ETAs.
"""

import time

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from journeys.actions.enrollments import advance_due_enrollments
from journeys.actions.events import process_pending_events
from journeys.actions.imports import run_pending_import
from journeys.actions.messages import deliver_due_messages
from journeys.actions.sweep import enqueue_due_work
from webhooks.actions import deliver_due_webhooks

# Each task takes at most this many batches, and none started after ENGINE_TASK_SECONDS,
# then hands over: it re-enqueues the due work, behind the wake-ups already queued, so one
# long backlog is shared between workers and no kind of work starves the others (a run of
# 10,000 sends took a worker for half a minute while events piled up).
BATCHES_PER_TASK = 20


def _limit() -> int:
    return settings.ENGINE_BATCH_SIZE * BATCHES_PER_TASK


def _deadline() -> float:
    return time.monotonic() + settings.ENGINE_TASK_SECONDS


def _in_batches(action, *, more) -> int:
    """Run `action` (one batch; returns how many items it handled) while `more(handled)`
    says the batch left work, up to the limit and the deadline; re-enqueue the due work
    when it stopped with work left."""
    done, deadline = 0, _deadline()
    while done < _limit():
        handled = action()
        done += handled
        if not more(handled):
            return done
        if time.monotonic() >= deadline:
            break
    enqueue_due_work(now=timezone.now())
    return done


@shared_task(name="journeys.process_events")
def process_events() -> int:
    # A batch may leave a contact's later events for the next one: go on while any
    # progress is made, not only after full batches.
    return _in_batches(lambda: process_pending_events(now=timezone.now()), more=bool)


@shared_task(name="journeys.advance_enrollments")
def advance_enrollments() -> int:
    limit, deadline = _limit(), _deadline()
    taken = advance_due_enrollments(limit=limit, now=timezone.now(), until=deadline)
    if taken >= limit or time.monotonic() >= deadline:
        enqueue_due_work(now=timezone.now())
    return taken


@shared_task(name="journeys.deliver_messages")
def deliver_messages() -> int:
    return _in_batches(
        lambda: deliver_due_messages(now=timezone.now()),
        more=lambda sent: sent >= settings.ENGINE_BATCH_SIZE,
    )


@shared_task(name="journeys.deliver_webhooks")
def deliver_webhooks() -> int:
    return _in_batches(lambda: deliver_due_webhooks(now=timezone.now()), more=bool)


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
