"""Login throttling, CSRF on HTMX posts, the content security policy and the production
settings of the pages."""

import os
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.db import InterfaceError, OperationalError
from django.test import Client, override_settings
from django.utils import timezone

from journeys.actions.versions import create_journey
from journeys.models import Journey

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
BASE_DIR = Path(settings.BASE_DIR)


def _fail_login(client, username="editor"):
    return client.post(LOGIN, {"username": username, "password": "wrong-password"})


# --- Login throttling (django-axes) -----------------------------------------------------------


def test_login_locks_after_repeated_failures_and_says_so(client, editor):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = _fail_login(client)
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    locked = _fail_login(client)
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Too many failed login attempts" in page and 'role="alert"' in page
    assert 'name="username"' in page  # still the login page, not a bare error
    assert int(locked["Retry-After"]) == int(settings.AXES_COOLOFF_TIME.total_seconds())

    # Even the right password is refused while locked out.
    right = client.post(LOGIN, {"username": "editor", "password": "pass-word-123"})
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session


def test_lockout_is_per_username_and_ends_after_the_cool_off(client, editor, viewer):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _fail_login(client)
    other = client.post(LOGIN, {"username": "viewer", "password": "pass-word-123"})
    assert other.status_code == 302

    later = timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(minutes=1)
    with time_machine.travel(later, tick=False):
        fresh = Client()
        response = fresh.post(LOGIN, {"username": "editor", "password": "pass-word-123"})
        assert response.status_code == 302


def test_a_successful_login_resets_the_failure_count(client, editor):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _fail_login(client)
    assert (
        client.post(LOGIN, {"username": "editor", "password": "pass-word-123"}).status_code == 302
    )
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _fail_login(client).status_code == 200


def test_force_login_is_not_throttled(client, editor):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _fail_login(client)
    client.force_login(editor)
    assert client.get("/journeys/").status_code == 200


# --- CSRF -------------------------------------------------------------------------------------


@pytest.fixture
def journey(editor):
    journey, _, _ = create_journey(
        definition={
            "key": "csrf",
            "name": "CSRF",
            "triggers": [{"type": "event", "event": "signed_up"}],
            "steps": [{"key": "hello", "type": "send_email", "subject": "Hi", "body": "Hello"}],
        }
    )
    return journey


def test_htmx_post_without_the_token_is_refused(editor, journey):
    client = Client(enforce_csrf_checks=True)
    client.force_login(editor)
    before = journey.versions.get().definition
    response = client.post(
        f"/journeys/{journey.key}/settings/",
        {"name": "CSRF", "reentry": "concurrent", "holdout_percent": "0"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 403
    assert journey.versions.get().definition == before


def test_htmx_post_with_the_token_from_the_page_is_accepted(editor, journey):
    client = Client(enforce_csrf_checks=True)
    client.force_login(editor)
    page = client.get(f"/journeys/{journey.key}/")
    token = page.context["csrf_token"]
    assert f'"X-CSRFToken": "{token}"' in page.content.decode()
    response = client.post(
        f"/journeys/{journey.key}/settings/",
        {"name": "CSRF", "reentry": "concurrent", "holdout_percent": "0"},
        headers={"HX-Request": "true", "X-CSRFToken": str(token)},
    )
    assert response.status_code == 200
    assert Journey.objects.get(pk=journey.pk).versions.get().definition["settings"]["reentry"] == (
        "concurrent"
    )


# --- Content security policy and headers ------------------------------------------------------


def test_pages_carry_a_strict_content_security_policy(client, viewer):
    client.force_login(viewer)
    response = client.get("/journeys/")
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert "unsafe-inline" not in policy["style-src"]
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    # htmx is told not to inject its inline indicator styles, which the policy would block.
    assert '"includeIndicatorStyles": false' in response.content.decode()
    assert "<script>" not in response.content.decode()


def test_no_template_has_an_inline_script_or_event_handler():
    offenders = []
    for path in BASE_DIR.glob("**/templates/**/*.html"):
        if ".venv" in path.parts:
            continue
        text = path.read_text()
        for needle in ("<script>", "<script type=", " onclick=", " onload=", " onchange=", "hx-on"):
            if needle in text:
                offenders.append(f"{path.relative_to(BASE_DIR)}: {needle}")
    assert offenders == []


def test_production_settings_pass_check_deploy():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.base",
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        ALLOWED_HOSTS="waypoint.example",
        SECURE_SSL_REDIRECT="1",
        SESSION_COOKIE_SECURE="1",
        CSRF_COOKIE_SECURE="1",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    env["SECRET_KEY"] = ""
    env.pop("SECRET_KEY")
    refused = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "SECRET_KEY" in refused.stderr + refused.stdout


@override_settings(
    SECURE_SSL_REDIRECT=True,
    SESSION_COOKIE_SECURE=True,
    CSRF_COOKIE_SECURE=True,
    SECURE_HSTS_SECONDS=31536000,
)
def test_behind_the_proxy_http_redirects_and_https_gets_hsts_and_secure_cookies(client, editor):
    plain = client.get(LOGIN, headers={"X-Forwarded-Proto": "http"})
    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    secure = client.post(
        LOGIN,
        {"username": "editor", "password": "pass-word-123"},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert secure.status_code == 302
    assert secure["Strict-Transport-Security"].startswith("max-age=31536000")
    assert secure.cookies[settings.SESSION_COOKIE_NAME]["secure"]


@pytest.mark.parametrize(
    ("failure", "status", "retry_after"),
    [
        (OperationalError("connection refused"), 503, "5"),
        (InterfaceError("connection already closed"), 503, "5"),
        (RuntimeError("a bug"), 500, None),
    ],
)
def test_pages_answer_503_while_the_database_is_down(
    viewer, monkeypatch, failure, status, retry_after
):
    client = Client(raise_request_exception=False)
    client.force_login(viewer)

    def fail(self):
        raise failure

    monkeypatch.setattr(SessionStore, "load", fail)
    response = client.get("/journeys/")
    assert response.status_code == status
    assert response.get("Retry-After") == retry_after
    assert ("briefly unavailable" in response.content.decode()) == (status == 503)
