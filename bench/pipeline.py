"""Pipeline benchmark: events posted through gunicorn while two Celery workers match them
and advance the enrollments they start; the queues' depth sampled over time.

    .venv/bin/python bench/pipeline.py --events 200000

Needs PostgreSQL, Redis and the test extra (`bin/setup --extra test`: it starts beat and the
workers as the tests do, tests/processes.py). It recreates the database it is given.
The events are bench/ingest.py's (page_viewed, trial_started and purchase of 100,000
contacts, batches of 500, 10% replays); the journey is bench/engine.py's five steps,
triggered by `trial_started` (re-entry `once`: a contact's first one enrolls it) and
converting on `purchase` events too. Prints the API's rate, the rate at which events were
matched while the API took them, the depth of the pending-event queue and of the due
enrollments every `--sample` seconds, how long the backlog took to drain after the last
request, and each worker's peak memory; Markdown and JSON.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from engine import STEPS, peak_rss_mb, recreate_database, setup_django  # noqa: E402
from ingest import REPO, batches, free_port, post_all  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--replays", type=float, default=0.10, help="share of replayed events")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (solo pool)")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="the engine's batches (ENGINE_BATCH_SIZE)"
    )
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_PIPELINE_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/waypoint_bench_pipeline",
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
    )
    return parser.parse_args()


def prepare(args) -> str:
    """The journey (live) and an ingest key; returns the key."""
    from django.core.management import call_command

    from journeys.actions.api_keys import create_api_key
    from journeys.actions.versions import create_journey, publish_version
    from journeys.tests.flows import definition

    call_command("migrate", verbosity=0)
    _, version, _ = create_journey(
        definition=definition(
            STEPS,
            key="bench",
            triggers=[{"type": "event", "event": "trial_started"}],
            conversions=[
                {"key": "paid", "name": "Paid", "value": 1.0},
                {
                    "key": "bought",
                    "name": "Bought",
                    "event": {"event": "purchase", "value_property": "amount"},
                },
            ],
        )
    )
    publish_version(version=version)
    _, raw_key = create_api_key(name="bench", scope="ingest")
    return raw_key


def depths(conn) -> tuple[int, int]:
    """Pending events and due enrollments (both read through their partial indexes)."""
    pending = conn.execute(
        "SELECT count(*) FROM journeys_event WHERE status = 'pending'"
    ).fetchone()[0]
    due = conn.execute(
        "SELECT count(*) FROM journeys_enrollment WHERE state = 'active' AND due_at <= now()"
    ).fetchone()[0]
    return pending, due


def processed_count(conn) -> int:
    """Events the workers matched (processed or failed). An event nothing listens to is
    stored processed by the API, with `processed_at` equal to `received_at`: not counted."""
    return conn.execute(
        """SELECT count(*) FROM journeys_event WHERE status <> 'pending'
           AND (processed_at IS NULL OR processed_at > received_at)"""
    ).fetchone()[0]


def unheard_count(conn) -> int:
    """Events the API stored processed because nothing listens to them."""
    return conn.execute(
        """SELECT count(*) FROM journeys_event
           WHERE status = 'processed' AND processed_at = received_at"""
    ).fetchone()[0]


def measure(args, *, port: int, api_key: str, bodies: list[bytes], url: str) -> dict:
    """Post every body while sampling the queues, then wait until the backlog has drained."""
    import psycopg

    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    time.sleep(3)  # the workers' start-up is not the pipeline's time
    samples = []
    sampling = threading.Event()
    sampling.set()
    started = time.perf_counter()

    def sample():
        with psycopg.connect(url, autocommit=True) as conn:
            while sampling.is_set():
                pending, due = depths(conn)
                samples.append(
                    {
                        "seconds": round(time.perf_counter() - started, 1),
                        "pending_events": pending,
                        "due_enrollments": due,
                        "processed_events": processed_count(conn),
                    }
                )
                time.sleep(args.sample)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        accepted, duplicates, api_seconds = post_all(port, api_key, bodies, args.clients)
        with psycopg.connect(url, autocommit=True) as conn:
            matched_while_posting = processed_count(conn)
            unheard = unheard_count(conn)
            pending_at_end, due_at_end = depths(conn)
            # Then until everything is done: events matched, enrollments finished, emails
            # sent (or skipped: ingested contacts have no address).
            drain_started = time.perf_counter()
            while conn.execute(
                """SELECT EXISTS (SELECT 1 FROM journeys_event WHERE status = 'pending')
                       OR EXISTS (SELECT 1 FROM journeys_enrollment WHERE state = 'active')
                       OR EXISTS (SELECT 1 FROM journeys_outboxmessage WHERE status = 'pending')"""
            ).fetchone()[0]:
                if time.perf_counter() - drain_started > args.drain_timeout:
                    raise SystemExit("the pipeline did not drain in time")
                time.sleep(0.5)
            drain_seconds = time.perf_counter() - drain_started
    finally:
        sampling.clear()
        sampler.join()
    return {
        "accepted": accepted,
        "duplicates": duplicates,
        "api_seconds": api_seconds,
        "matched_while_posting": matched_while_posting,
        "unheard": unheard,
        "pending_at_end": pending_at_end,
        "due_at_end": due_at_end,
        "drain_seconds": drain_seconds,
        "total_seconds": time.perf_counter() - started,
        "samples": samples,
    }


def main():
    args = parse_args()
    import psycopg

    recreate_database(args.database_url)
    setup_django(args)
    api_key = prepare(args)
    from django.db import connection

    from tests.processes import celery_processes

    connection.close()
    bodies, unique, replays = batches(args)
    port = free_port()
    url = args.database_url.replace("postgres://", "postgresql://")
    env = {
        **os.environ,
        "INGEST_RATE_LIMIT": "1000000000/60s",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-pipeline-") as folder,
        celery_processes(
            Path(folder),
            broker_url=args.redis_url,
            workers=[f"pipeline{index}" for index in range(args.workers)],
            EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
        ) as workers,
    ):
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", str(args.web_workers), "--no-control-socket", "--timeout", "120"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            run = measure(args, port=port, api_key=api_key, bodies=bodies, url=url)
            peaks = [round(peak_rss_mb(worker.pid), 1) for worker in workers]
        finally:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=30)

    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM journeys_event WHERE source = 'api'"
        ).fetchone()[0]
        triggered = conn.execute(
            """SELECT count(DISTINCT contact_id) FROM journeys_event
               WHERE source = 'api' AND name = 'trial_started'"""
        ).fetchone()[0]
        enrollments = conn.execute("SELECT count(*) FROM journeys_enrollment").fetchone()[0]
        failed = conn.execute(
            "SELECT count(*) FROM journeys_event WHERE status = 'failed'"
        ).fetchone()[0]
        visits = conn.execute("SELECT count(*) FROM journeys_stepvisit").fetchone()[0]
    assert run["accepted"] == stored == unique and run["duplicates"] == replays, (
        run, stored, unique, replays,
    )  # fmt: skip
    assert enrollments == triggered, f"{enrollments} enrollments for {triggered} contacts"
    assert failed == 0 and visits == enrollments * len(STEPS)
    posted = len(bodies) * args.batch
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events_posted": posted,
        "unique_events": unique,
        "api_seconds": round(run["api_seconds"], 1),
        "api_events_per_second": round(posted / run["api_seconds"]),
        "events_stored_processed_nothing_listens": run["unheard"],
        "events_to_match_per_second": round((unique - run["unheard"]) / run["api_seconds"]),
        "events_matched_while_posting": run["matched_while_posting"],
        "matching_per_second_while_posting": round(
            run["matched_while_posting"] / run["api_seconds"]
        ),
        "pending_events_at_last_request": run["pending_at_end"],
        "due_enrollments_at_last_request": run["due_at_end"],
        "max_pending_events": max((s["pending_events"] for s in run["samples"]), default=0),
        "drain_seconds": round(run["drain_seconds"], 1),
        "total_seconds": round(run["total_seconds"], 1),
        "enrollments": enrollments,
        "step_visits": visits,
        "worker_peak_rss_mb": peaks,
        "clients": args.clients,
        "web_workers": args.web_workers,
        "workers": args.workers,
    }
    print("| seconds | pending events | due enrollments | events processed |")
    print("|---:|---:|---:|---:|")
    for s in run["samples"]:
        print(
            f"| {s['seconds']} | {s['pending_events']:,} | {s['due_enrollments']:,} "
            f"| {s['processed_events']:,} |"
        )
    print("\n| measure | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    print(json.dumps({**result, "samples": run["samples"]}))


if __name__ == "__main__":
    main()
