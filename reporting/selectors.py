"""The report's reads: one aggregate query per panel over the facts the engine writes
(enrollments, step visits, outbox messages, goal achievements, conversion awards).

Each panel is a single SQL statement (CTEs and window functions both SQLite and PostgreSQL
run) so that its cost does not grow with the number of versions, steps or days; the only
vendor-specific parts are date arithmetic, in `reporting.sql`.
The cohorts (comparison, sample ratio, daily chart), the step funnel, goals and time to
convert read the rollups plus the facts not rolled up yet (reporting/rollups.py); each also
has a `*_from_facts` twin that reads the facts alone, which tests and the benchmark hold
them to.

Definitions used throughout:
- the report's enrollments: those of the chosen versions (published ones only) started in
  the date range (UTC days, both ends included);
- converted: an enrollment with at least one award of the chosen conversion; value: the sum
  of those awards' values; held-out enrollments count in their version (intent to treat) and
  are reported apart as the holdout;
- percentiles are nearest-rank (the smallest duration with at least p% of the others at or
  below it), counted in log-spaced buckets of seconds (rollups.BUCKETS_PER_DOUBLING) so
  that they add up across days and refreshes: each reads as its bucket's middle, within
  4.5% of the exact value, the same on every database.
"""

import datetime
import json
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Exists, F, OuterRef

from conversions.models import Conversion, ConversionAward, Goal, GoalAchievement, Revision
from journeys.models import Enrollment, Journey, JourneyVersion, OutboxMessage, StepVisit
from reporting import message_rollups, rollups, sql, stats
from reporting.models import PathDay, RollupWatermark

MESSAGE_STEP_TYPES = ("send_email", "send_sms")
PATH_LIMIT = 10
PATH_CONTACTS_LIMIT = 200

ENROLLMENT = Enrollment._meta.db_table
AWARD = ConversionAward._meta.db_table
VISIT = StepVisit._meta.db_table
ACHIEVEMENT = GoalAchievement._meta.db_table


# Which message a conversion is credited to: the last one sent to the enrollment before it,
# the last one opened or the last one clicked (docs/reporting.md, Messages).
ATTRIBUTIONS = message_rollups.ATTRIBUTIONS

# The range a report filter may name. Day arithmetic (the day after `end`, a chart's last
# day) must stay inside what Python's dates hold, and year 9999 leaves no room for it.
REPORT_YEARS = (1, 9998)


class ReportInputError(Exception):
    """A report asked for something that does not exist; `field` names the parameter."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class VersionInfo:
    id: int
    number: int
    state: str
    split_traffic: int | None  # its share in its last split, kept after the split ends
    split_with_id: int | None
    published_at: datetime.datetime | None
    retired_at: datetime.datetime | None
    steps: tuple[tuple[str, str], ...]  # (key, type) in definition order
    # (key, name) of the steps the marketer named: reports show the name, the key is the id.
    step_names: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReportContext:
    journey: Journey
    conversion: Conversion
    conversions: tuple[Conversion, ...]
    versions: tuple[VersionInfo, ...]  # in the report, by number
    all_versions: tuple[VersionInfo, ...]  # every published version, for the filter form
    baseline: int
    start: datetime.date | None = None
    end: datetime.date | None = None
    attribution: str = "last_sent"  # one of ATTRIBUTIONS: which message a conversion credits

    @property
    def version_ids(self) -> list[int]:
        return [v.id for v in self.versions]

    def by_id(self, version_id: int) -> VersionInfo:
        return next(v for v in self.versions if v.id == version_id)

    def by_number(self, number: int) -> VersionInfo:
        return next(v for v in self.versions if v.number == number)


def report_context(
    *,
    journey: Journey,
    conversion_key: str | None = None,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    versions: list[int] | None = None,
    baseline: int | None = None,
    attribution: str | None = None,
) -> ReportContext:
    """Resolve what a report is about (two queries: versions, conversions); raises
    ReportInputError naming the parameter when the conversion or a version does not exist,
    or a date is outside REPORT_YEARS or the end is before the start. Every route reading a
    report (API, page, CSV, panels, path contacts) comes through here, so this is the one
    place filters are checked. On PostgreSQL it first makes sure the planner's statistics
    of the fact tables are not far behind them (rollups.analyze_grown_facts: one query, and
    an ANALYZE when a table has grown by a fifth), so that no report is planned as if the
    facts it pairs up were a handful of rows."""
    rollups.analyze_grown_facts()
    published = tuple(
        VersionInfo(
            id=v.id,
            number=v.number,
            state=v.state,
            split_traffic=v.split_traffic,
            split_with_id=v.split_with_id,
            published_at=v.published_at,
            retired_at=v.retired_at,
            steps=tuple(
                (s.get("key", ""), s.get("type", ""))
                for s in (v.definition or {}).get("steps", [])
                if isinstance(s, dict)
            ),
            step_names=tuple(
                (s["key"], s["name"])
                for s in (v.definition or {}).get("steps", [])
                if isinstance(s, dict) and s.get("key") and s.get("name")
            ),
        )
        for v in JourneyVersion.objects.filter(journey=journey, published_at__isnull=False)
        .order_by("number")
        .only(
            "id",
            "number",
            "state",
            "split_traffic",
            "split_with_id",
            "published_at",
            "retired_at",
            "definition",
        )
    )
    conversions = tuple(
        Conversion.objects.filter(journey=journey).order_by(
            F("archived_at").asc(nulls_first=True), "position", "key"
        )  # archived ones last: the default is the first one still in use
    )
    if conversion_key is None:
        if not conversions:
            raise ReportInputError("conversion", "This journey has no conversions to report on.")
        conversion = conversions[0]
    else:
        conversion = next((c for c in conversions if c.key == conversion_key), None)
        if conversion is None:
            raise ReportInputError(
                "conversion", f"Journey '{journey.key}' has no conversion '{conversion_key}'."
            )
    for name, day in (("start", start), ("end", end)):
        if day is not None and not REPORT_YEARS[0] <= day.year <= REPORT_YEARS[1]:
            raise ReportInputError(
                name,
                f"Give a date from year {REPORT_YEARS[0]} to {REPORT_YEARS[1]}, not {day}.",
            )
    if start and end and end < start:
        raise ReportInputError("end", "The end date is before the start date.")
    if attribution is not None and attribution not in ATTRIBUTIONS:
        raise ReportInputError(
            "attribution", f"Choose attribution {', '.join(ATTRIBUTIONS)}, not {attribution!r}."
        )
    chosen = published
    if versions:
        known = {v.number for v in published}
        unknown = sorted(set(versions) - known)
        if unknown:
            raise ReportInputError(
                "versions",
                f"Journey '{journey.key}' has no published version {', '.join(map(str, unknown))}.",
            )
        chosen = tuple(v for v in published if v.number in set(versions))
    if baseline is None:
        baseline = chosen[0].number if chosen else 0
    elif baseline not in {v.number for v in chosen}:
        raise ReportInputError(
            "baseline", f"Version {baseline} is not a published version in this report."
        )
    return ReportContext(
        journey=journey,
        conversion=conversion,
        conversions=conversions,
        versions=chosen,
        all_versions=published,
        baseline=baseline,
        start=start,
        end=end,
        attribution=attribution or ATTRIBUTIONS[0],
    )


# Split detection -------------------------------------------------------------------------


def comparison_kind(a: VersionInfo, b: VersionInfo) -> str:
    """Randomized when one version was published to share new enrollments with the other on
    a random split and both were live at the same time; sequential otherwise."""
    return stats.RANDOMIZED if split_window(a, b) else stats.SEQUENTIAL


def split_window(
    a: VersionInfo, b: VersionInfo
) -> tuple[datetime.datetime, datetime.datetime | None] | None:
    if not (a.split_with_id == b.id or b.split_with_id == a.id):
        return None
    if a.published_at is None or b.published_at is None:
        return None
    begin = max(a.published_at, b.published_at)
    ends = [t for t in (a.retired_at, b.retired_at) if t is not None]
    end = min(ends) if ends else None
    if end is not None and end <= begin:
        return None
    return begin, end


def expected_shares(base: VersionInfo, other: VersionInfo) -> list[float] | None:
    """The configured split (baseline share, other share), from the version that joined; its
    share is kept after the split has ended, so a finished test keeps its check."""
    joiner, stayer = (other, base) if other.split_with_id == base.id else (base, other)
    share = joiner.split_traffic
    if share is None or not 0 < share < 100:
        return None
    shares = {joiner.id: share, stayer.id: 100 - share}
    return [shares[base.id], shares[other.id]]


# SQL building blocks ---------------------------------------------------------------------


_day = sql.day_sql


def _day_start(day: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=datetime.UTC)


def _enrollment_where(ctx: ReportContext, alias: str = "e") -> tuple[str, list]:
    return _message_scope(ctx).where(alias)


def _tail_versions(ctx: ReportContext, alias: str) -> tuple[str, list]:
    """The fact's own copy of its enrollment's version (visits, awards and achievements
    carry one) filtered to the report's: redundant with the enrollment's, but it lets the
    planner start a not-rolled-up tail from its few fact rows and reach enrollments by key,
    instead of reading every enrollment of the journey to join them (seconds at a million)."""
    ids = ctx.version_ids or [0]
    return f"{alias}.version_id IN ({', '.join(['%s'] * len(ids))})", list(ids)


@dataclass(frozen=True)
class Percentiles:
    count: int
    median: float | None  # seconds
    p90: float | None


def _money(value) -> float:
    return round(float(value or 0), 2)


# Panels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    enrolled: int = 0
    converted: int = 0
    value: float = 0.0

    @property
    def rate(self) -> float | None:
        return stats.rate(self.converted, self.enrolled)

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(
            self.enrolled + other.enrolled,
            self.converted + other.converted,
            round(self.value + other.value, 2),
        )


@dataclass(frozen=True)
class Cohort:
    """Enrollments of one version, held out or not, started on one UTC day."""

    version_id: int
    held_out: bool
    day: datetime.date
    counts: Counts


def _cohorts(rows) -> list[Cohort]:
    return [
        Cohort(
            version_id,
            bool(held_out),
            datetime.date.fromisoformat(day) if isinstance(day, str) else day,
            Counts(int(enrolled), int(converted), _money(value)),
        )
        for version_id, held_out, day, enrolled, converted, value in rows
        if enrolled or converted or value
    ]


def cohorts_from_facts(ctx: ReportContext) -> list[Cohort]:
    """Enrolled, converted and value per version, held-out flag and start day, straight
    from the facts; one query. `cohorts` must equal."""
    where, params = _enrollment_where(ctx)
    day = _day("e.started_at")
    rows = sql.fetch(
        f"""
        WITH a AS (
            SELECT enrollment_id, SUM(value) AS v FROM {AWARD}
            WHERE conversion_id = %s GROUP BY enrollment_id
        )
        SELECT e.version_id, e.held_out, {day}, COUNT(*), COUNT(a.enrollment_id),
               COALESCE(SUM(a.v), 0)
        FROM {ENROLLMENT} e LEFT JOIN a ON a.enrollment_id = e.id
        WHERE {where}
        GROUP BY e.version_id, e.held_out, {day}
        """,
        [ctx.conversion.id, *params],
    )
    return sorted(_cohorts(rows), key=_cohort_order)


def _rollup_where(ctx: ReportContext, alias: str = "r") -> tuple[str, list]:
    ids = ctx.version_ids or [0]
    clauses = [f"{alias}.version_id IN ({', '.join(['%s'] * len(ids))})"]
    params: list = list(ids)
    if ctx.start:
        clauses.append(f"{alias}.day >= %s")
        params.append(sql.day_param(ctx.start))
    if ctx.end:
        clauses.append(f"{alias}.day <= %s")
        params.append(sql.day_param(ctx.end))
    return " AND ".join(clauses), params


def cohorts(ctx: ReportContext, marks: dict | None = None) -> list[Cohort]:
    """Enrolled, converted and value per version, held-out flag and start day: the rollups
    plus the facts not rolled up yet; one query (two without the watermarks `marks`)."""
    marks = marks or rollups.rolled_up()
    where, params = _enrollment_where(ctx)
    rwhere, rparams = _rollup_where(ctx)
    award_versions, award_params = _tail_versions(ctx, "a")
    day = _day("e.started_at")
    rows = sql.fetch(
        f"""
        SELECT x.version_id, x.held_out, x.day, SUM(x.enrolled), SUM(x.converted), SUM(x.value)
        FROM (
            SELECT r.version_id, r.held_out, r.day, r.enrolled, 0 AS converted, 0 AS value
            FROM {rollups.VERSION_DAY} r WHERE {rwhere}
            UNION ALL
            SELECT r.version_id, r.held_out, r.day, 0, r.converted, r.value
            FROM {rollups.CONVERSION_DAY} r WHERE r.conversion_id = %s AND {rwhere}
            UNION ALL
            SELECT e.version_id, e.held_out, {day}, 1, 0, 0
            FROM {ENROLLMENT} e WHERE e.id > %s AND {where}
            UNION ALL
            SELECT e.version_id, e.held_out, {day}, 0,
                   CASE WHEN {rollups.FIRST_AWARD} THEN 1 ELSE 0 END, a.value
            FROM {AWARD} a JOIN {ENROLLMENT} e ON e.id = a.enrollment_id
            WHERE a.id > %s AND a.conversion_id = %s AND {award_versions} AND {where}
        ) x
        GROUP BY x.version_id, x.held_out, x.day
        """,
        [
            *rparams,
            ctx.conversion.id,
            *rparams,
            marks["enrollment"],
            *params,
            marks["award"],
            ctx.conversion.id,
            *award_params,
            *params,
        ],
    )
    return sorted(_cohorts(rows), key=_cohort_order)


def _cohort_order(c: Cohort):
    return (c.version_id, c.held_out, c.day)


@dataclass(frozen=True)
class VersionCounts:
    version: int
    treated: Counts
    held_out: Counts
    # While side by side with the baseline on a random split: (this version's enrollments,
    # the baseline's), over the whole days of the split.
    in_split: tuple[int, int] | None = None

    @property
    def total(self) -> Counts:
        return self.treated + self.held_out


def split_begins(ctx: ReportContext) -> dict[int, datetime.datetime]:
    """For each version randomized against the baseline: when they began side by side."""
    base = ctx.by_number(ctx.baseline) if ctx.versions else None
    begins = {}
    for v in ctx.versions:
        window = split_window(base, v) if base and v.id != base.id else None
        if window:
            begins[v.number] = window[0].astimezone(datetime.UTC)
    return begins


def split_days(ctx: ReportContext) -> dict[int, tuple[datetime.date, datetime.date | None]]:
    """For each version randomized against the baseline: the whole UTC days both took
    enrollments side by side, as [first, end)."""
    base = ctx.by_number(ctx.baseline) if ctx.versions else None
    days = {}
    for v in ctx.versions:
        window = split_window(base, v) if base and v.id != base.id else None
        if window:
            begin, end = window
            midnight = begin.astimezone(datetime.UTC).time() == datetime.time()
            first = begin.date() if midnight else begin.date() + datetime.timedelta(days=1)
            days[v.number] = (first, end.date() if end else None)
    return days


def version_counts(ctx: ReportContext, rows: list[Cohort]) -> list[VersionCounts]:
    """Per version: enrolled, converted and value, held-out apart, and the enrollments
    taken side by side with the baseline, from the cohorts."""
    base = ctx.by_number(ctx.baseline) if ctx.versions else None
    treated: dict[int, Counts] = defaultdict(Counts)
    held: dict[int, Counts] = defaultdict(Counts)
    for c in rows:
        target = held if c.held_out else treated
        target[c.version_id] += c.counts
    windows = split_days(ctx)

    def enrolled_within(version_id, first, end):
        return sum(
            c.counts.enrolled
            for c in rows
            if c.version_id == version_id and c.day >= first and (end is None or c.day < end)
        )

    result = []
    for v in ctx.versions:
        in_split = None
        if v.number in windows:
            first, end = windows[v.number]
            in_split = (enrolled_within(v.id, first, end), enrolled_within(base.id, first, end))
        result.append(VersionCounts(v.number, treated[v.id], held[v.id], in_split))
    return result


@dataclass(frozen=True)
class DayCounts:
    day: datetime.date
    version: int
    enrolled: int
    converted: int


def daily_counts(ctx: ReportContext, rows: list[Cohort]) -> list[DayCounts]:
    """Per version and UTC start day (a cohort): enrollments started, and those of them
    that converted so far, from the cohorts."""
    numbers = {v.id: v.number for v in ctx.versions}
    merged: dict[tuple, Counts] = defaultdict(Counts)
    for c in rows:
        merged[(c.day, numbers[c.version_id])] += c.counts
    return [
        DayCounts(day, version, counts.enrolled, counts.converted)
        for (day, version), counts in sorted(merged.items())
    ]


@dataclass(frozen=True)
class StepCounts:
    version: int
    step: str
    type: str
    entered: int
    converted: int


def step_funnel_from_facts(ctx: ReportContext) -> list[StepCounts]:
    """Per version and step, straight from the facts; one query. The reference
    `step_funnel` must equal."""
    where, params = _enrollment_where(ctx)
    rows = sql.fetch(
        f"""
        WITH a AS (SELECT DISTINCT enrollment_id FROM {AWARD} WHERE conversion_id = %s)
        SELECT e.version_id, v.step_key, COUNT(DISTINCT v.enrollment_id),
               COUNT(DISTINCT a.enrollment_id)
        FROM {VISIT} v
        JOIN {ENROLLMENT} e ON e.id = v.enrollment_id
        LEFT JOIN a ON a.enrollment_id = v.enrollment_id
        WHERE {where}
        GROUP BY e.version_id, v.step_key
        """,
        [ctx.conversion.id, *params],
    )
    return _funnel_result(ctx, rows)


def step_funnel(ctx: ReportContext, marks: dict | None = None) -> list[StepCounts]:
    """Per version and step of its definition: enrollments that entered the step, and those
    of them that converted; steps line up across versions by key. The rollups plus the facts
    not rolled up yet (see reporting/rollups.py for why each pair counts once); one query
    (two without the watermarks `marks`)."""
    marks = marks or rollups.rolled_up()
    where, params = _enrollment_where(ctx)
    rwhere, rparams = _rollup_where(ctx)
    first_visit, first_award = rollups.FIRST_VISIT, rollups.FIRST_AWARD
    visit_versions, visit_params = _tail_versions(ctx, "v")
    award_versions, award_params = _tail_versions(ctx, "a")
    rows = sql.fetch(
        f"""
        SELECT x.version_id, x.step_key, SUM(x.entered), SUM(x.converted)
        FROM (
            SELECT r.version_id, r.step_key, r.entered, 0 AS converted
            FROM {rollups.STEP_DAY} r WHERE {rwhere}
            UNION ALL
            SELECT r.version_id, r.step_key, 0, r.converted
            FROM {rollups.STEP_CONVERSION_DAY} r WHERE r.conversion_id = %s AND {rwhere}
            UNION ALL
            SELECT e.version_id, v.step_key, 1, 0
            FROM {VISIT} v JOIN {ENROLLMENT} e ON e.id = v.enrollment_id
            WHERE v.id > %s AND {visit_versions} AND {first_visit} AND {where}
            UNION ALL
            SELECT e.version_id, v.step_key, 0, 1
            FROM {VISIT} v JOIN {ENROLLMENT} e ON e.id = v.enrollment_id
            JOIN {AWARD} a ON a.enrollment_id = v.enrollment_id AND a.conversion_id = %s
                 AND a.id <= %s
            WHERE v.id > %s AND {visit_versions} AND {first_visit} AND {first_award}
                  AND {where}
            UNION ALL
            SELECT e.version_id, v.step_key, 0, 1
            FROM {AWARD} a JOIN {ENROLLMENT} e ON e.id = a.enrollment_id
            JOIN {VISIT} v ON v.enrollment_id = a.enrollment_id
            WHERE a.id > %s AND a.conversion_id = %s AND {award_versions} AND {first_award}
                  AND {first_visit} AND {where}
        ) x
        GROUP BY x.version_id, x.step_key
        """,
        [
            *rparams,
            ctx.conversion.id,
            *rparams,
            marks["visit"],
            *visit_params,
            *params,
            ctx.conversion.id,
            marks["award"],
            marks["visit"],
            *visit_params,
            *params,
            marks["award"],
            ctx.conversion.id,
            *award_params,
            *params,
        ],
    )
    return _funnel_result(ctx, rows)


def _funnel_result(ctx: ReportContext, rows) -> list[StepCounts]:
    found = {
        (version_id, key): (int(entered), int(converted))
        for version_id, key, entered, converted in rows
    }
    result = []
    for v in ctx.versions:
        keys = [key for key, _ in v.steps]
        types = dict(v.steps)
        # A step no longer in the definition but still visited (it should not happen, since
        # versions are immutable) is listed last rather than dropped.
        keys += sorted(k for vid, k in found if vid == v.id and k not in types)
        for key in keys:
            entered, converted = found.get((v.id, key), (0, 0))
            result.append(StepCounts(v.number, key, types.get(key, ""), entered, converted))
    return result


def step_labels(ctx: ReportContext) -> dict[str, str]:
    """What reports call each step: the name the marketer gave it in the newest version that
    names it (every published one, so a path through an older version reads the same), its
    key where none does."""
    labels: dict[str, str] = {}
    for v in reversed(ctx.all_versions):
        for key, name in v.step_names:
            labels.setdefault(key, name)
    return labels


def step_order(ctx: ReportContext) -> list[str]:
    """Step keys in the order of the newest version, then any older-only steps."""
    order: list[str] = []
    for v in reversed(ctx.versions):
        for key, _ in v.steps:
            if key not in order:
                order.append(key)
    return order


@dataclass(frozen=True)
class PathCounts:
    path: tuple[str, ...]
    enrolled: int
    converted: int

    @property
    def rate(self) -> float | None:
        return stats.rate(self.converted, self.enrolled)


def _path_order(p: PathCounts):
    return (-p.enrolled, -p.converted, p.path)


def common_paths(
    ctx: ReportContext, marks: dict[str, int] | None = None, *, limit: int = PATH_LIMIT
) -> list[PathCounts]:
    """The most common routes of treated enrollments: the path rollups, plus the enrollments
    the facts past the watermarks move from one path to another (rollups.path_moves)."""
    marks = marks if marks is not None else rollups.rolled_up()
    where, params = _rollup_where(ctx)
    enrolled: dict[str, int] = defaultdict(int)
    converted: dict[str, int] = defaultdict(int)
    some_row: dict[str, int] = {}  # a PathDay row of each path, to read the path from
    for key, n, row_id in sql.fetch(
        f"SELECT r.path_hash, SUM(r.enrolled), MIN(r.id) FROM {rollups.PATH_DAY} r"
        f" WHERE {where} GROUP BY r.path_hash",
        params,
    ):
        enrolled[key] += n
        some_row[key] = row_id
    for key, n in sql.fetch(
        f"SELECT r.path_hash, SUM(r.converted) FROM {rollups.PATH_CONVERSION_DAY} r"
        f" WHERE {where} AND r.conversion_id = %s GROUP BY r.path_hash",
        [*params, ctx.conversion.id],
    ):
        converted[key] += n
    fact = RollupWatermark.Fact
    before = (marks[fact.ENROLLMENT], marks[fact.VISIT], marks[fact.AWARD])
    touched = rollups.touched_enrollments(
        enrollments=(before[0], rollups.INFINITY),
        visits=(before[1], rollups.INFINITY),
        awards=(before[2], rollups.INFINITY),
        version_ids=list(ctx.version_ids),
    )
    moves = rollups.path_moves(touched, before=before, after=(rollups.INFINITY,) * 3)
    for (_, day, key), n in moves.enrolled.items():
        if _in_days(ctx, day):
            enrolled[key] += n
    for (conversion_id, _, day, key), n in moves.converted.items():
        if conversion_id == ctx.conversion.id and _in_days(ctx, day):
            converted[key] += n
    ranked = sorted(
        ((key, n, converted.get(key, 0)) for key, n in enrolled.items() if n > 0),
        key=lambda t: (-t[1], -t[2]),
    )
    # Ties on the counts are broken by the path: keep every path tied with the last shown.
    cut = (ranked[limit - 1][1], ranked[limit - 1][2]) if len(ranked) >= limit else (0, 0)
    top = [t for t in ranked if (t[1], t[2]) >= cut]
    paths = dict(moves.paths)
    missing = [some_row[key] for key, _, _ in top if key not in paths] or [0]
    for key, path in PathDay.objects.filter(id__in=missing).values_list("path_hash", "path"):
        paths[key] = tuple(path)
    result = [PathCounts(paths[key], n, c) for key, n, c in top]
    return sorted(result, key=_path_order)[:limit]


def _in_days(ctx: ReportContext, day: datetime.date) -> bool:
    return (ctx.start is None or day >= ctx.start) and (ctx.end is None or day <= ctx.end)


def common_paths_from_facts(ctx: ReportContext, *, limit: int = PATH_LIMIT) -> list[PathCounts]:
    """The most common routes (Enrollment.path) of treated enrollments, from the facts."""
    where, params = _enrollment_where(ctx)
    rows = sql.fetch(
        f"""
        WITH a AS (SELECT DISTINCT enrollment_id FROM {AWARD} WHERE conversion_id = %s)
        SELECT e.path, COUNT(*), COUNT(a.enrollment_id)
        FROM {ENROLLMENT} e LEFT JOIN a ON a.enrollment_id = e.id
        WHERE {where} AND e.held_out = %s
        GROUP BY e.path
        """,
        [ctx.conversion.id, *params, False],
    )
    result = []
    for path, enrolled, converted in rows:
        if isinstance(path, (str, bytes)):
            path = json.loads(path)
        result.append(PathCounts(tuple(path or ()), enrolled, converted))
    return sorted(result, key=_path_order)[:limit]


@dataclass(frozen=True)
class MessageCounts:
    version: int
    step: str
    channel: str
    sent: int
    delivered: int  # delivered, or opened or clicked (which it was, to be)
    opened: int  # opened, or clicked (images blocked hide an open, not a click)
    clicked: int
    bounced: int
    unsubscribed: int
    conversions: int  # awards credited to this message (ctx.attribution, within the window)
    value: float


def message_attribution(ctx: ReportContext, marks: dict | None = None) -> list[MessageCounts]:
    """Per version and message step: messages sent, what the provider reported back about
    them, and the awards credited to them with their value. An award goes to the message
    that touched the enrollment last at or before it (sent, opened or clicked, as
    `ctx.attribution` says), within the conversion's window of that touch when it has one.
    From the message rollups plus the chunks of enrollments touched since the last refresh
    (reporting/message_rollups.py)."""
    marks = marks if marks is not None else rollups.rolled_up()
    figures = message_rollups.read(
        _message_scope(ctx),
        conversion=ctx.conversion,
        attribution=ctx.attribution,
        events_rolled_up=marks[RollupWatermark.Fact.MESSAGE_EVENT],
        awards_rolled_up=marks[RollupWatermark.Fact.AWARD],
    )
    return _message_rows(ctx, figures)


def message_attribution_from_facts(ctx: ReportContext) -> list[MessageCounts]:
    figures = message_rollups.from_facts(
        _message_scope(ctx), conversion=ctx.conversion, attribution=ctx.attribution
    )
    return _message_rows(ctx, figures)


def _message_scope(ctx: ReportContext) -> message_rollups.Scope:
    return message_rollups.Scope(tuple(ctx.version_ids), ctx.start, ctx.end)


def _message_rows(ctx: ReportContext, figures: message_rollups.MessageFigures):
    channels = {"send_email": OutboxMessage.Channel.EMAIL, "send_sms": OutboxMessage.Channel.SMS}
    result = []
    for v in ctx.versions:
        for key, step_type in v.steps:
            if step_type not in MESSAGE_STEP_TYPES:
                continue
            channel, *counts = figures.counters.get(
                (v.id, key), (channels[step_type], 0, 0, 0, 0, 0, 0)
            )
            awards, value = figures.credits.get((v.id, key), (0, 0))
            result.append(MessageCounts(v.number, key, channel, *counts, awards, _money(value)))
    return result


@dataclass(frozen=True)
class GoalCounts:
    goal: str
    name: str
    version: int
    achieved: int
    median_seconds: float | None
    p90_seconds: float | None


def _histogram_percentiles(rows, nkeys: int) -> dict[tuple, Percentiles]:
    """From rows (keys..., bucket, count): per key, the count and the nearest-rank median
    and 90th percentile, each read as its bucket's middle (rollups.bucket_seconds)."""
    found: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        found[tuple(row[:nkeys])][int(row[nkeys])] += int(row[nkeys + 1])
    result = {}
    for key, buckets in found.items():
        n = sum(buckets.values())
        if not n:
            continue
        ranks = {"median": (50 * n + 99) // 100, "p90": (90 * n + 99) // 100}
        values: dict[str, float] = {}
        seen = 0
        for bucket in sorted(buckets):
            seen += buckets[bucket]
            for name, rank in ranks.items():
                if name not in values and seen >= rank:
                    values[name] = rollups.bucket_seconds(bucket)
        result[key] = Percentiles(count=n, median=values["median"], p90=values["p90"])
    return result


def _goal_rows(ctx: ReportContext, found: dict[tuple, Percentiles]) -> list[GoalCounts]:
    result = []
    for goal in Goal.objects.filter(journey=ctx.journey).order_by("position", "key"):
        for v in ctx.versions:
            p = found.get((goal.id, v.id), Percentiles(0, None, None))
            result.append(GoalCounts(goal.key, goal.name, v.number, p.count, p.median, p.p90))
    return result


def goal_achievements(ctx: ReportContext, marks: dict | None = None) -> list[GoalCounts]:
    """Per goal and version: enrollments that achieved it and the time from the start of
    the enrollment to the achievement (median, p90), from the per-day histograms plus the
    achievements not rolled up yet. Two queries (three without the watermarks `marks`):
    the goals, the figures. `goal_achievements_from_facts` must equal."""
    marks = marks or rollups.rolled_up()
    where, params = _enrollment_where(ctx)
    rwhere, rparams = _rollup_where(ctx)
    achievement_versions, achievement_params = _tail_versions(ctx, "ga")
    rows = sql.fetch(
        f"""
        SELECT x.goal_id, x.version_id, x.bucket, SUM(x.n) FROM (
            SELECT r.goal_id, r.version_id, r.bucket, r.achieved AS n
            FROM {rollups.GOAL_TIME_DAY} r WHERE {rwhere}
            UNION ALL
            SELECT ga.goal_id, e.version_id,
                   {rollups.bucket_sql("ga.achieved_at", "e.started_at")}, 1
            FROM {ACHIEVEMENT} ga JOIN {ENROLLMENT} e ON e.id = ga.enrollment_id
            WHERE ga.id > %s AND {achievement_versions} AND {where}
        ) x
        GROUP BY x.goal_id, x.version_id, x.bucket
        """,
        [*rparams, marks["achievement"], *achievement_params, *params],
    )
    return _goal_rows(ctx, _histogram_percentiles(rows, 2))


def goal_achievements_from_facts(ctx: ReportContext) -> list[GoalCounts]:
    """What `goal_achievements` answers, from the achievements alone; two queries."""
    where, params = _enrollment_where(ctx)
    rows = sql.fetch(
        f"""
        SELECT ga.goal_id, e.version_id,
               {rollups.bucket_sql("ga.achieved_at", "e.started_at")}, COUNT(*)
        FROM {ACHIEVEMENT} ga JOIN {ENROLLMENT} e ON e.id = ga.enrollment_id
        WHERE {where}
        GROUP BY ga.goal_id, e.version_id, {rollups.bucket_sql("ga.achieved_at", "e.started_at")}
        """,
        params,
    )
    return _goal_rows(ctx, _histogram_percentiles(rows, 2))


@dataclass(frozen=True)
class ConvertTime:
    version: int
    converted: int
    median_seconds: float | None
    p90_seconds: float | None


def _convert_time_rows(ctx: ReportContext, found: dict[tuple, Percentiles]) -> list[ConvertTime]:
    result = []
    for v in ctx.versions:
        p = found.get((v.id,), Percentiles(0, None, None))
        result.append(ConvertTime(v.number, p.count, p.median, p.p90))
    return result


def time_to_convert(ctx: ReportContext, marks: dict | None = None) -> list[ConvertTime]:
    """Per version: from the start of an enrollment to its first award of the conversion
    (the first recorded), median and 90th percentile, from the per-day histograms plus the
    awards not rolled up yet; one query (two without the watermarks `marks`).
    `time_to_convert_from_facts` must equal."""
    marks = marks or rollups.rolled_up()
    where, params = _enrollment_where(ctx)
    rwhere, rparams = _rollup_where(ctx)
    award_versions, award_params = _tail_versions(ctx, "a")
    rows = sql.fetch(
        f"""
        SELECT x.version_id, x.bucket, SUM(x.n) FROM (
            SELECT r.version_id, r.bucket, r.converted AS n
            FROM {rollups.CONVERT_TIME_DAY} r WHERE r.conversion_id = %s AND {rwhere}
            UNION ALL
            SELECT e.version_id, {rollups.bucket_sql("a.awarded_at", "e.started_at")}, 1
            FROM {AWARD} a JOIN {ENROLLMENT} e ON e.id = a.enrollment_id
            WHERE a.id > %s AND a.conversion_id = %s AND {award_versions} AND {where}
                  AND {rollups.FIRST_AWARD}
        ) x
        GROUP BY x.version_id, x.bucket
        """,
        [ctx.conversion.id, *rparams, marks["award"], ctx.conversion.id, *award_params, *params],
    )
    return _convert_time_rows(ctx, _histogram_percentiles(rows, 1))


def time_to_convert_from_facts(ctx: ReportContext) -> list[ConvertTime]:
    """What `time_to_convert` answers, from the awards alone; one query."""
    where, params = _enrollment_where(ctx)
    bucket = rollups.bucket_sql("a.awarded_at", "e.started_at")
    rows = sql.fetch(
        f"""
        SELECT e.version_id, {bucket}, COUNT(*)
        FROM {AWARD} a JOIN {ENROLLMENT} e ON e.id = a.enrollment_id
        WHERE a.conversion_id = %s AND {where} AND {rollups.FIRST_AWARD}
        GROUP BY e.version_id, {bucket}
        """,
        [ctx.conversion.id, *params],
    )
    return _convert_time_rows(ctx, _histogram_percentiles(rows, 1))


@dataclass(frozen=True)
class RevisionMark:
    at: datetime.datetime
    kind: str
    summary: str


def conversion_revisions(ctx: ReportContext) -> list[RevisionMark]:
    """Every dated change of the conversion's definition; one query."""
    marks = []
    for revision in Revision.objects.filter(conversion=ctx.conversion).order_by("created_at", "id"):
        changed = ", ".join(sorted(revision.changes)) if revision.changes else ""
        summary = revision.get_kind_display() + (f": {changed}" if changed else "")
        marks.append(RevisionMark(revision.created_at, revision.kind, summary))
    return marks


def path_enrollments(ctx: ReportContext, *, path: list[str], limit: int = PATH_CONTACTS_LIMIT):
    """The enrollments (with their contacts) of the report that took exactly `path`."""
    qs = Enrollment.objects.filter(version_id__in=ctx.version_ids, held_out=False, path=path)
    if ctx.start:
        qs = qs.filter(started_at__gte=_day_start(ctx.start))
    if ctx.end:
        qs = qs.filter(started_at__lt=_day_start(ctx.end + datetime.timedelta(days=1)))
    converted = ConversionAward.objects.filter(conversion=ctx.conversion, enrollment=OuterRef("pk"))
    return (
        qs.select_related("contact", "version")
        .annotate(converted=Exists(converted))
        .order_by("-started_at")[:limit]
    )


# The whole report ------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionRow:
    """A line of the version comparison, as the contract's report call defines it."""

    version: int
    counts: Counts
    ci_low: float | None
    ci_high: float | None
    comparison: stats.Comparison | None  # None on the baseline row
    held_out: Counts
    # For a randomized comparison: the first whole day both versions took enrollments.
    split_from: datetime.date | None = None
    # ...and the moment the split began, which the note states as it was.
    split_since: datetime.datetime | None = None

    @property
    def enrolled(self) -> int:
        return self.counts.enrolled

    @property
    def converted(self) -> int:
        return self.counts.converted

    @property
    def rate(self) -> float | None:
        return self.counts.rate


# The days of traffic the outlook projects from: a week smooths out weekends.
OUTLOOK_DAYS = 7


def _looks(rows: list[Cohort], version_id: int, base_id: int) -> list[tuple]:
    """The comparison as it stood at the end of each day's cohort, oldest first:
    cumulative (converted, enrolled) of the version and the baseline, held-out included
    like the totals."""
    daily: dict[datetime.date, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for c in rows:
        if c.version_id in (version_id, base_id):
            offset = 0 if c.version_id == version_id else 2
            daily[c.day][offset] += c.counts.converted
            daily[c.day][offset + 1] += c.counts.enrolled
    looks, running = [], [0, 0, 0, 0]
    for day in sorted(daily):
        running = [a + b for a, b in zip(running, daily[day], strict=True)]
        looks.append(tuple(running))
    return looks


def _enrolled_per_day(rows: list[Cohort], version_ids: tuple[int, int]) -> float:
    """The smaller group's enrollments a day over the last OUTLOOK_DAYS days with data."""
    days = sorted({c.day for c in rows if c.version_id in version_ids})
    if not days:
        return 0.0
    since = days[-1] - datetime.timedelta(days=OUTLOOK_DAYS - 1)
    span = min((days[-1] - max(days[0], since)).days + 1, OUTLOOK_DAYS)
    return (
        min(
            sum(c.counts.enrolled for c in rows if c.version_id == version_id and c.day >= since)
            for version_id in version_ids
        )
        / span
    )


def version_rows(
    ctx: ReportContext, counts: list[VersionCounts], rows: list[Cohort] | None = None
) -> list[VersionRow]:
    """The comparison's lines; `rows` (the cohorts behind `counts`) give the always-valid
    p-value its daily looks and the outlook its traffic."""
    rows = rows or []
    base_counts = next((c.total for c in counts if c.version == ctx.baseline), Counts())
    base = ctx.by_number(ctx.baseline) if ctx.versions else None
    split = split_days(ctx)
    result = []
    for c in counts:
        total = c.total
        low, high = stats.wilson_interval(total.converted, total.enrolled)
        comparison = None
        if c.version != ctx.baseline:
            info = ctx.by_number(c.version)
            ratio = None
            shares = expected_shares(base, info) if c.in_split else None
            if shares:
                ratio = stats.sample_ratio([c.in_split[1], c.in_split[0]], shares)
            comparison = stats.compare(
                version=c.version,
                converted=total.converted,
                enrolled=total.enrolled,
                baseline=ctx.baseline,
                base_converted=base_counts.converted,
                base_enrolled=base_counts.enrolled,
                kind=comparison_kind(base, info),
                sample_ratio=ratio,
                looks=_looks(rows, info.id, base.id)[:-1],
                enrolled_per_day=_enrolled_per_day(rows, (info.id, base.id)),
            )
        split_from = split[c.version][0] if c.version in split else None
        since = split_begins(ctx).get(c.version)
        result.append(
            VersionRow(c.version, total, low, high, comparison, c.held_out, split_from, since)
        )
    return result


def holdout(counts: list[VersionCounts]) -> stats.Lift | None:
    treated = sum((c.treated for c in counts), Counts())
    held = sum((c.held_out for c in counts), Counts())
    if not held.enrolled:
        return None
    return stats.holdout_lift(
        treated_converted=treated.converted,
        treated_enrolled=treated.enrolled,
        held_out_converted=held.converted,
        held_out_enrolled=held.enrolled,
    )


@dataclass(frozen=True)
class Report:
    ctx: ReportContext
    versions: list[VersionRow]
    steps: list[StepCounts]
    holdout: stats.Lift | None
    daily: list[DayCounts] = field(default_factory=list)
    revisions: list[RevisionMark] = field(default_factory=list)
    paths: list[PathCounts] = field(default_factory=list)
    messages: list[MessageCounts] = field(default_factory=list)
    goals: list[GoalCounts] = field(default_factory=list)
    convert_times: list[ConvertTime] = field(default_factory=list)


# Panels beyond the version comparison (always there: every panel leans on its counts).
# The page answers with the first three; the rest load on their own, after it has answered
# (goals and time to convert read histograms; paths and messages still read raw facts).
FAST_PANELS = ("steps", "daily", "revisions")
SLOW_PANELS = ("paths", "messages", "goals", "time_to_convert")
PANELS = (*FAST_PANELS, *SLOW_PANELS)


def build_report(ctx: ReportContext, panels=PANELS, *, compare: bool = True) -> Report:
    """The version comparison and the named panels: one query each, plus the watermarks.
    Without `compare` (a panel loaded on its own) the statistics are left out, and the
    cohorts are read only for the goals panel, whose shares need each version's enrolled."""
    marks = rollups.rolled_up()
    rows = cohorts(ctx, marks) if compare or "goals" in panels else []
    counts = version_counts(ctx, rows)
    if compare:
        versions = version_rows(ctx, counts, rows)
    else:
        versions = [VersionRow(c.version, c.total, None, None, None, c.held_out) for c in counts]
    return Report(
        ctx,
        versions,
        step_funnel(ctx, marks) if "steps" in panels else [],
        holdout(counts) if compare else None,
        daily=daily_counts(ctx, rows) if "daily" in panels else [],
        revisions=conversion_revisions(ctx) if "revisions" in panels else [],
        paths=common_paths(ctx, marks) if "paths" in panels else [],
        messages=message_attribution(ctx, marks) if "messages" in panels else [],
        goals=goal_achievements(ctx, marks) if "goals" in panels else [],
        convert_times=time_to_convert(ctx, marks) if "time_to_convert" in panels else [],
    )


def version_report(ctx: ReportContext) -> Report:
    """What the report call answers: the comparison and the step funnel (three queries)."""
    return build_report(ctx, ("steps",))


def full_report(ctx: ReportContext) -> Report:
    """Every panel: nine queries with the watermarks."""
    return build_report(ctx, PANELS)
