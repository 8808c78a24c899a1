"""The Segment-compatible endpoint through Django's test client (docs/contract.md §6.3);
tests/test_segment_client.py drives it with the official SDK."""

import base64
import datetime
import gzip
import json

import pytest
from django.utils import timezone

from journeys.actions.api_keys import create_api_key
from journeys.models import ApiKey, Contact, Event
from journeys.ratelimit import spend_ingest

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(db):
    return create_api_key(name="segment", scope="ingest")[1]


def basic(raw_key: str, password: str = "") -> dict:
    token = base64.b64encode(f"{raw_key}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def post(client, path, body, key, *, encoding=None, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    headers = basic(key) if key else {}
    if encoding:
        headers["Content-Encoding"] = encoding
    return client.post(
        f"/api/segment{path}", data=data, content_type="application/json", headers=headers
    )


def track(message_id="m1", user="ann", event="Order Completed", **extra):
    return {
        "type": "track",
        "messageId": message_id,
        "userId": user,
        "event": event,
        "properties": {"total": 20},
        **extra,
    }


def test_batch_stores_each_message_once_as_an_event(client, key):
    body = {"batch": [track("m1"), track("m2", event="Signed Up")], "writeKey": key}
    response = post(client, "/v1/batch", body, key)
    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}
    events = {event.event_id: event for event in Event.objects.select_related("contact")}
    assert set(events) == {"m1", "m2"}
    assert events["m1"].name == "Order Completed"
    assert events["m1"].properties == {"total": 20}
    assert events["m1"].contact.external_id == "ann"
    assert events["m1"].source == Event.Source.SEGMENT

    # messageId is the idempotency key: the same batch again stores nothing more.
    assert post(client, "/v1/batch", body, key).status_code == 200
    assert Event.objects.count() == 2


def test_track_and_identify_endpoints(client, key):
    assert post(client, "/v1/track", track("t1"), key).json() == {"success": True}
    response = post(
        client,
        "/v1/identify",
        {
            "messageId": "i1",
            "userId": "ann",
            "traits": {"email": "ann@example.com", "plan": "pro"},
        },
        key,
    )
    assert response.status_code == 200
    ann = Contact.objects.get(external_id="ann")
    assert ann.email == "ann@example.com"
    assert ann.attributes == {"plan": "pro"}
    assert Event.objects.get(event_id="i1").name == "identify"


def test_a_replayed_old_identify_does_not_undo_newer_traits(client, key):
    old = {"messageId": "i1", "userId": "ann", "traits": {"plan": "free"}}
    post(client, "/v1/identify", old, key)
    post(
        client, "/v1/identify", {"messageId": "i2", "userId": "ann", "traits": {"plan": "pro"}}, key
    )
    post(client, "/v1/identify", old, key)
    assert Contact.objects.get(external_id="ann").attributes == {"plan": "pro"}


@pytest.mark.parametrize(
    ("message", "name", "properties"),
    [
        (
            {"type": "page", "name": "Pricing", "properties": {"url": "/p"}},
            "page",
            {"url": "/p", "name": "Pricing"},
        ),
        ({"type": "screen", "name": "Home"}, "screen", {"name": "Home"}),
        (
            {"type": "group", "groupId": "acme", "traits": {"size": 5}},
            "group",
            {"groupId": "acme", "traits": {"size": 5}},
        ),
        ({"type": "alias", "previousId": "old-ann"}, "alias", {"previousId": "old-ann"}),
    ],
)
def test_page_screen_group_and_alias_are_stored_as_events(client, key, message, name, properties):
    body = {"batch": [{**message, "messageId": "x1", "userId": "ann"}]}
    assert post(client, "/v1/batch", body, key).status_code == 200
    event = Event.objects.get(event_id="x1")
    assert (event.name, event.properties) == (name, properties)


def test_alias_merges_no_contacts(client, key):
    post(client, "/v1/track", track("t1", user="old-ann"), key)
    post(client, "/v1/alias", {"messageId": "a1", "userId": "ann", "previousId": "old-ann"}, key)
    assert set(Contact.objects.values_list("external_id", flat=True)) == {"old-ann", "ann"}
    assert Event.objects.get(event_id="t1").contact.external_id == "old-ann"


def test_anonymous_messages_go_to_an_anonymous_contact(client, key):
    message = {**track("t1"), "userId": None, "anonymousId": "a-123"}
    assert post(client, "/v1/batch", {"batch": [message]}, key).status_code == 200
    assert Event.objects.get(event_id="t1").contact.external_id == "anon:a-123"


def test_a_message_with_neither_user_nor_anonymous_id_is_refused(client, key):
    message = {**track("t1"), "userId": None}
    response = post(client, "/v1/batch", {"batch": [track("t0"), message]}, key)
    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["batch", 1, "userId"]
    assert not Event.objects.exists()


def test_clock_skew_is_corrected_from_sent_at(client, key):
    now = timezone.now().replace(microsecond=0)
    # The device's clock runs an hour behind: it stamped the event 10 minutes before it
    # sent the batch, by its own clock.
    device_now = now - datetime.timedelta(hours=1)
    message = track("t1", timestamp=(device_now - datetime.timedelta(minutes=10)).isoformat())
    body = {"batch": [message], "sentAt": device_now.isoformat()}
    post(client, "/v1/batch", body, key)
    stored = Event.objects.get(event_id="t1")
    expected = stored.received_at - datetime.timedelta(minutes=10)
    assert abs(stored.timestamp - expected) < datetime.timedelta(seconds=1)


def test_without_sent_at_the_timestamp_is_kept(client, key):
    when = timezone.now().replace(microsecond=0) - datetime.timedelta(days=2)
    post(client, "/v1/batch", {"batch": [track("t1", timestamp=when.isoformat())]}, key)
    assert Event.objects.get(event_id="t1").timestamp == when


@pytest.mark.parametrize(
    ("message", "loc"),
    [
        (track("t1", timestamp="1970-01-01T00:00:00Z"), ["batch", 0, "timestamp"]),
        (track("t1", timestamp="3000-01-01T00:00:00Z"), ["batch", 0, "timestamp"]),
        (track("t1", timestamp="yesterday"), ["batch", 0, "timestamp"]),
        (track("x" * 101), ["batch", 0, "messageId"]),
        (track("t1", event=None), ["batch", 0, "event"]),
        (track("t1", event="e" * 101), ["batch", 0, "event"]),
        (track("t1", user="u" * 256), ["batch", 0, "userId"]),
        ({**track("t1"), "type": "purchase"}, ["batch", 0, "type"]),
        ({**track("t1"), "properties": {"n": 1e308 * 10}}, None),
        (
            {"type": "identify", "messageId": "i1", "userId": "a", "traits": {"email": "nope"}},
            ["batch", 0, "traits", "email"],
        ),
    ],
)
def test_bad_messages_are_refused_whole_naming_the_field(client, key, message, loc):
    raw = json.dumps({"batch": [track("good"), message]}).replace("Infinity", "1e999")
    response = post(client, "/v1/batch", None, key, raw=raw.encode())
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    if loc is not None:
        loc[1] = 1
        assert errors[0]["loc"] == loc, errors
    else:
        assert errors[0]["loc"] == ["batch", 1, "properties", "n"], errors
    assert not Event.objects.exists()


def test_a_batch_over_the_limit_is_refused(client, key, settings):
    body = {"batch": [track(f"m{i}") for i in range(settings.API_MAX_EVENTS_PER_BATCH + 1)]}
    response = post(client, "/v1/batch", body, key)
    assert response.status_code in (400, 413)
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    ("raw", "status"), [(b"", 400), (b"[1]", 400), (b"{bad", 400), (b'{"batch": []}', 400)]
)
def test_bodies_that_are_not_a_batch(client, key, raw, status):
    response = post(client, "/v1/batch", None, key, raw=raw)
    assert response.status_code == status
    assert response.json()["errors"][0]["loc"]


def test_gzip_bodies_are_read(client, key):
    raw = gzip.compress(json.dumps({"batch": [track("g1")]}).encode())
    assert post(client, "/v1/batch", None, key, raw=raw, encoding="gzip").status_code == 200
    assert Event.objects.filter(event_id="g1").exists()


def test_a_zip_bomb_is_refused_without_inflating_it(client, key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 512 * 1024
    inflated = b'{"batch": [' + b" " * (50 * 1024 * 1024) + b"]}"
    raw = gzip.compress(inflated, compresslevel=9)
    assert len(raw) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = post(client, "/v1/batch", None, key, raw=raw, encoding="gzip")
    assert response.status_code == 413
    assert response.json()["errors"][0]["loc"] == ["body"]


@pytest.mark.parametrize(
    ("raw", "encoding", "status"),
    [
        (b"not gzip", "gzip", 400),
        (gzip.compress(b'{"batch": [')[:-8], "gzip", 400),
        (b"{}", "br", 415),
    ],
)
def test_bad_encodings(client, key, raw, encoding, status):
    response = post(client, "/v1/batch", None, key, raw=raw, encoding=encoding)
    assert response.status_code == status
    assert response.json()["errors"]


def test_a_body_over_the_size_limit_gets_413(client, key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"batch": [track("m1", properties={"pad": "x" * 2000})]}
    assert post(client, "/v1/batch", body, key).status_code == 413


def test_authentication(client, key, make_api_client):
    body = {"batch": [track("m1")]}
    response = post(client, "/v1/batch", body, None)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")
    assert response.json()["errors"][0]["loc"] == ["header", "Authorization"]
    assert post(client, "/v1/batch", body, "wrong-key").status_code == 401
    # The body's writeKey alone is not enough: the SDKs all send the header.
    assert post(client, "/v1/batch", {**body, "writeKey": key}, None).status_code == 401
    _, manage = create_api_key(name="m", scope="manage")
    assert post(client, "/v1/batch", body, manage).status_code == 403
    # Bearer keys are the /api/v1/ way; here Basic is.
    response = client.post(
        "/api/segment/v1/batch",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 401
    assert not Event.objects.exists()


def test_rate_limited_in_events_like_the_events_api(client, key, settings):
    settings.INGEST_RATE_LIMIT = "3/60s"
    api_key = ApiKey.objects.get()
    spend_ingest(api_key=api_key, events=2)
    response = post(client, "/v1/batch", {"batch": [track("a"), track("b")]}, key)
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert not Event.objects.exists()
