"""The conversions data model's invariants are database constraints: names unique per
journey after normalising, and each counting mode of awards."""

import pytest
from django.db import IntegrityError, transaction

from conversions.models import Counting
from conversions.tests.factories import (
    ConversionAwardFactory,
    ConversionFactory,
    GoalAchievementFactory,
    GoalFactory,
)
from journeys.tests.factories import EnrollmentFactory

pytestmark = pytest.mark.django_db


def refused(factory, **kwargs):
    with pytest.raises(IntegrityError), transaction.atomic():
        factory(**kwargs)


def test_conversion_keys_and_normalised_names_are_unique_per_journey():
    conversion = ConversionFactory(key="paid", name="Booked meeting")

    refused(ConversionFactory, journey=conversion.journey, key="paid")
    refused(ConversionFactory, journey=conversion.journey, name="booked-meeting ")
    ConversionFactory(name="Booked meeting")  # another journey


def test_goal_keys_and_normalised_names_are_unique_per_journey():
    goal = GoalFactory(key="activated", name="Activated")

    refused(GoalFactory, journey=goal.journey, key="activated")
    refused(GoalFactory, journey=goal.journey, name="ACTIVATED!")


def test_conversion_value_cannot_be_negative():
    refused(ConversionFactory, value=-1)


def test_once_per_enrollment_awards_once_per_enrollment():
    award = ConversionAwardFactory()

    refused(ConversionAwardFactory, enrollment=award.enrollment, conversion=award.conversion)


def test_once_per_contact_awards_once_per_contact_across_enrollments():
    award = ConversionAwardFactory(conversion__counting=Counting.ONCE_PER_CONTACT)
    second = EnrollmentFactory(version=award.version, contact=award.contact)

    refused(ConversionAwardFactory, enrollment=second, conversion=award.conversion)


def test_every_time_awards_once_per_source():
    award = ConversionAwardFactory(conversion__counting=Counting.EVERY_TIME, dedupe_key="event:1")
    ConversionAwardFactory(
        enrollment=award.enrollment, conversion=award.conversion, dedupe_key="event:2"
    )

    refused(
        ConversionAwardFactory,
        enrollment=award.enrollment,
        conversion=award.conversion,
        dedupe_key="event:1",
    )


def test_a_goal_is_achieved_once_per_enrollment():
    achievement = GoalAchievementFactory()

    refused(GoalAchievementFactory, enrollment=achievement.enrollment, goal=achievement.goal)
