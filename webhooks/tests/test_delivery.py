"""Webhooks out end to end: facts the engine stores become signed deliveries to a real
receiver, retried with back-off, an endpoint disabled after a day of failures, and the SSRF
guard applied when sending."""

import datetime
import socket

import pytest
import time_machine
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from journeys.actions.events import ingest_events
from journeys.actions.sweep import run_due
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey
from webhooks.actions import create_endpoint, deliver_due_webhooks, send_test_event
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.outbox import enqueue_webhook_events
from webhooks.transport import Refused, post

pytestmark = pytest.mark.django_db
T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
ALL = ["conversion.awarded", "goal.achieved", "enrollment.exited", "message.failed"]


def _endpoint(url, events=ALL):
    return create_endpoint(url=url, events=events, now=timezone.now())


def _closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


def _verified(receiver, secret):
    """Each request's body as the receiver's own verification returns it."""
    hook = Webhook(secret)
    return [hook.verify(request["body"], request["headers"]) for request in receiver.requests]


def test_the_engines_facts_reach_the_receiver_signed_by_the_standard(private_allowed, receiver):
    endpoint = _endpoint(receiver.url)
    live_journey(
        [
            {"key": "check", "type": "evaluate_goal", "goal": "made", "achieved": "buy"},
            {"key": "buy", "type": "convert", "conversion": "paid", "next": "mail"},
            # A template that cannot render for this contact: the message fails, with why.
            {
                "key": "mail",
                "type": "send_email",
                "subject": "Hi",
                "body": "{{ contact.email | divided_by: 0 }}",
                "next": "out",
            },
            {"key": "out", "type": "exit"},
        ],
        key="onboarding",
        goals=[{"key": "made", "name": "Made", "criteria": {"event": "project_created"}}],
        conversions=[{"key": "paid", "name": "Paid"}],
    )
    ContactFactory(external_id="ada", email="ada@example.com")
    now = timezone.now()
    ingest_events(
        events=[
            {"id": "p1", "contact": "ada", "name": "project_created", "timestamp": now.isoformat()},
            {"id": "s1", "contact": "ada", "name": "signed_up", "timestamp": now.isoformat()},
        ]
    )
    run_due()

    received = _verified(receiver, endpoint.secret)
    by_type = {body["type"]: body["data"] for body in received}
    assert set(by_type) == set(ALL), by_type
    assert by_type["conversion.awarded"]["contact"] == {"external_id": "ada"}
    assert by_type["conversion.awarded"]["journey"] == "onboarding"
    assert by_type["conversion.awarded"]["key"] == "paid"
    assert by_type["goal.achieved"]["key"] == "made"
    assert by_type["enrollment.exited"]["exit_reason"] == "Exit step 'out'"
    assert by_type["enrollment.exited"]["step"] == "out"
    assert by_type["message.failed"]["error"].startswith("Template error: ")
    headers = receiver.requests[0]["headers"]
    assert headers["webhook-id"].startswith("msg_")
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"delivered"}


def test_a_forged_or_altered_delivery_does_not_verify(private_allowed, receiver):
    endpoint = _endpoint(receiver.url)
    send_test_event(endpoint=endpoint, now=timezone.now())
    deliver_due_webhooks(now=timezone.now())
    request = receiver.requests[0]
    with pytest.raises(Exception, match="(?i)signature"):
        Webhook(endpoint.secret).verify(request["body"] + b" ", request["headers"])


def test_nobody_subscribed_costs_no_query_and_never_builds_the_facts(
    django_assert_num_queries, private_allowed
):
    _endpoint("http://127.0.0.1:9/hook", events=["goal.achieved"])

    def facts():
        raise AssertionError("built the facts of an event type nobody subscribes to")
        yield

    enqueue_webhook_events(event_type="goal.achieved", facts=[], now=T0)  # loads the cache
    with django_assert_num_queries(0):
        assert enqueue_webhook_events(event_type="conversion.awarded", facts=facts(), now=T0) == 0


def test_a_batch_of_facts_is_one_insert(django_assert_num_queries, private_allowed):
    _endpoint("http://127.0.0.1:9/hook", events=["enrollment.exited"])
    enqueue_webhook_events(event_type="enrollment.exited", facts=[], now=T0)
    facts = [{"contact_id": index, "enrollment": index} for index in range(500)]
    # The contacts' external ids, then one INSERT of the 500 rows.
    with django_assert_num_queries(2):
        enqueue_webhook_events(event_type="enrollment.exited", facts=facts, now=T0)
    assert WebhookEvent.objects.count() == 500


def test_failures_are_retried_with_growing_jittered_back_off_each_attempt_logged(
    private_allowed, receiver
):
    receiver.answers = [(500, {}), (503, {})]
    endpoint = _endpoint(receiver.url)
    with time_machine.travel(T0, tick=False):
        send_test_event(endpoint=endpoint, now=T0)
        deliver_due_webhooks(now=T0)
        delivery = WebhookDelivery.objects.get()
        first_wait = (delivery.due_at - T0).total_seconds()
        assert 5 <= first_wait <= 10
        assert delivery.status == "pending" and delivery.last_error.startswith("HTTP 500")
        assert deliver_due_webhooks(now=T0) == 0  # not due yet
    second = delivery.due_at
    with time_machine.travel(second, tick=False):
        deliver_due_webhooks(now=second)
        delivery.refresh_from_db()
        assert 10 <= (delivery.due_at - second).total_seconds() <= 20
    third = delivery.due_at
    with time_machine.travel(third, tick=False):
        deliver_due_webhooks(now=third)
        delivery.refresh_from_db()
        _verified(receiver, endpoint.secret)
    assert delivery.status == "delivered" and delivery.attempts == 3
    assert [a.status_code for a in WebhookAttempt.objects.order_by("id")] == [500, 503, 200]
    # Every attempt carries the same message id, so the receiver can drop copies.
    assert len({request["headers"]["webhook-id"] for request in receiver.requests}) == 1
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_an_endpoint_failing_for_more_than_a_day_is_disabled_with_an_admin_notice(
    private_allowed, client, superuser
):
    endpoint = _endpoint(_closed_port_url())
    send_test_event(endpoint=endpoint, now=T0)
    moments = [T0, T0 + datetime.timedelta(hours=23), T0 + datetime.timedelta(days=1, seconds=1)]
    for moment in moments:
        WebhookDelivery.objects.update(due_at=moment)
        deliver_due_webhooks(now=moment)
        endpoint.refresh_from_db()
        if moment != moments[-1]:
            assert endpoint.enabled, moment
    assert not endpoint.enabled
    assert endpoint.disabled_at == moments[-1]
    assert "Every attempt failed for more than a day" in endpoint.disabled_reason
    assert WebhookAttempt.objects.count() == 3
    # Disabled: its deliveries wait, and are not tried again.
    WebhookDelivery.objects.update(due_at=T0)
    assert deliver_due_webhooks(now=moments[-1]) == 0
    client.force_login(superuser)
    page = client.get("/admin/").content.decode()
    assert "1 webhook endpoint(s) disabled after a day of failed deliveries" in page


def test_one_failing_endpoint_does_not_hold_up_another(private_allowed, receiver):
    bad = _endpoint(_closed_port_url(), events=["goal.achieved"])
    good = _endpoint(receiver.url, events=["goal.achieved"])
    enqueue_webhook_events(
        event_type="goal.achieved", facts=[{"contact_id": 0, "key": "made"}], now=T0
    )
    deliver_due_webhooks(now=T0)
    assert [body["type"] for body in receiver.bodies()] == ["goal.achieved"]
    assert WebhookDelivery.objects.get(endpoint=good).status == "delivered"
    failed = WebhookDelivery.objects.get(endpoint=bad)
    assert failed.status == "pending" and "ConnectionRefusedError" in failed.last_error


# --- The SSRF guard when sending ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.8/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://localhost/hook",
        "http://93.184.215.14/hook",
    ],
)
def test_sending_refuses_private_loopback_and_link_local_addresses(settings, url, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE = False

    def no_connection(*args, **kwargs):
        raise AssertionError("connected")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    with pytest.raises(Refused):
        post(url, body=b"{}", headers={}, timeout=1, allow_private=False)


def test_a_name_that_resolves_to_a_private_address_at_send_time_is_refused(settings, monkeypatch):
    """DNS rebinding: the name resolved to a public address when the endpoint was made,
    and to a loopback address when the delivery is sent; the check that counts is the one
    made when sending, and nothing is connected to."""
    settings.WEBHOOK_ALLOW_PRIVATE = False
    answers = {"hooks.example": "93.184.215.14"}
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        return real(answers.get(host, host), *args, **kwargs)

    def no_connection(*args, **kwargs):
        raise AssertionError("connected")

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setattr(socket, "create_connection", no_connection)
    endpoint = _endpoint("https://hooks.example/hook")
    send_test_event(endpoint=endpoint, now=T0)
    answers["hooks.example"] = "127.0.0.1"
    deliver_due_webhooks(now=T0)
    error = WebhookAttempt.objects.get().error
    assert error == (
        "Refused: The host 'hooks.example' resolves to 127.0.0.1, which is not a public address."
    )


def test_the_connection_goes_to_the_address_checked_not_to_a_new_lookup(
    private_allowed, receiver, monkeypatch
):
    """DNS rebinding: the name is resolved once, and that address is the one connected to."""
    port = receiver.server.server_address[1]
    lookups = []
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        lookups.append(host)
        if host == "hooks.example":
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    status, _ = post(
        f"http://hooks.example:{port}/hook", body=b"{}", headers={}, timeout=2, allow_private=True
    )
    assert status == 200
    assert lookups.count("hooks.example") == 1
    assert receiver.requests[0]["headers"]["Host"] == f"hooks.example:{port}"


def test_a_redirect_is_not_followed(private_allowed, receiver):
    from webhooks.tests.conftest import Receiver

    inside = Receiver()
    try:
        receiver.answers = [(302, {"Location": "http://169.254.169.254/latest/meta-data/"})]
        receiver.answers.append((307, {"Location": inside.url}))
        endpoint = _endpoint(receiver.url)
        send_test_event(endpoint=endpoint, now=T0)
        deliver_due_webhooks(now=T0)
        WebhookDelivery.objects.update(due_at=T0)
        deliver_due_webhooks(now=T0)
        assert inside.requests == []
    finally:
        inside.close()
    errors = list(WebhookAttempt.objects.order_by("id").values_list("error", flat=True))
    assert errors == [
        "HTTP 302: redirects are not followed.",
        "HTTP 307: redirects are not followed.",
    ]
    assert WebhookEndpoint.objects.get().failing_since == T0


# --- The page ----------------------------------------------------------------------------------


def test_the_page_lists_deliveries_and_sends_a_test_event(
    private_allowed, receiver, client, publisher
):
    endpoint = _endpoint(receiver.url)
    client.force_login(publisher)
    page = client.get("/webhooks/")
    assert page.status_code == 200
    assert receiver.url in page.content.decode()
    response = client.post(f"/webhooks/{endpoint.pk}/test/")
    assert response.status_code == 302
    deliver_due_webhooks(now=timezone.now())
    assert [body["type"] for body in _verified(receiver, endpoint.secret)] == ["webhook.test"]
    page = client.get("/webhooks/").content.decode()
    assert "webhook.test" in page and "Delivered" in page


def test_viewers_read_the_page_but_cannot_send_a_test_event(
    private_allowed, client, viewer, editor
):
    endpoint = _endpoint("http://127.0.0.1:9/hook")
    client.force_login(viewer)
    page = client.get("/webhooks/")
    assert page.status_code == 200 and "Send a test event" not in page.content.decode()
    assert endpoint.secret not in page.content.decode()
    assert client.post(f"/webhooks/{endpoint.pk}/test/").status_code == 403
    assert not WebhookEvent.objects.exists()
    client.force_login(editor)
    assert client.post(f"/webhooks/{endpoint.pk}/test/").status_code == 302
    assert WebhookEvent.objects.get().event_type == "webhook.test"


def test_an_exit_by_exit_when_is_reported_once(private_allowed, receiver):
    endpoint = _endpoint(receiver.url, events=["enrollment.exited"])
    live_journey(
        [{"key": "w", "type": "wait", "duration": "P10D", "next": None}],
        key="nurture",
        exit_when=[{"type": "event", "event": "unsubscribed"}],
    )
    ingest_events(events=[{"id": "s1", "contact": "bo", "name": "signed_up"}])
    run_due()
    assert receiver.requests == []
    ingest_events(events=[{"id": "u1", "contact": "bo", "name": "unsubscribed"}])
    run_due()
    (body,) = _verified(receiver, endpoint.secret)
    assert body["type"] == "enrollment.exited"
    assert body["data"]["contact"] == {"external_id": "bo"}
    assert body["data"]["journey"] == "nurture" and body["data"]["step"] == "w"
    assert "unsubscribed" in body["data"]["exit_reason"]
