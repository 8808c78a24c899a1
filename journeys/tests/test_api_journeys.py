"""The journey calls of docs/contract.md §2: shapes, round trips, every error with its status
and loc."""

import json

import pytest

from conversions.tests.factories import ConversionFactory
from journeys.definition import parse_definition, render_definition
from journeys.models import JourneyVersion
from journeys.tests.contract_example import CONTRACT_EXAMPLE, contract_example, simple_definition
from journeys.tests.factories import JourneyFactory, JourneyVersionFactory

pytestmark = pytest.mark.django_db


def canonical(definition: dict) -> dict:
    return render_definition(parse_definition(definition)[0])


def create(api, definition):
    response = api.post("/api/v1/journeys", definition)
    assert response.status_code == 201, response.content
    return response.json()


def test_create_journey_returns_it_with_a_draft_version_1_and_warnings(api):
    body = create(api, CONTRACT_EXAMPLE)

    assert body["key"] == "trial-nurture"
    assert body["status"] == "draft"
    assert [(v["number"], v["state"]) for v in body["versions"]] == [(1, "draft")]
    assert [c["key"] for c in body["conversions"]] == ["paid", "activation"]
    assert [g["key"] for g in body["goals"]] == ["activated"]
    assert [w["loc"] for w in body["warnings"]] == [
        ["triggers", 1, "journey"],
        ["triggers", 2, "journey"],
    ]


def test_references_to_existing_journeys_give_no_warning(api):
    create(
        api,
        simple_definition(
            "lead-nurture",
            conversions=[{"key": "became-customer", "name": "Became customer"}],
            steps=[{"key": "buy", "type": "convert", "conversion": "became-customer"}],
        ),
    )
    definition = contract_example(
        triggers=[
            {"type": "conversion", "journey": "lead-nurture", "conversion": "became-customer"},
            {"type": "goal", "journey": "lead-nurture", "goal": "missing"},
        ]
    )

    body = create(api, definition)

    assert body["warnings"] == [
        {
            "loc": ["triggers", 1, "goal"],
            "message": "Journey 'lead-nurture' has no goal 'missing' yet; "
            "this trigger takes effect once it does",
        }
    ]


def test_definition_is_the_canonical_form_of_what_was_posted(api):
    create(api, CONTRACT_EXAMPLE)

    response = api.get("/api/v1/journeys/trial-nurture/definition")

    assert response.status_code == 200
    assert response.json() == canonical(CONTRACT_EXAMPLE)


def test_definition_round_trips_through_post_versions_unchanged(api):
    create(api, CONTRACT_EXAMPLE)
    exported = api.get("/api/v1/journeys/trial-nurture/definition").json()

    response = api.post("/api/v1/journeys/trial-nurture/versions", exported)

    assert response.status_code == 201
    assert response.json()["number"] == 1  # the unpublished draft is replaced
    again = api.get("/api/v1/journeys/trial-nurture/definition?version=1").json()
    assert again == exported


def test_new_version_after_publish_is_version_2_and_both_definitions_stay(api):
    create(api, CONTRACT_EXAMPLE)
    api.post("/api/v1/journeys/trial-nurture/versions/1/publish")
    changed = contract_example(name="Trial nurture v2")
    changed["steps"][1]["duration"] = "P3D"

    response = api.post("/api/v1/journeys/trial-nurture/versions", changed)

    assert response.status_code == 201
    body = response.json()
    assert (body["journey"], body["number"], body["state"]) == ("trial-nurture", 2, "draft")
    v1 = api.get("/api/v1/journeys/trial-nurture/definition?version=1").json()
    v2 = api.get("/api/v1/journeys/trial-nurture/definition?version=2").json()
    assert v1["steps"][1]["duration"] == "P2D"
    assert v2["steps"][1]["duration"] == "P3D"
    assert v2["name"] == "Trial nurture v2"


def test_publish_makes_the_version_live_and_retires_the_previous_one(api):
    create(api, CONTRACT_EXAMPLE)
    assert api.post("/api/v1/journeys/trial-nurture/versions/1/publish").status_code == 200
    api.post("/api/v1/journeys/trial-nurture/versions", contract_example(name="Second"))

    response = api.post("/api/v1/journeys/trial-nurture/versions/2/publish")

    assert response.status_code == 200
    assert response.json()["state"] == "live"
    journey = api.get("/api/v1/journeys/trial-nurture").json()
    assert journey["status"] == "live"
    assert [(v["number"], v["state"]) for v in journey["versions"]] == [
        (1, "retired"),
        (2, "live"),
    ]


def test_publish_with_traffic_keeps_both_versions_live_on_a_split(api):
    create(api, CONTRACT_EXAMPLE)
    api.post("/api/v1/journeys/trial-nurture/versions/1/publish")
    api.post("/api/v1/journeys/trial-nurture/versions", contract_example(name="Second"))

    response = api.post("/api/v1/journeys/trial-nurture/versions/2/publish", {"traffic": 20})

    assert response.status_code == 200
    assert (response.json()["traffic"], response.json()["split_with"]) == (20, 1)
    journey = api.get("/api/v1/journeys/trial-nurture").json()
    assert [
        (v["number"], v["state"], v["traffic"], v["split_with"]) for v in journey["versions"]
    ] == [
        (1, "live", 80, 2),
        (2, "live", 20, 1),
    ]
    assert journey["live_versions"] == [1, 2]

    # Publishing one of them alone ends the split.
    assert api.post("/api/v1/journeys/trial-nurture/versions/2/publish").status_code == 200
    journey = api.get("/api/v1/journeys/trial-nurture").json()
    assert [(v["state"], v["traffic"]) for v in journey["versions"]] == [
        ("retired", None),
        ("live", None),
    ]


def test_list_shows_every_journey_with_live_versions_and_conversion_keys(api):
    create(api, CONTRACT_EXAMPLE)
    create(api, simple_definition("other"))
    api.post("/api/v1/journeys/other/versions/1/publish")

    response = api.get("/api/v1/journeys")

    assert response.status_code == 200
    assert response.json() == [
        {
            "key": "other",
            "name": "Journey other",
            "status": "live",
            "live_versions": [1],
            "conversions": ["paid"],
        },
        {
            "key": "trial-nurture",
            "name": "Trial nurture",
            "status": "draft",
            "live_versions": [],
            "conversions": ["paid", "activation"],
        },
    ]


# --- Errors ----------------------------------------------------------------------------------


def test_invalid_definition_is_refused_with_every_error_and_its_loc(api):
    definition = contract_example()
    definition["steps"][0]["next"] = "nowhere"
    definition["steps"][1]["duration"] = "soon"
    definition["conversions"][1]["name"] = "started paid-plan "

    response = api.post("/api/v1/journeys", definition)

    assert response.status_code == 400
    locs = [error["loc"] for error in response.json()["errors"]]
    assert ["steps", 0, "next"] in locs
    assert ["steps", 1, "duration"] in locs
    assert ["conversions", 1, "name"] in locs
    duplicate = next(e for e in response.json()["errors"] if e["loc"] == ["conversions", 1, "name"])
    assert "Started paid plan" in duplicate["message"]
    assert api.get("/api/v1/journeys/trial-nurture").status_code == 404


def test_missing_journey_on_a_conversion_trigger_is_refused(api):
    definition = contract_example(
        triggers=[{"type": "conversion", "conversion": "became-customer"}]
    )

    response = api.post("/api/v1/journeys", definition)

    assert response.status_code == 400
    assert [e["loc"] for e in response.json()["errors"]] == [["triggers", 0, "journey"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "The body is not valid JSON."),
        ('{"key": NaN}', "The body is not valid JSON."),
        ("", "The body must be a JSON object."),
    ],
)
def test_malformed_body_is_a_400_json_error(api, body, message):
    response = api.post("/api/v1/journeys", body)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == {"errors": [{"loc": ["body"], "message": message}]}


def test_a_body_that_is_not_an_object_is_refused(api):
    response = api.post("/api/v1/journeys", [1, 2])

    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == []


def test_deeply_nested_body_is_a_400(api):
    response = api.post("/api/v1/journeys", "[" * 100_000 + "]" * 100_000)

    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["body"]


def test_oversized_body_is_a_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    definition = simple_definition(description="x" * 2000)

    response = api.post("/api/v1/journeys", definition)

    assert response.status_code == 413
    assert response.json()["errors"][0]["loc"] == ["body"]


def test_values_the_database_cannot_store_exactly_are_refused(api):
    definition = simple_definition()
    definition["triggers"][0]["where"] = [{"property": "n", "op": "eq", "value": 5.9e16}]

    response = api.post("/api/v1/journeys", definition)

    assert response.status_code == 400
    assert [error["loc"] for error in response.json()["errors"]] == [
        ["triggers", 0, "where", 0, "value"]
    ]


def test_a_nul_character_is_refused(api):
    response = api.post("/api/v1/journeys", simple_definition(name="Nul\x00name"))

    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["body"]


def test_duplicate_journey_key_is_refused(api):
    create(api, simple_definition("dup"))

    response = api.post("/api/v1/journeys", simple_definition("dup"))

    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["key"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/journeys/nope",
        "/api/v1/journeys/nope/definition",
    ],
)
def test_unknown_journey_is_a_404_json(api, path):
    response = api.get(path)

    assert response.status_code == 404
    assert response.json() == {
        "errors": [{"loc": ["key"], "message": "No journey has the key 'nope'."}]
    }


def test_posting_to_an_unknown_journey_is_a_404(api):
    assert api.post("/api/v1/journeys/nope/versions", simple_definition("nope")).status_code == 404
    assert api.post("/api/v1/journeys/nope/versions/1/publish").status_code == 404


def test_unknown_version_is_a_404(api):
    create(api, simple_definition("one"))

    definition = api.get("/api/v1/journeys/one/definition?version=7")
    publish = api.post("/api/v1/journeys/one/versions/7/publish")

    assert definition.status_code == 404
    assert definition.json()["errors"][0]["loc"] == ["version"]
    assert publish.status_code == 404
    assert publish.json()["errors"][0]["loc"] == ["number"]


def test_definition_of_a_journey_without_versions_is_a_404(api):
    JourneyFactory(key="empty")

    response = api.get("/api/v1/journeys/empty/definition")

    assert response.status_code == 404
    assert response.json()["errors"][0]["loc"] == ["version"]


def test_non_numeric_version_is_a_400(api):
    create(api, simple_definition("one"))

    response = api.get("/api/v1/journeys/one/definition?version=latest")

    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["query", "version"]


def test_new_version_with_another_key_is_refused(api):
    create(api, simple_definition("one"))

    response = api.post("/api/v1/journeys/one/versions", simple_definition("two"))

    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["key"]


def test_publishing_the_only_live_version_again_is_a_409(api):
    create(api, simple_definition("one"))
    api.post("/api/v1/journeys/one/versions/1/publish")

    response = api.post("/api/v1/journeys/one/versions/1/publish")

    assert response.status_code == 409
    assert "already live" in response.json()["errors"][0]["message"]


def test_traffic_without_a_live_version_is_a_409(api):
    create(api, simple_definition("one"))

    response = api.post("/api/v1/journeys/one/versions/1/publish", {"traffic": 30})

    assert response.status_code == 409
    assert response.json()["errors"][0]["loc"] == ["traffic"]


@pytest.mark.parametrize("traffic", [0, 100, 50.5, "20", True, None])
def test_traffic_out_of_range_is_a_400(api, traffic):
    create(api, simple_definition("one"))
    api.post("/api/v1/journeys/one/versions/1/publish")
    api.post("/api/v1/journeys/one/versions", simple_definition("one", name="Two"))

    response = api.post("/api/v1/journeys/one/versions/2/publish", {"traffic": traffic})

    if traffic is None:
        # null is the same as leaving traffic out: published alone.
        assert response.status_code == 200
        return
    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["traffic"]


def test_publish_body_with_unknown_fields_is_a_400(api):
    create(api, simple_definition("one"))

    response = api.post("/api/v1/journeys/one/versions/1/publish", {"trafic": 20})

    assert response.status_code == 400
    assert response.json()["errors"] == [{"loc": ["trafic"], "message": "Unknown field 'trafic'"}]


def test_publishing_an_invalid_draft_is_refused(api):
    journey = JourneyFactory(key="broken")
    JourneyVersionFactory(
        journey=journey,
        number=1,
        state=JourneyVersion.State.DRAFT,
        definition={
            "settings": {},
            "triggers": [],
            "exit_when": [],
            "steps": [{"key": "a", "type": "send_sms", "text": "Hi", "next": "missing"}],
        },
    )

    response = api.post("/api/v1/journeys/broken/versions/1/publish")

    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["steps", 0, "next"]


# --- Auth ------------------------------------------------------------------------------------


def test_missing_key_is_a_401(client):
    response = client.get("/api/v1/journeys")

    assert response.status_code == 401
    assert response.json()["errors"][0]["loc"] == ["header", "Authorization"]


def test_unknown_key_is_a_401(client):
    response = client.get("/api/v1/journeys", headers={"Authorization": "Bearer wp_nope"})

    assert response.status_code == 401


def test_revoked_key_is_a_401(client):
    from journeys.actions.api_keys import create_api_key, revoke_api_key

    key, raw = create_api_key(name="old")
    revoke_api_key(key=key)

    response = client.get("/api/v1/journeys", headers={"Authorization": f"Bearer {raw}"})

    assert response.status_code == 401


def test_ingest_key_cannot_manage_journeys(make_api_client):
    ingest = make_api_client("ingest")

    response = ingest.post("/api/v1/journeys", simple_definition())

    assert response.status_code == 403
    assert "manage" in response.json()["errors"][0]["message"]


def test_manage_key_can_manage_journeys(make_api_client):
    manage = make_api_client("manage")

    assert manage.post("/api/v1/journeys", simple_definition()).status_code == 201


# --- Query counts ----------------------------------------------------------------------------


def test_list_takes_a_fixed_number_of_queries(api, django_assert_num_queries):
    for index in range(5):
        version = JourneyVersionFactory(journey__key=f"j{index}", number=1)
        ConversionFactory(journey=version.journey)
    api.get("/api/v1/journeys")  # the key's last use is recorded once a minute

    # key lookup, journeys, live versions, conversions
    with django_assert_num_queries(4):
        response = api.get("/api/v1/journeys")

    assert len(response.json()) == 5


def test_detail_takes_a_fixed_number_of_queries(api, django_assert_num_queries):
    create(api, CONTRACT_EXAMPLE)
    api.post("/api/v1/journeys/trial-nurture/versions/1/publish")
    api.post("/api/v1/journeys/trial-nurture/versions", contract_example(name="Two"))
    api.post("/api/v1/journeys/trial-nurture/versions/2/publish", {"traffic": 10})

    # key lookup, journey, versions, goals with their conversion, conversions
    with django_assert_num_queries(5):
        response = api.get("/api/v1/journeys/trial-nurture")

    assert len(response.json()["versions"]) == 2


def test_definition_takes_a_fixed_number_of_queries(api, django_assert_num_queries):
    create(api, CONTRACT_EXAMPLE)

    # key lookup, journey, version, goals with their conversion, conversions
    with django_assert_num_queries(5):
        response = api.get("/api/v1/journeys/trial-nurture/definition?version=1")

    assert json.dumps(response.json())


def test_the_journey_routes_are_in_the_openapi_schema(client):
    schema = client.get("/api/v1/openapi.json").json()

    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/journeys"])
    assert "requestBody" in paths["/api/v1/journeys/{key}/versions"]["post"]
    assert "post" in paths["/api/v1/journeys/{key}/versions/{number}/publish"]
    assert "get" in paths["/api/v1/journeys/{key}/definition"]


def test_every_answer_of_the_api_has_a_schema_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]

    undescribed = [
        (method, path, status)
        for path, item in paths.items()
        for method, operation in item.items()
        for status, answer in operation["responses"].items()
        if status != "204" and "schema" not in answer.get("content", {}).get("application/json", {})
    ]

    assert undescribed == []


def test_the_journey_answer_is_described_field_for_field(client):
    schemas = client.get("/api/v1/openapi.json").json()["components"]["schemas"]

    assert list(schemas["JourneyOut"]["properties"]) == [
        "key",
        "name",
        "description",
        "status",
        "created_at",
        "updated_at",
        "live_versions",
        "versions",
        "goals",
        "conversions",
    ]
    assert schemas["VersionSummaryOut"]["properties"]["state"]["enum"] == [
        "draft",
        "live",
        "retired",
    ]
