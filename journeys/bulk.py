"""The engine's bulk SQL: rows in and out of PostgreSQL with a handful of parameters.

- `array_literal`: PostgreSQL array literals built in Python. psycopg adapts a list
  parameter element by element in Python (quoting each through a regular expression); for
  the engine's batches (500 ids, a dozen columns of 500 values) that was a third of the
  write path's Python time. Common columns (ints, plain strings, aware datetimes) are
  joined in C through str.join and map, the rest quoted one by one. The caller casts the
  parameter (`%s::bigint[]`), so the server parses the literal.
- `field__any=[...]` (the `AnyOf` lookup, registered on import: `journeys.apps` imports this
  module): membership in a list as one array parameter. `pk__any=ids` compiles to
  `id = ANY(%s)` on PostgreSQL, where `pk__in=ids` writes one placeholder per value: for
  batches of 500 ids, Django compiling and psycopg rewriting those placeholders cost more
  Python than the query takes in the database. Other databases get the ordinary `IN (...)`.
- `insert_rows` and `bulk_update_rows`: INSERT ... SELECT FROM unnest and UPDATE ... FROM
  unnest, one array per column, instead of Django's bulk_create and bulk_update.
- `claim` and `retrying_deadlocks`: how the workers take a batch and survive a deadlock;
  `share_lock`: the contact's row lock that every writer of rows for a contact takes first
  (see journeys.actions.contacts.erase_contact for the lock order); `locked_rows`: rows by
  id, locked, as plain tuples.

Nothing here knows a model of the app: every function takes the model it writes.
"""

import functools
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter, itemgetter

from django.db import OperationalError, connection
from django.db.models import Field, ForeignObject, Lookup
from django.db.models.lookups import In
from psycopg.pq import Format

logger = logging.getLogger(__name__)


def element(value) -> str:
    """One value as an array element; TypeError for anything but plain values."""
    if value is None:
        return "NULL"
    kind = type(value)
    if kind is str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind is bool:
        return "t" if value else "f"
    if kind is int or kind is Decimal:
        return str(value)
    if kind is datetime:
        if value.tzinfo is None:
            raise TypeError("naive datetime")
        return '"' + value.isoformat() + '"'
    raise TypeError(kind.__name__)


def array_literal(values: list) -> str:
    """`values` as a PostgreSQL array literal (`{1,2,3}`, `{"a","b"}`); TypeError when a
    value is not plain (see `element`)."""
    kinds = set(map(type, values))
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if kind is int:
            return "{" + ",".join(map(str, values)) + "}"
        if kind is str:
            joined = "".join(values)
            if '"' not in joined and "\\" not in joined:
                return '{"' + '","'.join(values) + '"}'
        if kind is datetime and None not in set(map(attrgetter("tzinfo"), values)):
            return '{"' + '","'.join(map(datetime.isoformat, values)) + '"}'
    return "{" + ",".join([element(value) for value in values]) + "}"


@ForeignObject.register_lookup
@Field.register_lookup
class AnyOf(Lookup):
    lookup_name = "any"
    # The right-hand side is a list of plain values (ids), adapted by the driver.
    prepare_rhs = False

    def get_prep_lookup(self):
        values = list(self.rhs)
        if set(map(type, values)) - {int, str}:
            raise TypeError(f"__any takes a list of ids or strings, not {self.rhs!r}")
        return values

    def as_sql(self, compiler, connection):
        if connection.vendor != "postgresql" or not self.rhs:
            return compiler.compile(In(self.lhs, self.rhs))
        lhs, lhs_params = self.process_lhs(compiler, connection)
        db_type = self.lhs.output_field.db_type(connection)
        return f"{lhs} = ANY(%s::{db_type}[])", [*lhs_params, array_literal(self.rhs)]


@functools.cache
def _db_type(field) -> str:
    # Computed from the backend's type table on every call otherwise: once per column of
    # every bulk statement.
    return field.db_type(connection)


def _columns(getter, names: list[str], items: list) -> list[tuple]:
    """The values of `items` column by column: `getter` is attrgetter or itemgetter, which
    with zip read every row in C instead of a comprehension per column."""
    if len(names) == 1:
        return [tuple(map(getter(names[0]), items))]
    return list(zip(*map(getter(*names), items), strict=True))


def _pg_values(field, values: list) -> list:
    # psycopg adapts plain Python values (str, int, bool, Decimal, aware datetime, None)
    # itself; JSON goes as text and is cast. Skipping get_db_prep_save per value halves the
    # engine's Python time per batch.
    if field.get_internal_type() == "JSONField":
        return [None if value is None else json.dumps(value) for value in values]
    return values


def _pg_array(field, values: list) -> str | list:
    """One column's values as an array parameter: an array literal built here for plain
    values (psycopg quotes a list element by element in Python, a third of the engine's
    write time), else the list for psycopg to adapt."""
    values = _pg_values(field, values)
    try:
        return array_literal(values)
    except TypeError:
        return list(values)


def _pg_cast(field) -> str:
    return f"%s::{_db_type(field)}[]"


def _pg_unnest(fields: list, columns: list[list]) -> tuple[list[str], list, str]:
    """Rows as `FROM unnest(one array per column) AS u(c0, c1, ...)`: returns the expression
    that reads each column, the parameters in the order they appear, and the FROM source.
    A column with one value in every row (a batch's time, version, status) is sent once as
    a scalar, the others as one array each; the first column always as an array, since
    unnest() needs one to count the rows. The expressions come before the FROM source in
    every statement using it, so their scalars come first in the parameters."""
    selects, scalars, arrays, casts = [], [], [], []
    for index, (field, values) in enumerate(zip(fields, columns, strict=True)):
        first = values[0]
        # list.count and set(map(type)) compare in C: most columns differ at once.
        if index and values.count(first) == len(values) and len(set(map(type, values))) == 1:
            selects.append(f"%s::{_db_type(field)}")
            scalars.append(_pg_values(field, [first])[0])
        else:
            selects.append(f"u.c{len(arrays)}")
            arrays.append(_pg_array(field, values))
            casts.append(_pg_cast(field))
    names = ", ".join(f"c{index}" for index in range(len(arrays)))
    return selects, [*scalars, *arrays], f"unnest({', '.join(casts)}) AS u({names})"


def bulk_update_rows(model, objs: list, fields: list[str]) -> None:
    """UPDATE rows by primary key in one statement: FROM unnest(one array per column) on
    PostgreSQL, FROM (VALUES ...) elsewhere.

    Django's bulk_update builds a CASE WHEN per field and row, which costs about 1 ms of
    Python per row for a dozen fields; the engine writes every batch this way instead.
    `objs` need `pk` and the fields' attnames.
    """
    if not objs:
        return
    model_fields = [model._meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    pk_column = quote(model._meta.pk.column)
    assignments = ", ".join(
        f"{quote(field.column)} = v.column{index + 2}" for index, field in enumerate(model_fields)
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            ids = [obj.pk for obj in objs]
            selects, params, source = _pg_unnest(
                [model._meta.pk, *model_fields],
                [ids, *_columns(attrgetter, [field.attname for field in model_fields], objs)],
            )
            assignments = ", ".join(
                f"{quote(field.column)} = {select}"
                for field, select in zip(model_fields, selects[1:], strict=True)
            )
            # The ids again as `= ANY(...)`: with only the join to unnest, the planner read
            # the whole table into a hash (up to ~100,000 rows it costs less than 500 index
            # probes by its estimate), a batch's UPDATE growing with the table.
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM {source} WHERE {table}.{pk_column} = "
                f"{selects[0]} AND {table}.{pk_column} = ANY({_pg_cast(model._meta.pk)})",
                [*params, array_literal(ids)],
            )
            return
        row = "(" + ", ".join(["%s"] * (len(model_fields) + 1)) + ")"
        for start in range(0, len(objs), 1000):
            chunk = objs[start : start + 1000]
            params = []
            for obj in chunk:
                params.append(obj.pk)
                params.extend(
                    field.get_db_prep_save(getattr(obj, field.attname), connection)
                    for field in model_fields
                )
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM (VALUES {', '.join([row] * len(chunk))}) "
                f"AS v WHERE {table}.{pk_column} = v.column1",
                params,
            )


def insert_rows(
    model,
    rows: list[dict],
    *,
    ignore_conflicts: bool = False,
    conflict_target: str | None = None,
    returning: tuple = (),
) -> list[tuple]:
    """INSERT rows (dicts by field name, the same fields in each) in one statement,
    optionally ON CONFLICT DO NOTHING, RETURNING the given columns of the rows stored.

    On PostgreSQL the values travel as one array per column (INSERT ... SELECT FROM unnest),
    which keeps a 500-row insert to a handful of parameters; Django's bulk_create costs the
    engine more in building model objects and a huge statement than the database spends
    on the rows. It also cannot say which rows ON CONFLICT DO NOTHING skipped.
    """
    if not rows:
        return []
    names = list(rows[0])
    fields = [model._meta.get_field(name) for name in names]
    if connection.vendor != "postgresql":
        # SQLite takes at most 32,766 parameters a statement.
        size = max(1, 30000 // len(fields))
        if len(rows) > size:
            return [
                found
                for start in range(0, len(rows), size)
                for found in insert_rows(
                    model,
                    rows[start : start + size],
                    ignore_conflicts=ignore_conflicts,
                    conflict_target=conflict_target,
                    returning=returning,
                )
            ]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "
    if connection.vendor == "postgresql":
        selects, params, source = _pg_unnest(fields, _columns(itemgetter, names, rows))
        sql += f"SELECT {', '.join(selects)} FROM {source}"
    else:
        params = []
        for row in rows:
            params.extend(field.get_db_prep_save(row[field.name], connection) for field in fields)
        placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
        sql += f"VALUES {', '.join([placeholder] * len(rows))}"
    if conflict_target:
        sql += f" ON CONFLICT ({quote(conflict_target)}) DO NOTHING"
    elif ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += " RETURNING " + ", ".join(
            quote(model._meta.get_field(name).column) for name in returning
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if returning else []


def load_timestamps_in_c(sender, connection, **kwargs) -> None:
    """`connection_created` receiver: on PostgreSQL in UTC, timestamps are parsed by
    psycopg's C loader. Django registers its own (a subclass of psycopg's pure-Python
    loader, to set the connection's time zone), which parsed each timestamp in Python: an
    eighth of an engine batch's Python time. In UTC the C loader gives the same aware
    datetimes (`datetime.timezone.utc`); `timezone` is what Django compares before
    registering its loader again for a cursor."""
    if connection.vendor != "postgresql" or connection.timezone is not UTC:
        return
    from psycopg import adapters
    from psycopg.adapt import Loader
    from psycopg.postgres import types

    oid = types["timestamptz"].oid
    parse = adapters.get_loader(oid, Format.TEXT)

    class UtcTimestampLoader(Loader):
        timezone = UTC

        def __init__(self, oid, context=None):
            super().__init__(oid, context)
            self._parse = parse(oid, context).load

        def load(self, data):
            return self._parse(data)

    connection.connection.adapters.register_loader(oid, UtcTimestampLoader)


def claim(queryset, limit: int) -> list:
    """Up to `limit` rows of the queryset, locked FOR UPDATE SKIP LOCKED where the database
    can (on SQLite the IMMEDIATE transaction serialises writers instead), so workers share a
    backlog without waiting for each other. Only the queryset's own rows are locked
    (`OF self`): the message claim joins enrollments to leave out paused journeys, and
    without it locked them FOR UPDATE too, which blocks the foreign-key checks (KEY SHARE)
    of an engine batch writing visits and awards for them."""
    if connection.features.has_select_for_update_skip_locked:
        queryset = queryset.select_for_update(skip_locked=True, of=("self",))
    return list(queryset[:limit])


def share_lock(model, ids: set[int], *, skip_locked: bool = False) -> set[int]:
    """FOR KEY SHARE on the rows of `model` with these ids, in id order; returns the ids
    locked. KEY SHARE is the lock a foreign-key check takes for a row inserted against
    them: it waits only for a delete or a key change (an erasure rewrites the contact's
    external id), never for an ordinary update, nor for another holder of the same lock.
    skip_locked: leave out, instead of waiting for, the rows such a transaction holds. On
    SQLite, where the IMMEDIATE transaction serialises writers, only the ids that exist."""
    return {row[0] for row in locked_rows(model, ids, skip_locked=skip_locked)}


def locked_rows(
    model,
    ids: Iterable[int],
    fields: tuple[str, ...] = (),
    *,
    lock: str = "KEY SHARE",
    skip_locked: bool = False,
    where: dict | None = None,
) -> list[tuple]:
    """The rows of `model` with these ids (and the `where` equalities) as (pk, *fields),
    locked `FOR <lock>` in id order (`share_lock`; the engine's batch takes NO KEY UPDATE),
    each field converted as Django converts it. On SQLite, where the IMMEDIATE transaction
    serialises writers, the ORM reads them unlocked.

    One statement with a single array parameter, read as plain tuples: the ORM's queryset
    for the same rows cost the engine twice the Python time per batch."""
    ids = sorted(ids)
    if not ids:
        return []
    where = where or {}
    if not connection.features.has_select_for_update:
        return list(
            model.objects.filter(pk__any=ids, **where).order_by("pk").values_list("pk", *fields)
        )
    quote = connection.ops.quote_name
    model_fields = [model._meta.get_field(name) for name in fields]
    columns = ", ".join(
        quote(column) for column in [model._meta.pk.column] + [f.column for f in model_fields]
    )
    table, pk = quote(model._meta.db_table), quote(model._meta.pk.column)
    conditions = "".join(f" AND {quote(model._meta.get_field(name).column)} = %s" for name in where)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {table} WHERE {pk} = ANY(%s::bigint[]){conditions} "
            f"ORDER BY {pk} FOR {lock}{' SKIP LOCKED' if skip_locked else ''}",
            [array_literal(ids), *where.values()],
        )
        rows = cursor.fetchall()
    # The fields' own conversion from the database (JSON is read as text on PostgreSQL).
    converters = [
        (index, field.from_db_value)
        for index, field in enumerate(model_fields, start=1)
        if hasattr(field, "from_db_value")
    ]
    if not converters:
        return rows
    converted = []
    for row in rows:
        row = list(row)
        for index, convert in converters:
            row[index] = convert(row[index], None, connection)
        converted.append(tuple(row))
    return converted


def retrying_deadlocks(action, *, what: str):
    """Run `action` (one transaction of its own) again when PostgreSQL rolls it back to
    break a deadlock, at most 3 times in all. Not when the caller holds a transaction: its
    locks, still held, would meet the same deadlock again."""
    for attempt in range(3):
        try:
            return action()
        except OperationalError as exc:
            victim = getattr(exc.__cause__, "sqlstate", None) == "40P01"
            if connection.in_atomic_block or not victim or attempt == 2:
                raise
            logger.warning("%s was a deadlock victim; trying again", what)
