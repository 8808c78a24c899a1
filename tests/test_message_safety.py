"""Message templates render from plain, read-only data: no model, no settings, nothing a
template can call to change state; a broken template fails that message with a reason."""

import datetime

import pytest
from django.conf import settings
from django.core import mail

from journeys import sms
from journeys.actions.events import ingest_events
from journeys.actions.sweep import run_due
from journeys.actions.versions import create_journey
from journeys.definition import DefinitionError
from journeys.message_templates import read_only
from journeys.models import Contact, OutboxMessage
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import definition, live_journey

pytestmark = pytest.mark.django_db

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
