"""Erasure while the contact's events pour in and workers process them (issue 12, item 7):
every path that writes rows for a contact takes the contact's row lock first, so an erasure
meets no deadlock, is never retried, and leaves none of the contact's personal data behind.
"""

import logging
import threading

import pytest
from django.db import connection
from django.utils import timezone

from journeys.actions.contacts import erase_contact
from journeys.actions.enrollments import advance_due_enrollments
from journeys.actions.events import ingest_events, process_pending_events
from journeys.actions.sweep import run_due
from journeys.models import Event, OutboxMessage
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROUNDS = 5
EVENTS = 1000
BATCH = 50
# Erase once this many batches are in: workers are busy with the contact's events by then.
ERASE_AFTER_BATCHES = 4

STEPS = [
    {"key": "hello", "type": "send_email", "subject": "Hi", "body": "Hi", "next": "mark"},
    {"key": "mark", "type": "update_contact", "attributes": {"greeted": True}, "next": "buy"},
    {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
]


@pytest.fixture
def busy_journey():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite runs one writer at a time, so nothing races")
    # Every signed_up starts an enrollment (a row inserted for the contact); each runs a
    # step that writes the contact; purchases award a conversion.
    live_journey(
        STEPS,
        key="busy",
        settings={"reentry": "concurrent", "holdout_percent": 0},
        conversions=[
            {"key": "paid", "name": "Paid"},
            {"key": "bought", "name": "Bought", "event": {"event": "purchase"}},
        ],
    )


def in_thread(target, errors):
    def run():
        try:
            target()
        except Exception as exc:  # collected, so a failure in a thread fails the test
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def erase_during_ingestion(external_id: str) -> None:
    """One round: a client ingests EVENTS events for the contact in batches, two workers
    process events and advance enrollments, and the contact is erased meanwhile."""
    address = f"{external_id}@example.com"
    contact = ContactFactory(external_id=external_id, email=address)
    errors: list[Exception] = []
    half_in, ingested = threading.Event(), threading.Event()

    def ingest():
        try:
            for start in range(0, EVENTS, BATCH):
                ingest_events(
                    events=[
                        {
                            "id": f"{external_id}-{index}",
                            "contact": external_id,
                            "name": "purchase" if index % 10 else "signed_up",
                            "properties": {"email": address},
                        }
                        for index in range(start, start + BATCH)
                    ]
                )
                if start // BATCH + 1 == ERASE_AFTER_BATCHES:
                    half_in.set()
        finally:
            half_in.set()
            ingested.set()

    def work():
        while not ingested.is_set():
            process_pending_events(now=timezone.now())
            advance_due_enrollments(now=timezone.now())

    def erase():
        half_in.wait()
        erase_contact(contact=contact)

    threads = [in_thread(target, errors) for target in (ingest, work, work, erase)]
    for thread in threads:
        thread.join()
    assert errors == [], errors
    run_due()

    contact.refresh_from_db()
    assert contact.erased_at is not None
    assert contact.email == "" and contact.external_id.startswith("erased-")
    # Events that arrived after the erasure belong to a new contact of that id.
    assert not Event.objects.filter(contact=contact).exists()
    assert not OutboxMessage.objects.filter(contact=contact).exclude(recipient="").exists()


def test_erasure_under_ingestion_load_meets_no_deadlock_and_leaves_nothing(busy_journey, caplog):
    caplog.set_level(logging.WARNING)
    for round_ in range(ROUNDS):
        erase_during_ingestion(f"ann{round_}")
    deadlocks = [
        record.getMessage() for record in caplog.records if "deadlock" in record.getMessage()
    ]
    assert deadlocks == []
