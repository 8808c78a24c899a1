"""Every admin page of the journeys app loads; history is read-only; API keys and failed
enrollments are handled from the admin."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from journeys.actions.api_keys import authenticate_api_key, create_api_key, hash_api_key
from journeys.models import (
    ApiKey,
    DeliveryEvent,
    Enrollment,
    JourneyVersion,
    OutboxMessage,
    StepVisit,
)
from journeys.tests.factories import (
    ContactFactory,
    EnrollmentFactory,
    EventFactory,
    JourneyVersionFactory,
)

pytestmark = pytest.mark.django_db

JOURNEY_MODELS = [model for model in admin.site._registry if model._meta.app_label == "journeys"]


@pytest.fixture
def one_of_each(db):
    version = JourneyVersionFactory()
    enrollment = EnrollmentFactory(version=version, last_error="boom", state="failed")
    visit = StepVisit.objects.create(
        enrollment=enrollment, version=version, step_key="welcome", seq=1, entered_at=timezone.now()
    )
    message = OutboxMessage.objects.create(
        visit=visit,
        enrollment=enrollment,
        contact=enrollment.contact,
        step_key="welcome",
        channel="email",
        recipient="a@example.com",
        due_at=timezone.now(),
    )
    DeliveryEvent.objects.create(
        message=message,
        provider="Postmark",
        event_id="1",
        event_type="delivered",
        occurred_at=timezone.now(),
        received_at=timezone.now(),
    )
    EventFactory(contact=enrollment.contact)
    create_api_key(name="crm")
    JourneyVersionFactory(journey=version.journey, number=version.number + 1, state="draft")


def test_every_journeys_model_is_registered():
    assert {model.__name__ for model in JOURNEY_MODELS} == {
        "Contact",
        "Event",
        "Journey",
        "JourneyVersion",
        "Enrollment",
        "EngineLease",
        "StepVisit",
        "OutboxMessage",
        "DeliveryEvent",
        "ApiKey",
        "ContactImport",
        "ContactImportRefusal",
    }


def assert_admin_pages_load(client, model, *, addable: bool) -> None:
    """The changelist (plain and searched), every object's page and the add page (403 for
    what is never added by hand) of a model load for the logged-in client."""
    opts = model._meta
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")

    assert client.get(changelist).status_code == 200
    assert client.get(changelist, {"q": "x"}).status_code == 200
    for obj in model.objects.all():
        change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        assert client.get(change).status_code == 200
    add = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
    assert add.status_code == (200 if addable else 403)


@pytest.mark.parametrize("model", JOURNEY_MODELS, ids=lambda model: model.__name__)
def test_admin_pages_load_for_every_model(client, superuser, one_of_each, model):
    client.force_login(superuser)

    assert_admin_pages_load(
        client, model, addable=model.__name__ in {"Contact", "Journey", "Enrollment", "ApiKey"}
    )


@pytest.mark.parametrize(
    ("model", "addable"),
    [
        ("event", False),
        ("stepvisit", False),
        ("journeyversion", False),
        ("contact", True),
        ("apikey", True),
    ],
)
def test_history_cannot_be_added_by_hand(client, superuser, model, addable):
    client.force_login(superuser)

    response = client.get(reverse(f"admin:journeys_{model}_add"))

    assert response.status_code == (200 if addable else 403)


def test_a_published_version_is_read_only_and_a_draft_is_not(client, superuser):
    client.force_login(superuser)
    live = JourneyVersionFactory(state="live")
    draft = JourneyVersionFactory(journey=live.journey, number=live.number + 1, state="draft")

    live_page = client.post(reverse("admin:journeys_journeyversion_change", args=[live.pk]), {})
    draft_page = client.post(reverse("admin:journeys_journeyversion_change", args=[draft.pk]), {})

    assert live_page.status_code == 403
    assert draft_page.status_code == 302


def test_an_event_cannot_be_changed(client, superuser):
    client.force_login(superuser)
    event = EventFactory()

    response = client.post(reverse("admin:journeys_event_change", args=[event.pk]), {"name": "x"})

    assert response.status_code == 403


def test_adding_an_api_key_shows_the_raw_key_once_and_stores_only_its_hash(client, superuser):
    client.force_login(superuser)

    response = client.post(
        reverse("admin:journeys_apikey_add"), {"name": "zapier", "scope": "ingest"}, follow=True
    )

    assert response.status_code == 200
    key = ApiKey.objects.get(name="zapier")
    (message,) = [str(m) for m in get_messages(response.wsgi_request) if "copy it now" in str(m)]
    raw_key = next(word for word in message.split() if word.startswith("wp_"))
    assert key.key_hash == hash_api_key(raw_key)
    assert raw_key not in {key.prefix, key.key_hash}
    assert (key.scope, key.created_by) == ("ingest", superuser)
    assert authenticate_api_key(raw_key=raw_key) == key


def test_revoke_selected_keys(client, superuser):
    client.force_login(superuser)
    key, raw_key = create_api_key(name="old")
    other, other_raw = create_api_key(name="keep")

    response = client.post(
        reverse("admin:journeys_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [key.pk]},
    )

    assert response.status_code == 302
    assert authenticate_api_key(raw_key=raw_key) is None
    assert authenticate_api_key(raw_key=other_raw) == other


def test_retry_failed_enrollments(client, superuser):
    client.force_login(superuser)
    failed = EnrollmentFactory(state="failed", attempts=5, last_error="SMTP down")
    completed = EnrollmentFactory(state="completed")

    client.post(
        reverse("admin:journeys_enrollment_changelist"),
        {"action": "retry_failed_enrollments", "_selected_action": [failed.pk, completed.pk]},
    )

    failed.refresh_from_db()
    completed.refresh_from_db()
    assert (failed.state, failed.attempts) == ("active", 0)
    assert failed.due_at is not None
    assert completed.state == "completed"


def test_enrollments_filter_by_state_and_show_the_last_error(client, superuser):
    client.force_login(superuser)
    EnrollmentFactory(state=Enrollment.State.FAILED, last_error="Template broke")
    EnrollmentFactory(state=Enrollment.State.ACTIVE, contact=ContactFactory(external_id="ok-1"))

    response = client.get(reverse("admin:journeys_enrollment_changelist"), {"state": "failed"})

    assert response.status_code == 200
    assert "Template broke" in response.content.decode()
    assert "ok-1" not in response.content.decode()


def test_version_list_takes_a_fixed_number_of_queries(
    client, superuser, django_assert_max_num_queries
):
    client.force_login(superuser)
    for number in range(1, 6):
        JourneyVersionFactory(number=number, state=JourneyVersion.State.RETIRED)
    client.get(reverse("admin:journeys_journeyversion_changelist"))

    with django_assert_max_num_queries(12):
        assert client.get(reverse("admin:journeys_journeyversion_changelist")).status_code == 200


def test_retry_failed_events_puts_them_back_to_pending(client, superuser):
    client.force_login(superuser)
    failed = EventFactory(status="failed", attempts=5, error="OverflowError: int too large")
    processed = EventFactory(status="processed", attempts=1)

    page = client.get(reverse("admin:journeys_event_changelist") + "?status__exact=failed")
    assert "OverflowError: int too large" in page.content.decode()
    client.post(
        reverse("admin:journeys_event_changelist"),
        {"action": "retry_failed_events", "_selected_action": [failed.pk, processed.pk]},
    )

    failed.refresh_from_db()
    processed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("pending", 0)
    assert (processed.status, processed.attempts) == ("processed", 1)


def test_retrying_events_needs_the_change_event_permission(client, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_event"))
    client.force_login(viewer)
    failed = EventFactory(status="failed", attempts=5)

    client.post(
        reverse("admin:journeys_event_changelist"),
        {"action": "retry_failed_events", "_selected_action": [failed.pk]},
    )

    failed.refresh_from_db()
    assert failed.status == "failed"


@pytest.mark.parametrize(
    ("attributes", "where"),
    [('{"score": 1' + "0" * 400 + "}", "attributes.score"), ('{"v": [1e999]}', "attributes.v.0")],
)
def test_contact_attributes_beyond_a_double_are_refused_in_the_admin(
    client, superuser, attributes, where
):
    client.force_login(superuser)
    contact = ContactFactory(attributes={"plan": "pro"})

    response = client.post(
        reverse("admin:journeys_contact_change", args=[contact.pk]),
        {"external_id": contact.external_id, "email": "", "attributes": attributes},
    )

    assert response.status_code == 200
    assert f"{where}: The number" in response.content.decode()
    contact.refresh_from_db()
    assert contact.attributes == {"plan": "pro"}


def test_contact_subscriptions_are_edited_in_the_admin_and_checked(client, superuser):
    client.force_login(superuser)
    contact = ContactFactory(attributes={})
    url = reverse("admin:journeys_contact_change", args=[contact.pk])
    fields = {"external_id": contact.external_id, "email": "", "attributes": "{}"}

    response = client.post(url, {**fields, "subscriptions": '{"email": "maybe"}'})
    assert response.status_code == 200
    assert "email: Unknown status" in response.content.decode()

    response = client.post(url, {**fields, "subscriptions": '{"email": "unsubscribed"}'})
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.subscriptions == {"email": "unsubscribed"}
    assert contact.subscription("sms") == "subscribed"


def test_an_email_in_the_admin_shows_as_rendered_with_its_html_sandboxed(client, superuser):
    client.force_login(superuser)
    contact = ContactFactory(attributes={"first_name": "Ann"})
    enrollment = EnrollmentFactory(contact=contact)
    visit = StepVisit.objects.create(
        enrollment=enrollment,
        version=enrollment.version,
        step_key="mail",
        seq=1,
        entered_at=timezone.now(),
    )
    message = OutboxMessage.objects.create(
        visit=visit,
        enrollment=enrollment,
        contact=contact,
        step_key="mail",
        channel="email",
        subject="Hi {{ contact.attributes.first_name }}",
        html="<p>Dear {{ contact.attributes.first_name }}</p><script>alert(1)</script>",
        status="sent",
        due_at=timezone.now(),
    )
    page = client.get(reverse("admin:journeys_outboxmessage_change", args=[message.pk]))
    html = page.content.decode()
    assert "<strong>Hi Ann</strong>" in html
    assert f'<iframe sandbox src="/admin/journeys/outboxmessage/{message.pk}/rendered/"' in html

    frame = client.get(f"/admin/journeys/outboxmessage/{message.pk}/rendered/")
    assert "<p>Dear Ann</p>" in frame.content.decode()
    assert "default-src 'none'" in frame["Content-Security-Policy"]
    assert "sandbox" in frame["Content-Security-Policy"]
