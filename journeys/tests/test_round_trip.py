"""A definition round-trips through the database: export -> import -> export is identical,
for the contract's example and for generated definitions."""

import copy

import pytest
from django.db import transaction
from hypothesis import HealthCheck, assume, given, settings

from journeys.actions.versions import create_journey, publish_version, save_draft_version
from journeys.definition import (
    format_duration,
    parse_definition,
    parse_duration,
    render_definition,
    storable_errors,
)
from journeys.selectors import journey_definition
from journeys.tests.contract_example import CONTRACT_EXAMPLE
from journeys.tests.test_definition import definitions

pytestmark = pytest.mark.django_db


def as_stored(definition: dict) -> dict:
    """What the database gives back for a canonical definition: the journey, its goals and
    conversions keep an empty description as none, and a conversion's window (a duration
    column) in days, hours, minutes and seconds."""
    definition = copy.deepcopy(definition)
    for item in [definition, *definition["goals"], *definition["conversions"]]:
        if item.get("description") == "":
            del item["description"]
    for conversion in definition["conversions"]:
        if "window" in conversion:
            conversion["window"] = format_duration(parse_duration(conversion["window"]))
    return definition


def assert_round_trips(data: dict) -> None:
    journey, first, _ = create_journey(definition=data)
    exported = journey_definition(journey=journey)
    assert exported == as_stored(render_definition(parse_definition(data)[0]))

    publish_version(version=first)
    second = save_draft_version(journey=journey, definition=copy.deepcopy(exported)).version

    assert second.number == 2
    assert journey_definition(journey=journey, version=second) == exported
    assert journey_definition(journey=journey, version=first) == exported


def test_the_contract_example_round_trips():
    assert_round_trips(CONTRACT_EXAMPLE)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=definitions())
def test_generated_definitions_round_trip_through_the_database(data):
    # Refused before storage (see test_api_journeys): NUL characters, floats from 10^16 up.
    assume(not storable_errors(data))
    # Each example in its own savepoint, rolled back, so keys can repeat across examples.
    with transaction.atomic():
        assert_round_trips(data)
        transaction.set_rollback(True)
