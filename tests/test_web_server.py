"""The web process as the Procfile starts it (gunicorn with gunicorn.conf.py): it keeps
answering while slow clients hold connections open, listens on localhost unless told
otherwise, answers an over-long /api/ URL in the API's JSON, and masks addresses in its
access log."""

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.processes import Processes, base_env, free_port, procfile_commands, wait_until

pytestmark = pytest.mark.slow

# Longer than a healthy /healthz ever takes, far shorter than gunicorn's 30 s worker timeout
# that held the sync workers.
PROMPT_SECONDS = 5


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("web")
    env = base_env(
        DJANGO_SETTINGS_MODULE="config.settings.base",
        SECRET_KEY="web-test-secret-key-" + "x" * 40,
        VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        STATICFILES_STORAGE="django.contrib.staticfiles.storage.StaticFilesStorage",
        PORT=str(free_port()),
        # Fewer workers than slow clients below: sync workers would all be held.
        WEB_CONCURRENCY="2",
    )
    # The folders of the embedded broker, which /healthz checks, as a worker would leave them.
    for folder in ("out", "processed", "control"):
        (tmp_path / "var" / "broker" / folder).mkdir(parents=True)
    processes = Processes(env, tmp_path)
    processes.manage("migrate", "--noinput", "-v", "0")
    processes.start("web", procfile_commands()["web"])
    base_url = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_until(lambda: get(base_url, "/healthz")[0], 60, "gunicorn to answer", processes)
        yield processes, base_url, int(env["PORT"])
    finally:
        processes.stop()


def get(base_url: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base_url + path, timeout=PROMPT_SECONDS) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_healthz_answers_promptly_while_slow_clients_hold_connections(web):
    processes, base_url, port = web
    with contextlib.ExitStack() as stack:
        # Three that send nothing, three that send half a request line and then nothing:
        # more than the two workers.
        for index in range(6):
            slow = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            if index % 2:
                slow.sendall(b"GET /healthz HTT")
        for _ in range(5):
            started = time.monotonic()
            status, body = get(base_url, "/healthz")
            assert status == 200, body
            assert time.monotonic() - started < PROMPT_SECONDS


def test_listens_on_localhost_by_default(web):
    processes, _, port = web
    assert f"Listening at: http://127.0.0.1:{port}" in processes.log("web")


def test_an_over_long_api_url_gets_the_api_error_shape(web):
    _, base_url, _ = web
    status, body = get(base_url, "/api/v1/contacts?q=" + "a" * 5000)

    assert status == 414
    assert json.loads(body) == {
        "errors": [
            {
                "loc": ["url"],
                "message": "The URL is longer than 4096 characters; "
                "send fewer or shorter query parameters.",
            }
        ]
    }


def test_a_long_url_elsewhere_still_reaches_the_page(web):
    _, base_url, _ = web
    status, _ = get(base_url, "/healthz?q=" + "a" * 5000)
    assert status == 200


@pytest.mark.parametrize("address", ["ann%40example.com", "ann%2540example.com"])
def test_the_access_log_masks_encoded_addresses(web, address):
    processes, base_url, _ = web
    marker = f"marker={len(address)}"
    get(base_url, f"/healthz?q={address}&{marker}")

    line = wait_until(
        lambda: next((line for line in processes.log("web").splitlines() if marker in line), None),
        10,
        "the access log line",
        processes,
    )
    assert "q=a***@example.com" in line and "ann" not in line, line
