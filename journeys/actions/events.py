"""Events: stored as they arrive (idempotent on their id), then matched by the workers
against triggers, exit rules, event conversions and enrollments waiting on a goal.
"""

import dataclasses
import logging
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from conversions.actions import AwardRequest, award_conversions
from conversions.models import Conversion, ConversionAward
from journeys import engine
from journeys.actions.consent import SMS_INBOUND_EVENT, apply_sms_keywords
from journeys.actions.contacts import contact_ids_by_external_id
from journeys.actions.enrollments import end_fields, entry_times, new_enrollment_row, pick_flow
from journeys.bulk import claim, insert_rows, retrying_deadlocks, share_lock
from journeys.flows import listening, live_flows, load_flows
from journeys.models import Contact, Enrollment, Event, JourneyVersion
from journeys.wakeups import wake
from webhooks.outbox import enqueue_webhook_events

logger = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class PendingEvent:
    """A claimed event as the batch reads it: plain values, not a model object (building
    500 Event instances a batch was a tenth of matching's time)."""

    pk: int
    contact_id: int
    name: str
    properties: dict
    timestamp: datetime
    depth: int
    attempts: int


_PENDING_EVENT_COLUMNS = [field.name for field in dataclasses.fields(PendingEvent)]


def ingest_events(
    *, events: list[dict], source: str = Event.Source.API, now: datetime | None = None
) -> tuple[int, int]:
    """Store a validated batch of events and wake the event workers; returns (accepted,
    duplicates). Each event is {"id", "contact", "name", "properties", "timestamp"}
    (timestamp: an aware datetime or None for now); unknown contacts are created.

    Locks: the unique index entries of the new contacts and events. Safe to run twice: an
    event id already stored (or repeated in the batch) is skipped by the database and
    counted as a duplicate, so a replayed batch stores and processes nothing.
    """
    now = now or timezone.now()
    unique: dict[str, dict] = {}
    for event in events:
        unique.setdefault(event["id"], event)
    accepted = retrying_deadlocks(
        lambda: _store_events(unique, source=source, now=now), what="Event ingestion"
    )
    return accepted, len(events) - accepted


def _store_events(unique: dict[str, dict], *, source: str, now: datetime) -> int:
    """One transaction of `ingest_events`. Two requests replaying each other's ids in another
    order can deadlock on the event_id index (each holds an id the other inserts next):
    PostgreSQL rolls one back and `ingest_events` runs it again, which then counts the
    other's ids as duplicates. The rows keep the request's order, which is the order a
    contact's events take effect in (by id)."""
    with transaction.atomic():
        contact_ids = contact_ids_by_external_id({event["contact"] for event in unique.values()})
        rows = [
            {
                "event_id": event_id,
                "contact": contact_ids[event["contact"]],
                "name": event["name"],
                "properties": event.get("properties") or {},
                "timestamp": event.get("timestamp") or now,
                "received_at": now,
                "source": source,
                "depth": 0,
                "status": Event.Status.PENDING,
                "processed_at": None,
                "attempts": 0,
                "error": "",
            }
            for event_id, event in unique.items()
        ]
        _settle_unheard(rows, now=now)
        stored = (
            insert_rows(Event, rows, conflict_target="event_id", returning=("event_id", "status"))
            if rows
            else []
        )
        if any(status == Event.Status.PENDING for _, status in stored):
            wake("process_events")
    return len(stored)


def _settle_unheard(rows: list[dict], *, now: datetime) -> None:
    """Mark processed, as they are stored, the events nothing would act on: a name no
    published version or conversion listens to (`flows.listening`), and no SMS reply, of a
    contact with no enrollment waiting on a goal (any incoming event re-checks one: contract
    section 1, evaluate_goal). Most of what a site tracks is such events (page views); the
    event workers never see them.

    A journey published after such an event was stored does not see it, as it does not see
    any event stored before it went live and already matched."""
    heard = listening()
    unheard = [
        row for row in rows if row["name"] not in heard.names and row["name"] != SMS_INBOUND_EVENT
    ]
    if not unheard:
        return
    waiting = set()
    if heard.goal_waits:
        waiting = set(
            Enrollment.objects.filter(
                contact__any=sorted({row["contact"] for row in unheard}),
                state=Enrollment.State.ACTIVE,
            )
            .exclude(waiting_for_goal="")
            .values_list("contact_id", flat=True)
        )
    for row in unheard:
        if row["contact"] not in waiting:
            row["status"] = Event.Status.PROCESSED
            row["processed_at"] = now


def process_pending_events(*, limit: int | None = None, now: datetime) -> int:
    """Match a batch of pending events, in one transaction; returns how many were processed.
    See `_process_event_batch`; a batch that PostgreSQL picks as a deadlock victim is rolled
    back whole and tried again (at most 3 times, then left to the next run)."""
    return retrying_deadlocks(
        lambda: _process_event_batch(limit=limit, now=now), what="Event batch"
    )


def _process_event_batch(*, limit: int | None, now: datetime) -> int:
    """Claim a batch of pending events and match it, in one transaction; an event whose
    matching raises fails alone.

    The batch is matched in a savepoint (`_match_events`). When that raises, the batch is cut
    in two and each half matched the same way, down to the single events that raise
    (bisection: a 500-event batch with one bad event costs about three batches' work, where
    event by event would cost 500 savepoints of a dozen queries each). Such an event gets one
    more attempt and its error; after ENGINE_MAX_ATTEMPTS it is `failed` (visible, and
    retried from the admin with `retry_events`). The rest of the batch is processed.

    Order: a contact's later events in the batch wait (stay pending) while an earlier one
    failed, so none overtakes it while it may still succeed; they go on once it is parked as
    failed. An event retried from the admin is then matched after them, as a late event
    is: its own `timestamp` still decides windows and "since the enrollment started".

    Locks: the claimed event rows (FOR UPDATE SKIP LOCKED, so workers share the backlog),
    held until the batch commits; see `_match_events` for the rest. A deadlock or a lost
    connection is no event's fault: it rolls the whole batch back, to be tried again. Safe
    to run twice: a processed or failed event is not pending any more, and a rolled-back
    batch (or half) stays pending.
    """
    limit = limit or settings.ENGINE_BATCH_SIZE
    with transaction.atomic():
        events = [
            PendingEvent(*row)
            for row in claim(
                Event.objects.filter(status=Event.Status.PENDING)
                .order_by("id")
                .values_list(*_PENDING_EVENT_COLUMNS),
                limit,
            )
        ]
        # Their contacts next, never waiting: an erasure holds its contact and waits for
        # these events; theirs stay pending, and it deletes them (erase_contact's lock order).
        locked = share_lock(Contact, {event.contact_id for event in events}, skip_locked=True)
        events = [event for event in events if event.contact_id in locked]
        if not events:
            return 0
        failures: dict[int, tuple[Event, str]] = {}
        processed = _match_isolating(events, now=now, failures=failures)
        _record_event_failures(failures.values())
    return processed


def _match_isolating(events: list[PendingEvent], *, now: datetime, failures: dict) -> int:
    """`_match_events` in a savepoint; when it raises, each half of `events` the same way,
    down to the single events that raise, which go into `failures` (by id: the event and its
    error). Events of a contact with a failure are left pending. Returns how many were
    processed."""
    failed_contacts = {event.contact_id for event, _ in failures.values()}
    events = [event for event in events if event.contact_id not in failed_contacts]
    if not events:
        return 0
    try:
        with transaction.atomic():
            return _match_events(events, now=now)
    except (OperationalError, InterfaceError):
        # A deadlock or a lost connection says nothing about these events: blaming one
        # would park a good event; the batch is rolled back and tried again instead.
        raise
    except Exception as exc:
        if len(events) == 1:
            logger.warning("Event %s failed", events[0].pk, exc_info=True)
            failures[events[0].pk] = (events[0], f"{type(exc).__name__}: {exc}")
            return 0
    # Outside the handler, so that the halves' own errors are not chained to this one.
    middle = len(events) // 2
    first = _match_isolating(events[:middle], now=now, failures=failures)
    return first + _match_isolating(events[middle:], now=now, failures=failures)


def _record_event_failures(failures: Iterable[tuple[PendingEvent, str]]) -> None:
    """One more attempt for each event that raised, with its error; `failed` once it has had
    ENGINE_MAX_ATTEMPTS (its row is locked by the batch's claim, so `attempts` is current)."""
    for event, error in failures:
        attempts = event.attempts + 1
        Event.objects.filter(pk=event.pk).update(
            attempts=attempts,
            error=error[:2000],
            status=Event.Status.FAILED
            if attempts >= settings.ENGINE_MAX_ATTEMPTS
            else Event.Status.PENDING,
        )


def _match_events(events: list[PendingEvent], *, now: datetime) -> int:
    """Match claimed events and mark them processed; returns how many were.

    For each event, in order: awards of event-based conversions (to enrollments active, or
    within the conversion's window, when the event arrived), exits by `exit_when`, wake-ups
    of enrollments waiting on a goal, and new enrollments whose triggers match. A contact's
    events after one that started or exited an enrollment are left for the next batch, so
    that they see it.

    Locks: the contact rows of SMS STOP/START replies (`apply_sms_keywords`), then the
    enrollment rows it exits or wakes, in id order (each UPDATE re-checks
    `state='active'`, so an enrollment a worker just ended is left alone). New enrollments
    and awards are guarded by unique constraints (one enrollment per journey and trigger
    event, the re-entry lock, the award counting constraints).
    """
    contact_ids = {event.contact_id for event in events}
    names = {event.name for event in events}
    live = live_flows()

    # Archived ones too: a conversion archived after a version was published (by a
    # draft that leaves it out) still counts for that version's enrollments.
    conversions = list(Conversion.objects.filter(event_name__in=names).select_related("journey"))
    windows = [conversion.window for conversion in conversions if conversion.window]
    filters = {
        conversion.pk: engine.event_filters(conversion.event_where) for conversion in conversions
    }
    nearby = Q(state=Enrollment.State.ACTIVE)
    if windows:
        earliest = min(event.timestamp for event in events)
        nearby |= Q(started_at__gte=engine.time_before(earliest, max(windows)))
    # Without joins: each enrollment row carried its version's whole definition, and with
    # the enrollments' statistics behind (a table filling up) the planner drove the join
    # from the journey through every one of its active enrollments.
    enrollments = list(
        Enrollment.objects.filter(nearby, contact__any=sorted(contact_ids))
        # Newest first: award_conversions keeps the first request per identity, so a
        # once_per_contact award goes to the contact's newest enrollment.
        .order_by("-started_at")
    )
    # Their versions (and journeys) in a query of their own: a handful of rows, each once.
    version_ids = sorted({enrollment.version_id for enrollment in enrollments})
    versions = (
        JourneyVersion.objects.filter(pk__any=version_ids).select_related("journey").in_bulk()
        if version_ids
        else {}
    )
    by_contact: dict[int, list[Enrollment]] = {}
    for enrollment in enrollments:
        enrollment.version = versions[enrollment.version_id]
        enrollment.journey = enrollment.version.journey
        by_contact.setdefault(enrollment.contact_id, []).append(enrollment)
    flows = load_flows(versions=list(versions.values()))
    entered = entry_times(enrollments)

    awards = []
    exits: dict[str, set[int]] = {}
    wakes: set[int] = set()
    starts = []
    # Once an event of a contact starts or exits an enrollment, that contact's later
    # events wait for the next batch, which sees the change: events of one contact take
    # effect in order, as if processed one by one.
    changed_contacts: set[int] = set()
    processed = []
    for event in events:
        if event.contact_id in changed_contacts:
            continue
        processed.append(event.pk)
        mine = by_contact.get(event.contact_id, [])
        for conversion in conversions:
            if conversion.event_name != event.name or not engine.filters_match(
                filters[conversion.pk], event.properties
            ):
                continue
            for enrollment in mine:
                if enrollment.journey_id != conversion.journey_id:
                    continue
                if engine.event_earns_conversion(
                    event_time=event.timestamp,
                    entered_at=entered.get(enrollment.pk, enrollment.started_at),
                    active=enrollment.state == Enrollment.State.ACTIVE,
                    window=conversion.window,
                    published_at=enrollment.version.published_at,
                    archived_at=conversion.archived_at,
                ):
                    awards.append(
                        AwardRequest(
                            conversion=conversion,
                            enrollment=enrollment,
                            source=ConversionAward.Source.EVENT,
                            value=engine.event_conversion_value(
                                value_property=conversion.value_property,
                                default=conversion.value,
                                properties=event.properties,
                            ),
                            source_event_id=event.pk,
                            dedupe_key=f"event:{event.pk}",
                            cause_depth=event.depth,
                        )
                    )
        for enrollment in mine:
            if enrollment.state != Enrollment.State.ACTIVE:
                continue
            flow = flows[enrollment.version_id]
            rule = next(
                (
                    rule
                    for rule in flow.definition.exit_when
                    if engine.rule_matches_event(
                        rule,
                        journey_key=flow.version.journey.key,
                        name=event.name,
                        properties=event.properties,
                    )
                ),
                None,
            )
            if rule is not None:
                exits.setdefault(engine.exit_reason(rule), set()).add(enrollment.pk)
                changed_contacts.add(event.contact_id)
            elif enrollment.waiting_for_goal:
                wakes.add(enrollment.pk)
        for journey_flows in live.values():
            if any(
                engine.rule_matches_event(
                    rule,
                    journey_key=flow.version.journey.key,
                    name=event.name,
                    properties=event.properties,
                )
                for flow in journey_flows
                for rule in flow.definition.triggers
            ):
                starts.append(
                    new_enrollment_row(
                        flow=pick_flow(journey_flows),
                        contact_id=event.contact_id,
                        now=now,
                        trigger_event_id=event.pk,
                    )
                )
                changed_contacts.add(event.contact_id)

    # Contacts first (an SMS STOP writes its contact's row), as every writer locks them.
    done = set(processed)
    apply_sms_keywords([event for event in events if event.pk in done])
    # Enrollment rows first, in id order, then awards: the lock order every engine
    # transaction follows, so a worker advancing the same enrollments (which holds their
    # rows and then inserts awards) and this batch never wait for each other in a circle.
    touched = sorted(set().union(wakes, *exits.values()))
    if touched and connection.features.has_select_for_update:
        list(
            Enrollment.objects.filter(pk__in=touched)
            .order_by("pk")
            .select_for_update(no_key=True)
            .values_list("pk", flat=True)
        )
    exited: set[int] = set()
    for reason, ids in sorted(exits.items()):
        ids -= exited
        Enrollment.objects.filter(pk__in=sorted(ids), state=Enrollment.State.ACTIVE).update(
            **end_fields(Enrollment.State.EXITED, now, reason)
        )
        enqueue_webhook_events(
            event_type="enrollment.exited",
            facts=(
                {
                    "contact_id": contact,
                    "enrollment": pk,
                    "journey": journey,
                    "version": number,
                    "exit_reason": reason,
                    "step": path[-1] if path else None,
                }
                for pk, contact, journey, number, path in Enrollment.objects.filter(
                    pk__in=sorted(ids), state=Enrollment.State.EXITED, ended_at=now
                ).values_list("pk", "contact_id", "journey__key", "version__number", "path")
            ),
            now=now,
        )
        exited |= ids
    if wakes - exited:
        Enrollment.objects.filter(
            pk__in=sorted(wakes - exited), state=Enrollment.State.ACTIVE, due_at__gt=now
        ).exclude(waiting_for_goal="").update(due_at=now)
    award_conversions(requests=awards, now=now)
    if starts:
        # The re-entry lock and one-enrollment-per-trigger-event constraints refuse the
        # enrollments that must not happen; the rest are stored.
        insert_rows(Enrollment, starts, ignore_conflicts=True)
    if starts or wakes:
        wake("advance_enrollments")
    Event.objects.filter(pk__any=processed).update(
        status=Event.Status.PROCESSED, processed_at=now, attempts=F("attempts") + 1, error=""
    )
    return len(processed)


def retry_events(*, ids: Iterable[int]) -> int:
    """Put failed events back to pending with their attempts reset (the admin's retry), and
    wake the event workers; returns how many were. Each is matched after the contact's
    events processed meanwhile, as a late event is (see `_process_event_batch`).

    Locks: the rows it updates. Safe to run twice: only failed events change.
    """
    with transaction.atomic():
        retried = Event.objects.filter(pk__in=list(ids), status=Event.Status.FAILED).update(
            status=Event.Status.PENDING, attempts=0
        )
        if retried:
            wake("process_events")
    return retried
