"""journeys.bulk: array literals built in Python, the `__any` lookup that sends ids as one of
them, and insert_rows and bulk_update_rows."""

import datetime
from decimal import Decimal

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from journeys.bulk import array_literal, bulk_update_rows, claim, insert_rows, locked_rows
from journeys.models import Contact, Enrollment, Event, OutboxMessage
from journeys.tests.actions.scenarios import AWKWARD_TEXT
from journeys.tests.factories import ContactFactory, EnrollmentFactory, EventFactory

UTC = datetime.UTC
T0 = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_common_columns_are_joined_whole():
    assert array_literal([3, 1, 2]) == "{3,1,2}"
    assert array_literal(["a", "b c", ""]) == '{"a","b c",""}'
    assert array_literal([T0, T0]) == '{"2026-11-29T12:00:00+00:00","2026-11-29T12:00:00+00:00"}'


def test_other_values_are_quoted_one_by_one():
    assert array_literal(['a"b', "c\\d"]) == '{"a\\"b","c\\\\d"}'
    assert array_literal([None, "x", 1, True, Decimal("1.50")]) == '{NULL,"x",1,t,1.50}'
    assert array_literal([T0, None]) == '{"2026-11-29T12:00:00+00:00",NULL}'


@pytest.mark.parametrize(
    "values",
    [[datetime.datetime(2026, 11, 29)], [T0, datetime.datetime(2026, 11, 29)], [{"a": 1}], [1.5]],
)
def test_values_that_are_not_plain_are_refused(values):
    with pytest.raises(TypeError):
        array_literal(values)


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("cast", "values"),
    [
        ("text[]", AWKWARD_TEXT),
        ("text[]", ["NULL", "", "{braces},comma", "  spaced ", "é ✓ 😀", "'quote'"]),
        ("bigint[]", [1, 2**40, -3]),
        ("timestamptz[]", [T0, T0 + datetime.timedelta(microseconds=7), None]),
        ("numeric[]", [Decimal("1.50"), None]),
    ],
)
def test_postgresql_reads_each_literal_back_as_the_values(cast, values):
    if connection.vendor != "postgresql":
        pytest.skip("array literals are PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{cast}", [array_literal(values)])
        assert cursor.fetchone()[0] == values


@pytest.mark.django_db
def test_any_lookup_matches_like_in_on_every_database():
    contacts = [ContactFactory(external_id=text or "empty") for text in AWKWARD_TEXT]
    enrollments = [EnrollmentFactory(contact=contact) for contact in contacts[:3]]
    wanted = {enrollments[0].pk, enrollments[2].pk}
    assert set(Enrollment.objects.filter(pk__any=wanted).values_list("pk", flat=True)) == wanted
    by_contact = Enrollment.objects.filter(contact__any=[contacts[1].pk, contacts[5].pk])
    assert list(by_contact) == [enrollments[1]]
    names = [contact.external_id for contact in contacts]
    assert set(Contact.objects.filter(external_id__any=names)) == set(contacts)
    assert not Enrollment.objects.filter(pk__any=[]).exists()
    if connection.vendor == "postgresql":
        assert "= ANY(" in str(Enrollment.objects.filter(pk__any=[1]).query)


def test_any_lookup_refuses_values_that_are_not_ids_or_strings():
    with pytest.raises(TypeError):
        Enrollment.objects.filter(pk__any=[1.5])


@pytest.mark.django_db
def test_insert_rows_splits_what_sqlite_cannot_take_in_one_statement():
    ContactFactory(external_id="ann")
    contact = Contact.objects.get()
    rows = [
        {
            "event_id": f"bulk-{index}",
            "contact": contact.pk,
            "name": "x",
            "properties": {"i": index},
            "timestamp": T0,
            "received_at": T0,
            "source": Event.Source.API,
            "depth": 0,
            "status": Event.Status.PROCESSED,
            "attempts": 0,
            "error": "",
        }
        for index in range(4000)
    ]
    stored = insert_rows(Event, rows, conflict_target="event_id", returning=("event_id",))
    assert len(stored) == 4000
    assert insert_rows(Event, rows[:10], conflict_target="event_id", returning=("event_id",)) == []
    assert Event.objects.get(event_id="bulk-3999").properties == {"i": 3999}


@pytest.mark.django_db
def test_insert_rows_and_bulk_update_rows_store_any_text_and_json_as_given():
    contact = ContactFactory(external_id="ann")
    rows = [
        {
            "event_id": f"odd-{index}",
            "contact": contact.pk,
            "name": text,
            "properties": {"text": text, "list": [text, None, 1.5], text: {"n": index}},
            "timestamp": T0 + datetime.timedelta(microseconds=index),
            "received_at": T0,
            "source": Event.Source.API,
            "depth": index,
            "status": Event.Status.PROCESSED,
            "attempts": 0,
            "error": text,
        }
        for index, text in enumerate(AWKWARD_TEXT)
    ]
    insert_rows(Event, rows)
    stored = {event.event_id: event for event in Event.objects.all()}
    for row in rows:
        event = stored[row["event_id"]]
        assert (event.name, event.error, event.properties) == (
            row["name"],
            row["error"],
            row["properties"],
        )
        assert (event.timestamp, event.depth) == (row["timestamp"], row["depth"])

    contacts = [ContactFactory(external_id=f"c{index}") for index in range(len(AWKWARD_TEXT))]
    for contact, text in zip(contacts, AWKWARD_TEXT, strict=True):
        contact.email = text
        contact.attributes = {"note": text, text: None} if text else {}
    bulk_update_rows(Contact, contacts, ["email", "attributes"])
    for contact, text in zip(contacts, AWKWARD_TEXT, strict=True):
        contact.refresh_from_db()
        assert contact.email == text
        assert contact.attributes == ({"note": text, text: None} if text else {})


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresql_timestamps_are_parsed_in_c_and_read_the_same():
    """journeys.bulk.load_timestamps_in_c: the C parser in place of Django's Python one, with
    the same aware UTC datetimes out (offsets, fractions, infinity-free values, NULL)."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's loaders")
    connection.ensure_connection()
    loader = connection.connection.adapters.get_loader(1184, 0)  # timestamptz, text
    assert loader.__name__ == "UtcTimestampLoader" and loader.timezone is datetime.UTC
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT '2026-01-02 03:04:05.123456+02'::timestamptz, "
            "'1999-12-31 23:59:59-08:30'::timestamptz, NULL::timestamptz"
        )
        assert cursor.fetchone() == (
            datetime.datetime(2026, 1, 2, 1, 4, 5, 123456, tzinfo=datetime.UTC),
            datetime.datetime(2000, 1, 1, 8, 29, 59, tzinfo=datetime.UTC),
            None,
        )
    event = EventFactory(timestamp=datetime.datetime(2026, 5, 6, 7, 8, 9, tzinfo=datetime.UTC))
    stored = Event.objects.values_list("timestamp", flat=True).get(pk=event.pk)
    assert stored == event.timestamp and stored.tzinfo is datetime.UTC


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_claim_locks_only_the_rows_of_its_own_table():
    """The message claim joins enrollments (paused journeys wait): the enrollment rows must
    stay unlocked, or a batch's foreign-key checks would wait on a delivery claim."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite takes no row locks")
    queryset = OutboxMessage.objects.exclude(enrollment__journey_id__in=[0]).order_by("due_at")
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        claim(queryset, 10)
    [sql] = [query["sql"] for query in queries if "SKIP LOCKED" in query["sql"]]
    assert 'FOR UPDATE OF "journeys_outboxmessage" SKIP LOCKED' in sql


@pytest.mark.django_db
def test_locked_rows_reads_the_rows_asked_for_as_django_reads_them():
    """The engine's batch reads its contacts and enrollments with locked_rows: by id, in id
    order, the `where` equalities applied, JSON decoded, datetimes aware, on every database."""
    contacts = [
        ContactFactory(external_id=f"row-{index}", attributes={"n": index, "text": text})
        for index, text in enumerate(AWKWARD_TEXT[:5])
    ]
    active = EnrollmentFactory(contact=contacts[0], started_at=T0)
    EnrollmentFactory(contact=contacts[1], state=Enrollment.State.COMPLETED)
    ids = {contact.pk for contact in reversed(contacts)} | {10**9}
    with transaction.atomic():
        rows = locked_rows(Contact, ids, ("external_id", "attributes"))
    assert rows == [
        (contact.pk, contact.external_id, contact.attributes)
        for contact in sorted(contacts, key=lambda contact: contact.pk)
    ]
    with transaction.atomic():
        [row] = locked_rows(
            Enrollment,
            [enrollment.pk for enrollment in Enrollment.objects.all()],
            ("contact_id", "path", "started_at"),
            lock="NO KEY UPDATE",
            where={"state": Enrollment.State.ACTIVE},
        )
    assert row == (active.pk, contacts[0].pk, [], T0)
    assert locked_rows(Contact, set()) == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_locked_rows_holds_its_lock_until_the_transaction_ends():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite takes no row locks")
    enrollment = EnrollmentFactory()
    other = connections.create_connection("default")
    try:
        with transaction.atomic():
            locked_rows(Enrollment, [enrollment.pk], lock="NO KEY UPDATE")
            with other.cursor() as cursor:
                cursor.execute("SET lock_timeout = '100ms'")
                with pytest.raises(OperationalError):
                    cursor.execute(
                        "SELECT id FROM journeys_enrollment WHERE id = %s FOR UPDATE",
                        [enrollment.pk],
                    )
    finally:
        other.close()
