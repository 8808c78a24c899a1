"""Compound criteria and multi-filter rules in the editor: rows matched all or any, and JSON
for what the rows cannot show (issue 14)."""

import json

import pytest

from conversions.models import Goal
from journeys.actions.versions import create_journey
from journeys.models import Journey
from journeys.tests.test_views import BASE, draft_definition, htmx

pytestmark = pytest.mark.django_db

STEP_URL = "/journeys/trial-nurture/steps/is-pro/"
NESTED = {
    "any": [
        {"attribute": "plan", "op": "eq", "value": "pro"},
        {
            "all": [
                {"event": "invited", "within": "P7D"},
                {"attribute": "seats", "op": "gte", "value": 5},
            ]
        },
    ]
}


def journey_with_condition(criteria):
    steps = [
        {"key": "is-pro", "type": "condition", "if": criteria, "then": "convert", "else": None},
        {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
    ]
    journey, _, _ = create_journey(definition={**BASE, "steps": steps})
    return journey


def formset_data(prefix: str, items, fields: dict, extra=None) -> dict:
    """A form's posted fields with these rows (dicts of row fields) under `prefix`."""
    data = {**fields, f"{prefix}-TOTAL_FORMS": str(len(items)), f"{prefix}-INITIAL_FORMS": "1"}
    for index, item in enumerate(items):
        data.update({f"{prefix}-{index}-{name}": value for name, value in item.items()})
    return {**data, **(extra or {})}


def rows(*items, match="all", extra=None):
    """The posted form of the Condition step with these criteria rows."""
    fields = {"match": match, "go_then": "convert", "go_else": ""}
    return formset_data("if", items, fields, extra)


PLAN = {"criteria_kind": "attribute", "attribute": "plan", "op": "eq", "compare": "pro"}
INVITED = {"criteria_kind": "event", "event": "invited", "within": "7 days"}


def saved_criteria():
    return draft_definition(Journey.objects.get())["steps"][0]["if"]


@pytest.mark.parametrize("match", ["all", "any"])
def test_two_rows_are_stored_as_a_group_of_the_chosen_kind(client, editor, match):
    journey_with_condition({"attribute": "plan", "op": "eq", "value": "free"})
    client.force_login(editor)
    response = htmx(client, "post", STEP_URL, rows(PLAN, INVITED, match=match))
    assert response.status_code == 200
    assert "Step saved to the draft." in response.content.decode()
    assert saved_criteria() == {
        match: [
            {"attribute": "plan", "op": "eq", "value": "pro"},
            {"event": "invited", "within": "P7D"},
        ]
    }
    # Shown again as two rows with the choice made.
    html = htmx(client, "get", STEP_URL).content.decode()
    assert 'name="if-TOTAL_FORMS" value="2"' in html
    assert 'value="invited"' in html and 'value="pro"' in html
    assert f'<option value="{match}" selected>' in html


def test_one_row_is_stored_as_the_plain_criterion(client, editor):
    journey_with_condition({"all": [{"attribute": "plan", "op": "eq", "value": "free"}, PLAN_C]})
    client.force_login(editor)
    htmx(client, "post", STEP_URL, rows(PLAN, {**INVITED, "DELETE": "on"}, match="any"))
    assert saved_criteria() == PLAN_C


PLAN_C = {"attribute": "plan", "op": "eq", "value": "pro"}


def test_add_condition_shows_one_more_row_and_saves_nothing(client, editor):
    journey = journey_with_condition(PLAN_C)
    client.force_login(editor)
    before = draft_definition(journey)
    response = htmx(client, "post", STEP_URL, rows(PLAN, extra={"add_condition": "1"}))
    html = response.content.decode()
    assert 'name="if-TOTAL_FORMS" value="2"' in html
    assert 'name="if-1-attribute"' in html
    assert "Step saved" not in html and "field-error" not in html
    assert draft_definition(journey) == before


def test_a_bad_row_is_named_inline_and_nothing_is_saved(client, editor):
    journey = journey_with_condition(PLAN_C)
    client.force_login(editor)
    before = draft_definition(journey)
    bad = {"criteria_kind": "event", "event": "invited", "within": "soon"}
    response = htmx(client, "post", STEP_URL, rows(PLAN, bad))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Check the conditions marked below." in html
    assert 'id="id_if-1-within_error"' in html  # the row's own field says what is wrong
    assert draft_definition(journey) == before


def test_no_row_at_all_is_an_error(client, editor):
    journey_with_condition(PLAN_C)
    client.force_login(editor)
    html = htmx(client, "post", STEP_URL, rows({"criteria_kind": "attribute"})).content.decode()
    assert "Add at least one condition." in html
    assert saved_criteria() == PLAN_C


def test_a_broken_or_missing_list_of_rows_is_an_inline_error_not_a_500(client, editor):
    journey_with_condition(PLAN_C)
    client.force_login(editor)
    data = rows(PLAN, extra={"if-TOTAL_FORMS": "many"})
    for extra in ({"add_condition": "1"}, {}):
        response = htmx(client, "post", STEP_URL, {**data, **extra})
        assert response.status_code == 200
        assert "Check the conditions marked below." in response.content.decode()
    response = htmx(client, "post", STEP_URL, {k: v for k, v in data.items() if "FORMS" not in k})
    assert response.status_code == 200
    assert "Add at least one condition." in response.content.decode()
    assert saved_criteria() == PLAN_C


def test_a_nested_group_is_shown_as_a_sentence_and_round_trips_untouched(client, editor):
    journey = journey_with_condition(NESTED)
    client.force_login(editor)
    before = draft_definition(journey)
    html = htmx(client, "get", STEP_URL).content.decode()
    assert "(plan = pro or (did invited within 1 week and seats ≥ 5))" in html
    assert "Edit as JSON" in html
    assert 'name="if-TOTAL_FORMS"' not in html
    # Posting the form as shown (the JSON untouched) keeps the criteria as they were.
    response = htmx(
        client,
        "post",
        STEP_URL,
        {"criteria_json": json.dumps(NESTED, indent=2), "go_then": "convert"},
    )
    assert "Step saved to the draft." in response.content.decode()
    assert draft_definition(journey) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"any": [', "This is not valid JSON"),
        ("", "Give the criteria as JSON."),
        ('{"any": []}', "any"),
        ('{"all": [{"attribute": "plan", "op": "near", "value": 1}]}', "op"),
    ],
)
def test_bad_criteria_json_is_an_inline_error(client, editor, text, message):
    journey = journey_with_condition(NESTED)
    client.force_login(editor)
    before = draft_definition(journey)
    response = htmx(client, "post", STEP_URL, {"criteria_json": text, "go_then": "convert"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "field-error" in html and message in html
    assert 'id="id_criteria_json_error"' in html
    assert draft_definition(journey) == before


def test_edited_criteria_json_is_stored(client, editor):
    journey_with_condition(NESTED)
    client.force_login(editor)
    changed = {"any": [PLAN_C, {"all": [{"event": "invited"}, {"event": "paid"}]}]}
    htmx(
        client,
        "post",
        STEP_URL,
        {"criteria_json": json.dumps(changed), "go_then": "convert"},
    )
    assert saved_criteria() == changed


# --- Triggers with several property filters ------------------------------------------------


def rule_data(*filters, match="all", extra=None):
    fields = {"trigger-type": "event", "trigger-event": "signed_up", "trigger-match": match}
    return formset_data("trigger-where", filters, fields, extra)


PLAN_F = {"property": "plan", "op": "eq", "compare": "pro"}
SEATS_F = {"property": "seats", "op": "gte", "compare": "5"}
STORED_F = [
    {"property": "plan", "op": "eq", "value": "pro"},
    {"property": "seats", "op": "gte", "value": 5},
]


def test_a_trigger_with_two_filters_stores_both_and_shows_them(client, editor):
    create_journey(definition=BASE)
    client.force_login(editor)
    response = htmx(
        client,
        "post",
        "/journeys/trial-nurture/triggers/",
        rule_data(PLAN_F, SEATS_F),
        "left-panel",
    )
    assert "Trigger added to the draft." in response.content.decode()
    triggers = draft_definition(Journey.objects.get())["triggers"]
    assert triggers[-1] == {"type": "event", "event": "signed_up", "where": STORED_F}
    html = client.get("/journeys/trial-nurture/").content.decode()
    assert "Event signed_up where plan = pro, seats ≥ 5" in html


def test_a_trigger_matching_any_filter_stores_an_any_group(client, editor):
    create_journey(definition=BASE)
    client.force_login(editor)
    htmx(
        client,
        "post",
        "/journeys/trial-nurture/triggers/",
        rule_data(PLAN_F, SEATS_F, match="any"),
        "left-panel",
    )
    triggers = draft_definition(Journey.objects.get())["triggers"]
    assert triggers[-1]["where"] == [{"any": STORED_F}]


def test_add_filter_shows_another_row_and_a_bad_filter_is_inline(client, editor):
    journey, _, _ = create_journey(definition=BASE)
    client.force_login(editor)
    before = draft_definition(journey)
    html = htmx(
        client,
        "post",
        "/journeys/trial-nurture/triggers/",
        rule_data(PLAN_F, extra={"trigger-add_filter": "1"}),
        "left-panel",
    ).content.decode()
    assert 'name="trigger-where-TOTAL_FORMS" value="2"' in html
    assert 'name="trigger-where-1-property"' in html
    assert '<details class="add-rule" open>' in html
    html = htmx(
        client,
        "post",
        "/journeys/trial-nurture/triggers/",
        rule_data(PLAN_F, {"property": "seats", "op": "gte", "compare": ""}),
        "left-panel",
    ).content.decode()
    assert "Give a value to compare the property with." in html
    assert draft_definition(journey) == before


def edit_data(*filters, match="all", extra=None):
    fields = {"trigger-0-type": "event", "trigger-0-event": "signed_up", "trigger-0-match": match}
    return formset_data("trigger-0-where", filters, fields, extra)


def test_a_trigger_with_two_filters_is_shown_again_in_its_edit_form_and_saved(client, editor):
    where = [{"any": STORED_F}]
    create_journey(
        definition={**BASE, "triggers": [{"type": "event", "event": "signed_up", "where": where}]}
    )
    client.force_login(editor)
    html = htmx(client, "get", "/journeys/trial-nurture/triggers/0/", target="left-panel")
    html = html.content.decode()
    assert 'action="/journeys/trial-nurture/triggers/0/"' in html
    assert 'name="trigger-0-where-TOTAL_FORMS" value="2"' in html
    assert 'name="trigger-0-where-1-property" value="seats"' in html
    assert 'name="trigger-0-where-1-compare" value="5"' in html
    assert '<option value="any" selected>' in html
    # Without HTMX the same form is on the editor page.
    page = client.get("/journeys/trial-nurture/triggers/0/").content.decode()
    assert 'name="trigger-0-where-1-property" value="seats"' in page

    country = {"property": "country", "op": "in", "compare": "FR, DE"}
    response = htmx(
        client,
        "post",
        "/journeys/trial-nurture/triggers/0/",
        edit_data(PLAN_F, {**SEATS_F, "DELETE": "on"}, country),
        "left-panel",
    )
    assert "Trigger saved to the draft." in response.content.decode()
    assert draft_definition(Journey.objects.get())["triggers"] == [
        {
            "type": "event",
            "event": "signed_up",
            "where": [STORED_F[0], {"property": "country", "op": "in", "value": ["FR", "DE"]}],
        }
    ]


def test_editing_a_rule_keeps_errors_inline_and_refuses_what_rows_cannot_show(client, editor):
    nested = {"any": [{"all": STORED_F}, STORED_F[0]]}
    triggers = [
        {"type": "event", "event": "signed_up"},
        {"type": "event", "event": "upgraded", "where": [nested]},
    ]
    journey, _, _ = create_journey(definition={**BASE, "triggers": triggers})
    client.force_login(editor)
    before = draft_definition(journey)
    html = htmx(
        client,
        "post",
        "/journeys/trial-nurture/triggers/0/",
        edit_data({"property": "plan", "op": "gt", "compare": ""}, extra={"trigger-0-event": ""}),
        "left-panel",
    ).content.decode()
    assert "Name the event that starts it." in html
    assert "Give a value to compare the property with." in html
    html = htmx(
        client, "get", "/journeys/trial-nurture/triggers/1/", target="left-panel"
    ).content.decode()
    assert "nests groups of filters" in html
    assert htmx(client, "get", "/journeys/trial-nurture/triggers/7/").status_code == 404
    assert draft_definition(journey) == before


def test_an_exit_rule_on_a_conversion_is_edited_and_a_viewer_cannot(client, editor, viewer):
    exits = [{"type": "conversion", "conversion": "paid"}]
    create_journey(definition={**BASE, "exit_when": exits})
    client.force_login(viewer)
    assert client.get("/journeys/trial-nurture/exit-rules/0/").status_code == 403
    client.force_login(editor)
    html = htmx(client, "get", "/journeys/trial-nurture/exit-rules/0/", target="left-panel")
    assert '<option value="trial-nurture:paid" selected>' in html.content.decode()
    data = {"exit-0-type": "event", "exit-0-event": "cancelled"}
    htmx(client, "post", "/journeys/trial-nurture/exit-rules/0/", data, "left-panel")
    assert draft_definition(Journey.objects.get())["exit_when"] == [
        {"type": "event", "event": "cancelled"}
    ]


# --- A goal's criteria (what an Evaluate goal step checks) --------------------------------


def journey_with_goal(criteria):
    goal = {"key": "activated", "name": "Activated", "criteria": criteria}
    create_journey(definition={**BASE, "goals": [goal]})


def test_a_goals_criteria_are_rows_matched_all_or_any(client, editor):
    journey_with_goal({"event": "project_created"})
    client.force_login(editor)
    html = client.get("/journeys/trial-nurture/goals-conversions/?edit=goal:activated")
    assert 'name="if-0-event" value="project_created"' in html.content.decode()
    data = formset_data("if", [PLAN, INVITED], {"name": "Activated", "match": "any"})
    response = htmx(client, "post", "/journeys/trial-nurture/goals/activated/", data, "left-panel")
    assert "Goal “Activated” saved." in response.content.decode()
    assert Goal.objects.get(key="activated").criteria == {
        "any": [PLAN_C, {"event": "invited", "within": "P7D"}]
    }
    # A new goal starts with one event row.
    html = client.get("/journeys/trial-nurture/goals-conversions/?add=goal").content.decode()
    assert '<option value="event" selected>' in html


def test_a_goals_nested_criteria_round_trip_as_json_and_bad_json_is_inline(client, editor):
    journey_with_goal(NESTED)
    client.force_login(editor)
    html = client.get("/journeys/trial-nurture/goals-conversions/?edit=goal:activated")
    html = html.content.decode()
    assert "(plan = pro or (did invited within 1 week and seats ≥ 5))" in html
    assert "Edit as JSON" in html
    url = "/journeys/trial-nurture/goals/activated/"
    text = json.dumps(NESTED, indent=2)
    htmx(client, "post", url, {"name": "Activated", "criteria_json": text}, "left-panel")
    assert Goal.objects.get(key="activated").criteria == NESTED
    for bad, message in (("{", "This is not valid JSON"), ('{"any": []}', "at least one")):
        response = htmx(
            client, "post", url, {"name": "Activated", "criteria_json": bad}, "left-panel"
        )
        assert response.status_code == 200
        assert 'id="id_criteria_json_error"' in response.content.decode()
        assert message in response.content.decode()
    assert Goal.objects.get(key="activated").criteria == NESTED
