"""The official Segment SDK (segment-analytics-python), unchanged, pointed at a live server's
`/api/segment` (docs/contract.md §6.3): plain and gzip bodies, and its retries.

rudder-sdk-python is not installed on this project's machines, so it is not tested here.
"""

import datetime

import pytest
from segment.analytics import request as segment_request
from segment.analytics.client import Client

from journeys import segment
from journeys.actions.api_keys import create_api_key
from journeys.models import Contact, Event
from journeys.ratelimit import Limit, RateLimited

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def sdk_connections_closed():
    """The SDK posts through one module-level keep-alive session: the live server's thread
    serving that connection kept its database connection open until the process ended, and
    the test database could not be dropped. Closing the pooled connections ends both."""
    yield
    segment_request._session.close()


@pytest.fixture
def write_key(transactional_db):
    return create_api_key(name="segment-sdk", scope="ingest")[1]


def sdk(live_server, write_key, errors, **options) -> Client:
    options = {"sync_mode": True, "max_retries": 0, **options}
    return Client(
        write_key=write_key,
        host=f"{live_server.url}/api/segment",
        on_error=lambda error, batch: errors.append(error),
        **options,
    )


@pytest.mark.parametrize("gzip", [False, True])
def test_the_official_client_tracks_and_identifies(live_server, write_key, gzip):
    errors = []
    client = sdk(live_server, write_key, errors, gzip=gzip)
    client.identify("ann", {"email": "ann@example.com", "plan": "pro"}, message_id="i1")
    client.track("ann", "Order Completed", {"total": 20}, message_id="t1")
    client.page("ann", "Docs", "Pricing", {"url": "/pricing"}, message_id="p1")
    client.screen("ann", "App", "Home", message_id="s1")
    client.group("ann", "acme", {"size": 5}, message_id="g1")
    client.alias("ann", "ann-previous", message_id="a1")
    client.track(anonymous_id="visitor-7", event="Viewed", message_id="t2")

    assert errors == []
    events = {event.event_id: event for event in Event.objects.select_related("contact")}
    assert set(events) == {"i1", "t1", "p1", "s1", "g1", "a1", "t2"}
    assert events["t1"].name == "Order Completed"
    assert events["t1"].properties == {"total": 20}
    assert events["t2"].contact.external_id == "anon:visitor-7"
    assert {event.source for event in events.values()} == {Event.Source.SEGMENT}
    ann = Contact.objects.get(external_id="ann")
    assert (ann.email, ann.attributes) == ("ann@example.com", {"plan": "pro"})
    # The SDK stamps the event on its clock and sends sentAt: the stored time is close to
    # when it happened.
    assert abs(events["t1"].timestamp - events["t1"].received_at) < datetime.timedelta(seconds=5)


def test_a_bad_message_reaches_the_clients_error_handler(live_server, write_key):
    errors = []
    client = sdk(live_server, write_key, errors)
    with pytest.raises(Exception) as raised:
        client.track("ann", "x" * 101, message_id="t1")
    assert getattr(raised.value, "status", None) == 400
    assert not Event.objects.exists()


def test_the_client_retries_a_429_and_the_event_is_stored_once(live_server, write_key, monkeypatch):
    # The live server runs in this process: the first request finds the key's budget spent.
    calls = []
    spend = segment.spend_ingest

    def spend_once_refused(**kwargs):
        calls.append(kwargs["events"])
        if len(calls) == 1:
            raise RateLimited(limit=Limit(events=1, seconds=1), retry_after=1)
        spend(**kwargs)

    monkeypatch.setattr(segment, "spend_ingest", spend_once_refused)
    errors = []
    # Retries happen in the SDK's background consumer (sync mode posts once).
    client = sdk(live_server, write_key, errors, sync_mode=False, max_retries=3, gzip=True)
    client.track("ann", "Order Completed", message_id="t1")
    client.flush()
    client.join()

    assert errors == []
    assert len(calls) == 2
    assert Event.objects.filter(event_id="t1").count() == 1
