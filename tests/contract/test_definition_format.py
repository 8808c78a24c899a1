"""docs/contract.md §1, the definition format and how a refusal of it reads: slugs, unique
keys and names, split weights, references to missing steps, goals and conversions,
unreachable steps and loops without a wait, every error listed at once; references to other
journeys are accepted and reported as warnings in the shape of errors."""

import pytest

from journeys.tests.contract_example import CONTRACT_EXAMPLE
from tests.contract.public_surface import ERROR_KEYS, assert_error_shape, create, definition, locs
from tests.contract.sample_journeys import BROKEN_STEPS

pytestmark = pytest.mark.django_db


def test_contract_example_is_created_with_warnings_shaped_like_errors(api):
    body = create(api, CONTRACT_EXAMPLE)
    assert body["key"] == "trial-nurture"
    assert body["status"] == "draft"
    assert [(v["number"], v["state"]) for v in body["versions"]] == [(1, "draft")]
    warnings = body["warnings"]
    for warning in warnings:
        assert set(warning) == ERROR_KEYS
        assert isinstance(warning["loc"], list) and warning["message"]
    assert {tuple(w["loc"][:2]) for w in warnings} == {("triggers", 1), ("triggers", 2)}
    text = " ".join(w["message"] for w in warnings)
    assert "lead-nurture" in text and "onboarding" in text
    assert {g["key"] for g in body["goals"]} == {"activated"}
    assert {c["key"] for c in body["conversions"]} == {"paid", "activation"}


def test_every_refusal_of_a_definition_is_listed_at_once(api):
    data = definition(
        "broken",
        BROKEN_STEPS,
        triggers=[
            {"type": "event", "event": "signed_up"},
            {"type": "conversion", "conversion": "paid"},
            {"type": "goal", "goal": "activated"},
        ],
        conversions=[
            {"key": "booked", "name": "Booked meeting"},
            {"key": "booked-again", "name": "booked-meeting "},
        ],
    )
    errors = assert_error_shape(api.post("/api/v1/journeys", data), 400)
    found = locs(errors)
    # Missing step, goal and conversion references.
    assert ["steps", 0, "next"] in found
    assert any(
        loc[:2] == ["steps", 3] and "ghost-goal" in e["message"]
        for loc, e in zip(found, errors, strict=True)
    )
    assert any(
        loc[:2] == ["steps", 4] and "ghost-conversion" in e["message"]
        for loc, e in zip(found, errors, strict=True)
    )
    # A step nothing leads to.
    assert any(
        loc[:2] == ["steps", 1] and "island" in e["message"]
        for loc, e in zip(found, errors, strict=True)
    )
    # A loop with no wait in it.
    assert any(
        "wait" in e["message"] and e["loc"][:1] == ["steps"]
        for e in errors
        if e["loc"][1:2] in ([2], [3])
    )
    # A duplicate name names the existing one.
    duplicate = next(e for e in errors if e["loc"] == ["conversions", 1, "name"])
    assert "Booked meeting" in duplicate["message"]
    # `journey` is required on conversion and goal triggers.
    assert ["triggers", 1, "journey"] in found
    assert ["triggers", 2, "journey"] in found
    assert api.get("/api/v1/journeys/broken").status_code == 404


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        (lambda d: d.update(key="Not A Slug"), ["key"]),
        (lambda d: d.update(key="a" * 65), ["key"]),
        (lambda d: d["steps"][0].update(key="Bad Key", next=None), ["steps", 0, "key"]),
        (lambda d: d["settings"].update(holdout_percent=51), ["settings", "holdout_percent"]),
        (lambda d: d["settings"].update(reentry="twice"), ["settings", "reentry"]),
        (lambda d: d["steps"][0].update(duration="two days"), ["steps", 0, "duration"]),
    ],
)
def test_invalid_parts_of_a_definition_are_located(api, change, loc):
    data = definition("bad", [{"key": "pause", "type": "wait", "duration": "P1D", "next": None}])
    change(data)
    errors = assert_error_shape(api.post("/api/v1/journeys", data), 400)
    assert any(error["loc"][: len(loc)] == loc for error in errors), errors


def test_split_weights_must_be_positive_integers(api):
    steps = [
        {
            "key": "ab",
            "type": "split",
            "paths": [{"weight": 0, "next": "a"}, {"weight": 1.5, "next": "a"}],
        },
        {"key": "a", "type": "exit"},
    ]
    errors = assert_error_shape(api.post("/api/v1/journeys", definition("w", steps)), 400)
    assert any(loc[:4] == ["steps", 0, "paths", 0] for loc in locs(errors))
    assert any(loc[:4] == ["steps", 0, "paths", 1] for loc in locs(errors))


def test_duplicate_keys_within_a_list_are_refused(api):
    steps = [
        {"key": "same", "type": "wait", "duration": "PT1H", "next": None},
        {"key": "same", "type": "exit"},
    ]
    errors = assert_error_shape(api.post("/api/v1/journeys", definition("dup", steps)), 400)
    assert any(loc[:2] == ["steps", 1] for loc in locs(errors))


def test_duplicate_goal_name_names_the_existing_goal(api):
    data = definition(
        "goals",
        [{"key": "check", "type": "evaluate_goal", "goal": "a", "achieved": None}],
        goals=[
            {"key": "a", "name": "Booked meeting", "criteria": {"event": "booked"}},
            {"key": "b", "name": "BOOKED  meeting!", "criteria": {"event": "booked"}},
        ],
    )
    errors = assert_error_shape(api.post("/api/v1/journeys", data), 400)
    (error,) = [e for e in errors if e["loc"] == ["goals", 1, "name"]]
    assert "Booked meeting" in error["message"]


def test_a_cycle_with_a_wait_is_accepted(api):
    steps = [
        {"key": "ping", "type": "send_email", "subject": "s", "body": "b", "next": "pause"},
        {"key": "pause", "type": "wait", "duration": "P1D", "next": "ping"},
    ]
    create(api, definition("cycle-ok", steps))


@pytest.mark.parametrize(
    ("key", "ok"),
    [("a", True), ("a_b-9", True), ("a" * 64, True), ("-a", False), ("Ab", False), ("a b", False)],
)
def test_keys_are_slugs_of_at_most_64(api, key, ok):
    steps = [{"key": key, "type": "exit"}]
    data = definition(key if key[0].isalnum() and key.islower() else "slugs", steps)
    data["conversions"] = [{"key": key, "name": "C"}]
    data["goals"] = [{"key": key, "name": "G", "criteria": {"event": "x"}}]
    response = api.post("/api/v1/journeys", data)
    if ok:
        assert response.status_code == 201, response.content
    else:
        found = locs(assert_error_shape(response, 400))
        for loc in (["steps", 0, "key"], ["conversions", 0, "key"], ["goals", 0, "key"]):
            assert loc in found, (loc, found)


def test_a_missing_conversion_or_goal_of_an_existing_journey_is_a_warning(api):
    create(api, definition("lead-nurture", [{"key": "x", "type": "exit"}]))
    body = create(api, CONTRACT_EXAMPLE)
    warnings = {tuple(w["loc"]): w["message"] for w in body["warnings"]}
    assert set(warnings) >= {("triggers", 1, "conversion"), ("triggers", 2, "journey")}
    assert "became-customer" in warnings[("triggers", 1, "conversion")]
    response = api.post("/api/v1/journeys/trial-nurture/versions", CONTRACT_EXAMPLE)
    assert response.status_code == 201
    assert [w["loc"] for w in response.json()["warnings"]] == [w["loc"] for w in body["warnings"]]
