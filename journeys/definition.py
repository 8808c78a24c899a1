"""The journey definition of docs/contract.md §1: parsing, validation and canonical rendering.

Pure: no ORM, no database, no settings. The API, the import and export commands and the
engine all go through `parse_definition` and `render_definition`, so a definition means
the same thing wherever it comes from.

Validation reports every problem at once, each as {"loc": [...], "message": "..."}. The
per-object rules (types, unknown fields, slugs, durations, template syntax) live on the
pydantic models; the rules that span the whole definition (references, duplicates,
reachability, loops) run afterwards, on whatever parts did validate, so that one broken
step does not hide the mistakes in the others.
"""

import contextvars
import dataclasses
import datetime
import functools
import math
import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from email.utils import parseaddr
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from journeys.message_templates import (
    MAX_HTML_BYTES,
    TemplateSyntaxError,
    compile_html_template,
    compile_template,
)

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")

MAX_NAME_LENGTH = 200
MAX_IDENTIFIER_LENGTH = 100
MAX_CRITERIA_DEPTH = 20
# Any JSON nested deeper than this is refused before validation: nothing in the format needs
# it (criteria stop at MAX_CRITERIA_DEPTH, about 45 levels), and it keeps recursion in
# pydantic, rendering and json.dumps far from Python's stack limit.
MAX_JSON_DEPTH = 64
# Enough for any marketing wait; also keeps `now + duration` far from datetime's year 9999.
MAX_DURATION = datetime.timedelta(days=3650)
# Conversions.value is stored as DECIMAL(14, 2).
MAX_CONVERSION_VALUE = Decimal("999999999999.99")


class DefinitionError(Exception):
    """A definition that cannot be used; `errors` lists every problem found, not the first."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        summary = "; ".join(f"{_format_loc(e['loc'])}: {e['message']}" for e in errors[:5])
        if len(errors) > 5:
            summary += f"; and {len(errors) - 5} more"
        super().__init__(f"Invalid journey definition: {summary}")


@dataclasses.dataclass(frozen=True)
class JourneyRefs:
    """What another journey offers to reference: its conversion and goal keys."""

    conversion_keys: frozenset[str] = frozenset()
    goal_keys: frozenset[str] = frozenset()


def normalize_name(name: str) -> str:
    """The form in which goal and conversion names must be unique: "Booked meeting" and
    "booked-meeting " are both "bookedmeeting"."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(char for char in folded if char.isalnum())


_DURATION_RE = re.compile(
    r"P(?:(?P<weeks>[0-9]+)W)?(?:(?P<days>[0-9]+)D)?"
    r"(?:T(?:(?P<hours>[0-9]+)H)?(?:(?P<minutes>[0-9]+)M)?(?:(?P<seconds>[0-9]+)S)?)?"
)
_DURATION_EXAMPLES = "e.g. PT30M, PT12H, P2D, P1W or P1DT12H"


def parse_duration(text: str) -> datetime.timedelta:
    """An ISO 8601 duration in weeks, days, hours, minutes and seconds, as a timedelta.

    Months and years are refused: their length depends on the calendar, and a wait that
    means 28 days for one contact and 31 for another makes reports hard to read.
    """
    if not isinstance(text, str):
        raise ValueError(f"A duration must be a string ({_DURATION_EXAMPLES})")
    if text.startswith("-"):
        raise ValueError("A duration must be longer than zero")
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        if re.fullmatch(r"P[0-9.,]*[0-9]+[YM].*", text) and not text.startswith("PT"):
            raise ValueError(
                f"'{text}' counts months or years, which vary in length; "
                "use days or weeks instead (e.g. P30D, P52W)"
            )
        if re.fullmatch(r"PT?[0-9WDTHMS]*[0-9]+[.,][0-9]+[WDHMS].*", text):
            raise ValueError(f"'{text}' has a fraction; use whole numbers (e.g. PT90M, not PT1.5H)")
        raise ValueError(f"'{text}' is not an ISO 8601 duration ({_DURATION_EXAMPLES})")
    parts = {name: int(value) for name, value in match.groupdict().items() if value is not None}
    if not parts or text.endswith("T"):
        raise ValueError(f"'{text}' is not an ISO 8601 duration ({_DURATION_EXAMPLES})")
    # Summed in plain integers so that an absurd number is a clear error, not an
    # OverflowError from timedelta.
    seconds = (
        ((parts.get("weeks", 0) * 7 + parts.get("days", 0)) * 24 + parts.get("hours", 0)) * 60
        + parts.get("minutes", 0)
    ) * 60 + parts.get("seconds", 0)
    if seconds <= 0:
        raise ValueError("A duration must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(
            f"'{text}' is too long; the longest duration is {format_duration(MAX_DURATION)}"
        )
    return datetime.timedelta(seconds=seconds)


_CLOCK_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def parse_clock(text: str) -> datetime.time:
    """A wall-clock time written HH:MM, 24-hour (quiet hours); ValueError otherwise."""
    match = _CLOCK_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"Use a 24-hour time HH:MM such as 08:00, not '{text}'")
    return datetime.time(int(match[1]), int(match[2]))


@functools.lru_cache(maxsize=256)
def cached_duration(text: str) -> datetime.timedelta:
    """`parse_duration` of a validated definition's duration, parsed once per process: the
    engine asks for a step's wait on every run."""
    return parse_duration(text)


def format_duration(td: datetime.timedelta) -> str:
    """The canonical ISO 8601 form of a duration: days, then hours, minutes and seconds
    (P1DT12H, PT30M, P14D); never weeks, months or years."""
    if td <= datetime.timedelta(0):
        raise ValueError("A duration must be longer than zero")
    if td.microseconds:
        raise ValueError("A duration must be a whole number of seconds")
    hours, rest = divmod(td.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "P" + (f"{td.days}D" if td.days else "")
    clock = "".join(
        f"{amount}{unit}"
        for amount, unit in ((hours, "H"), (minutes, "M"), (seconds, "S"))
        if amount
    )
    return text + ("T" + clock if clock else "")


# --- Field types ----------------------------------------------------------------------------


def _problem(message: str) -> PydanticCustomError:
    # No context is passed, so braces in the message (template text) are never formatted.
    return PydanticCustomError("definition", message)


def _problem_at(loc: tuple, message: str, value: object) -> ValidationError:
    """A problem on a field below the value being validated; pydantic prefixes the rest of
    the location when this is raised inside a validator."""
    return ValidationError.from_exception_data(
        "Definition", [{"type": _problem(message), "loc": loc, "input": value}]
    )


def _check_slug(value: str) -> str:
    if not value:
        raise _problem("Must not be empty")
    if len(value) > 64:
        raise _problem("Must be at most 64 characters")
    if not SLUG_RE.match(value):
        raise _problem(
            "Use lowercase letters, digits, '-' and '_', starting with a letter or digit "
            "(e.g. 'trial-nurture')"
        )
    return value


def _check_name(value: str) -> str:
    if not value.strip():
        raise _problem("Must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise _problem(f"Must be at most {MAX_NAME_LENGTH} characters")
    return value


def _check_label(value: str) -> str:
    # Goal and conversion names are unique by normalize_name, so a name needs something
    # that survives it.
    _check_name(value)
    if not normalize_name(value):
        raise _problem("Must contain a letter or a digit")
    return value


def _check_identifier(value: str) -> str:
    if not value.strip():
        raise _problem("Must not be empty")
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise _problem(f"Must be at most {MAX_IDENTIFIER_LENGTH} characters")
    if value != value.strip():
        raise _problem("Must not start or end with spaces")
    return value


def _parses_with(parse: Callable[[str], object]) -> Callable[[str], str]:
    """A check that `parse` accepts the text, its ValueError as the problem."""

    def check(value: str) -> str:
        try:
            parse(value)
        except ValueError as exc:
            raise _problem(str(exc)) from None
        return value

    return check


def _check_template(value: str) -> str:
    if not value.strip():
        raise _problem("Must not be empty")
    return _check_optional_template(value)


def _check_optional_template(value: str, compile: Callable = compile_template) -> str:
    # Parsed by the engine that renders it (journeys.message_templates), so what is
    # accepted here is what the worker can render: Liquid, its standard tags and filters.
    try:
        compile(value)
    except TemplateSyntaxError as exc:
        raise _problem(f"Template syntax error on {exc}") from None
    return value


def _check_html_template(value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_HTML_BYTES:
        raise _problem(f"Must be at most {MAX_HTML_BYTES // 1_000_000} MB")
    return _check_optional_template(value, compile_html_template)


ADDRESS_PROBLEM = "Enter an email address, e.g. news@example.com or Name <news@example.com>"


def is_plain_address(value: str) -> bool:
    """A sender or reply-to: "news@example.com" or "Example News <news@example.com>". No
    Liquid: a sender is the same for every contact, and an address made from data could be
    anything. No line breaks: the value becomes a header."""
    _, address = parseaddr(value)
    if "\n" in value or "\r" in value or not address:
        return False
    try:
        validate_email(address)
    except DjangoValidationError:
        return False
    return True


def _check_address(value: str) -> str:
    if not is_plain_address(value):
        raise _problem(ADDRESS_PROBLEM)
    return value


Slug = Annotated[str, AfterValidator(_check_slug)]
Name = Annotated[str, AfterValidator(_check_name)]
Label = Annotated[str, AfterValidator(_check_label)]
EventName = Annotated[str, AfterValidator(_check_identifier)]
PropertyName = Annotated[str, AfterValidator(_check_identifier)]
AttributeName = Annotated[str, AfterValidator(_check_identifier)]
Duration = Annotated[str, AfterValidator(_parses_with(parse_duration))]
Clock = Annotated[str, AfterValidator(_parses_with(parse_clock))]
TemplateText = Annotated[str, AfterValidator(_check_template)]
OptionalTemplateText = Annotated[str, AfterValidator(_check_optional_template)]
HtmlTemplateText = Annotated[str, AfterValidator(_check_html_template)]
EmailAddress = Annotated[str, AfterValidator(_check_address)]
# Marketing (the default) needs the channel's consent and carries an unsubscribe link;
# transactional (a receipt, a password reset) goes to anyone with an address.
Category = Literal["marketing", "transactional"]
# A reference to a step, goal or conversion; whether it exists is checked across the
# whole definition, so any string is accepted here.
Ref = str


class _Model(BaseModel):
    # strict: JSON true is not the number 1 and "10" is not 10.
    model_config = ConfigDict(extra="forbid", strict=True, serialize_by_alias=True)

    # Optional fields left out of the rendered JSON while None or empty. Branch fields
    # (next, then, ...) are not listed: their null means "the enrollment completes here"
    # and is always written out.
    omit_when_empty: ClassVar[frozenset[str]] = frozenset()
    # Left out unless given: a criterion's value, where null is a real value to compare.
    omit_unless_set: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _canonical(self, handler):
        data = handler(self)
        for name in self.omit_when_empty:
            if name in data and (data[name] is None or data[name] == []):
                del data[name]
        for name in self.omit_unless_set:
            if name not in self.model_fields_set:
                data.pop(name, None)
        return data


# --- Criteria -------------------------------------------------------------------------------

_criteria_depth: contextvars.ContextVar[int] = contextvars.ContextVar("criteria_depth", default=0)

Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "contains", "in", "exists"]
# The comparison operators; the editor's tables of them follow this one (journeys.checks).
OPS: tuple[str, ...] = get_args(Op)
_SCALAR_TYPES = (str, int, float, bool, type(None))


def _check_comparison(criterion: "AttributeCriterion | PropertyFilter") -> None:
    value = criterion.value
    has_value = "value" in criterion.model_fields_set
    op = criterion.op
    if op == "exists":
        if has_value and not isinstance(value, bool):
            raise _problem_at(
                ("value",), "With 'exists', leave the value out or use true or false", value
            )
        return
    if not has_value:
        raise _problem_at(("value",), f"A value is required with '{op}'", None)
    if op == "in":
        if not isinstance(value, list):
            raise _problem_at(("value",), "With 'in', the value must be a list", value)
        if not value:
            raise _problem_at(("value",), "With 'in', list at least one value", value)
        for index, item in enumerate(value):
            _check_scalar(item, ("value", index))
        return
    _check_scalar(value, ("value",))
    if op in ("gt", "gte", "lt", "lte") and (value is None or isinstance(value, bool)):
        raise _problem_at(
            ("value",), f"With '{op}', compare with a number or a string (e.g. a date)", value
        )


def _check_scalar(value: object, loc: tuple) -> None:
    if not isinstance(value, _SCALAR_TYPES):
        raise _problem_at(loc, "The value must be a string, a number, true, false or null", None)
    if isinstance(value, float) and not math.isfinite(value):
        raise _problem_at(loc, "The value must be a finite number", None)


class AttributeCriterion(_Model):
    """A comparison on one of the contact's attributes."""

    attribute: AttributeName
    op: Op
    value: Any = None

    omit_unless_set = frozenset({"value"})

    @model_validator(mode="after")
    def check_value(self):
        _check_comparison(self)
        return self


class PropertyFilter(_Model):
    """A comparison on one of an event's properties, inside a `where` list."""

    property: PropertyName
    op: Op
    value: Any = None

    omit_unless_set = frozenset({"value"})

    @model_validator(mode="after")
    def check_value(self):
        _check_comparison(self)
        return self


def _validate_filter(value: object, handler) -> object:
    return _validate_criteria_node(
        value,
        {"property": PropertyFilter, "all": AllFilters, "any": AnyFilters},
        what="filter",
        misplaced={
            "attribute": "Filters in 'where' look at the event's properties: "
            "use 'property' instead of 'attribute'",
            "event": "An event criterion cannot be used inside 'where'",
        },
    )


def _validate_criterion(value: object, handler) -> object:
    return _validate_criteria_node(
        value,
        {
            "attribute": AttributeCriterion,
            "event": EventCriterion,
            "all": AllCriteria,
            "any": AnyCriteria,
        },
        what="criterion",
        misplaced={
            "property": "'property' looks at an event's properties and only works inside "
            "an event's 'where'; use 'attribute' for the contact's attributes",
        },
    )


def _validate_criteria_node(
    value: object, kinds: dict[str, type[_Model]], *, what: str, misplaced: dict[str, str]
) -> object:
    if isinstance(value, tuple(kinds.values())):
        return value
    if not isinstance(value, dict):
        raise _problem(f"A {what} must be an object with one of: {', '.join(kinds)}")
    found = [kind for kind in kinds if kind in value]
    if not found:
        for key, message in misplaced.items():
            if key in value:
                raise _problem_at((key,), message, value)
        raise _problem(f"A {what} needs one of: {', '.join(kinds)}")
    if len(found) > 1:
        raise _problem(f"A {what} takes only one of {' and '.join(map(repr, found))}")
    depth = _criteria_depth.get() + 1
    if depth > MAX_CRITERIA_DEPTH:
        raise _problem(f"Criteria are nested more than {MAX_CRITERIA_DEPTH} levels deep")
    token = _criteria_depth.set(depth)
    try:
        return kinds[found[0]].model_validate(value)
    finally:
        _criteria_depth.reset(token)


Filter = Annotated[
    Union["PropertyFilter", "AllFilters", "AnyFilters"], WrapValidator(_validate_filter)
]
Criterion = Annotated[
    Union["AttributeCriterion", "EventCriterion", "AllCriteria", "AnyCriteria"],
    WrapValidator(_validate_criterion),
]


def _at_least_one(items: list) -> list:
    if not items:
        raise _problem("List at least one criterion")
    return items


class AllFilters(_Model):
    all: Annotated[list[Filter], AfterValidator(_at_least_one)]


class AnyFilters(_Model):
    any: Annotated[list[Filter], AfterValidator(_at_least_one)]


class EventCriterion(_Model):
    """The contact performed the event since the enrollment started, or within `within`."""

    event: EventName
    where: list[Filter] = []
    within: Duration | None = None

    omit_when_empty = frozenset({"where", "within"})

    @property
    def within_delta(self) -> datetime.timedelta | None:
        return cached_duration(self.within) if self.within else None


class AllCriteria(_Model):
    all: Annotated[list[Criterion], AfterValidator(_at_least_one)]


class AnyCriteria(_Model):
    any: Annotated[list[Criterion], AfterValidator(_at_least_one)]


# --- Triggers and exit rules ----------------------------------------------------------------


class EventTrigger(_Model):
    type: Literal["event"]
    event: EventName
    where: list[Filter] = []

    omit_when_empty = frozenset({"where"})


class ConversionTrigger(_Model):
    type: Literal["conversion"]
    journey: Slug
    conversion: Ref


class GoalTrigger(_Model):
    type: Literal["goal"]
    journey: Slug
    goal: Ref


class EventExit(_Model):
    type: Literal["event"]
    event: EventName
    where: list[Filter] = []

    omit_when_empty = frozenset({"where"})


class ConversionExit(_Model):
    # journey stays unset rather than filled in with this journey's key, so that a copy
    # imported under another key still refers to its own conversions.
    type: Literal["conversion"]
    conversion: Ref
    journey: Slug | None = None

    omit_when_empty = frozenset({"journey"})


class GoalExit(_Model):
    type: Literal["goal"]
    goal: Ref
    journey: Slug | None = None

    omit_when_empty = frozenset({"journey"})


def _validate_by_type(value: object, kinds: dict[str, type[_Model]], what: str) -> object:
    if isinstance(value, tuple(kinds.values())):
        return value
    if not isinstance(value, dict):
        raise _problem(f"Each {what} must be an object")
    expected = ", ".join(kinds)
    if "type" not in value:
        raise _problem_at(("type",), f"Field required; expected one of {expected}", value)
    kind = value["type"]
    if not isinstance(kind, str) or kind not in kinds:
        shown = repr(kind) if isinstance(kind, str) else "of the wrong kind"
        raise _problem_at(
            ("type",), f"Unknown {what} type {shown}; expected one of {expected}", kind
        )
    return kinds[kind].model_validate(value)


_TRIGGER_KINDS = {"event": EventTrigger, "conversion": ConversionTrigger, "goal": GoalTrigger}
_EXIT_KINDS = {"event": EventExit, "conversion": ConversionExit, "goal": GoalExit}

Trigger = Annotated[
    EventTrigger | ConversionTrigger | GoalTrigger,
    Field(discriminator="type"),
    WrapValidator(lambda value, handler: _validate_by_type(value, _TRIGGER_KINDS, "trigger")),
]
ExitRule = Annotated[
    EventExit | ConversionExit | GoalExit,
    Field(discriminator="type"),
    WrapValidator(lambda value, handler: _validate_by_type(value, _EXIT_KINDS, "exit_when")),
]


# --- Steps ----------------------------------------------------------------------------------


class _Step(_Model):
    key: Slug
    type: str
    name: Name | None = None

    omit_when_empty = frozenset({"name"})

    def successors(self) -> list[str]:
        """The keys of the steps this one can lead to, without the nulls that end it."""
        return [target for _, target in self._branches() if target is not None]

    def _branches(self) -> list[tuple[tuple, str | None]]:
        """Every branch with its location under the step, for reference errors."""
        return [(("next",), self.next)]


class SendEmail(_Step):
    type: Literal["send_email"]
    subject: TemplateText
    # May be empty when `html` is given: the text part is then made from the HTML.
    body: OptionalTemplateText = ""
    preheader: OptionalTemplateText | None = None
    html: HtmlTemplateText | None = None
    from_email: EmailAddress | None = None
    reply_to: EmailAddress | None = None
    category: Category | None = None
    next: Ref | None = None

    omit_when_empty = frozenset({"name", "preheader", "html", "from_email", "reply_to", "category"})

    @model_validator(mode="after")
    def check_content(self):
        if not self.body.strip() and not (self.html or "").strip():
            raise _problem_at(("body",), "Must not be empty (unless the email has HTML)", self.body)
        return self


class SendSms(_Step):
    type: Literal["send_sms"]
    text: TemplateText
    category: Category | None = None
    next: Ref | None = None

    omit_when_empty = frozenset({"name", "category"})


class Wait(_Step):
    type: Literal["wait"]
    duration: Duration
    next: Ref | None = None

    @property
    def duration_delta(self) -> datetime.timedelta:
        return cached_duration(self.duration)


class Condition(_Step):
    type: Literal["condition"]
    if_: Criterion = Field(alias="if")
    then: Ref | None = None
    else_: Ref | None = Field(default=None, alias="else")

    def _branches(self):
        return [(("then",), self.then), (("else",), self.else_)]


class SplitPath(_Model):
    weight: int = Field(gt=0)
    next: Ref | None = None


class Split(_Step):
    type: Literal["split"]
    paths: list[SplitPath]

    @field_validator("paths")
    @classmethod
    def check_paths(cls, paths):
        if len(paths) < 2:
            raise _problem("A split needs at least 2 paths")
        return paths

    def _branches(self):
        return [(("paths", index, "next"), path.next) for index, path in enumerate(self.paths)]


def _check_json(value: object, loc: tuple) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise _problem_at(loc, "Numbers must be finite", None)
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, (*loc, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _problem_at(loc, "Object keys must be strings", None)
            _check_json(item, (*loc, key))
    elif not isinstance(value, _SCALAR_TYPES):
        raise _problem_at(
            loc, "Use a string, a number, true, false, null, a list or an object", None
        )


class UpdateContact(_Step):
    type: Literal["update_contact"]
    attributes: dict[AttributeName, Any]
    next: Ref | None = None

    @field_validator("attributes")
    @classmethod
    def check_attributes(cls, attributes):
        if not attributes:
            raise _problem("Set at least one attribute")
        for name, value in attributes.items():
            _check_json(value, (name,))
        return attributes


class EvaluateGoal(_Step):
    type: Literal["evaluate_goal"]
    goal: Ref
    wait: Duration | None = None
    achieved: Ref | None = None
    not_achieved: Ref | None = None

    omit_when_empty = frozenset({"name", "wait"})

    @property
    def wait_delta(self) -> datetime.timedelta | None:
        return cached_duration(self.wait) if self.wait else None

    def _branches(self):
        return [(("achieved",), self.achieved), (("not_achieved",), self.not_achieved)]


class Convert(_Step):
    type: Literal["convert"]
    conversion: Ref
    next: Ref | None = None


class Exit(_Step):
    type: Literal["exit"]

    def _branches(self):
        return []


_AnyStep = (
    SendEmail | SendSms | Wait | Condition | Split | UpdateContact | EvaluateGoal | Convert | Exit
)
_STEP_KINDS: dict[str, type[_Step]] = {
    get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(_AnyStep)
}
# The step types, in the order the editor offers them; the engine's handlers and the
# editor's labels and forms follow this one (journeys.checks).
STEP_TYPES: tuple[str, ...] = tuple(_STEP_KINDS)

Step = Annotated[
    _AnyStep,
    Field(discriminator="type"),
    WrapValidator(lambda value, handler: _validate_by_type(value, _STEP_KINDS, "step")),
]


# --- Goals, conversions, the definition -----------------------------------------------------


class Goal(_Model):
    key: Slug
    name: Label
    criteria: Criterion
    conversion: Ref | None = None
    description: str | None = None

    omit_when_empty = frozenset({"conversion", "description"})


class ConversionEvent(_Model):
    event: EventName
    where: list[Filter] = []
    value_property: PropertyName | None = None

    omit_when_empty = frozenset({"where", "value_property"})


class Conversion(_Model):
    key: Slug
    name: Label
    value: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    counting: Literal["once_per_enrollment", "once_per_contact", "every_time"] = (
        "once_per_enrollment"
    )
    window: Duration | None = None
    event: ConversionEvent | None = None
    description: str | None = None

    omit_when_empty = frozenset({"window", "event", "description"})

    @field_validator("value")
    @classmethod
    def check_value(cls, value):
        amount = Decimal(repr(value))
        if amount > MAX_CONVERSION_VALUE:
            raise _problem(f"Must be at most {MAX_CONVERSION_VALUE}")
        if amount != amount.quantize(Decimal("0.01")):
            raise _problem("Use at most 2 decimal places")
        return value

    @property
    def window_delta(self) -> datetime.timedelta | None:
        return cached_duration(self.window) if self.window else None


class QuietHours(_Model):
    """Wall-clock hours in the contact's zone when marketing messages wait (contract 6.1);
    a window may cross midnight. Enforced by journeys.delivery_rules."""

    start: Clock
    end: Clock

    @model_validator(mode="after")
    def check_window(self):
        if self.start == self.end:
            raise _problem_at(
                ("end",), "Must differ from start (a window of no time, or of all day)", self.end
            )
        return self


class Settings(_Model):
    reentry: Literal["once", "after_exit", "concurrent"] = "once"
    holdout_percent: int = Field(default=0, ge=0, le=50)
    quiet_hours: QuietHours | None = None

    omit_when_empty = frozenset({"quiet_hours"})


class Definition(_Model):
    """A whole journey definition. Build it with `parse_definition`: validating this model
    alone checks each part but not the references, duplicates and loops between them."""

    key: Slug
    name: Name
    description: str | None = None
    settings: Settings = Field(default_factory=Settings)
    triggers: list[Trigger] = []
    exit_when: list[ExitRule] = []
    goals: list[Goal] = []
    conversions: list[Conversion] = []
    steps: list[Step]

    omit_when_empty = frozenset({"description"})

    @field_validator("steps")
    @classmethod
    def check_steps(cls, steps):
        if not steps:
            raise _problem("A journey needs at least one step")
        return steps

    @property
    def first_step(self) -> Step:
        """Where every enrollment starts."""
        return self.steps[0]

    def step_map(self) -> dict[str, Step]:
        return {step.key: step for step in self.steps}

    def goal_map(self) -> dict[str, Goal]:
        return {goal.key: goal for goal in self.goals}

    def conversion_map(self) -> dict[str, Conversion]:
        return {conversion.key: conversion for conversion in self.conversions}


for _model in (AllFilters, AnyFilters, EventCriterion, AllCriteria, AnyCriteria, Condition, Goal):
    _model.model_rebuild()


# --- Parsing --------------------------------------------------------------------------------


def parse_definition(
    data: object, *, resolve_journey: Callable[[str], JourneyRefs | None] | None = None
) -> tuple[Definition, list[dict]]:
    """Validate a definition and return it typed, with warnings.

    `resolve_journey(key)` answers for other journeys, None when there is no such journey
    yet. References to other journeys (or to their goals and conversions) that do not
    resolve are accepted and come back as warnings, because journeys get created in any
    order; without `resolve_journey`, every such reference is a warning.

    Raises DefinitionError listing every error. Nothing else is raised for bad data,
    whatever its shape; an exception from `resolve_journey` itself propagates.
    """
    if not isinstance(data, dict):
        raise DefinitionError(
            [{"loc": [], "message": "A journey definition must be a JSON object"}]
        )
    too_deep = _too_deep(data)
    if too_deep is not None:
        raise DefinitionError(
            [{"loc": too_deep, "message": f"Nested more than {MAX_JSON_DEPTH} levels deep"}]
        )

    errors: list[dict] = []
    try:
        definition = Definition.model_validate(data)
    except ValidationError as exc:
        errors.extend(_errors_from(exc))
        definition = None
    parts = _Parts.of(definition) if definition is not None else _Parts.salvage(data)

    warnings: list[dict] = []
    _check_unique_keys(parts, errors)
    _check_unique_names(parts, errors)
    _check_references(parts, errors)
    _check_journey_references(parts, errors, warnings, resolve_journey)
    _check_graph(parts, errors)
    if errors:
        raise DefinitionError(errors)
    return definition, warnings


def render_definition(defn: Definition) -> dict:
    """The canonical JSON form: defaults written out, unset optional fields left out."""
    return defn.model_dump(mode="json", by_alias=True)


def _too_deep(data: object) -> list | None:
    """The location of the first container nested past MAX_JSON_DEPTH, without recursion
    (a self-referencing Python structure counts as too deep)."""
    stack: list[tuple[object, list, int]] = [(data, [], 1)]
    while stack:
        value, loc, depth = stack.pop()
        if isinstance(value, dict):
            children = value.items()
        elif isinstance(value, list | tuple):
            children = enumerate(value)
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return loc
        stack.extend((child, [*loc, key], depth + 1) for key, child in children)
    return None


def _errors_from(exc: ValidationError) -> list[dict]:
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        errors.append({"loc": loc, "message": _message_for(error["type"], error["msg"], loc)})
    return errors


_TYPE_MESSAGES = {
    "model_type": "Expected an object",
    "model_attributes_type": "Expected an object",
    "dict_type": "Expected an object",
    "list_type": "Expected a list",
    "string_type": "Expected a string",
    "int_type": "Expected a whole number",
    "float_type": "Expected a number",
    "finite_number": "Expected a finite number",
}


def _message_for(error_type: str, pydantic_message: str, loc: list) -> str:
    if error_type == "extra_forbidden":
        return f"Unknown field '{loc[-1]}'" if loc else "Unknown field"
    if error_type == "missing":
        if len(loc) == 3 and loc[0] == "triggers" and loc[2] == "journey":
            return "Field required; a conversion or goal trigger names the journey it comes from"
        return "Field required"
    return _TYPE_MESSAGES.get(error_type, pydantic_message)


@dataclasses.dataclass
class _Parts:
    """The parts of a definition that validated (None for an item that did not), with the
    raw keys of every item, so that a reference to a broken step is not also reported as a
    reference to a missing one."""

    key: str | None
    triggers: list
    exit_when: list
    goals: list
    conversions: list
    steps: list
    raw_keys: dict[str, list[str | None]]
    raw_steps: list

    @classmethod
    def of(cls, definition: Definition) -> "_Parts":
        sections = {
            name: getattr(definition, name)
            for name in ("triggers", "exit_when", "goals", "conversions", "steps")
        }
        raw_keys = {
            name: [item.key for item in sections[name]]
            for name in ("goals", "conversions", "steps")
        }
        return cls(key=definition.key, raw_keys=raw_keys, raw_steps=definition.steps, **sections)

    @classmethod
    def salvage(cls, data: dict) -> "_Parts":
        item_types = {
            "triggers": Trigger,
            "exit_when": ExitRule,
            "goals": Goal,
            "conversions": Conversion,
            "steps": Step,
        }
        sections = {}
        raw_keys = {}
        for name, item_type in item_types.items():
            raw = data.get(name)
            raw_items = raw if isinstance(raw, list) else []
            sections[name] = [_validated(_adapters[item_type], item) for item in raw_items]
            raw_keys[name] = [
                item.get("key")
                if isinstance(item, dict) and isinstance(item.get("key"), str)
                else None
                for item in raw_items
            ]
        raw_steps = data.get("steps")
        key = data.get("key")
        return cls(
            key=key if isinstance(key, str) else None,
            raw_keys=raw_keys,
            raw_steps=raw_steps if isinstance(raw_steps, list) else [],
            **sections,
        )

    def keys(self, section: str) -> set[str]:
        return {key for key in self.raw_keys[section] if key is not None}


_adapters = {
    item_type: TypeAdapter(item_type) for item_type in (Trigger, ExitRule, Goal, Conversion, Step)
}


def _validated(adapter: TypeAdapter, item: object) -> object | None:
    try:
        return adapter.validate_python(item)
    except ValidationError:
        return None


def _check_unique_keys(parts: _Parts, errors: list[dict]) -> None:
    for section in ("steps", "goals", "conversions"):
        first_seen: dict[str, int] = {}
        for index, key in enumerate(parts.raw_keys[section]):
            if key is None:
                continue
            if key in first_seen:
                errors.append(
                    {
                        "loc": [section, index, "key"],
                        "message": f"Key '{key}' is already used by {section}[{first_seen[key]}]",
                    }
                )
            else:
                first_seen[key] = index


def _check_unique_names(parts: _Parts, errors: list[dict]) -> None:
    # Goals and conversions are checked separately: a goal may share its conversion's name.
    for section in ("goals", "conversions"):
        first_seen: dict[str, tuple[int, str]] = {}
        for index, item in enumerate(getattr(parts, section)):
            if item is None:
                continue
            normalized = normalize_name(item.name)
            if normalized in first_seen:
                other_index, other_name = first_seen[normalized]
                errors.append(
                    {
                        "loc": [section, index, "name"],
                        "message": f'Name "{item.name}" duplicates "{other_name}" '
                        f"({section}[{other_index}])",
                    }
                )
            else:
                first_seen[normalized] = (index, item.name)


def _check_references(parts: _Parts, errors: list[dict]) -> None:
    step_keys = parts.keys("steps")
    goal_keys = parts.keys("goals")
    conversion_keys = parts.keys("conversions")

    def check(loc: list, key: str | None, known: set[str], what: str) -> None:
        if key is not None and key not in known:
            errors.append({"loc": loc, "message": f"No {what} has the key '{key}'"})

    for index, step in enumerate(parts.steps):
        if step is None:
            continue
        for branch_loc, target in step._branches():
            check(["steps", index, *branch_loc], target, step_keys, "step")
        if isinstance(step, EvaluateGoal):
            check(["steps", index, "goal"], step.goal, goal_keys, "goal")
        elif isinstance(step, Convert):
            check(["steps", index, "conversion"], step.conversion, conversion_keys, "conversion")
    for index, goal in enumerate(parts.goals):
        if goal is not None:
            check(["goals", index, "conversion"], goal.conversion, conversion_keys, "conversion")


def _check_journey_references(
    parts: _Parts,
    errors: list[dict],
    warnings: list[dict],
    resolve_journey: Callable[[str], JourneyRefs | None] | None,
) -> None:
    own = {"conversion": parts.keys("conversions"), "goal": parts.keys("goals")}
    resolved: dict[str, JourneyRefs | None] = {}

    def refs_of(journey: str) -> JourneyRefs | None:
        if journey not in resolved:
            resolved[journey] = resolve_journey(journey) if resolve_journey else None
        return resolved[journey]

    for section, what in (("triggers", "trigger"), ("exit_when", "exit rule")):
        for index, rule in enumerate(getattr(parts, section)):
            if rule is None or rule.type == "event":
                continue
            kind = rule.type
            target = getattr(rule, kind)
            if rule.journey is None or rule.journey == parts.key:
                if target not in own[kind]:
                    errors.append(
                        {
                            "loc": [section, index, kind],
                            "message": f"No {kind} of this journey has the key '{target}'",
                        }
                    )
                continue
            refs = refs_of(rule.journey)
            if refs is None:
                warnings.append(
                    {
                        "loc": [section, index, "journey"],
                        "message": f"Journey '{rule.journey}' does not exist yet; "
                        f"this {what} takes effect once it does",
                    }
                )
                continue
            known = refs.conversion_keys if kind == "conversion" else refs.goal_keys
            if target not in known:
                warnings.append(
                    {
                        "loc": [section, index, kind],
                        "message": f"Journey '{rule.journey}' has no {kind} '{target}' yet; "
                        f"this {what} takes effect once it does",
                    }
                )


def _check_graph(parts: _Parts, errors: list[dict]) -> None:
    """Unreachable steps, and loops a contact could run round without ever waiting."""
    keys = parts.raw_keys["steps"]
    if not keys:
        return
    index_of: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key is not None:
            index_of.setdefault(key, index)
    edges = [
        [index_of[target] for target in _successors(step, raw) if target in index_of]
        for step, raw in zip(parts.steps, parts.raw_steps, strict=True)
    ]

    reached = {0}
    queue = [0]
    while queue:
        for target in edges[queue.pop()]:
            if target not in reached:
                reached.add(target)
                queue.append(target)
    first = keys[0] if keys[0] is not None else "steps[0]"
    for index, key in enumerate(keys):
        # Steps without a usable key, or with a duplicate one, already have an error.
        if index not in reached and key is not None and index_of[key] == index:
            errors.append(
                {
                    "loc": ["steps", index],
                    "message": f"Step '{key}' cannot be reached from the first step '{first}'",
                }
            )

    # Only steps that validated take part: a broken step's type is unknown.
    instant = {
        index
        for index, step in enumerate(parts.steps)
        if step is not None and not isinstance(step, Wait) and index_of.get(step.key) == index
    }
    instant_edges = {index: [t for t in edges[index] if t in instant] for index in instant}
    for component in _strongly_connected(instant_edges):
        if len(component) == 1 and component[0] not in instant_edges[component[0]]:
            continue
        names = [f"'{keys[index]}'" for index in sorted(component)]
        if len(names) == 1:
            message = f"Step {names[0]} leads back to itself with no wait step"
        else:
            message = f"Steps {', '.join(names[:-1])} and {names[-1]} form a loop with no wait step"
        errors.append(
            {
                "loc": ["steps", min(component)],
                "message": message + "; add a wait so a contact cannot go round it endlessly",
            }
        )


def _successors(step: object, raw: object) -> list[str]:
    if step is not None:
        return step.successors()
    # A step that did not validate: follow whatever branch fields look like step keys, so
    # the steps after it are not also reported as unreachable.
    if not isinstance(raw, dict):
        return []
    targets = [raw.get(name) for name in ("next", "then", "else", "achieved", "not_achieved")]
    paths = raw.get("paths")
    if isinstance(paths, list):
        targets.extend(path.get("next") for path in paths if isinstance(path, dict))
    return [target for target in targets if isinstance(target, str)]


def _strongly_connected(edges: dict[int, list[int]]) -> list[list[int]]:
    """Tarjan's algorithm, iterative so that a long chain of steps cannot hit the
    recursion limit."""
    index_counter = 0
    indexes: dict[int, int] = {}
    lowlinks: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    for root in edges:
        if root in indexes:
            continue
        work = [(root, iter(edges[root]))]
        indexes[root] = lowlinks[root] = index_counter
        index_counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in indexes:
                    indexes[child] = lowlinks[child] = index_counter
                    index_counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    lowlinks[node] = min(lowlinks[node], indexes[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlinks[parent] = min(lowlinks[parent], lowlinks[node])
            if lowlinks[node] == indexes[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _format_loc(loc: list) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "definition"


# --- Storing ------------------------------------------------------------------------------

# The parts of a definition that a version row stores; key, name and description live on
# the journey, goals and conversions in their own journey-level rows.
VERSION_PARTS = ("settings", "triggers", "exit_when", "steps")


# jsonb turns a float written with an exponent (1e+16 and up) into an integer, and
# PostgreSQL stores no NUL character in text or jsonb: both are refused before they reach
# the database, so a definition is stored, and round-trips, the same on every database
# (the API refuses such text in any body already; import_journey and the editor need this).
LARGEST_STORABLE_FLOAT = 1e16


def storable_text(text: str) -> bool:
    """Whether PostgreSQL can store the text: no NUL, no unpaired surrogate."""
    if "\x00" in text:
        return False
    try:
        # An unpaired surrogate (a JSON \ud800 escape) cannot be encoded to reach the database.
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_errors(data: object) -> list[dict]:
    """Values in a JSON document that the database cannot store as they are, located."""
    errors = []
    stack: list[tuple[object, list]] = [(data, [])]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, str) and not storable_text(value):
            errors.append(
                {"loc": loc, "message": "Text must not contain NUL or unpaired surrogates"}
            )
        elif isinstance(value, float) and abs(value) >= LARGEST_STORABLE_FLOAT:
            errors.append(
                {
                    "loc": loc,
                    "message": "A decimal number must be below 10^16; write it without a decimal point",
                }
            )
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and not storable_text(key):
                    errors.append(
                        {"loc": loc, "message": "Names must not contain NUL or unpaired surrogates"}
                    )
                stack.append((item, [*loc, key]))
        elif isinstance(value, list):
            stack.extend((item, [*loc, index]) for index, item in enumerate(value))
    return sorted(errors, key=lambda error: [str(part) for part in error["loc"]])


def version_references(*, journey_key: str, definition: dict) -> tuple[set[str], set[str]]:
    """The keys of this journey's conversions and goals that a stored version definition
    uses directly (convert and evaluate_goal steps, triggers and exit rules)."""
    conversions: set[str] = set()
    goals: set[str] = set()
    for step in definition.get("steps") or []:
        if step.get("type") == "convert":
            conversions.add(step.get("conversion"))
        elif step.get("type") == "evaluate_goal":
            goals.add(step.get("goal"))
    rules = [
        *(definition.get("exit_when") or []),
        *(rule for rule in definition.get("triggers") or [] if rule.get("journey") == journey_key),
    ]
    for rule in rules:
        if rule.get("journey") not in (None, journey_key):
            continue
        if rule.get("type") == "conversion":
            conversions.add(rule.get("conversion"))
        elif rule.get("type") == "goal":
            goals.add(rule.get("goal"))
    return conversions, goals
