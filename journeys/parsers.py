"""The API's request bodies: JSON that the database can store, or a `BodyError` saying why
not, before any route reads it (`JsonParser` is the NinjaAPI's parser)."""

import json
import math

from django.conf import settings
from ninja.parser import Parser

from journeys.definition import storable_text


class BodyError(ValueError):
    """A request body that is not JSON the API accepts; the message says why."""


def _reject_constant(name: str):
    # NaN and Infinity: Python accepts them, JSON and PostgreSQL do not.
    raise BodyError("The body is not valid JSON.")


def _finite_float(text: str) -> float:
    # 1e999 parses to infinity, which neither JSON nor PostgreSQL can hold.
    value = float(text)
    if math.isinf(value):
        raise BodyError(f"The number {text[:30]} is too large.")
    return value


def _check_body(value, limit: int) -> None:
    """Depth and strings of a parsed body, walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not storable_text(item):
                raise BodyError(
                    "The body contains a NUL character or an unpaired surrogate (\\u0000, "
                    "\\ud800-\\udfff), which cannot be stored."
                )
            continue
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise BodyError(f"The body is nested too deeply (more than {limit} levels).")
        stack.extend((child, depth + 1) for child in children)


def parse_json(raw: bytes) -> object:
    """The body as JSON, refusing NaN/Infinity and numbers too large to be finite (not
    JSON, and PostgreSQL's jsonb rejects them), strings the database cannot store, and
    nesting deeper than API_MAX_JSON_DEPTH, before any route reads it."""
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except BodyError:
        raise
    except RecursionError:
        raise BodyError("The body is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError):
        raise BodyError("The body is not valid JSON.") from None
    _check_body(data, settings.API_MAX_JSON_DEPTH)
    return data


class JsonParser(Parser):
    def parse_body(self, request):
        return parse_json(request.body)
