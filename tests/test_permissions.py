"""The permission matrix: every URL pattern of the project (walked from the resolver, so a
new page is checked without anyone remembering to) against every role.

- anonymous: every page redirects to the login page, for GET and POST; every API route
  answers 401 JSON; the admin asks to log in.
- Viewer: reads every page; every POST is refused (403 or 405) and changes nothing.
- Editor: may change journeys, but publishing is refused (403).
- Publisher and superuser: no page refuses them.
- nobody, whatever they send, gets a 500.
"""

import re

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from conversions.models import Conversion, Goal, Revision
from journeys.actions.versions import create_journey, publish_version, save_draft_version
from journeys.models import Contact, ContactImport, Journey, JourneyVersion
from journeys.tests.factories import ContactFactory, UserFactory
from reporting import selectors
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db

# Pages anyone may open, and what they answer. Email providers' webhooks (webhooks/) check
# their own signatures and credentials (journeys/tests/test_delivery_feedback.py); a click
# redirect (/c/) needs a signed token (journeys/tests/test_click_tracking.py); /metrics needs
# its token (tests/test_metrics.py); the unsubscribe page's signed token is its credential
# (journeys/tests/test_consent_pages.py).
PUBLIC = {"login", "logout", "healthz", "metrics", "click", "journeys:unsubscribe", None}
# Pages whose GET already needs the right to edit.
EDIT_TO_VIEW = {
    "journeys:draft-review",
    "journeys:duplicate",
    "journeys:create",
    "journeys:contact-import",
    "journeys:import",
    "journeys:import-report",
    "journeys:step-preview",
    "journeys:step-preview-html",
    "journeys:trigger-edit",
    "journeys:exit-edit",
}
# Pages whose POST changes something; every other page only reads. A new page route must be
# put in one of the two (test_every_page_route_is_in_the_matrix says so).
WRITE_ROUTES = {
    "journeys:create",
    "journeys:step-add",
    "journeys:step",
    "journeys:step-delete",
    "journeys:step-test-send",
    "journeys:contact-subscriptions",
    "journeys:settings",
    "journeys:trigger-add",
    "journeys:trigger-delete",
    "journeys:exit-add",
    "journeys:exit-delete",
    "journeys:trigger-edit",
    "journeys:exit-edit",
    "journeys:publish",
    "journeys:version-publish",
    "journeys:lifecycle",
    "journeys:draft-discard",
    "journeys:duplicate",
    "journeys:contact-import",
    "journeys:import-start",
    "conversions:conversion-add",
    "conversions:conversion",
    "conversions:conversion-archive",
    "conversions:goal-add",
    "conversions:goal",
    "conversions:goal-archive",
    "webhooks:test",
}
READ_ROUTES = {
    "journeys:list",
    "journeys:draft-review",
    "journeys:editor",
    "journeys:version",
    "journeys:contacts",
    "journeys:contact",
    "journeys:import",
    "journeys:import-report",
    "journeys:step-preview",
    "journeys:step-preview-html",
    "journey-audit",
    "conversions:panel",
    "reporting:report",
    "reporting:report_csv",
    "reporting:report_panel",
    "reporting:path_contacts",
    "webhooks:list",
}
# Query strings some read-only pages need to answer 200.
QUERIES = {"reporting:path_contacts": "?path=hello,check"}
ROLES = ["anonymous", "viewer", "editor", "publisher", "superuser"]

DEFINITION = {
    "key": "matrix",
    "name": "Matrix",
    "triggers": [{"type": "event", "event": "signed_up"}],
    "exit_when": [{"type": "event", "event": "unsubscribed"}],
    "goals": [{"key": "activated", "name": "Activated", "criteria": {"event": "used"}}],
    "conversions": [{"key": "paid", "name": "Paid", "value": 10}],
    "steps": [
        {"key": "hello", "type": "send_email", "subject": "Hi", "body": "Hello", "next": "check"},
        {"key": "check", "type": "evaluate_goal", "goal": "activated", "achieved": "convert",
         "not_achieved": None},
        {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
    ],
}  # fmt: skip


def _walk(patterns, prefix="", namespace=None):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = ":".join(n for n in (namespace, pattern.namespace) if n) or None
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            name = pattern.name and (f"{namespace}:{pattern.name}" if namespace else pattern.name)
            yield prefix + str(pattern.pattern), name


ALL_ROUTES = sorted(set(_walk(get_resolver().url_patterns)), key=lambda r: (r[0], r[1] or ""))
PAGE_ROUTES = [
    (route, name)
    for route, name in ALL_ROUTES
    if not route.startswith(("admin/", "api/", "webhooks/")) and name not in PUBLIC
]
API_ROUTES = [(route, name) for route, name in ALL_ROUTES if route.startswith("api/")]

VALUES = {
    "key": "matrix",
    "number": "1",
    "step_key": "hello",
    "index": "0",
    "conversion_key": "paid",
    "goal_key": "activated",
    "external_id": "ann",
    "panel": selectors.SLOW_PANELS[0],
    "endpoint_id": "1",
    "pk": "1",
    "change": "pause",
}
# Pages only a Publisher may POST to, besides those named "publish".
PUBLISHER_ROUTES = {"journeys:lifecycle"}


def _fill(route: str, name: str) -> str:
    def value(match):
        param = match.group("name")
        if param == "item_key":
            return "activated" if "goal" in name else "paid"
        return VALUES[param]

    path = "/" + re.sub(r"<(?:(?P<conv>\w+):)?(?P<name>\w+)>", value, route)
    return path + QUERIES.get(name, "")


@pytest.fixture
def world():
    journey, version, _ = create_journey(definition=DEFINITION)
    publish_version(version=version)
    save_draft_version(journey=journey, definition={**DEFINITION, "name": "Matrix v2"})
    ContactFactory(external_id="ann")
    WebhookEndpoint.objects.create(
        pk=1, url="https://93.184.215.14/hook", events=["goal.achieved"], created_at=timezone.now()
    )
    ContactImport.objects.create(pk=1, file_name="people.csv", path="/nonexistent/people.csv")


@pytest.fixture
def users(role_groups):
    return {
        "viewer": UserFactory(username="m-viewer", groups=["Viewer"]),
        "editor": UserFactory(username="m-editor", groups=["Editor"]),
        "publisher": UserFactory(username="m-publisher", groups=["Publisher"]),
        "superuser": UserFactory(username="m-admin", is_staff=True, is_superuser=True),
    }


def _client(role, users) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(users[role])
    return client


def _snapshot():
    """Everything a page can change."""
    return (
        list(Journey.objects.values().order_by("pk")),
        list(JourneyVersion.objects.values().order_by("pk")),
        list(Conversion.objects.values().order_by("pk")),
        list(Goal.objects.values().order_by("pk")),
        Revision.objects.count(),
        list(Contact.objects.values().order_by("pk")),
    )


def test_every_page_route_is_in_the_matrix():
    assert len(PAGE_ROUTES) >= 25, PAGE_ROUTES
    for route, name in PAGE_ROUTES:
        assert name, f"unnamed page route {route}"
        assert (name in WRITE_ROUTES) != (name in READ_ROUTES), f"classify {name}"
        _fill(route, name)  # every parameter has a value


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("route", "name"), PAGE_ROUTES, ids=[n for _, n in PAGE_ROUTES])
def test_page_permissions(world, users, role, route, name):
    client = _client(role, users)
    url = _fill(route, name)
    get = client.get(url)
    before = _snapshot()
    post = client.post(url, {}, headers={"HX-Request": "true"})
    assert get.status_code < 500 and post.status_code < 500, (get.status_code, post.status_code)

    if role == "anonymous":
        for response in (get, post):
            assert response.status_code == 302, response.status_code
            assert response["Location"].startswith("/accounts/login/?next=")
        assert _snapshot() == before
        return

    if role == "viewer":
        if name in EDIT_TO_VIEW:
            assert get.status_code == 403
        else:
            assert get.status_code in (200, 405), get.status_code
        if name in WRITE_ROUTES:
            assert post.status_code == 403, post.status_code
        else:  # a read-only page may answer a stray POST like a GET, changing nothing
            assert post.status_code in (200, 403, 405), post.status_code
        assert _snapshot() == before, "a Viewer's POST changed something"
        return

    assert get.status_code in (200, 405), get.status_code
    if role == "editor" and ("publish" in name or name in PUBLISHER_ROUTES):
        assert post.status_code == 403
        assert _snapshot() == before
    else:
        assert post.status_code != 403, post.content[:300]


@pytest.mark.parametrize(("route", "name"), API_ROUTES, ids=[n for _, n in API_ROUTES])
def test_api_routes_refuse_anonymous_callers(world, route, name):
    url = _fill(route, name)
    client = Client()
    for method in ("get", "post", "put", "delete"):
        response = getattr(client, method)(url)
        assert response.status_code < 500
        if name.split(":")[-1] in ("openapi-json", "openapi-view"):
            # The schema and its docs are public, and read-only whatever the method.
            assert method != "get" or response.status_code == 200
            continue
        assert response.status_code in (401, 404, 405), (method, url, response.status_code)
        assert response["Content-Type"].startswith("application/json")
        if response.status_code == 401:
            assert response.json()["errors"][0]["loc"] == ["header", "Authorization"]


@pytest.mark.parametrize("role", ROLES)
def test_admin_is_for_staff_only(world, users, role):
    client = _client(role, users)
    response = client.get("/admin/")
    if role == "superuser":
        assert response.status_code == 200
        for model in admin.site._registry:
            meta = model._meta
            changelist = client.get(f"/admin/{meta.app_label}/{meta.model_name}/")
            assert changelist.status_code == 200, (meta.label, changelist.status_code)
    else:
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("role", ROLES)
def test_public_routes(role, users):
    client = _client(role, users)
    assert client.get("/accounts/login/").status_code == 200
    assert client.get("/healthz").status_code in (200, 503)
    root = client.get("/")
    assert root.status_code == 302 and root["Location"] == "/journeys/"
    logout = client.post("/accounts/logout/")
    assert logout.status_code == 302 and logout["Location"] == "/accounts/login/"


@pytest.mark.parametrize(
    ("route", "name"),
    [(r, n) for r, n in PAGE_ROUTES if n in WRITE_ROUTES],
    ids=[n for _, n in PAGE_ROUTES if n in WRITE_ROUTES],
)
def test_every_write_route_needs_the_csrf_token(world, users, route, name):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["superuser"])
    before = _snapshot()
    response = client.post(_fill(route, name), {}, headers={"HX-Request": "true"})
    assert response.status_code == 403
    assert _snapshot() == before
