"""The messages panel's rollups (reporting/models.py, "Messages"): the messages sent at
each step, what the provider reported back about them, and the awards credited to them
under each attribution, kept exact while messages change.

A message's figures change after it is written (sent, then delivered, opened, clicked...),
and an award's credit goes to whichever message touched its enrollment last, so neither can
be folded in once by id like the other rollups. Both only ever change together with a fact
that is appended by id: a message event (journeys.models.DeliveryEvent: its send, and each
kind of provider feedback) or an award. So the figures are kept per **chunk** of enrollment
ids (CHUNK consecutive ids), and summed per version, day and step in day totals. A refresh
recomputes, from the facts, every chunk that a message event or an award of its ranges
touched: it takes the chunk's old rows out of the totals, and its new ones in. A read takes
the totals, less the rows of the chunks touched since the last refresh (events and awards
past the watermarks), plus those chunks computed from the facts: exact at any moment, and
as fast at ten million enrollments as at one, since the totals do not grow with them.

Credits depend on the conversion's window as well. MessageCreditWindow records the window
each conversion's credits were computed with; a conversion whose window was changed since
is recomputed whole at the next refresh, and read from the facts until then.
"""

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Sum

from conversions.models import Conversion, ConversionAward
from journeys.models import DeliveryEvent, Enrollment, JourneyVersion, OutboxMessage
from reporting.models import (
    MessageChunkDay,
    MessageCreditChunkDay,
    MessageCreditDay,
    MessageCreditWindow,
    MessageDay,
)
from reporting.sql import (
    day_sql,
    day_start_param,
    duration_seconds_sql,
    execute,
    fetch,
    in_list,
    seconds_sql,
)

# Enrollment ids per chunk: a refresh or a read recomputes at least this many enrollments'
# messages for each chunk touched; a report sums one row per chunk, day and step.
CHUNK = 4096
# Chunks recomputed per statement in a rebuild (about 65,000 enrollments).
REBUILD_CHUNKS = 16
# Past every id: the upper end of a read's ranges.
INFINITY = 2**62

ENROLLMENT = Enrollment._meta.db_table
OUTBOX = OutboxMessage._meta.db_table
AWARD = ConversionAward._meta.db_table
CONVERSION = Conversion._meta.db_table
MESSAGE_EVENT = DeliveryEvent._meta.db_table

# The moment a message touched the enrollment, by attribution: a message only competes for
# an award once it was sent, opened or clicked, and its window runs from then. The first is
# the default.
TOUCHED_AT = {
    "last_sent": "m.sent_at",
    "last_opened": "COALESCE(m.opened_at, m.clicked_at)",
    "last_clicked": "m.clicked_at",
}
ATTRIBUTIONS = tuple(TOUCHED_AT)

COUNTERS = ("sent", "delivered", "opened", "clicked", "bounced", "unsubscribed")


@dataclass(frozen=True)
class Scope:
    """The enrollments a computation covers: the versions, optionally a range of UTC start
    days (both ends included) and ranges of ids [low, high)."""

    version_ids: tuple[int, ...] | None = None
    start: datetime.date | None = None
    end: datetime.date | None = None
    id_ranges: tuple[tuple[int, int], ...] | None = None

    def where(self, alias: str = "e") -> tuple[str, list]:
        clauses, params = [], []
        if self.version_ids is not None:
            ids = self.version_ids or (0,)
            clauses.append(f"{alias}.version_id IN ({in_list(ids)})")
            params += ids
        if self.start:
            clauses.append(f"{alias}.started_at >= %s")
            params.append(day_start_param(self.start))
        if self.end:
            clauses.append(f"{alias}.started_at < %s")
            params.append(day_start_param(self.end + datetime.timedelta(days=1)))
        if self.id_ranges is not None:
            ranges = self.id_ranges or ((0, 0),)
            clauses.append(
                "(" + " OR ".join(f"({alias}.id >= %s AND {alias}.id < %s)" for _ in ranges) + ")"
            )
            params += [n for r in ranges for n in r]
        return " AND ".join(clauses) or "1 = 1", params


def chunk_ranges(chunks: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """The enrollment ids of these chunks as [low, high) ranges, consecutive chunks merged."""
    ranges: list[list[int]] = []
    for chunk in sorted(set(chunks)):
        low = chunk * CHUNK
        if ranges and ranges[-1][1] == low:
            ranges[-1][1] = low + CHUNK
        else:
            ranges.append([low, low + CHUNK])
    return tuple((low, high) for low, high in ranges)


# Computing from the facts ----------------------------------------------------------------


def compute_counters(scope: Scope) -> list[tuple]:
    return fetch(*_counters_sql(scope))


def _counters_sql(scope: Scope) -> tuple[str, list]:
    """(chunk, version_id, day, step_key, channel, sent, delivered, opened, clicked,
    bounced, unsubscribed) of the sent messages of the scope's enrollments. A message counts
    as delivered when it was delivered, opened or clicked, and as opened when it was opened
    or clicked (blocked images hide an open, not a click)."""
    where, params = scope.where()
    return (
        f"""
        SELECT e.id / {CHUNK}, e.version_id, {day_sql("e.started_at")}, o.step_key, o.channel,
               COUNT(*),
               SUM(CASE WHEN o.delivered_at IS NOT NULL OR o.opened_at IS NOT NULL
                          OR o.clicked_at IS NOT NULL THEN 1 ELSE 0 END),
               SUM(CASE WHEN o.opened_at IS NOT NULL OR o.clicked_at IS NOT NULL
                        THEN 1 ELSE 0 END),
               SUM(CASE WHEN o.clicked_at IS NOT NULL THEN 1 ELSE 0 END),
               SUM(CASE WHEN o.bounced_at IS NOT NULL THEN 1 ELSE 0 END),
               SUM(CASE WHEN o.unsubscribed_at IS NOT NULL THEN 1 ELSE 0 END)
        FROM {OUTBOX} o JOIN {ENROLLMENT} e ON e.id = o.enrollment_id
        WHERE o.sent_at IS NOT NULL AND {where}
        GROUP BY 1, 2, 3, 4, 5
        """,
        params,
    )


def compute_credits(
    scope: Scope,
    *,
    conversion_ids: Iterable[int] | None = None,
    attributions: Iterable[str] = ATTRIBUTIONS,
) -> list[tuple]:
    return fetch(*_credits_sql(scope, conversion_ids=conversion_ids, attributions=attributions))


def _credits_sql(
    scope: Scope,
    *,
    conversion_ids: Iterable[int] | None = None,
    attributions: Iterable[str] = ATTRIBUTIONS,
) -> tuple[str, list]:
    """(chunk, version_id, day, step_key, conversion_id, attribution, awards, value) of the
    scope's enrollments: each award goes, under each attribution, to the message that touched
    its enrollment last at or before it (TOUCHED_AT; the later message id breaks a tie),
    within the conversion's window of that touch when it has one."""
    where, params = scope.where()
    conversions, conversion_params = "", []
    if conversion_ids is not None:
        ids = tuple(conversion_ids) or (0,)
        conversions = f" AND a.conversion_id IN ({in_list(ids)})"
        conversion_params = list(ids)
    touches = " UNION ALL ".join(
        f"SELECT m.id, m.enrollment_id, m.step_key, '{name}' AS attribution,"
        f" {TOUCHED_AT[name]} AS touched_at FROM m WHERE {TOUCHED_AT[name]} IS NOT NULL"
        for name in attributions
    )
    window = duration_seconds_sql('c."window"')
    return (
        f"""
        WITH e AS (SELECT e.id, e.version_id, e.started_at FROM {ENROLLMENT} e WHERE {where}),
        m AS (
            SELECT o.id, o.enrollment_id, o.step_key, o.sent_at, o.opened_at, o.clicked_at
            FROM {OUTBOX} o JOIN e ON e.id = o.enrollment_id WHERE o.sent_at IS NOT NULL
        ),
        t AS ({touches}),
        aw AS (
            SELECT a.id, a.enrollment_id, a.conversion_id, a.awarded_at, a.value,
                   {window} AS window_seconds
            FROM {AWARD} a JOIN e ON e.id = a.enrollment_id
            JOIN {CONVERSION} c ON c.id = a.conversion_id
            WHERE 1 = 1{conversions}
        ),
        ranked AS (
            SELECT aw.enrollment_id, aw.conversion_id, aw.value, t.step_key, t.attribution,
                   ROW_NUMBER() OVER (
                       PARTITION BY aw.id, t.attribution ORDER BY t.touched_at DESC, t.id DESC
                   ) AS rn
            FROM aw JOIN t ON t.enrollment_id = aw.enrollment_id
                 AND t.touched_at <= aw.awarded_at
                 AND (aw.window_seconds IS NULL
                      OR {seconds_sql("aw.awarded_at", "t.touched_at")} <= aw.window_seconds)
        )
        SELECT e.id / {CHUNK}, e.version_id, {day_sql("e.started_at")}, r.step_key,
               r.conversion_id, r.attribution, COUNT(*), SUM(r.value)
        FROM ranked r JOIN e ON e.id = r.enrollment_id
        WHERE r.rn = 1
        GROUP BY 1, 2, 3, 4, 5, 6
        """,
        [*params, *conversion_params],
    )


def touched_chunks(
    *, events: tuple[int, int], awards: tuple[int, int], version_ids: Iterable[int] | None = None
) -> set[int]:
    """The chunks of the enrollments that a message event or an award with an id in its
    (after, up_to] range touched, optionally of these versions only."""
    versions, params = "", []
    if version_ids is not None:
        ids = tuple(version_ids) or (0,)
        versions = f" AND e.version_id IN ({in_list(ids)})"
        params = list(ids)
    rows = fetch(
        f"""
        SELECT DISTINCT o.enrollment_id / {CHUNK} FROM {MESSAGE_EVENT} d
        JOIN {OUTBOX} o ON o.id = d.message_id JOIN {ENROLLMENT} e ON e.id = o.enrollment_id
        WHERE d.id > %s AND d.id <= %s{versions}
        UNION
        SELECT DISTINCT a.enrollment_id / {CHUNK} FROM {AWARD} a
        JOIN {ENROLLMENT} e ON e.id = a.enrollment_id
        WHERE a.id > %s AND a.id <= %s{versions}
        """,
        [*events, *params, *awards, *params],
    )
    return {int(chunk) for (chunk,) in rows}


# Keeping the rollups ------------------------------------------------------------------------

COUNTER_KEYS = ["version_id", "day", "step_key", "channel"]
CREDIT_KEYS = ["conversion_id", "attribution", "version_id", "day", "step_key"]
# (the day totals, the chunks' rows, their key columns, the counters)
TABLES = (
    (MessageDay._meta.db_table, MessageChunkDay._meta.db_table, COUNTER_KEYS, list(COUNTERS)),
    (MessageCreditDay._meta.db_table, MessageCreditChunkDay._meta.db_table, CREDIT_KEYS,
     ["awards", "value"]),
)  # fmt: skip


def _move(totals: str, chunks: str, keys: list[str], counters: list[str], where: str,
          params: list, sign: int) -> None:  # fmt: skip
    """Add (sign 1) or take out (sign -1) the chunk rows matching `where` to the totals."""
    columns = ", ".join([*keys, *counters])
    sums = ", ".join(f"{sign} * SUM({c})" for c in counters)
    updates = ", ".join(f"{c} = {totals}.{c} + excluded.{c}" for c in counters)
    execute(
        f"INSERT INTO {totals} ({columns}) SELECT {', '.join(keys)}, {sums} FROM {chunks}"
        f" WHERE {where} GROUP BY {', '.join(keys)}"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}",
        params,
    )


def recompute_chunks(chunks: Iterable[int]) -> None:
    """Replace the figures of these chunks with those of their facts now: each batch of
    chunks is taken out of the day totals, recomputed, and added back in."""
    ranges = chunk_ranges(chunks)
    for start in range(0, len(ranges), REBUILD_CHUNKS):
        batch = ranges[start : start + REBUILD_CHUNKS]
        ids = [c for low, high in batch for c in range(low // CHUNK, high // CHUNK)]
        in_batch = f"chunk IN ({in_list(ids)})"
        for totals, chunk_table, keys, counters in TABLES:
            _move(totals, chunk_table, keys, counters, in_batch, ids, -1)
            execute(f"DELETE FROM {chunk_table} WHERE {in_batch}", ids)
        _insert_chunks(Scope(id_ranges=batch))
        for totals, chunk_table, keys, counters in TABLES:
            _move(totals, chunk_table, keys, counters, in_batch, ids, 1)


def _insert_chunks(scope: Scope, *, conversion_ids: Iterable[int] | None = None) -> None:
    if conversion_ids is None:
        sql, params = _counters_sql(scope)
        execute(
            f"INSERT INTO {MessageChunkDay._meta.db_table}"
            f" (chunk, {', '.join(COUNTER_KEYS)}, {', '.join(COUNTERS)}) {sql}",
            params,
        )
    sql, params = _credits_sql(scope, conversion_ids=conversion_ids)
    execute(
        f"INSERT INTO {MessageCreditChunkDay._meta.db_table}"
        " (chunk, version_id, day, step_key, conversion_id, attribution, awards, value)"
        f" {sql}",
        params,
    )


def recompute_windows() -> None:
    """Recompute the credits of every conversion whose window differs from the one they
    were computed with (or that has none recorded yet), and record the window."""
    recorded = dict(MessageCreditWindow.objects.values_list("conversion_id", "window"))
    for conversion in Conversion.objects.only("id", "journey_id", "window"):
        if conversion.pk in recorded and recorded[conversion.pk] == conversion.window:
            continue
        MessageCreditDay.objects.filter(conversion_id=conversion.pk).delete()
        MessageCreditChunkDay.objects.filter(conversion_id=conversion.pk).delete()
        version_ids = tuple(
            JourneyVersion.objects.filter(journey_id=conversion.journey_id).values_list(
                "pk", flat=True
            )
        )
        # A new conversion has no awards yet: nothing to credit, however big the journey.
        if ConversionAward.objects.filter(conversion_id=conversion.pk).exists():
            _insert_chunks(Scope(version_ids=version_ids), conversion_ids=[conversion.pk])
            totals, chunk_table, keys, counters = TABLES[1]
            _move(totals, chunk_table, keys, counters, "conversion_id = %s", [conversion.pk], 1)
        MessageCreditWindow.objects.update_or_create(
            conversion_id=conversion.pk, defaults={"window": conversion.window}
        )


def fold(*, events: tuple[int, int], awards: tuple[int, int]) -> None:
    """A refresh: conversions with a changed window, then the chunks touched in the ranges."""
    recompute_windows()
    if events[0] == events[1] and awards[0] == awards[1]:
        return
    recompute_chunks(touched_chunks(events=events, awards=awards))


def rebuild(*, last_enrollment_id: int) -> None:
    """Every chunk up to the enrollment id, the day totals from them, and every
    conversion's window recorded."""
    for model in (MessageDay, MessageChunkDay, MessageCreditDay, MessageCreditChunkDay,
                  MessageCreditWindow):  # fmt: skip
        model.objects.all().delete()
    for low in range(0, last_enrollment_id + 1, CHUNK * REBUILD_CHUNKS):
        _insert_chunks(Scope(id_ranges=((low, low + CHUNK * REBUILD_CHUNKS),)))
    for totals, chunk_table, keys, counters in TABLES:
        _move(totals, chunk_table, keys, counters, "1 = 1", [], 1)
    MessageCreditWindow.objects.bulk_create(
        MessageCreditWindow(conversion_id=pk, window=window)
        for pk, window in Conversion.objects.values_list("pk", "window")
    )


# Reading ----------------------------------------------------------------------------------


@dataclass
class MessageFigures:
    """Per (version_id, step_key): the channel and counters, and the credited awards and
    their value."""

    counters: dict[tuple[int, str], list]
    credits: dict[tuple[int, str], list]


def read(
    scope: Scope,
    *,
    conversion: Conversion,
    attribution: str,
    events_rolled_up: int,
    awards_rolled_up: int,
) -> MessageFigures:
    """The figures of the scope's enrollments (versions and days; no id ranges): rollup rows
    of the chunks not touched since the last refresh, and the touched ones from the facts."""
    tail = touched_chunks(
        events=(events_rolled_up, INFINITY),
        awards=(awards_rolled_up, INFINITY),
        version_ids=scope.version_ids,
    )
    # The touched chunks are computed even when there are none (an empty id range): a
    # report takes the same number of queries whatever the data.
    tail_scope = Scope(scope.version_ids, scope.start, scope.end, chunk_ranges(tail))
    figures = MessageFigures(counters={}, credits={})
    touched = list(tail) or [-1]
    for model, sign in ((MessageDay, 1), (MessageChunkDay, -1)):
        rows = _in_scope(model.objects.all(), scope)
        if sign < 0:
            rows = rows.filter(chunk__in=touched)
        for row in _summed(rows, ["version_id", "step_key", "channel"], COUNTERS):
            _add_counters(figures, row, sign)
    _add_computed_counters(figures, compute_counters(tail_scope))

    window = MessageCreditWindow.objects.filter(conversion_id=conversion.pk).first()
    if window is None or window.window != conversion.window:
        # The window changed since the credits were computed: all from the facts.
        credit_scope = scope
    else:
        credit_scope = tail_scope
        for model, sign in ((MessageCreditDay, 1), (MessageCreditChunkDay, -1)):
            rows = _in_scope(model.objects.all(), scope).filter(
                conversion_id=conversion.pk, attribution=attribution
            )
            if sign < 0:
                rows = rows.filter(chunk__in=touched)
            for version_id, key, awards, value in _summed(
                rows, ["version_id", "step_key"], ["awards", "value"]
            ):
                _add_credits(figures, version_id, key, awards, value, sign)
    credit_rows = compute_credits(
        credit_scope, conversion_ids=[conversion.pk], attributions=[attribution]
    )
    _add_computed_credits(figures, credit_rows)
    return figures


def _summed(qs, keys: list[str], counters) -> list[tuple]:
    return list(
        qs.values(*keys)
        .annotate(*(Sum(name) for name in counters))
        .values_list(*keys, *(f"{name}__sum" for name in counters))
    )


def _in_scope(qs, scope: Scope):
    qs = qs.filter(version_id__in=scope.version_ids or (0,))
    if scope.start:
        qs = qs.filter(day__gte=scope.start)
    if scope.end:
        qs = qs.filter(day__lte=scope.end)
    return qs


def _add_counters(figures: MessageFigures, row: tuple, sign: int = 1) -> None:
    version_id, key, channel, *counts = row
    found = figures.counters.setdefault((version_id, key), [channel, *[0] * len(COUNTERS)])
    for i, n in enumerate(counts, start=1):
        found[i] += sign * int(n or 0)


def _add_credits(
    figures: MessageFigures, version_id: int, key: str, awards, value, sign: int = 1
) -> None:
    found = figures.credits.setdefault((version_id, key), [0, Decimal(0)])
    found[0] += sign * int(awards or 0)
    found[1] += sign * Decimal(str(value or 0))


def from_facts(scope: Scope, *, conversion: Conversion, attribution: str) -> MessageFigures:
    """The same figures from the facts alone (what tests and the benchmark hold `read` to)."""
    figures = MessageFigures(counters={}, credits={})
    _add_computed_counters(figures, compute_counters(scope))
    _add_computed_credits(
        figures,
        compute_credits(scope, conversion_ids=[conversion.pk], attributions=[attribution]),
    )
    return figures


def _add_computed_counters(figures: MessageFigures, rows: list[tuple]) -> None:
    for row in rows:
        _add_counters(figures, (row[1], *row[3:]))


def _add_computed_credits(figures: MessageFigures, rows: list[tuple]) -> None:
    for row in rows:
        _add_credits(figures, row[1], row[3], row[6], row[7])
