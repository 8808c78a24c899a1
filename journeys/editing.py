"""What the browser editor does to a definition, as pure functions on its JSON form.

The editor never builds JSON in the browser: each form posts one change, a function here
applies it to the working definition (a plain dict, as `journey_definition` returns it),
and the result is saved as the draft. `build_diagram` turns a definition into the tree the
diagram template draws.
"""

import copy
import dataclasses
import re

from journeys.definition import STEP_TYPES, format_duration, parse_duration

# A step type's label is its name in words; only an acronym needs spelling out.
_ACRONYM_LABELS = {"send_sms": "Send SMS"}
STEP_TYPE_LABELS = {
    kind: _ACRONYM_LABELS.get(kind) or kind.replace("_", " ").capitalize() for kind in STEP_TYPES
}
# One per operator of journeys.definition.OPS; journeys.checks reports any difference.
OP_LABELS = {
    "eq": "=",
    "ne": "≠",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "contains": "contains",
    "in": "in",
    "exists": "exists",
}


# --- Durations in words ---------------------------------------------------------------------

_UNIT_SECONDS = {"week": 604800, "day": 86400, "hour": 3600, "minute": 60, "second": 1}
_UNIT_ALIASES = {
    "w": "week", "wk": "week", "wks": "week", "week": "week", "weeks": "week",
    "d": "day", "day": "day", "days": "day",
    "h": "hour", "hr": "hour", "hrs": "hour", "hour": "hour", "hours": "hour",
    "m": "minute", "min": "minute", "mins": "minute", "minute": "minute", "minutes": "minute",
    "s": "second", "sec": "second", "secs": "second", "second": "second", "seconds": "second",
}  # fmt: skip
_HUMAN_PART_RE = re.compile(r"([0-9]+)\s*([a-z]+)")


def parse_human_duration(text: str) -> str:
    """ "2 days", "1 day 12 hours", "90 min" or ISO 8601 ("P2D") as canonical ISO 8601.

    Raises ValueError with a message fit to show beside the field.
    """
    text = text.strip()
    if text[:1] in ("P", "p") and not text[1:2].isspace():
        return format_duration(parse_duration(text.upper()))
    cleaned = text.lower().replace(",", " ").replace(" and ", " ")
    parts = _HUMAN_PART_RE.findall(cleaned)
    if not parts or _HUMAN_PART_RE.sub("", cleaned).strip():
        raise ValueError(f"'{text}' is not a duration; write e.g. '2 days', '12 hours' or '1 week'")
    seconds = 0
    for amount, unit in parts:
        if unit not in _UNIT_ALIASES:
            raise ValueError(f"Unknown unit '{unit}'; use minutes, hours, days or weeks")
        seconds += int(amount) * _UNIT_SECONDS[_UNIT_ALIASES[unit]]
    return format_duration(parse_duration(f"PT{seconds}S"))


def humanize_duration(iso: str | None) -> str:
    """ "P1DT12H" as "1 day 12 hours"; text that is not a duration comes back unchanged."""
    if not iso:
        return ""
    try:
        seconds = int(parse_duration(iso).total_seconds())
    except ValueError:
        return iso
    words = []
    for unit in ("day", "hour", "minute", "second"):
        amount, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if amount:
            words.append(f"{amount} {unit}{'' if amount == 1 else 's'}")
    if len(words) == 1 and words[0].endswith("days"):
        days = int(words[0].split()[0])
        if days % 7 == 0:
            weeks = days // 7
            return f"{weeks} week{'' if weeks == 1 else 's'}"
    return " ".join(words)


# --- Reading a definition -------------------------------------------------------------------


def describe_criteria(criteria: object) -> str:
    """One line of plain words for a criteria tree."""
    if not isinstance(criteria, dict):
        return "(no criteria)"
    if "all" in criteria or "any" in criteria:
        joiner = " and " if "all" in criteria else " or "
        items = criteria.get("all", criteria.get("any")) or []
        return "(" + joiner.join(describe_criteria(item) for item in items) + ")"
    if "event" in criteria:
        text = f"did {criteria['event']}"
        if criteria.get("where"):
            text += " where " + ", ".join(describe_criteria(w) for w in criteria["where"])
        if criteria.get("within"):
            text += f" within {humanize_duration(criteria['within'])}"
        return text
    subject = criteria.get("attribute", criteria.get("property", "?"))
    op = criteria.get("op", "eq")
    if op == "exists":
        return f"{subject} exists"
    return f"{subject} {OP_LABELS.get(op, op)} {criteria.get('value')!r}".replace("'", "")


def definition_names(definition: dict) -> dict[str, str]:
    """Goal and conversion names by "goal:KEY" / "conversion:KEY"."""
    names = {}
    for kind, section in (("goal", "goals"), ("conversion", "conversions")):
        for item in definition.get(section) or []:
            if isinstance(item, dict):
                names[f"{kind}:{item.get('key')}"] = item.get("name") or item.get("key")
    return names


def describe_rule(rule: dict, *, journey_key: str, names: dict[str, str]) -> str:
    """A trigger or exit rule in words."""
    kind = rule.get("type")
    if kind == "event":
        text = f"Event {rule.get('event')}"
        if rule.get("where"):
            text += " where " + ", ".join(describe_criteria(w) for w in rule["where"])
        return text
    target = rule.get(kind)
    source = rule.get("journey")
    if source in (None, journey_key):
        label = names.get(f"{kind}:{target}", target)
        return f"{'Conversion' if kind == 'conversion' else 'Goal'} “{label}” of this journey"
    return f"{'Conversion' if kind == 'conversion' else 'Goal'} '{target}' of journey '{source}'"


def step_summary(step: dict, names: dict[str, str]) -> str:
    """A short description of what the step does, for its card."""
    kind = step.get("type")
    if kind == "send_email":
        return f"Subject: {step.get('subject') or '(none)'}"
    if kind == "send_sms":
        text = step.get("text") or "(no text)"
        return text if len(text) <= 70 else text[:67] + "…"
    if kind == "wait":
        return f"Wait {humanize_duration(step.get('duration')) or '(no duration)'}"
    if kind == "condition":
        return f"If {describe_criteria(step.get('if'))}"
    if kind == "split":
        weights = [str(path.get("weight")) for path in step.get("paths") or []]
        return "Random split " + "/".join(weights)
    if kind == "update_contact":
        attributes = step.get("attributes") or {}
        return (
            "Set " + ", ".join(f"{k} = {v}" for k, v in attributes.items())
            if attributes
            else "Set nothing yet"
        )
    if kind == "evaluate_goal":
        goal = step.get("goal")
        text = f"Goal: {names.get('goal:' + str(goal), goal) or '(none)'}"
        if step.get("wait"):
            text += f", waits up to {humanize_duration(step['wait'])}"
        return text
    if kind == "convert":
        conversion = step.get("conversion")
        return f"Award: {names.get('conversion:' + str(conversion), conversion) or '(none)'}"
    if kind == "exit":
        return "Ends the enrollment as exited"
    return ""


def step_ports(step: dict) -> list[tuple[str, str, str | None]]:
    """(port, label, target) for every way out of a step."""
    kind = step.get("type")
    if kind == "exit":
        return []
    if kind == "condition":
        return [("then", "then", step.get("then")), ("else", "else", step.get("else"))]
    if kind == "evaluate_goal":
        return [
            ("achieved", "achieved", step.get("achieved")),
            ("not_achieved", "not achieved", step.get("not_achieved")),
        ]
    if kind == "split":
        paths = [p for p in step.get("paths") or [] if isinstance(p, dict)]
        total = sum(p.get("weight") for p in paths if isinstance(p.get("weight"), int)) or 1
        return [
            (
                f"paths.{index}",
                f"{round(100 * path.get('weight', 0) / total) if isinstance(path.get('weight'), int) else '?'}%",
                path.get("next"),
            )
            for index, path in enumerate(paths)
        ]
    return [("next", "", step.get("next"))]


@dataclasses.dataclass(frozen=True)
class StepCounts:
    """What the canvas shows under a step of a published version (journeys.selectors
    step_counts)."""

    active: int = 0
    entered: int = 0
    converted: int = 0


@dataclasses.dataclass
class Card:
    key: str
    type: str
    type_label: str
    title: str
    summary: str
    invalid: bool
    selected: bool
    port: str | None  # the port a step added after this card attaches to (linear steps)
    branches: list["Branch"] = dataclasses.field(default_factory=list)
    # The step's numbers (active, entered, converted) on a published version; None on drafts.
    counts: StepCounts | None = None


@dataclasses.dataclass
class Branch:
    step_key: str
    port: str
    label: str
    tone: str
    sequence: "Sequence"


@dataclasses.dataclass
class Sequence:
    cards: list[Card]
    # How the sequence ends: "end" (completes), "exit", "goto" (a step drawn elsewhere),
    # "missing" (a step that does not exist), or "branches" (the last card forks).
    end: str
    target: str | None = None
    target_title: str | None = None
    # Where a step added at the very end attaches: (step key, port).
    tail: tuple[str | None, str] | None = None


@dataclasses.dataclass
class Diagram:
    main: Sequence
    detached: list[Sequence]


def _tone(label: str, port: str) -> str:
    if port in ("then", "achieved"):
        return "yes"
    if port in ("else", "not_achieved"):
        return "no"
    if port.startswith("paths."):
        return "weight"
    return ""


def build_diagram(
    definition: dict,
    *,
    invalid_steps: set[str] = frozenset(),
    selected: str | None = None,
    counts: dict | None = None,
) -> Diagram:
    """The flow as nested sequences: each step drawn once, where the flow first reaches
    it; a later reference is drawn as a link to it, so merges and loops stay readable."""
    steps = [s for s in definition.get("steps") or [] if isinstance(s, dict)]
    by_key = {s.get("key"): s for s in steps}
    names = definition_names(definition)
    drawn: set[str] = set()
    empty_counts = StepCounts()

    def title(key: str | None) -> str:
        step = by_key.get(key) or {}
        return step.get("name") or key or ""

    def sequence(start: str | None, entry: tuple[str | None, str]) -> Sequence:
        cards: list[Card] = []
        key = start
        tail = entry
        while True:
            if key is None:
                return Sequence(cards, "end", tail=tail)
            if key not in by_key:
                return Sequence(cards, "missing", target=key, tail=tail)
            if key in drawn:
                return Sequence(cards, "goto", target=key, target_title=title(key), tail=tail)
            drawn.add(key)
            step = by_key[key]
            kind = step.get("type", "")
            ports = step_ports(step)
            card = Card(
                key=key,
                type=kind,
                type_label=STEP_TYPE_LABELS.get(kind, kind),
                title=title(key),
                summary=step_summary(step, names),
                invalid=key in invalid_steps,
                selected=key == selected,
                port="next" if ports and ports[0][0] == "next" else None,
                counts=None if counts is None else counts.get(key, empty_counts),
            )
            cards.append(card)
            if not ports:
                return Sequence(cards, "exit")
            if card.port == "next":
                tail = (key, "next")
                key = step.get("next")
                continue
            card.branches = [
                Branch(key, port, label, _tone(label, port), sequence(target, (key, port)))
                for port, label, target in ports
            ]
            return Sequence(cards, "branches")

    first = steps[0].get("key") if steps else None
    main = sequence(first, (None, "start"))
    detached = []
    for step in steps:
        if step.get("key") not in drawn and isinstance(step.get("key"), str):
            detached.append(sequence(step["key"], (None, "start")))
    return Diagram(main=main, detached=detached)


def invalid_step_keys(definition: dict, errors: list[dict]) -> set[str]:
    steps = definition.get("steps") or []
    keys = set()
    for error in errors:
        loc = error.get("loc") or []
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int) and loc[1] < len(steps):
            step = steps[loc[1]]
            if isinstance(step, dict) and isinstance(step.get("key"), str):
                keys.add(step["key"])
    return keys


def describe_error(definition: dict, error: dict) -> dict:
    """An error with its location in words ("Step 'welcome', subject")."""
    loc = list(error.get("loc") or [])
    where = []
    if len(loc) >= 2 and isinstance(loc[1], int):
        section, index, rest = loc[0], loc[1], loc[2:]
        items = definition.get(section) or []
        item = items[index] if index < len(items) and isinstance(items[index], dict) else {}
        label = {
            "steps": "Step",
            "triggers": "Trigger",
            "exit_when": "Exit rule",
            "goals": "Goal",
            "conversions": "Conversion",
        }.get(section, section)
        name = item.get("name") or item.get("key")
        where.append(
            f"{label} '{name}'"
            if name and section != "triggers" and section != "exit_when"
            else f"{label} {index + 1}"
        )
        where.extend(str(part) for part in rest)
    else:
        where.extend(str(part) for part in loc)
    return {"where": ", ".join(where) or "Journey", "message": error.get("message", "")}


# --- Changing a definition ------------------------------------------------------------------


def _get_port(step: dict, port: str) -> str | None:
    if port.startswith("paths."):
        index = int(port.split(".", 1)[1])
        return step["paths"][index].get("next")
    return step.get(port)


def _set_port(step: dict, port: str, target: str | None) -> None:
    if port.startswith("paths."):
        index = int(port.split(".", 1)[1])
        step["paths"][index]["next"] = target
    else:
        step[port] = target


def valid_port(definition: dict, after: str | None, port: str) -> bool:
    if after is None:
        return port == "start"
    step = next((s for s in definition.get("steps") or [] if s.get("key") == after), None)
    return step is not None and port in {p for p, _, _ in step_ports(step)}


def new_step_key(definition: dict, kind: str) -> str:
    taken = {s.get("key") for s in definition.get("steps") or []}
    base = kind.replace("_", "-")
    number = 1
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def blank_step(kind: str, key: str, target: str | None) -> dict:
    """A new step of a type, continuing to `target`; fields the marketer must fill are
    left empty so the draft's validation asks for them."""
    if kind == "send_email":
        return {"key": key, "type": kind, "subject": "", "body": "", "next": target}
    if kind == "send_sms":
        return {"key": key, "type": kind, "text": "", "next": target}
    if kind == "wait":
        return {"key": key, "type": kind, "duration": "P1D", "next": target}
    if kind == "condition":
        return {
            "key": key,
            "type": kind,
            "if": {"attribute": "", "op": "eq", "value": ""},
            "then": target,
            "else": None,
        }
    if kind == "split":
        return {
            "key": key,
            "type": kind,
            "paths": [{"weight": 50, "next": target}, {"weight": 50, "next": None}],
        }
    if kind == "update_contact":
        return {"key": key, "type": kind, "attributes": {}, "next": target}
    if kind == "evaluate_goal":
        return {"key": key, "type": kind, "goal": "", "achieved": target, "not_achieved": None}
    if kind == "convert":
        return {"key": key, "type": kind, "conversion": "", "next": target}
    if kind == "exit":
        return {"key": key, "type": kind}
    raise ValueError(f"Unknown step type '{kind}'")


def insert_step(definition: dict, *, after: str | None, port: str, kind: str) -> tuple[dict, str]:
    """A copy of the definition with a new step where `after`'s `port` led (or at the
    start), the old target continuing after it. Returns the copy and the new key."""
    result = copy.deepcopy(definition)
    steps = result.setdefault("steps", [])
    key = new_step_key(result, kind)
    if after is None:
        target = steps[0].get("key") if steps else None
        steps.insert(0, blank_step(kind, key, target))
        return result, key
    index, source = next((i, s) for i, s in enumerate(steps) if s.get("key") == after)
    target = _get_port(source, port)
    _set_port(source, port, key)
    steps.insert(index + 1, blank_step(kind, key, target))
    return result, key


def delete_step(definition: dict, *, key: str) -> dict:
    """A copy without the step; whatever led to it now leads to its successor (the first
    branch of a fork), or ends there when it had none."""
    result = copy.deepcopy(definition)
    steps = result.get("steps") or []
    index, doomed = next((i, s) for i, s in enumerate(steps) if s.get("key") == key)
    ports = step_ports(doomed)
    successor = ports[0][2] if ports else None
    if successor == key:
        successor = None
    del steps[index]
    for step in steps:
        for port, _, target in step_ports(step):
            if target == key:
                _set_port(step, port, successor)
    if index == 0 and successor is not None:
        position = next(i for i, s in enumerate(steps) if s.get("key") == successor)
        steps.insert(0, steps.pop(position))
    return result


def replace_step(definition: dict, *, key: str, step: dict) -> dict:
    result = copy.deepcopy(definition)
    result["steps"] = [step if s.get("key") == key else s for s in result.get("steps") or []]
    return result


def find_step(definition: dict, key: str) -> dict | None:
    return next((s for s in definition.get("steps") or [] if s.get("key") == key), None)


# --- Between versions -----------------------------------------------------------------------


def summarize_changes(before: dict | None, after: dict) -> str:
    """What a version changed against the one before it, in a line."""
    if before is None:
        return "First version"
    old_steps = {s.get("key"): s for s in before.get("steps") or []}
    new_steps = {s.get("key"): s for s in after.get("steps") or []}
    parts = []
    added = [k for k in new_steps if k not in old_steps]
    removed = [k for k in old_steps if k not in new_steps]
    changed = [k for k in new_steps if k in old_steps and new_steps[k] != old_steps[k]]
    for label, keys in (("added", added), ("removed", removed), ("changed", changed)):
        if keys:
            parts.append(
                f"{label} {len(keys)} step{'s' if len(keys) > 1 else ''} ({', '.join(keys)})"
            )
    for section, label in (
        ("triggers", "triggers"),
        ("exit_when", "exit rules"),
        ("settings", "settings"),
    ):
        if before.get(section) != after.get(section):
            parts.append(f"changed {label}")
    if not parts:
        return "No changes to the flow"
    text = "; ".join(parts)
    return text[0].upper() + text[1:]
