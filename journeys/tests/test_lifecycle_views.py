"""The editor's Pause / Resume / Stop (contract 6.2): offered to Publishers only, each asking
first with what happens to the contacts running."""

import pytest
from django.urls import reverse

from journeys.models import Enrollment, Journey
from journeys.tests.actions.scenarios import T0, WAIT_STEPS, run, send
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db


@pytest.fixture
def running():
    """A live journey with two contacts running, held in its wait."""
    journey, _ = live_journey(WAIT_STEPS, key="nurture", name="Nurture")
    for name in ("ann", "bob"):
        ContactFactory(external_id=name)
    send(("e1", "ann", "signed_up"), ("e2", "bob", "signed_up"), now=T0)
    run(now=T0)
    return journey


def test_the_editor_offers_pause_and_stop_with_what_happens_to_the_running(
    client, publisher, running
):
    client.force_login(publisher)
    html = client.get("/journeys/nurture/").content.decode()

    assert "Pause…" in html and "Stop…" in html and "Resume…" not in html
    assert "2 contacts are running: they hold where they are until you resume." in html
    assert "2 contacts are running: they exit now" in html
    assert reverse("journeys:lifecycle", args=["nurture", "pause"]) in html


def test_pause_then_resume_from_the_editor(client, publisher, running):
    client.force_login(publisher)

    response = client.post(reverse("journeys:lifecycle", args=["nurture", "pause"]), follow=True)
    html = response.content.decode()
    assert Journey.objects.get(key="nurture").status == "paused"
    assert "Journey paused." in html and "Resume…" in html and "Pause…" not in html
    assert '<span id="journey-status" class="badge paused">Paused</span>' in html

    client.post(reverse("journeys:lifecycle", args=["nurture", "resume"]))
    assert Journey.objects.get(key="nurture").status == "live"


def test_stop_from_the_editor_exits_the_running(client, publisher, running):
    client.force_login(publisher)
    response = client.post(reverse("journeys:lifecycle", args=["nurture", "stop"]), follow=True)

    assert "Journey stopped: publish a new version" in response.content.decode()
    assert set(Enrollment.objects.values_list("exit_reason", flat=True)) == {"journey_stopped"}


def test_a_refused_change_says_why(client, publisher, running):
    client.force_login(publisher)
    response = client.post(reverse("journeys:lifecycle", args=["nurture", "resume"]), follow=True)

    assert response.status_code == 200
    assert (
        '<div class="alert error" role="status">Journey &#x27;nurture&#x27; is live: only a '
        "paused journey can be resumed.</div>"
    ) in response.content.decode()


def test_editors_and_viewers_see_no_buttons_and_cannot_post(client, editor, viewer, running):
    for user in (editor, viewer):
        client.force_login(user)
        assert "Pause…" not in client.get("/journeys/nurture/").content.decode()
        response = client.post(reverse("journeys:lifecycle", args=["nurture", "pause"]))
        assert response.status_code == 403
    assert Journey.objects.get(key="nurture").status == "live"


def test_an_unknown_change_or_journey_is_a_404(client, publisher, running):
    client.force_login(publisher)
    assert (
        client.post(reverse("journeys:lifecycle", args=["nurture", "archive"])).status_code == 404
    )
    assert client.post(reverse("journeys:lifecycle", args=["nope", "pause"])).status_code == 404
