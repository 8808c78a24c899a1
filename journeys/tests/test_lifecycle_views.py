"""The editor's Pause / Resume / Stop (contract 6.2): offered to Publishers only, each asking
first with what happens to the contacts running."""

import pytest
from django.urls import reverse

from conversions.actions import save_conversion
from journeys.actions.versions import publish_version, save_draft_version
from journeys.models import Enrollment, Journey, JourneyVersion
from journeys.selectors import journey_definition
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


def test_the_editor_ends_a_split_by_publishing_one_version_alone(client, publisher, running):
    draft = save_draft_version(journey=running, definition=journey_definition(journey=running))
    publish_version(version=draft.version, traffic=30)
    client.force_login(publisher)
    html = client.get("/journeys/nurture/").content.decode()
    assert "Versions 1 and 2 share new enrollments" in html
    assert "Publish v1 alone" in html and "Publish v2 alone" in html

    client.post(reverse("journeys:version-publish", args=["nurture", 2]))

    states = dict(JourneyVersion.objects.filter(journey=running).values_list("number", "state"))
    assert states == {1: "retired", 2: "live"}
    assert JourneyVersion.objects.get(journey=running, number=2).traffic is None
    assert "share new enrollments" not in client.get("/journeys/nurture/").content.decode()


def test_discard_the_draft_from_the_editor(client, editor, running):
    save_draft_version(journey=running, definition=journey_definition(journey=running))
    client.force_login(editor)
    assert "Discard draft 2…" in client.get("/journeys/nurture/").content.decode()

    response = client.post(reverse("journeys:draft-discard", args=["nurture"]), follow=True)

    assert "Draft version 2 discarded." in response.content.decode()
    assert list(running.versions.values_list("number", "state")) == [(1, "live")]
    again = client.post(reverse("journeys:draft-discard", args=["nurture"]), follow=True)
    assert "Journey &#x27;nurture&#x27; has no draft to discard." in again.content.decode()


def test_the_only_draft_of_a_new_journey_is_not_discarded(client, editor):
    Journey.objects.create(key="fresh", name="Fresh").versions.create(
        number=1, definition={"steps": []}
    )
    client.force_login(editor)
    response = client.post(reverse("journeys:draft-discard", args=["fresh"]), follow=True)
    assert "delete the journey instead" in response.content.decode()
    assert JourneyVersion.objects.filter(journey__key="fresh").count() == 1


def test_duplicate_a_journey_with_its_goals_and_conversions(client, editor):
    journey, _ = live_journey(
        WAIT_STEPS,
        key="orig",
        conversions=[{"key": "paid", "name": "Paid", "value": 9.0}],
        goals=[{"key": "active", "name": "Active", "criteria": {"event": "login"}}],
    )
    client.force_login(editor)
    page = client.get("/journeys/orig/").content.decode()
    assert 'href="/journeys/orig/duplicate/"' in page
    form = client.get(reverse("journeys:duplicate", args=["orig"])).content.decode()
    assert 'value="orig-copy"' in form
    response = client.post(
        reverse("journeys:duplicate", args=["orig"]), {"key": "orig-2", "name": "Two"}
    )

    assert response["Location"] == "/journeys/orig-2/"
    copy = Journey.objects.get(key="orig-2")
    assert (copy.name, copy.status) == ("Two", "draft")
    assert list(copy.versions.values_list("number", "state")) == [(1, "draft")]
    assert journey_definition(journey=copy)["steps"] == journey_definition(journey=journey)["steps"]
    assert [c["key"] for c in journey_definition(journey=copy)["conversions"]] == ["paid"]
    assert [g["key"] for g in journey_definition(journey=copy)["goals"]] == ["active"]


def test_duplicate_under_a_taken_or_bad_key_says_so_on_the_form(client, editor, running):
    client.force_login(editor)
    taken = client.post(
        reverse("journeys:duplicate", args=["nurture"]), {"key": "nurture", "name": "X"}
    )
    assert taken.status_code == 400
    assert "A journey with the key &#x27;nurture&#x27; already exists" in taken.content.decode()
    bad = client.post(
        reverse("journeys:duplicate", args=["nurture"]), {"key": "Bad Key", "name": "X"}
    )
    assert bad.status_code == 400
    assert Journey.objects.count() == 1


def test_the_publish_review_shows_what_changes_and_who_is_running(client, publisher, running):
    definition = journey_definition(journey=running)
    definition["steps"] = [
        {**definition["steps"][0], "duration": "P1D"},
        {"key": "bye", "type": "exit"},
    ]
    definition["steps"][0]["next"] = "bye"
    save_draft_version(journey=running, definition=definition)
    # After the publish (the review counts changes since then).
    save_conversion(journey=running, data={"key": "paid", "name": "Paid", "value": 5.0})
    client.force_login(publisher)
    editor_page = client.get("/journeys/nurture/").content.decode()
    assert 'hx-get="/journeys/nurture/publish/review/"' in editor_page

    html = client.get(
        reverse("journeys:draft-review", args=["nurture"]), headers={"HX-Request": "true"}
    ).content.decode()

    assert "Publish draft version 2?" in html
    assert (
        "Against live version 1: Added 1 step (bye); removed 1 step (tag); changed 1 step (w)."
    ) in html
    assert "<li>Conversion &#x27;Paid&#x27; created</li>" in html
    assert "2 contacts are running on the live version: they stay on it" in html
    assert 'action="/journeys/nurture/publish/"' in html


def test_the_review_is_not_for_viewers_and_needs_a_draft(client, viewer, publisher, running):
    client.force_login(viewer)
    assert client.get(reverse("journeys:draft-review", args=["nurture"])).status_code == 403
    client.force_login(publisher)
    assert client.get(reverse("journeys:draft-review", args=["nurture"])).status_code == 404
