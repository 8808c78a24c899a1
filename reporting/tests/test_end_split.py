"""The report of a running split offers "Publish vN alone" next to the verdict (Publishers
only); publishing one alone ends the split."""

import datetime

import pytest

from conversions.tests.factories import ConversionFactory
from journeys.models import JourneyVersion
from journeys.tests.factories import JourneyFactory, JourneyVersionFactory
from reporting.tests.factories import enroll
from reporting.tests.test_views import DEFINITION

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 6, 1, 8, 0, tzinfo=datetime.UTC)
H = datetime.timedelta(hours=1)


@pytest.fixture
def split():
    journey = JourneyFactory(key="split", status="live")
    paid = ConversionFactory(journey=journey, key="paid")
    live = JourneyVersion.State.LIVE
    v1 = JourneyVersionFactory(
        journey=journey, number=1, definition=DEFINITION, published_at=T0, state=live, traffic=50
    )
    v2 = JourneyVersionFactory(
        journey=journey, number=2, definition=DEFINITION, published_at=T0, split_with=v1,
        traffic=50, state=live,
    )  # fmt: skip
    v1.split_with = v2
    v1.save()
    for i in range(10):
        enroll(v1, T0 + H, awards=((paid, H),) if i < 3 else ())
        enroll(v2, T0 + H, awards=((paid, H),) if i < 5 else ())
    return journey


def test_a_publisher_ends_the_split_from_the_report(client, publisher, split):
    client.force_login(publisher)
    html = client.get("/journeys/split/report/").content.decode()
    assert 'action="/journeys/split/versions/2/publish/"' in html
    assert "Publish v2 alone" in html and "Publish v1 alone" in html

    client.post("/journeys/split/versions/2/publish/")

    states = dict(split.versions.values_list("number", "state"))
    assert states == {1: "retired", 2: "live"}
    assert "Publish v2 alone" not in client.get("/journeys/split/report/").content.decode()


def test_a_viewer_sees_the_verdict_without_the_buttons(client, viewer, split):
    client.force_login(viewer)
    html = client.get("/journeys/split/report/").content.decode()
    assert "Looking every day is safe" in html
    assert "alone" not in html
