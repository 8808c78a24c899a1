import factory
from django.contrib.auth.models import Group, User
from django.utils import timezone

from journeys.models import Contact, Enrollment, Event, Journey, JourneyVersion

SIMPLE_VERSION_DEFINITION = {
    "settings": {"reentry": "once", "holdout_percent": 0},
    "triggers": [{"type": "event", "event": "signed_up", "where": []}],
    "exit_when": [],
    "steps": [
        {"key": "welcome", "type": "send_email", "subject": "Hi", "body": "Welcome", "next": None},
    ],
}


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "pass-word-123")

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        if create and extracted:
            groups = list(Group.objects.filter(name__in=extracted))
            if len(groups) != len(set(extracted)):
                # A transactional test's flush removes the migration's groups: ask for the
                # role_groups fixture rather than silently making a user with no role.
                raise LookupError(f"Missing groups {extracted}: use the role_groups fixture")
            self.groups.set(groups)
        if create:
            self.save()


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    external_id = factory.Sequence(lambda n: f"contact-{n}")
    email = factory.LazyAttribute(lambda c: f"{c.external_id}@example.com")
    attributes = factory.LazyFunction(dict)


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    event_id = factory.Sequence(lambda n: f"evt-{n}")
    contact = factory.SubFactory(ContactFactory)
    name = "signed_up"
    properties = factory.LazyFunction(dict)
    timestamp = factory.LazyFunction(timezone.now)


class JourneyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Journey

    key = factory.Sequence(lambda n: f"journey-{n}")
    name = factory.Sequence(lambda n: f"Journey {n}")


class JourneyVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JourneyVersion

    journey = factory.SubFactory(JourneyFactory)
    number = factory.Sequence(lambda n: n + 1)
    state = JourneyVersion.State.LIVE
    definition = factory.LazyFunction(lambda: dict(SIMPLE_VERSION_DEFINITION))
    published_at = factory.LazyFunction(timezone.now)
    traffic = None
    # As publish_version writes it: a version given a share keeps it after the split.
    split_traffic = factory.SelfAttribute("traffic")


class EnrollmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Enrollment

    version = factory.SubFactory(JourneyVersionFactory)
    journey = factory.SelfAttribute("version.journey")
    contact = factory.SubFactory(ContactFactory)
    started_at = factory.LazyFunction(timezone.now)
    state = Enrollment.State.ACTIVE
