"""Pure step logic: what happens to one enrollment when it is due.

Given the enrollment's state, the parsed definition of its version, the contact as a plain
dict, the contact's events that criteria may look at, a random source and `now`, `advance`
runs every instantaneous step until the enrollment waits or ends, and returns an `Outcome`
that the caller writes in bulk. Nothing here touches the database, the clock, Celery or
the network, so every branch is tested with plain values.

Criteria (`condition.if`, goal criteria, `where` filters of triggers, exits and
conversions) are evaluated here too, with the same functions everywhere.
"""

import dataclasses
import datetime
import random
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from journeys.definition import (
    AllCriteria,
    AllFilters,
    AnyCriteria,
    AnyFilters,
    AttributeCriterion,
    Condition,
    Convert,
    Definition,
    EvaluateGoal,
    EventCriterion,
    EventTrigger,
    PropertyFilter,
    SendEmail,
    SendSms,
    Split,
    UpdateContact,
    Wait,
)

# No valid definition has a loop without a wait, so a run only gets this long on a very
# long chain of steps; it then pauses (due at once) instead of holding its batch hostage.
MAX_STEPS_PER_RUN = 100

ACTIVE, COMPLETED, EXITED = "active", "completed", "exited"


class EngineError(Exception):
    """The enrollment cannot go on (a step its version does not have); it is retried and,
    if the error stays, parked as failed with this message."""


class State(NamedTuple):
    """The part of an enrollment the engine reads (a named tuple: built for every run of a
    batch, it costs a third of a frozen dataclass)."""

    current_step: str
    path: Sequence[str]
    started_at: datetime.datetime
    waiting_for_goal: str = ""
    wait_until: datetime.datetime | None = None
    held_out: bool = False


@dataclasses.dataclass(frozen=True)
class ContactEvent:
    name: str
    properties: dict
    timestamp: datetime.datetime


@dataclasses.dataclass
class Visit:
    """A step entered (`new`), or the way out of a step entered in an earlier run."""

    seq: int
    step_key: str
    outcome: str
    entered_at: datetime.datetime
    new: bool = True


@dataclasses.dataclass
class Message:
    seq: int  # of the visit that queued it
    step_key: str
    channel: str  # "email" or "sms"
    recipient: str
    subject: str
    body: str
    # The email's other template fields (all rendered at send) and the message's category.
    preheader: str = ""
    html: str = ""
    from_email: str = ""
    reply_to: str = ""
    category: str = "marketing"


@dataclasses.dataclass
class Award:
    conversion: str
    step_key: str
    source: str  # "convert_step" or "goal"
    seq: int


@dataclasses.dataclass
class Achievement:
    goal: str
    step_key: str
    seq: int


@dataclasses.dataclass
class Outcome:
    state: str = ACTIVE
    current_step: str = ""
    due_at: datetime.datetime | None = None
    waiting_for_goal: str = ""
    wait_until: datetime.datetime | None = None
    path: list[str] = dataclasses.field(default_factory=list)
    exit_reason: str = ""
    visits: list[Visit] = dataclasses.field(default_factory=list)
    messages: list[Message] = dataclasses.field(default_factory=list)
    attribute_updates: dict[str, Any] = dataclasses.field(default_factory=dict)
    achievements: list[Achievement] = dataclasses.field(default_factory=list)
    awards: list[Award] = dataclasses.field(default_factory=list)
    steps_run: int = 0

    @property
    def ended(self) -> bool:
        return self.state != ACTIVE


# --- Criteria -------------------------------------------------------------------------------

_MISSING = object()


def _number(value: Any) -> int | float | None:
    # Integers stay integers: Python compares an int with a float exactly, where float()
    # raises OverflowError past 1.8e308 (a row written around the API's limits).
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _ordered(actual: Any, expected: Any) -> tuple[Any, Any] | None:
    """Both sides in a comparable form: numbers as numbers (numeric strings too, since
    attributes often arrive as strings), otherwise strings with strings; None if the two
    cannot be ordered."""
    if isinstance(actual, str) and isinstance(expected, str):
        left, right = _number(actual), _number(expected)
        return (left, right) if left is not None and right is not None else (actual, expected)
    left, right = _number(actual), _number(expected)
    if left is None or right is None:
        return None
    return left, right


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    # Numbers of either kind compare by value (1 == 1.0), exactly and without converting.
    return actual == expected


def compare(actual: Any, op: str, expected: Any, *, has_expected: bool = True) -> bool:
    """One comparison of the contract's ops; `actual` is _MISSING when the field is absent."""
    present = actual is not _MISSING and actual is not None
    if op == "exists":
        wanted = expected if has_expected and isinstance(expected, bool) else True
        return present is wanted
    if actual is _MISSING:
        return op == "ne"
    if op == "eq":
        return _equal(actual, expected)
    if op == "ne":
        return not _equal(actual, expected)
    if op == "in":
        return isinstance(expected, list) and any(_equal(actual, item) for item in expected)
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(expected, str) and expected in actual
        if isinstance(actual, list):
            return any(_equal(item, expected) for item in actual)
        if isinstance(actual, dict):
            return isinstance(expected, str) and expected in actual
        return False
    pair = _ordered(actual, expected)
    if pair is None:
        return False
    left, right = pair
    try:
        if op == "gt":
            return left > right
        if op == "gte":
            return left >= right
        if op == "lt":
            return left < right
        if op == "lte":
            return left <= right
    except TypeError:
        return False
    raise ValueError(f"Unknown op '{op}'")


def _compare_field(source: dict, name: str, criterion) -> bool:
    actual = source.get(name, _MISSING) if isinstance(source, dict) else _MISSING
    return compare(
        actual, criterion.op, criterion.value, has_expected="value" in criterion.model_fields_set
    )


def filters_match(filters: Iterable, properties: dict) -> bool:
    """Every filter of a `where` list holds for an event's properties."""
    return all(_filter_matches(item, properties) for item in filters)


def _filter_matches(item, properties: dict) -> bool:
    if isinstance(item, PropertyFilter):
        return _compare_field(properties, item.property, item)
    if isinstance(item, AllFilters):
        return all(_filter_matches(child, properties) for child in item.all)
    if isinstance(item, AnyFilters):
        return any(_filter_matches(child, properties) for child in item.any)
    raise TypeError(f"Not a filter: {item!r}")


def criteria_match(
    criterion,
    *,
    contact: dict,
    events: Sequence[ContactEvent],
    since: datetime.datetime,
    now: datetime.datetime,
) -> bool:
    """Whether criteria hold for a contact: attributes now, events since `since` (the
    enrollment's start) or within the criterion's own duration."""
    if isinstance(criterion, AttributeCriterion):
        return _compare_field(contact.get("attributes") or {}, criterion.attribute, criterion)
    if isinstance(criterion, EventCriterion):
        start = time_before(now, criterion.within_delta) if criterion.within else since
        return any(
            event.name == criterion.event
            and start <= event.timestamp <= now
            and filters_match(criterion.where, event.properties)
            for event in events
        )
    if isinstance(criterion, AllCriteria):
        return all(
            criteria_match(child, contact=contact, events=events, since=since, now=now)
            for child in criterion.all
        )
    if isinstance(criterion, AnyCriteria):
        return any(
            criteria_match(child, contact=contact, events=events, since=since, now=now)
            for child in criterion.any
        )
    raise TypeError(f"Not a criterion: {criterion!r}")


_EARLIEST = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def time_before(moment: datetime.datetime, delta: datetime.timedelta) -> datetime.datetime:
    """`moment - delta`, or the first moment of the calendar when that falls before year 1
    (an event stamped with an unset clock, 0001-01-01): a window reaching back further than
    the calendar starts where it starts, instead of raising OverflowError."""
    try:
        return moment - delta
    except OverflowError:
        return _EARLIEST


def criteria_event_names(criterion) -> set[str]:
    """The event names criteria look at, so the caller loads only those events."""
    if isinstance(criterion, EventCriterion):
        return {criterion.event}
    if isinstance(criterion, AllCriteria):
        return set().union(*(criteria_event_names(child) for child in criterion.all))
    if isinstance(criterion, AnyCriteria):
        return set().union(*(criteria_event_names(child) for child in criterion.any))
    return set()


def criteria_lookback(criterion) -> datetime.timedelta | None:
    """The longest `within` of the event criteria (None when none has one)."""
    if isinstance(criterion, EventCriterion):
        return criterion.within_delta
    children = (
        criterion.all
        if isinstance(criterion, AllCriteria)
        else criterion.any
        if isinstance(criterion, AnyCriteria)
        else []
    )
    found = [delta for delta in map(criteria_lookback, children) if delta is not None]
    return max(found) if found else None


def definition_event_needs(definition: Definition) -> tuple[set[str], datetime.timedelta | None]:
    """Event names (and the longest `within`) that the steps' criteria can look at."""
    goals = definition.goal_map()
    criteria = [step.if_ for step in definition.steps if isinstance(step, Condition)]
    criteria += [
        goals[step.goal].criteria
        for step in definition.steps
        if isinstance(step, EvaluateGoal) and step.goal in goals
    ]
    names: set[str] = set()
    lookbacks = []
    for criterion in criteria:
        names |= criteria_event_names(criterion)
        lookback = criteria_lookback(criterion)
        if lookback is not None:
            lookbacks.append(lookback)
    return names, max(lookbacks) if lookbacks else None


# --- Triggers and exits ---------------------------------------------------------------------


def rule_matches_event(rule, *, journey_key: str, name: str, properties: dict) -> bool:
    """Whether a trigger or exit rule matches an event. Conversion and goal rules match the
    internal `conversion` / `goal_achieved` events; their `journey` defaults to this one."""
    if rule.type == "event":
        return rule.event == name and filters_match(rule.where, properties)
    target = rule.conversion if rule.type == "conversion" else rule.goal
    return (
        name == rule_event_name(rule)
        and properties.get("journey") == (rule.journey or journey_key)
        and properties.get("key") == target
    )


def rule_event_name(rule) -> str:
    """The name of the events a trigger or exit rule can match: its own for an event rule,
    the internal `conversion` / `goal_achieved` events for conversion and goal rules."""
    if rule.type == "event":
        return rule.event
    return "conversion" if rule.type == "conversion" else "goal_achieved"


def exit_reason(rule) -> str:
    """What an enrollment's `exit_reason` says when an `exit_when` rule ended it."""
    if rule.type == "event":
        return f"exit_when: event '{rule.event}'"
    target = rule.conversion if rule.type == "conversion" else rule.goal
    where = f" of journey '{rule.journey}'" if rule.journey else ""
    return f"exit_when: {rule.type} '{target}'{where}"


def holdout_horizon(definition: Definition) -> datetime.timedelta:
    """How long a held-out enrollment stays active, taking no step: the longest the flow
    could wait (every wait of the version added up), so that it is measured over as long a
    time as the contacts who take the journey."""
    total = datetime.timedelta(0)
    for step in definition.steps:
        if isinstance(step, Wait):
            total += step.duration_delta
        elif isinstance(step, EvaluateGoal) and step.wait:
            total += step.wait_delta
    return total


def choose_weighted(weights: Sequence[int], rng: random.Random) -> int:
    """The index of one of `weights`, at random in proportion to them."""
    point = rng.random() * sum(weights)
    for index, weight in enumerate(weights):
        point -= weight
        if point < 0:
            return index
    return len(weights) - 1


# --- Event conversions ----------------------------------------------------------------------
#
# Whether an incoming event earns an event-based conversion for one enrollment of its
# contact. The caller has matched the event's name and `where` filters (`filters_match` with
# `event_filters(conversion.event_where)`); these decide the rest.


def event_filters(where: list) -> list:
    """A conversion's stored `event.where` as the filters `filters_match` takes."""
    if not where:
        return []
    return EventTrigger.model_validate({"type": "event", "event": "x", "where": where}).where


def event_earns_conversion(
    *,
    event_time: datetime.datetime,
    entered_at: datetime.datetime,
    active: bool,
    window: datetime.timedelta | None,
    published_at: datetime.datetime | None,
    archived_at: datetime.datetime | None,
) -> bool:
    """Whether the event counts for the enrollment.

    - Archive: a conversion counts for the enrollments of every version published while it
      was active; archiving it (a new draft leaving it out) changes no live version.
    - Entry time: only what the contact did once in the journey counts; a purchase sent (or
      backfilled) from before the trigger is not this journey's conversion.
    - Window: while the enrollment is active, and, after it ended, until `window` past entry.
    """
    if archived_at is not None and (published_at is None or published_at > archived_at):
        return False
    if event_time < entered_at:
        return False
    return active or bool(window and event_time <= entered_at + window)


def event_conversion_value(*, value_property: str, default: Decimal, properties: dict) -> Decimal:
    """The award's value: the event's `value_property` when it holds a number from 0 to
    10^12 (rounded to cents), else the conversion's own value."""
    if value_property:
        raw = properties.get(value_property)
        if not isinstance(raw, bool) and isinstance(raw, int | float | str):
            try:
                value = Decimal(str(raw)).quantize(Decimal("0.01"))
            except (InvalidOperation, ValueError):
                value = None
            if value is not None and value.is_finite() and 0 <= value < Decimal("1e12"):
                return value
    return default


# --- Contacts and retries -------------------------------------------------------------------


def contact_data(external_id: str, email: str, attributes: dict | None) -> dict:
    """The contact as templates and criteria see it: plain data, never a model object."""
    return {"external_id": external_id, "email": email, "attributes": dict(attributes or {})}


def retry_delay(attempts: int) -> datetime.timedelta:
    """Back-off before the next try of a failed enrollment or message: 30 s, doubling, at
    most an hour."""
    return datetime.timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


# --- Steps ----------------------------------------------------------------------------------


class _Run:
    """One engine run over one enrollment: its inputs and the outcome being built."""

    def __init__(self, *, state, definition, contact, events, rng, now):
        self.state = state
        self.definition = definition
        # Shared with the batch's other runs of the contact: `_update_contact` copies it.
        self.contact = (
            contact
            if isinstance(contact.get("attributes"), dict)
            else {
                **contact,
                "attributes": dict(contact.get("attributes") or {}),
            }
        )
        self.events = events
        self.rng = rng
        self.now = now
        self.outcome = Outcome(
            current_step=state.current_step,
            path=list(state.path),
            waiting_for_goal=state.waiting_for_goal,
            wait_until=state.wait_until,
        )
        self.resuming = bool(state.waiting_for_goal)
        self.seq = len(state.path) - 1

    def enter(self, step) -> None:
        """Record the step as visited, unless the run resumes a step entered earlier."""
        if self.resuming:
            return
        self.outcome.path.append(step.key)
        self.seq = len(self.outcome.path) - 1
        self.outcome.visits.append(Visit(self.seq, step.key, "", self.now))

    def leave(self, step, outcome: str) -> None:
        for visit in reversed(self.outcome.visits):
            if visit.seq == self.seq:
                visit.outcome = outcome
                return
        self.outcome.visits.append(Visit(self.seq, step.key, outcome, self.now, new=False))

    def matches(self, criterion) -> bool:
        return criteria_match(
            criterion,
            contact=self.contact,
            events=self.events,
            since=self.state.started_at,
            now=self.now,
        )

    def wait(self, *, step_key: str, due_at: datetime.datetime) -> None:
        self.outcome.current_step = step_key
        self.outcome.due_at = due_at

    def end(self, state: str, reason: str = "") -> None:
        outcome = self.outcome
        outcome.state = state
        outcome.exit_reason = reason
        outcome.current_step = ""
        outcome.due_at = None
        outcome.waiting_for_goal = ""
        outcome.wait_until = None


# A handler runs one step and returns the key of the step to go on to (None: the enrollment
# completes), or _STOP when it waits or has ended.
_STOP = object()


def _send_email(run: _Run, step: SendEmail):
    run.enter(step)
    run.outcome.messages.append(
        Message(
            run.seq,
            step.key,
            "email",
            run.contact.get("email") or "",
            step.subject,
            step.body,
            preheader=step.preheader or "",
            html=step.html or "",
            from_email=step.from_email or "",
            reply_to=step.reply_to or "",
            category=step.category or "marketing",
        )
    )
    run.leave(step, "queued")
    return step.next


def _send_sms(run: _Run, step: SendSms):
    run.enter(step)
    phone = run.contact["attributes"].get("phone")
    recipient = str(phone) if phone not in (None, "") else ""
    run.outcome.messages.append(
        Message(
            run.seq,
            step.key,
            "sms",
            recipient,
            "",
            step.text,
            category=step.category or "marketing",
        )
    )
    run.leave(step, "queued")
    return step.next


def _wait(run: _Run, step: Wait):
    run.enter(step)
    run.leave(step, "waited")
    # The step after the wait is what runs when it is due; an empty one completes then.
    run.wait(step_key=step.next or "", due_at=run.now + step.duration_delta)
    return _STOP


def _condition(run: _Run, step: Condition):
    run.enter(step)
    if run.matches(step.if_):
        run.leave(step, "then")
        return step.then
    run.leave(step, "else")
    return step.else_


def _split(run: _Run, step: Split):
    run.enter(step)
    index = choose_weighted([path.weight for path in step.paths], run.rng)
    run.leave(step, f"path-{index}")
    return step.paths[index].next


def _update_contact(run: _Run, step: UpdateContact):
    run.enter(step)
    run.contact = {**run.contact, "attributes": {**run.contact["attributes"], **step.attributes}}
    run.outcome.attribute_updates.update(step.attributes)
    run.leave(step, "updated")
    return step.next


def _evaluate_goal(run: _Run, step: EvaluateGoal):
    resuming = run.resuming
    run.enter(step)
    goal = run.definition.goal_map().get(step.goal)
    if goal is None:
        raise EngineError(f"Step '{step.key}' evaluates goal '{step.goal}', which is not defined")
    outcome = run.outcome
    if run.matches(goal.criteria):
        outcome.achievements.append(Achievement(goal.key, step.key, run.seq))
        if goal.conversion:
            outcome.awards.append(Award(goal.conversion, step.key, "goal", run.seq))
        outcome.waiting_for_goal, outcome.wait_until = "", None
        run.leave(step, "achieved")
        return step.achieved
    if resuming:
        wait_until = run.state.wait_until
        if wait_until is not None and run.now < wait_until:
            # Woken by an event that did not meet the criteria: back to waiting.
            run.wait(step_key=step.key, due_at=wait_until)
            return _STOP
    elif step.wait:
        outcome.waiting_for_goal = goal.key
        outcome.wait_until = run.now + step.wait_delta
        run.leave(step, "waiting")
        run.wait(step_key=step.key, due_at=outcome.wait_until)
        return _STOP
    outcome.waiting_for_goal, outcome.wait_until = "", None
    run.leave(step, "not_achieved")
    return step.not_achieved


def _convert(run: _Run, step: Convert):
    run.enter(step)
    run.outcome.awards.append(Award(step.conversion, step.key, "convert_step", run.seq))
    run.leave(step, "converted")
    return step.next


def _exit(run: _Run, step):
    run.enter(step)
    run.leave(step, "exited")
    run.end(EXITED, f"Exit step '{step.key}'")
    return _STOP


# One per step type of journeys.definition.STEP_TYPES; journeys.checks reports any difference.
STEP_HANDLERS: dict[str, Callable[[_Run, Any], Any]] = {
    "send_email": _send_email,
    "send_sms": _send_sms,
    "wait": _wait,
    "condition": _condition,
    "split": _split,
    "update_contact": _update_contact,
    "evaluate_goal": _evaluate_goal,
    "convert": _convert,
    "exit": _exit,
}


def advance(
    *,
    state: State,
    definition: Definition,
    contact: dict,
    events: Sequence[ContactEvent] = (),
    rng: random.Random,
    now: datetime.datetime,
    steps: dict | None = None,
    max_steps: int = MAX_STEPS_PER_RUN,
) -> Outcome:
    """Run a due enrollment from its current step until it waits or ends.

    `steps` is `definition.step_map()`, passed in by callers that run many enrollments of
    one version. Raises EngineError when the enrollment cannot go on.
    """
    run = _Run(state=state, definition=definition, contact=contact, events=events, rng=rng, now=now)
    if state.held_out or not state.current_step:
        # A held-out enrollment takes no step; it is due when its horizon has passed. An
        # empty current step is the end of a wait that led nowhere.
        run.end(COMPLETED)
        return run.outcome
    steps = steps if steps is not None else definition.step_map()
    key: str | None = state.current_step
    for _ in range(max_steps):
        step = steps.get(key)
        if step is None:
            raise EngineError(f"The version has no step '{key}'")
        target = STEP_HANDLERS[step.type](run, step)
        run.resuming = False
        run.outcome.steps_run += 1
        if target is _STOP:
            return run.outcome
        if target is None:
            run.end(COMPLETED)
            return run.outcome
        key = target
    run.wait(step_key=key, due_at=now)
    return run.outcome
