"""Keeping the rollups (reporting/models.py) and reading them together with the facts that
are not rolled up yet.

A fact is folded in once, by id: each refresh takes the ids between the watermark and the
highest id seen at the previous refresh, so a writer's transaction that was still open then
has had a whole refresh interval to commit. (One open longer than that would be missed;
`rebuild_report_rollups` recomputes everything exactly.) Rows deleted later, such as an
erased contact's enrollments, stay counted until the next rebuild.

"Entered the step and converted" is counted for each pair (first visit of a step, first
award of a conversion) of an enrollment exactly once: by the award's refresh if the visit
is rolled up by then (including in the same refresh), else by the visit's refresh. Reads
apply the same rule to the not-yet-rolled-up tail, so rollup + tail equals the facts.
"""

import datetime

from django.db import connection, transaction

from conversions.models import ConversionAward, GoalAchievement
from journeys.models import Enrollment, StepVisit
from reporting.models import (
    ConversionDay,
    ConvertTimeDay,
    GoalTimeDay,
    RollupWatermark,
    StepConversionDay,
    StepDay,
    VersionDay,
)

ENROLLMENT = Enrollment._meta.db_table
VISIT = StepVisit._meta.db_table
AWARD = ConversionAward._meta.db_table
ACHIEVEMENT = GoalAchievement._meta.db_table
VERSION_DAY = VersionDay._meta.db_table
CONVERSION_DAY = ConversionDay._meta.db_table
STEP_DAY = StepDay._meta.db_table
STEP_CONVERSION_DAY = StepConversionDay._meta.db_table
CONVERT_TIME_DAY = ConvertTimeDay._meta.db_table
GOAL_TIME_DAY = GoalTimeDay._meta.db_table
ROLLUP_MODELS = (VersionDay, ConversionDay, StepDay, StepConversionDay, ConvertTimeDay, GoalTimeDay)
FACT_TABLES = {
    RollupWatermark.Fact.ENROLLMENT: ENROLLMENT,
    RollupWatermark.Fact.VISIT: VISIT,
    RollupWatermark.Fact.AWARD: AWARD,
    RollupWatermark.Fact.ACHIEVEMENT: ACHIEVEMENT,
}

# Durations (time to convert, time to a goal) are counted in log-spaced buckets of seconds,
# so that their percentiles add up across days and refreshes: bucket b holds durations d
# with 2^(b/8) <= d + 1 < 2^((b+1)/8). Each bucket is 9% wide, and a percentile read as its
# bucket's geometric middle is within 4.5% of the exact one (one second below 10 s).
BUCKETS_PER_DOUBLING = 8

FIRST_VISIT = (
    f"NOT EXISTS (SELECT 1 FROM {VISIT} v2 WHERE v2.enrollment_id = v.enrollment_id"
    " AND v2.step_key = v.step_key AND v2.seq < v.seq)"
)
FIRST_AWARD = (
    f"NOT EXISTS (SELECT 1 FROM {AWARD} a2 WHERE a2.enrollment_id = a.enrollment_id"
    " AND a2.conversion_id = a.conversion_id AND a2.id < a.id)"
)


def day_sql(column: str) -> str:
    if connection.vendor == "postgresql":
        return f"CAST(({column} AT TIME ZONE 'UTC') AS date)"
    return f"date({column})"


def seconds_sql(later: str, earlier: str) -> str:
    if connection.vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def bucket_sql(later: str, earlier: str) -> str:
    """The bucket of the duration from `earlier` to `later` (negative ones count as 0)."""
    seconds = seconds_sql(later, earlier)
    clamped = f"(CASE WHEN {seconds} > 0 THEN {seconds} ELSE 0 END)"
    return f"CAST(FLOOR({BUCKETS_PER_DOUBLING} * LN({clamped} + 1) / LN(2)) AS INTEGER)"


def bucket_seconds(bucket: int) -> float:
    """A bucket's geometric middle, in whole seconds: what a percentile in it reads as."""
    return float(round(2 ** ((bucket + 0.5) / BUCKETS_PER_DOUBLING) - 1))


def _execute(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _max_ids() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            " UNION ALL ".join(
                f"SELECT '{fact}', COALESCE(MAX(id), 0) FROM {table}"
                for fact, table in FACT_TABLES.items()
            )
        )
        return {fact: int(n) for fact, n in cursor.fetchall()}


def _watermarks(*, lock: bool) -> dict[str, RollupWatermark]:
    for fact in RollupWatermark.Fact.values:
        RollupWatermark.objects.get_or_create(fact=fact)
    qs = RollupWatermark.objects.all()
    if lock:
        qs = qs.select_for_update()
    return {w.fact: w for w in qs}


def rolled_up() -> dict[str, int]:
    """The watermark of each fact table (0 when nothing is rolled up); one query."""
    found = dict(RollupWatermark.objects.values_list("fact", "rolled_up"))
    return {fact: found.get(fact, 0) for fact in RollupWatermark.Fact.values}


def _upsert(table: str, keys: str, counters: list[str], select_sql: str, params: list) -> None:
    columns = ", ".join([keys, *counters])
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counters)
    _execute(
        f"INSERT INTO {table} ({columns}) {select_sql} ON CONFLICT ({keys}) DO UPDATE SET {updates}",
        params,
    )


def _fold(
    *,
    enrollments: tuple[int, int],
    visits: tuple[int, int],
    awards: tuple[int, int],
    achievements: tuple[int, int],
):
    """Add the facts with ids in each (after, up_to] range to the rollups."""
    day = day_sql("e.started_at")
    _upsert(
        CONVERT_TIME_DAY, "conversion_id, version_id, day, bucket", ["converted"],
        f"""SELECT a.conversion_id, e.version_id, {day}, {bucket_sql("a.awarded_at", "e.started_at")},
                   COUNT(*)
            FROM {AWARD} a JOIN {ENROLLMENT} e ON e.id = a.enrollment_id
            WHERE a.id > %s AND a.id <= %s AND {FIRST_AWARD}
            GROUP BY a.conversion_id, e.version_id, {day},
                     {bucket_sql("a.awarded_at", "e.started_at")}""",
        list(awards),
    )  # fmt: skip
    _upsert(
        GOAL_TIME_DAY, "goal_id, version_id, day, bucket", ["achieved"],
        f"""SELECT ga.goal_id, e.version_id, {day}, {bucket_sql("ga.achieved_at", "e.started_at")},
                   COUNT(*)
            FROM {ACHIEVEMENT} ga JOIN {ENROLLMENT} e ON e.id = ga.enrollment_id
            WHERE ga.id > %s AND ga.id <= %s
            GROUP BY ga.goal_id, e.version_id, {day},
                     {bucket_sql("ga.achieved_at", "e.started_at")}""",
        list(achievements),
    )  # fmt: skip
    _upsert(
        VERSION_DAY, "version_id, day, held_out", ["enrolled"],
        f"""SELECT e.version_id, {day}, e.held_out, COUNT(*) FROM {ENROLLMENT} e
            WHERE e.id > %s AND e.id <= %s GROUP BY e.version_id, {day}, e.held_out""",
        list(enrollments),
    )  # fmt: skip
    _upsert(
        CONVERSION_DAY, "conversion_id, version_id, day, held_out", ["converted", "value"],
        f"""SELECT a.conversion_id, e.version_id, {day}, e.held_out,
                   SUM(CASE WHEN {FIRST_AWARD} THEN 1 ELSE 0 END), SUM(a.value)
            FROM {AWARD} a JOIN {ENROLLMENT} e ON e.id = a.enrollment_id
            WHERE a.id > %s AND a.id <= %s
            GROUP BY a.conversion_id, e.version_id, {day}, e.held_out""",
        list(awards),
    )  # fmt: skip
    _upsert(
        STEP_DAY, "version_id, day, step_key", ["entered"],
        f"""SELECT e.version_id, {day}, v.step_key, COUNT(*)
            FROM {VISIT} v JOIN {ENROLLMENT} e ON e.id = v.enrollment_id
            WHERE v.id > %s AND v.id <= %s AND {FIRST_VISIT}
            GROUP BY e.version_id, {day}, v.step_key""",
        list(visits),
    )  # fmt: skip
    # Pairs whose award is folded in now, with a visit folded in by now.
    _upsert(
        STEP_CONVERSION_DAY, "conversion_id, version_id, day, step_key", ["converted"],
        f"""SELECT a.conversion_id, e.version_id, {day}, v.step_key, COUNT(*)
            FROM {AWARD} a JOIN {ENROLLMENT} e ON e.id = a.enrollment_id
            JOIN {VISIT} v ON v.enrollment_id = a.enrollment_id AND v.id <= %s
            WHERE a.id > %s AND a.id <= %s AND {FIRST_AWARD} AND {FIRST_VISIT}
            GROUP BY a.conversion_id, e.version_id, {day}, v.step_key""",
        [visits[1], *awards],
    )  # fmt: skip
    # Pairs whose visit is folded in now, with an award folded in before now.
    _upsert(
        STEP_CONVERSION_DAY, "conversion_id, version_id, day, step_key", ["converted"],
        f"""SELECT a.conversion_id, e.version_id, {day}, v.step_key, COUNT(*)
            FROM {VISIT} v JOIN {ENROLLMENT} e ON e.id = v.enrollment_id
            JOIN {AWARD} a ON a.enrollment_id = v.enrollment_id AND a.id <= %s
            WHERE v.id > %s AND v.id <= %s AND {FIRST_VISIT} AND {FIRST_AWARD}
            GROUP BY a.conversion_id, e.version_id, {day}, v.step_key""",
        [awards[0], *visits],
    )  # fmt: skip


def refresh_rollups() -> dict[str, int]:
    """Fold the facts seen at the previous refresh into the rollups. Locks the watermark
    rows, so concurrent refreshes run one after the other; safe to run at any time."""
    with transaction.atomic():
        marks = _watermarks(lock=True)
        latest = _max_ids()
        ranges = {
            fact: (marks[fact].rolled_up, max(marks[fact].rolled_up, marks[fact].seen))
            for fact in FACT_TABLES
        }
        _fold(
            enrollments=ranges[RollupWatermark.Fact.ENROLLMENT],
            visits=ranges[RollupWatermark.Fact.VISIT],
            awards=ranges[RollupWatermark.Fact.AWARD],
            achievements=ranges[RollupWatermark.Fact.ACHIEVEMENT],
        )
        for fact, mark in marks.items():
            mark.rolled_up = ranges[fact][1]
            mark.seen = latest[fact]
            mark.save(update_fields=["rolled_up", "seen", "updated_at"])
        return {fact: mark.rolled_up for fact, mark in marks.items()}


def rebuild_rollups() -> dict[str, int]:
    """Recompute every rollup from the facts, up to the highest ids now; one transaction."""
    with transaction.atomic():
        marks = _watermarks(lock=True)
        for model in ROLLUP_MODELS:
            model.objects.all().delete()
        latest = _max_ids()
        _fold(
            enrollments=(0, latest[RollupWatermark.Fact.ENROLLMENT]),
            visits=(0, latest[RollupWatermark.Fact.VISIT]),
            awards=(0, latest[RollupWatermark.Fact.AWARD]),
            achievements=(0, latest[RollupWatermark.Fact.ACHIEVEMENT]),
        )
        for fact, mark in marks.items():
            mark.rolled_up = mark.seen = latest[fact]
            mark.save(update_fields=["rolled_up", "seen", "updated_at"])
        return latest


def day_param(day: datetime.date):
    return connection.ops.adapt_datefield_value(day)
