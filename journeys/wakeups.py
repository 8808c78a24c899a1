"""Waking the workers: a Celery message, sent once the transaction commits, that says there is
work of one kind. Only actions wake workers.

The task is looked up by its stable name in the Celery app's registry, not imported: the
tasks call the actions, so importing them here would close a circle. A web process has
imported no task module when it first wakes a worker; Celery's loader then imports them
(the autodiscovery of config/celery.py), as a worker does when it starts.
"""

import logging

from celery import current_app
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)


def task(name: str):
    """The registered Celery task of that name, importing the task modules the first time."""
    registry = current_app.tasks
    if name not in registry:
        current_app.loader.import_default_modules()
    return registry[name]


def wake(task_name: str) -> None:
    """Enqueue `journeys.<task_name>` when the current transaction commits. A broker that is
    down only delays the work: the periodic sweep finds it in the database."""
    if not settings.ENGINE_WAKEUPS:
        return

    def send():
        try:
            task(f"journeys.{task_name}").delay()
        except Exception:
            logger.warning("Could not enqueue %s; the sweep will pick the work up", task_name)

    transaction.on_commit(send)
