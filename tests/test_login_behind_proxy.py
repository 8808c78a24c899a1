"""Login lockout (django-axes) behind the TLS proxy of docs/operations.md: failures count
against the client's address from X-Forwarded-For when TRUSTED_PROXY_COUNT says a proxy
writes it, and the header is ignored when it does not."""

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
PROXY = "10.0.0.2"


def through_proxy(forwarded_for: str) -> Client:
    """A browser whose requests reach gunicorn from the proxy, which appended the address
    it saw (the last entry) to whatever X-Forwarded-For the browser sent."""
    return Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forwarded_for)


def fail_login(client: Client, username: str = "editor"):
    return client.post(LOGIN, {"username": username, "password": "wrong-password"})


def fail_every_try(client_for_try) -> int:
    """As many failed logins as the limit, each from the client `client_for_try(n)` gives;
    the status of the last."""
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        status = fail_login(client_for_try(attempt)).status_code
    return status


def log_in(client: Client, username: str = "editor") -> int:
    return client.post(LOGIN, {"username": username, "password": "pass-word-123"}).status_code


def test_behind_one_proxy_failures_lock_out_that_client_only(settings, editor):
    settings.TRUSTED_PROXY_COUNT = 1
    attacker = through_proxy("203.0.113.5")
    assert fail_every_try(lambda _: attacker) == 429
    assert log_in(attacker) == 429

    # The real editor, elsewhere on the internet, still logs in through the same proxy.
    assert log_in(through_proxy("198.51.100.7")) == 302


def test_behind_one_proxy_a_forged_header_does_not_dodge_the_lockout(settings, editor):
    settings.TRUSTED_PROXY_COUNT = 1
    # The client writes a new address each time; the proxy appends the real one.
    assert fail_every_try(lambda n: through_proxy(f"192.0.2.{n}, 203.0.113.5")) == 429
    assert log_in(through_proxy("192.0.2.99, 203.0.113.5")) == 429


def test_behind_two_proxies_the_client_is_the_address_the_outer_one_saw(settings, editor):
    settings.TRUSTED_PROXY_COUNT = 2
    # Forged, then the client as the load balancer saw it, then the TLS terminator.
    assert fail_every_try(lambda n: through_proxy(f"192.0.2.{n}, 203.0.113.5, 10.0.0.1")) == 429
    assert log_in(through_proxy("198.51.100.7, 10.0.0.1")) == 302


def direct(forwarded_for: str) -> Client:
    """A browser connecting to gunicorn itself, writing X-Forwarded-For as it likes."""
    return Client(REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR=forwarded_for)


def test_without_a_proxy_the_header_is_not_trusted(editor):
    assert settings.TRUSTED_PROXY_COUNT == 0
    assert fail_every_try(lambda n: direct(f"192.0.2.{n}")) == 429
    assert log_in(direct("198.51.100.7")) == 429
    assert log_in(Client(REMOTE_ADDR="198.51.100.7")) == 302


def test_a_request_that_skipped_the_proxies_counts_against_its_own_address(settings, editor):
    settings.TRUSTED_PROXY_COUNT = 2
    # Too few entries: not every proxy wrote one, so none of them is trusted.
    assert fail_every_try(lambda n: direct(f"192.0.2.{n}")) == 429
