"""The report API while the engine runs at full speed: `bench/engine.py` (event matching,
the engine in one process, then the whole pipeline on a Celery worker) in a child process,
and in this one the report API called back to back on its journey, with the rollups
refreshed every 30 seconds in a thread of their own (as beat would).

    .venv/bin/python bench/report_under_load.py --contacts 100000     # about 10 minutes

Prints the API's p50, p95 and max beside the limit (1 s) for each minute of the engine run,
and the engine's own figures (so that the load it ran under is on record). Needs what
bench/engine.py needs; uses its own database (`waypoint_bench_load`) and Redis db 10.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LIMIT_MS = 1000
REFRESH_SECONDS = 30


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_LOAD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/waypoint_bench_load"
        ),
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    return parser.parse_args()


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-" + "x" * 40)
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def wait_for_journey(engine: subprocess.Popen) -> None:
    """Until the child has migrated its new database and published the journey."""
    import psycopg

    while engine.poll() is None:
        try:
            with psycopg.connect(os.environ["DATABASE_URL"]) as c:
                row = c.execute(
                    "SELECT count(*) FROM journeys_journeyversion WHERE published_at IS NOT NULL"
                ).fetchone()
                if row and row[0]:
                    return
        except psycopg.Error:
            pass
        time.sleep(1)


def refresher(stop: threading.Event, refreshes: list) -> None:
    from django.db import connection

    from reporting.rollups import refresh_rollups

    try:
        while not stop.wait(REFRESH_SECONDS):
            started = time.perf_counter()
            refresh_rollups()
            refreshes.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()


def main():
    args = parse_args()
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": args.database_url,
        "BENCH_REDIS_URL": args.redis_url,
    }
    engine = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "engine.py"), "--contacts", str(args.contacts)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    os.environ["DATABASE_URL"] = args.database_url
    time.sleep(5)  # the child drops and recreates the database first
    wait_for_journey(engine)
    setup_django(args.database_url)
    from django.test import Client

    from journeys.actions.api_keys import create_api_key

    _, raw = create_api_key(name="bench-load", scope="manage")
    api = Client(headers={"Authorization": f"Bearer {raw}"})
    stop, refreshes = threading.Event(), []
    thread = threading.Thread(target=refresher, args=(stop, refreshes), daemon=True)
    thread.start()
    samples: list[tuple[float, float]] = []  # (seconds since the first call, ms)
    failures = 0
    first = time.perf_counter()
    while engine.poll() is None:
        started = time.perf_counter()
        response = api.get("/api/v1/journeys/bench/report")
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            failures += 1
            continue
        samples.append((started - first, elapsed))
    stop.set()
    thread.join()
    output = engine.stdout.read()
    engine_result = json.loads(output.strip().splitlines()[-1])

    print("| minute of the run | report API calls | p50 ms | p95 ms | max ms | limit (p95) |")
    print("|---|---:|---:|---:|---:|---|")
    minutes: dict[int, list[float]] = {}
    for at, elapsed in samples:
        minutes.setdefault(int(at // 60), []).append(elapsed)
    for label, values in [*minutes.items(), ("whole run", [e for _, e in samples])]:
        values = sorted(values)
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        verdict = "met" if p95 < LIMIT_MS else "NOT met"
        print(
            f"| {label} | {len(values):,} | {statistics.median(values):.1f} | {p95:.1f} | "
            f"{values[-1]:.1f} | < {LIMIT_MS} ms: {verdict} |"
        )
    print(f"failed calls: {failures}")
    if refreshes:
        print(
            f"rollup refreshes: {len(refreshes)}, median {statistics.median(refreshes):.0f} ms,"
            f" max {max(refreshes):.0f} ms"
        )
    print("engine:", json.dumps(engine_result))


if __name__ == "__main__":
    main()
