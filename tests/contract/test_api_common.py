"""docs/contract.md §2, what every call shares: a missing or unknown key gets 401, every
error is `{"errors": [{"loc": [...], "message": "..."}]}` with a 4xx status (never a 500 or
an HTML page), and the OpenAPI schema at `/api/v1/openapi.json` lists every route."""

import json

import pytest

from journeys.tests.contract_example import CONTRACT_EXAMPLE
from tests.contract.public_surface import assert_error_shape, create, definition

pytestmark = pytest.mark.django_db

ROUTES = [
    ("put", "/api/v1/contacts/ann", {"email": "ann@example.com"}),
    ("get", "/api/v1/contacts/ann", None),
    ("post", "/api/v1/events", {"events": [{"id": "1", "contact": "ann", "name": "x"}]}),
    ("get", "/api/v1/journeys", None),
    ("post", "/api/v1/journeys", CONTRACT_EXAMPLE),
    ("get", "/api/v1/journeys/trial-nurture", None),
    ("get", "/api/v1/journeys/trial-nurture/definition?version=1", None),
    ("post", "/api/v1/journeys/trial-nurture/versions", CONTRACT_EXAMPLE),
    ("post", "/api/v1/journeys/trial-nurture/versions/1/publish", {}),
    ("post", "/api/v1/journeys/trial-nurture/enrollments", {"contact": "ann"}),
    ("get", "/api/v1/journeys/trial-nurture/report?conversion=paid&baseline=1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer not-a-key", "Basic abc"])
def test_every_route_answers_401_without_a_valid_key(client, method, path, body, header):
    kwargs = {"content_type": "application/json"}
    if body is not None:
        kwargs["data"] = json.dumps(body)
    if header:
        kwargs["headers"] = {"Authorization": header}
    errors = assert_error_shape(getattr(client, method)(path, **kwargs), 401)
    assert errors


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/api/v1/nothing-here", None, 404),
        ("get", "/api/v1/journeys/nope", None, 404),
        ("get", "/api/v1/journeys/nope/definition", None, 404),
        ("get", "/api/v1/journeys/nope/report", None, 404),
        ("get", "/api/v1/contacts/nobody", None, 404),
        ("post", "/api/v1/journeys/nope/versions/1/publish", None, 404),
        ("post", "/api/v1/journeys/nope/enrollments", {"contact": "x"}, 404),
        ("post", "/api/v1/events", "{not json", 400),
        ("post", "/api/v1/events", [], 400),
        ("post", "/api/v1/journeys", "[1, 2", 400),
        ("post", "/api/v1/journeys", [], 400),
        ("put", "/api/v1/contacts/ann", {"email": 5}, 400),
        ("delete", "/api/v1/journeys", None, 405),
    ],
)
def test_errors_are_always_the_contract_shape_never_html(api, method, path, body, status):
    response = getattr(api, method)(path, body) if body is not None else getattr(api, method)(path)
    assert_error_shape(response, status)
    assert b"<html" not in response.content.lower()


def test_openapi_schema_lists_every_route(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for route in [
        "/api/v1/contacts/{external_id}",
        "/api/v1/events",
        "/api/v1/journeys",
        "/api/v1/journeys/{key}",
        "/api/v1/journeys/{key}/definition",
        "/api/v1/journeys/{key}/versions",
        "/api/v1/journeys/{key}/versions/{number}/publish",
        "/api/v1/journeys/{key}/enrollments",
        "/api/v1/journeys/{key}/report",
    ]:
        assert route in paths, route
    assert set(paths["/api/v1/contacts/{external_id}"]) >= {"get", "put"}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/journeys/t/definition?version=abc", 400),
        ("/api/v1/journeys/t/definition?version=9", 404),
        ("/api/v1/journeys/t/report?baseline=1.5", 400),
    ],
)
def test_bad_query_parameters_are_contract_errors(api, path, status):
    create(api, definition("t", [{"key": "x", "type": "exit"}]))
    assert_error_shape(api.get(path), status)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("put", "/api/v1/contacts/ann", ""),
        ("put", "/api/v1/contacts/ann", "[]"),
        ("post", "/api/v1/events", ""),
        ("post", "/api/v1/events", "null"),
        ("post", "/api/v1/journeys/any/enrollments", ""),
        ("post", "/api/v1/journeys", ""),
    ],
)
def test_a_body_that_is_not_an_object_is_named_as_the_body(api, method, path, body):
    (error,) = assert_error_shape(getattr(api, method)(path, body), 400)
    assert error["loc"] == ["body"]
    assert "JSON object" in error["message"]
