"""Admin's Journey actions: pause, resume and stop (contract 6.2), for whoever may publish."""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from journeys.models import Enrollment, Journey
from journeys.tests.actions.scenarios import T0, WAIT_STEPS, run, send
from journeys.tests.factories import ContactFactory, UserFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db

URL = reverse("admin:journeys_journey_changelist")


def act(client, action, *journeys):
    return client.post(
        URL, {"action": action, "_selected_action": [j.pk for j in journeys]}, follow=True
    )


def test_a_superuser_pauses_resumes_and_stops_journeys(client, superuser):
    journey, _ = live_journey(WAIT_STEPS, key="one")
    ContactFactory(external_id="ann")
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    client.force_login(superuser)

    act(client, "pause_journeys", journey)
    assert Journey.objects.get(pk=journey.pk).status == "paused"
    response = act(client, "pause_journeys", journey)
    assert "Journey 'one' is paused: only a live journey can be paused." in [
        str(m) for m in get_messages(response.wsgi_request)
    ]
    act(client, "resume_journeys", journey)
    assert Journey.objects.get(pk=journey.pk).status == "live"
    act(client, "stop_journeys", journey)
    assert Journey.objects.get(pk=journey.pk).status == "stopped"
    assert Enrollment.objects.get().exit_reason == "journey_stopped"


def test_staff_without_the_publish_permission_is_not_offered_the_actions(client, role_groups):
    staff = UserFactory(username="staff-editor", groups=["Editor"], is_staff=True)
    journey, _ = live_journey(WAIT_STEPS, key="two")
    client.force_login(staff)
    page = client.get(URL)
    assert page.status_code == 200
    assert "pause_journeys" not in page.content.decode()
    act(client, "pause_journeys", journey)
    assert Journey.objects.get(pk=journey.pk).status == "live"
