"""Message templates render from plain, read-only data: no model, no settings, nothing a
template can call to change state; a broken template fails that message with a reason."""

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core import mail
from django.db import connection

from journeys import sms
from journeys.actions.events import ingest_events
from journeys.actions.messages import deliver_due_messages
from journeys.actions.sweep import run_due
from journeys.actions.versions import create_journey
from journeys.definition import DefinitionError
from journeys.message_templates import read_only
from journeys.models import Contact, OutboxMessage
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import definition, live_journey

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parent.parent

T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)


def _deliver(steps):
    live_journey(steps)
    sms.outbox.clear()
    ContactFactory(
        external_id="ann",
        email="ann@example.com",
        attributes={"phone": "+4400", "first_name": "Ann", "tags": ["a", "b"]},
    )
    ingest_events(
        events=[{"id": "e1", "contact": "ann", "name": "signed_up", "properties": {}}], now=T0
    )
    run_due(now=T0)


def test_a_template_cannot_mutate_the_data_the_next_message_sees():
    _deliver(
        [
            {
                "key": "mail",
                "type": "send_email",
                "subject": "Hi",
                "body": "{{ contact.attributes.clear }}{{ contact.attributes.tags.pop }}"
                "{{ contact.attributes.popitem }}",
                "next": "text",
            },
            {
                "key": "text",
                "type": "send_sms",
                "text": "Hi {{ contact.attributes.first_name }} {{ contact.attributes.tags | join: ',' }}",
                "next": None,
            },
        ]
    )
    assert sms.outbox == [{"to": "+4400", "text": "Hi Ann a,b"}]
    assert Contact.objects.get().attributes["tags"] == ["a", "b"]


def test_a_template_reaches_no_model_method_and_no_setting():
    _deliver(
        [
            {
                "key": "mail",
                "type": "send_email",
                "subject": "Hello {{ contact.attributes.first_name }}",
                "body": "[{{ settings.SECRET_KEY }}][{{ contact.delete }}][{{ contact.save }}]"
                "[{{ contact.events.all }}][{{ request.user }}][{{ contact.email.__class__ }}]",
                "category": "transactional",
                "next": None,
            }
        ]
    )
    [message] = mail.outbox
    assert message.subject == "Hello Ann"
    assert message.body == "[][][][][][]"
    assert settings.SECRET_KEY not in message.body
    assert Contact.objects.filter(external_id="ann").exists()


def test_a_template_error_fails_that_message_with_a_readable_reason():
    _deliver(
        [
            {
                "key": "mail",
                "type": "send_email",
                "subject": "Hi",
                "body": "{{ contact.email | divided_by: 0 }}",
                "next": "text",
            },
            {"key": "text", "type": "send_sms", "text": "Still sent", "next": None},
        ]
    )
    email = OutboxMessage.objects.get(channel="email")
    assert email.status == OutboxMessage.Status.FAILED
    assert email.error.startswith("Template error: ")
    assert OutboxMessage.objects.get(channel="sms").status == OutboxMessage.Status.SENT


@pytest.mark.parametrize(
    "body",
    [
        "{% load static %}",
        "{% include 'secrets.txt' %}",
        "{% render 'secrets.txt' %}",
        "{{ contact | no_such_filter }}",
        "{% if %}",
    ],
)
def test_templates_that_would_reach_further_are_refused_when_saved(body):
    steps = [{"key": "mail", "type": "send_email", "subject": "Hi", "body": body, "next": None}]
    with pytest.raises(DefinitionError) as refused:
        create_journey(definition=definition(steps))
    [error] = refused.value.errors
    assert error["loc"] == ["steps", 0, "body"]
    assert error["message"].startswith("Template syntax error")


def test_read_only_freezes_nested_data():
    frozen = read_only({"a": [1, {"b": [2]}], "c": None})
    with pytest.raises(TypeError):
        frozen["a"] = 1
    assert frozen["a"][1]["b"] == (2,)
    assert isinstance(frozen["a"], tuple)


# --- Liquid's limits (issue 12: the probes that tied up every worker) -------------------------

EMAIL_CHARS = '{% assign c = contact.email | split: "" %}'
FIVE_NESTED_LOOPS = (
    EMAIL_CHARS
    + "{% for a in c %}{% for b in c %}{% for d in c %}{% for e in c %}{% for f in c %}x"
    + "{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
)
PADDING = (
    "{{ contact.email | replace: '', '" + "x" * 400 + "' | replace: '', '" + "y" * 400 + "' }}"
)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (FIVE_NESTED_LOOPS, "the loops run more than 10000 iterations"),
        ("{% for i in (1..100000) %}x{% endfor %}", "the loops run more than 10000 iterations"),
        (
            "{% for i in (1..6000) %}{% endfor %}{% for i in (1..6000) %}{% endfor %}",
            "the loops run more than 10000 iterations",
        ),
        (PADDING, "the filter 'replace' would make more than 100000 characters"),
        ("{{ (1..100000000) | join: '-' }}", "the filter 'join' would handle more than 100000"),
        ("{% for i in (1..9000) %}{{ contact.email }}{% endfor %}", "longer than 100000 bytes"),
    ],
)
def test_a_template_past_a_limit_fails_its_message_alone(body, reason):
    _deliver(
        [
            {"key": "mail", "type": "send_email", "subject": "Hi", "body": body, "next": "text"},
            {"key": "text", "type": "send_sms", "text": "Still sent", "next": None},
        ]
    )
    email = OutboxMessage.objects.get(channel="email")
    assert email.status == OutboxMessage.Status.FAILED
    assert email.error.startswith("Template error: TemplateLimitError: ")
    assert reason in email.error
    assert mail.outbox == []
    assert OutboxMessage.objects.get(channel="sms").status == OutboxMessage.Status.SENT
    assert sms.outbox == [{"to": "+4400", "text": "Still sent"}]


def test_a_missing_attribute_renders_empty_and_default_fills_it():
    _deliver(
        [
            {
                "key": "mail",
                "type": "send_email",
                "subject": '{{ contact.attributes.nickname | default: "there" }}',
                "body": "[{{ contact.attributes.nickname }}][{{ contact.attributes.a.b.c }}]"
                "{% for tag in contact.attributes.tags %}{{ forloop.index }}{{ tag | upcase }}"
                "{% endfor %}",
                "category": "transactional",
                "next": None,
            }
        ]
    )
    [message] = mail.outbox
    assert message.subject == "there"
    assert message.body == "[][]1A2B"


def test_an_unparsable_template_is_refused_by_the_api_with_step_field_and_line(api):
    steps = [
        {
            "key": "welcome",
            "type": "send_email",
            "subject": "Hello\n{{ contact.attributes.first_name",
            "body": "{{ contact.email | ljust: 50000000 }}",
            "next": None,
        }
    ]
    response = api.post("/api/v1/journeys", definition(steps))
    assert response.status_code == 400
    errors = {tuple(error["loc"]): error["message"] for error in response.json()["errors"]}
    assert errors == {
        ("steps", 0, "subject"): "Template syntax error on line 2: expected '}}', "
        "found end of file",
        ("steps", 0, "body"): "Template syntax error on line 1: unknown filter 'ljust'",
    }


def test_an_unparsable_template_is_an_inline_error_in_the_editor(client, editor):
    steps = [{"key": "mail", "type": "send_email", "subject": "Hi", "body": "Hi", "next": None}]
    create_journey(definition=definition(steps, key="onboarding"))
    client.force_login(editor)
    response = client.post(
        "/journeys/onboarding/steps/mail/",
        {"subject": "Hi {{ contact.attributes.first_name", "body": "Hi"},
        headers={"HX-Request": "true", "HX-Target": "workspace"},
    )
    assert response.status_code == 200
    assert "Template syntax error on line 1: expected &#x27;}}&#x27;" in response.content.decode()


# --- A real worker killed between sending and recording ----------------------------------------


class HangsAfterSendingBackend:
    """Appends each email to the file EMAIL_FILE_PATH names, then hangs: the provider has the
    message and the worker has not recorded it yet, the moment `kill -9` comes."""

    def __init__(self, **kwargs):
        pass

    def close(self):
        pass

    def send_messages(self, messages):
        with open(os.environ["HANG_MAIL_FILE"], "a") as sent:
            for message in messages:
                sent.write(f"{message.to[0]}\n")
        time.sleep(600)


DELIVER_ONCE = (
    "import django, datetime; django.setup()\n"
    "from journeys.actions.messages import deliver_due_messages\n"
    "deliver_due_messages(now=datetime.datetime.fromisoformat({now!r}))\n"
)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_after_sending_leaves_no_duplicate(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: a second process writes to the test database")
    settings_lease = settings.ENGINE_LEASE_SECONDS
    steps = [{"key": "mail", "type": "send_email", "subject": "Hi", "body": "Hi", "next": None}]
    _deliver(steps)
    OutboxMessage.objects.update(status=OutboxMessage.Status.PENDING, sent_at=None, attempts=0)
    mail.outbox.clear()
    sent_file = tmp_path / "sent.txt"
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
        f"{database['NAME']}",
        "EMAIL_BACKEND": "tests.test_message_safety.HangsAfterSendingBackend",
        "HANG_MAIL_FILE": str(sent_file),
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", DELIVER_ONCE.format(now=T0.isoformat())], cwd=REPO, env=env
    )
    try:
        for _ in range(600):
            if sent_file.exists() and sent_file.read_text():
                break
            assert worker.poll() is None, "the worker stopped before sending"
            time.sleep(0.05)  # polling another process, not moving the engine's time
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()

    later = T0 + datetime.timedelta(seconds=settings_lease + 1)
    assert deliver_due_messages(now=later) == 0
    message = OutboxMessage.objects.get()
    assert message.status == OutboxMessage.Status.FAILED
    assert message.error.startswith("Outcome unknown")
    assert sent_file.read_text() == "ann@example.com\n"
    assert mail.outbox == []
