"""The messages panel with delivery feedback (issue 13): what the provider reported per
message step, and conversions credited to the last message sent, opened or clicked. The
feedback is recorded through journeys.actions.delivery, the webhooks' own code path."""

import datetime
from decimal import Decimal

import pytest
from anymail.signals import AnymailTrackingEvent

from conversions.tests.factories import ConversionFactory
from journeys.actions.delivery import record_delivery_events
from journeys.models import OutboxMessage
from journeys.tests.factories import JourneyFactory, JourneyVersionFactory
from reporting import selectors
from reporting.tests.factories import enroll
from reporting.tests.test_views import tables_of

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
H = datetime.timedelta(hours=1)
D = datetime.timedelta(days=1)


def feedback(enrollment, step, *events):
    message = OutboxMessage.objects.get(enrollment=enrollment, step_key=step)
    for n, (event_type, at) in enumerate(events):
        event = AnymailTrackingEvent(
            event_type=event_type,
            timestamp=T0 + at,
            event_id=f"{message.pk}-{n}",
            metadata={"outbox_id": str(message.pk)},
        )
        assert record_delivery_events(events=[event], provider="Test", now=T0 + at)


@pytest.fixture
def journey():
    journey = JourneyFactory(key="welcome-series")
    paid = ConversionFactory(
        journey=journey, key="paid", window=datetime.timedelta(days=2), value=Decimal("10")
    )
    version = JourneyVersionFactory(
        journey=journey,
        number=1,
        definition={
            "settings": {"reentry": "once", "holdout_percent": 0},
            "triggers": [],
            "exit_when": [],
            "steps": [
                {"key": "welcome", "type": "send_email"},
                {"key": "later", "type": "send_email"},
            ],
        },
    )
    sent = {"welcome": datetime.timedelta(0), "later": D}
    # a: opened and clicked the welcome, got the later one delivered, converted after both.
    a = enroll(version, T0, path=("welcome", "later"), sent=sent, awards=((paid, D + H),))
    feedback(a, "welcome", ("delivered", H), ("clicked", 3 * H), ("opened", 2 * H))
    feedback(a, "later", ("delivered", D + H))
    # b: the welcome bounced; opened the later one, unsubscribed, converted for 5.
    b = enroll(version, T0, path=("welcome", "later"), sent=sent, awards=((paid, D + 3 * H, 5),))
    feedback(b, "welcome", ("bounced", H))
    feedback(b, "later", ("opened", D + 2 * H), ("unsubscribed", D + 2 * H))
    # c: clicked the welcome, converted outside the 2-day window of every touch.
    c = enroll(version, T0, path=("welcome",), awards=((paid, 4 * D),))
    feedback(c, "welcome", ("clicked", H))
    return journey


def figures(journey, attribution=None):
    ctx = selectors.report_context(journey=journey, attribution=attribution)
    return {
        m.step: (m.sent, m.delivered, m.opened, m.clicked, m.bounced, m.unsubscribed,
                 m.conversions, m.value)
        for m in selectors.message_attribution(ctx)
    }  # fmt: skip


@pytest.mark.parametrize(
    ("attribution", "welcome", "later"),
    [
        (None, (0, 0.0), (2, 15.0)),  # last sent: the later email came after the welcome
        ("last_sent", (0, 0.0), (2, 15.0)),
        ("last_opened", (1, 10.0), (1, 5.0)),  # a opened only the welcome, b the later one
        ("last_clicked", (1, 10.0), (0, 0.0)),  # c clicked too, but converted too late
    ],
)
def test_feedback_figures_and_each_attribution(journey, attribution, welcome, later):
    got = figures(journey, attribution)
    # sent, delivered (or opened, or clicked), opened (or clicked), clicked, bounced,
    # unsubscribed; then the credited conversions and their value.
    assert got["welcome"] == (3, 2, 2, 2, 1, 0, *welcome)
    assert got["later"] == (2, 2, 1, 0, 0, 1, *later)


def test_an_unknown_attribution_is_refused_naming_the_field(journey):
    with pytest.raises(selectors.ReportInputError) as error:
        selectors.report_context(journey=journey, attribution="first_touch")
    assert error.value.field == "attribution"


def test_the_panel_takes_the_attribution_filter_and_refuses_a_bad_one(client, viewer, journey):
    client.force_login(viewer)
    url = "/journeys/welcome-series/report/panels/messages/"
    response = client.get(url + "?attribution=last_clicked")
    assert response.status_code == 200
    html = response.content.decode()
    assert "credited to the last message clicked" in html
    rows = tables_of(html)["Messages"]
    assert rows[0][3:11] == [
        "Sent", "Delivered", "Opened", "Clicked", "Bounced", "Unsubscribed",
        "Conversions attributed", "Value attributed",
    ]  # fmt: skip
    assert rows[1][:11] == ["welcome", "email", "v1", "3", "2", "2", "2", "1", "0", "1", "10.00"]
    page = client.get("/journeys/welcome-series/report/?attribution=last_opened").content.decode()
    assert '<option value="last_opened" selected>' in page
    bad = client.get(url + "?attribution=first_touch", HTTP_ACCEPT="application/json")
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["loc"] == ["query", "attribution"]
