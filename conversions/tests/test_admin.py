"""Every admin page of the conversions app loads; edits go through the actions (names
checked, revisions kept); awards, achievements and revisions are read-only."""

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from conversions.models import Conversion, Goal, Revision
from conversions.tests.factories import (
    ConversionAwardFactory,
    ConversionFactory,
    GoalAchievementFactory,
    GoalFactory,
)
from journeys.tests.test_admin import assert_admin_pages_load

pytestmark = pytest.mark.django_db

CONVERSION_MODELS = [
    model for model in admin.site._registry if model._meta.app_label == "conversions"
]


@pytest.fixture
def one_of_each(db):
    award = ConversionAwardFactory()
    achievement = GoalAchievementFactory(enrollment=award.enrollment)
    Revision.objects.create(
        journey=award.journey,
        conversion=award.conversion,
        kind="created",
        snapshot={"key": award.conversion.key},
        created_at=timezone.now(),
    )
    Revision.objects.create(
        journey=award.journey,
        goal=achievement.goal,
        kind="archived",
        snapshot={"key": achievement.goal.key},
        created_at=timezone.now(),
    )


def test_every_conversions_model_is_registered():
    assert {model.__name__ for model in CONVERSION_MODELS} == {
        "Conversion",
        "Goal",
        "Revision",
        "GoalAchievement",
        "ConversionAward",
    }


@pytest.mark.parametrize("model", CONVERSION_MODELS, ids=lambda model: model.__name__)
def test_admin_pages_load_for_every_model(client, superuser, one_of_each, model):
    client.force_login(superuser)

    assert_admin_pages_load(client, model, addable=model in (Conversion, Goal))


@pytest.mark.parametrize("model", ["revision", "goalachievement", "conversionaward"])
def test_history_is_read_only(client, superuser, one_of_each, model):
    client.force_login(superuser)
    obj = admin.site._registry[
        next(m for m in CONVERSION_MODELS if m._meta.model_name == model)
    ].model.objects.first()

    response = client.post(reverse(f"admin:conversions_{model}_change", args=[obj.pk]), {})

    assert response.status_code == 403


def conversion_form(**changes):
    data = {
        "name": "Booked meeting",
        "description": "",
        "value": "10.00",
        "counting": "once_per_enrollment",
        "window": "",
        "event_name": "",
        "event_where": "[]",
        "value_property": "",
    }
    return {**data, **changes}


def test_editing_a_conversion_in_the_admin_records_a_revision(client, superuser):
    client.force_login(superuser)
    conversion = ConversionFactory(name="Booked meeting", value=10)

    response = client.post(
        reverse("admin:conversions_conversion_change", args=[conversion.pk]),
        conversion_form(value="25.00", window="P7D"),
    )

    assert response.status_code == 302
    conversion.refresh_from_db()
    assert (str(conversion.value), conversion.window.days) == ("25.00", 7)
    revision = Revision.objects.get(conversion=conversion)
    assert revision.changes == {"value": [10.0, 25.0], "window": [None, "P7D"]}
    assert revision.created_by == superuser


def test_a_duplicate_name_is_an_inline_error_naming_the_existing_conversion(client, superuser):
    client.force_login(superuser)
    existing = ConversionFactory(name="Booked meeting")

    response = client.post(
        reverse("admin:conversions_conversion_add"),
        conversion_form(journey=existing.journey.pk, key="meeting", name="booked-meeting "),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Booked meeting" in errors["name"][0]
    assert Conversion.objects.count() == 1


def test_adding_a_goal_in_the_admin_links_its_conversion(client, superuser):
    client.force_login(superuser)
    conversion = ConversionFactory()

    response = client.post(
        reverse("admin:conversions_goal_add"),
        {
            "journey": conversion.journey.pk,
            "key": "activated",
            "name": "Activated",
            "description": "",
            "criteria": '{"event": "project_created"}',
            "conversion": conversion.pk,
        },
    )

    assert response.status_code == 302
    goal = Goal.objects.get(key="activated")
    assert goal.conversion == conversion
    assert Revision.objects.get(goal=goal).kind == "created"


def test_a_goal_with_bad_criteria_is_an_inline_error(client, superuser):
    client.force_login(superuser)
    goal = GoalFactory()

    response = client.post(
        reverse("admin:conversions_goal_change", args=[goal.pk]),
        {"name": goal.name, "description": "", "criteria": '{"evnt": "x"}', "conversion": ""},
    )

    assert response.status_code == 200
    assert "criteria" in response.context["adminform"].form.errors


def test_an_event_filter_error_shows_beside_the_filter(client, superuser):
    client.force_login(superuser)
    conversion = ConversionFactory()

    response = client.post(
        reverse("admin:conversions_conversion_change", args=[conversion.pk]),
        conversion_form(name=conversion.name, event_name="purchase", event_where='[{"x": 1}]'),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["event_where"]


def test_an_event_filter_without_an_event_asks_for_the_event(client, superuser):
    client.force_login(superuser)
    conversion = ConversionFactory()

    response = client.post(
        reverse("admin:conversions_conversion_change", args=[conversion.pk]),
        conversion_form(name=conversion.name, value_property="amount"),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["event_name"] == ["Name the event that these filters apply to."]


def test_a_goal_cannot_award_a_conversion_of_another_journey(client, superuser):
    client.force_login(superuser)
    goal = GoalFactory()
    elsewhere = ConversionFactory()

    response = client.post(
        reverse("admin:conversions_goal_change", args=[goal.pk]),
        {
            "name": goal.name,
            "description": "",
            "criteria": '{"event": "x"}',
            "conversion": elsewhere.pk,
        },
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["conversion"][0] == "Choose a conversion of the same journey."
    assert Goal.objects.get(pk=goal.pk).conversion is None
