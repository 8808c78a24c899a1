"""API keys, scopes, rate limits and hostile bodies, against the real routes."""

import hashlib
import io
import re
import uuid

import pytest
from django.core.management import CommandError, call_command, load_command_class
from django.db import OperationalError
from django.test import override_settings
from django.urls import reverse

from journeys import ratelimit
from journeys.actions.api_keys import create_api_key, revoke_api_key
from journeys.models import ApiKey, Contact, Event
from journeys.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

INGEST_PATHS = ("/api/v1/contacts/", "/api/v1/events")
# Open to both scopes (erasure requests may come from either side).
ANY_SCOPE_OPERATIONS = {("delete", "/api/v1/contacts/{external_id}")}


def _event(n, contact="c-1", **extra):
    return {"id": f"e-{n}", "contact": contact, "name": "clicked", **extra}


def _operations(client):
    schema = client.get("/api/v1/openapi.json").json()
    for path, item in schema["paths"].items():
        for method in item:
            yield method, path


def _concrete(path):
    return (
        path.replace("{external_id}", "someone").replace("{key}", "nope").replace("{number}", "1")
    )


def _call(api, method, path):
    if method in ("get", "delete"):
        return getattr(api, method)(path)
    return getattr(api, method)(path, {})


# --- Keys -------------------------------------------------------------------------------------


def test_only_a_sha256_of_the_key_is_stored():
    key, raw = create_api_key(name="crm", scope="ingest")
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert row["key_hash"] == hashlib.sha256(raw.encode()).hexdigest()
    assert not any(raw in str(value) for value in row.values())
    assert row["prefix"] == raw[:10] and len(raw) > 40


def test_admin_shows_a_new_key_once(client, superuser):
    client.force_login(superuser)
    response = client.post(
        reverse("admin:journeys_apikey_add"), {"name": "warehouse", "scope": "ingest"}, follow=True
    )
    shown = [str(m) for m in response.context["messages"]]
    raw = next(word for m in shown for word in m.split() if word.startswith("wp_"))
    key = ApiKey.objects.get(name="warehouse")
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    again = client.get(reverse("admin:journeys_apikey_change", args=[key.pk]))
    assert raw not in again.content.decode()


def test_revoked_key_gets_401(make_api_client):
    api = make_api_client("all")
    assert api.get("/api/v1/journeys").status_code == 200
    revoke_api_key(key=ApiKey.objects.get())
    response = api.get("/api/v1/journeys")
    assert response.status_code == 401
    assert response.json()["errors"][0]["loc"] == ["header", "Authorization"]
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("by", ["prefix", "short prefix", "name", "whole key"])
def test_revoke_api_key_command_revokes_by_prefix_or_name(client, by):
    key, raw = create_api_key(name="crm", scope="all")
    other, other_raw = create_api_key(name="warehouse", scope="all")
    ident = {"prefix": key.prefix + "…", "short prefix": raw[:7], "name": "crm", "whole key": raw}
    out = io.StringIO()
    call_command("revoke_api_key", ident[by], stdout=out)
    assert f"Revoked API key crm ({key.prefix}…)" in out.getvalue()
    headers = {"Authorization": f"Bearer {raw}"}
    assert client.get("/api/v1/journeys", headers=headers).status_code == 401
    other_headers = {"Authorization": f"Bearer {other_raw}"}
    assert client.get("/api/v1/journeys", headers=other_headers).status_code == 200
    # Twice is harmless: the first revocation time stays.
    first = ApiKey.objects.get(pk=key.pk).revoked_at
    out = io.StringIO()
    call_command("revoke_api_key", key.prefix, stdout=out)
    assert "already revoked" in out.getvalue()
    assert ApiKey.objects.get(pk=key.pk).revoked_at == first


def test_revoke_api_key_command_refuses_an_unknown_or_ambiguous_key():
    create_api_key(name="crm", scope="all")
    create_api_key(name="crm", scope="ingest")
    for ident, message in [
        ("nothing", "No API key has the prefix or name 'nothing'."),
        ("wp_zzzzzzzzzz", "No API key has the prefix or name"),
        ("crm", "'crm' names 2 keys"),
        ("  ", "Give the key's prefix"),
    ]:
        with pytest.raises(CommandError, match=re.escape(message)):
            call_command("revoke_api_key", ident, stdout=io.StringIO())
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()


def test_revoke_api_key_command_exits_non_zero_with_its_message(capsys):
    # As `manage.py revoke_api_key nothing` runs it, in this process so it sees the test data
    # (and without django.setup() again, which would point logging at capsys's stream).
    command = load_command_class("journeys", "revoke_api_key")
    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(["manage.py", "revoke_api_key", "nothing"])
    assert exited.value.code == 1
    assert "No API key has the prefix or name 'nothing'." in capsys.readouterr().err


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wp_not-a-key", "Basic abc"])
def test_missing_or_unknown_key_gets_401_json(client, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/journeys", headers=headers)
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"].startswith("A valid API key is required")


def test_last_use_is_recorded(make_api_client):
    api = make_api_client("ingest")
    key = ApiKey.objects.get()
    assert key.last_used_at is None
    api.put("/api/v1/contacts/ada", {"email": "ada@example.com"})
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_every_route_is_classified_by_scope(client, api):
    """A new route must be placed in a scope on purpose, or this test names it."""
    for method, path in _operations(client):
        if (method, path) in ANY_SCOPE_OPERATIONS:
            continue
        response = _call(api, method, _concrete(path))
        assert response.status_code != 401, (method, path)


def test_wrong_scope_gets_403_on_every_route(client, make_api_client):
    ingest = make_api_client("ingest")
    manage = make_api_client("manage")
    checked = 0
    for method, path in _operations(client):
        concrete = _concrete(path)
        if (method, path) in ANY_SCOPE_OPERATIONS:
            for api in (ingest, manage):
                assert _call(api, method, concrete).status_code not in (401, 403), (method, path)
            continue
        is_ingest = concrete.startswith(INGEST_PATHS)
        wrong = manage if is_ingest else ingest
        response = _call(wrong, method, concrete)
        assert response.status_code == 403, (method, path, response.content)
        error = response.json()["errors"][0]
        assert "scope" in error["message"], error
        right = ingest if is_ingest else manage
        assert _call(right, method, concrete).status_code not in (401, 403), (method, path)
        checked += 1
    assert checked >= 10


# --- Rate limits ------------------------------------------------------------------------------


@override_settings(INGEST_RATE_LIMIT="5/60s")
def test_rate_limit_counts_events_not_requests(make_api_client):
    api = make_api_client("ingest")
    first = api.post("/api/v1/events", {"events": [_event(i) for i in range(3)]})
    assert first.status_code == 202
    refused = api.post("/api/v1/events", {"events": [_event(i) for i in range(3, 6)]})
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["message"].startswith("Rate limit exceeded")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert Event.objects.count() == 3
    # The refused batch took nothing from the budget: two more still fit.
    assert api.post("/api/v1/events", {"events": [_event(i) for i in (6, 7)]}).status_code == 202


@override_settings(INGEST_RATE_LIMIT="2/60s")
def test_rate_limit_is_per_key(make_api_client):
    first, second = make_api_client("ingest"), make_api_client("ingest")
    batch = {"events": [_event(1), _event(2)]}
    assert first.post("/api/v1/events", batch).status_code == 202
    assert first.post("/api/v1/events", {"events": [_event(3)]}).status_code == 429
    assert second.post("/api/v1/events", {"events": [_event(4)]}).status_code == 202


@override_settings(CONTACTS_READ_RATE_LIMIT="3/60s", INGEST_RATE_LIMIT="100/60s")
def test_contact_reads_are_rate_limited_per_key_unknown_ids_included(make_api_client):
    ContactFactory(external_id="ann")
    first, second = make_api_client("ingest"), make_api_client("ingest")
    assert first.get("/api/v1/contacts/ann").status_code == 200
    assert first.get("/api/v1/contacts/nobody").status_code == 404
    assert first.get("/api/v1/contacts/ann").status_code == 200
    refused = first.get("/api/v1/contacts/ann")
    (error,) = _assert_error_shape(refused, 429)
    assert error["message"].startswith("Rate limit exceeded: 3 contact reads every 60 s")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert second.get("/api/v1/contacts/ann").status_code == 200
    # A budget of its own: ingestion and erasure are not refused by it.
    assert first.post("/api/v1/events", {"events": [_event(1, "ann")]}).status_code == 202
    assert first.delete("/api/v1/contacts/ann").status_code == 204


@override_settings(CONTACTS_ERASE_RATE_LIMIT="2/60s")
def test_contact_erasures_are_rate_limited_per_key(make_api_client):
    for external_id in ("a", "b", "c"):
        ContactFactory(external_id=external_id, email=f"{external_id}@example.com")
    manage = make_api_client("manage")
    assert manage.delete("/api/v1/contacts/a").status_code == 204
    assert manage.delete("/api/v1/contacts/nobody").status_code == 404
    refused = manage.delete("/api/v1/contacts/b")
    (error,) = _assert_error_shape(refused, 429)
    assert "contact erasures" in error["message"]
    assert refused["Retry-After"].isdigit()
    assert Contact.objects.get(external_id="b").email == "b@example.com"
    assert make_api_client("ingest").delete("/api/v1/contacts/b").status_code == 204


def test_rate_limit_window_resets():
    limit = ratelimit.Limit(events=10, seconds=60)
    bucket = f"window-test-{uuid.uuid4()}"
    ratelimit.spend(bucket=bucket, cost=10, limit=limit, now=120.0)
    with pytest.raises(ratelimit.RateLimited) as refused:
        ratelimit.spend(bucket=bucket, cost=1, limit=limit, now=150.0)
    assert refused.value.retry_after == 30
    ratelimit.spend(bucket=bucket, cost=10, limit=limit, now=180.0)


def test_rate_limit_setting_is_validated():
    assert ratelimit.parse_limit("100000/60s") == ratelimit.Limit(100000, 60)
    assert ratelimit.parse_limit("50/1") == ratelimit.Limit(50, 1)
    for bad in ("", "fast", "10/0s", "-1/60s"):
        with pytest.raises(ValueError):
            ratelimit.parse_limit(bad)


# --- Hostile bodies ---------------------------------------------------------------------------


def _assert_error_shape(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"errors"} and body["errors"]
    for error in body["errors"]:
        assert set(error) == {"loc", "message"}
        assert isinstance(error["loc"], list) and error["message"]
    return body["errors"]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000)
@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/journeys"])
def test_oversized_body_is_413(api, path):
    events = [_event(i, properties={"pad": "x" * 100}) for i in range(200)]
    errors = _assert_error_shape(api.post(path, {"events": events}), 413)
    assert errors[0]["loc"] == ["body"]


def test_batch_over_1000_events_is_refused(api):
    response = api.post("/api/v1/events", {"events": [_event(i) for i in range(1001)]})
    errors = _assert_error_shape(response, 400)
    assert errors[0]["loc"] == ["events"]
    assert Event.objects.count() == 0


def _nested(depth):
    value = "bottom"
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("depth", [40, 900])
def test_deeply_nested_event_properties_are_refused(api, depth):
    response = api.post("/api/v1/events", {"events": [_event(1, properties=_nested(depth))]})
    errors = _assert_error_shape(response, 400)
    assert errors == [{"loc": ["body"], "message": errors[0]["message"]}]
    assert "nested too deeply" in errors[0]["message"]
    assert Event.objects.count() == 0


def test_moderately_nested_properties_are_accepted(api):
    response = api.post("/api/v1/events", {"events": [_event(1, properties=_nested(10))]})
    assert response.status_code == 202


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/journeys", "/api/v1/contacts/ada"])
def test_pathologically_deep_json_is_a_400_not_a_crash(api, path):
    body = "[" * 100_000 + "]" * 100_000
    call = api.put if path.startswith("/api/v1/contacts") else api.post
    errors = _assert_error_shape(call(path, body), 400)
    assert "nested too deeply" in errors[0]["message"]


def test_deep_definition_is_refused_before_parsing(api):
    definition = {"key": "deep", "name": "Deep", "description": _nested(60)}
    errors = _assert_error_shape(api.post("/api/v1/journeys", definition), 400)
    assert errors[0]["loc"] == ["body"]


@pytest.mark.parametrize("raw", ['{"events": [NaN]}', '{"events": Infinity}', "\xff\xfe", "{"])
def test_not_json_is_a_400(api, raw):
    errors = _assert_error_shape(api.post("/api/v1/events", raw.encode("latin-1")), 400)
    assert errors[0]["loc"] == ["body"]


@pytest.mark.parametrize(
    ("path", "raw", "loc"),
    [
        ("/api/v1/events", b'{"events": [{"id": "e1", "contact": "c", "name": "x", '
         b'"properties": {"v": 1e999}}]}', ["events", 0, "properties", "v"]),
        ("/api/v1/contacts/ann", b'{"attributes": {"v": -1e999}}', ["attributes", "v"]),
    ],
)  # fmt: skip
def test_numbers_too_large_to_store_are_a_400(api, path, raw, loc):
    call = api.put if path.startswith("/api/v1/contacts") else api.post
    errors = _assert_error_shape(call(path, raw), 400)
    assert errors[0]["loc"] == loc
    assert "1e999 is too large" in errors[0]["message"]


def test_database_outage_is_a_503_json_with_retry_after(api, monkeypatch):
    def down(**kwargs):
        raise OperationalError("connection to server was lost")

    monkeypatch.setattr("journeys.api.ingest_events", down)
    ContactFactory(external_id="c-1")
    response = api.post("/api/v1/events", {"events": [_event(1)]})
    errors = _assert_error_shape(response, 503)
    assert "database is unavailable" in errors[0]["message"]
    assert response["Retry-After"] == "5"


def test_erase_route_answers_404_for_an_unknown_contact(api):
    errors = _assert_error_shape(api.delete("/api/v1/contacts/nobody"), 404)
    assert errors[0]["loc"] == ["external_id"]


def test_error_bodies_are_json_even_for_unknown_api_paths(api):
    errors = _assert_error_shape(api.get("/api/v1/no-such-thing"), 404)
    assert errors[0]["message"] == "No API route at /api/v1/no-such-thing."


def test_wrong_method_is_a_405_in_the_error_shape(api):
    response = api.client.patch("/api/v1/events", headers=api.headers)
    errors = _assert_error_shape(response, 405)
    assert "POST" in errors[0]["message"] and "POST" in response["Allow"]


@override_settings(ALLOWED_HOSTS=["waypoint.example"])
def test_bad_host_on_the_api_is_a_400_in_the_error_shape(api):
    _assert_error_shape(api.get("/api/v1/journeys", HTTP_HOST="evil.example"), 400)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"events": [{"id": "e-1", "contact": "c", "name": "x", "properties": {"a": "\\u0000"}}]}',
        b'{"events": [{"id": "e-1", "contact": "c\\ud800", "name": "x"}]}',
        b'{"events": [{"id": "e-1", "contact": "c", "name": "x", "properties": {"\\udfff": 1}}]}',
    ],
)
def test_strings_the_database_cannot_store_are_a_400(api, raw):
    errors = _assert_error_shape(api.post("/api/v1/events", raw), 400)
    assert errors[0]["loc"] == ["body"] and "NUL" in errors[0]["message"]
    assert Event.objects.count() == 0


@pytest.mark.parametrize("path", ["/api/v1/contacts/a%00b", "/api/v1/journeys?x=%00"])
def test_nul_in_the_url_is_a_400(api, path):
    errors = _assert_error_shape(api.get(path), 400)
    assert "NUL" in errors[0]["message"]


def test_nul_in_a_page_url_is_a_400(client, viewer):
    client.force_login(viewer)
    assert client.get("/contacts/a%00b/").status_code == 400


@pytest.mark.parametrize(
    ("timestamp", "status"),
    [("2026-01-02T03:04:05+20:02", 202), ("0001-01-01T00:00:00+05:00", 400)],
)
def test_unusual_timestamp_offsets_are_stored_or_refused_cleanly(api, timestamp, status):
    response = api.post("/api/v1/events", {"events": [_event(1, timestamp=timestamp)]})
    assert response.status_code == status, response.content
    if status == 400:
        assert response.json()["errors"][0]["loc"] == ["events", 0, "timestamp"]


def test_rate_limit_lets_requests_through_when_the_cache_is_down(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ConnectionError("cache unreachable")

    monkeypatch.setattr(ratelimit.cache, "add", broken)
    limit = ratelimit.Limit(events=1, seconds=60)
    ratelimit.spend(bucket=f"down-{uuid.uuid4()}", cost=5, limit=limit)
    assert "Rate-limit cache unavailable" in caplog.text


@pytest.fixture
def private_redis_cache(tmp_path):
    """A Redis of the test's own as the cache (never the shared one)."""
    import shutil
    import socket
    import subprocess
    import time

    from django.core.cache import caches

    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "yes", "--dir", str(tmp_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/0"
    with override_settings(
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
        }
    ):
        yield caches["default"]
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


def test_rate_limit_on_redis_is_exact_under_concurrency(private_redis_cache):
    from concurrent.futures import ThreadPoolExecutor

    limit = ratelimit.Limit(events=500, seconds=60)
    bucket = f"race-{uuid.uuid4()}"

    def attempt(_):
        try:
            ratelimit.spend(bucket=bucket, cost=1, limit=limit, now=1_000.0)
            return True
        except ratelimit.RateLimited:
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(800)))
    assert results.count(True) == 500
    # The counter lives in Redis (window 16 = 1,000 s // 60 s), not in a local cache.
    assert private_redis_cache.get(f"ratelimit:{bucket}:60:16") == 500
