"""The Goals & conversions panel: listing with usages, inline add/edit with errors beside
the field, archive refused while a live version uses it, warnings and revisions on live
journeys."""

import pytest

from conversions.models import Conversion, Goal, Revision
from journeys.actions.versions import create_journey, publish_version

pytestmark = pytest.mark.django_db

DEFINITION = {
    "key": "trial",
    "name": "Trial",
    "conversions": [
        {"key": "paid", "name": "Started paid plan", "value": 49.0},
        {"key": "demo", "name": "Booked demo"},
    ],
    "goals": [
        {
            "key": "activated",
            "name": "Activated",
            "criteria": {"event": "project_created"},
            "conversion": "demo",
        }
    ],
    "exit_when": [{"type": "conversion", "conversion": "paid"}],
    "steps": [
        {"key": "check", "type": "evaluate_goal", "goal": "activated", "achieved": "convert"},
        {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
    ],
}
PANEL = "/journeys/trial/goals-conversions/"


def htmx_get(client, url, data=None):
    return client.get(url, data or {}, headers={"HX-Request": "true", "HX-Target": "left-panel"})


def htmx_post(client, url, data=None):
    return client.post(url, data or {}, headers={"HX-Request": "true", "HX-Target": "left-panel"})


@pytest.fixture
def journey(db):
    journey, _, _ = create_journey(definition=DEFINITION)
    return journey


@pytest.fixture
def live(journey, publisher):
    publish_version(version=journey.versions.get(), user=publisher)
    return journey


def test_panel_lists_each_goal_and_conversion_with_where_it_is_used(client, viewer, journey):
    create_journey(
        definition={
            "key": "upsell",
            "name": "Upsell",
            "triggers": [{"type": "conversion", "journey": "trial", "conversion": "paid"}],
            "steps": [{"key": "bye", "type": "exit"}],
        }
    )
    client.force_login(viewer)
    response = htmx_get(client, PANEL)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<aside id="left-panel"')
    for text in (
        "Started paid plan",
        "Booked demo",
        "Activated",
        "Convert step &#x27;convert&#x27;",
        "Exit rule",
        "Evaluate goal step &#x27;check&#x27;",
        "Goal “Activated” awards it",
        "Trigger",
        "Upsell",
    ):
        assert text in html, text


def test_panel_query_count_is_bounded(client, viewer, journey, django_assert_max_num_queries):
    client.force_login(viewer)
    htmx_get(client, PANEL)
    with django_assert_max_num_queries(12):
        htmx_get(client, PANEL)


def test_panel_without_htmx_renders_the_editor_with_the_panel_open(client, viewer, journey):
    client.force_login(viewer)
    html = client.get(PANEL).content.decode()
    assert "<!doctype html>" in html and "Flow diagram" in html and "Booked demo" in html


def test_add_conversion_form_has_the_contract_fields(client, editor, journey):
    client.force_login(editor)
    html = htmx_get(client, PANEL, {"add": "conversion"}).content.decode()
    for label in (">Name<", ">Value<", ">Counting<", ">Window<", ">Save<"):
        assert label in html, label


def test_adding_a_conversion_saves_it_with_a_revision(client, editor, journey):
    client.force_login(editor)
    response = htmx_post(
        client,
        "/journeys/trial/conversions/",
        {
            "name": "Upgraded",
            "value": "19.5",
            "counting": "every_time",
            "window": "2 weeks",
            "event": "plan_upgraded",
            "value_property": "amount",
        },
    )
    assert response.status_code == 200
    assert "Conversion “Upgraded” added." in response.content.decode()
    conversion = Conversion.objects.get(journey=journey, key="upgraded")
    assert str(conversion.value) == "19.50" and conversion.counting == "every_time"
    assert conversion.window.days == 14 and conversion.value_property == "amount"
    revision = Revision.objects.get(conversion=conversion)
    assert revision.kind == "created" and revision.created_by == editor


def test_duplicate_conversion_name_is_refused_beside_the_name_field(client, editor, journey):
    client.force_login(editor)
    response = htmx_post(
        client,
        "/journeys/trial/conversions/",
        {"name": "started  PAID-plan", "counting": "once_per_enrollment"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    name_field = html[html.index('for="id_name"') : html.index('for="id_value"')]
    assert "field-error" in name_field and "Started paid plan" in name_field
    assert Conversion.objects.filter(journey=journey).count() == 2


def test_bad_window_and_value_errors_are_inline(client, editor, journey):
    client.force_login(editor)
    html = htmx_post(
        client,
        "/journeys/trial/conversions/",
        {"name": "X", "value": "-3", "counting": "once_per_enrollment", "window": "3 months"},
    ).content.decode()
    assert "greater than or equal to 0" in html
    assert "Unknown unit" in html


def test_an_amount_property_without_an_event_is_refused_beside_it(client, editor, journey):
    client.force_login(editor)
    html = htmx_post(
        client,
        "/journeys/trial/conversions/",
        {"name": "X", "counting": "once_per_enrollment", "value_property": "amount"},
    ).content.decode()
    field = html[html.index('for="id_value_property"') :]
    assert "Name the event whose property holds the amount." in field
    assert not Conversion.objects.filter(name="X").exists()


def test_editing_a_conversion_of_a_live_journey_warns_and_keeps_a_dated_revision(
    client, editor, live
):
    client.force_login(editor)
    form = htmx_get(client, PANEL, {"edit": "conversion:paid"}).content.decode()
    assert "reports and automation logic should be reviewed" in form
    assert 'value="Started paid plan"' in form
    response = htmx_post(
        client,
        "/journeys/trial/conversions/paid/",
        {"name": "Started paid plan", "value": "59", "counting": "once_per_enrollment"},
    )
    html = response.content.decode()
    assert "reports and automation logic should be reviewed" in html
    revision = Revision.objects.get(conversion__key="paid", kind="changed")
    assert revision.while_live and revision.created_by == editor
    assert revision.changes["value"] == [49.0, 59.0]
    assert "by editor" in html and "while live" in html


def test_warning_is_not_shown_on_a_journey_that_is_not_live(client, editor, journey):
    client.force_login(editor)
    html = htmx_get(client, PANEL, {"edit": "conversion:paid"}).content.decode()
    assert "automation logic should be reviewed" not in html


def test_archiving_a_conversion_used_by_the_live_version_is_refused_with_where(
    client, editor, live
):
    client.force_login(editor)
    html = htmx_post(client, "/journeys/trial/conversions/paid/archive/").content.decode()
    assert "Cannot archive" in html
    assert "Convert step &#x27;convert&#x27; in Trial v1 (live)" in html
    assert Conversion.objects.get(key="paid").archived_at is None


def test_archiving_an_unused_conversion(client, editor, journey):
    Goal.objects.filter(key="activated").update(conversion=None)
    client.force_login(editor)
    html = htmx_post(client, "/journeys/trial/conversions/demo/archive/").content.decode()
    assert "archived" in html
    assert Conversion.objects.get(key="demo").archived_at is not None


def test_adding_a_goal_with_attribute_criteria_and_linked_conversion(client, editor, journey):
    client.force_login(editor)
    htmx_post(
        client,
        "/journeys/trial/goals/",
        {
            "name": "Is pro",
            "if-TOTAL_FORMS": "1",
            "if-INITIAL_FORMS": "1",
            "if-0-criteria_kind": "attribute",
            "if-0-attribute": "plan",
            "if-0-op": "eq",
            "if-0-compare": "pro",
            "conversion": "paid",
        },
    )
    goal = Goal.objects.get(journey=journey, key="is-pro")
    assert goal.criteria == {"attribute": "plan", "op": "eq", "value": "pro"}
    assert goal.conversion.key == "paid"


def test_goal_without_criteria_is_refused_inline(client, editor, journey):
    client.force_login(editor)
    html = htmx_post(
        client,
        "/journeys/trial/goals/",
        {
            "name": "Nothing",
            "if-TOTAL_FORMS": "1",
            "if-INITIAL_FORMS": "1",
            "if-0-criteria_kind": "event",
        },
    ).content.decode()
    assert "Add at least one condition." in html
    assert not Goal.objects.filter(name="Nothing").exists()


def test_editing_a_goal_keeps_its_key(client, editor, journey):
    client.force_login(editor)
    htmx_post(
        client,
        "/journeys/trial/goals/activated/",
        {
            "name": "Activated account",
            "if-TOTAL_FORMS": "1",
            "if-INITIAL_FORMS": "1",
            "if-0-criteria_kind": "event",
            "if-0-event": "project_created",
            "if-0-within": "7 days",
        },
    )
    goal = Goal.objects.get(key="activated")
    assert goal.name == "Activated account"
    assert goal.criteria == {"event": "project_created", "within": "P7D"}


def test_viewer_cannot_open_forms_or_post(client, viewer, journey):
    client.force_login(viewer)
    assert htmx_get(client, PANEL, {"add": "conversion"}).status_code == 403
    assert htmx_post(client, "/journeys/trial/goals/activated/archive/").status_code == 403
    assert ">Add conversion<" not in htmx_get(client, PANEL).content.decode()


def test_editor_gets_edit_and_archive_buttons_for_each_item(client, editor, journey):
    client.force_login(editor)
    html = htmx_get(client, PANEL).content.decode()
    for label in (
        "Edit conversion Started paid plan",
        "Archive conversion Booked demo",
        "Edit goal Activated",
        "Archive goal Activated",
    ):
        assert f'aria-label="{label}"' in html, label
    assert 'name="edit" value="goal:activated"' in html
