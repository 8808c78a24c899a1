"""Flows keep what they read of the journeys' catalogue per process, under a signature."""

from decimal import Decimal

import pytest

from conversions.actions import save_conversion
from journeys.flows import listening, load_flows
from journeys.models import JourneyVersion
from journeys.tests.actions.scenarios import PAID, WAIT_STEPS
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db


def flows_of(version):
    version = JourneyVersion.objects.select_related("journey").get(pk=version.pk)
    return load_flows(versions=[version])[version.pk]


def test_goals_and_conversions_are_read_once_until_one_is_edited(django_assert_num_queries):
    journey, version = live_journey(WAIT_STEPS, conversions=[PAID])
    assert flows_of(version).conversions["paid"].value == Decimal("49.00")
    version = JourneyVersion.objects.select_related("journey").get(pk=version.pk)
    with django_assert_num_queries(1):  # the signature, nothing else
        load_flows(versions=[version])

    save_conversion(journey=journey, data={**PAID, "value": 99.0}, key="paid")
    assert flows_of(version).conversions["paid"].value == Decimal("99.00")


def test_an_edit_moves_what_is_listened_to():
    journey, _ = live_journey(WAIT_STEPS, conversions=[PAID])
    assert "purchase" not in listening().names
    save_conversion(journey=journey, data={**PAID, "event": {"event": "purchase"}}, key="paid")
    assert "purchase" in listening().names
