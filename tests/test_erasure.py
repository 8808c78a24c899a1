"""Erasing a contact (API or admin) removes its personal data and events but keeps the
anonymous enrollments and awards, so reports do not change; emails never reach the logs."""

import io
import logging

import pytest
from auditlog.models import LogEntry
from django.core import mail
from django.urls import reverse

from config.security import MaskEmailsFilter, mask_emails
from conversions.models import ConversionAward
from journeys.actions.contacts import erase_contact
from journeys.actions.events import ingest_events
from journeys.actions.sweep import run_due
from journeys.models import Contact, Enrollment, Event, OutboxMessage, StepVisit
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db

STEPS = [
    {
        "key": "welcome",
        "type": "send_email",
        "subject": "Hi {{ contact.attributes.first_name }}",
        "body": "Hello {{ contact.email }}",
        "next": "wait",
    },
    {"key": "wait", "type": "wait", "duration": "P1D", "next": "convert"},
    {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
]


@pytest.fixture
def history():
    journey, _ = live_journey(
        STEPS, key="erasable", conversions=[{"key": "paid", "name": "Paid", "value": 10}]
    )
    for name in ("ann", "bob"):
        ContactFactory(
            external_id=name, email=f"{name}@example.com", attributes={"first_name": name.title()}
        )
    ingest_events(
        events=[
            {"id": f"{name}-1", "contact": name, "name": "signed_up", "properties": {"by": name}}
            for name in ("ann", "bob")
        ]
    )
    run_due()
    # Ann converts after the wait; Bob's enrollment is still active (waiting) when erased.
    ann = Enrollment.objects.get(contact__external_id="ann")
    Enrollment.objects.filter(pk=ann.pk).update(due_at=ann.started_at)
    run_due()
    assert ConversionAward.objects.filter(contact__external_id="ann").count() == 1
    return journey


def _report(api, journey):
    response = api.get(f"/api/v1/journeys/{journey.key}/report?conversion=paid")
    assert response.status_code == 200, response.content
    return response.json()


def _personal_data_left(address: str) -> list[str]:
    found = []
    for model, fields in (
        (Contact, ["external_id", "email", "attributes"]),
        (Event, ["properties"]),
        (OutboxMessage, ["recipient", "subject", "body", "error"]),
    ):
        for row in model.objects.values(*fields):
            if address in str(row):
                found.append(f"{model.__name__}: {row}")
    return found


@pytest.mark.parametrize("scope", ["ingest", "manage"])
def test_erasing_through_the_api_removes_personal_data_and_keeps_the_counts(
    history, make_api_client, scope
):
    api = make_api_client("all")
    eraser = make_api_client(scope)
    before = _report(api, history)
    ann = Contact.objects.get(external_id="ann")
    counts = (
        Enrollment.objects.filter(contact=ann).count(),
        StepVisit.objects.filter(enrollment__contact=ann).count(),
        ConversionAward.objects.filter(contact=ann).count(),
    )
    assert len(mail.outbox) == 2 and _personal_data_left("ann@example.com")

    response = eraser.delete("/api/v1/contacts/ann")
    assert response.status_code == 204

    ann.refresh_from_db()
    assert ann.external_id.startswith("erased-") and ann.erased_at is not None
    assert ann.email == "" and ann.attributes == {}
    assert not Event.objects.filter(contact=ann).exists()
    assert _personal_data_left("ann@example.com") == []
    assert _personal_data_left('"Ann"') == []
    assert OutboxMessage.objects.filter(contact=ann, subject="", body="", recipient="").exists()
    assert counts == (
        Enrollment.objects.filter(contact=ann).count(),
        StepVisit.objects.filter(enrollment__contact=ann).count(),
        ConversionAward.objects.filter(contact=ann).count(),
    )
    assert _report(api, history) == before
    assert api.get("/api/v1/contacts/ann").status_code == 404
    [entry] = LogEntry.objects.get_for_object(ann)
    assert entry.changes_dict == {"personal data": ["present", "erased"]}
    assert entry.additional_data["api_key"].startswith(f"test-{scope} (")
    assert "ann" not in entry.object_repr
    # Bob is untouched.
    assert Contact.objects.get(external_id="bob").email == "bob@example.com"


def test_erasing_an_active_contact_stops_its_journey(history, api):
    assert api.delete("/api/v1/contacts/bob").status_code == 204
    bob = Enrollment.objects.get(contact__erased_at__isnull=False)
    assert bob.state == Enrollment.State.EXITED and bob.exit_reason == "Contact erased"
    run_due()
    assert len(mail.outbox) == 2  # nothing more was sent


def test_erasing_twice_is_harmless_and_new_data_makes_a_new_contact(history, api):
    assert api.delete("/api/v1/contacts/ann").status_code == 204
    assert api.delete("/api/v1/contacts/ann").status_code == 404
    erased = Contact.objects.get(erased_at__isnull=False)
    erase_contact(contact=erased)
    assert Contact.objects.get(pk=erased.pk).external_id == erased.external_id
    assert api.put("/api/v1/contacts/ann", {"email": "ann@example.com"}).status_code == 201
    assert Contact.objects.filter(external_id="ann").exclude(pk=erased.pk).exists()


def test_admin_action_erases_the_selected_contacts(history, client, superuser, api):
    before = _report(api, history)
    client.force_login(superuser)
    ann = Contact.objects.get(external_id="ann")
    response = client.post(
        reverse("admin:journeys_contact_changelist"),
        {"action": "erase_contacts", "_selected_action": [ann.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 contact(s) erased" in response.content.decode()
    assert LogEntry.objects.get_for_object(ann).get().actor == superuser
    assert Contact.objects.get(pk=ann.pk).erased_at is not None
    assert _personal_data_left("ann@example.com") == []
    assert _report(api, history) == before


def test_emails_are_masked_in_log_output():
    assert mask_emails("to ada.lovelace@example.com, cc b@x.org") == (
        "to a***@example.com, cc b***@x.org"
    )
    [console] = [
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, MaskEmailsFilter) for f in handler.filters)
    ]
    stream = io.StringIO()
    previous = console.setStream(stream)
    try:
        logging.getLogger("journeys.actions").warning("Bounce from %s", "ann@example.com")
    finally:
        console.setStream(previous)
    assert "a***@example.com" in stream.getvalue()
    assert "ann@example.com" not in stream.getvalue()


@pytest.mark.parametrize(
    "query",
    ["ann%40example.com", "ann%2540example.com", "ann%252540example.com", "ann%40example%2Ecom"],
    ids=["encoded", "encoded-twice", "encoded-three-times", "encoded-dot"],
)
def test_gunicorn_access_log_masks_emails_in_urls(capsys, query):
    import datetime
    from types import SimpleNamespace

    from gunicorn.config import Config

    from config.access_log import MaskingGunicornLogger

    config = Config()
    config.set("accesslog", "-")
    logger = MaskingGunicornLogger(config)
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/contacts/{query}/?q={query}",
        "PATH_INFO": f"/contacts/{query}/",
        "QUERY_STRING": f"q={query}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_REFERER": "https://waypoint.example/contacts/?q=bob@example.com",
    }
    response = SimpleNamespace(status="200 OK", headers=[], sent=10)
    logger.access(response, SimpleNamespace(headers=[]), environ, datetime.timedelta(seconds=0))
    line = capsys.readouterr().out
    assert "q=a***@example" in line and "b***@example.com" in line
    assert "ann" not in line and "bob@example.com" not in line
