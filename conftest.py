"""Fixtures shared by every app's tests: API clients with keys, users for each role, and
Playwright pointed at Debian's Chromium."""

import os
import shutil
import time

import pytest

from journeys.flows import forget_catalogue
from journeys.tests.factories import UserFactory
from webhooks.outbox import forget_subscriptions

CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


class ApiClient:
    """Django's test client speaking JSON with an API key."""

    def __init__(self, client, raw_key):
        self.client = client
        self.headers = {"Authorization": f"Bearer {raw_key}"} if raw_key else {}

    def _call(self, method, path, data=None, **kwargs):
        import json

        if data is not None and not isinstance(data, (str, bytes)):
            data = json.dumps(data)
        return getattr(self.client, method)(
            path, data=data, content_type="application/json", headers=self.headers, **kwargs
        )

    def get(self, path, **kwargs):
        return self.client.get(path, headers=self.headers, **kwargs)

    def post(self, path, data=None, **kwargs):
        return self._call("post", path, data, **kwargs)

    def put(self, path, data=None, **kwargs):
        return self._call("put", path, data, **kwargs)

    def delete(self, path, **kwargs):
        return self.client.delete(path, headers=self.headers, **kwargs)


@pytest.fixture(autouse=True)
def fresh_listening():
    """Ids and a frozen clock repeat after a test's rollback, and with them the signature
    under which each process keeps the names events are matched on."""
    forget_catalogue()
    yield
    forget_catalogue()


@pytest.fixture(autouse=True)
def fresh_webhook_subscriptions():
    """Each process caches the subscribed webhook types; a test's endpoints vanish with its
    rollback, so no test may inherit another's cache."""
    forget_subscriptions()
    yield
    forget_subscriptions()


@pytest.fixture
def api_key(db):
    from journeys.actions.api_keys import create_api_key

    _, raw = create_api_key(name="test", scope="all")
    return raw


@pytest.fixture
def api(client, api_key):
    return ApiClient(client, api_key)


@pytest.fixture
def make_api_client(client, db):
    from journeys.actions.api_keys import create_api_key

    def make(scope="all"):
        _, raw = create_api_key(name=f"test-{scope}", scope=scope)
        return ApiClient(client, raw)

    return make


class _CurrentApps:
    """The live app registry as the groups data migration expects it, minus its permission
    creation step: the flush that ends a transactional test re-creates the permissions
    (post_migrate); only the groups are gone."""

    def get_app_configs(self):
        return []

    def get_model(self, app_label, model_name):
        from django.apps import apps

        return apps.get_model(app_label, model_name)


@pytest.fixture
def role_groups(db):
    """The Viewer, Editor and Publisher groups of the data migration, made again when a
    transactional test's flush removed them, so that role users never silently lack them."""
    import importlib

    from django.contrib.auth.models import Group

    if Group.objects.filter(name__in=["Viewer", "Editor", "Publisher"]).count() < 3:
        migration = importlib.import_module("conversions.migrations.0002_groups")
        migration.create_groups(_CurrentApps(), None)


@pytest.fixture
def viewer(role_groups):
    return UserFactory(username="viewer", groups=["Viewer"])


@pytest.fixture
def editor(role_groups):
    return UserFactory(username="editor", groups=["Editor"])


@pytest.fixture
def publisher(role_groups):
    return UserFactory(username="publisher", groups=["Publisher"])


@pytest.fixture
def superuser(db):
    return UserFactory(username="admin", is_staff=True, is_superuser=True)


# Browser tests: Playwright's own browser download cannot work here, so launch Debian's.
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM_PATH, "args": CHROMIUM_FLAGS}


@pytest.fixture(autouse=True)
def live_server_settles(request):
    """Before a live-server test's database is flushed, let the server finish its requests.

    A page may still be loading a panel when the test ends; the browser closes, but the
    server's thread runs its query on. On PostgreSQL the flush's TRUNCATE then meets that
    query's locks in another order and one of them dies of a deadlock. Requesting the
    database here puts this teardown before the flush.
    """
    if "live_server" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("transactional_db")
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
            )
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)  # a real server's thread, not the test's clock


def pytest_configure(config):
    # The SQLite test database is a file in VAR_DIR, which settings do not create.
    from django.conf import settings

    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)


def pytest_collection_modifyitems(config, items):
    if os.path.exists(CHROMIUM_PATH) or shutil.which("chromium"):
        return
    if os.environ.get("REQUIRE_BROWSER") == "1":
        raise pytest.UsageError(
            f"REQUIRE_BROWSER=1 but no Chromium at {CHROMIUM_PATH}: apt-get install -y chromium"
        )
    skip = pytest.mark.skip(reason=f"no Chromium at {CHROMIUM_PATH} (apt-get install chromium)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)
