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

import hashlib
import json
from collections import defaultdict

from django.db import connection, transaction

from conversions.models import ConversionAward, GoalAchievement
from journeys.models import DeliveryEvent, Enrollment, StepVisit
from reporting import message_rollups
from reporting.models import (
    ConversionDay,
    ConvertTimeDay,
    GoalTimeDay,
    PathConversionDay,
    PathDay,
    RollupWatermark,
    StepConversionDay,
    StepDay,
    VersionDay,
)
from reporting.sql import (
    KEY_SEPARATOR,
    day_param,
    day_sql,
    execute,
    fetch,
    in_list,
    joined_keys_sql,
    seconds_sql,
    utc_day,
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
PATH_DAY = PathDay._meta.db_table
PATH_CONVERSION_DAY = PathConversionDay._meta.db_table
ROLLUP_MODELS = (
    VersionDay, ConversionDay, StepDay, StepConversionDay, ConvertTimeDay, GoalTimeDay, PathDay,
    PathConversionDay,
)  # fmt: skip
FACT_TABLES = {
    RollupWatermark.Fact.ENROLLMENT: ENROLLMENT,
    RollupWatermark.Fact.VISIT: VISIT,
    RollupWatermark.Fact.AWARD: AWARD,
    RollupWatermark.Fact.ACHIEVEMENT: ACHIEVEMENT,
    RollupWatermark.Fact.MESSAGE_EVENT: DeliveryEvent._meta.db_table,
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


def bucket_sql(later: str, earlier: str) -> str:
    """The bucket of the duration from `earlier` to `later` (negative ones count as 0)."""
    seconds = seconds_sql(later, earlier)
    clamped = f"(CASE WHEN {seconds} > 0 THEN {seconds} ELSE 0 END)"
    return f"CAST(FLOOR({BUCKETS_PER_DOUBLING} * LN({clamped} + 1) / LN(2)) AS INTEGER)"


def bucket_seconds(bucket: int) -> float:
    """A bucket's geometric middle, in whole seconds: what a percentile in it reads as."""
    return float(round(2 ** ((bucket + 0.5) / BUCKETS_PER_DOUBLING) - 1))


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
    execute(
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


# Paths ------------------------------------------------------------------------------------
#
# An enrollment's path as of a visit watermark is the keys of its visits up to it, in seq
# order (the engine appends to Enrollment.path and writes the visit together). Folding a
# range moves each enrollment touched by it (new, newly visited, newly awarded) from what it
# counted for at the old watermarks to what it counts for at the new ones; reads move the
# not-rolled-up tail the same way, so rollup + tail equals the facts.

# Ids of enrollments whose visits and awards are read per round trip (an IN list).
PATH_CHUNK = 20_000
INFINITY = 2**62


def path_hash(path: tuple[str, ...]) -> str:
    return hashlib.sha256(KEY_SEPARATOR.join(path).encode()).hexdigest()[:32]


Marks = tuple[int, int, int]  # enrollment, visit, award ids counted up to


class PathMoves:
    """Signed changes of PathDay and PathConversionDay counts."""

    def __init__(self):
        self.enrolled: dict[tuple, int] = defaultdict(int)  # (version, day, hash)
        self.converted: dict[tuple, int] = defaultdict(int)  # (conversion, version, day, hash)
        self.paths: dict[str, tuple[str, ...]] = {}

    def _key(self, path: tuple[str, ...]) -> str:
        key = path_hash(path)
        self.paths[key] = path
        return key

    def count(self, version_id, day, path, conversions, sign: int) -> None:
        key = self._key(path)
        self.enrolled[(version_id, day, key)] += sign
        for conversion_id in conversions:
            self.converted[(conversion_id, version_id, day, key)] += sign

    def add_enrolled(self, version_id, day, path, n: int) -> None:
        self.enrolled[(version_id, day, self._key(path))] += n

    def add_converted(self, conversion_id, version_id, day, path, n: int) -> None:
        self.converted[(conversion_id, version_id, day, self._key(path))] += n


def path_moves(enrollments: list[tuple], *, before: Marks | None, after: Marks) -> PathMoves:
    """The moves of these treated enrollments (id, version_id, started_at) from what they
    counted for at `before` (None: nothing) to what they count for at `after`."""
    moves = PathMoves()
    ids = [row[0] for row in enrollments]
    visits: dict[int, list] = defaultdict(list)
    awards: dict[int, list] = defaultdict(list)
    # At least one round (IN (0) when nothing was touched): a report takes the same
    # number of queries whatever the data.
    for start in range(0, max(len(ids), 1), PATH_CHUNK):
        chunk = ids[start : start + PATH_CHUNK] or [0]
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT enrollment_id, id, step_key FROM {VISIT}"
                f" WHERE enrollment_id IN ({in_list(chunk)}) AND id <= %s ORDER BY seq, id",
                [*chunk, after[1]],
            )
            for enrollment_id, visit_id, key in cursor.fetchall():
                visits[enrollment_id].append((visit_id, key))
            cursor.execute(
                f"SELECT enrollment_id, id, conversion_id FROM {AWARD}"
                f" WHERE enrollment_id IN ({in_list(chunk)}) AND id <= %s",
                [*chunk, after[2]],
            )
            for enrollment_id, award_id, conversion_id in cursor.fetchall():
                awards[enrollment_id].append((award_id, conversion_id))
    for enrollment_id, version_id, started_at in enrollments:
        day = utc_day(started_at)
        for marks, sign in ((before, -1), (after, 1)):
            if marks is None or enrollment_id > marks[0]:
                continue
            path = tuple(key for visit_id, key in visits[enrollment_id] if visit_id <= marks[1])
            conversions = {c for award_id, c in awards[enrollment_id] if award_id <= marks[2]}
            moves.count(version_id, day, path, conversions, sign)
    return moves


def touched_enrollments(
    *, enrollments: tuple[int, int], visits: tuple[int, int], awards: tuple[int, int],
    version_ids: list[int] | None = None,
) -> list[tuple]:  # fmt: skip
    """Treated enrollments (id, version_id, started_at) that are new in the enrollment range
    or have a visit or an award in theirs, optionally of these versions only."""
    versions, params = "", []
    if version_ids is not None:
        versions = f" AND x.version_id IN ({in_list(version_ids or [0])})"
        params = list(version_ids or [0])
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT e.id, e.version_id, e.started_at FROM {ENROLLMENT} e WHERE e.id IN (
                    SELECT x.id FROM {ENROLLMENT} x WHERE x.id > %s AND x.id <= %s{versions}
                    UNION SELECT x.enrollment_id FROM {VISIT} x
                        WHERE x.id > %s AND x.id <= %s{versions}
                    UNION SELECT x.enrollment_id FROM {AWARD} x
                        WHERE x.id > %s AND x.id <= %s{versions})
                AND e.held_out = %s""",
            [*enrollments, *params, *visits, *params, *awards, *params, False],
        )
        return cursor.fetchall()


def _apply_path_moves(moves: PathMoves) -> None:
    with connection.cursor() as cursor:
        rows = [
            (version_id, day_param(day), key, _json(moves.paths[key]), n)
            for (version_id, day, key), n in moves.enrolled.items()
            if n
        ]
        if rows:
            cursor.executemany(
                f"INSERT INTO {PATH_DAY} (version_id, day, path_hash, path, enrolled)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (version_id, day, path_hash)"
                f" DO UPDATE SET enrolled = {PATH_DAY}.enrolled + excluded.enrolled",
                rows,
            )
        rows = [
            (conversion_id, version_id, day_param(day), key, n)
            for (conversion_id, version_id, day, key), n in moves.converted.items()
            if n
        ]
        if rows:
            cursor.executemany(
                f"INSERT INTO {PATH_CONVERSION_DAY}"
                " (conversion_id, version_id, day, path_hash, converted)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (conversion_id, version_id, day, path_hash)"
                f" DO UPDATE SET converted = {PATH_CONVERSION_DAY}.converted + excluded.converted",
                rows,
            )


def _json(path: tuple[str, ...]) -> str:
    return json.dumps(list(path))


def _fold_paths(ranges: dict[str, tuple[int, int]]) -> None:
    e, v, a = (
        ranges[RollupWatermark.Fact.ENROLLMENT],
        ranges[RollupWatermark.Fact.VISIT],
        ranges[RollupWatermark.Fact.AWARD],
    )
    before, after = (e[0], v[0], a[0]), (e[1], v[1], a[1])
    if before == after:
        return
    if before == (0, 0, 0):
        _apply_path_moves(_counted_paths(after))
        return
    touched = touched_enrollments(enrollments=e, visits=v, awards=a)
    _apply_path_moves(path_moves(touched, before=before, after=after))


# Enrollment ids counted per statement in a rebuild: each sorts this many enrollments' visits.
REBUILD_CHUNK = 500_000


def _counted_paths(after: Marks) -> PathMoves:
    """Every treated enrollment up to the marks, counted on its path, in SQL: the database
    joins each enrollment's step keys and groups them, and only the distinct (version, day,
    path) rows come back (at 10 M enrollments, folding them one by one in Python took over
    an hour)."""
    moves = PathMoves()
    last_enrollment, last_visit, last_award = after
    for low in range(0, last_enrollment, REBUILD_CHUNK):
        high = min(low + REBUILD_CHUNK, last_enrollment)
        rows = fetch(
            f"""WITH p AS ({joined_keys_sql(VISIT)}),
                e AS (SELECT e.id, e.version_id, {day_sql("e.started_at")} AS day, p.joined
                      FROM {ENROLLMENT} e LEFT JOIN p ON p.enrollment_id = e.id
                      WHERE e.id > %s AND e.id <= %s AND e.held_out = %s)
                SELECT CAST(NULL AS bigint), version_id, day, joined, COUNT(*) FROM e
                    GROUP BY version_id, day, joined
                UNION ALL
                SELECT a.conversion_id, e.version_id, e.day, e.joined, COUNT(*) FROM e
                    JOIN (SELECT DISTINCT enrollment_id, conversion_id FROM {AWARD}
                          WHERE enrollment_id > %s AND enrollment_id <= %s AND id <= %s) a
                      ON a.enrollment_id = e.id
                    GROUP BY a.conversion_id, e.version_id, e.day, e.joined""",
            [low, high, last_visit, low, high, False, low, high, last_award],
        )
        for conversion_id, version_id, day, joined, n in rows:
            path = tuple(joined.split(KEY_SEPARATOR)) if joined is not None else ()
            if conversion_id is None:
                moves.add_enrolled(version_id, utc_day(day), path, n)
            else:
                moves.add_converted(conversion_id, version_id, utc_day(day), path, n)
    return moves


# A fact table whose number of rows differs from what the planner last saw by more than
# this share (and by more than STALE_ROWS) is analysed before a refresh or a report. Updates
# do not count: the engine rewrites every enrollment at each step, and the row count is what
# the plans below went wrong on.
STALE_SHARE = 0.2
STALE_ROWS = 10_000


def analyze_grown_facts() -> list[str]:
    """ANALYZE the fact tables that grew or shrank a lot since the planner last looked at
    them; returns their names. PostgreSQL only.

    The refresh and the reads of the tail pair facts up with correlated NOT EXISTS probes.
    Planned with statistics from when a table was nearly empty (a new installation, a
    burst), each probe becomes a scan of the whole table: under the engine benchmark a
    report call took 88 s and a refresh as long. Autovacuum's own analyse comes too late
    under that load (once a minute at best, and behind the vacuums); this one runs every
    refresh, and costs a sample of each table (a few hundred milliseconds)."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
               WHERE s.relname = ANY(%s)
                 AND ABS(s.n_live_tup - GREATEST(c.reltuples, 0)) > %s
                 AND ABS(s.n_live_tup - GREATEST(c.reltuples, 0))
                     > %s * GREATEST(c.reltuples, 0)""",
            [list(FACT_TABLES.values()), STALE_ROWS, STALE_SHARE],
        )
        stale = [name for (name,) in cursor.fetchall()]
        for name in stale:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(name)}")
    return stale


def refresh_rollups() -> dict[str, int]:
    """Fold the facts seen at the previous refresh into the rollups, after analysing the
    fact tables that have grown. Locks the watermark rows, so concurrent refreshes run one
    after the other; safe to run at any time."""
    analyze_grown_facts()
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
        _fold_paths(ranges)
        message_rollups.fold(
            events=ranges[RollupWatermark.Fact.MESSAGE_EVENT],
            awards=ranges[RollupWatermark.Fact.AWARD],
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
        _fold_paths({fact: (0, latest[fact]) for fact in FACT_TABLES})
        message_rollups.rebuild(last_enrollment_id=latest[RollupWatermark.Fact.ENROLLMENT])
        for fact, mark in marks.items():
            mark.rolled_up = mark.seen = latest[fact]
            mark.save(update_fields=["rolled_up", "seen", "updated_at"])
        return latest
