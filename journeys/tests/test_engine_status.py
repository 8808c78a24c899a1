from datetime import timedelta

import pytest
from django.utils import timezone

from journeys.models import EngineLease, Enrollment, Event, OutboxMessage
from journeys.selectors import engine_status
from journeys.tests.factories import EnrollmentFactory, EventFactory

pytestmark = pytest.mark.django_db


def test_engine_status_counts_each_queue_of_record(django_assert_num_queries):
    now = timezone.now()
    EventFactory(status=Event.Status.PENDING)
    EventFactory(status=Event.Status.DROPPED, error="chain too deep")
    EnrollmentFactory(due_at=now - timedelta(minutes=5))
    running = EnrollmentFactory(due_at=now - timedelta(minutes=1))
    EngineLease.objects.create(enrollment_ids=[running.pk], leased_until=now + timedelta(minutes=4))
    EnrollmentFactory(due_at=now + timedelta(days=2))
    EnrollmentFactory(state=Enrollment.State.FAILED, last_error="boom")

    with django_assert_num_queries(7):
        status = engine_status(now=now)

    assert status.events_pending == 1
    assert status.events_dropped == 1
    assert status.enrollments_due == 1
    assert status.enrollments_running == 1
    assert status.enrollments_waiting == 1
    assert status.enrollments_failed == 1
    assert status.messages_pending == status.messages_failed == 0
    assert status.oldest_due_seconds["enrollments"] == pytest.approx(300, abs=1)
    assert status.oldest_due_seconds["outbox"] is None
    assert OutboxMessage.objects.count() == 0


def test_admin_index_shows_the_engine_state(client, superuser):
    EnrollmentFactory(state=Enrollment.State.FAILED, last_error="boom")
    client.force_login(superuser)

    response = client.get("/admin/")

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="engine-status"' in page
    assert "?state__exact=failed" in page
    assert response.context["engine"].enrollments_failed == 1
