"""PostgreSQL array literals built in Python for the engine's bulk reads and writes.

psycopg adapts a list parameter element by element in Python (quoting each through a
regular expression); for the engine's batches (500 ids, a dozen columns of 500 values) that
was a third of the write path's Python time. `array_literal` joins common columns (ints,
plain strings, aware datetimes) in C through str.join and map, and quotes the rest one by
one. The caller casts the parameter (`%s::bigint[]`), so the server parses the literal.
"""

from datetime import datetime
from decimal import Decimal
from operator import attrgetter


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
