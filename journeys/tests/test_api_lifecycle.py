"""Contract 6.2 over the API: pause, resume and stop, their 409s, and enrollments'
`exit_reason` on GET contact."""

import pytest

from journeys.actions.contacts import erase_contact
from journeys.models import Contact
from journeys.selectors import journey_definition as definition_of
from journeys.tests.actions.scenarios import T0, WAIT_STEPS, run, send
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db


def test_pause_resume_and_stop_answer_with_the_journey(api):
    journey, _ = live_journey(WAIT_STEPS)
    shape = api.get(f"/api/v1/journeys/{journey.key}").json()

    paused = api.post(f"/api/v1/journeys/{journey.key}/pause")
    assert paused.status_code == 200, paused.content
    assert paused.json().keys() == shape.keys()
    assert paused.json()["status"] == "paused"

    resumed = api.post(f"/api/v1/journeys/{journey.key}/resume")
    assert (resumed.status_code, resumed.json()["status"]) == (200, "live")

    stopped = api.post(f"/api/v1/journeys/{journey.key}/stop")
    assert (stopped.status_code, stopped.json()["status"]) == (200, "stopped")
    assert api.get(f"/api/v1/journeys/{journey.key}").json()["status"] == "stopped"


@pytest.mark.parametrize(
    ("before", "call", "message"),
    [
        ([], "resume", "Journey 'j' is live: only a paused journey can be resumed."),
        (["pause"], "pause", "Journey 'j' is paused: only a live journey can be paused."),
        (["stop"], "stop", "Journey 'j' is stopped: only a live or paused journey can be stopped."),
        (["stop"], "resume", "Journey 'j' is stopped: only a paused journey can be resumed."),
    ],
)
def test_a_change_the_state_does_not_allow_is_a_409_in_the_error_shape(api, before, call, message):
    live_journey(WAIT_STEPS, key="j")
    for step in before:
        assert api.post(f"/api/v1/journeys/j/{step}").status_code == 200

    response = api.post(f"/api/v1/journeys/j/{call}")

    assert response.status_code == 409
    assert response.json() == {"errors": [{"loc": ["key"], "message": message}]}


def test_a_draft_journey_cannot_be_paused_and_an_unknown_one_is_a_404(api):
    api.post("/api/v1/journeys", {"key": "d", "name": "D", "steps": WAIT_STEPS})
    assert api.post("/api/v1/journeys/d/pause").status_code == 409
    assert api.post("/api/v1/journeys/nope/stop").status_code == 404


def test_an_ingest_key_cannot_pause(make_api_client):
    journey, _ = live_journey(WAIT_STEPS)
    response = make_api_client("ingest").post(f"/api/v1/journeys/{journey.key}/pause")
    assert response.status_code == 403


def test_contact_enrollments_say_why_they_exited(api):
    live_journey(WAIT_STEPS, key="stopped-one")
    live_journey(WAIT_STEPS, key="exits", exit_when=[{"type": "event", "event": "bye"}])
    live_journey(WAIT_STEPS, key="running")
    ContactFactory(external_id="ann")
    ContactFactory(external_id="bob")
    send(("e1", "ann", "signed_up"), ("e2", "bob", "signed_up"), now=T0)
    run(now=T0)
    send(("e3", "ann", "bye"), now=T0)
    run(now=T0)
    api.post("/api/v1/journeys/stopped-one/stop")

    body = api.get("/api/v1/contacts/ann").json()
    assert {e["journey"]: e["exit_reason"] for e in body["enrollments"]} == {
        "stopped-one": "journey_stopped",
        "exits": "exit_when",
        "running": None,
    }
    erase_contact(contact=Contact.objects.get(external_id="bob"))
    erased = Contact.objects.get(erased_at__isnull=False)
    body = api.get(f"/api/v1/contacts/{erased.external_id}").json()
    assert sorted(e["exit_reason"] for e in body["enrollments"]) == [
        "erased",
        "erased",
        "journey_stopped",
    ]


def test_delete_draft_discards_it_and_answers_with_the_journey(api):
    journey, _ = live_journey(WAIT_STEPS, key="j")
    assert (
        api.post("/api/v1/journeys/j/versions", definition_of(journey=journey)).status_code == 201
    )

    response = api.delete("/api/v1/journeys/j/draft")

    assert response.status_code == 200, response.content
    assert [(v["number"], v["state"]) for v in response.json()["versions"]] == [(1, "live")]
    again = api.delete("/api/v1/journeys/j/draft")
    assert again.status_code == 409
    assert again.json() == {
        "errors": [{"loc": ["key"], "message": "Journey 'j' has no draft to discard."}]
    }
    assert api.delete("/api/v1/journeys/nope/draft").status_code == 404


def test_the_only_version_of_a_new_journey_is_not_discarded(api):
    api.post("/api/v1/journeys", {"key": "d", "name": "D", "steps": WAIT_STEPS})
    response = api.delete("/api/v1/journeys/d/draft")
    assert response.status_code == 409
    assert "delete the journey instead" in response.json()["errors"][0]["message"]
