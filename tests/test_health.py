from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from kombu import Connection

from journeys.models import Enrollment, Event, OutboxMessage
from journeys.tests.factories import EnrollmentFactory, EventFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def broker_started(settings):
    """The embedded broker as a worker leaves it once started: its channel has made the
    broker's folders (config/broker.py)."""
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        with Connection(
            settings.CELERY_BROKER_URL,
            transport=settings.CELERY_BROKER_TRANSPORT,
            transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        ) as conn:
            conn.default_channel  # noqa: B018


def test_healthz_answers_200_without_login_when_everything_works(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["broker"] == "ok"
    assert body["oldest_due_seconds"] == 0.0
    assert body["due"] == {"events": None, "enrollments": None, "outbox": None}


def test_healthz_reports_the_age_of_recent_due_work_and_stays_healthy(client):
    event = EventFactory()
    Event.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(seconds=30))
    EnrollmentFactory(due_at=timezone.now() - timedelta(seconds=10))
    EnrollmentFactory(due_at=timezone.now() + timedelta(days=1))  # waiting, not due

    body = client.get("/healthz").json()

    assert 30 <= body["oldest_due_seconds"] < 60
    assert 30 <= body["due"]["events"] < 60
    assert 10 <= body["due"]["enrollments"] < 40
    assert body["due"]["outbox"] is None
    assert body["status"] == "ok"


def test_healthz_ignores_processed_events_and_ended_enrollments(client):
    long_ago = timezone.now() - timedelta(days=2)
    event = EventFactory(status=Event.Status.PROCESSED)
    Event.objects.filter(pk=event.pk).update(received_at=long_ago)
    EnrollmentFactory(state=Enrollment.State.COMPLETED, due_at=long_ago)

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["oldest_due_seconds"] == 0.0


def test_healthz_answers_503_when_due_work_waits_longer_than_allowed(client, settings):
    settings.HEALTH_MAX_DUE_SECONDS = 60
    EnrollmentFactory(due_at=timezone.now() - timedelta(minutes=5))

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["database"] == "ok"
    assert body["broker"] == "ok"
    assert body["oldest_due_seconds"] >= 300


def test_healthz_counts_pending_outbox_messages_as_due_work(client, settings):
    settings.HEALTH_MAX_DUE_SECONDS = 60
    enrollment = EnrollmentFactory()
    visit = enrollment.visits.create(
        version=enrollment.version, step_key="welcome", seq=1, entered_at=timezone.now()
    )
    OutboxMessage.objects.create(
        visit=visit,
        enrollment=enrollment,
        contact=enrollment.contact,
        step_key="welcome",
        channel=OutboxMessage.Channel.EMAIL,
        recipient="a@example.com",
        due_at=timezone.now() - timedelta(minutes=10),
    )

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["due"]["outbox"] >= 600


def test_healthz_answers_503_when_the_broker_is_unreachable(client, settings):
    # Port 1 on loopback refuses at once: a broker that is down, not one that is slow.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["broker"] == "error: OperationalError"
    assert body["database"] == "ok"
    assert "127.0.0.1" not in response.content.decode()


def test_healthz_answers_503_when_the_filesystem_broker_folder_is_missing(
    client, settings, tmp_path
):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(tmp_path / "gone"),
        "data_folder_out": str(tmp_path / "gone"),
    }

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["broker"] == "error: OSError"


def test_healthz_answers_503_when_the_database_does_not_answer(client, monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError("connection refused by db.internal")

    # The request's first query is the health check's own; sessions and auth are not touched.
    monkeypatch.setattr(connection, "cursor", refuse)

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "error: OperationalError"
    assert body["oldest_due_seconds"] is None
    assert "db.internal" not in response.content.decode()


def test_healthz_refuses_other_methods(client):
    assert client.post("/healthz").status_code == 405
