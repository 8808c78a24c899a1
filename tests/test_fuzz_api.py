"""Fuzz every operation of /api/v1/openapi.json with schemathesis, in process through the WSGI
app: valid and invalid inputs alike must never produce a 5xx, every answer must match the
schema the document gives for its status, and every error must have the contract's shape.
Bounded (FUZZ_MAX_EXAMPLES per operation, 25 by default) so CI stays quick; raise it locally
for a deeper run.
"""

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from config.wsgi import application

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))

# Hypothesis draws dates near 2000-01-01 and seldom reaches the ends of the calendar, where
# day arithmetic overflows (a report's `end=9999-12-31` was a 500): offer those as often.
EDGE_DATES = ("0001-01-01", "0001-01-02", "9998-12-31", "9999-01-01", "9999-12-30", "9999-12-31")
schemathesis.openapi.format("date", st.sampled_from(EDGE_DATES) | st.dates().map(str))

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture
def keep_test_connection():
    """The WSGI handler closes database connections after each request, which would close
    the test's transaction; Django's own test client disconnects the same receivers."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def auth_headers(db, keep_test_connection):
    from conversions.tests.factories import ConversionFactory
    from journeys.actions.api_keys import create_api_key
    from journeys.models import JourneyVersion
    from journeys.tests.factories import ContactFactory, JourneyFactory, JourneyVersionFactory
    from reporting.tests.factories import enroll

    # Something for the fuzzer's path parameters to find now and then. The journey has a
    # conversion and a published version with an enrollment, so that a report on it reads
    # its filters all the way down to the SQL instead of stopping at "no conversions".
    journey = JourneyFactory(key="a")
    ConversionFactory(journey=journey, key="paid")
    version = JourneyVersionFactory(
        journey=journey, number=1, published_at=timezone.now(), state=JourneyVersion.State.LIVE
    )
    enroll(version, timezone.now())
    ContactFactory(external_id="a")
    _, raw = create_api_key(name="fuzz", scope="all")
    return {"Authorization": f"Bearer {raw}"}


def assert_error_shape(response) -> None:
    if response.status_code < 400:
        return
    # schemathesis keeps headers with lowercase names and a list of values each.
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), (
        response.text
    )
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"errors"}, body
    assert isinstance(body["errors"], list) and body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"loc", "message"}, error
        assert isinstance(error["loc"], list), error
        assert isinstance(error["message"], str) and error["message"], error


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_api_never_fails_and_errors_keep_the_contract_shape(case, auth_headers):
    response = case.call(headers=auth_headers)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
    assert_error_shape(response)


# Path parameters the fuzzer invents rarely name a journey that exists, so the report's
# filters (dates at the edge of the calendar: the 500 of issue 12) are fuzzed on its own,
# against the journey of `auth_headers`.
report_schema = schema.include(path="/api/v1/journeys/{key}/report")
DATES = ("start", "end")


@pytest.mark.django_db
@report_schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES * 4,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_report_filters_never_fail_on_a_journey_with_data(case, auth_headers):
    case.path_parameters = {"key": "a"}
    # Other filters the fuzzer invents (a conversion or version that does not exist) stop
    # the report before it reads the dates; those are fuzzed by the test above.
    case.query = {name: value for name, value in (case.query or {}).items() if name in DATES}
    response = case.call(headers=auth_headers)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
    assert_error_shape(response)
