"""The audit trail: django-auditlog records it (settings.AUDITLOG_INCLUDE_TRACKING_MODELS
says of what); these are its reads, its page, and the entry that records an erasure. The
guards that keep published versions and awards unchangeable are in journeys.signals and
conversions.signals.
"""

import dataclasses
from datetime import datetime

from auditlog.models import LogEntry
from django.contrib.auth.decorators import permission_required
from django.contrib.contenttypes.models import ContentType
from django.db.models import Q
from django.shortcuts import get_object_or_404, render

from conversions.models import Conversion, Goal
from journeys.models import Journey, JourneyVersion


@dataclasses.dataclass(frozen=True)
class AuditRow:
    when: datetime
    who: str
    action: str
    what: str
    changes: list[tuple[str, str, str]]


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
    """Entries as plain rows for a page: who, when, what, and each changed field."""
    rows = []
    for entry in entries:
        changes = []
        for field, change in sorted((entry.changes_dict or {}).items()):
            if isinstance(change, dict):  # m2m: {"type", "operation", "objects"}
                changes.append(
                    (field, change.get("operation", ""), ", ".join(change.get("objects", [])))
                )
            else:
                old, new = change
                changes.append((field, _short(old), _short(new)))
        rows.append(
            AuditRow(
                when=entry.timestamp,
                who=_who(entry),
                action=entry.get_action_display(),
                what=f"{entry.content_type.name} {entry.object_repr}",
                changes=changes,
            )
        )
    return rows


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
