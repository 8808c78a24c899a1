"""The sweep: whatever Celery messages were lost, the database says what work is due.

`enqueue_due_work` (the periodic `journeys.sweep` task) wakes a worker for each kind of due
work; `run_due` (`manage.py run_due`) does all of it in this process.
"""

from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from journeys.actions.enrollments import advance_due_enrollments
from journeys.actions.events import process_pending_events
from journeys.actions.messages import deliver_due_messages
from journeys.models import ContactImport, Enrollment, Event, Journey, OutboxMessage
from journeys.selectors import leased_enrollment_ids
from journeys.wakeups import wake
from webhooks.actions import deliver_due_webhooks
from webhooks.models import WebhookDelivery, WebhookEvent


def enqueue_due_work(*, now: datetime) -> list[str]:
    """The periodic sweep: wake a worker for each kind of work the database holds due now,
    whatever messages were lost. Returns the task names enqueued. Writes nothing."""
    due = []
    if Event.objects.filter(status=Event.Status.PENDING).exists():
        due.append("process_events")
    held = Journey.objects.filter(status__in=Journey.HELD).values("pk")
    if (
        Enrollment.objects.filter(state=Enrollment.State.ACTIVE, due_at__lte=now)
        .exclude(pk__in=leased_enrollment_ids(now=now))
        .exclude(journey_id__in=held)
        .exists()
    ):
        due.append("advance_enrollments")
    if (
        OutboxMessage.objects.filter(
            Q(leased_until__isnull=True) | Q(leased_until__lt=now),
            status=OutboxMessage.Status.PENDING,
            due_at__lte=now,
        )
        .exclude(enrollment__journey_id__in=held)
        .exists()
    ):
        due.append("deliver_messages")
    if (
        WebhookEvent.objects.filter(fanned_out=False).exists()
        or WebhookDelivery.objects.filter(
            Q(leased_until__isnull=True) | Q(leased_until__lt=now),
            status=WebhookDelivery.Status.PENDING,
            due_at__lte=now,
            endpoint__enabled=True,
        ).exists()
    ):
        due.append("deliver_webhooks")
    if ContactImport.objects.filter(
        Q(status=ContactImport.Status.PENDING)
        | Q(status=ContactImport.Status.RUNNING, leased_until__lt=now)
    ).exists():
        due.append("import_contacts")
    for task_name in due:
        wake(task_name)
    return due


def run_due(*, now: datetime | None = None, max_rounds: int = 1000) -> dict[str, int]:
    """Process every pending event, due enrollment, message and webhook, in this process, until
    nothing is due (`manage.py run_due`). Safe alongside workers: it claims work the same way.
    Returns how many of each were handled."""
    totals = {"events": 0, "enrollments": 0, "messages": 0, "webhooks": 0}
    for _ in range(max_rounds):
        moment = now or timezone.now()
        events = process_pending_events(now=moment)
        enrollments = advance_due_enrollments(now=moment)
        messages = deliver_due_messages(now=moment)
        webhooks = deliver_due_webhooks(now=moment)
        totals["events"] += events
        totals["enrollments"] += enrollments
        totals["messages"] += messages
        totals["webhooks"] += webhooks
        if not (events or enrollments or messages or webhooks):
            break
    return totals
