import pytest
from django.core.management import CommandError, call_command
from django.db.models import F

from conversions.models import ConversionAward
from journeys.definition import parse_definition
from journeys.demo import demo_definitions
from journeys.models import DeliveryEvent, Enrollment, Event, JourneyVersion, OutboxMessage

pytestmark = pytest.mark.django_db


def test_every_demo_definition_is_valid():
    for definition in demo_definitions():
        parse_definition(definition)


def test_seed_demo_runs_the_engine_over_weeks_with_two_versions_each():
    call_command("seed_demo", days=14, contacts_per_day=6, seed=3)

    versions = JourneyVersion.objects.order_by("journey__key", "number")
    by_journey = {}
    for version in versions:
        by_journey.setdefault(version.journey.key, []).append(version)
    assert set(by_journey) == {"lead-to-customer", "trial-to-paid", "sales-follow-up", "renewal"}
    assert all(len(pair) == 2 for pair in by_journey.values())
    # The trial journey runs its versions side by side; the others replaced version 1.
    trial = by_journey["trial-to-paid"]
    assert [v.state for v in trial] == ["live", "live"]
    assert trial[1].traffic == 50
    assert [v.state for v in by_journey["renewal"]] == ["retired", "live"]

    for journey_versions in by_journey.values():
        for version in journey_versions:
            assert Enrollment.objects.filter(version=version).exists(), version
    assert ConversionAward.objects.filter(source=ConversionAward.Source.EVENT).exists()
    assert ConversionAward.objects.filter(source=ConversionAward.Source.GOAL).exists()
    assert ConversionAward.objects.filter(source=ConversionAward.Source.CONVERT_STEP).exists()
    assert not Event.objects.filter(status=Event.Status.PENDING).exists()
    assert not Enrollment.objects.filter(state=Enrollment.State.FAILED).exists()


def test_seed_demo_refuses_to_run_twice():
    call_command("seed_demo", days=2, contacts_per_day=2)
    with pytest.raises(CommandError, match="already exist"):
        call_command("seed_demo", days=2, contacts_per_day=2)


def test_the_demos_emails_get_simulated_feedback_through_the_webhooks_action():
    call_command("seed_demo", days=14, contacts_per_day=6, seed=3)
    emails = OutboxMessage.objects.filter(channel="email", sent_at__isnull=False)
    assert emails.exists()
    assert emails.filter(delivered_at__isnull=False).count() > emails.count() * 0.8
    assert emails.filter(opened_at__isnull=False).exists()
    assert emails.filter(clicked_at__isnull=False).exists()
    assert DeliveryEvent.objects.filter(provider="Demo").count() >= emails.count()
    assert not emails.filter(delivered_at__lt=F("sent_at")).exists()
