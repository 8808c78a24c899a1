"""Migration 0011: message templates written for Django's engine, rewritten for Liquid."""

import importlib

import pytest
from django.apps import apps

from journeys.message_templates import compile_template, render_template
from journeys.models import JourneyVersion, OutboxMessage
from journeys.tests.actions.scenarios import T0, run, send
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

migration = importlib.import_module("journeys.migrations.0011_message_templates_to_liquid")

CONTACT = {
    "external_id": "ann",
    "email": "ann@example.com",
    "attributes": {"first_name": "Ann", "tags": ["x", "y"], "vip": True},
}


@pytest.mark.parametrize(
    ("django", "liquid", "rendered"),
    [
        (
            "Hi {{ contact.attributes.first_name }}",
            "Hi {{ contact.attributes.first_name }}",
            "Hi Ann",
        ),
        (
            "{{ contact.attributes.nick|default:'there'|upper }}",
            "{{ contact.attributes.nick|default:'there'|upcase }}",
            "THERE",
        ),
        (
            "{% for t in contact.attributes.tags %}{{ forloop.counter }}{{ t|upper }}"
            "{% empty %}none{% endfor %}",
            "{% for t in contact.attributes.tags %}{{ forloop.index }}{{ t|upcase }}"
            "{% else %}none{% endfor %}",
            "1X2Y",
        ),
        (
            "{% if contact.attributes.plan == 'pro' %}P{% elif contact.attributes.vip == True %}V"
            "{% endif %}",
            "{% if contact.attributes.plan == 'pro' %}P{% elsif contact.attributes.vip == true %}V"
            "{% endif %}",
            "V",
        ),
        (
            "{{ contact.attributes.tags.0 }}{# a note #}{{ contact.attributes.tags|length }}",
            "{{ contact.attributes.tags[0] }}{% comment %} a note {% endcomment %}"
            "{{ contact.attributes.tags|size }}",
            "x2",
        ),
        ("{{ 'keep|upper and True' }}", "{{ 'keep|upper and True' }}", "keep|upper and True"),
        (
            "{% if not contact.email %}none{% endif %}",
            "{% if not contact.email %}none{% endif %}",
            "",
        ),
    ],
)
def test_django_templates_are_rewritten_to_read_the_same_in_liquid(django, liquid, rendered):
    assert migration.to_liquid(django) == liquid
    assert render_template(liquid, CONTACT) == rendered


@pytest.mark.django_db
def test_stored_versions_and_pending_messages_are_converted_published_ones_too():
    _, version = live_journey(
        [
            {"key": "text", "type": "send_sms", "text": "Hi", "next": "wait"},
            {"key": "wait", "type": "wait", "duration": "P1D", "next": None},
        ]
    )
    ContactFactory(external_id="ann", attributes={"phone": "+1"})
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    stored = version.definition
    stored["steps"][0]["text"] = "Hi {{ contact.attributes.first_name|upper }}"
    stored["steps"].append(
        {"key": "odd", "type": "send_sms", "text": "{{ contact.attributes.x|title }}", "next": None}
    )
    # As the rows were before Liquid: written past the guard, as the migration writes them.
    JourneyVersion.objects.filter(pk=version.pk).update(definition=stored)
    OutboxMessage.objects.update(status="pending", body="{{ contact.email|lower }}")

    migration.forwards(apps, None)

    steps = JourneyVersion.objects.get(pk=version.pk).definition["steps"]
    assert steps[0]["text"] == "Hi {{ contact.attributes.first_name|upcase }}"
    # No Liquid form for `title`: a published version must still parse, so it is kept as text.
    assert steps[2]["text"] == "{% raw %}{{ contact.attributes.x|title }}{% endraw %}"
    compile_template(steps[2]["text"])
    assert OutboxMessage.objects.get().body == "{{ contact.email|downcase }}"
