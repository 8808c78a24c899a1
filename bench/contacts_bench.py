"""Contacts list benchmark: 1 M contacts (and 200 k active enrollments) generated in SQL on
PostgreSQL, then the list's queries (journeys.selectors.contact_search: the page and its
total) timed for the first page, page 500, search by email prefix, an attribute filter, a
subscription filter and a journey/step filter, each alternating with a bare
`SELECT ... FROM journeys_contact ORDER BY id DESC LIMIT 50` in the same run.

    .venv/bin/python bench/contacts_bench.py [--contacts 1000000] [--runs 21] [--rebuild]

Needs PostgreSQL (see bench/README.md). It creates the database it is given if missing and
fills it once (--rebuild drops it first). Prints the median and spread (min–max) of each,
as Markdown and a JSON line, and the plan of each query with --explain.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_CONTACTS_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/waypoint_bench_contacts",
        ),
    )
    return parser.parse_args()


def ensure_database(url: str, rebuild: bool) -> bool:
    """True when the database was (re)created and must be filled."""
    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if rebuild:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
        return not exists


# One in 50 contacts has bounced, one in 200 unsubscribed from SMS; plans cycle over three;
# 200,000 contacts are active in one journey of 10 steps (20,000 at each).
FILL = [
    """
    INSERT INTO journeys_contact
        (external_id, email, attributes, timezone, subscriptions, created_at, updated_at)
    SELECT 'crm-' || lpad(i::text, 8, '0'),
           'person' || i || '@example.com',
           jsonb_build_object(
               'plan', (ARRAY['free', 'pro', 'team'])[1 + i %% 3],
               'first_name', (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara'])[1 + i %% 5]
                   || i %% 1000,
               'last_name', 'Family' || i %% 7919),
           '',
           jsonb_build_object(
               'email', CASE WHEN i %% 50 = 0 THEN 'bounced' ELSE 'subscribed' END,
               'sms', CASE WHEN i %% 200 = 0 THEN 'unsubscribed' ELSE 'subscribed' END),
           now() - make_interval(secs => %(n)s - i), now()
    FROM generate_series(1, %(n)s) AS i
    """,
    """
    INSERT INTO journeys_enrollment (contact_id, journey_id, version_id, state, held_out,
        current_step, waiting_for_goal, path, entry_lock, started_at, exit_reason, attempts,
        last_error)
    SELECT c.id, v.journey_id, v.id, 'active', false, 'step-' || (c.id / 5) %% 10, '', '[]',
        'active', now(), '', 0, ''
    FROM journeys_contact c, journeys_journeyversion v
    WHERE c.id %% 5 = 0
    """,
]


def fill(url: str, contacts: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in FILL:
            conn.execute(sql, {"n": contacts})
        conn.execute("VACUUM ANALYZE")


def median_and_spread(samples: list[float]) -> dict:
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 2),
        "min_ms": round(min(samples) * 1000, 2),
        "max_ms": round(max(samples) * 1000, 2),
    }


def main():
    args = parse_args()
    fresh = ensure_database(args.database_url, args.rebuild)
    os.environ.update(
        {
            "DATABASE_URL": args.database_url,
            # DEBUG off, as in production: with it on Django keeps every query's text.
            "DEBUG": "0",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-" + "x" * 50,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
        }
    )
    import django  # noqa: PLC0415 (settings come from the environment set just above)

    django.setup()
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connection  # noqa: PLC0415

    from journeys.models import Journey, JourneyVersion  # noqa: PLC0415
    from journeys.selectors import (  # noqa: PLC0415
        ContactFilters,
        _filtered_contacts,
        contact_search,
    )

    call_command("migrate", verbosity=0)
    if fresh:
        started = time.perf_counter()
        steps = [{"key": f"step-{n}", "type": "wait"} for n in range(10)]
        journey = Journey.objects.create(key="bench", name="Bench journey")
        JourneyVersion.objects.create(
            journey=journey, number=1, state="live", definition={"steps": steps}
        )
        fill(args.database_url, args.contacts)
        print(f"filled in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    journey = Journey.objects.get(key="bench")
    cases = {
        "first page": (ContactFilters(), 1),
        "page 500": (ContactFilters(), 500),
        "search by email prefix (`person12345`)": (ContactFilters(query="person12345"), 1),
        "search by first name prefix (`grace12`)": (ContactFilters(query="grace12"), 1),
        "attribute filter (`plan=pro`, 1 in 3)": (
            ContactFilters(attribute=("plan", "pro")),
            1,
        ),
        "subscription filter (email bounced, 1 in 50)": (
            ContactFilters(subscriptions=(("email", "bounced"),)),
            1,
        ),
        "journey/step filter (20,000 at the step)": (
            ContactFilters(journey=journey, step="step-3"),
            1,
        ),
    }

    def bare():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, external_id, email, attributes, created_at FROM journeys_contact "
                "ORDER BY id DESC LIMIT 50"
            )
            cursor.fetchall()

    rows = {}
    for label, (filters, page) in cases.items():
        contact_search(filters=filters, page=page)  # warm
        bare()
        timed, baseline = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            result = contact_search(filters=filters, page=page)
            timed.append(time.perf_counter() - started)
            started = time.perf_counter()
            bare()
            baseline.append(time.perf_counter() - started)
        rows[label] = {
            "list": median_and_spread(timed),
            "bare": median_and_spread(baseline),
            "total": f"{result.total_kind} {result.total}",
            "rows": len(result.contacts),
        }
    if args.explain:
        for label, (filters, page) in cases.items():
            query = _filtered_contacts(filters).order_by("-pk")[(page - 1) * 50 : page * 50 + 1]
            print(f"--- {label}\n{query.explain()}", file=sys.stderr)

    print(
        f"| {args.contacts:,} contacts, {args.runs} alternating runs | list p50 ms (min–max) "
        "| bare LIMIT 50 p50 ms (min–max) | total shown |"
    )
    print("|---|---:|---:|---|")
    for label, row in rows.items():
        lst, bar = row["list"], row["bare"]
        print(
            f"| {label} | **{lst['p50_ms']}** ({lst['min_ms']}–{lst['max_ms']}) "
            f"| {bar['p50_ms']} ({bar['min_ms']}–{bar['max_ms']}) | {row['total']} |"
        )
    print(json.dumps({"contacts": args.contacts, "runs": args.runs, "cases": rows}))


if __name__ == "__main__":
    main()
