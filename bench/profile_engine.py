"""Where the engine's time goes: bench/engine.py's enrollments advanced in one process by
`advance_due_enrollments`, split into the process's CPU time, the time spent in commits,
the server's statements (from `pg_stat_statements`, when the server loads it) and the WAL
the run wrote; with `--cprofile`, the functions that took the most.

    .venv/bin/python bench/profile_engine.py --contacts 50000 [--cprofile]

`pg_stat_statements` needs `shared_preload_libraries = 'pg_stat_statements'` and a restart
of PostgreSQL (and `CREATE EXTENSION pg_stat_statements` in the `postgres` database); set
`pg_stat_statements.track_planning = on` for planning times. Without it the statements are
left out. It reads the statistics of the benchmark's database only, reset before the run.
Recreates the database it is given (BENCH_DATABASE_URL, as bench/engine.py).
"""

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import STEPS, parse_args, prepare_journey, recreate_database, setup_django  # noqa: E402


def statements_connection(database_url: str):
    """A connection to the `postgres` database that reads pg_stat_statements, or None."""
    import psycopg

    base = database_url.replace("postgres://", "postgresql://").rsplit("/", 1)[0]
    admin = psycopg.connect(f"{base}/postgres", autocommit=True)
    loaded = admin.execute(
        "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
    ).fetchone()
    preloaded = "pg_stat_statements" in admin.execute("SHOW shared_preload_libraries").fetchone()[0]
    return admin if loaded and preloaded else None


def main():
    profiling = "--cprofile" in sys.argv
    if profiling:
        sys.argv.remove("--cprofile")
    args = parse_args()
    recreate_database(args.database_url)
    setup_django(args)
    from django.db import connection
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.utils import timezone

    from journeys.actions.enrollments import advance_due_enrollments
    from journeys.actions.events import process_pending_events
    from journeys.models import Enrollment

    prepare_journey(args)
    while process_pending_events(limit=args.batch_size, now=timezone.now()):
        pass
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("CHECKPOINT")  # as bench/engine.py

    commits = [0.0, 0]
    commit = BaseDatabaseWrapper._commit

    def timed_commit(self):
        started = time.perf_counter()
        try:
            return commit(self)
        finally:
            commits[0] += time.perf_counter() - started
            commits[1] += 1

    BaseDatabaseWrapper._commit = timed_commit
    admin = statements_connection(args.database_url)
    name = args.database_url.rsplit("/", 1)[1]
    if admin:
        admin.execute("SELECT pg_stat_statements_reset()")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()")
        wal_start = cursor.fetchone()[0]

    profile = cProfile.Profile() if profiling else None
    cpu = time.process_time()
    started = time.perf_counter()
    if profile:
        profile.enable()
    while Enrollment.objects.filter(state=Enrollment.State.ACTIVE).exists():
        if not advance_due_enrollments(limit=10**9, now=timezone.now()):
            time.sleep(0.05)
    if profile:
        profile.disable()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    with connection.cursor() as cursor:
        cursor.execute("SELECT (pg_current_wal_lsn() - %s::pg_lsn) / 1e6", [wal_start])
        wal_mb = float(cursor.fetchone()[0])

    steps = args.contacts * len(STEPS)
    print(f"engine: {seconds:.1f} s, {steps / seconds:,.0f} steps/s")
    print(f"process CPU: {cpu:.1f} s; commits: {commits[0]:.1f} s in {commits[1]}")
    print(f"WAL written: {wal_mb:,.0f} MB")
    if admin:
        rows = admin.execute(
            """SELECT calls, total_exec_time / 1000, total_plan_time / 1000, rows,
                      left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
               FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
               WHERE d.datname = %s ORDER BY total_exec_time DESC""",
            [name],
        ).fetchall()
        total = sum(row[1] for row in rows)
        print(f"statements (server): {total:.1f} s in all\n")
        print("| calls | exec s | plan s | rows | statement |\n|---:|---:|---:|---:|---|")
        for calls, exec_s, plan_s, count, query in rows[:15]:
            print(f"| {calls:,} | {exec_s:.2f} | {plan_s:.2f} | {count:,} | `{query}` |")
    else:
        print("pg_stat_statements is not loaded: no statement times")
    if profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
        print(out.getvalue())


if __name__ == "__main__":
    main()
