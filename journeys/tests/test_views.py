"""The journey pages: list, create, editor changes, publishing, contacts; every role."""

import pytest
from django.db import connection
from django.urls import reverse

from conversions.tests.factories import ConversionAwardFactory
from journeys.actions.versions import create_journey, publish_version, save_draft_version
from journeys.models import Journey, JourneyVersion
from journeys.selectors import journey_definition
from journeys.tests.factories import ContactFactory, EnrollmentFactory, EventFactory

pytestmark = pytest.mark.django_db

BASE = {
    "key": "trial-nurture",
    "name": "Trial nurture",
    "triggers": [{"type": "event", "event": "trial_started"}],
    "conversions": [{"key": "paid", "name": "Started paid plan", "value": 49.0}],
    "steps": [
        {
            "key": "welcome",
            "type": "send_email",
            "subject": "Hi",
            "body": "Welcome",
            "next": "wait",
        },
        {"key": "wait", "type": "wait", "duration": "P2D", "next": "convert"},
        {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
    ],
}


@pytest.fixture
def journey(db):
    journey, _, _ = create_journey(definition=BASE)
    return journey


@pytest.fixture
def live_journey(journey, publisher):
    publish_version(version=journey.versions.get(), user=publisher)
    return journey


def htmx(client, method, url, data=None, target="workspace"):
    headers = {"HX-Request": "true", "HX-Target": target}
    return getattr(client, method)(url, data or {}, headers=headers)


def draft_definition(journey):
    draft = journey.versions.get(state=JourneyVersion.State.DRAFT)
    return journey_definition(journey=journey, version=draft)


# --- The list --------------------------------------------------------------------------------


def test_list_shows_status_live_version_and_headline_rate(client, viewer, live_journey):
    conversion = live_journey.conversions.get()
    version = live_journey.versions.get()
    for index in range(4):
        enrollment = EnrollmentFactory(version=version)
        if index == 0:
            ConversionAwardFactory(enrollment=enrollment, conversion=conversion)
    client.force_login(viewer)
    response = client.get(reverse("journeys:list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Trial nurture" in html
    assert "v1" in html
    assert "25%" in html
    assert "Started paid plan" in html
    assert "New journey" not in html  # a viewer cannot create


def test_list_search_and_status_filter(client, editor, journey):
    create_journey(definition={**BASE, "key": "renewal", "name": "Renewal"})
    client.force_login(editor)
    html = client.get(reverse("journeys:list"), {"q": "renew"}).content.decode()
    assert "Renewal" in html and "Trial nurture" not in html
    html = client.get(reverse("journeys:list"), {"status": "live"}).content.decode()
    assert "No journey matches" in html
    response = htmx(client, "get", reverse("journeys:list") + "?q=trial", target="rows")
    assert response.content.decode().lstrip().startswith('<div id="rows"')


def test_list_query_count_does_not_grow_with_journeys(client, viewer, django_assert_num_queries):
    for number in range(5):
        journey, _, _ = create_journey(definition={**BASE, "key": f"j{number}"})
        EnrollmentFactory(version=journey.versions.get())
    client.force_login(viewer)
    client.get(reverse("journeys:list"))  # warm the session and permission caches
    # session, user, user and group permissions, journeys with their numbers, their versions
    with django_assert_num_queries(6):
        response = client.get(reverse("journeys:list"))
    assert response.content.decode().count("row-title") == 5


# --- Create ----------------------------------------------------------------------------------


def test_editor_creates_a_journey_with_an_empty_draft(client, editor):
    client.force_login(editor)
    response = client.post(
        reverse("journeys:create"), {"key": "lead-nurture", "name": "Lead nurture"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/journeys/lead-nurture/"
    journey = Journey.objects.get(key="lead-nurture")
    draft = journey.versions.get()
    assert draft.state == JourneyVersion.State.DRAFT and draft.number == 1
    assert draft.definition["steps"] == []
    page = client.get(response["Location"]).content.decode()
    assert "A journey needs at least one step" in page


def test_create_refuses_a_taken_key_inline(client, editor, journey):
    client.force_login(editor)
    response = client.post(reverse("journeys:create"), {"key": "trial-nurture", "name": "X"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_create_refuses_a_bad_key_inline(client, editor):
    client.force_login(editor)
    response = client.post(reverse("journeys:create"), {"key": "Bad Key", "name": "X"})
    assert response.status_code == 200
    assert "Use lowercase letters" in response.content.decode()


# --- The editor ------------------------------------------------------------------------------


def test_editor_draws_the_flow_with_labelled_branches(client, viewer):
    definition = {
        **BASE,
        "goals": [
            {"key": "activated", "name": "Activated", "criteria": {"event": "project_created"}}
        ],
        "steps": [
            {
                "key": "check",
                "type": "evaluate_goal",
                "goal": "activated",
                "achieved": "ab",
                "not_achieved": None,
            },
            {
                "key": "ab",
                "type": "split",
                "paths": [{"weight": 30, "next": "pro"}, {"weight": 70, "next": None}],
            },
            {
                "key": "pro",
                "type": "condition",
                "if": {"attribute": "plan", "op": "eq", "value": "pro"},
                "then": "convert",
                "else": "check-again",
            },
            {"key": "check-again", "type": "wait", "duration": "P1D", "next": "convert"},
            {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
        ],
    }
    create_journey(definition=definition)
    client.force_login(viewer)
    html = client.get("/journeys/trial-nurture/").content.decode()
    for text in (
        "achieved",
        "not achieved",
        "30%",
        "70%",
        "then",
        "else",
        "Award: Started paid plan",
        "go to convert",
    ):
        assert text in html, text
    assert "Add a step" not in html  # a viewer gets no edit controls
    assert "Publish" not in html


def test_editor_query_count_does_not_grow_with_versions_or_steps(
    client, publisher, journey, django_assert_num_queries
):
    for number in range(3):
        steps = [*BASE["steps"], {"key": f"extra-{number}", "type": "exit"}]
        steps[-2] = {**steps[-2], "next": f"extra-{number}"}
        save_draft_version(journey=journey, definition={**BASE, "steps": steps})
        publish_version(version=journey.versions.get(state="draft"), user=publisher)
    client.force_login(publisher)
    client.get("/journeys/trial-nurture/")
    # session, user, 2 permission queries, journey, versions, goals, conversions, and the
    # conversions and goals that triggers and exit rules can pick from; for an email step,
    # the attribute names of recent contacts (the journey's, then any: 2 at most); for a
    # Publisher of a live journey, the count of contacts running (the lifecycle
    # confirmations); on the live version shown, the canvas numbers (active, entered,
    # converted: 3)
    with django_assert_num_queries(16):
        response = client.get("/journeys/trial-nurture/?step=welcome")
    assert response.status_code == 200
    assert response.content.decode().count('href="/journeys/trial-nurture/versions/') >= 3


def test_adding_a_step_after_a_step_saves_the_draft_and_swaps_the_workspace(
    client, editor, journey
):
    client.force_login(editor)
    response = htmx(
        client,
        "post",
        "/journeys/trial-nurture/steps/add/",
        {"after": "welcome", "port": "next", "type": "send_sms"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="workspace"')
    steps = draft_definition(journey)["steps"]
    assert [s["key"] for s in steps] == ["welcome", "send-sms-1", "wait", "convert"]
    assert steps[0]["next"] == "send-sms-1" and steps[1]["next"] == "wait"
    assert "Message" in html  # the new step's form is open


def test_adding_a_step_on_a_branch(client, editor):
    create_journey(
        definition={
            **BASE,
            "steps": [
                {
                    "key": "pro",
                    "type": "condition",
                    "if": {"attribute": "plan", "op": "eq", "value": "pro"},
                    "then": None,
                    "else": None,
                },
            ],
        }
    )
    client.force_login(editor)
    client.post(
        "/journeys/trial-nurture/steps/add/", {"after": "pro", "port": "else", "type": "exit"}
    )
    steps = draft_definition(Journey.objects.get())["steps"]
    assert steps[0]["else"] == "exit-1" and steps[0]["then"] is None


def test_editing_a_step_keeps_errors_inline(client, editor, journey):
    client.force_login(editor)
    response = htmx(
        client,
        "post",
        "/journeys/trial-nurture/steps/wait/",
        {"duration": "soon", "go_next": "convert"},
    )
    assert response.status_code == 200
    assert "is not a duration" in response.content.decode()
    response = htmx(
        client,
        "post",
        "/journeys/trial-nurture/steps/wait/",
        {"duration": "3 days", "go_next": "convert", "step_name": "Wait a bit"},
    )
    assert response.status_code == 200
    wait = draft_definition(journey)["steps"][1]
    assert wait == {
        "key": "wait",
        "type": "wait",
        "name": "Wait a bit",
        "duration": "P3D",
        "next": "convert",
    }


def test_convert_step_new_conversion_refuses_a_duplicate_name(client, editor, journey):
    client.force_login(editor)
    response = htmx(
        client,
        "post",
        "/journeys/trial-nurture/steps/convert/",
        {
            "conversion": "__new__",
            "new_conversion": "started-paid plan!",
            "go_next": "",
        },
    )
    html = response.content.decode()
    assert "Started paid plan" in html and "same name" in html
    assert journey.conversions.count() == 1


def test_convert_step_new_conversion_is_created_and_used(client, editor, journey):
    client.force_login(editor)
    htmx(
        client,
        "post",
        "/journeys/trial-nurture/steps/convert/",
        {
            "conversion": "__new__",
            "new_conversion": "Booked demo",
            "go_next": "",
        },
    )
    assert draft_definition(journey)["steps"][2]["conversion"] == "booked-demo"
    assert journey.conversions.filter(key="booked-demo", name="Booked demo").exists()


def test_deleting_a_step_reconnects_its_successor(client, editor, journey):
    client.force_login(editor)
    htmx(client, "post", "/journeys/trial-nurture/steps/wait/delete/")
    steps = draft_definition(journey)["steps"]
    assert [s["key"] for s in steps] == ["welcome", "convert"]
    assert steps[0]["next"] == "convert"


def test_deleting_the_first_step_makes_its_successor_first(client, editor, journey):
    client.force_login(editor)
    client.post("/journeys/trial-nurture/steps/welcome/delete/")
    assert [s["key"] for s in draft_definition(journey)["steps"]] == ["wait", "convert"]


def test_triggers_exit_rules_and_settings_are_edited(client, editor, journey):
    other, _, _ = create_journey(definition={**BASE, "key": "lead", "name": "Lead"})
    client.force_login(editor)
    response = htmx(
        client,
        "post",
        "/journeys/trial-nurture/triggers/",
        {
            "trigger-type": "event",
            "trigger-event": "signed_up",
            "trigger-where-TOTAL_FORMS": "1",
            "trigger-where-INITIAL_FORMS": "1",
            "trigger-where-0-property": "plan",
            "trigger-where-0-op": "eq",
            "trigger-where-0-compare": "pro",
        },
        target="left-panel",
    )
    assert response.status_code == 200
    assert 'hx-swap-oob="true"' in response.content.decode()
    htmx(
        client,
        "post",
        "/journeys/trial-nurture/triggers/",
        {
            "trigger-type": "conversion",
            "trigger-conversion": "lead:paid",
        },
        target="left-panel",
    )
    htmx(
        client,
        "post",
        "/journeys/trial-nurture/exit-rules/",
        {
            "exit-type": "conversion",
            "exit-conversion": "trial-nurture:paid",
        },
        target="left-panel",
    )
    htmx(client, "post", "/journeys/trial-nurture/triggers/0/delete/", target="left-panel")
    htmx(
        client,
        "post",
        "/journeys/trial-nurture/settings/",
        {
            "name": "Trial nurture 2",
            "reentry": "after_exit",
            "holdout_percent": "10",
        },
        target="left-panel",
    )
    definition = draft_definition(Journey.objects.get(key="trial-nurture"))
    assert definition["triggers"] == [
        {
            "type": "event",
            "event": "signed_up",
            "where": [{"property": "plan", "op": "eq", "value": "pro"}],
        },
        {"type": "conversion", "journey": "lead", "conversion": "paid"},
    ]
    assert definition["exit_when"] == [{"type": "conversion", "conversion": "paid"}]
    assert definition["settings"] == {"reentry": "after_exit", "holdout_percent": 10}
    assert definition["name"] == "Trial nurture 2"
    assert other.key == "lead"


def test_rule_form_errors_are_inline(client, editor, journey):
    client.force_login(editor)
    response = htmx(
        client,
        "post",
        "/journeys/trial-nurture/triggers/",
        {"trigger-type": "event"},
        target="left-panel",
    )
    assert response.status_code == 200
    assert "Name the event that starts it." in response.content.decode()


def test_editing_a_live_journey_creates_a_draft_and_keeps_the_live_version(
    client, editor, live_journey
):
    client.force_login(editor)
    html = client.get("/journeys/trial-nurture/").content.decode()
    assert "your first change creates a draft" in html
    client.post("/journeys/trial-nurture/steps/wait/", {"duration": "5 days", "go_next": "convert"})
    versions = {v.number: v for v in live_journey.versions.all()}
    assert versions[1].state == "live" and versions[1].definition["steps"][1]["duration"] == "P2D"
    assert versions[2].state == "draft" and versions[2].definition["steps"][1]["duration"] == "P5D"


def test_publisher_publishes_the_draft_and_history_lists_it(client, publisher, journey):
    client.force_login(publisher)
    response = htmx(client, "post", "/journeys/trial-nurture/publish/", {"publish": "1"})
    assert response.status_code == 200
    assert "Version 1 is live" in response.content.decode()
    assert journey.versions.get().state == "live"
    client.post("/journeys/trial-nurture/steps/wait/", {"duration": "5 days", "go_next": "convert"})
    response = htmx(
        client, "post", "/journeys/trial-nurture/publish/", {"split": "1", "traffic": "20"}
    )
    assert "for 20% of new enrollments" in response.content.decode()
    html = client.get("/journeys/trial-nurture/").content.decode()
    assert "Changed 1 step (wait)" in html
    assert "by publisher" in html
    page = client.get("/journeys/trial-nurture/versions/1/")
    assert page.status_code == 200 and "read-only" in page.content.decode()


def test_publishing_updates_the_title_status_and_the_history_in_place(client, publisher, journey):
    # Only the workspace used to be swapped: the title said "Draft" until a reload.
    client.force_login(publisher)
    html = htmx(client, "post", "/journeys/trial-nurture/publish/", {"publish": "1"}).content
    html = html.decode()
    assert '<span id="journey-status" class="badge live" hx-swap-oob="true">Live</span>' in html
    assert '<aside id="left-panel" class="side left-panel" aria-label="Journey panel" ' \
        'hx-swap-oob="true">' in html  # fmt: skip
    assert "Version history" in html


def test_publishing_an_invalid_draft_lists_the_errors(client, publisher, journey):
    client.force_login(publisher)
    client.post(
        "/journeys/trial-nurture/steps/add/",
        {"after": "wait", "port": "next", "type": "send_email"},
    )
    response = htmx(client, "post", "/journeys/trial-nurture/publish/", {"publish": "1"})
    html = response.content.decode()
    assert "Not published" in html and "Must not be empty" in html
    assert journey.versions.get().state == "draft"


def test_split_test_needs_traffic(client, publisher, live_journey):
    client.force_login(publisher)
    client.post("/journeys/trial-nurture/steps/wait/", {"duration": "5 days", "go_next": "convert"})
    html = htmx(
        client, "post", "/journeys/trial-nurture/publish/", {"split": "1", "traffic": ""}
    ).content.decode()
    assert "Give the share of traffic" in html


# --- Roles -----------------------------------------------------------------------------------

PAGES = [
    "/journeys/",
    "/journeys/new/",
    "/journeys/trial-nurture/",
    "/journeys/trial-nurture/steps/wait/",
    "/journeys/trial-nurture/goals-conversions/",
    "/contacts/",
    "/contacts/c-1/",
]
WRITES = [
    ("/journeys/new/", {"key": "x", "name": "X"}),
    ("/journeys/trial-nurture/steps/add/", {"after": "", "port": "start", "type": "exit"}),
    ("/journeys/trial-nurture/steps/wait/", {"duration": "1 day"}),
    ("/journeys/trial-nurture/steps/wait/delete/", {}),
    ("/journeys/trial-nurture/settings/", {"name": "X", "reentry": "once", "holdout_percent": "0"}),
    ("/journeys/trial-nurture/triggers/", {"trigger-type": "event", "trigger-event": "x"}),
    ("/journeys/trial-nurture/triggers/0/", {"trigger-0-type": "event", "trigger-0-event": "x"}),
    ("/journeys/trial-nurture/triggers/0/delete/", {}),
    ("/journeys/trial-nurture/exit-rules/", {"exit-type": "event", "exit-event": "x"}),
    ("/journeys/trial-nurture/exit-rules/0/delete/", {}),
    ("/journeys/trial-nurture/publish/", {"publish": "1"}),
    ("/journeys/trial-nurture/conversions/", {"name": "X", "counting": "once_per_enrollment"}),
    ("/journeys/trial-nurture/conversions/paid/", {"name": "X", "counting": "once_per_enrollment"}),
    ("/journeys/trial-nurture/conversions/paid/archive/", {}),
    ("/journeys/trial-nurture/goals/", {"name": "X", "criteria_kind": "event", "event": "x"}),
]


@pytest.fixture
def contact(db):
    return ContactFactory(external_id="c-1")


@pytest.mark.parametrize("url", PAGES + [url for url, _ in WRITES])
def test_anonymous_is_sent_to_login(client, journey, contact, url):
    response = client.get(url) if url in PAGES else client.post(url, {})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("url", [u for u in PAGES if u != "/journeys/new/"])
def test_viewer_reads_every_page(client, viewer, journey, contact, url):
    client.force_login(viewer)
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    for control in (
        "Add a step",
        ">Update step<",
        ">Add conversion<",
        ">Add goal<",
        ">Publish<",
        ">Remove<",
        ">Edit<",
        ">Archive<",
        ">Update settings<",
        'method="post" action="/journeys',
    ):
        assert control not in html, control


def test_viewer_cannot_open_the_create_page(client, viewer):
    client.force_login(viewer)
    assert client.get("/journeys/new/").status_code == 403


@pytest.mark.parametrize(("url", "data"), WRITES)
def test_viewer_gets_403_on_every_post(client, viewer, journey, url, data):
    client.force_login(viewer)
    assert client.post(url, data).status_code == 403
    assert journey.versions.count() == 1


@pytest.mark.parametrize(("url", "data"), [w for w in WRITES if "publish" not in w[0]])
def test_editor_can_post_every_edit(client, editor, journey, url, data):
    save_draft_version(
        journey=journey,
        definition={
            **BASE,
            "exit_when": [{"type": "event", "event": "y"}],
        },
    )
    client.force_login(editor)
    assert client.post(url, data).status_code in (200, 302)


def test_editor_cannot_publish(client, editor, journey):
    client.force_login(editor)
    html = client.get("/journeys/trial-nurture/").content.decode()
    assert "Publish" not in html
    assert client.post("/journeys/trial-nurture/publish/", {"publish": "1"}).status_code == 403


def test_publisher_sees_the_publish_button(client, publisher, journey):
    client.force_login(publisher)
    assert ">Publish</button>" in client.get("/journeys/trial-nurture/").content.decode()


# --- Contacts --------------------------------------------------------------------------------


def test_contacts_search_by_email_or_external_id(client, viewer):
    ContactFactory(external_id="alice-1", email="alice@example.com")
    ContactFactory(external_id="bob-2", email="bob@example.com")
    client.force_login(viewer)
    html = client.get("/contacts/", {"q": "alice@"}).content.decode()
    assert "alice-1" in html and "bob-2" not in html
    html = client.get("/contacts/", {"q": "bob-"}).content.decode()
    assert "bob-2" in html and "alice-1" not in html


def test_contact_page_shows_the_timeline(
    client, viewer, live_journey, django_assert_max_num_queries
):
    contact = ContactFactory(external_id="alice", email="alice@example.com")
    EventFactory(contact=contact, name="trial_started", properties={"plan": "pro"})
    enrollment = EnrollmentFactory(
        contact=contact, version=live_journey.versions.get(), path=["welcome", "wait"]
    )
    ConversionAwardFactory(enrollment=enrollment, conversion=live_journey.conversions.get())
    client.force_login(viewer)
    client.get("/contacts/alice/")
    with django_assert_max_num_queries(11):
        html = client.get("/contacts/alice/").content.decode()
    for text in (
        "Event trial_started",
        "plan: pro",
        "Entered Trial nurture v1",
        "welcome",
        "Converted: Started paid plan",
    ):
        assert text in html, text


def test_unknown_contact_is_404(client, viewer):
    client.force_login(viewer)
    assert client.get("/contacts/nobody/").status_code == 404


def test_flow_tab_swaps_only_the_left_panel(client, viewer, journey):
    client.force_login(viewer)
    response = htmx(client, "get", "/journeys/trial-nurture/", target="left-panel")
    html = response.content.decode()
    assert html.lstrip().startswith('<aside id="left-panel"')
    assert "Triggers" in html and "Flow diagram" not in html


def test_evaluate_goal_step_can_create_its_goal_inline(client, editor, journey):
    client.force_login(editor)
    htmx(
        client,
        "post",
        "/journeys/trial-nurture/steps/add/",
        {"after": "wait", "port": "next", "type": "evaluate_goal"},
    )
    response = htmx(
        client,
        "post",
        "/journeys/trial-nurture/steps/evaluate-goal-1/",
        {
            "goal": "__new__",
            "new_goal": "Activated",
            "new_goal_event": "project_created",
            "wait": "7 days",
            "go_achieved": "convert",
            "go_not_achieved": "",
        },
    )
    assert response.status_code == 200
    step = draft_definition(journey)["steps"][2]
    assert step == {
        "key": "evaluate-goal-1",
        "type": "evaluate_goal",
        "goal": "activated",
        "wait": "P7D",
        "achieved": "convert",
        "not_achieved": None,
    }
    assert journey.goals.get().criteria == {"event": "project_created"}


def test_step_form_only_offers_the_journeys_own_conversions(client, editor, journey):
    create_journey(
        definition={**BASE, "key": "other", "conversions": [{"key": "paid", "name": "Elsewhere"}]}
    )
    client.force_login(editor)
    page = client.get("/journeys/trial-nurture/?step=convert").content.decode()
    html = page[page.index('id="step-panel"') :]
    assert '<option value="paid" selected>Started paid plan</option>' in html
    assert "Elsewhere" not in html
    assert "New conversion…" in html


@pytest.mark.parametrize("role", ["editor", "publisher"])
@pytest.mark.parametrize("url", PAGES)
def test_editors_and_publishers_read_every_page_with_controls(
    request, client, journey, contact, role, url
):
    client.force_login(request.getfixturevalue(role))
    response = client.get(url)
    assert response.status_code == 200
    if url == "/journeys/trial-nurture/":
        html = response.content.decode()
        assert "Add a step" in html
        assert (">Publish</button>" in html) == (role == "publisher")


@pytest.mark.parametrize(("url", "data"), WRITES)
def test_a_user_without_a_role_gets_403_everywhere(client, journey, url, data):
    from journeys.tests.factories import UserFactory

    client.force_login(UserFactory(username="nobody"))
    assert client.post(url, data).status_code == 403
    assert client.get("/journeys/").status_code == 403


def test_publisher_rolls_back_to_a_retired_version(client, publisher, live_journey, editor):
    client.force_login(publisher)
    client.post("/journeys/trial-nurture/steps/wait/", {"duration": "5 days", "go_next": "convert"})
    client.post("/journeys/trial-nurture/publish/", {"publish": "1"})
    page = client.get("/journeys/trial-nurture/versions/1/").content.decode()
    assert "Publish version 1 again" in page
    response = htmx(client, "post", "/journeys/trial-nurture/versions/1/publish/")
    assert "Version 1 is live." in response.content.decode()
    states = dict(live_journey.versions.values_list("number", "state"))
    assert states == {1: "live", 2: "retired"}
    client.force_login(editor)
    assert "again" not in client.get("/journeys/trial-nurture/versions/2/").content.decode()
    assert client.post("/journeys/trial-nurture/versions/2/publish/").status_code == 403


def test_contacts_list_query_count_does_not_grow(client, viewer, django_assert_num_queries):
    for _ in range(5):
        EnrollmentFactory()
    client.force_login(viewer)
    client.get("/contacts/")
    # session, user, 2 permission queries, the journeys to filter by, the page, the total
    # (on PostgreSQL the planner's estimate first, then the capped count)
    with django_assert_num_queries(7 + (connection.vendor == "postgresql")):
        html = client.get("/contacts/").content.decode()
    assert html.count("row-title") == 5


def test_the_contract_example_is_drawn_and_every_step_opens(client, editor):
    from journeys.tests.contract_example import contract_example

    definition = contract_example()
    create_journey(definition=definition)
    client.force_login(editor)
    html = client.get("/journeys/trial-nurture/").content.decode()
    assert "Journey &#x27;lead-nurture&#x27; does not exist yet" in html
    assert "Event trial_started where plan = pro" in html
    for step in definition["steps"]:
        response = htmx(client, "get", f"/journeys/trial-nurture/steps/{step['key']}/")
        assert response.status_code == 200, step["key"]
        assert f"key <code>{step['key']}</code>" in response.content.decode()
    # Saving a step unchanged from its form keeps the definition as it was.
    before = draft_definition(Journey.objects.get())
    form = htmx(client, "get", "/journeys/trial-nurture/steps/is-pro/")
    assert 'value="pro"' in form.content.decode()
    htmx(
        client,
        "post",
        "/journeys/trial-nurture/steps/is-pro/",
        {
            "match": "all",
            "if-TOTAL_FORMS": "1",
            "if-INITIAL_FORMS": "1",
            "if-0-criteria_kind": "attribute",
            "if-0-attribute": "plan",
            "if-0-op": "eq",
            "if-0-compare": "pro",
            "go_then": "convert",
            "go_else": "tag",
        },
    )
    assert draft_definition(Journey.objects.get()) == before
