"""Benchmark of the report at scale: 1,000,000 enrollments and ~200,000 conversions over 20
journeys in PostgreSQL, generated in SQL (INSERT ... SELECT generate_series) in a database of
its own, then timed warm:

- the report API (`GET /api/v1/journeys/{key}/report`) through Django's test client;
- the report page (comparison, holdout, daily cohorts, funnel: charts and tables), and
  each panel it loads afterwards (paths, messages, goals, time to convert);
- the API's two aggregate queries on the rollups (what the API runs), and the same two
  figures computed from the raw facts (the "raw query" time);
- the index-scan limit: counting the journey's enrollments and step visits through their
  indexes, the least work any exact answer from the raw facts has to do.

Usage:
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/wp_reporting_bench \\
        .venv/bin/python bench/report_bench.py [--rebuild] [--runs 30] [--enrollments 1000000]

The database is created and migrated if missing; data is generated once and reused unless
--rebuild is given.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/wp_reporting_bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
# Settings refuse the public development key with DEBUG off.
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-" + "x" * 40)
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
# Served by runserver/whitenoise in real use; the benchmark times the view, not the manifest.
os.environ.setdefault(
    "STATICFILES_STORAGE", "django.contrib.staticfiles.storage.StaticFilesStorage"
)

JOURNEYS = 20
PATHS = [
    # (share of treated enrollments, path): about 21% of treated reach "convert".
    (0.11, ["welcome", "wait-2d", "ab", "nudge", "check", "convert"]),
    (0.10, ["welcome", "wait-2d", "ab", "check", "convert"]),
    (0.35, ["welcome", "wait-2d", "ab", "nudge", "check"]),
    (0.44, ["welcome", "wait-2d", "ab", "check"]),
]
STEPS = [
    {"key": "welcome", "type": "send_email", "subject": "Welcome", "body": "Hi", "next": "wait-2d"},
    {"key": "wait-2d", "type": "wait", "duration": "P2D", "next": "ab"},
    {"key": "ab", "type": "split", "paths": [{"weight": 50, "next": "nudge"}, {"weight": 50, "next": "check"}]},
    {"key": "nudge", "type": "send_sms", "text": "Need a hand?", "next": "check"},
    {"key": "check", "type": "evaluate_goal", "goal": "activated", "wait": "P7D", "achieved": "convert", "not_achieved": None},
    {"key": "convert", "type": "convert", "conversion": "paid", "next": None},
]  # fmt: skip


def ensure_database():
    import psycopg

    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def generate(enrollments: int):
    from django.db import connection, transaction

    from conversions.models import Conversion, Goal
    from journeys.models import Journey, JourneyVersion

    print(f"generating {enrollments:,} enrollments over {JOURNEYS} journeys ...", flush=True)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE journeys_contact, journeys_journey, journeys_enrollment, "
            "journeys_stepvisit, journeys_outboxmessage, conversions_conversionaward, "
            "conversions_goalachievement, conversions_conversion, conversions_goal, "
            "conversions_revision, journeys_journeyversion RESTART IDENTITY CASCADE"
        )
    definition = {
        "settings": {"reentry": "once", "holdout_percent": 10},
        "triggers": [{"type": "event", "event": "trial_started", "where": []}],
        "exit_when": [],
        "steps": STEPS,
    }
    from django.utils import timezone

    now = timezone.now()
    day = timezone.timedelta(days=1)
    rows = []
    with transaction.atomic():
        for j in range(1, JOURNEYS + 1):
            journey = Journey.objects.create(
                key=f"bench-{j:02}", name=f"Bench {j:02}", status="live"
            )
            v1 = JourneyVersion.objects.create(
                journey=journey, number=1, state="live", definition=definition,
                published_at=now - 90 * day, traffic=50, split_traffic=50,
            )  # fmt: skip
            v2 = JourneyVersion.objects.create(
                journey=journey, number=2, state="live", definition=definition,
                published_at=now - 45 * day, traffic=50, split_traffic=50, split_with=v1,
            )  # fmt: skip
            paid = Conversion.objects.create(
                journey=journey, key="paid", name="Paid", normalized_name="paid", value=49,
                window=30 * day,
            )  # fmt: skip
            goal = Goal.objects.create(
                journey=journey, key="activated", name="Activated", normalized_name="activated",
                criteria={"event": "project_created"},
            )  # fmt: skip
            rows.append((j, journey.id, v1.id, v2.id, paid.id, goal.id))
    cases, lower = [], 0.0
    for share, path in PATHS:
        upper = lower + share
        cases.append(f"WHEN s.rp < {upper} THEN '{_json(path)}'::jsonb")
        lower = upper
    path_case = (
        "CASE WHEN s.held THEN '[]'::jsonb "
        + " ".join(cases)
        + f" ELSE '{_json(PATHS[-1][1])}'::jsonb END"
    )
    contacts = enrollments // 4
    statements = [
        "CREATE TEMP TABLE bench_map (j int, journey_id bigint, v1 bigint, v2 bigint, conv bigint, goal bigint)",
        "INSERT INTO bench_map VALUES " + ", ".join(str(r) for r in rows),
        f"""INSERT INTO journeys_contact (external_id, email, attributes, created_at, updated_at)
            SELECT 'bench-' || c, 'bench' || c || '@example.com', '{{}}', now(), now()
            FROM generate_series(1, {contacts}) c""",
        f"""INSERT INTO journeys_enrollment (contact_id, journey_id, version_id, state, held_out,
                current_step, waiting_for_goal, path, started_at, ended_at, exit_reason, attempts, last_error)
            SELECT (SELECT min(id) FROM journeys_contact) + (s.e - 1) / 4, m.journey_id,
                   CASE WHEN s.d > 45 OR s.rv < 0.5 THEN m.v1 ELSE m.v2 END,
                   'completed', s.held, '', '', {path_case},
                   now() - s.d * interval '1 day' - s.secs * interval '1 second',
                   now() - s.d * interval '1 day' + interval '5 days', '', 0, ''
            FROM (SELECT e, ((e - 1) % {JOURNEYS}) + 1 AS j, random() < 0.1 AS held,
                         random() AS rp, random() AS rv, (random() * 89)::int AS d,
                         (random() * 86399)::int AS secs
                  FROM generate_series(1, {enrollments}) e) s
            JOIN bench_map m ON m.j = s.j""",
        """INSERT INTO journeys_stepvisit (enrollment_id, version_id, step_key, outcome, seq, entered_at)
            SELECT e.id, e.version_id, p.key, '', p.ord - 1, e.started_at + (p.ord - 1) * interval '1 hour'
            FROM journeys_enrollment e, jsonb_array_elements_text(e.path) WITH ORDINALITY p(key, ord)""",
        """INSERT INTO journeys_outboxmessage (visit_id, enrollment_id, contact_id, step_key, channel,
                recipient, subject, body, status, attempts, due_at, sent_at, error, created_at)
            SELECT v.id, v.enrollment_id, e.contact_id, v.step_key,
                   CASE WHEN v.step_key = 'welcome' THEN 'email' ELSE 'sms' END,
                   '', '', '', 'sent', 1, v.entered_at, v.entered_at, '', v.entered_at
            FROM journeys_stepvisit v JOIN journeys_enrollment e ON e.id = v.enrollment_id
            WHERE v.step_key IN ('welcome', 'nudge')""",
        """INSERT INTO conversions_conversionaward (conversion_id, journey_id, version_id, enrollment_id,
                contact_id, counting, value, source, step_key, dedupe_key, awarded_at)
            SELECT m.conv, e.journey_id, e.version_id, e.id, e.contact_id, 'once_per_enrollment',
                   CASE WHEN random() < 0.1 THEN 490 ELSE 49 END,
                   CASE WHEN e.held_out THEN 'event' ELSE 'convert_step' END,
                   CASE WHEN e.held_out THEN '' ELSE 'convert' END, '',
                   e.started_at + (2 + random() * 6) * interval '1 day'
            FROM journeys_enrollment e JOIN bench_map m ON m.journey_id = e.journey_id
            WHERE e.path @> '["convert"]'::jsonb OR (e.held_out AND random() < 0.12)""",
        """INSERT INTO conversions_goalachievement (goal_id, enrollment_id, journey_id, version_id,
                contact_id, step_key, achieved_at)
            SELECT m.goal, e.id, e.journey_id, e.version_id, e.contact_id, 'check',
                   e.started_at + (2 + random() * 5) * interval '1 day'
            FROM journeys_enrollment e JOIN bench_map m ON m.journey_id = e.journey_id
            WHERE e.path @> '["convert"]'::jsonb OR (e.path @> '["check"]'::jsonb AND random() < 0.3)""",
        # Index-only scans need the visibility map a fresh bulk load lacks.
        "VACUUM ANALYZE",
    ]
    with connection.cursor() as cursor:
        for sql in statements:
            t = time.perf_counter()
            cursor.execute(sql)
            print(f"  {time.perf_counter() - t:6.1f}s  {' '.join(sql.split())[:70]}", flush=True)
    print(f"generated in {time.perf_counter() - started:.0f}s", flush=True)


def _json(value) -> str:
    import json

    return json.dumps(value)


def timed(fn, runs: int) -> dict:
    for _ in range(3):
        fn()  # warm: plans, caches, connections
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        "p50": statistics.median(samples),
        "p95": samples[min(len(samples) - 1, int(len(samples) * 0.95))],
        "min": samples[0],
    }


def measure(runs: int, key: str):
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    from journeys.actions.api_keys import create_api_key
    from journeys.models import ApiKey, Journey
    from reporting import rollups, selectors
    from reporting.models import RollupWatermark

    ApiKey.objects.filter(name="bench").delete()
    _, raw = create_api_key(name="bench", scope="manage")
    api = Client(headers={"Authorization": f"Bearer {raw}"})
    page = Client()
    viewer, _ = User.objects.get_or_create(
        username="bench-viewer", defaults={"is_superuser": True, "is_staff": True}
    )
    page.force_login(viewer)
    journey = Journey.objects.get(key=key)
    ctx = selectors.report_context(journey=journey)

    def call_api():
        response = api.get(f"/api/v1/journeys/{key}/report")
        assert response.status_code == 200, response.content[:300]

    def call_page():
        response = page.get(f"/journeys/{key}/report/")
        assert response.status_code == 200, response.status_code

    def call_panel(name):
        def call():
            response = page.get(f"/journeys/{key}/report/panels/{name}/")
            assert response.status_code == 200, response.status_code

        return call

    def raw_queries():
        selectors.cohorts_from_facts(ctx)
        selectors.step_funnel_from_facts(ctx)

    def rollup_queries():
        marks = rollups.rolled_up()
        selectors.cohorts(ctx, marks)
        selectors.step_funnel(ctx, marks)

    ids = ", ".join(str(i) for i in ctx.version_ids)

    def index_limit():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM journeys_enrollment WHERE version_id IN ({ids})")
            cursor.execute(f"SELECT count(*) FROM journeys_stepvisit WHERE version_id IN ({ids})")

    def call_all():
        call_page()
        for name in selectors.SLOW_PANELS:
            call_panel(name)()

    def with_tail(n: int, fn):
        """`fn` with the last `n` enrollments not rolled up, and as many of the last visits,
        awards and achievements as those enrollments have (the generator writes facts in no
        particular id order; the engine writes them in time order): the tail a report reads
        while the engine writes faster than the refresh folds. Timing only: the rollups
        still hold those facts, so the figures count them twice; the watermarks are put
        back afterwards."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(id) - %s FROM journeys_enrollment", [n])
            first = cursor.fetchone()[0]
            marks = {"enrollment": first}
            for fact, table in (("visit", "journeys_stepvisit"),
                                ("award", "conversions_conversionaward"),
                                ("achievement", "conversions_goalachievement")):  # fmt: skip
                cursor.execute(
                    f"SELECT max(id) - count(*) FILTER (WHERE enrollment_id > %s) FROM {table}",
                    [first],
                )
                marks[fact] = cursor.fetchone()[0]

        def call():
            saved = dict(RollupWatermark.objects.values_list("fact", "rolled_up"))
            try:
                for fact, mark in marks.items():
                    RollupWatermark.objects.filter(fact=fact).update(rolled_up=mark)
                return fn()
            finally:
                for fact, mark in saved.items():
                    RollupWatermark.objects.filter(fact=fact).update(rolled_up=mark)

        return call

    counts = {}
    with connection.cursor() as cursor:
        for table in ("journeys_enrollment", "journeys_stepvisit", "journeys_outboxmessage",
                      "conversions_conversionaward", "conversions_goalachievement"):  # fmt: skip
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cursor.fetchone()[0]
        cursor.execute(f"SELECT count(*) FROM journeys_enrollment WHERE version_id IN ({ids})")
        counts["enrollments of the journey"] = cursor.fetchone()[0]
    for name, n in counts.items():
        print(f"{name:32} {n:>12,}")
    sources = {"paths": "path rollups", "messages": "message rollups", "goals": "histograms",
               "time_to_convert": "histograms"}  # fmt: skip
    # (name, function, runs, limit in ms or None); the limits are issue 15's.
    plan = [
        ("report API", call_api, runs, None),
        ("report page", call_page, runs, None),
        *(
            (
                f"  + panel {name} ({sources[name]})",
                call_panel(name),
                max(5, runs // 3),
                50,
            )
            for name in selectors.SLOW_PANELS
        ),  # fmt: skip
        ("page and every panel, in turn", call_all, max(5, runs // 3), 300),
        (
            "report API, 30,000-enrollment tail",
            with_tail(30_000, call_api),
            max(5, runs // 3),
            1000,
        ),
        (
            "panel messages, 30,000-enrollment tail",
            with_tail(30_000, call_panel("messages")),
            max(5, runs // 3),
            None,
        ),
        ("API queries on rollups", rollup_queries, runs, None),
        ("API queries on raw facts", raw_queries, max(5, runs // 3), None),
        ("index-scan limit", index_limit, runs, None),
    ]
    results = {name: {**timed(fn, n), "limit": limit} for name, fn, n, limit in plan}
    print(
        f"\n{'warm, one journey (' + key + ')':40} {'p50 ms':>8} {'p95 ms':>8} {'min ms':>8}  limit"
    )
    for name, r in results.items():
        verdict = ""
        if r["limit"]:
            verdict = f"< {r['limit']} ms: " + ("met" if r["p50"] < r["limit"] else "NOT met")
        print(f"{name:40} {r['p50']:8.1f} {r['p95']:8.1f} {r['min']:8.1f}  {verdict}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="regenerate the data")
    parser.add_argument("--enrollments", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--journey", default="bench-07")
    args = parser.parse_args()
    ensure_database()
    import django

    django.setup()
    from django.core.management import call_command

    from journeys.models import Enrollment

    call_command("migrate", verbosity=0)
    from reporting.models import GoalTimeDay, MessageChunkDay, PathDay
    from reporting.rollups import rebuild_rollups

    if args.rebuild or not Enrollment.objects.exists():
        generate(args.enrollments)
    if args.rebuild or not all(
        model.objects.exists() for model in (GoalTimeDay, PathDay, MessageChunkDay)
    ):
        started = time.perf_counter()
        rebuild_rollups()
        print(f"rollups rebuilt in {time.perf_counter() - started:.1f}s", flush=True)
    measure(args.runs, args.journey)


if __name__ == "__main__":
    main()
