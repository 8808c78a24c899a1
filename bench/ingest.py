"""Ingestion benchmark: events in batches through `POST /api/v1/events` served by gunicorn,
with a share of replayed ids, against a raw COPY of the same rows into the same table.

    .venv/bin/python bench/ingest.py --events 1000000

Needs PostgreSQL and Redis (see bench/README.md). It recreates the database it is given.
Checks that nothing was lost or stored twice, then prints events per second through the
API, COPY rows per second measured in the same run and their ratio, as Markdown and JSON.
"""

import argparse
import http.client
import io
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--replays", type=float, default=0.10, help="share of replayed events")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--web-workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_INGEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/waypoint_bench_ingest"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
    )
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def batches(args):
    """Request bodies, and the number of unique and replayed events in them. Every batch
    after the first replays a share of ids already sent in earlier batches."""
    rng = random.Random(7)
    per_batch_replays = round(args.batch * args.replays)
    total_batches = args.events // args.batch
    bodies = []
    sent = 0
    replays = 0
    for index in range(total_batches):
        count_replays = per_batch_replays if index else 0
        events = [
            {
                "id": f"evt-{sent + offset}",
                "contact": f"c{rng.randrange(args.contacts)}",
                "name": rng.choice(["page_viewed", "trial_started", "purchase"]),
                "properties": {"plan": rng.choice(["free", "pro"]), "amount": rng.randrange(100)},
            }
            for offset in range(args.batch - count_replays)
        ]
        sent += len(events)
        for _ in range(count_replays):
            events.append({**events[0], "id": f"evt-{rng.randrange(sent - len(events))}"})
        replays += count_replays
        bodies.append(json.dumps({"events": events}).encode())
    return bodies, sent, replays


def post_all(port: int, api_key: str, bodies: list[bytes], clients: int) -> tuple[int, int, float]:
    work: queue.Queue = queue.Queue()
    for body in bodies:
        work.put(body)
    totals = {"accepted": 0, "duplicates": 0}
    lock = threading.Lock()
    failures = []

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        while True:
            try:
                body = work.get_nowait()
            except queue.Empty:
                return
            connection.request("POST", "/api/v1/events", body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 202:
                failures.append((response.status, payload[:300]))
                continue
            answer = json.loads(payload)
            with lock:
                totals["accepted"] += answer["accepted"]
                totals["duplicates"] += answer["duplicates"]

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return totals["accepted"], totals["duplicates"], seconds


def copy_baseline(url: str) -> tuple[int, float]:
    """COPY the stored rows, as they are, back into the emptied table."""
    import psycopg

    with psycopg.connect(url) as conn:
        columns = "event_id, contact_id, name, properties, timestamp, received_at, source, depth, status, attempts, error"
        buffer = io.BytesIO()
        with conn.cursor().copy(f"COPY (SELECT {columns} FROM journeys_event) TO STDOUT") as copy:
            for data in copy:
                buffer.write(data)
        rows = conn.execute("SELECT count(*) FROM journeys_event").fetchone()[0]
        conn.execute("TRUNCATE journeys_event CASCADE")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor().copy(f"COPY journeys_event ({columns}) FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        conn.commit()
        seconds = time.perf_counter() - started
        assert conn.execute("SELECT count(*) FROM journeys_event").fetchone()[0] == rows
    return rows, seconds


def main():
    args = parse_args()
    import psycopg
    import redis

    url = args.database_url.replace("postgres://", "postgresql://")
    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": args.database_url,
        "CELERY_BROKER_URL": args.redis_url,
        "INGEST_RATE_LIMIT": "1000000000/60s",
        "SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
    }
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "--verbosity", "0"], env=env, cwd=REPO, check=True)
    key_output = subprocess.run(
        [*manage, "create_api_key", "bench", "--scope", "ingest"],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    api_key = key_output.strip().splitlines()[-1]
    broker = redis.Redis.from_url(args.redis_url)
    broker.flushdb()

    bodies, unique, replays = batches(args)
    port = free_port()
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.web_workers),
            "--no-control-socket",
            "--timeout",
            "120",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        accepted, duplicates, seconds = post_all(port, api_key, bodies, args.clients)
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)
        broker.flushdb()

    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM journeys_event").fetchone()[0]
        distinct = conn.execute("SELECT count(DISTINCT event_id) FROM journeys_event").fetchone()[0]
    posted = len(bodies) * args.batch
    lost = unique - stored
    assert stored == distinct == unique, (
        f"stored {stored}, distinct {distinct}, sent {unique} unique"
    )
    assert accepted == unique and duplicates == replays, (accepted, duplicates, unique, replays)
    copied, copy_seconds = copy_baseline(url)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events_posted": posted,
        "unique_events": unique,
        "replayed_events": replays,
        "stored": stored,
        "lost": lost,
        "duplicated": stored - distinct,
        "api_seconds": round(seconds, 1),
        "api_events_per_second": round(posted / seconds),
        "copy_rows": copied,
        "copy_seconds": round(copy_seconds, 1),
        "copy_rows_per_second": round(copied / copy_seconds),
        "ratio": round((posted / seconds) / (copied / copy_seconds), 3),
        "clients": args.clients,
        "web_workers": args.web_workers,
    }
    print("| measure | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
