"""`/api/v1/webhooks` (contract 6.3): create with a secret shown once, read, list, delete,
and every bad field named."""

import pytest

from webhooks.models import WebhookEndpoint

EVENTS = ["conversion.awarded", "goal.achieved", "enrollment.exited", "message.failed"]
# A public address written as an address, so no DNS is needed to check it.
PUBLIC_URL = "https://93.184.215.14/hooks/waypoint"

pytestmark = pytest.mark.django_db


def test_create_answers_201_with_id_and_a_secret_shown_once(api):
    response = api.post("/api/v1/webhooks", {"url": PUBLIC_URL, "events": EVENTS})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["url"] == PUBLIC_URL and body["events"] == EVENTS and body["enabled"]
    endpoint_id = body["id"]

    one = api.get(f"/api/v1/webhooks/{endpoint_id}")
    assert one.status_code == 200 and "secret" not in one.json()
    assert one.json()["id"] == endpoint_id
    listed = api.get("/api/v1/webhooks")
    assert [row["id"] for row in listed.json()] == [endpoint_id]
    assert "secret" not in listed.json()[0]
    assert body["secret"] not in (one.content + listed.content).decode()


def test_delete_removes_the_endpoint_and_a_second_delete_is_404(api):
    endpoint_id = api.post("/api/v1/webhooks", {"url": PUBLIC_URL, "events": EVENTS}).json()["id"]
    assert api.delete(f"/api/v1/webhooks/{endpoint_id}").status_code == 204
    assert not WebhookEndpoint.objects.exists()
    missing = api.delete(f"/api/v1/webhooks/{endpoint_id}")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["loc"] == ["id"]
    assert api.get(f"/api/v1/webhooks/{endpoint_id}").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hook",  # not https
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",  # a name that resolves to a loopback address
        "https://192.168.0.10/hook",
        "ftp://93.184.215.14/hook",
        "https://no-such-host.invalid/hook",
        "not a url",
    ],
)
def test_a_url_that_is_not_https_or_not_public_is_400_naming_the_url(api, url):
    response = api.post("/api/v1/webhooks", {"url": url, "events": EVENTS})
    assert response.status_code == 400
    assert [error["loc"] for error in response.json()["errors"]] == [["body", "url"]]
    assert not WebhookEndpoint.objects.exists()


def test_private_addresses_are_accepted_when_the_setting_allows_them(api, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    response = api.post("/api/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "events": EVENTS})
    assert response.status_code == 201


def test_unknown_event_names_are_400_naming_each(api):
    response = api.post(
        "/api/v1/webhooks",
        {"url": PUBLIC_URL, "events": ["conversion.awarded", "conversion.created", "webhook.test"]},
    )
    assert response.status_code == 400
    assert [error["loc"] for error in response.json()["errors"]] == [
        ["body", "events", 1],
        ["body", "events", 2],
    ]


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({"url": PUBLIC_URL, "events": []}, [["body", "events"]]),
        ({"url": PUBLIC_URL, "events": "conversion.awarded"}, [["body", "events"]]),
        ({"events": EVENTS}, [["body", "url"]]),
        ({"url": 7, "events": EVENTS}, [["body", "url"]]),
        ([], [["body"]]),
        ("{not json", None),
    ],
)
def test_a_malformed_body_is_400_naming_the_field(api, body, locs):
    response = api.post("/api/v1/webhooks", body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    if locs is not None:
        assert [error["loc"] for error in errors] == locs
    else:
        assert errors and errors[0]["loc"][0] == "body"


def test_webhooks_need_a_manage_key(make_api_client):
    ingest = make_api_client("ingest")
    response = ingest.post("/api/v1/webhooks", {"url": PUBLIC_URL, "events": EVENTS})
    assert response.status_code == 403
    assert ingest.get("/api/v1/webhooks").status_code == 403
    manage = make_api_client("manage")
    assert manage.post("/api/v1/webhooks", {"url": PUBLIC_URL, "events": EVENTS}).status_code == 201
