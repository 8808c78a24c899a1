"""Message templates: Liquid, sandboxed and bounded (docs/contract.md §6.1).

Subjects, bodies and SMS texts are written by marketers and rendered once per message, so a
template must neither reach past the message's data nor cost more than a message is worth.

- Sandbox: Liquid calls no methods and reads no attributes, only keys and indexes of the
  data it is given; the context holds the contact's plain data alone (`external_id`,
  `email`, `attributes`), frozen by `read_only` so that nothing can change what the next
  message of the same batch sees. There is no loader: `include` and `render` are not tags.
- Strict at parse: an unclosed tag, an unknown tag or an unknown filter is a
  `TemplateSyntaxError` naming its line, and definitions are refused when saved.
- Lenient with data: a missing attribute renders as empty text (as Django's templates did),
  because contacts' attributes differ and a message should not fail for a missing name.
- Limits per message: `MAX_LOOP_ITERATIONS` loop iterations, counted over the whole render
  (nested and one after another), and `MAX_OUTPUT_BYTES` of output (UTF-8, subject and body
  together, see `render_message`). Filters are bounded too: no filter takes or makes text or
  a list larger than the output limit, and `replace` and `join` are checked before they run,
  since one call of either can grow its input quadratically. Past a limit, rendering raises
  `TemplateLimitError`.
"""

import functools
from collections.abc import Mapping
from types import MappingProxyType

from liquid import BoundTemplate, Environment, RenderContext
from liquid.exceptions import (
    LiquidError,
    LoopIterationLimitError,
    OutputStreamLimitError,
    ResourceLimitError,
)

MAX_LOOP_ITERATIONS = 10_000
MAX_OUTPUT_BYTES = 100_000


class TemplateSyntaxError(Exception):
    """A template that does not parse; `line` is 1-based."""

    def __init__(self, message: str, line: int):
        self.line = line
        super().__init__(f"line {line}: {message}")


class TemplateLimitError(Exception):
    """A render that went past one of the limits; the message says which."""


def read_only(value):
    """JSON-like data, recursively frozen; anything else becomes its string form."""
    if isinstance(value, dict):
        return MappingProxyType({str(key): read_only(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(read_only(item) for item in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class _MessageContext(RenderContext):
    """Counts loop iterations over the whole render: Liquid's own check multiplies nested
    loops but lets any number of loops follow one another."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.iterations = 0

    def raise_for_loop_limit(self, length: int = 1) -> None:
        self.iterations += length
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise LoopIterationLimitError("loop iteration limit reached", token=None)
        super().raise_for_loop_limit(length)


class _MessageTemplate(BoundTemplate):
    context_class = _MessageContext


def _size(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple, range, Mapping)):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        # Digits, roughly: a product of huge numbers grows like text does.
        return value.bit_length() // 3
    return 0


def _refuse_oversized(name: str, value) -> None:
    if _size(value) > MAX_OUTPUT_BYTES:
        raise TemplateLimitError(
            f"the filter '{name}' would handle more than {MAX_OUTPUT_BYTES} characters or items"
        )


def _replace_size(value, old="", new="", *_rest) -> int:
    text, old, new = str(value), str(old), str(new)
    return len(text) + text.count(old) * max(len(new) - len(old), 0)


def _join_size(value, separator=" ", *_rest) -> int:
    if not isinstance(value, (list, tuple, range)):
        return 0
    items = sum(len(str(item)) for item in value)
    return items + len(str(separator)) * max(len(value) - 1, 0)


# Filters whose one call can grow far beyond its input: their result's size is worked out
# before they run.
_PREDICTED_SIZE = {"replace": _replace_size, "join": _join_size}


def _bounded(name: str, func):
    predict = _PREDICTED_SIZE.get(name)

    @functools.wraps(func)
    def bounded(value, *args, **kwargs):
        for argument in (value, *args, *kwargs.values()):
            _refuse_oversized(name, argument)
        if predict is not None and predict(value, *args) > MAX_OUTPUT_BYTES:
            raise TemplateLimitError(
                f"the filter '{name}' would make more than {MAX_OUTPUT_BYTES} characters"
            )
        result = func(value, *args, **kwargs)
        _refuse_oversized(name, result)
        return result

    return bounded


class MessageEnvironment(Environment):
    """Liquid as messages use it: the standard tags and filters, with limits."""

    template_class = _MessageTemplate
    loop_iteration_limit = MAX_LOOP_ITERATIONS
    output_stream_limit = MAX_OUTPUT_BYTES
    # `assign` and `capture` could otherwise build values no output ever shows.
    local_namespace_limit = MAX_OUTPUT_BYTES
    context_depth_limit = 30
    # Not in Shopify's Liquid, but templates written for Django's engine say `if not`, and
    # it reads as anyone expects.
    logical_not_operator = True

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        # Nothing to include: there is no loader, and a template names no other template.
        for tag in ("include", "render"):
            self.tags.pop(tag, None)
        self.filters = {name: _bounded(name, func) for name, func in self.filters.items()}


MESSAGE_TEMPLATES = MessageEnvironment(strict_filters=True, autoescape=False)


def _line_of(exc: LiquidError, source: str) -> int:
    context = exc.context()
    if context is not None:
        return context[0]
    # Errors found at the end of the text (an unclosed block) carry no position.
    return max(source.count("\n") + (0 if source.endswith("\n") else 1), 1)


@functools.lru_cache(maxsize=512)
def compile_template(source: str) -> BoundTemplate:
    """The parsed template; raises TemplateSyntaxError with the line of the first problem.

    Cached per process: the same subject is rendered for every contact of a step.
    """
    try:
        template = MESSAGE_TEMPLATES.from_string(source)
        used_filters = template.analyze().filters
    except LiquidError as exc:
        raise TemplateSyntaxError(str(exc.message), _line_of(exc, source)) from None
    except RecursionError:
        raise TemplateSyntaxError("the template nests too deeply", 1) from None
    # Liquid looks filters up when it renders; a misspelt one must be refused when saved.
    for name, spans in used_filters.items():
        if name not in MESSAGE_TEMPLATES.filters:
            line, _ = spans[0].line_col(source)
            raise TemplateSyntaxError(f"unknown filter '{name}'", line)
    return template


def render_template(source: str, contact: dict) -> str:
    """`source` rendered for a contact's plain data; raises TemplateSyntaxError,
    TemplateLimitError, or another LiquidError for a filter given the wrong kind of value."""
    template = compile_template(source)
    try:
        return template.render(contact=read_only(contact))
    except OutputStreamLimitError:
        raise TemplateLimitError(f"the output is longer than {MAX_OUTPUT_BYTES} bytes") from None
    except LoopIterationLimitError:
        raise TemplateLimitError(
            f"the loops run more than {MAX_LOOP_ITERATIONS} iterations"
        ) from None
    except ResourceLimitError as exc:
        raise TemplateLimitError(str(exc.message)) from None
    except RecursionError:
        raise TemplateLimitError("the template nests too deeply") from None


def render_message(subject: str, body: str, contact: dict) -> tuple[str, str]:
    """A message's subject (on one line) and body; the limits hold for both together."""
    rendered_subject = " ".join(render_template(subject, contact).split()) if subject else ""
    rendered_body = render_template(body, contact)
    size = len(rendered_subject.encode()) + len(rendered_body.encode())
    if size > MAX_OUTPUT_BYTES:
        raise TemplateLimitError(f"the output is longer than {MAX_OUTPUT_BYTES} bytes")
    return rendered_subject, rendered_body
