"""Where event matching's time goes: bench/engine.py's trigger events matched in batches by
`process_pending_events`, with each statement's time and count (by its first 90
characters), the commits' time, and with `--cprofile` the functions that took the most.

    .venv/bin/python bench/profile_matching.py --contacts 50000 [--cprofile]

pg_stat_statements would say the same from the server's side, but it needs
`shared_preload_libraries` (a restart of the shared PostgreSQL); these are the client's
times: the statement's round trip, with psycopg's adaptation of its parameters. cProfile
slows the Python side about threefold; the rate without it is the one to compare.
Recreates the database it is given (BENCH_DATABASE_URL, as bench/engine.py).
"""

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import parse_args, prepare_journey, recreate_database, setup_django  # noqa: E402


def main():
    profiling = "--cprofile" in sys.argv
    if profiling:
        sys.argv.remove("--cprofile")
    args = parse_args()
    recreate_database(args.database_url)
    setup_django(args)
    from django.db import connection
    from django.utils import timezone

    from journeys.actions.events import process_pending_events

    prepare_journey(args)

    statements: dict[str, list] = {}

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            entry = statements.setdefault(sql[:90], [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    commit = connection.connection.commit

    def timed_commit():
        started = time.perf_counter()
        try:
            return commit()
        finally:
            entry = statements.setdefault("COMMIT", [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    connection.connection.commit = timed_commit
    profile = cProfile.Profile()
    matched = 0
    started = time.perf_counter()
    with connection.execute_wrapper(timed):
        if profiling:
            profile.enable()
        while done := process_pending_events(limit=args.batch_size, now=timezone.now()):
            matched += done
        profile.disable()
    seconds = time.perf_counter() - started
    in_statements = sum(seconds for _, seconds in statements.values())
    print(f"{matched:,} events matched in {seconds:.2f} s: {matched / seconds:,.0f} events/s")
    print(f"statements and commits {in_statements:.2f} s, the rest (Python) "
          f"{seconds - in_statements:.2f} s\n")  # fmt: skip
    print("| seconds | count | statement |\n|---:|---:|---|")
    for sql, (count, total) in sorted(statements.items(), key=lambda item: -item[1][1])[:12]:
        print(f"| {total:.3f} | {count} | `{sql}` |")
    if profiling:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
