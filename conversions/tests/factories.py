import factory
from django.utils import timezone

from conversions.models import Conversion, ConversionAward, Counting, Goal, GoalAchievement
from journeys.definition import normalize_name
from journeys.tests.factories import EnrollmentFactory, JourneyFactory


class ConversionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversion

    journey = factory.SubFactory(JourneyFactory)
    key = factory.Sequence(lambda n: f"conversion-{n}")
    name = factory.Sequence(lambda n: f"Conversion {n}")
    normalized_name = factory.LazyAttribute(lambda c: normalize_name(c.name))
    counting = Counting.ONCE_PER_ENROLLMENT


class GoalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Goal

    journey = factory.SubFactory(JourneyFactory)
    key = factory.Sequence(lambda n: f"goal-{n}")
    name = factory.Sequence(lambda n: f"Goal {n}")
    normalized_name = factory.LazyAttribute(lambda g: normalize_name(g.name))
    criteria = factory.LazyFunction(lambda: {"event": "project_created"})


class ConversionAwardFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConversionAward

    enrollment = factory.SubFactory(EnrollmentFactory)
    conversion = factory.SubFactory(
        ConversionFactory, journey=factory.SelfAttribute("..enrollment.journey")
    )
    journey = factory.SelfAttribute("enrollment.journey")
    version = factory.SelfAttribute("enrollment.version")
    contact = factory.SelfAttribute("enrollment.contact")
    counting = factory.SelfAttribute("conversion.counting")
    value = factory.SelfAttribute("conversion.value")
    source = ConversionAward.Source.CONVERT_STEP
    awarded_at = factory.LazyFunction(timezone.now)


class GoalAchievementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GoalAchievement

    enrollment = factory.SubFactory(EnrollmentFactory)
    goal = factory.SubFactory(GoalFactory, journey=factory.SelfAttribute("..enrollment.journey"))
    journey = factory.SelfAttribute("enrollment.journey")
    version = factory.SelfAttribute("enrollment.version")
    contact = factory.SelfAttribute("enrollment.contact")
    achieved_at = factory.LazyFunction(timezone.now)
