"""The Celery tasks are thin: each runs its action on whatever the database holds due."""

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core import mail

from journeys import tasks
from journeys.actions.enrollments import advance_due_enrollments
from journeys.actions.events import ingest_events, process_pending_events
from journeys.actions.sweep import enqueue_due_work
from journeys.models import Enrollment, Event, OutboxMessage
from journeys.tests.flows import live_journey
from tests.processes import skip_unless_reachable

pytestmark = pytest.mark.django_db

STEPS = [
    {"key": "hi", "type": "send_email", "subject": "Hi", "body": "Hello", "next": None},
]


def test_sweep_names_each_kind_of_due_work_and_nothing_when_idle(
    django_capture_on_commit_callbacks,
):
    from django.utils import timezone

    assert enqueue_due_work(now=timezone.now()) == []
    live_journey(STEPS)
    ingest_events(events=[{"id": "e1", "contact": "ann", "name": "signed_up"}])
    assert tasks.sweep() == ["process_events"]
    process_pending_events(now=timezone.now())
    assert tasks.sweep() == ["advance_enrollments"]
    advance_due_enrollments(now=timezone.now())
    assert tasks.sweep() == ["deliver_messages"]


def test_tasks_run_their_actions_until_nothing_is_due():
    live_journey(STEPS)
    ingest_events(
        events=[{"id": f"e{i}", "contact": f"c{i}", "name": "signed_up"} for i in range(3)]
    )
    assert tasks.process_events() == 3
    assert tasks.advance_enrollments() == 3
    assert tasks.deliver_messages() == 3
    assert not Event.objects.filter(status=Event.Status.PENDING).exists()
    assert Enrollment.objects.filter(state=Enrollment.State.COMPLETED).count() == 3
    assert OutboxMessage.objects.filter(status=OutboxMessage.Status.SKIPPED).count() == 3
    assert mail.outbox == []  # the contacts have no email address: skipped with the reason


@pytest.mark.parametrize("task", ["process_events", "advance_enrollments", "deliver_messages"])
def test_a_task_past_its_time_hands_over_after_the_batch_it_is_in(task, settings, monkeypatch):
    """With no time left, each task runs one batch and re-enqueues the due work behind the
    wake-ups already queued, instead of holding the worker for 20 batches."""
    live_journey(STEPS)
    ingest_events(
        events=[{"id": f"e{i}", "contact": f"c{i}", "name": "signed_up"} for i in range(5)]
    )
    if task != "process_events":
        tasks.process_events()
    if task == "deliver_messages":
        tasks.advance_enrollments()
    settings.ENGINE_BATCH_SIZE = 2
    enqueued = []
    monkeypatch.setattr(tasks, "enqueue_due_work", lambda now: enqueued.append(now))
    settings.ENGINE_TASK_SECONDS = 0
    assert getattr(tasks, task)() == 2
    assert len(enqueued) == 1
    settings.ENGINE_TASK_SECONDS = 60
    enqueued.clear()
    assert getattr(tasks, task)() == 3
    assert enqueued == []


def test_task_names_are_stable():
    assert {
        task.name
        for task in (
            tasks.process_events,
            tasks.advance_enrollments,
            tasks.deliver_messages,
            tasks.sweep,
        )
    } == {
        "journeys.process_events",
        "journeys.advance_enrollments",
        "journeys.deliver_messages",
        "journeys.sweep",
    }


def test_beat_runs_the_sweep_every_sweep_interval(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE["journeys-sweep"]
    assert schedule == {"task": "journeys.sweep", "schedule": settings.SWEEP_INTERVAL_SECONDS}


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    """`code` run by a new Python process of this project, on the test settings."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        cwd=settings.BASE_DIR,
    )


WAKE_FROM_A_WEB_PROCESS = """
import sys
import django
django.setup()
import config.urls  # everything a web process imports to answer a request
assert "journeys.tasks" not in sys.modules, "a web process should not need the tasks"
from journeys.wakeups import task
print(" ".join(task(f"journeys.{name}").name for name in sys.argv[1:]))
"""


@pytest.mark.django_db(databases=[])
def test_a_web_process_finds_each_task_it_wakes_by_name():
    names = ["process_events", "advance_enrollments", "deliver_messages", "sweep"]
    found = _python(WAKE_FROM_A_WEB_PROCESS, *names)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [f"journeys.{name}" for name in names]


WORKER_START = """
import sys
from celery.signals import worker_init
from config.celery import app
# What `celery worker` does before its first task: Django set up by Celery's fix-up, the
# task modules imported, worker_init sent. Then a click link, as a send builds it.
app.loader.import_default_modules()
worker_init.send(sender=None)
from journeys.links import click_url
click_url(outbox_id=1, url="https://example.com/")
print(" ".join(sorted(set(sys.argv[1:]) & set(sys.modules))))
"""


@pytest.mark.django_db(databases=[])
def test_a_worker_imports_neither_the_sites_urls_nor_the_reports_numerical_libraries():
    # The URLconf imports every page and API, the report's among them: about 120 MB of a
    # worker's memory, for a process that never answers a request nor reports.
    heavy = ["config.urls", "numpy", "pandas", "scipy", "statsmodels"]
    started = _python(WORKER_START, *heavy)
    assert started.returncode == 0, started.stderr
    assert started.stdout.split() == []


WORKER_READY = """
import gc
from celery.signals import worker_ready
from config.celery import GC_YOUNGEST_THRESHOLD, app
app.loader.import_default_modules()
worker_ready.send(sender=None)
print(gc.get_threshold()[0] == GC_YOUNGEST_THRESHOLD, gc.get_freeze_count() > 10_000)
"""


@pytest.mark.django_db(databases=[])
def test_a_ready_worker_keeps_what_it_loaded_out_of_the_collectors_way():
    """What a worker imported is frozen (full collections walk only what tasks allocate)
    and the youngest generation is collected less often than Python's default."""
    ready = _python(WORKER_READY)
    assert ready.returncode == 0, ready.stderr
    assert ready.stdout.split() == ["True", "True"]


def test_a_worker_logs_a_setting_written_wrong_at_its_start(settings, caplog):
    from config.celery import check_worker

    settings.INGEST_RATE_LIMIT = "many per minute"
    check_worker()
    assert [record.levelname for record in caplog.records] == ["ERROR"]
    assert "journeys.E002" in caplog.records[0].getMessage()


REDIS_URL = os.environ.get("PRIORITY_REDIS_URL", "redis://127.0.0.1:6379/12")


@pytest.mark.django_db(databases=[])
def test_on_redis_event_matching_is_taken_before_the_work_queued_ahead_of_it():
    """A worker takes pending events first: wake-ups of steps and sends queued before a
    `process_events` wait behind it (a lower priority number is popped first on Redis)."""
    from kombu import Connection

    skip_unless_reachable(REDIS_URL)
    queue = "priority-check"
    with Connection(REDIS_URL) as connection:
        channel = connection.default_channel
        channel.client.flushdb()
        for name in ("advance_enrollments", "deliver_messages", "sweep", "process_events"):
            getattr(tasks, name).apply_async(connection=connection, queue=queue)
        taken = []
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            taken.append(message.headers["task"])
        channel.client.flushdb()
    assert taken[0] == "journeys.process_events"
    assert sorted(taken[1:]) == [
        "journeys.advance_enrollments", "journeys.deliver_messages", "journeys.sweep"
    ]  # fmt: skip
