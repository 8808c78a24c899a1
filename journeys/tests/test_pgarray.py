"""Array literals built in Python, and the `__any` lookup that sends ids as one of them."""

import datetime
from decimal import Decimal

import pytest
from django.db import connection

from journeys.bulk import array_literal
from journeys.models import Contact, Enrollment
from journeys.tests.factories import ContactFactory, EnrollmentFactory
from journeys.tests.test_actions_engine import AWKWARD_TEXT

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
