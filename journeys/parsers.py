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
    """Raise BodyError for strings the database cannot store, numbers beyond NUMBER_LIMIT
    (located by the path of their field, after `loc`), or nesting deeper than `limit`.
    Walked without recursion; paths are only worked out for a number found bad, so the
    common case costs what it did before numbers were checked."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str:
            if not storable_text(item):
                raise BodyError(
                    "The body contains a NUL character or an unpaired surrogate (\\u0000, "
                    "\\ud800-\\udfff), which cannot be stored."
                )
        elif kind is int:
            # bit_length first: cheaper than comparing every integer with a float.
            if item.bit_length() > 1023 and abs(item) > NUMBER_LIMIT:
                raise _number_error(str(item), [*(loc or []), *_path_to(value, item)])
        elif kind is float:
            if not math.isfinite(item):
                raise _number_error(str(item), [*(loc or []), *_path_to(value, item)])
        elif kind is _OutOfRange:
            raise _number_error(item.text, [*(loc or []), *_path_to(value, item)])
        elif kind is dict or kind is list:
            if depth > limit:
                raise BodyError(f"The body is nested too deeply (more than {limit} levels).")
            children = [*item.keys(), *item.values()] if kind is dict else item
            stack.extend((child, depth + 1) for child in children)


def _path_to(value, target) -> list:
    """The keys and indexes leading from `value` to the very object `target`."""
    stack = [(value, [])]
    while stack:
        item, path = stack.pop()
        if item is target:
            return path
        if type(item) is dict:
            stack.extend((child, [*path, key]) for key, child in item.items())
        elif type(item) is list:
            stack.extend((child, [*path, index]) for index, child in enumerate(item))
    return []


def _loads(raw: bytes, **hooks) -> object:
    return json.loads(raw, parse_constant=_reject_constant, parse_float=_parse_float, **hooks)


def parse_json(raw: bytes) -> object:
    """The body as JSON, refusing NaN/Infinity and numbers beyond NUMBER_LIMIT (named by
    their path: `["events", 3, "properties", "amount"]`), strings the database cannot
    store, and nesting deeper than API_MAX_JSON_DEPTH, before any route reads it."""
    try:
        try:
            data = _loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise
        except ValueError:
            # An integer literal past the 4,300 digits Python converts: read again with
            # integers checked as text, which keeps the body's path to that one.
            data = _loads(raw, parse_int=_parse_int)
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
