"""The editor canvas's numbers per step (active now, entered, converted) for the version
shown, and the contacts list each number links to."""

import pytest
from django.utils import timezone

from conversions.tests.factories import ConversionAwardFactory, ConversionFactory
from journeys.actions.versions import create_journey, publish_version
from journeys.models import StepVisit
from journeys.selectors import step_counts
from journeys.tests.factories import ContactFactory, EnrollmentFactory

pytestmark = pytest.mark.django_db

DEFINITION = {
    "key": "onboarding",
    "name": "Onboarding",
    "triggers": [{"type": "event", "event": "signed_up"}],
    "conversions": [{"key": "paid", "name": "Paid", "value": 10.0}],
    "steps": [
        {"key": "welcome", "type": "send_email", "subject": "Hi", "body": "Hi", "next": "wait"},
        {"key": "wait", "type": "wait", "duration": "P2D", "next": None},
    ],
}


@pytest.fixture
def live(db, publisher):
    journey, _, _ = create_journey(definition=DEFINITION)
    version = journey.versions.get()
    publish_version(version=version, user=publisher)
    version.refresh_from_db()
    return journey, version


def enroll(version, name, *, visited, at=None, converted=False):
    enrollment = EnrollmentFactory(
        version=version,
        journey=version.journey,
        contact=ContactFactory(external_id=name),
        current_step=at or "",
        state="active" if at else "completed",
    )
    for seq, key in enumerate(visited):
        StepVisit.objects.create(
            enrollment=enrollment,
            version=version,
            step_key=key,
            seq=seq,
            entered_at=timezone.now(),
        )
    if converted:
        paid = version.journey.conversions.get(key="paid")
        ConversionAwardFactory(enrollment=enrollment, conversion=paid)
    return enrollment


@pytest.fixture
def people(live):
    journey, version = live
    enroll(version, "ann", visited=["welcome"], at="welcome")
    enroll(version, "bob", visited=["welcome", "wait"], at="wait")
    enroll(version, "cid", visited=["welcome", "wait"], converted=True)
    # another conversion of the journey, not its first, does not count
    other = ConversionFactory(journey=journey, key="zzz", position=9)
    dan = enroll(version, "dan", visited=["welcome"])
    ConversionAwardFactory(enrollment=dan, conversion=other)
    return journey, version


def test_step_counts_are_three_grouped_queries(people, django_assert_num_queries):
    _, version = people
    with django_assert_num_queries(3):
        counts = step_counts(version=version)
    assert (counts["welcome"].active, counts["welcome"].entered, counts["welcome"].converted) == (
        1,
        4,
        1,
    )
    assert (counts["wait"].active, counts["wait"].entered, counts["wait"].converted) == (1, 2, 1)


def test_the_canvas_shows_the_numbers_with_links_to_those_contacts(client, viewer, people):
    journey, version = people
    client.force_login(viewer)
    html = client.get(f"/journeys/{journey.key}/").content.decode()
    assert "1 active now" in html
    assert "4 entered" in html
    assert "an award of the journey's first conversion" in html
    base = f"/contacts/?journey=onboarding&amp;version={version.number}&amp;step=wait"
    assert f'href="{base}&amp;reached=converted"' in html

    def listed(**params):
        response = client.get("/contacts/", {"journey": "onboarding", **params})
        assert response.status_code == 200
        return response.content.decode()

    page = listed(version=version.number, step="welcome")
    assert ">ann<" in page and ">bob<" not in page
    page = listed(step="welcome", reached="entered")
    assert all(f">{n}<" in page for n in ("ann", "bob", "cid", "dan"))
    page = listed(step="wait", reached="converted")
    assert ">cid<" in page and ">bob<" not in page and ">dan<" not in page


def test_a_draft_shows_no_numbers(client, editor):
    journey, _, _ = create_journey(definition=DEFINITION)
    client.force_login(editor)
    html = client.get(f"/journeys/{journey.key}/").content.decode()
    assert "step-counts" not in html
