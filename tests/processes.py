"""Starting, talking to and stopping the real processes of a set-up (bin/run, the Procfile),
for the tests that run them: every process started here is stopped, with everything it
started, even when the test fails."""

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import redis
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 30


def reachable(url: str) -> bool:
    """Whether a broker (Redis, RabbitMQ) answers at the URL."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
    except Exception:
        return False
    return True


def skip_unless_reachable(url: str):
    if not reachable(url):
        # CI has every server: there a missing one is a failure, not a skip.
        assert not os.environ.get("CI"), f"no server answers at {url}"
        pytest.skip(f"needs a server at {url}")


def procfile_commands(name: str = "Procfile") -> dict[str, str]:
    commands = {}
    for line in (BASE_DIR / name).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            process, _, command = line.partition(":")
            commands[process.strip()] = command.strip()
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


def base_env(**settings) -> dict:
    """The environment of a process outside the test run: none of pytest's or the test
    settings' variables, this virtualenv first on PATH, then `settings`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SQLITE_", "PYTEST_"))
        and key not in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings)
    return env


def redis_broker(url: str):
    """A Redis client on `url`, emptied; the test is skipped when no Redis answers."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"no Redis at {url}")
    client.flushdb()
    return client


def wait_for(condition, timeout, what):
    """Poll `condition` (a real process works meanwhile) until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def celery_processes(tmp_path: Path, *, broker_url: str, workers: list[str], **settings):
    """Beat and one solo worker per name, on this test's PostgreSQL database and a Redis
    broker, logging to tmp_path/celery.log; yields the workers' Popen objects (a test may
    kill one). Every process is stopped, and the broker emptied, whatever the test does."""
    broker = redis_broker(broker_url)
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
        f"/{database['NAME']}",
        "CELERY_BROKER_URL": broker_url,
        "SWEEP_INTERVAL_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
        **settings,
    }

    def start(args):
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", *args],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    processes = []
    with open(tmp_path / "celery.log", "wb") as log:
        try:
            processes.append(
                start(["beat", "-s", str(tmp_path / "beat-schedule"),
                       "--pidfile", str(tmp_path / "beat.pid")])
            )  # fmt: skip
            started = [
                start(["worker", "--pool=solo", "--without-gossip", "--without-mingle",
                       "--without-heartbeat", "-n", f"{name}-{os.getpid()}@%h"])
                for name in workers
            ]  # fmt: skip
            processes += started
            yield started
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            broker.flushdb()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # The command name may hold spaces and parentheses: split after its end.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    children, found, todo = _children(), set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Processes:
    """Processes started for one test, each in a session of its own."""

    def __init__(self, env: dict, log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen] = {}
        self.logs_open = []

    def run(self, name: str, args: list[str], timeout=180) -> str:
        """Run a one-off command (a release step) to its end; its output."""
        result = subprocess.run(
            args, env=self.env, cwd=BASE_DIR, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def manage(self, *args: str) -> str:
        return self.run(f"manage.py {args[0]}", [sys.executable, "manage.py", *args])

    def start(self, name: str, command: str, *extra_args: str, **extra_env):
        """Start a command line as the Procfile writes it, `${NAME:-default}` taken from the
        environment with extra_env added."""
        env = {**self.env, **extra_env}
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.logs_open.append(log)
        self.running[name] = subprocess.Popen(
            [*expand(command, env), *extra_args],
            env=env,
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"----- {name}\n{self.log(name)[-4000:]}" for name in self.running)

    def assert_running(self):
        for name, proc in self.running.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{self.logs()}"

    def stop(self, sig=signal.SIGTERM) -> tuple[dict[str, int | None], set[int]]:
        """Send `sig` to every process and wait; then SIGKILL whatever is still there, the
        processes they started included. Returns the exit codes (None: had to be killed)
        and the pids of the processes they started that outlived them."""
        started = set()
        for proc in self.running.values():
            if proc.poll() is None:
                started |= descendants(proc.pid)
                proc.send_signal(sig)
        codes = {}
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, proc in self.running.items():
            try:
                codes[name] = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                codes[name] = None
        while time.monotonic() < deadline and any(alive(pid) for pid in started):
            time.sleep(0.2)
        left_behind = {pid for pid in started if alive(pid)}
        for pid in left_behind:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for log in self.logs_open:
            log.close()
        return codes, left_behind


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """HTTP to one of the set-ups: JSON in and out, cookies kept, redirects not followed."""

    def __init__(self, base_url: str, headers: dict | None = None):
        self.base_url = base_url
        self.headers = headers or {}
        self.cookies = urllib.request.HTTPCookieProcessor()
        self.opener = urllib.request.build_opener(NoRedirects, self.cookies)

    def __call__(self, method, path, data=None, key=None, headers=None, form=None):
        """(status, body): the body parsed as JSON when it is JSON, else as text."""
        if form is not None:
            payload = urllib.parse.urlencode(form).encode()
            content_type = "application/x-www-form-urlencoded"
        else:
            payload = None if data is None else json.dumps(data).encode()
            content_type = "application/json"
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            data=payload,
            headers={
                "Content-Type": content_type,
                **self.headers,
                **({"Authorization": f"Bearer {key}"} if key else {}),
                **(headers or {}),
            },
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.cookies.cookiejar if c.name == name), None)


def wait_until(check, timeout, what, processes):
    """Poll `check` until it returns something true; fail with every log otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        processes.assert_running()
        try:
            last = check()
        except OSError as error:  # connection refused while the web server boots
            last = error
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})\n{processes.logs()}")


def smoke_journey(key: str, event: str) -> dict:
    return {
        "key": key,
        "name": f"Smoke {key}",
        "triggers": [{"type": "event", "event": event}],
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


def run_a_journey_over_http(processes, http, *, workers, name="smoke", timeout=90):
    """An API key from the documented command, then a journey, a contact and an event over
    HTTP; the workers and beat must carry the contact through to the conversion, and
    deliver the email (the console backend writes it to a worker's log). `name` keys the
    journey, the contact and the event, so that several runs can share a database."""
    key = processes.manage("create_api_key", f"{name}-test").strip().splitlines()[-1]
    journey, contact_id, event_name = f"smoke-{name}", f"ada-{name}", f"signed_up_{name}"

    status, body = http("POST", "/api/v1/journeys", smoke_journey(journey, event_name), key=key)
    assert status == 201, body
    status, body = http("POST", f"/api/v1/journeys/{journey}/versions/1/publish", {}, key=key)
    assert status == 200, body
    contact = {"email": "ada@example.com", "attributes": {"first_name": "Ada"}}
    status, body = http("PUT", f"/api/v1/contacts/{contact_id}", contact, key=key)
    assert status in (200, 201), body
    event = {
        "events": [{"id": f"{contact_id}-signed-up", "contact": contact_id, "name": event_name}]
    }
    status, body = http("POST", "/api/v1/events", event, key=key)
    assert (status, body) == (202, {"accepted": 1, "duplicates": 0})

    def completed():
        status, body = http("GET", f"/api/v1/contacts/{contact_id}", key=key)
        assert status == 200, body
        enrollments = body["enrollments"]
        return body if enrollments and enrollments[0]["state"] == "completed" else None

    body = wait_until(completed, timeout, "the enrollment to complete", processes)
    [enrollment] = body["enrollments"]
    assert enrollment["journey"] == journey
    assert enrollment["path"] == ["welcome", "pause", "convert"]
    [conversion] = body["conversions"]
    assert conversion["conversion"] == "activated"
    assert conversion["source"] == "convert_step"
    wait_until(
        lambda: any("Subject: Welcome Ada" in processes.log(w) for w in workers),
        timeout,
        "the welcome email to be delivered",
        processes,
    )

    # The same event again is a duplicate, and starts nothing.
    status, body = http("POST", "/api/v1/events", event, key=key)
    assert (status, body) == (202, {"accepted": 0, "duplicates": 1})

    def caught_up():
        status, body = http("GET", "/healthz")
        return status == 200 and body["oldest_due_seconds"] == 0.0

    wait_until(caught_up, timeout, "no due work left", processes)
    status, body = http("GET", f"/api/v1/contacts/{contact_id}", key=key)
    assert len(body["enrollments"]) == 1
