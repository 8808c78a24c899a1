"""A real Celery worker, woken by beat's sweep, delivers a webhook to a real receiver."""

import os
import signal
import subprocess

import pytest
from django.db import connection
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from tests.test_reliability import _redis, _start, _wait_for
from webhooks.actions import create_endpoint, send_test_event
from webhooks.models import WebhookDelivery

REDIS_URL = os.environ.get("WEBHOOKS_REDIS_URL", "redis://127.0.0.1:6379/10")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_delivers_a_signed_webhook(tmp_path, receiver, settings):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: the worker shares the test database")
    broker = _redis(REDIS_URL)
    broker.flushdb()
    settings.WEBHOOK_ALLOW_PRIVATE = True
    endpoint = create_endpoint(url=receiver.url, events=["conversion.awarded"], now=timezone.now())
    send_test_event(endpoint=endpoint, now=timezone.now())

    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "CELERY_BROKER_URL": REDIS_URL,
        "SWEEP_INTERVAL_SECONDS": "1",
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "LOG_LEVEL": "WARNING",
    }
    args = ["worker", "--pool=solo", "--without-gossip", "--without-mingle"]
    processes = []
    with open(tmp_path / "celery.log", "wb") as log:
        try:
            processes.append(
                _start(
                    ["beat", "-s", str(tmp_path / "beat-schedule"),
                     "--pidfile", str(tmp_path / "beat.pid")],
                    env,
                    log,
                )
            )  # fmt: skip
            processes.append(_start([*args, "-n", f"webhooks-{os.getpid()}@%h"], env, log))
            _wait_for(
                lambda: WebhookDelivery.objects.filter(status="delivered").exists(),
                60,
                "the worker to deliver the test event",
            )
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            broker.flushdb()

    (request,) = receiver.requests
    body = Webhook(endpoint.secret).verify(request["body"], request["headers"])
    assert body["type"] == "webhook.test"
