"""Engine benchmark: N contacts through a 5-step journey, against a bare SELECT ... FOR
UPDATE SKIP LOCKED claim-and-update loop on a table of the same shape; then the same run
on a real Celery worker (with delivery and the emitted events), for its peak memory.

    .venv/bin/python bench/engine.py --contacts 100000

Needs PostgreSQL and Redis (see bench/README.md). It recreates the database it is given.
Prints step executions per second, the raw limit measured in the same run, their ratio,
the event-matching rate and the worker's peak memory, as a Markdown table and JSON.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STEPS = [
    {
        "key": "welcome",
        "type": "send_email",
        "subject": "Hi {{ contact.external_id }}",
        "body": "Welcome",
        "next": "tag",
    },
    {"key": "tag", "type": "update_contact", "attributes": {"stage": "welcomed"}, "next": "pause"},
    {"key": "pause", "type": "wait", "duration": "PT1S", "next": "is-welcomed"},
    {
        "key": "is-welcomed",
        "type": "condition",
        "if": {"attribute": "stage", "op": "eq", "value": "welcomed"},
        "then": "buy",
        "else": None,
    },
    {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/waypoint_bench"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="skip the Celery worker run (no pipeline or memory figures); for quick checks",
    )
    return parser.parse_args()


def recreate_database(url: str) -> None:
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def setup_django(args) -> None:
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["CELERY_BROKER_URL"] = args.redis_url
    # The engine's batches are the raw loop's: one size for both sides of the ratio.
    os.environ["ENGINE_BATCH_SIZE"] = str(args.batch_size)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    # Settings refuse the public development key with DEBUG off.
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-" + "x" * 40)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare_journey(args) -> None:
    """The engine's starting point, for this benchmark and the profiles: the database
    migrated, the collector settled as a worker's is once started (config/celery.py), the
    5-step journey published and one trigger event stored per contact (each with an email
    address), then VACUUM ANALYZE."""
    from django.core.management import call_command
    from django.db import connection

    from config.celery import settle_garbage_collection
    from journeys.actions.events import ingest_events
    from journeys.actions.versions import create_journey, publish_version
    from journeys.tests.flows import definition

    call_command("migrate", verbosity=0)
    settle_garbage_collection()
    _, version, _ = create_journey(
        definition=definition(
            STEPS, key="bench", conversions=[{"key": "paid", "name": "Paid", "value": 1.0}]
        )
    )
    publish_version(version=version)
    for start in range(0, args.contacts, 1000):
        ingest_events(
            events=[
                {"id": f"start-{i}", "contact": f"c{i}", "name": "signed_up"}
                for i in range(start, min(start + 1000, args.contacts))
            ]
        )
    with connection.cursor() as cursor:
        cursor.execute("UPDATE journeys_contact SET email = external_id || '@example.com'")
        cursor.execute("VACUUM ANALYZE")


def run_engine(args) -> dict:
    import redis
    from django.db import connection
    from django.utils import timezone

    from journeys.actions.enrollments import advance_due_enrollments
    from journeys.actions.events import process_pending_events
    from journeys.models import Enrollment, Event, OutboxMessage, StepVisit

    prepare_journey(args)
    n = args.contacts

    started = time.perf_counter()
    matched = 0
    while True:
        done = process_pending_events(limit=args.batch_size, now=timezone.now())
        if not done:
            break
        matched += done
    match_seconds = time.perf_counter() - started
    assert Enrollment.objects.count() == n, "every trigger event must start one enrollment"
    # Both sides start from a vacuumed, analysed table and a checkpoint just taken (the raw
    # loop's gets the same): a checkpoint that PostgreSQL starts on its own (every ~500 MB
    # of WAL with the stock max_wal_size) writes for ten seconds beside whichever side it
    # falls in, and the full-page images after it double that side's WAL.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("CHECKPOINT")

    # 1. The engine alone, in this process, like the raw loop: advance until every
    # enrollment has finished (the 1-second wait brings each back once).
    started = time.perf_counter()
    while Enrollment.objects.filter(state=Enrollment.State.ACTIVE).exists():
        if not advance_due_enrollments(limit=10**9, now=timezone.now()):
            time.sleep(0.05)
    engine_seconds = time.perf_counter() - started
    steps = StepVisit.objects.count()
    assert steps == n * len(STEPS), f"{steps} step visits for {n} enrollments"

    result = {
        "contacts": n,
        "events_matched": matched,
        "event_matching_per_second": round(matched / match_seconds),
        "step_executions": steps,
        "engine_seconds": round(engine_seconds, 1),
        "steps_per_second": round(steps / engine_seconds),
    }
    if args.no_worker:
        return result

    # 2. The same run again on a real Celery worker, which also delivers the outbox and
    # processes the conversion events the run emits: the whole pipeline, and its memory.
    with connection.cursor() as cursor:
        for table in (
            "journeys_outboxmessage",
            "journeys_stepvisit",
            "conversions_conversionaward",
        ):
            cursor.execute(f"DELETE FROM {table}")
        cursor.execute("DELETE FROM journeys_event WHERE source = 'internal'")
        cursor.execute(
            "UPDATE journeys_enrollment SET state = 'active', current_step = 'welcome', "
            "path = '[]', due_at = now(), ended_at = NULL, attempts = 0"
        )
        cursor.execute("DELETE FROM journeys_enginelease")
        cursor.execute("VACUUM ANALYZE")
    broker = redis.Redis.from_url(args.redis_url)
    broker.flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "CELERY_BROKER_URL": args.redis_url,
        "ENGINE_BATCH_SIZE": str(args.batch_size),
        "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-Q",
            "celery",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"bench-{os.getpid()}@%h",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    from celery import Celery

    sender = Celery(broker=args.redis_url)
    time.sleep(3)  # the worker's start-up is not the engine's time
    started = time.perf_counter()
    try:
        while (
            Enrollment.objects.filter(state=Enrollment.State.ACTIVE).exists()
            or OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).exists()
            or Event.objects.filter(status=Event.Status.PENDING).exists()
        ):
            # A stand-in for beat: wake the worker whenever its queue is empty.
            if broker.llen("celery") == 0:
                sender.send_task("journeys.sweep")
            time.sleep(0.2)
        pipeline_seconds = time.perf_counter() - started
        peak = peak_rss_mb(worker.pid)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        broker.flushdb()
    assert StepVisit.objects.count() == steps
    assert OutboxMessage.objects.filter(status=OutboxMessage.Status.SENT).count() == n
    return {
        **result,
        "worker_pipeline_seconds": round(pipeline_seconds, 1),
        "worker_pipeline_steps_per_second": round(steps / pipeline_seconds),
        "worker_peak_rss_mb": round(peak, 1),
    }


def run_raw_limit(args) -> dict:
    """The same number of step executions as a bare claim-and-update loop: claim a batch of
    due rows with SKIP LOCKED, advance each row's step (path, due_at, state), commit."""
    import psycopg

    n = args.contacts
    url = args.database_url.replace("postgres://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw")
        conn.execute("CREATE TABLE bench_raw (LIKE journeys_enrollment INCLUDING ALL)")
        # LIKE copies columns, defaults and indexes, not storage parameters (fillfactor).
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'journeys_enrollment'"
        ).fetchone()[0]
        if options:
            conn.execute(f"ALTER TABLE bench_raw SET ({', '.join(options)})")
        conn.execute(
            """INSERT INTO bench_raw (contact_id, journey_id, version_id, state, held_out,
                   current_step, due_at, waiting_for_goal, path, entry_lock, started_at,
                   exit_reason, attempts, last_error)
               SELECT g, 1, 1, 'active', false, 's0', now(), '', '[]'::jsonb, 'once', now(),
                   '', 0, ''
               FROM generate_series(1, %s) g""",
            (n,),
        )
        conn.execute("VACUUM ANALYZE bench_raw")
        conn.execute("CHECKPOINT")  # as the engine's side (run_engine)
        conn.autocommit = False
        started = time.perf_counter()
        updates = 0
        while True:
            with conn.transaction():
                rows = conn.execute(
                    """SELECT id FROM bench_raw WHERE state = 'active' AND due_at <= now()
                       ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED""",
                    (args.batch_size,),
                ).fetchall()
                if not rows:
                    break
                conn.execute(
                    """UPDATE bench_raw SET path = path || to_jsonb(current_step),
                           state = CASE WHEN current_step = 's4' THEN 'completed' ELSE 'active' END,
                           current_step = CASE current_step WHEN 's0' THEN 's1' WHEN 's1' THEN 's2'
                               WHEN 's2' THEN 's3' WHEN 's3' THEN 's4' ELSE '' END,
                           due_at = CASE WHEN current_step = 's4' THEN NULL ELSE now() END
                       WHERE id = ANY(%s)""",
                    ([row[0] for row in rows],),
                )
                updates += len(rows)
        seconds = time.perf_counter() - started
        conn.autocommit = True
        conn.execute("DROP TABLE bench_raw")
    assert updates == n * 5
    return {
        "raw_step_updates": updates,
        "raw_seconds": round(seconds, 1),
        "raw_per_second": round(updates / seconds),
    }


def main():
    args = parse_args()
    recreate_database(args.database_url)
    setup_django(args)
    engine = run_engine(args)
    raw = run_raw_limit(args)
    result = {
        **engine,
        **raw,
        "ratio": round(engine["steps_per_second"] / raw["raw_per_second"], 3),
    }
    print("| measure | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
