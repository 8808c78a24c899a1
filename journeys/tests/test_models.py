"""The journeys data model's invariants are database constraints: a direct ORM write that
breaks one is refused by the database itself."""

import pytest
from django.db import IntegrityError, transaction

from journeys.models import Enrollment, OutboxMessage, StepVisit
from journeys.tests.factories import (
    ContactFactory,
    EnrollmentFactory,
    EventFactory,
    JourneyFactory,
    JourneyVersionFactory,
)

pytestmark = pytest.mark.django_db


def refused(factory, **kwargs):
    with pytest.raises(IntegrityError), transaction.atomic():
        factory(**kwargs)


def test_journey_keys_are_unique():
    JourneyFactory(key="trial")

    refused(JourneyFactory, key="trial")


def test_a_version_number_is_used_once_per_journey():
    version = JourneyVersionFactory(number=1)

    refused(JourneyVersionFactory, journey=version.journey, number=1)
    JourneyVersionFactory(number=1)  # another journey


def test_a_journey_has_at_most_one_draft():
    draft = JourneyVersionFactory(number=1, state="draft")

    refused(JourneyVersionFactory, journey=draft.journey, number=2, state="draft")
    JourneyVersionFactory(journey=draft.journey, number=2, state="live")


@pytest.mark.parametrize("traffic", [0, 101])
def test_traffic_is_a_share_of_1_to_100(traffic):
    refused(JourneyVersionFactory, traffic=traffic)


def test_event_ids_are_unique():
    EventFactory(event_id="evt-1")

    refused(EventFactory, event_id="evt-1")


@pytest.mark.parametrize("lock", Enrollment.EntryLock.values)
def test_an_entry_lock_is_held_once_per_journey_and_contact(lock):
    first = EnrollmentFactory(entry_lock=lock)

    refused(EnrollmentFactory, version=first.version, contact=first.contact, entry_lock=lock)
    EnrollmentFactory(version=first.version, entry_lock=lock)  # another contact


def test_concurrent_enrollments_hold_no_entry_lock():
    first = EnrollmentFactory(entry_lock=None)

    EnrollmentFactory(version=first.version, contact=first.contact, entry_lock=None)


def test_contact_external_ids_are_unique():
    ContactFactory(external_id="ann")

    refused(ContactFactory, external_id="ann")


def test_visits_and_messages_go_with_their_enrollment_and_its_contact():
    """Neither a visit's enrollment nor a message's is checked by the database (the engine
    writes them under the enrollment's lock; journeys.models.StepVisit): deleting through
    the ORM, as the admin does, leaves none pointing nowhere."""
    kept = EnrollmentFactory()
    for enrollment in (kept, EnrollmentFactory(), EnrollmentFactory()):
        for seq in range(2):
            visit = StepVisit.objects.create(
                enrollment=enrollment,
                version=enrollment.version,
                step_key=f"s{seq}",
                seq=seq,
                entered_at=enrollment.started_at,
            )
        OutboxMessage.objects.create(
            visit=visit,
            enrollment=enrollment,
            contact=enrollment.contact,
            step_key=visit.step_key,
            channel="email",
            due_at=enrollment.started_at,
        )
    doomed = list(Enrollment.objects.exclude(pk=kept.pk))
    doomed[0].delete()
    doomed[1].contact.delete()

    assert set(StepVisit.objects.values_list("enrollment_id", flat=True)) == {kept.pk}
    assert set(OutboxMessage.objects.values_list("enrollment_id", flat=True)) == {kept.pk}
