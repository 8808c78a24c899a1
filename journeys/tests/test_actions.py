"""create_journey, save_draft_version and publish_version."""

import threading

import pytest
from django.db import connection

from conversions.models import Conversion, Goal, Revision
from journeys.actions import (
    VersionStateError,
    create_journey,
    publish_version,
    save_draft_version,
)
from journeys.definition import DefinitionError, parse_definition, render_definition
from journeys.models import Journey, JourneyVersion
from journeys.selectors import journey_definition
from journeys.tests.contract_example import CONTRACT_EXAMPLE, contract_example, simple_definition
from journeys.tests.factories import EnrollmentFactory, UserFactory

pytestmark = pytest.mark.django_db

LIVE, RETIRED, DRAFT = "live", "retired", "draft"


def states(journey):
    return [
        (v.number, v.state, v.traffic)
        for v in JourneyVersion.objects.filter(journey=journey).order_by("number")
    ]


def new_draft(journey, **changes):
    return save_draft_version(journey=journey, definition=simple_definition(journey.key, **changes))


def test_create_journey_stores_version_1_canonical_with_its_steps_in_order():
    user = UserFactory()

    journey, version, warnings = create_journey(definition=CONTRACT_EXAMPLE, user=user)

    assert (journey.key, journey.name, journey.status) == (
        "trial-nurture",
        "Trial nurture",
        "draft",
    )
    assert journey.description == "Turn trials into paid plans"
    assert (version.number, version.state, version.created_by) == (1, DRAFT, user)
    canonical = render_definition(parse_definition(CONTRACT_EXAMPLE)[0])
    assert version.definition == {
        part: canonical[part] for part in ("settings", "triggers", "exit_when", "steps")
    }
    assert len(warnings) == 2


def test_create_journey_writes_goals_and_conversions_with_created_revisions():
    user = UserFactory()

    journey, _, _ = create_journey(definition=CONTRACT_EXAMPLE, user=user)

    paid = Conversion.objects.get(journey=journey, key="paid")
    assert (paid.name, paid.normalized_name, str(paid.value)) == (
        "Started paid plan",
        "startedpaidplan",
        "49.00",
    )
    assert (paid.counting, paid.window.days, paid.event_name, paid.value_property) == (
        "once_per_enrollment",
        30,
        "subscription_started",
        "amount",
    )
    goal = Goal.objects.get(journey=journey)
    assert (goal.key, goal.conversion.key, goal.criteria) == (
        "activated",
        "activation",
        {"event": "project_created"},
    )
    revisions = Revision.objects.filter(journey=journey)
    assert sorted(r.kind for r in revisions) == ["created"] * 3
    assert {r.created_by for r in revisions} == {user}
    assert not any(r.while_live for r in revisions)


def test_create_journey_refuses_an_invalid_definition_and_writes_nothing():
    with pytest.raises(DefinitionError) as caught:
        create_journey(definition=contract_example(steps=[]))

    assert caught.value.errors[0]["loc"] == ["steps"]
    assert not Journey.objects.exists()


def test_create_journey_refuses_a_taken_key():
    create_journey(definition=simple_definition("one"))

    with pytest.raises(DefinitionError) as caught:
        create_journey(definition=simple_definition("one"))

    assert caught.value.errors[0]["loc"] == ["key"]


def test_save_draft_replaces_the_unpublished_draft_and_its_steps():
    journey, first, _ = create_journey(definition=simple_definition("one"))

    result = new_draft(
        journey, name="Renamed", steps=[{"key": "bye", "type": "exit"}], conversions=[]
    )

    assert result.version.pk == first.pk
    assert result.version.number == 1
    first.refresh_from_db()
    assert [step["key"] for step in first.definition["steps"]] == ["bye"]
    journey.refresh_from_db()
    assert journey.name == "Renamed"
    assert JourneyVersion.objects.filter(journey=journey).count() == 1


def test_save_draft_after_publish_makes_the_next_version_and_keeps_the_live_one():
    journey, first, _ = create_journey(definition=simple_definition("one"))
    publish_version(version=first)

    result = new_draft(journey, name="Second")

    assert result.version.number == 2
    assert states(journey) == [(1, LIVE, None), (2, DRAFT, None)]
    first.refresh_from_db()
    assert first.definition["steps"][0]["key"] == "hello"


def test_save_draft_refuses_another_key():
    journey, _, _ = create_journey(definition=simple_definition("one"))

    with pytest.raises(DefinitionError) as caught:
        save_draft_version(journey=journey, definition=simple_definition("two"))

    assert caught.value.errors == [
        {
            "loc": ["key"],
            "message": "The key must stay 'one': a new version belongs to the same journey "
            "(create a new journey to use another key)",
        }
    ]


def test_invalid_draft_is_kept_for_the_editor_with_its_errors_but_cannot_be_published():
    journey, _, _ = create_journey(definition=simple_definition("one"))
    broken = simple_definition(
        "one",
        conversions=[{"key": "paid", "name": "Paid"}, {"key": "won", "name": "Won"}],
        steps=[{"key": "a", "type": "send_sms", "text": "Hi", "next": "missing"}],
    )

    result = save_draft_version(journey=journey, definition=broken, allow_invalid=True)

    assert [e["loc"] for e in result.errors] == [["steps", 0, "next"]]
    # The journey's conversions are untouched until the draft is valid...
    assert list(Conversion.objects.filter(journey=journey).values_list("key", flat=True)) == [
        "paid"
    ]
    # ...and nothing the editor typed is lost.
    assert journey_definition(journey=journey)["conversions"][1] == {
        "key": "won",
        "name": "Won",
        "value": 0.0,
        "counting": "once_per_enrollment",
    }
    with pytest.raises(DefinitionError):
        publish_version(version=result.version)


def test_publish_retires_the_live_version_and_rollback_publishes_a_retired_one():
    journey, first, _ = create_journey(definition=simple_definition("one"))
    publish_version(version=first)
    second = new_draft(journey, name="Two").version
    EnrollmentFactory(version=first)

    publish_version(version=second)
    assert states(journey) == [(1, RETIRED, None), (2, LIVE, None)]

    publish_version(version=first)
    assert states(journey) == [(1, LIVE, None), (2, RETIRED, None)]
    first.refresh_from_db()
    assert first.retired_at is None
    assert first.enrollments.count() == 1
    journey.refresh_from_db()
    assert journey.status == "live"


def test_publish_with_traffic_splits_new_enrollments_until_one_is_published_alone():
    journey, first, _ = create_journey(definition=simple_definition("one"))
    publish_version(version=first)
    second = new_draft(journey, name="Two").version

    publish_version(version=second, traffic=25)

    assert states(journey) == [(1, LIVE, 75), (2, LIVE, 25)]
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.split_with, second.split_with) == (second, first)

    # The share can change while both are live.
    publish_version(version=second, traffic=50)
    assert states(journey) == [(1, LIVE, 50), (2, LIVE, 50)]

    # A third version cannot join a split of two.
    third = new_draft(journey, name="Three").version
    with pytest.raises(VersionStateError):
        publish_version(version=third, traffic=10)

    publish_version(version=first)
    assert states(journey) == [(1, LIVE, None), (2, RETIRED, None), (3, DRAFT, None)]
    second.refresh_from_db()
    assert second.split_with == first  # kept, so reports know they ran side by side


def test_publishing_the_only_live_version_again_is_refused():
    _, first, _ = create_journey(definition=simple_definition("one"))
    publish_version(version=first)

    with pytest.raises(VersionStateError, match="already live"):
        publish_version(version=first)


@pytest.mark.parametrize("traffic", [0, 100, -5, True, 12.5])
def test_traffic_must_be_1_to_99(traffic):
    journey, first, _ = create_journey(definition=simple_definition("one"))
    publish_version(version=first)
    second = new_draft(journey, name="Two").version

    with pytest.raises(DefinitionError) as caught:
        publish_version(version=second, traffic=traffic)

    assert caught.value.errors[0]["loc"] == ["traffic"]
    assert states(journey) == [(1, LIVE, None), (2, DRAFT, None)]


def test_changing_a_conversion_of_a_live_journey_records_a_dated_revision_with_the_change():
    journey, first, _ = create_journey(definition=CONTRACT_EXAMPLE)
    publish_version(version=first)
    user = UserFactory()
    definition = contract_example()
    definition["conversions"][0]["value"] = 59.0
    definition["conversions"][0]["window"] = "P14D"

    save_draft_version(journey=journey, definition=definition, user=user)

    revision = Revision.objects.filter(journey=journey, kind="changed").get()
    assert revision.conversion.key == "paid"
    assert revision.changes == {"value": [49.0, 59.0], "window": ["P30D", "P14D"]}
    assert revision.snapshot["value"] == 59.0
    assert (revision.while_live, revision.created_by) == (True, user)


def test_saving_the_same_definition_twice_records_no_second_revision():
    journey, _, _ = create_journey(definition=CONTRACT_EXAMPLE)
    count = Revision.objects.count()

    save_draft_version(journey=journey, definition=CONTRACT_EXAMPLE)

    assert Revision.objects.count() == count


def test_a_conversion_left_out_is_archived_and_older_versions_keep_it():
    journey, first, _ = create_journey(definition=CONTRACT_EXAMPLE)
    publish_version(version=first)
    without_paid = contract_example(
        exit_when=[],
        conversions=[CONTRACT_EXAMPLE["conversions"][1]],
    )
    without_paid["steps"][7] = {"key": "convert", "type": "exit"}

    save_draft_version(journey=journey, definition=without_paid)

    paid = Conversion.objects.get(journey=journey, key="paid")
    assert paid.archived_at is not None
    assert Revision.objects.get(conversion=paid, kind="archived").while_live
    v1 = journey_definition(journey=journey, version=first)
    assert {c["key"] for c in v1["conversions"]} == {"paid", "activation"}
    assert [c["key"] for c in journey_definition(journey=journey)["conversions"]] == ["activation"]

    # Bringing it back restores the same row.
    save_draft_version(journey=journey, definition=CONTRACT_EXAMPLE)
    paid.refresh_from_db()
    assert paid.archived_at is None
    assert Revision.objects.filter(conversion=paid, kind="restored").count() == 1


def test_a_new_conversion_cannot_take_the_name_of_an_archived_one():
    journey, _, _ = create_journey(definition=simple_definition("one"))
    new_draft(
        journey,
        conversions=[{"key": "won", "name": "Won"}],
        steps=[{"key": "w", "type": "convert", "conversion": "won"}],
    )

    with pytest.raises(DefinitionError) as caught:
        new_draft(
            journey,
            conversions=[{"key": "paid-v2", "name": "paid "}],
            steps=[{"key": "w", "type": "convert", "conversion": "paid-v2"}],
        )

    (error,) = caught.value.errors
    assert error["loc"] == ["conversions", 0, "name"]
    assert '"Paid"' in error["message"] and "archived" in error["message"]


def test_two_conversions_can_swap_names_in_one_version():
    conversions = [{"key": "a", "name": "Alpha"}, {"key": "b", "name": "Beta"}]
    steps = [
        {"key": "s1", "type": "convert", "conversion": "a", "next": "s2"},
        {"key": "s2", "type": "convert", "conversion": "b"},
    ]
    journey, _, _ = create_journey(
        definition=simple_definition("one", conversions=conversions, steps=steps)
    )

    swapped = [{"key": "a", "name": "Beta"}, {"key": "b", "name": "Alpha"}]
    new_draft(journey, conversions=swapped, steps=steps)

    assert dict(Conversion.objects.filter(journey=journey).values_list("key", "name")) == {
        "a": "Beta",
        "b": "Alpha",
    }


def test_other_journeys_are_resolved_from_the_database():
    create_journey(definition=simple_definition("lead-nurture"))
    definition = simple_definition(
        "second",
        triggers=[
            {"type": "conversion", "journey": "lead-nurture", "conversion": "paid"},
            {"type": "conversion", "journey": "lead-nurture", "conversion": "nope"},
            {"type": "goal", "journey": "ghost", "goal": "g"},
        ],
    )

    _, _, warnings = create_journey(definition=definition)

    assert [w["loc"] for w in warnings] == [
        ["triggers", 1, "conversion"],
        ["triggers", 2, "journey"],
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_publishes_never_leave_two_versions_live_without_a_split():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")
    journey, first, _ = create_journey(definition=simple_definition("one"))
    publish_version(version=first)
    second = new_draft(journey, name="Two").version
    publish_version(version=second)
    third = new_draft(journey, name="Three").version
    barrier = threading.Barrier(3)
    errors = []

    def publish(version):
        try:
            barrier.wait()
            publish_version(version=version)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=publish, args=(v,)) for v in (first, second, third)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    live = JourneyVersion.objects.filter(journey=journey, state=LIVE)
    # Whichever order the locks gave, exactly one version is live (publishing the live one
    # alone again is refused).
    assert live.count() == 1
    assert all(isinstance(error, VersionStateError) for error in errors)
