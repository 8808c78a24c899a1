"""The production-like set-up of docs/operations.md, started from the Procfile's own commands:
gunicorn, two Celery workers and one beat on PostgreSQL and Redis, with DEBUG off and the
SECURE_* settings on behind a (simulated) TLS proxy. It waits for /healthz, runs a journey
through the HTTP API, and stops every process it started, even when the test fails.

It runs twice: with Redis as the broker and with RabbitMQ, the two brokers the operations
guide offers. Needs DATABASE_URL pointing at PostgreSQL (the server is used to create a
database of the test's own), a Redis and a RabbitMQ; PRODUCTION_TEST_REDIS_URL picks the Redis
database (default db 11, which nothing else uses) for the cache and the Redis broker,
PRODUCTION_TEST_AMQP_URL the RabbitMQ.
"""

import os
import re
import secrets
from urllib.parse import urlsplit

import pytest

from tests.processes import (
    Browser,
    Processes,
    base_env,
    free_port,
    procfile_commands,
    run_a_journey_over_http,
    skip_unless_reachable,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REDIS_URL = os.environ.get("PRODUCTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
AMQP_URL = os.environ.get("PRODUCTION_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
START_TIMEOUT = 90


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A database of its own and the release steps, once for both brokers."""
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        pytest.skip("needs DATABASE_URL pointing at PostgreSQL")
    skip_unless_reachable(REDIS_URL)
    import psycopg

    name = f"waypoint_prod_{os.getpid()}"
    server = urlsplit(database_url)._replace(path="/postgres").geturl()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    env = base_env(
        DJANGO_SETTINGS_MODULE="config.settings.base",
        # Nothing of the checkout's var/ is shared with a developer's bin/run.
        VAR_DIR=str(tmp_path_factory.mktemp("production") / "var"),
        DATABASE_URL=urlsplit(database_url)._replace(path=f"/{name}").geturl(),
        CELERY_BROKER_URL=REDIS_URL,
        CACHE_URL=REDIS_URL,
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="1",
        SESSION_COOKIE_SECURE="1",
        CSRF_COOKIE_SECURE="1",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
        EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend",
        WEB_CONCURRENCY="2",
        WORKER_CONCURRENCY="1",
        # Sooner than the default 5 s, so that the journey's wait ends sooner.
        SWEEP_INTERVAL_SECONDS="1",
    )
    try:
        release = Processes(env, tmp_path_factory.mktemp("release"))
        release.manage("check", "--deploy", "--fail-level", "WARNING")
        release.manage("migrate", "--noinput")
        release.manage("collectstatic", "--noinput")
        yield env
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["redis", "rabbitmq"])
def production(request, released, tmp_path):
    """Web, two workers and beat on one of the brokers; all stopped at the end."""
    import redis

    broker_url = {"redis": REDIS_URL, "rabbitmq": AMQP_URL}[request.param]
    skip_unless_reachable(broker_url)
    env = {**released, "CELERY_BROKER_URL": broker_url, "PORT": str(free_port())}
    cache = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    cache.flushdb()
    processes = Processes(env, tmp_path)
    commands = procfile_commands()
    assert set(commands) == {"web", "worker", "beat"}
    try:
        processes.start("web", commands["web"])
        processes.start("worker1", commands["worker"], WORKER_NAME="worker1")
        processes.start("worker2", commands["worker"], WORKER_NAME="worker2")
        processes.start("beat", commands["beat"])
        yield processes, f"http://127.0.0.1:{env['PORT']}", request.param
    finally:
        processes.stop()
        cache.flushdb()
        cache.close()


def test_production_setup_runs_a_journey_over_http_and_stops_cleanly(production):
    processes, base_url, broker = production
    # What the TLS-terminating proxy in front of gunicorn adds.
    http = Browser(base_url, headers={"X-Forwarded-Proto": "https"})

    def healthy():
        # A load balancer's probe over plain HTTP: exempt from the HTTPS redirect.
        status, body = http("GET", "/healthz", headers={"X-Forwarded-Proto": "http"})
        return body if status == 200 else None

    body = wait_until(healthy, START_TIMEOUT, "/healthz to answer 200", processes)
    assert body["database"] == "ok"
    assert body["broker"] == "ok"
    for worker in ("worker1", "worker2"):
        wait_until(
            # Not "<name>@<host> ready.": where the host name has a dot, that is masked
            # like an email address. Each worker logs to a file of its own.
            lambda worker=worker: " ready." in processes.log(worker),
            START_TIMEOUT,
            f"{worker} to be ready",
            processes,
        )
    wait_until(lambda: "beat: Starting" in processes.log("beat"), START_TIMEOUT, "beat", processes)

    # Behind the proxy: plain HTTP is sent to HTTPS.
    status, _ = http("GET", "/accounts/login/", headers={"X-Forwarded-Proto": "http"})
    assert status == 301
    status, page = http("GET", "/accounts/login/")
    assert status == 200
    # DEBUG is off: whitenoise serves the collected stylesheets under their hashed names.
    stylesheets = re.findall(r'href="(/static/[^"]+\.[0-9a-f]{12}\.css)"', page)
    assert stylesheets, page
    for stylesheet in stylesheets:
        assert http("GET", stylesheet)[0] == 200, stylesheet

    # Both brokers share one database: each runs a journey of its own.
    run_a_journey_over_http(processes, http, workers=("worker1", "worker2"), name=broker)

    processes.assert_running()
    codes, left_behind = processes.stop()
    assert codes == {"web": 0, "worker1": 0, "worker2": 0, "beat": 0}, processes.logs()
    assert not left_behind, processes.logs()
