"""The API's request bodies: JSON that the database can store and the engine can compute
with, or a `BodyError` saying why not (and where), before any route reads it (`JsonParser` is
the NinjaAPI's parser). `check_json` applies the same rules to JSON that arrives another way
(the admin's forms)."""

import json
import math
import sys

from django.conf import settings
from ninja.parser import Parser

from journeys.definition import storable_text

# The largest magnitude a JSON number may have: what a double holds. Criteria compare numbers
# as doubles (as every JSON library an integration uses reads them), so a larger one cannot
# have been meant and only breaks arithmetic downstream.
NUMBER_LIMIT = sys.float_info.max
# Digits of the largest integer within NUMBER_LIMIT (309): longer literals are refused
# without being converted (Python refuses to convert more than 4,300 digits anyway).
_MAX_DIGITS = len(str(int(NUMBER_LIMIT)))


class BodyError(ValueError):
    """A request body that is not JSON the API accepts; the message says why, `loc` where
    (the path of the field, as the API's errors write it; ["body"] for the body as a whole)."""

    def __init__(self, message: str, loc: list | None = None):
        super().__init__(message)
        self.loc = loc or ["body"]


class _OutOfRange:
    """A number literal beyond NUMBER_LIMIT, kept as text until the walk names its path."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _reject_constant(name: str):
    # NaN and Infinity: Python accepts them, JSON and PostgreSQL do not.
    raise BodyError("The body is not valid JSON.")


def _parse_float(text: str) -> float | _OutOfRange:
    # 1e999 parses to infinity, which neither JSON nor PostgreSQL can hold.
    value = float(text)
    return value if math.isfinite(value) else _OutOfRange(text)


def _parse_int(text: str) -> int | _OutOfRange:
    if len(text.lstrip("-")) > _MAX_DIGITS:
        return _OutOfRange(text)
    value = int(text)
    return value if abs(value) <= NUMBER_LIMIT else _OutOfRange(text)


def _number_error(text: str, loc: list) -> BodyError:
    shown = text if len(text) <= 30 else f"{text[:20]}… ({len(text)} characters)"
    return BodyError(
        f"The number {shown} is too large: numbers must lie within ±1.8e308 (what a double holds).",
        loc,
    )


def check_json(value, *, limit: int, loc: list | None = None) -> None:
    """Raise BodyError, located by the path of the offending field, for strings the database
    cannot store, numbers beyond NUMBER_LIMIT, or nesting deeper than `limit`. Walked without
    recursion; `loc` prefixes the paths."""
    stack = [(value, 1, list(loc or []))]
    while stack:
        item, depth, path = stack.pop()
        kind = type(item)
        if kind is str:
            if not storable_text(item):
                raise BodyError(
                    "The body contains a NUL character or an unpaired surrogate (\\u0000, "
                    "\\ud800-\\udfff), which cannot be stored."
                )
            continue
        if kind is int:
            if abs(item) > NUMBER_LIMIT:
                raise _number_error(str(item), path)
            continue
        if kind is float:
            if not math.isfinite(item):
                raise _number_error(str(item), path)
            continue
        if kind is _OutOfRange:
            raise _number_error(item.text, path)
        if kind is dict:
            children = [(key, path) for key in item] + [
                (child, [*path, key]) for key, child in item.items()
            ]
        elif kind is list:
            children = [(child, [*path, index]) for index, child in enumerate(item)]
        else:
            continue
        if depth > limit:
            raise BodyError(f"The body is nested too deeply (more than {limit} levels).")
        stack.extend((child, depth + 1, child_path) for child, child_path in children)


def parse_json(raw: bytes) -> object:
    """The body as JSON, refusing NaN/Infinity and numbers beyond NUMBER_LIMIT (named by
    their path: `["events", 3, "properties", "amount"]`), strings the database cannot
    store, and nesting deeper than API_MAX_JSON_DEPTH, before any route reads it."""
    try:
        data = json.loads(
            raw,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
    except BodyError:
        raise
    except RecursionError:
        raise BodyError("The body is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError):
        raise BodyError("The body is not valid JSON.") from None
    check_json(data, limit=settings.API_MAX_JSON_DEPTH)
    return data


class JsonParser(Parser):
    def parse_body(self, request):
        return parse_json(request.body)
