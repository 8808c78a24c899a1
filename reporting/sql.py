"""The SQL the reporting app writes by hand, where PostgreSQL and SQLite differ: date
arithmetic, and the shapes of parameters and results of a raw cursor."""

import datetime

from django.db import connection


def day_sql(column: str) -> str:
    """The UTC day of a timestamp column."""
    if connection.vendor == "postgresql":
        return f"CAST(({column} AT TIME ZONE 'UTC') AS date)"
    return f"date({column})"


def seconds_sql(later: str, earlier: str) -> str:
    """Seconds from one timestamp column to another."""
    if connection.vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


# Joins an enrollment's step keys into one string (no key holds a control character).
KEY_SEPARATOR = "\x1f"


def joined_keys_sql(visit_table: str) -> str:
    """A query of (enrollment_id, joined): the step keys of each enrollment's visits in seq
    order, joined by KEY_SEPARATOR, for enrollment ids in (%s, %s] and visit ids up to %s.
    SQLite before 3.44 cannot order an aggregate's input, but orders a window's."""
    where = "enrollment_id > %s AND enrollment_id <= %s AND id <= %s"
    if connection.vendor == "postgresql":
        return (
            "SELECT enrollment_id, string_agg(step_key, chr(31) ORDER BY seq, id) AS joined"
            f" FROM {visit_table} WHERE {where} GROUP BY enrollment_id"
        )
    return f"""SELECT enrollment_id, joined FROM (
        SELECT enrollment_id, row_number() OVER w AS n, group_concat(step_key, char(31)) OVER (
            w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS joined
        FROM {visit_table} WHERE {where}
        WINDOW w AS (PARTITION BY enrollment_id ORDER BY seq, id)) WHERE n = 1"""


def duration_seconds_sql(column: str) -> str:
    """Seconds of a DurationField column: an interval on PostgreSQL, microseconds on SQLite."""
    if connection.vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM {column})"
    return f"({column} / 1000000.0)"


def execute(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def fetch(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def in_list(ids) -> str:
    """Placeholders for an IN list of these values."""
    return ", ".join(["%s"] * len(ids))


def utc_day(value) -> datetime.date:
    """The UTC day of a timestamp (or of a day_sql value) read through a raw cursor."""
    if isinstance(value, str):  # SQLite through a raw cursor
        value = datetime.datetime.fromisoformat(value)
    if not isinstance(value, datetime.datetime):  # a day already (day_sql on PostgreSQL)
        return value
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC)
    return value.date()


def day_start_param(day: datetime.date):
    """The moment a UTC day starts, as a parameter of a timestamp column."""
    moment = datetime.datetime.combine(day, datetime.time.min, tzinfo=datetime.UTC)
    return connection.ops.adapt_datetimefield_value(moment)


def day_param(day: datetime.date):
    return connection.ops.adapt_datefield_value(day)
