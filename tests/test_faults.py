"""Faults during ingestion, on servers of the test's own: a private PostgreSQL cluster and a
private Redis (never the shared ones), a gunicorn web process and a Celery worker.

- The database restarts while batches stream in: every request gets either 202 or a 503 JSON
  error with Retry-After (never a 500); retrying the refused batches loses nothing and
  stores nothing twice.
- The broker restarts while batches stream in: ingestion does not notice (202 throughout,
  since the database is the queue of record), and once the broker is back every accepted
  event is processed.
"""

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BASE_DIR = Path(settings.BASE_DIR)
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
BATCH = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI and this machine run tests as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    def __init__(self, root: Path):
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                 "-E", "UTF8", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.start()
        self.psql("CREATE DATABASE waypoint")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/waypoint"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", *args]),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", options, "-l", str(self.root / "postgres.log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def psql(self, sql: str, database: str = "postgres") -> str:
        import psycopg

        with psycopg.connect(
            f"postgres://postgres@127.0.0.1:{self.port}/{database}", autocommit=True
        ) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else ""


class PrivateRedis:
    def __init__(self, root: Path):
        self.port = free_port()
        self.root = root
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "yes", "--dir", str(self.root),
             "--pidfile", str(self.root / "redis.pid")],
            check=True,
            capture_output=True,
        )  # fmt: skip
        self._wait(up=True)

    def stop(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True
        )
        self._wait(up=False)

    def _wait(self, *, up: bool) -> None:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if up:
                    return
            except OSError:
                if not up:
                    return
            time.sleep(0.05)
        raise AssertionError(f"redis on {self.port} did not come {'up' if up else 'down'}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    for tool in (PG_BIN / "initdb", shutil.which("redis-server")):
        if not tool or not Path(tool).exists():
            if os.environ.get("CI"):
                raise AssertionError(f"{tool} is needed for the fault tests")
            pytest.skip(f"needs {tool}")
    root = tmp_path_factory.mktemp("faults")
    # Outside pytest's own (root-only) temporary folder: the server runs as postgres.
    pg_root = Path(tempfile.mkdtemp(prefix="waypoint-faults-pg-"))
    postgres = PrivatePostgres(pg_root)
    redis = PrivateRedis(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.base",
        DATABASE_URL=postgres.url,
        CELERY_BROKER_URL=redis.url,
        SECRET_KEY="fault-test-secret-key-" + "x" * 40,
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1",
        VAR_DIR=str(root / "var"),
        SWEEP_INTERVAL_SECONDS="0.5",
        CONN_MAX_AGE="60",
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    )
    python = [sys.executable, "manage.py"]
    subprocess.run([*python, "migrate", "--noinput"], cwd=BASE_DIR, env=env, check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    created = subprocess.run(
        [*python, "create_api_key", "faults", "--scope", "ingest"],
        cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    key = created.stdout.strip().splitlines()[-1]
    port = free_port()
    # The child keeps its own copy of the log's descriptor.
    with (root / "web.log").open("wb") as web_log:
        web = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi", "--bind",
             f"127.0.0.1:{port}", "--workers", "1", "--threads", "4", "--no-control-socket",
             "--timeout", "60"],
            cwd=BASE_DIR, env=env, stdout=web_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{base_url}/healthz", timeout=1)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield {"postgres": postgres, "redis": redis, "env": env, "key": key, "url": base_url,
               "root": root}  # fmt: skip
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(timeout=30)
        redis.stop()
        with contextlib.suppress(subprocess.CalledProcessError):
            postgres.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


class Sender:
    """Posts batches of new events one after another; a refused batch (503) is retried
    after a short pause, as a client honouring Retry-After would."""

    def __init__(self, base_url: str, key: str, prefix: str):
        self.url = f"{base_url}/api/v1/events"
        self.key = key
        self.prefix = prefix
        self.ids = itertools.count()
        self.responses: list[tuple[int, dict, dict]] = []
        self.sent: list[str] = []
        self.accepted: list[str] = []
        self.stop = threading.Event()

    def post(self, events: list[dict]) -> int:
        request = urllib.request.Request(
            self.url,
            data=json.dumps({"events": events}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body, headers = response.status, json.load(response), dict(response.headers)
        except urllib.error.HTTPError as error:
            status, body, headers = (
                error.code,
                json.loads(error.read() or b"{}"),
                dict(error.headers),
            )
        except OSError as error:  # no answer at all: recorded, then retried like a 503
            status, body, headers = 0, {"error": repr(error)}, {}
        self.responses.append((status, body, headers))
        return status

    def run(self) -> None:
        while not self.stop.is_set():
            events = [
                {"id": f"{self.prefix}-{next(self.ids)}", "contact": f"c-{n % 7}", "name": "ping"}
                for n in range(BATCH)
            ]
            self.sent += [event["id"] for event in events]
            for _ in range(600):
                status = self.post(events)
                if status == 202:
                    self.accepted += [event["id"] for event in events]
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("a batch was never accepted")


def _stream_while(servers, prefix: str, outage) -> Sender:
    sender = Sender(servers["url"], servers["key"], prefix)
    thread = threading.Thread(target=sender.run, daemon=True)
    thread.start()
    time.sleep(1.0)
    outage()
    time.sleep(1.5)
    sender.stop.set()
    thread.join(timeout=120)
    assert not thread.is_alive()
    return sender


def _stored(servers, prefix: str) -> list[str]:
    rows = servers["postgres"].psql(
        f"SELECT event_id FROM journeys_event WHERE event_id LIKE '{prefix}-%'", "waypoint"
    )
    return [row[0] for row in rows]


def test_database_restart_during_ingestion_gives_503s_and_loses_nothing(servers):
    postgres = servers["postgres"]

    def outage():
        postgres.stop()
        time.sleep(2.0)
        postgres.start()

    sender = _stream_while(servers, "db", outage)
    statuses = [status for status, _, _ in sender.responses]
    assert set(statuses) <= {202, 503}, statuses
    assert 503 in statuses, "the outage was not seen by any request"
    for status, body, headers in sender.responses:
        if status == 503:
            assert body["errors"][0]["message"].startswith("The database is unavailable")
            assert int(headers["Retry-After"]) > 0
    stored = _stored(servers, "db")
    # A batch cut off after its commit is retried and answered as duplicates: accepted may
    # name an id twice, the database never stores one twice.
    assert set(stored) == set(sender.sent) == set(sender.accepted)
    assert len(stored) == len(set(stored)) == len(sender.sent)


def test_broker_restart_during_ingestion_loses_no_event(servers):
    redis = servers["redis"]
    with (servers["root"] / "worker.log").open("wb") as worker_log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "-B",
             "--concurrency", "1", "--loglevel", "INFO", "--schedule",
             str(servers["root"] / "beat-schedule"), "--hostname", "faults@%h"],
            cwd=BASE_DIR, env=servers["env"], stdout=worker_log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def outage():
            redis.stop()
            time.sleep(2.0)
            redis.start()

        sender = _stream_while(servers, "broker", outage)
        assert {status for status, _, _ in sender.responses} == {202}
        assert sorted(_stored(servers, "broker")) == sorted(sender.sent)

        deadline = time.monotonic() + 90
        pending = None
        while time.monotonic() < deadline:
            [(pending,)] = servers["postgres"].psql(
                "SELECT count(*) FROM journeys_event "
                "WHERE event_id LIKE 'broker-%' AND status <> 'processed'",
                "waypoint",
            )
            if pending == 0:
                break
            time.sleep(0.5)
        assert pending == 0, (servers["root"] / "worker.log").read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
