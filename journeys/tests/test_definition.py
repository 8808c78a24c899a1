"""The journey definition format of docs/contract.md §1. Pure: no database."""

import copy
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.definition import (
    MAX_CRITERIA_DEPTH,
    MAX_DURATION,
    SLUG_RE,
    Condition,
    Definition,
    DefinitionError,
    EvaluateGoal,
    JourneyRefs,
    Split,
    Wait,
    format_duration,
    normalize_name,
    parse_definition,
    parse_duration,
    render_definition,
)
from journeys.tests.contract_example import CONTRACT_EXAMPLE


def example():
    return copy.deepcopy(CONTRACT_EXAMPLE)


def journey(*steps, **fields):
    """A small valid definition; steps default to a single email."""
    data = {
        "key": "welcome-series",
        "name": "Welcome series",
        "steps": list(steps) or [email("welcome")],
    }
    data.update(fields)
    return data


def email(key, next=None):
    return {"key": key, "type": "send_email", "subject": "Hi", "body": "Hello", "next": next}


def wait(key, next=None, duration="P1D"):
    return {"key": key, "type": "wait", "duration": duration, "next": next}


def condition(key, criteria, then=None, else_=None):
    return {"key": key, "type": "condition", "if": criteria, "then": then, "else": else_}


def errors_of(data, **kwargs):
    with pytest.raises(DefinitionError) as caught:
        parse_definition(data, **kwargs)
    return caught.value.errors


def assert_only_error(data, loc, message):
    assert errors_of(data) == [{"loc": loc, "message": message}]


# --- The contract's example and rendering --------------------------------------------------


def test_contract_example_parses_with_cross_journey_references_as_warnings():
    definition, warnings = parse_definition(example())

    assert isinstance(definition, Definition)
    assert warnings == [
        {
            "loc": ["triggers", 1, "journey"],
            "message": "Journey 'lead-nurture' does not exist yet; "
            "this trigger takes effect once it does",
        },
        {
            "loc": ["triggers", 2, "journey"],
            "message": "Journey 'onboarding' does not exist yet; this trigger takes effect once it does",
        },
    ]


def test_contract_example_renders_with_defaults_filled_in():
    rendered = render_definition(parse_definition(example())[0])

    expected = example()
    expected["conversions"][1].update(value=0.0, counting="once_per_enrollment")
    assert rendered == expected
    assert json.loads(json.dumps(rendered)) == rendered


def test_canonical_definition_renders_unchanged():
    canonical = render_definition(parse_definition(example())[0])

    assert render_definition(parse_definition(copy.deepcopy(canonical))[0]) == canonical


def test_rendering_writes_defaults_and_null_branches_and_leaves_out_unset_optionals():
    data = journey(
        {"key": "check", "type": "evaluate_goal", "goal": "g"},
        {"key": "ask", "type": "condition", "if": {"attribute": "plan", "op": "exists"}},
        goals=[{"key": "g", "name": "G", "criteria": {"event": "x"}}],
        triggers=[{"type": "event", "event": "signed_up"}],
    )
    data["steps"][0]["achieved"] = "ask"

    rendered = render_definition(parse_definition(data)[0])

    assert "description" not in rendered
    assert rendered["settings"] == {"reentry": "once", "holdout_percent": 0}
    assert rendered["exit_when"] == [] and rendered["conversions"] == []
    assert rendered["triggers"] == [{"type": "event", "event": "signed_up"}]
    assert rendered["goals"] == [{"key": "g", "name": "G", "criteria": {"event": "x"}}]
    assert rendered["steps"] == [
        {
            "key": "check",
            "type": "evaluate_goal",
            "goal": "g",
            "achieved": "ask",
            "not_achieved": None,
        },
        {
            "key": "ask",
            "type": "condition",
            "if": {"attribute": "plan", "op": "exists"},
            "then": None,
            "else": None,
        },
    ]


def test_criterion_value_null_is_kept_apart_from_no_value():
    data = journey(condition("ask", {"attribute": "plan", "op": "eq", "value": None}))

    rendered = render_definition(parse_definition(data)[0])

    assert rendered["steps"][0]["if"] == {"attribute": "plan", "op": "eq", "value": None}


def test_step_name_is_an_optional_label():
    step = email("welcome")
    step["name"] = "Say hello"

    definition, _ = parse_definition(journey(step))

    assert definition.steps[0].name == "Say hello"
    assert render_definition(definition)["steps"][0]["name"] == "Say hello"


# --- Typed accessors -----------------------------------------------------------------------


def test_accessors_give_the_engine_typed_steps_and_timedeltas():
    definition, _ = parse_definition(example())

    assert definition.first_step.key == "welcome"
    assert list(definition.step_map()) == [step["key"] for step in CONTRACT_EXAMPLE["steps"]]
    assert definition.step_map()["ab"].successors() == ["nudge", "check"]
    assert definition.step_map()["check"].successors() == ["is-pro"]
    assert definition.step_map()["tag"].successors() == []
    assert isinstance(definition.step_map()["ab"], Split)
    wait_step = definition.step_map()["wait-2d"]
    assert isinstance(wait_step, Wait)
    assert wait_step.duration_delta == datetime.timedelta(days=2)
    check = definition.step_map()["check"]
    assert isinstance(check, EvaluateGoal)
    assert check.wait_delta == datetime.timedelta(days=7)
    is_pro = definition.step_map()["is-pro"]
    assert isinstance(is_pro, Condition)
    assert (is_pro.if_.attribute, is_pro.then, is_pro.else_) == ("plan", "convert", "tag")
    assert definition.conversion_map()["paid"].window_delta == datetime.timedelta(days=30)
    assert definition.conversion_map()["activation"].window_delta is None
    assert definition.goal_map()["activated"].conversion == "activation"


def test_exit_step_has_no_successors():
    definition, _ = parse_definition(journey({"key": "bye", "type": "exit"}))

    assert definition.first_step.successors() == []


# --- Names, slugs, durations ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("Booked meeting", "booked-meeting "), ("Paid!", "PAID"), ("Straße", "STRASSE")],
)
def test_normalize_name_ignores_case_spacing_and_punctuation(first, second):
    assert normalize_name(first) == normalize_name(second)


def test_normalize_name_keeps_only_letters_and_digits():
    assert normalize_name("Booked meeting") == "bookedmeeting"
    assert normalize_name("Plan 2 — Café") == "plan2café"


@pytest.mark.parametrize("slug", ["a", "trial-nurture", "v2_flow", "0", "a" * 64])
def test_slug_re_accepts_slugs(slug):
    assert SLUG_RE.match(slug)


@pytest.mark.parametrize("slug", ["", "-a", "_a", "Trial", "a b", "a" * 65, "a\n", "é"])
def test_slug_re_refuses_non_slugs(slug):
    assert not SLUG_RE.match(slug)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT30S", datetime.timedelta(seconds=30)),
        ("PT15M", datetime.timedelta(minutes=15)),
        ("PT1H", datetime.timedelta(hours=1)),
        ("P2D", datetime.timedelta(days=2)),
        ("P1W", datetime.timedelta(weeks=1)),
        ("P1DT12H", datetime.timedelta(days=1, hours=12)),
        ("P1W2DT3H4M5S", datetime.timedelta(days=9, hours=3, minutes=4, seconds=5)),
        ("PT48H", datetime.timedelta(days=2)),
    ],
)
def test_parse_duration_reads_weeks_days_and_clock_time(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("P1M", "'P1M' counts months or years, which vary in length"),
        ("P1Y", "'P1Y' counts months or years, which vary in length"),
        ("P1Y2D", "'P1Y2D' counts months or years, which vary in length"),
        ("P0D", "A duration must be longer than zero"),
        ("PT0S", "A duration must be longer than zero"),
        ("-P1D", "A duration must be longer than zero"),
        ("PT1.5H", "'PT1.5H' has a fraction; use whole numbers"),
        ("P", "'P' is not an ISO 8601 duration"),
        ("P1DT", "'P1DT' is not an ISO 8601 duration"),
        ("2D", "'2D' is not an ISO 8601 duration"),
        ("p2d", "'p2d' is not an ISO 8601 duration"),
        ("P 2D", "'P 2D' is not an ISO 8601 duration"),
        ("P2D\n", "is not an ISO 8601 duration"),
        ("P3651D", "'P3651D' is too long; the longest duration is P3650D"),
        ("P99999999999999999999D", "is too long"),
        (7, "A duration must be a string"),
    ],
)
def test_parse_duration_refuses_ambiguous_empty_and_negative_durations(text, message):
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (datetime.timedelta(days=2), "P2D"),
        (datetime.timedelta(weeks=2), "P14D"),
        (datetime.timedelta(days=1, hours=12), "P1DT12H"),
        (datetime.timedelta(minutes=90), "PT1H30M"),
        (datetime.timedelta(seconds=5), "PT5S"),
    ],
)
def test_format_duration_writes_the_canonical_form(delta, text):
    assert format_duration(delta) == text
    assert parse_duration(text) == delta


@pytest.mark.parametrize(
    "delta",
    [datetime.timedelta(0), datetime.timedelta(days=-1), datetime.timedelta(milliseconds=1500)],
)
def test_format_duration_refuses_what_parse_duration_would_refuse(delta):
    with pytest.raises(ValueError):
        format_duration(delta)


@given(st.integers(min_value=1, max_value=int(MAX_DURATION.total_seconds())))
def test_format_and_parse_duration_are_inverse(seconds):
    delta = datetime.timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta


# --- Top level -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, [], "journey", 3, 1.5, True])
def test_definition_must_be_an_object(data):
    assert errors_of(data) == [{"loc": [], "message": "A journey definition must be a JSON object"}]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "Trial Nurture",
            "Use lowercase letters, digits, '-' and '_', starting with a letter or digit",
        ),
        ("-trial", "Use lowercase letters, digits, '-' and '_', starting with a letter or digit"),
        ("", "Must not be empty"),
        ("a" * 65, "Must be at most 64 characters"),
        (12, "Expected a string"),
    ],
)
def test_key_must_be_a_slug(key, message):
    errors = errors_of(journey(key=key))

    assert len(errors) == 1
    assert errors[0]["loc"] == ["key"]
    assert errors[0]["message"].startswith(message)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Must not be empty"),
        ("   ", "Must not be empty"),
        ("x" * 201, "Must be at most 200 characters"),
    ],
)
def test_name_must_be_present_and_at_most_200_characters(name, message):
    assert_only_error(journey(name=name), ["name"], message)


def test_missing_top_level_fields_are_each_reported():
    assert errors_of({}) == [
        {"loc": ["key"], "message": "Field required"},
        {"loc": ["name"], "message": "Field required"},
        {"loc": ["steps"], "message": "Field required"},
    ]


def test_unknown_top_level_field_is_an_error():
    assert_only_error(journey(stepz=[]), ["stepz"], "Unknown field 'stepz'")


def test_a_journey_needs_at_least_one_step():
    assert_only_error(journey(steps=[]), ["steps"], "A journey needs at least one step")


def test_wrong_top_level_types_are_definition_errors():
    errors = errors_of(
        journey(steps="welcome", settings=[], triggers={}, goals=None, description=5)
    )

    assert errors == [
        {"loc": ["description"], "message": "Expected a string"},
        {"loc": ["settings"], "message": "Expected an object"},
        {"loc": ["triggers"], "message": "Expected a list"},
        {"loc": ["goals"], "message": "Expected a list"},
        {"loc": ["steps"], "message": "Expected a list"},
    ]


# --- Settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("holdout", "message"),
    [
        (51, "Input should be less than or equal to 50"),
        (-1, "Input should be greater than or equal to 0"),
        (10.5, "Expected a whole number"),
        ("10", "Expected a whole number"),
        (True, "Expected a whole number"),
    ],
)
def test_holdout_percent_is_a_whole_number_from_0_to_50(holdout, message):
    data = journey(settings={"holdout_percent": holdout})

    assert_only_error(data, ["settings", "holdout_percent"], message)


def test_reentry_must_be_a_known_mode():
    assert_only_error(
        journey(settings={"reentry": "twice"}),
        ["settings", "reentry"],
        "Input should be 'once', 'after_exit' or 'concurrent'",
    )


def test_settings_default_to_once_without_holdout():
    definition, _ = parse_definition(journey())

    assert (definition.settings.reentry, definition.settings.holdout_percent) == ("once", 0)


# --- Steps ---------------------------------------------------------------------------------


def test_unknown_step_type_names_the_known_ones():
    assert_only_error(
        journey({"key": "a", "type": "foo"}),
        ["steps", 0, "type"],
        "Unknown step type 'foo'; expected one of send_email, send_sms, wait, condition, "
        "split, update_contact, evaluate_goal, convert, exit",
    )


def test_step_without_type_is_an_error():
    errors = errors_of(journey({"key": "a"}))

    assert errors[0]["loc"] == ["steps", 0, "type"]
    assert errors[0]["message"].startswith("Field required; expected one of send_email")


def test_step_that_is_not_an_object_is_an_error():
    assert_only_error(journey("welcome"), ["steps", 0], "Each step must be an object")


def test_missing_step_field_is_located_without_the_step_type():
    step = email("welcome")
    del step["subject"]

    assert_only_error(journey(step), ["steps", 0, "subject"], "Field required")


def test_unknown_step_field_is_an_error():
    step = email("welcome")
    step["subjet"] = "Hi"

    assert_only_error(journey(step), ["steps", 0, "subjet"], "Unknown field 'subjet'")


def test_exit_step_takes_no_next():
    assert_only_error(
        journey({"key": "bye", "type": "exit", "next": None}),
        ["steps", 0, "next"],
        "Unknown field 'next'",
    )


def test_step_key_must_be_a_slug():
    errors = errors_of(journey(email("Welcome!")))

    assert errors[0]["loc"] == ["steps", 0, "key"]
    assert errors[0]["message"].startswith("Use lowercase letters")


def test_duplicate_step_key_names_the_first_one():
    assert_only_error(
        journey(email("welcome", next="welcome-2"), email("welcome-2"), email("welcome")),
        ["steps", 2, "key"],
        "Key 'welcome' is already used by steps[0]",
    )


@pytest.mark.parametrize(
    ("step", "loc"),
    [
        (email("a", next="nowhere"), ["steps", 0, "next"]),
        (condition("a", {"attribute": "x", "op": "exists"}, then="nowhere"), ["steps", 0, "then"]),
        (condition("a", {"attribute": "x", "op": "exists"}, else_="nowhere"), ["steps", 0, "else"]),
        (
            {
                "key": "a",
                "type": "split",
                "paths": [{"weight": 1, "next": None}, {"weight": 1, "next": "nowhere"}],
            },
            ["steps", 0, "paths", 1, "next"],
        ),
        (
            {"key": "a", "type": "evaluate_goal", "goal": "g", "achieved": "nowhere"},
            ["steps", 0, "achieved"],
        ),
        (
            {"key": "a", "type": "evaluate_goal", "goal": "g", "not_achieved": "nowhere"},
            ["steps", 0, "not_achieved"],
        ),
    ],
)
def test_branch_to_a_missing_step_is_an_error(step, loc):
    data = journey(step, goals=[{"key": "g", "name": "G", "criteria": {"event": "x"}}])

    assert_only_error(data, loc, "No step has the key 'nowhere'")


def test_evaluate_goal_must_name_a_goal_of_this_journey():
    assert_only_error(
        journey({"key": "check", "type": "evaluate_goal", "goal": "activated"}),
        ["steps", 0, "goal"],
        "No goal has the key 'activated'",
    )


def test_convert_must_name_a_conversion_of_this_journey():
    assert_only_error(
        journey({"key": "win", "type": "convert", "conversion": "paid"}),
        ["steps", 0, "conversion"],
        "No conversion has the key 'paid'",
    )


def test_unreachable_step_is_an_error():
    assert_only_error(
        journey(email("welcome"), email("orphan")),
        ["steps", 1],
        "Step 'orphan' cannot be reached from the first step 'welcome'",
    )


def test_loop_without_a_wait_is_an_error_naming_its_steps():
    data = journey(
        email("welcome", next="ask"),
        condition("ask", {"attribute": "plan", "op": "exists"}, then="nudge", else_=None),
        email("nudge", next="ask"),
    )

    assert_only_error(
        data,
        ["steps", 1],
        "Steps 'ask' and 'nudge' form a loop with no wait step; "
        "add a wait so a contact cannot go round it endlessly",
    )


def test_step_leading_to_itself_without_a_wait_is_an_error():
    assert_only_error(
        journey(email("welcome", next="welcome")),
        ["steps", 0],
        "Step 'welcome' leads back to itself with no wait step; "
        "add a wait so a contact cannot go round it endlessly",
    )


def test_loop_through_a_wait_is_allowed():
    data = journey(
        email("welcome", next="ask"),
        condition("ask", {"attribute": "plan", "op": "exists"}, then="pause", else_=None),
        wait("pause", next="ask"),
    )

    parse_definition(data)


@pytest.mark.parametrize(
    ("paths", "loc", "message"),
    [
        ([{"weight": 1, "next": None}], ["steps", 0, "paths"], "A split needs at least 2 paths"),
        (
            [{"weight": 0, "next": None}, {"weight": 1, "next": None}],
            ["steps", 0, "paths", 0, "weight"],
            "Input should be greater than 0",
        ),
        (
            [{"weight": 1, "next": None}, {"weight": 1.5, "next": None}],
            ["steps", 0, "paths", 1, "weight"],
            "Expected a whole number",
        ),
        (
            [{"weight": True, "next": None}, {"weight": 1, "next": None}],
            ["steps", 0, "paths", 0, "weight"],
            "Expected a whole number",
        ),
        (
            [{"next": None}, {"weight": 1, "next": None}],
            ["steps", 0, "paths", 0, "weight"],
            "Field required",
        ),
    ],
)
def test_split_needs_two_paths_with_positive_whole_weights(paths, loc, message):
    assert_only_error(journey({"key": "ab", "type": "split", "paths": paths}), loc, message)


@pytest.mark.parametrize(
    ("step", "loc"),
    [
        (wait("pause", duration="P1M"), ["steps", 0, "duration"]),
        (
            {"key": "check", "type": "evaluate_goal", "goal": "g", "wait": "P1M"},
            ["steps", 0, "wait"],
        ),
        (
            condition("ask", {"event": "opened", "within": "P1M"}),
            ["steps", 0, "if", "within"],
        ),
    ],
)
def test_bad_duration_in_a_step_is_an_error_on_that_field(step, loc):
    data = journey(step, goals=[{"key": "g", "name": "G", "criteria": {"event": "x"}}])

    assert_only_error(
        data,
        loc,
        "'P1M' counts months or years, which vary in length; use days or weeks instead "
        "(e.g. P30D, P52W)",
    )


def test_bad_conversion_window_is_an_error():
    data = journey(conversions=[{"key": "paid", "name": "Paid", "window": "P0D"}])

    assert_only_error(data, ["conversions", 0, "window"], "A duration must be longer than zero")


@pytest.mark.parametrize(
    ("step", "field", "line"),
    [
        ({**email("welcome"), "subject": "Hi {{ contact.email | no_such_filter }}"}, "subject", 1),
        ({**email("welcome"), "body": "Hi\n{% if contact.email %}no end"}, "body", 2),
        ({"key": "sms", "type": "send_sms", "text": "a\nb\n{% bogus %}"}, "text", 3),
        ({"key": "sms", "type": "send_sms", "text": "{% load humanize %}"}, "text", 1),
    ],
)
def test_template_syntax_error_is_reported_on_its_field_with_its_line(step, field, line):
    errors = errors_of(journey(step))

    assert [error["loc"] for error in errors] == [["steps", 0, field]]
    assert errors[0]["message"].startswith(f"Template syntax error on line {line}: ")


def test_an_unclosed_output_is_refused_with_its_line():
    step = {**email("welcome"), "subject": "Hi\n{{ contact.attributes.first_name"}

    assert_only_error(
        journey(step),
        ["steps", 0, "subject"],
        "Template syntax error on line 2: expected '}}', found end of file",
    )


@pytest.mark.parametrize("name", ["ljust", "upper", "humanize"])
def test_an_unknown_filter_is_refused_when_saved(name):
    step = {**email("welcome"), "body": f"Hello\n\n{{{{ contact.email | {name}: 5 }}}}"}

    assert_only_error(
        journey(step),
        ["steps", 0, "body"],
        f"Template syntax error on line 3: unknown filter '{name}'",
    )


def test_templates_using_contact_fields_and_liquid_tags_are_accepted():
    step = {
        **email("welcome"),
        "subject": 'Welcome {{ contact.attributes.first_name | default: "there" | upcase }}',
        "body": "{% if contact.attributes.plan == 'pro' %}Pro{% elsif contact.email %}Free"
        "{% else %}?{% endif %}{% for tag in contact.attributes.tags %}{{ forloop.index }}"
        "{% else %}none{% endfor %}{% if not contact.email %}!{% endif %}",
    }

    parse_definition(journey(step))


def test_template_check_needs_no_django_settings():
    env = {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}
    script = (
        "from journeys.definition import parse_definition, DefinitionError\n"
        "step = {'key': 'a', 'type': 'send_sms', 'text': '{% if %}'}\n"
        "try:\n"
        "    parse_definition({'key': 'a', 'name': 'A', 'steps': [step]})\n"
        "except DefinitionError as exc:\n"
        "    print(exc.errors[0]['message'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.startswith("Template syntax error on line 1: ")


@pytest.mark.parametrize(("field", "value"), [("subject", ""), ("body", "  "), ("subject", None)])
def test_email_subject_and_body_are_required_text(field, value):
    errors = errors_of(journey({**email("welcome"), field: value}))

    assert [error["loc"] for error in errors] == [["steps", 0, field]]


def test_update_contact_needs_attributes():
    assert_only_error(
        journey({"key": "tag", "type": "update_contact", "attributes": {}}),
        ["steps", 0, "attributes"],
        "Set at least one attribute",
    )


def test_update_contact_attribute_names_are_checked():
    assert_only_error(
        journey({"key": "tag", "type": "update_contact", "attributes": {"": 1}}),
        ["steps", 0, "attributes", "", "[key]"],
        "Must not be empty",
    )


# --- Criteria ------------------------------------------------------------------------------


def criteria_errors(criteria):
    return errors_of(journey(condition("ask", criteria)))


@pytest.mark.parametrize("op", ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "in"])
def test_value_may_be_omitted_only_for_exists(op):
    assert criteria_errors({"attribute": "plan", "op": op}) == [
        {"loc": ["steps", 0, "if", "value"], "message": f"A value is required with '{op}'"}
    ]


def test_exists_takes_no_value_or_a_boolean():
    parse_definition(journey(condition("ask", {"attribute": "plan", "op": "exists"})))
    parse_definition(
        journey(condition("ask", {"attribute": "plan", "op": "exists", "value": False}))
    )

    assert criteria_errors({"attribute": "plan", "op": "exists", "value": "pro"}) == [
        {
            "loc": ["steps", 0, "if", "value"],
            "message": "With 'exists', leave the value out or use true or false",
        }
    ]


def test_in_needs_a_list():
    assert criteria_errors({"attribute": "plan", "op": "in", "value": "pro"}) == [
        {"loc": ["steps", 0, "if", "value"], "message": "With 'in', the value must be a list"}
    ]


def test_unknown_op_is_an_error():
    errors = criteria_errors({"attribute": "plan", "op": "like", "value": "pro"})

    assert [error["loc"] for error in errors] == [["steps", 0, "if", "op"]]
    assert errors[0]["message"].startswith("Input should be 'eq', 'ne'")


def test_comparison_value_must_be_a_scalar():
    assert criteria_errors({"attribute": "plan", "op": "eq", "value": {"a": 1}}) == [
        {
            "loc": ["steps", 0, "if", "value"],
            "message": "The value must be a string, a number, true, false or null",
        }
    ]


def test_property_criteria_only_work_inside_where():
    errors = criteria_errors({"property": "plan", "op": "eq", "value": "pro"})

    assert [error["loc"] for error in errors] == [["steps", 0, "if", "property"]]
    assert errors[0]["message"].startswith("'property' looks at an event's properties")


def test_attribute_criteria_are_refused_inside_where():
    data = journey(
        triggers=[
            {
                "type": "event",
                "event": "signed_up",
                "where": [{"attribute": "plan", "op": "exists"}],
            }
        ]
    )

    assert_only_error(
        data,
        ["triggers", 0, "where", 0, "attribute"],
        "Filters in 'where' look at the event's properties: use 'property' instead of 'attribute'",
    )


def test_criterion_must_have_exactly_one_kind():
    assert criteria_errors({"attribute": "plan", "event": "x", "op": "exists"}) == [
        {
            "loc": ["steps", 0, "if"],
            "message": "A criterion takes only one of 'attribute' and 'event'",
        }
    ]
    assert criteria_errors({"op": "eq"}) == [
        {
            "loc": ["steps", 0, "if"],
            "message": "A criterion needs one of: attribute, event, all, any",
        }
    ]


def test_nested_criteria_are_located_precisely():
    criteria = {
        "any": [
            {"attribute": "plan", "op": "eq", "value": "pro"},
            {"all": [{"event": "opened", "where": [{"property": "", "op": "exists"}]}]},
        ]
    }

    assert criteria_errors(criteria) == [
        {
            "loc": ["steps", 0, "if", "any", 1, "all", 0, "where", 0, "property"],
            "message": "Must not be empty",
        }
    ]


def test_empty_all_is_an_error():
    assert criteria_errors({"all": []}) == [
        {"loc": ["steps", 0, "if", "all"], "message": "List at least one criterion"}
    ]


def nested(depth):
    criteria = {"attribute": "plan", "op": "exists"}
    for _ in range(depth - 1):
        criteria = {"all": [criteria]}
    return criteria


def test_criteria_may_nest_20_levels():
    parse_definition(journey(condition("ask", nested(MAX_CRITERIA_DEPTH))))


def test_criteria_nested_past_20_levels_are_an_error():
    errors = criteria_errors(nested(MAX_CRITERIA_DEPTH + 1))

    assert errors == [
        {
            "loc": ["steps", 0, "if", *(["all", 0] * MAX_CRITERIA_DEPTH)],
            "message": "Criteria are nested more than 20 levels deep",
        }
    ]


def test_very_deep_json_is_a_definition_error():
    value = []
    for _ in range(10_000):
        value = [value]

    errors = errors_of(
        journey({"key": "tag", "type": "update_contact", "attributes": {"x": value}})
    )

    assert errors[0]["message"] == "Nested more than 64 levels deep"


def test_self_referencing_structure_is_a_definition_error():
    data = journey()
    data["steps"].append(data["steps"])

    errors_of(data)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("", "Must not be empty"),
        ("x" * 101, "Must be at most 100 characters"),
        (5, "Expected a string"),
    ],
)
def test_event_names_are_non_empty_strings_of_at_most_100_characters(event, message):
    data = journey(triggers=[{"type": "event", "event": event}])

    assert_only_error(data, ["triggers", 0, "event"], message)


def test_property_names_are_checked_like_event_names():
    data = journey(
        conversions=[
            {
                "key": "paid",
                "name": "Paid",
                "event": {"event": "purchase", "value_property": "x" * 101},
            }
        ]
    )

    assert_only_error(
        data, ["conversions", 0, "event", "value_property"], "Must be at most 100 characters"
    )


# --- Triggers and exit rules ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["conversion", "goal"])
def test_conversion_and_goal_triggers_need_a_journey(kind):
    assert_only_error(
        journey(triggers=[{"type": kind, kind: "x"}]),
        ["triggers", 0, "journey"],
        "Field required; a conversion or goal trigger names the journey it comes from",
    )


def test_unknown_trigger_type_is_an_error():
    assert_only_error(
        journey(triggers=[{"type": "webhook"}]),
        ["triggers", 0, "type"],
        "Unknown trigger type 'webhook'; expected one of event, conversion, goal",
    )


def test_exit_rule_defaults_to_this_journey_and_must_name_its_conversion():
    data = journey(exit_when=[{"type": "conversion", "conversion": "paid"}])

    assert_only_error(
        data, ["exit_when", 0, "conversion"], "No conversion of this journey has the key 'paid'"
    )


def test_reference_to_this_journey_by_key_must_exist():
    data = journey(
        triggers=[{"type": "goal", "journey": "welcome-series", "goal": "activated"}],
        exit_when=[{"type": "goal", "goal": "activated", "journey": "welcome-series"}],
    )

    assert errors_of(data) == [
        {
            "loc": ["triggers", 0, "goal"],
            "message": "No goal of this journey has the key 'activated'",
        },
        {
            "loc": ["exit_when", 0, "goal"],
            "message": "No goal of this journey has the key 'activated'",
        },
    ]


def test_references_to_other_journeys_resolve_through_the_callback():
    known = {"lead-nurture": JourneyRefs(conversion_keys=frozenset({"became-customer"}))}
    asked = []

    def resolve(key):
        asked.append(key)
        return known.get(key)

    data = journey(
        triggers=[
            {"type": "conversion", "journey": "lead-nurture", "conversion": "became-customer"},
            {"type": "goal", "journey": "lead-nurture", "goal": "engaged"},
            {"type": "goal", "journey": "onboarding", "goal": "activated"},
        ],
        exit_when=[
            {"type": "conversion", "conversion": "became-customer", "journey": "lead-nurture"}
        ],
    )

    _, warnings = parse_definition(data, resolve_journey=resolve)

    assert warnings == [
        {
            "loc": ["triggers", 1, "goal"],
            "message": "Journey 'lead-nurture' has no goal 'engaged' yet; "
            "this trigger takes effect once it does",
        },
        {
            "loc": ["triggers", 2, "journey"],
            "message": "Journey 'onboarding' does not exist yet; this trigger takes effect once it does",
        },
    ]
    assert asked == ["lead-nurture", "onboarding"]


# --- Goals and conversions -----------------------------------------------------------------


def test_conversion_name_duplicate_ignoring_case_and_punctuation_names_the_existing_one():
    data = journey(
        conversions=[
            {"key": "booked", "name": "Booked meeting"},
            {"key": "booked-2", "name": "booked-meeting "},
        ]
    )

    assert_only_error(
        data,
        ["conversions", 1, "name"],
        'Name "booked-meeting " duplicates "Booked meeting" (conversions[0])',
    )


def test_goal_name_duplicate_is_an_error():
    data = journey(
        goals=[
            {"key": "a", "name": "Activated", "criteria": {"event": "x"}},
            {"key": "b", "name": "ACTIVATED!", "criteria": {"event": "y"}},
        ]
    )

    assert_only_error(
        data, ["goals", 1, "name"], 'Name "ACTIVATED!" duplicates "Activated" (goals[0])'
    )


def test_a_goal_and_a_conversion_may_share_a_name():
    data = journey(
        goals=[{"key": "activated", "name": "Activated", "criteria": {"event": "x"}}],
        conversions=[{"key": "activation", "name": "activated"}],
    )

    parse_definition(data)


def test_goal_and_conversion_names_need_a_letter_or_digit():
    assert_only_error(
        journey(conversions=[{"key": "paid", "name": "!!"}]),
        ["conversions", 0, "name"],
        "Must contain a letter or a digit",
    )


@pytest.mark.parametrize(
    ("section", "extra"), [("goals", {"criteria": {"event": "x"}}), ("conversions", {})]
)
def test_duplicate_goal_and_conversion_keys_are_errors(section, extra):
    data = journey(
        **{section: [{"key": "k", "name": "One", **extra}, {"key": "k", "name": "Two", **extra}]}
    )

    assert_only_error(data, [section, 1, "key"], f"Key 'k' is already used by {section}[0]")


def test_goal_conversion_must_exist():
    data = journey(
        goals=[{"key": "g", "name": "G", "criteria": {"event": "x"}, "conversion": "paid"}]
    )

    assert_only_error(data, ["goals", 0, "conversion"], "No conversion has the key 'paid'")


def test_goal_needs_criteria():
    assert_only_error(
        journey(goals=[{"key": "g", "name": "G"}]), ["goals", 0, "criteria"], "Field required"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "Input should be greater than or equal to 0"),
        (1.005, "Use at most 2 decimal places"),
        (10**13, "Must be at most 999999999999.99"),
        ("49", "Expected a number"),
        (True, "Expected a number"),
        (float("nan"), "Expected a finite number"),
    ],
)
def test_conversion_value_is_a_non_negative_amount(value, message):
    data = journey(conversions=[{"key": "paid", "name": "Paid", "value": value}])

    assert_only_error(data, ["conversions", 0, "value"], message)


def test_conversion_counting_must_be_known():
    errors = errors_of(journey(conversions=[{"key": "paid", "name": "Paid", "counting": "twice"}]))

    assert [error["loc"] for error in errors] == [["conversions", 0, "counting"]]


def test_unknown_conversion_field_is_an_error():
    data = journey(conversions=[{"key": "paid", "name": "Paid", "amount": 5}])

    assert_only_error(data, ["conversions", 0, "amount"], "Unknown field 'amount'")


# --- All errors at once --------------------------------------------------------------------


def test_every_error_comes_back_at_once():
    data = example()
    data["key"] = "Trial Nurture"
    data["settings"]["holdout_percent"] = 80
    data["steps"][1]["duration"] = "P1M"
    data["steps"][2]["paths"][0]["weight"] = 0
    data["steps"][3]["next"] = "nowhere"
    data["steps"][4]["goal"] = "missing-goal"
    data["steps"][6]["type"] = "tag_contact"
    data["conversions"][1]["name"] = "started-paid plan"
    data["goals"][0]["conversion"] = "missing-conversion"

    locs = [error["loc"] for error in errors_of(data)]

    assert sorted(map(str, locs)) == sorted(
        map(
            str,
            [
                ["key"],
                ["settings", "holdout_percent"],
                ["steps", 1, "duration"],
                ["steps", 2, "paths", 0, "weight"],
                ["steps", 3, "next"],
                ["steps", 4, "goal"],
                ["steps", 6, "type"],
                ["conversions", 1, "name"],
                ["goals", 0, "conversion"],
            ],
        )
    )


def test_a_broken_step_does_not_hide_errors_elsewhere_or_add_false_ones():
    data = journey(
        email("welcome", next="broken"),
        {"key": "broken", "type": "send_sms", "next": "after"},
        email("after", next="nowhere"),
    )

    assert errors_of(data) == [
        {"loc": ["steps", 1, "text"], "message": "Field required"},
        {"loc": ["steps", 2, "next"], "message": "No step has the key 'nowhere'"},
    ]


def test_definition_error_message_summarises_the_errors():
    with pytest.raises(DefinitionError, match=r"steps\[0\]\.next: No step has the key 'x'"):
        parse_definition(journey(email("welcome", next="x")))


# --- Generated definitions -----------------------------------------------------------------

slugs = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True)
identifiers = st.text(
    alphabet=st.characters(categories=["L", "N"]) | st.sampled_from("_. -"), min_size=1, max_size=12
).filter(lambda text: text == text.strip())
labels = st.text(min_size=1, max_size=30).filter(lambda text: text.strip() and normalize_name(text))
durations = st.one_of(
    st.sampled_from(["P1W", "PT1H", "P1DT12H", "PT48H", "P2W3D"]),
    st.integers(1, int(MAX_DURATION.total_seconds())).map(
        lambda seconds: format_duration(datetime.timedelta(seconds=seconds))
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
templates = st.one_of(
    st.sampled_from(
        [
            "Welcome {{ contact.attributes.first_name }}",
            "{% if contact.email %}Hi{% else %}Hello{% endif %}",
            "{{ contact.attributes.plan | default: 'free' | upcase }}",
        ]
    ),
    st.text(min_size=1, max_size=40).filter(
        lambda text: text.strip() and not set("{}%#") & set(text)
    ),
)


@st.composite
def comparisons(draw, field):
    op = draw(st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "contains", "in", "exists"]))
    comparison = {field: draw(identifiers), "op": op}
    if op == "exists":
        if draw(st.booleans()):
            comparison["value"] = draw(st.booleans())
    elif op == "in":
        comparison["value"] = draw(st.lists(scalars, min_size=1, max_size=3))
    elif op in ("gt", "gte", "lt", "lte"):
        comparison["value"] = draw(st.one_of(st.integers(), st.text(max_size=8)))
    else:
        comparison["value"] = draw(scalars)
    return comparison


def combined(children):
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"all": items}),
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"any": items}),
    )


filters = st.recursive(comparisons("property"), combined, max_leaves=4)


@st.composite
def event_criteria(draw):
    criterion = {"event": draw(identifiers)}
    if draw(st.booleans()):
        criterion["where"] = draw(st.lists(filters, max_size=2))
    if draw(st.booleans()):
        criterion["within"] = draw(durations)
    return criterion


criteria = st.recursive(
    st.one_of(comparisons("attribute"), event_criteria()), combined, max_leaves=5
)


def maybe(draw, target, field, strategy):
    if draw(st.booleans()):
        target[field] = draw(strategy)


@st.composite
def steps(draw, goal_keys, conversion_keys):
    count = draw(st.integers(1, 7))
    keys = draw(st.lists(slugs, min_size=count, max_size=count, unique=True))
    kinds = ["send_email", "send_sms", "wait", "condition", "split", "update_contact"]
    kinds += ["evaluate_goal"] * bool(goal_keys) + ["convert"] * bool(conversion_keys)
    types = [draw(st.sampled_from(kinds)) for _ in keys]
    if draw(st.booleans()):
        types[-1] = "exit"
    result = []
    for index, (key, kind) in enumerate(zip(keys, types, strict=True)):
        # Every step leads on to the next one, so all are reachable; other branches go
        # forward, end the enrollment, or loop back only to a wait step, so every loop
        # has a wait in it.
        primary = keys[index + 1] if index + 1 < len(keys) else None
        targets = [None, *keys[index + 1 :]]
        targets += [keys[i] for i in range(index + 1) if types[i] == "wait"]
        other = st.sampled_from(targets)
        step = {"key": key, "type": kind}
        maybe(draw, step, "name", labels)
        if kind == "send_email":
            step.update(subject=draw(templates), body=draw(templates), next=primary)
        elif kind == "send_sms":
            step.update(text=draw(templates), next=primary)
        elif kind == "wait":
            step.update(duration=draw(durations), next=primary)
        elif kind == "condition":
            step.update({"if": draw(criteria), "then": primary, "else": draw(other)})
        elif kind == "split":
            weights = draw(st.lists(st.integers(1, 100), min_size=2, max_size=3))
            nexts = [primary] + [draw(other) for _ in weights[1:]]
            step["paths"] = [{"weight": w, "next": n} for w, n in zip(weights, nexts, strict=True)]
        elif kind == "update_contact":
            step.update(
                attributes=draw(st.dictionaries(identifiers, scalars, min_size=1, max_size=3)),
                next=primary,
            )
        elif kind == "evaluate_goal":
            step.update(goal=draw(st.sampled_from(goal_keys)), achieved=primary)
            step["not_achieved"] = draw(other)
            maybe(draw, step, "wait", durations)
        elif kind == "convert":
            step.update(conversion=draw(st.sampled_from(conversion_keys)), next=primary)
        result.append(step)
    return result


@st.composite
def definitions(draw):
    conversion_keys = draw(st.lists(slugs, max_size=3, unique=True))
    conversion_names = draw(
        st.lists(
            labels,
            min_size=len(conversion_keys),
            max_size=len(conversion_keys),
            unique_by=normalize_name,
        )
    )
    goal_keys = draw(st.lists(slugs, max_size=3, unique=True))
    goal_names = draw(
        st.lists(labels, min_size=len(goal_keys), max_size=len(goal_keys), unique_by=normalize_name)
    )

    conversions = []
    for key, name in zip(conversion_keys, conversion_names, strict=True):
        conversion = {"key": key, "name": name}
        maybe(draw, conversion, "value", st.integers(0, 10**8).map(lambda cents: cents / 100))
        maybe(
            draw,
            conversion,
            "counting",
            st.sampled_from(["once_per_enrollment", "once_per_contact", "every_time"]),
        )
        maybe(draw, conversion, "window", durations)
        maybe(draw, conversion, "description", st.text(max_size=20))
        if draw(st.booleans()):
            event = {"event": draw(identifiers)}
            maybe(draw, event, "where", st.lists(filters, max_size=2))
            maybe(draw, event, "value_property", identifiers)
            conversion["event"] = event
        conversions.append(conversion)
    goals = []
    for key, name in zip(goal_keys, goal_names, strict=True):
        goal = {"key": key, "name": name, "criteria": draw(criteria)}
        if conversion_keys:
            maybe(draw, goal, "conversion", st.sampled_from(conversion_keys))
        maybe(draw, goal, "description", st.text(max_size=20))
        goals.append(goal)

    own_refs = [{"type": "event", "event": draw(identifiers)}]
    own_refs += [{"type": "conversion", "conversion": key} for key in conversion_keys]
    own_refs += [{"type": "goal", "goal": key} for key in goal_keys]
    other = st.from_regex(r"other-[a-z0-9]{1,6}", fullmatch=True)
    triggers = draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda e, w: {"type": "event", "event": e, "where": w},
                    identifiers,
                    st.lists(filters, max_size=2),
                ),
                st.builds(
                    lambda j, c: {"type": "conversion", "journey": j, "conversion": c}, other, slugs
                ),
                st.builds(lambda j, g: {"type": "goal", "journey": j, "goal": g}, other, slugs),
            ),
            max_size=3,
        )
    )
    data = {
        "key": draw(slugs),
        "name": draw(labels),
        "triggers": triggers,
        "exit_when": draw(st.lists(st.sampled_from(own_refs), max_size=3)),
        "goals": goals,
        "conversions": conversions,
        "steps": draw(steps(goal_keys, conversion_keys)),
    }
    maybe(draw, data, "description", st.text(max_size=30))
    if draw(st.booleans()):
        data["settings"] = {
            "reentry": draw(st.sampled_from(["once", "after_exit", "concurrent"])),
            "holdout_percent": draw(st.integers(0, 50)),
        }
    return data


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definitions())
def test_generated_definitions_round_trip_through_their_canonical_form(data):
    rendered = render_definition(parse_definition(data)[0])

    assert json.loads(json.dumps(rendered, allow_nan=False)) == rendered
    assert render_definition(parse_definition(copy.deepcopy(rendered))[0]) == rendered


field_names = st.sampled_from(
    [
        "key", "name", "type", "steps", "next", "then", "else", "if", "paths", "weight",
        "attribute", "property", "event", "op", "value", "all", "any", "where", "within",
        "duration", "goal", "conversion", "journey", "settings", "triggers", "exit_when",
        "goals", "conversions", "criteria", "window", "counting", "subject", "body", "text",
    ]
)  # fmt: skip
garbage = st.recursive(
    st.one_of(
        scalars, st.floats(), st.sampled_from(["send_email", "wait", "P1D", "{% if %}", "eq"])
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(field_names, st.text(max_size=4)), children, max_size=5),
    ),
    max_leaves=30,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage)
def test_garbage_only_ever_raises_definition_error(data):
    try:
        parse_definition(data)
    except DefinitionError as exc:
        assert exc.errors
        assert all(isinstance(error["message"], str) and error["message"] for error in exc.errors)
        json.dumps(exc.errors)


def paths_in(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths_in(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths_in(child, (*prefix, index))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definitions(), st.data())
def test_damaged_definitions_only_ever_raise_definition_error(data, draw):
    path = draw.draw(st.sampled_from(list(paths_in(data))[1:]))
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if draw.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw.draw(garbage)

    try:
        parse_definition(data, resolve_journey=lambda key: None)
    except DefinitionError as exc:
        json.dumps(exc.errors)
