import datetime
import re

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F, Min

from conversions.models import Conversion, ConversionAward, Goal, Revision
from journeys.definition import parse_definition
from journeys.demo import demo_definitions, seed_demo
from journeys.models import (
    Contact,
    DeliveryEvent,
    Enrollment,
    Event,
    Journey,
    JourneyVersion,
    OutboxMessage,
)
from reporting import selectors, stats

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
    # The trial and renewal journeys run their versions side by side from the first day;
    # the others replaced version 1 halfway.
    for key in ("trial-to-paid", "renewal"):
        pair = by_journey[key]
        assert [v.state for v in pair] == ["live", "live"]
        assert pair[1].traffic == 50
        assert pair[0].published_at == pair[1].published_at
        # From a midnight: every enrollment falls on a whole day of the split.
        assert pair[0].published_at.time() == datetime.time(0)
    assert [v.state for v in by_journey["sales-follow-up"]] == ["retired", "live"]

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


def test_demo_step_keys_say_their_wait():
    # A key is what people read in the funnel and the paths: `wait-2d` must wait two days.
    for definition in demo_definitions():
        for step in definition["steps"]:
            found = re.fullmatch(r"wait-(\d+)d", step["key"])
            if found:
                assert step["duration"] == f"P{found[1]}D", (definition["key"], step)


def test_the_default_demo_reaches_a_verdict_and_tells_the_truth_about_its_dates():
    # The full default seed, as bin/run loads it: what the README and the screenshots show.
    seed_demo()

    verdicts = {}
    for journey in Journey.objects.all():
        report = selectors.version_report(selectors.report_context(journey=journey))
        verdicts[journey.key] = report
    trial = verdicts["trial-to-paid"].versions[1].comparison
    assert trial.kind == stats.RANDOMIZED
    assert trial.enough_data and trial.significant, trial.verdict
    assert trial.p_value_always_valid < stats.ALPHA
    assert trial.verdict.startswith("v2 converts better than v1")
    renewal = verdicts["renewal"].versions[1].comparison
    assert renewal.kind == stats.RANDOMIZED
    assert renewal.enough_data and not renewal.significant, renewal.verdict
    assert renewal.verdict.startswith("No clear difference")
    lift = verdicts["lead-to-customer"].holdout
    assert lift.held_out_converted > 0
    assert lift.diff > 0

    first_entry = Enrollment.objects.aggregate(first=Min("started_at"))["first"]
    for model in (Conversion, Goal):
        assert not model.objects.filter(created_at__gt=first_entry).exists(), model
    assert not Revision.objects.filter(created_at__gt=first_entry).exists()
    # Contacts were known before the event that brought them into their first journey.
    late = Contact.objects.annotate(first=Min("events__timestamp")).filter(
        created_at__gt=F("first")
    )
    assert not late.exists()
    assert Contact.objects.values("created_at__date").distinct().count() > 56
