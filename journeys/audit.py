"""The audit trail: django-auditlog records it (settings.AUDITLOG_INCLUDE_TRACKING_MODELS
says of what); these are its reads, its page, and the entry that records an erasure. The
guards that keep published versions and awards unchangeable are in journeys.signals and
conversions.signals.
"""

import dataclasses
import json
from datetime import datetime

from auditlog.models import LogEntry
from django.contrib.auth.decorators import permission_required
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import Q
from django.shortcuts import get_object_or_404, render
from django.utils.dateparse import parse_duration as parse_timedelta

from conversions.models import Conversion, Goal
from journeys.definition import format_duration
from journeys.editing import STEP_TYPE_LABELS, humanize_duration
from journeys.models import Journey, JourneyVersion


@dataclasses.dataclass(frozen=True)
class AuditRow:
    when: datetime
    who: str
    action: str
    what: str
    # Each change as a sentence ("Changed the wait in step 'nudge' from 2 days to 1 day").
    changes: list[str]


def journey_audit_entries(journey: Journey):
    """Every audit entry about the journey, its versions, goals and conversions, newest
    first, with actor and content type joined (one query when evaluated)."""
    types = ContentType.objects.get_for_models(Journey, JourneyVersion, Goal, Conversion)
    return (
        LogEntry.objects.filter(
            Q(content_type=types[Journey], object_id=journey.pk)
            | Q(content_type=types[JourneyVersion], object_id__in=journey.versions.values("pk"))
            | Q(
                content_type=types[Goal],
                object_id__in=Goal.objects.filter(journey=journey).values("pk"),
            )
            | Q(
                content_type=types[Conversion],
                object_id__in=Conversion.objects.filter(journey=journey).values("pk"),
            )
        )
        .select_related("actor", "content_type")
        .order_by("-timestamp", "-pk")
    )


def _who(entry) -> str:
    if entry.actor is not None:
        return entry.actor.get_username()
    api_key = (
        (entry.additional_data or {}).get("api_key")
        if isinstance(entry.additional_data, dict)
        else None
    )
    return f"API key {api_key}" if api_key else "system"


def _short(value, limit: int = 80) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def audit_rows(entries) -> list[AuditRow]:
    """Entries as plain rows for a page: who, when, what, and each change in words."""
    return [
        AuditRow(
            when=entry.timestamp,
            who=_who(entry),
            action=entry.get_action_display(),
            what=f"{entry.content_type.name} {entry.object_repr}",
            changes=describe_changes(entry),
        )
        for entry in entries
    ]


# Bookkeeping that every save changes; saying so tells a reader nothing.
_SILENT_FIELDS = {"id", "created_at", "updated_at"}


def describe_changes(entry) -> list[str]:
    """The entry's changes as sentences a person reads. django-auditlog records reverse
    relations too ("enrollments: None → journeys.Enrollment.None") and every value as
    text; only the model's own fields are described, a version's definition step by step."""
    model = entry.content_type.model_class()
    created = entry.action == entry.Action.CREATE
    sentences = []
    for name, change in sorted((entry.changes_dict or {}).items()):
        field = _own_field(model, name)
        if field is None or name in _SILENT_FIELDS:
            continue
        label = str(field.verbose_name)
        if isinstance(change, dict):  # m2m: {"type", "operation", "objects"}
            verb = "Added to" if change.get("operation") == "add" else "Removed from"
            sentences.append(f"{verb} {label}: {', '.join(change.get('objects', []))}")
            continue
        old, new = change
        if name == "definition":
            sentences += _definition_changes(_json(old), _json(new))
            continue
        old, new = _field_value(field, old), _field_value(field, new)
        if created:
            if new not in ("", "none"):
                sentences.append(f"Set {label} to {new}")
        elif old != new:
            sentences.append(f"Changed {label} from {old} to {new}")
    return sentences


def _own_field(model, name):
    if model is None:
        return None
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    return None if field.auto_created and not field.concrete else field


def _json(text):
    if text in (None, "None", ""):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _field_value(field, text) -> str:
    if text in (None, "None"):
        return "none"
    if isinstance(field, models.DurationField) and (duration := parse_timedelta(str(text))):
        return humanize_duration(format_duration(duration))
    return _short(text)


# What a step's field is called in a sentence: "Changed the wait in step 'nudge' ...".
_STEP_FIELD_WORDS = {
    "duration": "the wait",
    "next": "the next step",
    "subject": "the subject",
    "body": "the body",
    "html": "the HTML body",
    "name": "the name",
    "within": "the time allowed",
    "wait": "the time to wait",
    "type": "the type",
}


def _definition_changes(before: dict | None, after: dict | None) -> list[str]:
    if not isinstance(after, dict):
        return ["Changed the definition"]
    old_steps = _steps_by_key(before)
    new_steps = _steps_by_key(after)
    if not isinstance(before, dict):
        names = ", ".join(f"'{_step_name(step)}'" for step in new_steps.values())
        count = len(new_steps)
        return [
            f"Started with {count} step{'' if count == 1 else 's'}: {names}"
            if names
            else "Started with no steps"
        ]
    sentences = []
    for key, step in new_steps.items():
        if key not in old_steps:
            kind = STEP_TYPE_LABELS.get(step.get("type"), step.get("type"))
            sentences.append(f"Added step '{_step_name(step)}' ({kind})")
    for key, step in old_steps.items():
        if key not in new_steps:
            sentences.append(f"Removed step '{_step_name(step)}'")
    for key, step in new_steps.items():
        previous = old_steps.get(key)
        if previous is None or previous == step:
            continue
        for part in sorted(previous.keys() | step.keys()):
            if part == "key" or previous.get(part) == step.get(part):
                continue
            what = _STEP_FIELD_WORDS.get(part, f"the {part.replace('_', ' ')}")
            sentences.append(
                f"Changed {what} in step '{_step_name(step)}' from "
                f"{_step_value(previous.get(part))} to {_step_value(step.get(part))}"
            )
    for section, words in (
        ("triggers", "the triggers"),
        ("exit_when", "the exit rules"),
        ("conversions", "the conversions"),
        ("goals", "the goals"),
    ):
        if before.get(section) != after.get(section):
            sentences.append(f"Changed {words}")
    old_settings, new_settings = before.get("settings") or {}, after.get("settings") or {}
    for name in sorted(old_settings.keys() | new_settings.keys()):
        if old_settings.get(name) != new_settings.get(name):
            sentences.append(
                f"Changed the setting {name.replace('_', ' ')} from "
                f"{_step_value(old_settings.get(name))} to {_step_value(new_settings.get(name))}"
            )
    return sentences or ["No change to the flow"]


def _steps_by_key(definition) -> dict:
    if not isinstance(definition, dict):
        return {}
    return {
        step["key"]: step
        for step in definition.get("steps") or []
        if isinstance(step, dict) and isinstance(step.get("key"), str)
    }


def _step_name(step: dict) -> str:
    return step.get("name") or step.get("key") or ""


def _step_value(value) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, str):
        if value[:1] == "P" and (words := humanize_duration(value)) != value:
            return words
        return f"“{_short(value, 60)}”"
    if isinstance(value, (dict, list)):
        return _short(json.dumps(value), 60)
    return str(value)


AUDIT_PAGE_SIZE = 200


@permission_required("journeys.view_journey", raise_exception=True)
def journey_audit_page(request, key: str):
    """The journey's audit log: who changed it, its versions, goals and conversions, when,
    and what changed; the newest AUDIT_PAGE_SIZE entries."""
    journey = get_object_or_404(Journey, key=key)
    rows = audit_rows(journey_audit_entries(journey)[:AUDIT_PAGE_SIZE])
    return render(
        request,
        "journeys/audit.html",
        {"journey": journey, "rows": rows, "limit": AUDIT_PAGE_SIZE, "nav": "journeys"},
    )


def record_erasure(contact) -> None:
    """An audit entry saying that the contact's personal data was erased, by whom (the
    request's user or API key) and when. The contact model itself is not audited: its
    entries would keep the very data an erasure removes. The entry names only the anonymous
    id."""
    LogEntry.objects.log_create(
        contact,
        force_log=True,
        action=LogEntry.Action.UPDATE,
        changes={"personal data": ["present", "erased"]},
    )
