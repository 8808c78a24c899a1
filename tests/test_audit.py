"""The audit trail: every change to journeys, versions, goals, conversions, API keys and group
membership says who made it, when and what changed; admins see it all, the journey's page
shows its own; published versions and awards cannot be rewritten."""

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group
from django.urls import reverse

from conversions.actions import save_conversion
from conversions.models import Conversion, ConversionAward
from conversions.tests.factories import ConversionAwardFactory
from journeys.actions.api_keys import revoke_api_key
from journeys.actions.versions import create_journey, publish_version
from journeys.audit import audit_rows, journey_audit_entries
from journeys.models import ApiKey, Journey, JourneyVersion
from journeys.signals import HistoryIsImmutable
from journeys.tests.factories import EnrollmentFactory
from journeys.tests.flows import definition

pytestmark = pytest.mark.django_db

STEPS = [{"key": "hello", "type": "send_email", "subject": "Hi", "body": "Hello", "next": None}]


def _entries(model, pk):
    return LogEntry.objects.get_for_object(model.objects.get(pk=pk)).order_by("timestamp", "pk")


def test_api_changes_name_the_key_that_made_them(make_api_client):
    api = make_api_client("manage")
    data = definition(STEPS, key="from-api", conversions=[{"key": "paid", "name": "Paid"}])
    assert api.post("/api/v1/journeys", data).status_code == 201
    journey = Journey.objects.get(key="from-api")
    [created] = _entries(Journey, journey.pk)
    assert created.action == LogEntry.Action.CREATE
    assert created.additional_data["api_key"].startswith("test-manage (")
    rows = audit_rows(journey_audit_entries(journey))
    models = {entry.content_type.model for entry in journey_audit_entries(journey)}
    assert models >= {"journey", "journeyversion", "conversion"}
    assert all(row.who.startswith("API key test-manage") for row in rows)


def test_page_edits_and_publishing_record_the_user_and_the_change(client, editor, publisher):
    journey, version, _ = create_journey(definition=definition(STEPS, key="paged"))
    client.force_login(editor)
    response = client.post(
        f"/journeys/{journey.key}/settings/",
        {"name": "Paged", "reentry": "concurrent", "holdout_percent": "0"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    [change] = [
        e for e in _entries(JourneyVersion, version.pk) if e.action == LogEntry.Action.UPDATE
    ]
    assert change.actor == editor
    old, new = change.changes_dict["definition"]
    assert "once" in old and "concurrent" in new

    client.force_login(publisher)
    client.post(f"/journeys/{journey.key}/publish/", {}, headers={"HX-Request": "true"})
    assert JourneyVersion.objects.get(pk=version.pk).state == JourneyVersion.State.LIVE
    published = _entries(JourneyVersion, version.pk).last()
    assert published.actor == publisher
    assert published.changes_dict["state"] == ["draft", "live"]


def test_goal_and_conversion_edits_are_recorded(client, editor):
    journey, _, _ = create_journey(definition=definition(STEPS, key="measured"))
    conversion = save_conversion(journey=journey, data={"key": "paid", "name": "Paid"})
    save_conversion(journey=journey, data={"name": "Paid plan", "value": 49}, key="paid")
    changes = [e.changes_dict for e in _entries(Conversion, conversion.pk)]
    assert any(c.get("name") == ["Paid", "Paid plan"] for c in changes), changes
    assert journey_audit_entries(journey).filter(object_pk=str(conversion.pk)).count() >= 2


def test_api_key_creation_and_revocation_are_recorded(client, superuser):
    client.force_login(superuser)
    client.post(reverse("admin:journeys_apikey_add"), {"name": "crm", "scope": "ingest"})
    key = ApiKey.objects.get(name="crm")
    revoke_api_key(key=key)
    entries = list(_entries(ApiKey, key.pk))
    assert [e.action for e in entries] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    assert entries[0].actor == superuser
    assert "key_hash" not in entries[0].changes_dict
    assert entries[1].changes_dict["revoked_at"][0] == "None"
    revoke_api_key(key=key)  # idempotent: no second entry, first time kept
    assert _entries(ApiKey, key.pk).count() == 2


def test_group_membership_changes_are_recorded(client, superuser, viewer):
    client.force_login(superuser)
    editors = Group.objects.get(name="Editor")
    response = client.post(
        reverse("admin:auth_user_change", args=[viewer.pk]),
        {
            "username": viewer.username,
            "is_active": "on",
            "groups": [editors.pk, *viewer.groups.values_list("pk", flat=True)],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content
    membership = [
        e
        for e in LogEntry.objects.get_for_object(viewer).order_by("timestamp", "pk")
        if "groups" in (e.changes_dict or {})
    ]
    assert membership and membership[-1].actor == superuser
    assert membership[-1].changes_dict["groups"]["operation"] == "add"
    assert "Editor" in membership[-1].changes_dict["groups"]["objects"]


def test_admins_see_the_log_and_the_journey_page_links_its_own(client, superuser, viewer):
    journey, _, _ = create_journey(definition=definition(STEPS, key="watched"))
    other, _, _ = create_journey(definition=definition(STEPS, key="unrelated"))
    client.force_login(superuser)
    assert client.get("/admin/auditlog/logentry/").status_code == 200

    client.force_login(viewer)
    editor_page = client.get(f"/journeys/{journey.key}/").content.decode()
    assert f'href="/journeys/{journey.key}/audit/"' in editor_page
    page = client.get(f"/journeys/{journey.key}/audit/")
    assert page.status_code == 200
    rows = page.context["rows"]
    assert rows and all("unrelated" not in row.what for row in rows)
    assert "Audit log" in page.content.decode()


def test_audit_page_is_behind_login(client):
    journey, _, _ = create_journey(definition=definition(STEPS, key="private"))
    response = client.get(f"/journeys/{journey.key}/audit/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_published_version_cannot_be_rewritten():
    journey, version, _ = create_journey(definition=definition(STEPS, key="frozen"))
    live = publish_version(version=version)
    live.definition = {**live.definition, "steps": []}
    with pytest.raises(HistoryIsImmutable):
        live.save()
    with pytest.raises(HistoryIsImmutable):
        live.save(update_fields=["definition"])
    live.refresh_from_db()
    assert live.definition["steps"]
    # Its life still goes on: retiring it is allowed.
    live.state = JourneyVersion.State.RETIRED
    live.save(update_fields=["state"])


def test_an_award_cannot_be_edited():
    award = ConversionAwardFactory(enrollment=EnrollmentFactory())
    award.value = 1_000_000
    with pytest.raises(HistoryIsImmutable):
        award.save()
    assert ConversionAward.objects.get(pk=award.pk).value != 1_000_000


def test_admin_refuses_to_change_a_live_version_or_an_award(client, superuser):
    journey, version, _ = create_journey(definition=definition(STEPS, key="admin-frozen"))
    live = publish_version(version=version)
    award = ConversionAwardFactory(enrollment=EnrollmentFactory())
    client.force_login(superuser)
    for url in (
        reverse("admin:journeys_journeyversion_change", args=[live.pk]),
        reverse("admin:conversions_conversionaward_change", args=[award.pk]),
    ):
        assert client.post(url, {"value": "0"}).status_code == 403
