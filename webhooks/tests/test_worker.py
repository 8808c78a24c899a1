"""A real Celery worker, woken by beat's sweep, delivers a webhook to a real receiver."""

import os

import pytest
from django.db import connection
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from tests.processes import celery_processes, wait_for
from webhooks.actions import create_endpoint, send_test_event
from webhooks.models import WebhookDelivery

REDIS_URL = os.environ.get("WEBHOOKS_REDIS_URL", "redis://127.0.0.1:6379/10")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_delivers_a_signed_webhook(tmp_path, receiver, settings):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: the worker shares the test database")
    settings.WEBHOOK_ALLOW_PRIVATE = True
    endpoint = create_endpoint(url=receiver.url, events=["conversion.awarded"], now=timezone.now())
    send_test_event(endpoint=endpoint, now=timezone.now())

    with celery_processes(
        tmp_path, broker_url=REDIS_URL, workers=["webhooks"], WEBHOOK_ALLOW_PRIVATE="true"
    ):
        wait_for(
            lambda: WebhookDelivery.objects.filter(status="delivered").exists(),
            60,
            "the worker to deliver the test event",
        )

    (request,) = receiver.requests
    body = Webhook(endpoint.secret).verify(request["body"], request["headers"])
    assert body["type"] == "webhook.test"
