"""Reads of journeys that join or aggregate, each written once with its prefetches.

The journeys pages, API and engine sit above conversions (docs/architecture.md, "Layers"), so
these reads join conversion rows freely; reads of goals and conversions alone live in
`conversions.selectors`.
"""

import dataclasses
import datetime

from django.db import connection
from django.db.models import Count, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from pydantic import ValidationError

from conversions.models import Conversion, ConversionAward, GoalAchievement
from conversions.selectors import (
    active_goals_and_conversions,
    conversion_definition,
    goal_definition,
    version_goals_and_conversions,
)
from journeys.definition import (
    VERSION_PARTS,
    Definition,
    render_definition,
)
from journeys.editing import StepCounts
from journeys.models import (
    Contact,
    EngineLease,
    Enrollment,
    Event,
    Journey,
    JourneyVersion,
    OutboxMessage,
    StepVisit,
    Subscription,
)


def latest_version(*, journey: Journey) -> JourneyVersion | None:
    return journey.versions.order_by("-number").first()


def journey_definition(*, journey: Journey, version: JourneyVersion | None = None) -> dict:
    """The full canonical definition of a version (default: the newest one), with the
    journey's key, name, description, goals and conversions.

    It round-trips: posting it as a new version and reading that back gives the same dict.
    A draft saved with errors keeps its own goals and conversions in its row (they are not
    synced to the journey until the draft is valid), and they are returned as saved.
    """
    if version is None:
        version = latest_version(journey=journey)
    data: dict = {"key": journey.key, "name": journey.name}
    if journey.description:
        data["description"] = journey.description
    stored = version.definition if version is not None else {}
    data.update({part: stored[part] for part in VERSION_PARTS if part in stored})
    if "goals" in stored or "conversions" in stored:
        data["goals"] = stored.get("goals", [])
        data["conversions"] = stored.get("conversions", [])
    elif version is not None:
        goals, conversions = version_goals_and_conversions(journey, version)
        data["goals"] = [goal_definition(goal) for goal in goals]
        data["conversions"] = [conversion_definition(conversion) for conversion in conversions]
    try:
        return render_definition(Definition.model_validate(data))
    except ValidationError:
        # Only an invalid draft gets here; it is returned as saved so nothing is lost.
        return data


def journey_list() -> QuerySet[Journey]:
    """Every journey with its live versions and active conversions prefetched (3 queries)."""

    return Journey.objects.order_by("key").prefetch_related(
        Prefetch(
            "versions",
            queryset=JourneyVersion.objects.filter(state=JourneyVersion.State.LIVE).order_by(
                "number"
            ),
            to_attr="live_versions",
        ),
        active_goals_and_conversions()[1],
    )


def journey_detail(*, key: str) -> Journey | None:
    """One journey with its versions, active goals (with their conversion) and active
    conversions prefetched (4 queries); None when there is no such journey."""

    return (
        Journey.objects.filter(key=key)
        .prefetch_related(
            Prefetch(
                "versions",
                queryset=JourneyVersion.objects.order_by("number").defer("definition"),
                to_attr="all_versions",
            ),
            *active_goals_and_conversions(),
        )
        .first()
    )


# --- Pages: the journeys list, where goals and conversions are used, contacts ---------------


@dataclasses.dataclass(frozen=True)
class JourneyRow:
    journey: Journey
    live_versions: list
    draft: JourneyVersion | None
    enrolled: int
    converted: int
    headline_conversion: str | None
    rate: float | None
    last_change: datetime.datetime


def journey_list_rows(*, search: str = "", status: str = "") -> list[JourneyRow]:
    """The journeys list: each journey with its live and draft versions and its headline
    numbers, in 2 queries whatever the number of journeys.

    The headline conversion is the journey's first active conversion; `enrolled` counts the
    journey's enrollments that were not held out and `converted` those of them with at
    least one award of that conversion.
    """

    first_conversion = Conversion.objects.filter(
        journey=OuterRef("pk"), archived_at__isnull=True
    ).order_by("position", "key")
    enrolled = (
        Enrollment.objects.filter(journey=OuterRef("pk"), held_out=False)
        .order_by()
        .values("journey")
        .annotate(n=Count("pk"))
        .values("n")
    )
    converted = (
        ConversionAward.objects.filter(
            journey=OuterRef("pk"),
            enrollment__held_out=False,
            conversion=Subquery(
                Conversion.objects.filter(
                    journey=OuterRef(OuterRef("pk")), archived_at__isnull=True
                )
                .order_by("position", "key")
                .values("pk")[:1]
            ),
        )
        .order_by()
        .values("journey")
        .annotate(n=Count("enrollment", distinct=True))
        .values("n")
    )
    last_version_change = (
        JourneyVersion.objects.filter(journey=OuterRef("pk"))
        .annotate(changed=Coalesce("published_at", "created_at"))
        .order_by("-changed")
        .values("changed")[:1]
    )
    journeys = Journey.objects.annotate(
        enrolled_count=Coalesce(Subquery(enrolled), 0),
        converted_count=Coalesce(Subquery(converted), 0),
        headline_name=Subquery(first_conversion.values("name")[:1]),
        last_version_change=Subquery(last_version_change),
    ).prefetch_related(
        Prefetch(
            "versions",
            queryset=JourneyVersion.objects.filter(
                state__in=[JourneyVersion.State.LIVE, JourneyVersion.State.DRAFT]
            )
            .defer("definition")
            .order_by("number"),
            to_attr="current_versions",
        )
    )
    if search:
        journeys = journeys.filter(
            Q(name__icontains=search) | Q(key__icontains=search) | Q(description__icontains=search)
        )
    if status:
        journeys = journeys.filter(status=status)
    rows = []
    for journey in journeys.order_by("name", "key"):
        versions = journey.current_versions
        rows.append(
            JourneyRow(
                journey=journey,
                live_versions=[v for v in versions if v.state == JourneyVersion.State.LIVE],
                draft=next((v for v in versions if v.state == JourneyVersion.State.DRAFT), None),
                enrolled=journey.enrolled_count,
                converted=journey.converted_count,
                headline_conversion=journey.headline_name,
                rate=(
                    journey.converted_count / journey.enrolled_count
                    if journey.headline_name and journey.enrolled_count
                    else None
                ),
                last_change=max(filter(None, [journey.updated_at, journey.last_version_change])),
            )
        )
    return rows


@dataclasses.dataclass(frozen=True)
class Usage:
    journey_key: str
    journey_name: str
    version: int
    state: str
    where: str
    other_journey: bool


def definition_usages(*, journey: Journey) -> dict[str, list[Usage]]:
    """Where each goal and conversion of the journey is used, keyed "conversion:KEY" and
    "goal:KEY": steps, triggers and exit rules of the draft and live versions of this
    journey and of every other journey (1 query; definitions are scanned in Python)."""
    usages: dict[str, list[Usage]] = {}
    versions = (
        JourneyVersion.objects.filter(
            state__in=[JourneyVersion.State.LIVE, JourneyVersion.State.DRAFT]
        )
        .select_related("journey")
        .only("number", "state", "definition", "journey__key", "journey__name")
        .order_by("journey__name", "number")
    )
    for version in versions:
        definition = version.definition if isinstance(version.definition, dict) else {}
        own = version.journey_id == journey.pk

        def add(kind, key, where, *, version=version, own=own):
            usages.setdefault(f"{kind}:{key}", []).append(
                Usage(
                    journey_key=version.journey.key,
                    journey_name=version.journey.name,
                    version=version.number,
                    state=version.state,
                    where=where,
                    other_journey=not own,
                )
            )

        if own:
            for step in definition.get("steps") or []:
                if not isinstance(step, dict):
                    continue
                label = step.get("name") or step.get("key")
                if step.get("type") == "convert":
                    add("conversion", step.get("conversion"), f"Convert step '{label}'")
                elif step.get("type") == "evaluate_goal":
                    add("goal", step.get("goal"), f"Evaluate goal step '{label}'")
        for section, label in (("triggers", "Trigger"), ("exit_when", "Exit rule")):
            for rule in definition.get(section) or []:
                if not isinstance(rule, dict) or rule.get("type") not in ("conversion", "goal"):
                    continue
                target = rule.get("journey") or (
                    version.journey.key if section == "exit_when" else None
                )
                if target == journey.key:
                    kind = rule["type"]
                    add(kind, rule.get(kind), label)
    return usages


@dataclasses.dataclass(frozen=True)
class TimelineEntry:
    kind: str
    at: datetime.datetime
    title: str
    detail: str
    journey: Journey | None = None
    path: list | None = None
    state: str = ""


# Under this many matches the list shows an exact total; above it counting every row would
# cost a scan of up to 1 M rows on each page view, so the total is "more than N" (filters)
# or the planner's estimate (no filter, PostgreSQL: pg_class.reltuples).
CONTACT_COUNT_EXACT_BELOW = 10_000
CONTACTS_PER_PAGE = 50
# OFFSET reads and skips every earlier row: page 2,000 skips 100,000 index entries (~30 ms).
# Past it people should narrow the search rather than page.
CONTACT_PAGES_MAX = 2_000


@dataclasses.dataclass(frozen=True)
class ContactFilters:
    query: str = ""
    attribute: tuple[str, str] | None = None
    subscriptions: tuple[tuple[str, str], ...] = ()
    journey: Journey | None = None
    version: int | None = None
    step: str = ""
    # "" (at the step now, active), "entered" or "converted" (entered, and awarded the
    # journey's first conversion): the canvas numbers' three lists.
    reached: str = ""

    def __bool__(self) -> bool:
        return bool(self.query or self.attribute or self.subscriptions or self.journey or self.step)


@dataclasses.dataclass(frozen=True)
class ContactPage:
    contacts: list
    number: int
    has_next: bool
    total: int
    # "exact", "at least" (more than CONTACT_COUNT_EXACT_BELOW matched) or "estimate".
    total_kind: str

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def contact_search(
    *, filters: ContactFilters = ContactFilters(), page: int = 1, per_page: int = CONTACTS_PER_PAGE
) -> ContactPage:
    """One page of the contacts that match, newest first, with their enrollment and
    conversion counts, and the total (2 queries; 3 on PostgreSQL without filters).

    Search is by prefix (email, external id, first_name, last_name or name attribute,
    case-insensitive) so that it reads the prefix indexes of migration 0019 rather than
    every row."""

    contacts = _filtered_contacts(filters)
    # The page's ids first: PostgreSQL computes the select list for the rows OFFSET skips
    # too, so annotating the offset query would count enrollments of 25,000 rows on page 500.
    page_ids = contacts.order_by("-pk").values("pk")[(page - 1) * per_page : page * per_page + 1]
    rows = list(
        Contact.objects.filter(pk__in=Subquery(page_ids))
        .annotate(
            enrollment_count=_count_per_contact(Enrollment),
            award_count=_count_per_contact(ConversionAward),
        )
        .order_by("-pk")
    )
    total, kind = _count_contacts(contacts, filtered=bool(filters))
    return ContactPage(
        contacts=rows[:per_page],
        number=page,
        has_next=len(rows) > per_page,
        total=total,
        total_kind=kind,
    )


def _count_per_contact(model):
    """A correlated count: evaluated for the page's rows only, where a join and GROUP BY
    would aggregate every contact's rows before the LIMIT."""

    rows = model.objects.filter(contact=OuterRef("pk")).order_by().values("contact")
    return Coalesce(Subquery(rows.annotate(n=Count("pk")).values("n")), 0)


def _filtered_contacts(filters: ContactFilters) -> QuerySet:
    contacts = Contact.objects.all()
    if query := filters.query:
        contacts = contacts.filter(
            Q(email__istartswith=query)
            | Q(external_id__istartswith=query)
            | Q(attributes__first_name__istartswith=query)
            | Q(attributes__last_name__istartswith=query)
            | Q(attributes__name__istartswith=query)
        )
    if filters.attribute:
        key, value = filters.attribute
        if connection.vendor == "postgresql":
            # @> reads the GIN index on attributes; a key lookup would read every row.
            contacts = contacts.filter(attributes__contains={key: value})
        else:
            contacts = contacts.filter(**{f"attributes__{key}": value})
    for channel, status in filters.subscriptions:
        matches = Q(**{f"subscriptions__{channel}": status})
        if status == Subscription.SUBSCRIBED:
            # A channel missing from the JSON counts as subscribed (Contact.subscription).
            matches |= Q(**{f"subscriptions__{channel}__isnull": True})
        contacts = contacts.filter(matches)
    if filters.journey is not None:
        enrollments = Enrollment.objects.filter(journey=filters.journey)
        if filters.version is not None:
            enrollments = enrollments.filter(version__number=filters.version)
        if not filters.reached:
            enrollments = enrollments.filter(state=Enrollment.State.ACTIVE)
            if filters.step:
                enrollments = enrollments.filter(current_step=filters.step)
        elif filters.step:
            enrollments = enrollments.filter(visits__step_key=filters.step)
        if filters.reached == "converted":
            enrollments = enrollments.filter(
                awards__conversion=Subquery(_first_conversion(filters.journey.pk))
            )
        contacts = contacts.filter(pk__in=enrollments.values("contact_id"))
    return contacts


def _first_conversion(journey_id):
    """The journey's first active conversion, the one its headline numbers count."""
    return (
        Conversion.objects.filter(journey=journey_id, archived_at__isnull=True)
        .order_by("position", "key")
        .values("pk")[:1]
    )


def step_counts(*, version: JourneyVersion) -> dict[str, StepCounts]:
    """Per step of the version: enrollments active at it now, enrollments that entered it,
    and those of them awarded the journey's first conversion (3 grouped queries, whatever
    the number of steps)."""

    active = dict(
        Enrollment.objects.filter(version=version, state=Enrollment.State.ACTIVE)
        .order_by()
        .values("current_step")
        .annotate(n=Count("pk"))
        .values_list("current_step", "n")
    )
    visits = StepVisit.objects.filter(version=version).order_by().values("step_key")
    entered = dict(
        visits.annotate(n=Count("enrollment", distinct=True)).values_list("step_key", "n")
    )
    converted = dict(
        visits.filter(
            enrollment__awards__conversion=Subquery(_first_conversion(version.journey_id))
        )
        .annotate(n=Count("enrollment", distinct=True))
        .values_list("step_key", "n")
    )
    return {
        key: StepCounts(
            active=active.get(key, 0), entered=entered.get(key, 0), converted=converted.get(key, 0)
        )
        for key in active.keys() | entered.keys() | converted.keys()
    }


def _count_contacts(contacts: QuerySet, *, filtered: bool) -> tuple[int, str]:
    if not filtered and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [Contact._meta.db_table],
            )
            estimate = cursor.fetchone()[0]
        if estimate > CONTACT_COUNT_EXACT_BELOW:
            return estimate, "estimate"
    # Counting through a LIMIT stops at the threshold instead of reading every match.
    count = contacts.order_by().values("pk")[: CONTACT_COUNT_EXACT_BELOW + 1].count()
    if count > CONTACT_COUNT_EXACT_BELOW:
        return CONTACT_COUNT_EXACT_BELOW, "at least"
    return count, "exact"


def contact_timeline(*, contact, limit: int = 200) -> list[TimelineEntry]:
    """Everything that happened to a contact, newest first: events, enrollments (with the
    path taken), messages, goals achieved and conversions awarded (5 queries)."""

    entries = [
        TimelineEntry(
            kind="event",
            at=event.timestamp,
            title=f"Event {event.name}",
            detail=", ".join(f"{k}: {v}" for k, v in (event.properties or {}).items()),
        )
        for event in contact.events.order_by("-timestamp")[:limit]
    ]
    for enrollment in contact.enrollments.select_related("journey", "version").order_by(
        "-started_at"
    )[:limit]:
        entries.append(
            TimelineEntry(
                kind="enrollment",
                at=enrollment.started_at,
                title=f"Entered {enrollment.journey.name} v{enrollment.version.number}",
                detail=("held out; " if enrollment.held_out else "")
                + (
                    f"ended {enrollment.ended_at:%Y-%m-%d %H:%M}"
                    if enrollment.ended_at
                    else "running"
                ),
                journey=enrollment.journey,
                path=enrollment.path,
                state=enrollment.state,
            )
        )
    for message in OutboxMessage.objects.filter(contact=contact).order_by("-created_at")[:limit]:
        entries.append(
            TimelineEntry(
                kind="message",
                at=message.sent_at or message.due_at,
                title=f"{message.get_channel_display()} {message.get_status_display().lower()}"
                + (f": {message.subject}" if message.subject else ""),
                detail=f"step {message.step_key} to {message.recipient}"
                + (f" · {note}" if (note := _message_note(message)) else ""),
            )
        )
    for achievement in (
        GoalAchievement.objects.filter(contact=contact)
        .select_related("goal", "journey")
        .order_by("-achieved_at")[:limit]
    ):
        entries.append(
            TimelineEntry(
                kind="goal",
                at=achievement.achieved_at,
                title=f"Goal achieved: {achievement.goal.name}",
                detail=f"step {achievement.step_key}" if achievement.step_key else "",
                journey=achievement.journey,
            )
        )
    for award in (
        ConversionAward.objects.filter(contact=contact)
        .select_related("conversion", "journey")
        .order_by("-awarded_at")[:limit]
    ):
        entries.append(
            TimelineEntry(
                kind="conversion",
                at=award.awarded_at,
                title=f"Converted: {award.conversion.name} ({award.value})",
                detail=f"{award.get_source_display()}"
                + (f", step {award.step_key}" if award.step_key else ""),
                journey=award.journey,
            )
        )
    entries.sort(key=lambda entry: entry.at, reverse=True)
    return entries


def _message_note(message: OutboxMessage) -> str:
    """Why a message waits or was not sent: "held until 08:00 Europe/Paris (quiet hours)"
    (written by the delivery), "skipped: frequency cap"."""
    if message.status == OutboxMessage.Status.SKIPPED:
        return f"skipped: {message.reason.replace('_', ' ')}" if message.reason else "skipped"
    if message.status in (OutboxMessage.Status.PENDING, OutboxMessage.Status.FAILED):
        return message.error
    return ""


def journey_for_editor(*, key: str) -> Journey | None:
    """One journey for the editor: every version with its definition and who made and
    published it (newest first), active goals with their conversion, active conversions
    (4 queries); None when there is no such journey."""

    return (
        Journey.objects.filter(key=key)
        .prefetch_related(
            Prefetch(
                "versions",
                queryset=JourneyVersion.objects.select_related(
                    "created_by", "published_by"
                ).order_by("-number"),
                to_attr="history",
            ),
            *active_goals_and_conversions(),
        )
        .first()
    )


def editor_definition(*, journey: Journey, version: JourneyVersion | None) -> dict:
    """The definition the editor works on: the version's flow with the journey's current
    goals and conversions (which belong to the journey, not to the version). Needs the
    journey from journey_for_editor; runs no query."""
    data: dict = {"key": journey.key, "name": journey.name}
    if journey.description:
        data["description"] = journey.description
    stored = (
        version.definition if version is not None and isinstance(version.definition, dict) else {}
    )
    data.update({part: stored[part] for part in VERSION_PARTS if part in stored})
    data.setdefault("steps", [])
    data["goals"] = [goal_definition(goal) for goal in journey.active_goals]
    data["conversions"] = [conversion_definition(c) for c in journey.active_conversions]
    try:
        return render_definition(Definition.model_validate(data))
    except ValidationError:
        return data


@dataclasses.dataclass(frozen=True)
class EngineStatus:
    """What the workers have to do and what went wrong, for operators."""

    events_pending: int
    events_dropped: int
    events_failed: int
    enrollments_due: int
    enrollments_running: int
    enrollments_waiting: int
    enrollments_failed: int
    messages_pending: int
    messages_failed: int
    oldest_due_seconds: dict


def engine_status(*, now: datetime.datetime) -> EngineStatus:
    """One aggregate query per queue of record, plus the age of each queue's oldest due item."""

    events = Event.objects.aggregate(
        pending=Count("id", filter=Q(status=Event.Status.PENDING)),
        dropped=Count("id", filter=Q(status=Event.Status.DROPPED)),
        failed=Count("id", filter=Q(status=Event.Status.FAILED)),
    )
    active = Q(state=Enrollment.State.ACTIVE)
    running = active & Q(pk__in=leased_enrollment_ids(now=now))
    held = Q(journey_id__in=_held_journeys())
    enrollments = Enrollment.objects.filter(Q(state=Enrollment.State.FAILED) | active).aggregate(
        due=Count("id", filter=active & Q(due_at__lte=now) & ~running & ~held),
        running=Count("id", filter=running),
        waiting=Count("id", filter=active & Q(due_at__gt=now)),
        failed=Count("id", filter=Q(state=Enrollment.State.FAILED)),
    )
    messages = OutboxMessage.objects.aggregate(
        pending=Count("id", filter=Q(status=OutboxMessage.Status.PENDING)),
        failed=Count("id", filter=Q(status=OutboxMessage.Status.FAILED)),
    )
    return EngineStatus(
        events_pending=events["pending"],
        events_dropped=events["dropped"],
        events_failed=events["failed"],
        enrollments_due=enrollments["due"],
        enrollments_running=enrollments["running"],
        enrollments_waiting=enrollments["waiting"],
        enrollments_failed=enrollments["failed"],
        messages_pending=messages["pending"],
        messages_failed=messages["failed"],
        oldest_due_seconds=due_work_ages(now=now),
    )


def leased_enrollment_ids(*, now: datetime.datetime | None = None) -> set[int]:
    """The enrollments of the engine's leases: every lease (claims, which reap the run-out
    ones first), or those still running at `now`."""
    leases = EngineLease.objects.all()
    if now is not None:
        leases = leases.filter(leased_until__gte=now)
    return {pk for ids in leases.values_list("enrollment_ids", flat=True) for pk in ids}


def _held_journeys() -> QuerySet:
    return Journey.objects.filter(status__in=Journey.HELD).values("pk")


def due_work_ages(*, now: datetime.datetime) -> dict[str, float | None]:
    """Seconds the oldest item of each queue of record has been due; None when none is.

    Each query walks the partial index that the workers use to find the same work. Work a
    paused or stopped journey holds is not late: the workers leave it on purpose.
    """
    oldest = {
        "events": Event.objects.filter(status=Event.Status.PENDING)
        .order_by("id")
        .values_list("received_at", flat=True)
        .first(),
        "enrollments": Enrollment.objects.filter(state=Enrollment.State.ACTIVE, due_at__lte=now)
        .exclude(journey_id__in=_held_journeys())
        .order_by("due_at")
        .values_list("due_at", flat=True)
        .first(),
        "outbox": OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING, due_at__lte=now)
        .exclude(enrollment__journey_id__in=_held_journeys())
        .order_by("due_at")
        .values_list("due_at", flat=True)
        .first(),
    }
    return {
        name: None if since is None else round(max((now - since).total_seconds(), 0.0), 3)
        for name, since in oldest.items()
    }


def liquid_attribute_keys(*, journey: Journey, sample: int = 200, limit: int = 40) -> list[str]:
    """Attribute names a message of the journey can use: those of the contacts that entered
    it last, or of the newest contacts when none has yet; at most `limit`, from at most
    `sample` contacts (2 queries at most)."""
    recent = Enrollment.objects.filter(journey=journey).order_by("-started_at")
    keys: set[str] = set()
    for contacts in (
        Contact.objects.filter(pk__in=recent.values("contact_id")[:sample]),
        Contact.objects.order_by("-pk")[:sample],
    ):
        for attributes in contacts.values_list("attributes", flat=True):
            keys.update(attributes or {})
        if keys:
            break
    return sorted(keys)[:limit]


def preview_contact(*, journey: Journey, query: str = "") -> Contact | None:
    """The contact a message preview is rendered for: the one whose external id or email is
    `query`, or without one the contact that entered the journey last, or the first contact
    (the demo's first one)."""
    contacts = Contact.objects.filter(erased_at__isnull=True)
    if query:
        return contacts.filter(Q(external_id=query) | Q(email__iexact=query)).order_by("pk").first()
    recent = Enrollment.objects.filter(journey=journey).order_by("-started_at")
    return (
        contacts.filter(pk__in=recent.values("contact_id")[:1]).first()
        or contacts.order_by("pk").first()
    )
