"""CSV import benchmark: a generated file of contacts through `manage.py import_contacts`
(a child process, so its peak RSS is its own), beside a bare COPY of the same file into a
table in the same run, then the same file imported again (which must change nothing).

    .venv/bin/python bench/import_bench.py --rows 1000000

Needs PostgreSQL (see bench/README.md). It drops and recreates the database it is given.
Prints rows per second for each, the import's peak RSS, and their ratio, as Markdown and
JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
ZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC", ""]
PLANS = ["free", "pro", "team"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_IMPORT_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/waypoint_bench_import"
        ),
    )
    return parser.parse_args()


def write_file(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("external_id,email,phone,timezone,plan,city\n")
        for i in range(rows):
            out.write(
                f"crm-{i:08d},person{i}@example.com,+33 1 {i % 10000:04d} {i % 97:02d},"
                f"{ZONES[i % len(ZONES)]},{PLANS[i % len(PLANS)]},City {i % 500}\n"
            )


def recreate_database(url: str) -> None:
    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def manage(env: dict, *args: str) -> tuple[float, int, str]:
    """Seconds, peak RSS (KiB) and output of `manage.py ARGS` in a child process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{output}")
    return elapsed, usage.ru_maxrss, output


def bare_copy(url: str, path: Path) -> float:
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TEMP TABLE bare_copy (external_id text, email text, phone text, "
            "timezone text, plan text, city text)"
        )
        started = time.perf_counter()
        sql = "COPY bare_copy FROM STDIN WITH (FORMAT csv, HEADER true)"
        with conn.cursor() as cursor, open(path, "rb") as file, cursor.copy(sql) as copy:
            while chunk := file.read(1 << 20):
                copy.write(chunk)
        conn.commit()
        return time.perf_counter() - started


def main():
    args = parse_args()
    recreate_database(args.database_url)
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        # DEBUG off, as in production: with it on Django keeps every query's text.
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-" + "x" * 50,
        "ENGINE_WAKEUPS": "0",
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
    }
    manage(env, "migrate", "-v0")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "contacts.csv"
        write_file(path, args.rows)
        size = path.stat().st_size
        copy_seconds = bare_copy(args.database_url, path)
        first, first_rss, first_out = manage(env, "import_contacts", str(path))
        again, again_rss, again_out = manage(env, "import_contacts", str(path))
    results = {
        "rows": args.rows,
        "file_mb": round(size / 1e6, 1),
        "copy_rows_per_s": round(args.rows / copy_seconds),
        "import_rows_per_s": round(args.rows / first),
        "import_peak_rss_mb": round(first_rss / 1024, 1),
        "reimport_rows_per_s": round(args.rows / again),
        "reimport_peak_rss_mb": round(again_rss / 1024, 1),
        "import_vs_copy": round(copy_seconds / first, 3),
        "import_output": first_out.strip().splitlines()[-1],
        "reimport_output": again_out.strip().splitlines()[-1],
    }
    print(f"| {args.rows:,} rows ({results['file_mb']} MB) | rows/s | peak RSS |")
    print("|---|---|---|")
    print(f"| bare COPY into a table | {results['copy_rows_per_s']:,} | - |")
    print(
        f"| import_contacts | {results['import_rows_per_s']:,} | "
        f"{results['import_peak_rss_mb']} MB |"
    )
    print(
        f"| import_contacts again (unchanged) | {results['reimport_rows_per_s']:,} | "
        f"{results['reimport_peak_rss_mb']} MB |"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
