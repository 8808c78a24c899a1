"""Reliability across processes and threads: real PostgreSQL, real Redis, real workers.

Races need a database that runs writers side by side, so these tests are marked `postgres`
and skip (with the reason) on SQLite, where the IMMEDIATE transaction serialises them.
The kill test starts a Celery beat and two `celery -A config worker` processes against the
pytest database and a Redis database of its own, then `kill -9`s one of them mid-run.
"""

import os
import signal
import threading
import time

import pytest
from django.db import connection, transaction
from django.db.models import Count

from conversions.models import ConversionAward
from journeys.actions.contacts import erase_contact
from journeys.actions.enrollments import EnrollmentRefused, enroll_contact
from journeys.actions.events import ingest_events, process_pending_events
from journeys.actions.sweep import run_due
from journeys.models import Contact, Enrollment, Event, OutboxMessage, StepVisit
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey
from tests.processes import celery_processes, wait_for

REDIS_URL = os.environ.get("RELIABILITY_REDIS_URL", "redis://127.0.0.1:6379/7")


def needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite runs one writer at a time, so nothing races")


def in_threads(count, target):
    """Run target(index) in `count` threads released together; each closes its connection."""
    barrier = threading.Barrier(count)
    errors = []

    def run(index):
        try:
            barrier.wait()
            target(index)
        except Exception as exc:  # collected, so a failure in a thread fails the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


SHOP = {
    "key": "shop",
    "conversions": [{"key": "paid", "name": "Paid", "event": {"event": "purchase"}}],
}
WAITING = [{"key": "w", "type": "wait", "duration": "P10D", "next": None}]
THANKS = [{"key": "x", "type": "update_contact", "attributes": {"thanked": True}, "next": None}]


def _shop_and_thanks():
    live_journey(WAITING, **SHOP)
    live_journey(
        THANKS,
        settings={"reentry": "concurrent", "holdout_percent": 0},
        triggers=[{"type": "conversion", "journey": "shop", "conversion": "paid"}],
    )


def _one_of_everything():
    assert Event.objects.filter(event_id="p1").count() == 1
    assert ConversionAward.objects.count() == 1
    assert Enrollment.objects.exclude(journey__key="shop").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_event_posted_three_times_concurrently_counts_once(client):
    needs_postgres()
    from journeys.actions.api_keys import create_api_key

    _shop_and_thanks()
    ingest_events(events=[{"id": "s1", "contact": "ann", "name": "signed_up"}])
    run_due()
    _, raw_key = create_api_key(name="race")
    answers = []

    def post(index):
        from django.test import Client

        response = Client().post(
            "/api/v1/events",
            {"events": [{"id": "p1", "contact": "ann", "name": "purchase"}]},
            content_type="application/json",
            headers={"Authorization": f"Bearer {raw_key}"},
        )
        answers.append(response.json())

    assert in_threads(3, post) == []
    assert sorted(answer["accepted"] for answer in answers) == [0, 0, 1]
    # Workers processing the same backlog side by side.
    assert in_threads(3, lambda index: run_due()) == []
    _one_of_everything()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_triggers_for_one_contact_under_once_make_one_enrollment():
    needs_postgres()
    journey, _ = live_journey(WAITING)
    ingest_events(
        events=[{"id": f"s{index}", "contact": "ann", "name": "signed_up"} for index in range(6)]
    )

    def process(index):
        # Each thread takes its own batch of one event, so the triggers really race.
        process_pending_events(limit=1, now=_now())

    assert in_threads(6, process) == []
    run_due()
    assert Enrollment.objects.filter(journey=journey).count() == 1

    contact = ContactFactory()
    outcomes = []

    def enroll(index):
        try:
            enroll_contact(journey=journey, contact=contact, now=_now())
            outcomes.append("enrolled")
        except EnrollmentRefused:
            outcomes.append("refused")

    assert in_threads(6, enroll) == []
    assert sorted(outcomes) == ["enrolled"] + ["refused"] * 5
    assert Enrollment.objects.filter(journey=journey, contact=contact).count() == 1


def _now():
    from django.utils import timezone

    return timezone.now()


RACE_STEPS = [
    {"key": "pause", "type": "wait", "duration": "PT1H", "next": "check"},
    {
        "key": "check",
        "type": "evaluate_goal",
        "goal": "bought",
        "achieved": "buy",
        "not_achieved": "buy",
    },
    {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
]
RACE_PARTS = {
    "goals": [
        {"key": "bought", "name": "Bought", "criteria": {"event": "purchase"}, "conversion": "paid"}
    ],
    "conversions": [{"key": "paid", "name": "Paid", "event": {"event": "purchase"}}],
}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_three_award_paths_racing_in_workers_award_once_per_enrollment():
    """The Convert step, Evaluate goal's linked conversion and the purchase event all award
    `paid` to the same enrollments, in two workers at the same moment: one award each."""
    needs_postgres()
    import datetime

    live_journey(RACE_STEPS, **RACE_PARTS)
    start = _now()
    contacts = 60
    ingest_events(
        events=[{"id": f"s{i}", "contact": f"r{i}", "name": "signed_up"} for i in range(contacts)],
        now=start,
    )
    run_due(now=start)
    later = start + datetime.timedelta(hours=1)
    ingest_events(
        events=[{"id": f"p{i}", "contact": f"r{i}", "name": "purchase"} for i in range(contacts)],
        now=later,
    )

    def work(index):
        if index == 0:
            process_pending_events(limit=contacts, now=later)
        else:
            from journeys.actions.enrollments import advance_due_enrollments

            advance_due_enrollments(now=later)

    assert in_threads(2, work) == []
    run_due(now=later)
    assert Enrollment.objects.filter(state=Enrollment.State.COMPLETED).count() == contacts
    assert ConversionAward.objects.count() == contacts
    assert not (
        ConversionAward.objects.values("enrollment")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .exists()
    )
    assert Event.objects.filter(name="conversion").count() == contacts


# --- The kill test ----------------------------------------------------------------------------

CONTACTS = int(os.environ.get("KILL_TEST_CONTACTS", "10000"))
KILL_STEPS = [
    {
        "key": "welcome",
        "type": "send_email",
        "subject": "Hi {{ contact.external_id }}",
        "body": "Welcome",
        "next": "tag",
    },
    {"key": "tag", "type": "update_contact", "attributes": {"stage": "welcomed"}, "next": "pause"},
    {"key": "pause", "type": "wait", "duration": "PT2S", "next": "is-pro"},
    {
        "key": "is-pro",
        "type": "condition",
        "if": {"attribute": "stage", "op": "eq", "value": "welcomed"},
        "then": "buy",
        "else": None,
    },
    {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_killing_a_worker_mid_run_loses_nothing_and_does_nothing_twice(tmp_path):
    needs_postgres()
    live_journey(
        KILL_STEPS, key="kill-test", conversions=[{"key": "paid", "name": "Paid", "value": 1.0}]
    )
    for start in range(0, CONTACTS, 1000):
        ingest_events(
            events=[
                {"id": f"start-{index}", "contact": f"k{index}", "name": "signed_up"}
                for index in range(start, min(start + 1000, CONTACTS))
            ]
        )
    Contact.objects.update(email="k@example.com")

    with celery_processes(
        tmp_path,
        broker_url=REDIS_URL,
        workers=["doomed", "survivor"],
        ENGINE_LEASE_SECONDS="5",
        EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
    ) as (doomed, _):
        wait_for(lambda: StepVisit.objects.count() >= CONTACTS // 2, 90, "the run to get going")
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        wait_for(
            lambda: (
                not Enrollment.objects.filter(state=Enrollment.State.ACTIVE).exists()
                and Enrollment.objects.count() == CONTACTS
                and not OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).exists()
                and not Event.objects.filter(status=Event.Status.PENDING).exists()
            ),
            150,
            "every enrollment and message to finish",
        )

    assert Enrollment.objects.filter(state=Enrollment.State.COMPLETED).count() == CONTACTS
    assert ConversionAward.objects.count() == CONTACTS
    assert not (
        ConversionAward.objects.values("enrollment")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .exists()
    )
    assert OutboxMessage.objects.count() == CONTACTS
    assert not (
        OutboxMessage.objects.values("enrollment", "step_key")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .exists()
    )
    # At most once: the one message the killed worker may have been handing to the provider
    # is failed as "outcome unknown" (for a person to retry), never sent again by another.
    sent = OutboxMessage.objects.filter(status=OutboxMessage.Status.SENT).count()
    unknown = OutboxMessage.objects.filter(
        status=OutboxMessage.Status.FAILED, error__startswith="Outcome unknown"
    ).count()
    assert sent + unknown == CONTACTS
    assert unknown <= 1
    assert StepVisit.objects.count() == CONTACTS * len(KILL_STEPS)
    assert Event.objects.filter(name="conversion").count() == CONTACTS
    assert not Event.objects.filter(status=Event.Status.PENDING).exists()
    assert not Enrollment.objects.exclude(path=[step["key"] for step in KILL_STEPS]).exists()


def _until_waiting(pid: list[int], failure: str) -> None:
    """Poll until the backend whose id another thread puts in `pid` waits for a lock (it
    works meanwhile); pg_locks is read live (pg_stat_activity is a snapshot per
    transaction)."""
    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", pid or [0])
            if cursor.fetchone():
                return
            if time.monotonic() > deadline:
                raise AssertionError(failure)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_erasure_meeting_a_worker_batch_in_a_deadlock_is_retried_and_completes():
    """A writer that holds the contact's enrollment and then updates the contact, while an
    erasure holds the contact and waits for the enrollment: PostgreSQL rolls the erasure
    back, and erase_contact tries again once the writer has committed. The engine's own
    writers lock the contact first (erase_contact's lock order), so they never take this
    order; the retry stays as the safety net for any writer that does (an admin edit)."""
    needs_postgres()

    live_journey(WAITING, **SHOP)
    ingest_events(events=[{"id": "s1", "contact": "ann", "name": "signed_up"}])
    run_due()
    contact = Contact.objects.get(external_id="ann")
    enrollment = Enrollment.objects.get(contact=contact)
    batch_holds_enrollment = threading.Event()
    erasure_pid = []
    errors = []

    def worker_batch():
        try:
            with transaction.atomic():
                Enrollment.objects.select_for_update(no_key=True).get(pk=enrollment.pk)
                batch_holds_enrollment.set()
                # Until the erasure waits for the enrollment (it then holds the contact).
                _until_waiting(erasure_pid, "the erasure never waited for the enrollment")
                Contact.objects.filter(pk=contact.pk).update(attributes={"stage": "x"})
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def erasure():
        try:
            batch_holds_enrollment.wait()
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                erasure_pid.append(cursor.fetchone()[0])
            erase_contact(contact=contact)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker_batch), threading.Thread(target=erasure)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # One of the two was PostgreSQL's deadlock victim; the erasure, if it was, tried again.
    assert all("deadlock" in str(error) for error in errors), errors
    contact.refresh_from_db()
    enrollment.refresh_from_db()
    assert contact.erased_at is not None and contact.external_id.startswith("erased-")
    assert enrollment.state == Enrollment.State.EXITED
    assert not Event.objects.filter(contact=contact).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_requests_replaying_each_others_events_in_another_order_both_succeed():
    """Request 1 has stored b1 (not committed yet); request 2 stores a1, then waits for b1;
    request 1 then stores a1 too: a deadlock on the event_id index. PostgreSQL rolls request
    2 back (its wait began first, so its deadlock check runs first: request 1's waits
    longer), and ingest_events runs it again, once request 1 has committed: its two events
    are duplicates. Nothing is lost or stored twice, and neither request fails."""
    needs_postgres()
    Contact.objects.create(external_id="ann")
    first_holds_b1 = threading.Event()
    second_pid = []
    answers, errors = {}, []

    def first_request():
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL deadlock_timeout = '30s'")
                answers[1] = [ingest_events(events=[event("b1")])]
                first_holds_b1.set()
                _until_waiting(second_pid, "request 2 never waited for b1")
                answers[1].append(ingest_events(events=[event("a1")]))
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def second_request():
        try:
            first_holds_b1.wait()
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                second_pid.append(cursor.fetchone()[0])
            answers[2] = ingest_events(events=[event("a1"), event("b1")])
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def event(event_id):
        return {"id": event_id, "contact": "ann", "name": "page_viewed"}

    threads = [threading.Thread(target=first_request), threading.Thread(target=second_request)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert answers == {1: [(1, 0), (1, 0)], 2: (0, 2)}
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["a1", "b1"]


# --- Poison: one bad event does not stop a real worker (issue 12) -----------------------------

POISON_REDIS_URL = os.environ.get("POISON_REDIS_URL", "redis://127.0.0.1:6379/11")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_poison_event_fails_alone_and_the_worker_processes_the_rest_of_its_batch(tmp_path):
    """A row that no API call could have written (stored around it: SQL, an old import):
    internal `conversion` event whose properties are a list, which a conversion trigger
    cannot read (AttributeError in the engine). It sits in the middle of one batch of 41
    events; a real worker, woken by beat's sweep, must process the other 40, park the bad
    one as failed with its error after ENGINE_MAX_ATTEMPTS, and keep running."""
    needs_postgres()
    live_journey(THANKS, key="welcome", conversions=[{"key": "paid", "name": "Paid"}])
    live_journey(
        THANKS, triggers=[{"type": "conversion", "journey": "welcome", "conversion": "paid"}]
    )
    ingest_events(
        events=[
            {"id": f"s{index}", "contact": f"p{index}", "name": "signed_up"} for index in range(20)
        ]
        + [{"id": "poison", "contact": "p0", "name": "conversion", "properties": ["a list"]}]
        + [
            {"id": f"s{index}", "contact": f"p{index}", "name": "signed_up"}
            for index in range(20, 40)
        ]
    )

    with celery_processes(
        tmp_path,
        broker_url=POISON_REDIS_URL,
        workers=["poison"],
        ENGINE_MAX_ATTEMPTS="3",
        EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
    ) as (worker,):
        wait_for(
            lambda: (
                Event.objects.filter(event_id="poison", status=Event.Status.FAILED).exists()
                and not Event.objects.filter(status=Event.Status.PENDING).exists()
                and Enrollment.objects.filter(state=Enrollment.State.COMPLETED).count() == 40
            ),
            90,
            "the 40 good events to be processed and the poison one to be failed",
        )
        assert worker.poll() is None, "the worker stopped"

    poison = Event.objects.get(event_id="poison")
    assert poison.attempts == 3
    assert poison.error.startswith("AttributeError: 'list' object has no attribute 'get'")
    assert Event.objects.filter(status=Event.Status.PROCESSED).count() == 40
    # Each attempt logged, with its traceback, by the worker.
    assert (tmp_path / "celery.log").read_text().count(f"Event {poison.pk} failed") == 3
