"""The production-like set-up of docs/operations.md, started from the Procfile's own commands:
gunicorn, two Celery workers and one beat on PostgreSQL and Redis, with DEBUG off and the
SECURE_* settings on behind a (simulated) TLS proxy. It waits for /healthz, and stops every
process it started, even when the test fails.

Needs DATABASE_URL pointing at PostgreSQL (the server is used to create a database of the
test's own) and a Redis; PRODUCTION_TEST_REDIS_URL picks the Redis database (default db 11,
which nothing else uses).
"""

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BASE_DIR = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("PRODUCTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
START_TIMEOUT = 90
STOP_TIMEOUT = 30
JOURNEY_TIMEOUT = 90


def procfile_commands() -> dict[str, str]:
    commands = {}
    for line in (BASE_DIR / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            commands[name.strip()] = command.strip()
    return commands


def expand(command: str, env: dict) -> list[str]:
    """The command as a shell would run it: `${NAME:-default}` from env, then split."""

    def value(match):
        return env.get(match["name"]) or match["default"]

    return shlex.split(re.sub(r"\$\{(?P<name>\w+):-(?P<default>[^}]*)\}", value, command))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Started processes, each in its own session so its children are stopped with it."""

    def __init__(self, env, log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen] = {}

    def run(self, name: str, args: list[str], timeout=120) -> str:
        result = subprocess.run(
            args,
            env=self.env,
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, name: str, command: str, *extra_args: str, **extra_env):
        """Start a Procfile command, expanded as the shell would with extra_env added."""
        env = {**self.env, **extra_env}
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.running[name] = subprocess.Popen(
            [*expand(command, env), *extra_args],
            env=env,
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.running[name].log = log

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"----- {name}\n{self.log(name)[-3000:]}" for name in self.running)

    def assert_running(self):
        for name, proc in self.running.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{self.logs()}"

    def stop(self) -> dict[str, int | None]:
        """SIGTERM to everything, then SIGKILL to whatever is still there; the exit codes."""
        for proc in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, proc in self.running.items():
            try:
                codes[name] = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                codes[name] = None
        for proc in self.running.values():
            # The process group too: a killed master must not leave its children behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.log.close()
        return codes


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirects)


def http(base_url, method, path, data=None, key=None, headers=None):
    """(status, body): the body parsed as JSON when it is JSON, else as text."""
    request = urllib.request.Request(
        base_url + path,
        method=method,
        data=None if data is None else json.dumps(data).encode(),
        headers={
            "Content-Type": "application/json",
            # What the TLS-terminating proxy in front of gunicorn adds.
            "X-Forwarded-Proto": "https",
            **({"Authorization": f"Bearer {key}"} if key else {}),
            **(headers or {}),
        },
    )
    try:
        with OPENER.open(request, timeout=10) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


SMOKE_JOURNEY = {
    "key": "production-smoke",
    "name": "Production smoke",
    "triggers": [{"type": "event", "event": "signed_up"}],
    "conversions": [{"key": "activated", "name": "Activated"}],
    "steps": [
        {
            "key": "welcome",
            "type": "send_email",
            "subject": "Welcome {{ contact.attributes.first_name }}",
            "body": "Glad you are here.",
            "next": "pause",
        },
        # A real wait: only the sweep that beat sends wakes the enrollment again.
        {"key": "pause", "type": "wait", "duration": "PT2S", "next": "convert"},
        {"key": "convert", "type": "convert", "conversion": "activated", "next": None},
    ],
}


def run_a_journey_over_http(processes, base_url):
    """An API key from the documented command, then a journey, a contact and an event over
    HTTP; the workers and beat must carry the contact through to the conversion."""
    output = processes.run(
        "create_api_key", [sys.executable, "manage.py", "create_api_key", "production-test"]
    )
    key = output.strip().splitlines()[-1]

    status, body = http(base_url, "POST", "/api/v1/journeys", SMOKE_JOURNEY, key=key)
    assert status == 201, body
    path = "/api/v1/journeys/production-smoke/versions/1/publish"
    status, body = http(base_url, "POST", path, {}, key=key)
    assert status == 200, body
    contact = {"email": "ada@example.com", "attributes": {"first_name": "Ada"}}
    status, body = http(base_url, "PUT", "/api/v1/contacts/ada", contact, key=key)
    assert status in (200, 201), body
    event = {"events": [{"id": "ada-signed-up", "contact": "ada", "name": "signed_up"}]}
    status, body = http(base_url, "POST", "/api/v1/events", event, key=key)
    assert (status, body) == (202, {"accepted": 1, "duplicates": 0})

    def completed():
        status, body = http(base_url, "GET", "/api/v1/contacts/ada", key=key)
        assert status == 200, body
        enrollments = body["enrollments"]
        return body if enrollments and enrollments[0]["state"] == "completed" else None

    body = wait_until(completed, JOURNEY_TIMEOUT, "the enrollment to complete", processes)
    [enrollment] = body["enrollments"]
    assert enrollment["journey"] == "production-smoke"
    assert enrollment["path"] == ["welcome", "pause", "convert"]
    [conversion] = body["conversions"]
    assert conversion["conversion"] == "activated"
    assert conversion["source"] == "convert_step"
    # The console email backend writes the delivered message to the worker's log.
    wait_until(
        lambda: any("Subject: Welcome Ada" in processes.log(w) for w in ("worker1", "worker2")),
        JOURNEY_TIMEOUT,
        "the welcome email to be delivered",
        processes,
    )

    # The same event again is a duplicate, and starts nothing.
    status, body = http(base_url, "POST", "/api/v1/events", event, key=key)
    assert (status, body) == (202, {"accepted": 0, "duplicates": 1})

    def caught_up():
        status, body = http(base_url, "GET", "/healthz", headers={"X-Forwarded-Proto": "http"})
        return status == 200 and body["oldest_due_seconds"] == 0.0

    wait_until(caught_up, JOURNEY_TIMEOUT, "no due work left", processes)
    status, body = http(base_url, "GET", "/api/v1/contacts/ada", key=key)
    assert len(body["enrollments"]) == 1


def wait_until(check, timeout, what, processes):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        processes.assert_running()
        try:
            last = check()
        except OSError as error:  # connection refused while gunicorn boots
            last = error
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})\n{processes.logs()}")


@pytest.fixture
def production_env(tmp_path):
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        pytest.skip("needs DATABASE_URL pointing at PostgreSQL")
    import psycopg
    import redis

    broker = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        broker.ping()
    except redis.ConnectionError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"needs a Redis at {REDIS_URL}")
    broker.flushdb()

    name = f"waypoint_prod_{os.getpid()}"
    server = urlsplit(database_url)._replace(path="/postgres").geturl()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SQLITE_", "PYTEST_"))
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DJANGO_SETTINGS_MODULE="config.settings.base",
        DATABASE_URL=urlsplit(database_url)._replace(path=f"/{name}").geturl(),
        CELERY_BROKER_URL=REDIS_URL,
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="1",
        SESSION_COOKIE_SECURE="1",
        CSRF_COOKIE_SECURE="1",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
        STATIC_ROOT=str(tmp_path / "static"),
        EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend",
        PORT=str(free_port()),
        WEB_CONCURRENCY="2",
        WORKER_CONCURRENCY="1",
    )
    try:
        yield env
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        broker.flushdb()
        broker.close()


@pytest.fixture
def production(production_env, tmp_path):
    """The release steps, then web, two workers and beat; all stopped at the end."""
    env = production_env
    processes = Processes(env, tmp_path)
    python = [sys.executable, "manage.py"]
    processes.run("check --deploy", [*python, "check", "--deploy", "--fail-level", "WARNING"])
    processes.run("migrate", [*python, "migrate", "--noinput"])
    processes.run("collectstatic", [*python, "collectstatic", "--noinput"])

    commands = procfile_commands()
    assert set(commands) == {"web", "worker", "beat"}
    try:
        processes.start("web", commands["web"])
        processes.start("worker1", commands["worker"], WORKER_NAME="worker1")
        processes.start("worker2", commands["worker"], WORKER_NAME="worker2")
        # The schedule file goes to the test's own folder, not to the checkout's var/.
        processes.start("beat", commands["beat"], "--schedule", str(tmp_path / "beat-schedule"))
        yield processes, f"http://127.0.0.1:{env['PORT']}"
    finally:
        processes.stop()


def test_production_setup_runs_a_journey_over_http_and_stops_cleanly(production):
    processes, base_url = production

    def healthy():
        status, body = http(base_url, "GET", "/healthz", headers={"X-Forwarded-Proto": "http"})
        return body if status == 200 else None

    body = wait_until(healthy, START_TIMEOUT, "/healthz to answer 200", processes)
    assert body["database"] == "ok"
    assert body["broker"] == "ok"

    for worker in ("worker1", "worker2"):
        wait_until(
            lambda worker=worker: (
                f"{worker}@" in processes.log(worker) and " ready." in processes.log(worker)
            ),
            START_TIMEOUT,
            f"{worker} to be ready",
            processes,
        )
    wait_until(lambda: "beat: Starting" in processes.log("beat"), START_TIMEOUT, "beat", processes)

    # Behind the proxy: plain HTTP is sent to HTTPS, except the health probe.
    status, _ = http(base_url, "GET", "/accounts/login/", headers={"X-Forwarded-Proto": "http"})
    assert status == 301
    status, page = http(base_url, "GET", "/accounts/login/")
    assert status == 200
    # DEBUG is off: whitenoise serves the collected, hashed stylesheets.
    stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', page)
    assert stylesheets and all(".css" in s and s.count(".") >= 2 for s in stylesheets), page
    for stylesheet in stylesheets:
        assert http(base_url, "GET", stylesheet)[0] == 200, stylesheet

    run_a_journey_over_http(processes, base_url)

    processes.assert_running()
    codes = processes.stop()
    assert codes == {"web": 0, "worker1": 0, "worker2": 0, "beat": 0}, processes.logs()
