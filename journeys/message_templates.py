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
- Email HTML (`render_email`): the `html` field is rendered by its own environment that
  escapes what it outputs (a contact's attribute never becomes markup) and allows
  `MAX_HTML_BYTES` of output, as much as the template itself may hold; the text fields keep
  `MAX_OUTPUT_BYTES` together. Its CSS is inlined (css-inline, no remote stylesheets: the
  worker fetches nothing a marketer names), the preheader becomes hidden preview text at the
  top, and without a text body the text part is made from the HTML (`html_to_text`).
"""

import dataclasses
import functools
import re
from collections.abc import Mapping
from html import escape as escape_html
from html.parser import HTMLParser
from types import MappingProxyType

import css_inline
from liquid import BoundTemplate, Environment, RenderContext
from liquid.exceptions import (
    LiquidError,
    LoopIterationLimitError,
    OutputStreamLimitError,
    ResourceLimitError,
)

MAX_LOOP_ITERATIONS = 10_000
MAX_OUTPUT_BYTES = 100_000
MAX_HTML_BYTES = 1_000_000


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


class HtmlEnvironment(MessageEnvironment):
    """An email's HTML: the same language and limits, output escaped, a larger output."""

    output_stream_limit = MAX_HTML_BYTES


MESSAGE_TEMPLATES = MessageEnvironment(strict_filters=True, autoescape=False)
HTML_TEMPLATES = HtmlEnvironment(strict_filters=True, autoescape=True)


def _line_of(exc: LiquidError, source: str) -> int:
    context = exc.context()
    if context is not None:
        return context[0]
    # Errors found at the end of the text (an unclosed block) carry no position.
    return max(source.count("\n") + (0 if source.endswith("\n") else 1), 1)


def _compile(environment: MessageEnvironment, source: str) -> BoundTemplate:
    try:
        template = environment.from_string(source)
        used_filters = template.analyze().filters
    except LiquidError as exc:
        raise TemplateSyntaxError(str(exc.message), _line_of(exc, source)) from None
    except RecursionError:
        raise TemplateSyntaxError("the template nests too deeply", 1) from None
    # Liquid looks filters up when it renders; a misspelt one must be refused when saved.
    for name, spans in used_filters.items():
        if name not in environment.filters:
            line, _ = spans[0].line_col(source)
            raise TemplateSyntaxError(f"unknown filter '{name}'", line)
    return template


@functools.lru_cache(maxsize=512)
def compile_template(source: str) -> BoundTemplate:
    """The parsed template; raises TemplateSyntaxError with the line of the first problem.

    Cached per process: the same subject is rendered for every contact of a step.
    """
    return _compile(MESSAGE_TEMPLATES, source)


# Fewer: an HTML template may be up to a megabyte.
@functools.lru_cache(maxsize=32)
def compile_html_template(source: str) -> BoundTemplate:
    """An email's HTML parsed, as `compile_template`; what it outputs is escaped."""
    return _compile(HTML_TEMPLATES, source)


def render_template(
    source: str, contact: dict, *, unsubscribe_url: str = "", html: bool = False
) -> str:
    """`source` rendered for a contact's plain data; raises TemplateSyntaxError,
    TemplateLimitError, or another LiquidError for a filter given the wrong kind of value."""
    template = compile_html_template(source) if html else compile_template(source)
    limit = MAX_HTML_BYTES if html else MAX_OUTPUT_BYTES
    try:
        return template.render(contact=read_only(contact), unsubscribe_url=unsubscribe_url)
    except OutputStreamLimitError:
        raise TemplateLimitError(f"the output is longer than {limit} bytes") from None
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


@dataclasses.dataclass(frozen=True)
class RenderedEmail:
    subject: str
    preheader: str
    text: str
    # Empty for a text-only email; otherwise the whole document, CSS inlined.
    html: str


def render_email(
    *,
    subject: str,
    body: str,
    contact: dict,
    preheader: str = "",
    html: str = "",
    unsubscribe_url: str = "",
) -> RenderedEmail:
    """An email as it is sent. With `unsubscribe_url` (marketing email), a part that does not
    show the link itself gets a footer line with it, so that every marketing email has one."""
    data = {"contact": contact, "unsubscribe_url": unsubscribe_url}
    rendered_subject = " ".join(render_template(subject, **data).split()) if subject else ""
    rendered_preheader = " ".join(render_template(preheader, **data).split()) if preheader else ""
    text = render_template(body, **data) if body else ""
    size = sum(len(part.encode()) for part in (rendered_subject, rendered_preheader, text))
    if size > MAX_OUTPUT_BYTES:
        raise TemplateLimitError(f"the output is longer than {MAX_OUTPUT_BYTES} bytes")
    document = ""
    if html:
        document = render_template(html, html=True, **data)
        if not text:
            text = html_to_text(document)
        document = _HTML_INLINER.inline(document)
        if unsubscribe_url and unsubscribe_url not in document:
            document = _before_body_end(document, _html_footer(unsubscribe_url))
        if rendered_preheader:
            document = _after_body_start(document, _hidden_preview(rendered_preheader))
    if unsubscribe_url and unsubscribe_url not in text:
        text = f"{text.rstrip()}\n\n--\nUnsubscribe: {unsubscribe_url}\n"
    return RenderedEmail(rendered_subject, rendered_preheader, text, document)


# Remote stylesheets are never fetched (the worker would request any URL a marketer
# writes); at-rules such as @media stay in a <style> tag, where mail clients that read them
# find them.
_HTML_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


def _hidden_preview(preheader: str) -> str:
    return (
        '<div style="display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;'
        f'opacity:0;overflow:hidden;mso-hide:all">{escape_html(preheader)}</div>'
    )


def _html_footer(unsubscribe_url: str) -> str:
    return (
        '<p style="font-size:12px;color:#666666;margin-top:24px">'
        f'<a href="{escape_html(unsubscribe_url)}">Unsubscribe</a> from these emails.</p>'
    )


_BODY_START = re.compile(r"<body[^>]*>", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _after_body_start(document: str, fragment: str) -> str:
    match = _BODY_START.search(document)
    at = match.end() if match else 0
    return document[:at] + fragment + document[at:]


def _before_body_end(document: str, fragment: str) -> str:
    matches = list(_BODY_END.finditer(document))
    at = matches[-1].start() if matches else len(document)
    return document[:at] + fragment + document[at:]


_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_HIDDEN = frozenset({"head", "script", "style", "template", "title"})


class _TextMaker(HTMLParser):
    """Text of an HTML email: blocks on their own lines, links as "text (url)", no markup."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.links: list[tuple[str, int]] = []

    def handle_starttag(self, tag, attrs):
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCKS:
            self.parts.append("\n- " if tag == "li" else "\n")
        elif tag == "a":
            self.links.append((dict(attrs).get("href") or "", len(self.parts)))

    def handle_startendtag(self, tag, attrs):
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _HIDDEN:
            self.hidden = max(self.hidden - 1, 0)
        elif tag in _BLOCKS and tag != "li":
            self.parts.append("\n")
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            label = " ".join("".join(self.parts[start:]).split())
            if href and not href.startswith("#") and href not in (label, f"mailto:{label}"):
                self.parts.append(f" ({href})" if label else href)

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """A text part for an email that has only HTML."""
    maker = _TextMaker()
    maker.feed(html)
    maker.close()
    lines = [" ".join(line.split()) for line in "".join(maker.parts).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
