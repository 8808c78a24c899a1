"""save_conversion, save_goal, archive_conversion, archive_goal, sync_journey_definitions."""

import pytest
from django.db import IntegrityError

from conversions.actions import (
    archive_conversion,
    archive_goal,
    save_conversion,
    save_goal,
    sync_journey_definitions,
)
from conversions.models import Conversion, Goal, Revision
from conversions.tests.factories import ConversionFactory, GoalFactory
from journeys.actions.versions import create_journey, publish_version
from journeys.definition import DefinitionError, parse_definition
from journeys.tests.contract_example import CONTRACT_EXAMPLE, simple_definition
from journeys.tests.factories import JourneyFactory, JourneyVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


def errors_of(call, **kwargs):
    with pytest.raises(DefinitionError) as caught:
        call(**kwargs)
    return caught.value.errors


def test_save_conversion_creates_one_with_a_created_revision():
    journey = JourneyFactory()
    user = UserFactory()

    conversion = save_conversion(
        journey=journey,
        data={"key": "booked", "name": "Booked meeting", "value": 120.5, "window": "P1W"},
        user=user,
    )

    assert (conversion.key, conversion.normalized_name, str(conversion.value)) == (
        "booked",
        "bookedmeeting",
        "120.50",
    )
    revision = Revision.objects.get(conversion=conversion)
    assert (revision.kind, revision.created_by, revision.while_live) == ("created", user, False)
    assert revision.snapshot == {
        "key": "booked",
        "name": "Booked meeting",
        "value": 120.5,
        "counting": "once_per_enrollment",
        "window": "P7D",
    }


@pytest.mark.parametrize("name", ["booked-meeting ", "BOOKED MEETING", "Booked, meeting!"])
def test_a_name_equal_after_normalising_is_refused_naming_the_existing_one(name):
    existing = ConversionFactory(name="Booked meeting")

    errors = errors_of(
        save_conversion, journey=existing.journey, data={"key": "other", "name": name}
    )

    assert errors[0]["loc"] == ["name"]
    assert '"Booked meeting"' in errors[0]["message"]
    assert "'" + existing.key + "'" in errors[0]["message"]


def test_the_same_name_in_another_journey_is_fine():
    ConversionFactory(name="Booked meeting")

    save_conversion(journey=JourneyFactory(), data={"key": "b", "name": "Booked meeting"})


def test_editing_records_the_changes_with_the_user_and_while_live():
    version = JourneyVersionFactory(state="live")
    conversion = save_conversion(
        journey=version.journey, data={"key": "paid", "name": "Paid", "value": 10.0}
    )
    user = UserFactory()

    save_conversion(
        journey=version.journey,
        key="paid",
        data={"name": "Paid plan", "value": 10.0, "counting": "once_per_contact"},
        user=user,
    )

    revision = Revision.objects.filter(conversion=conversion, kind="changed").get()
    assert revision.changes == {
        "name": ["Paid", "Paid plan"],
        "counting": ["once_per_enrollment", "once_per_contact"],
    }
    assert (revision.created_by, revision.while_live) == (user, True)


def test_saving_unchanged_data_records_no_revision():
    journey = JourneyFactory()
    data = {"key": "paid", "name": "Paid", "value": 10.0}
    save_conversion(journey=journey, data=data)

    save_conversion(journey=journey, key="paid", data=data)

    assert Revision.objects.count() == 1


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"key": "x", "name": "X", "value": -1}, ["value"]),
        ({"key": "x", "name": "X", "value": 1.234}, ["value"]),
        ({"key": "x", "name": "X", "window": "P1M"}, ["window"]),
        ({"key": "x", "name": "X", "counting": "twice"}, ["counting"]),
        ({"key": "x", "name": "X", "event": {"value_property": "amount"}}, ["event", "event"]),
        ({"key": "x", "name": "X", "colour": "red"}, ["colour"]),
        ({"key": "Not A Slug", "name": "X"}, ["key"]),
        ({"key": "x", "name": "..."}, ["name"]),
        ({"name": "X"}, ["key"]),
    ],
)
def test_bad_conversion_data_is_refused_with_its_field(data, loc):
    errors = errors_of(save_conversion, journey=JourneyFactory(), data=data)

    assert loc in [error["loc"] for error in errors]
    assert not Conversion.objects.exists()


def test_a_key_cannot_be_reused_or_changed():
    existing = ConversionFactory(key="paid")

    assert errors_of(
        save_conversion, journey=existing.journey, data={"key": "paid", "name": "Other"}
    )[0]["loc"] == ["key"]
    assert errors_of(
        save_conversion, journey=existing.journey, key="paid", data={"key": "won", "name": "W"}
    )[0]["loc"] == ["key"]
    assert errors_of(save_conversion, journey=existing.journey, key="nope", data={"name": "W"})[0][
        "loc"
    ] == ["key"]


def test_save_goal_links_an_active_conversion_of_the_journey():
    conversion = ConversionFactory(key="activation")

    goal = save_goal(
        journey=conversion.journey,
        data={
            "key": "activated",
            "name": "Activated",
            "criteria": {"event": "project_created"},
            "conversion": "activation",
        },
    )

    assert goal.conversion == conversion
    assert Revision.objects.get(goal=goal).kind == "created"


def test_save_goal_refuses_an_unknown_conversion_and_bad_criteria():
    journey = JourneyFactory()

    errors = errors_of(
        save_goal,
        journey=journey,
        data={"key": "g", "name": "G", "criteria": {"evnt": "x"}, "conversion": "nope"},
    )

    locs = [error["loc"] for error in errors]
    assert ["criteria"] in locs or ["criteria", "evnt"] in locs
    assert not Goal.objects.exists()


def test_goal_names_are_unique_per_journey_after_normalising():
    goal = GoalFactory(name="Activated")

    errors = errors_of(
        save_goal,
        journey=goal.journey,
        data={"key": "again", "name": "ACTIVATED", "criteria": {"event": "x"}},
    )

    assert errors[0]["loc"] == ["name"]
    assert '"Activated"' in errors[0]["message"]


def test_archive_is_refused_while_a_live_version_uses_it_and_records_a_revision_otherwise():
    journey, version, _ = create_journey(definition=CONTRACT_EXAMPLE)
    publish_version(version=version)
    paid = Conversion.objects.get(journey=journey, key="paid")
    activation = Conversion.objects.get(journey=journey, key="activation")
    goal = Goal.objects.get(journey=journey, key="activated")

    assert "live version uses" in errors_of(archive_conversion, conversion=paid)[0]["message"]
    assert "Goal 'Activated'" in errors_of(archive_conversion, conversion=activation)[0]["message"]
    assert "live version uses" in errors_of(archive_goal, goal=goal)[0]["message"]

    spare = save_conversion(journey=journey, data={"key": "spare", "name": "Spare"})
    archive_conversion(conversion=spare)
    archive_conversion(conversion=spare)  # twice: nothing more

    spare.refresh_from_db()
    assert spare.archived_at is not None
    revisions = Revision.objects.filter(conversion=spare, kind="archived")
    assert revisions.count() == 1
    assert revisions.get().while_live


def test_saving_an_archived_conversion_restores_it():
    journey = JourneyFactory()
    conversion = save_conversion(journey=journey, data={"key": "c", "name": "C"})
    archive_conversion(conversion=conversion)

    save_conversion(journey=journey, key="c", data={"name": "C"})

    conversion.refresh_from_db()
    assert conversion.archived_at is None
    assert Revision.objects.filter(conversion=conversion, kind="restored").exists()


def test_sync_archives_what_is_left_out_and_is_idempotent():
    journey, _, _ = create_journey(definition=CONTRACT_EXAMPLE)
    definition, _ = parse_definition({**CONTRACT_EXAMPLE, "key": journey.key})
    count = Revision.objects.count()

    sync_journey_definitions(
        journey=journey, goals=definition.goals, conversions=definition.conversions
    )
    assert Revision.objects.count() == count

    sync_journey_definitions(journey=journey, goals=[], conversions=definition.conversions[:1])
    archived = set(
        Conversion.objects.filter(archived_at__isnull=False).values_list("key", flat=True)
    ) | set(Goal.objects.filter(archived_at__isnull=False).values_list("key", flat=True))
    assert archived == {"activation", "activated"}


def test_the_database_refuses_a_duplicate_normalised_name_that_gets_past_the_check():
    existing = ConversionFactory(name="Paid")

    with pytest.raises(IntegrityError):
        ConversionFactory(journey=existing.journey, name="PAID")


def test_a_name_race_lost_at_the_constraint_is_reported_as_the_same_error(monkeypatch):
    existing = ConversionFactory(name="Paid")
    # As if the other writer committed between the check and the insert.
    monkeypatch.setattr("conversions.actions._check_name_free", lambda *args, **kwargs: None)

    errors = errors_of(
        save_conversion, journey=existing.journey, data={"key": "other", "name": "paid!"}
    )

    assert errors[0]["loc"] == ["name"]
    assert '"Paid"' in errors[0]["message"]


def test_simple_definition_conversions_are_synced_on_create():
    journey, _, _ = create_journey(definition=simple_definition("one"))

    assert list(journey.conversions.values_list("key", "name")) == [("paid", "Paid")]
