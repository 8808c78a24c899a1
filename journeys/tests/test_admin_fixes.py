"""Issue 14, bug 7: a journey can be deleted from admin with its derived rows; outbox rows
are read-only history (the retry action stays); durations read as people write them; the
audit page says what changed in words."""

import datetime

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError
from django.db.models import RestrictedError
from django.utils import timezone

from conversions.tests.factories import ConversionAwardFactory, ConversionFactory
from journeys.actions.versions import create_journey, save_draft_version
from journeys.admin import HumanDurationField
from journeys.audit import describe_changes
from journeys.models import Journey, OutboxMessage, StepVisit
from journeys.tests.factories import EnrollmentFactory, JourneyVersionFactory
from journeys.tests.flows import definition as flow
from reporting.models import ConversionDay, StepDay, VersionDay

pytestmark = pytest.mark.django_db


@pytest.fixture
def journey_with_history(db):
    version = JourneyVersionFactory()
    enrollment = EnrollmentFactory(version=version)
    visit = StepVisit.objects.create(
        enrollment=enrollment, version=version, step_key="welcome", seq=0, entered_at=timezone.now()
    )
    OutboxMessage.objects.create(
        visit=visit,
        enrollment=enrollment,
        contact=enrollment.contact,
        step_key="welcome",
        channel="email",
        recipient="a@example.com",
        due_at=timezone.now(),
    )
    award = ConversionAwardFactory(enrollment=enrollment)
    today = datetime.date.today()
    VersionDay.objects.create(version=version, day=today, held_out=False, enrolled=1)
    StepDay.objects.create(version=version, day=today, step_key="welcome", entered=1)
    ConversionDay.objects.create(
        conversion=award.conversion, version=version, day=today, held_out=False, converted=1
    )
    return version.journey


def test_a_superuser_deletes_a_journey_with_its_report_rollups(
    client, superuser, journey_with_history
):
    client.force_login(superuser)
    url = f"/admin/journeys/journey/{journey_with_history.pk}/delete/"
    page = client.get(url).content.decode()
    assert "would require deleting the following protected" not in page
    assert "permission to delete" not in page
    response = client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Journey.objects.filter(pk=journey_with_history.pk).exists()
    assert not VersionDay.objects.exists()
    assert not StepDay.objects.exists()


def test_report_rollups_alone_still_cannot_be_deleted_by_hand(
    client, superuser, journey_with_history
):
    client.force_login(superuser)
    row = StepDay.objects.get()
    assert client.get(f"/admin/reporting/stepday/{row.pk}/delete/").status_code == 403


def test_a_version_with_enrollments_still_cannot_be_deleted_alone(journey_with_history):
    version = journey_with_history.versions.get()
    with pytest.raises(RestrictedError):
        version.delete()


def test_an_outbox_message_is_read_only_and_failed_ones_can_be_retried(
    client, superuser, journey_with_history
):
    client.force_login(superuser)
    message = OutboxMessage.objects.get()
    message.status = OutboxMessage.Status.FAILED
    message.body = "the body as sent"
    message.save()
    url = f"/admin/journeys/outboxmessage/{message.pk}/change/"
    page = client.get(url).content.decode()
    assert 'name="status"' not in page
    assert 'name="body"' not in page
    assert 'name="_save"' not in page
    response = client.post(url, {"status": "sent", "body": "rewritten", "_save": "Save"})
    assert response.status_code == 403
    message.refresh_from_db()
    assert (message.status, message.body) == ("failed", "the body as sent")
    response = client.post(
        "/admin/journeys/outboxmessage/",
        {"action": "retry_failed_messages", "_selected_action": [message.pk]},
    )
    assert response.status_code == 302
    message.refresh_from_db()
    assert message.status == OutboxMessage.Status.PENDING


def test_durations_read_as_words_in_admin(client, superuser):
    conversion = ConversionFactory(window=datetime.timedelta(days=7))
    client.force_login(superuser)
    pages = [
        client.get("/admin/conversions/conversion/").content.decode(),
        client.get(f"/admin/conversions/conversion/{conversion.pk}/change/").content.decode(),
    ]
    for page in pages:
        assert "00:00:00" not in page
        assert "0:00:00" not in page
        assert "1 week" in page


def test_an_admin_duration_is_typed_in_words_and_a_bad_one_is_named():
    field = HumanDurationField(required=False)
    assert field.clean("2 days") == datetime.timedelta(days=2)
    assert field.clean("P1DT12H") == datetime.timedelta(days=1, hours=12)
    assert field.clean("") is None
    with pytest.raises(ValidationError, match="'soon' is not a duration"):
        field.clean("soon")


AUDITED_STEPS = [
    {"key": "hello", "type": "send_email", "subject": "Hi", "body": "Hello", "next": "nudge"},
    {"key": "nudge", "type": "wait", "duration": "P2D", "next": None},
]


def test_the_audit_page_says_what_changed_in_words(client, viewer):
    journey, _, _ = create_journey(definition=flow(AUDITED_STEPS, key="audited"))
    steps = [
        {**AUDITED_STEPS[0], "subject": "Hello there"},
        {**AUDITED_STEPS[1], "duration": "P1D", "next": "bye"},
        {"key": "bye", "type": "exit"},
    ]
    save_draft_version(journey=journey, definition=flow(steps, key="audited"))
    client.force_login(viewer)
    html = client.get(f"/journeys/{journey.key}/audit/").content.decode()
    assert "Changed the wait in step &#x27;nudge&#x27; from 2 days to 1 day" in html
    assert "Changed the subject in step &#x27;hello&#x27; from “Hi” to “Hello there”" in html
    assert "Added step &#x27;bye&#x27;" in html
    assert "Started with 2 steps: &#x27;hello&#x27;, &#x27;nudge&#x27;" in html
    # reverse relations and raw values are not shown
    assert "Enrollment.None" not in html
    assert "enrollments" not in html
    assert '{"exit_when"' not in html


def test_an_audited_duration_reads_in_words(superuser):
    conversion = ConversionFactory(window=datetime.timedelta(days=7))
    conversion.window = datetime.timedelta(days=1)
    conversion.save()
    entry = LogEntry.objects.get_for_object(conversion).filter(action=LogEntry.Action.UPDATE).get()
    assert "Changed window from 1 week to 1 day" in describe_changes(entry)


def test_the_auditlog_admin_says_what_changed_in_words(client, superuser):
    journey, version, _ = create_journey(definition=flow(AUDITED_STEPS, key="audited"))
    steps = [AUDITED_STEPS[0], {**AUDITED_STEPS[1], "duration": "P1D"}]
    save_draft_version(journey=journey, definition=flow(steps, key="audited"))
    client.force_login(superuser)
    listing = client.get("/admin/auditlog/logentry/").content.decode()
    assert "Changed the wait in step &#x27;nudge&#x27; from 2 days to 1 day" in listing
    assert "Enrollment.None" not in listing
    entry = LogEntry.objects.get_for_object(version).filter(action=LogEntry.Action.UPDATE).get()
    page = client.get(f"/admin/auditlog/logentry/{entry.pk}/change/").content.decode()
    assert "<li>Changed the wait in step &#x27;nudge&#x27; from 2 days to 1 day</li>" in page
