"""Every write of the journeys app that matters, one transaction each."""

import dataclasses
import functools
import hashlib
import json
import logging
import random
import secrets
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.template import Context as TemplateContext
from django.utils import timezone

from journeys import engine
from journeys.definition import (
    Definition,
    DefinitionError,
    JourneyRefs,
    parse_definition,
    render_definition,
)
from journeys.models import (
    ApiKey,
    Contact,
    Enrollment,
    Event,
    Journey,
    JourneyVersion,
    OutboxMessage,
    Step,
    StepVisit,
)
from journeys.pgarray import array_literal
from journeys.selectors import VERSION_PARTS

API_KEY_PREFIX = "wp_"
# last_used_at is written at most this often per key, so a busy integration does not turn
# every API call into an UPDATE of the same row.
API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)


def hash_api_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def create_api_key(
    *, name: str, scope: str = ApiKey.Scope.ALL, created_by=None
) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value, which is never stored or shown again."""
    if scope not in ApiKey.Scope.values:
        raise ValueError(
            f"Unknown scope '{scope}'; expected one of {', '.join(ApiKey.Scope.values)}."
        )
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name,
        scope=scope,
        prefix=raw_key[:10],
        key_hash=hash_api_key(raw_key),
        created_by=created_by,
    )
    return key, raw_key


@transaction.atomic
def revoke_api_key(*, key: ApiKey) -> None:
    """Idempotent: revoking a revoked key keeps the first revocation time. Saved through the
    model (row locked) rather than a queryset update so the audit log records who revoked it."""
    locked = ApiKey.objects.select_for_update().get(pk=key.pk)
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])


def authenticate_api_key(*, raw_key: str) -> ApiKey | None:
    """The active key for a raw value, recording its last use; None for unknown or revoked."""
    if not raw_key or len(raw_key) > 200:
        return None
    key = ApiKey.objects.filter(key_hash=hash_api_key(raw_key), revoked_at__isnull=True).first()
    if key is None:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > API_KEY_TOUCH_INTERVAL:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


# --- Journeys, versions and publishing ------------------------------------------------------


class VersionStateError(Exception):
    """A version cannot be published in its current state (the API answers 409)."""

    def __init__(self, message: str, loc: list | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc or []


@dataclasses.dataclass(frozen=True)
class DraftResult:
    version: JourneyVersion
    errors: list[dict]
    warnings: list[dict]


# jsonb turns a float written with an exponent (1e+16 and up) into an integer, and
# PostgreSQL stores no NUL character in text or jsonb: both are refused before they reach
# the database, so a definition is stored, and round-trips, the same on every database
# (the API refuses such text in any body already; import_journey and the editor need this).
LARGEST_STORABLE_FLOAT = 1e16


def _storable_text(text: str) -> bool:
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
        if isinstance(value, str) and not _storable_text(value):
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
                if isinstance(key, str) and not _storable_text(key):
                    errors.append(
                        {"loc": loc, "message": "Names must not contain NUL or unpaired surrogates"}
                    )
                stack.append((item, [*loc, key]))
        elif isinstance(value, list):
            stack.extend((item, [*loc, index]) for index, item in enumerate(value))
    return sorted(errors, key=lambda error: [str(part) for part in error["loc"]])


def resolve_journey_refs(key: str) -> JourneyRefs | None:
    """What another journey offers to reference (its active conversion and goal keys), for
    parse_definition; None when there is no such journey yet."""
    from conversions.models import Conversion, Goal

    journey = Journey.objects.filter(key=key).only("pk").first()
    if journey is None:
        return None
    return JourneyRefs(
        conversion_keys=frozenset(
            Conversion.objects.filter(journey=journey, archived_at__isnull=True).values_list(
                "key", flat=True
            )
        ),
        goal_keys=frozenset(
            Goal.objects.filter(journey=journey, archived_at__isnull=True).values_list(
                "key", flat=True
            )
        ),
    )


def _version_part(rendered: dict) -> dict:
    return {part: rendered[part] for part in VERSION_PARTS}


def _write_steps(version: JourneyVersion, rendered: dict) -> None:
    Step.objects.filter(version=version).delete()
    Step.objects.bulk_create(
        Step(version=version, key=step["key"], type=step["type"], position=index, config=step)
        for index, step in enumerate(rendered["steps"])
    )


def _store_draft(
    *, journey: Journey, definition: Definition | None, raw: dict | None, user
) -> JourneyVersion:
    """Create or replace the journey's one draft. A valid definition is stored canonical,
    with its steps and the journey's goals and conversions synced; an invalid one keeps its
    goals and conversions in the row until it is fixed (see journey_definition)."""
    from conversions.actions import sync_journey_definitions

    if definition is not None:
        rendered = render_definition(definition)
        stored = _version_part(rendered)
        journey.name = definition.name
        journey.description = definition.description or ""
    else:
        stored = {
            part: raw[part] for part in (*VERSION_PARTS, "goals", "conversions") if part in raw
        }
        stored.setdefault("goals", [])
        stored.setdefault("conversions", [])
        if isinstance(raw.get("name"), str) and raw["name"].strip():
            journey.name = raw["name"][:200]
        if isinstance(raw.get("description"), str):
            journey.description = raw["description"]
    journey.save(update_fields=["name", "description", "updated_at"])

    draft = (
        JourneyVersion.objects.select_for_update()
        .filter(journey=journey, state=JourneyVersion.State.DRAFT)
        .first()
    )
    if draft is None:
        last = journey.versions.order_by("-number").values_list("number", flat=True).first()
        draft = JourneyVersion.objects.create(
            journey=journey, number=(last or 0) + 1, definition=stored, created_by=user
        )
    else:
        draft.definition = stored
        draft.save(update_fields=["definition"])
    if definition is not None:
        _write_steps(draft, rendered)
        sync_journey_definitions(
            journey=journey, goals=definition.goals, conversions=definition.conversions, user=user
        )
    else:
        Step.objects.filter(version=draft).delete()
    return draft


@transaction.atomic
def create_journey(*, definition: dict, user=None) -> tuple[Journey, JourneyVersion, list[dict]]:
    """Create a journey from a definition, with version 1 as a draft; returns the journey,
    the version and the warnings (references to journeys that do not exist yet).

    Raises DefinitionError (every error) for an invalid definition or a key already taken;
    the unique key constraint refuses a concurrent duplicate, reported the same way. Not
    idempotent by design: a second call with the same key is that error.
    """
    unstorable = storable_errors(definition)
    if unstorable:
        raise DefinitionError(unstorable)
    parsed, warnings = parse_definition(definition, resolve_journey=resolve_journey_refs)
    taken = DefinitionError(
        [
            {
                "loc": ["key"],
                "message": f"A journey with the key '{parsed.key}' already exists; "
                "post the definition as a new version of it instead",
            }
        ]
    )
    if Journey.objects.filter(key=parsed.key).exists():
        raise taken
    try:
        with transaction.atomic():
            journey = Journey.objects.create(
                key=parsed.key,
                name=parsed.name,
                description=parsed.description or "",
                created_by=user,
            )
    except IntegrityError:
        raise taken from None
    version = _store_draft(journey=journey, definition=parsed, raw=None, user=user)
    return journey, version, warnings


@transaction.atomic
def save_draft_version(
    *, journey: Journey, definition: dict, user=None, allow_invalid: bool = False
) -> DraftResult:
    """Create the journey's draft version, or replace the one unpublished draft.

    The definition's key must be the journey's. With allow_invalid=False (the API, import)
    an invalid definition raises DefinitionError and nothing is written; with True (the
    editor) a JSON object is stored as it is, its errors are returned, and it cannot be
    published until a valid one replaces it. Locks the journey row, so a concurrent publish
    or second save waits; saving the same definition twice leaves one draft with the same
    content and records no second revision.
    """
    unstorable = storable_errors(definition)
    if unstorable:
        raise DefinitionError(unstorable)
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    errors: list[dict] = []
    warnings: list[dict] = []
    parsed = None
    try:
        parsed, warnings = parse_definition(definition, resolve_journey=resolve_journey_refs)
    except DefinitionError as exc:
        if not allow_invalid or not isinstance(definition, dict):
            raise
        errors = exc.errors
    key = parsed.key if parsed is not None else definition.get("key")
    if key != journey.key:
        key_error = {
            "loc": ["key"],
            "message": f"The key must stay '{journey.key}': a new version belongs to the "
            "same journey (create a new journey to use another key)",
        }
        if not allow_invalid:
            raise DefinitionError([key_error])
        errors = [key_error, *errors]
    if errors:
        version = _store_draft(journey=journey, definition=None, raw=definition, user=user)
    else:
        version = _store_draft(journey=journey, definition=parsed, raw=None, user=user)
    return DraftResult(version=version, errors=errors, warnings=warnings)


@transaction.atomic
def publish_version(
    *, version: JourneyVersion, traffic: int | None = None, user=None
) -> JourneyVersion:
    """Make a version live for new enrollments; enrollments already running stay on theirs.

    Without `traffic`, every other live version is retired. With `traffic` (1 to 99), the
    version takes that share of new enrollments at random and the one live version keeps
    the rest; both stay live (`split_with` each other) until one is published alone.
    Drafts and retired versions (a rollback) can be published, and a live version that
    shares traffic; raises VersionStateError otherwise and DefinitionError for an invalid
    draft.

    Locks the journey row first, so two concurrent publishes run one after the other and
    can never leave two versions live without a split; every version row is re-read under
    that lock. Publishing the same version twice alone: the second call is refused (409).
    """
    from journeys.selectors import journey_definition

    journey = Journey.objects.select_for_update().get(pk=version.journey_id)
    version = JourneyVersion.objects.select_for_update().get(pk=version.pk)
    if traffic is not None and (
        isinstance(traffic, bool) or not isinstance(traffic, int) or not 1 <= traffic <= 99
    ):
        raise DefinitionError(
            [{"loc": ["traffic"], "message": "traffic must be a whole number from 1 to 99"}]
        )
    others = list(
        JourneyVersion.objects.select_for_update()
        .filter(journey=journey, state=JourneyVersion.State.LIVE)
        .exclude(pk=version.pk)
        .order_by("number")
    )
    if version.state == JourneyVersion.State.LIVE and not others:
        raise VersionStateError(
            f"Version {version.number} is already live, alone; publish a draft or a retired "
            "version instead"
        )
    if version.state == JourneyVersion.State.DRAFT:
        # The stored draft may be one the editor saved with errors.
        parse_definition(
            journey_definition(journey=journey, version=version),
            resolve_journey=resolve_journey_refs,
        )

    now = timezone.now()
    if version.state != JourneyVersion.State.LIVE:
        # A live version published alone (ending its split) has been live since it was
        # published: its time stays, so the report still knows when the split ran.
        version.published_at = now
        version.published_by = user
    version.state = JourneyVersion.State.LIVE
    version.retired_at = None
    if traffic is None:
        version.traffic = None
        for other in others:
            other.state = JourneyVersion.State.RETIRED
            other.retired_at = now
            other.traffic = None
            other.save(update_fields=["state", "retired_at", "traffic"])
    else:
        if len(others) != 1:
            message = (
                "No other version is live to share traffic with; publish this one without traffic"
                if not others
                else "Versions "
                + " and ".join(str(other.number) for other in others)
                + " already share traffic; publish one of them alone first"
            )
            raise VersionStateError(message, loc=["traffic"])
        (current,) = others
        version.traffic = version.split_traffic = traffic
        version.split_with = current
        current.traffic = current.split_traffic = 100 - traffic
        current.split_with = version
        current.save(update_fields=["traffic", "split_traffic", "split_with"])
    version.save(
        update_fields=[
            "state",
            "published_at",
            "published_by",
            "retired_at",
            "traffic",
            "split_traffic",
            "split_with",
        ]
    )
    if journey.status != Journey.Status.LIVE:
        journey.status = Journey.Status.LIVE
        journey.save(update_fields=["status", "updated_at"])
    return version


# --- The engine: events in, enrollments advanced, messages out -------------------------------
#
# The database is the queue of record (DESIGN.md): events carry `status`, enrollments
# `state`/`due_at`/`leased_until`, outbox messages `status`/`due_at`. Workers claim bounded
# batches with SELECT ... FOR UPDATE SKIP LOCKED (on SQLite the IMMEDIATE transaction
# serialises writers instead), and Celery messages only say that there is work.

logger = logging.getLogger(__name__)

# Random choices of the engine (splits, holdouts, traffic); only the engine's inputs.
_rng = random.Random()

MESSAGE_MAX_ATTEMPTS = 5


class EnrollmentRefused(Exception):
    """A contact cannot be enrolled now: re-entry forbids it or nothing is live (409)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _enqueue(task_name: str) -> None:
    """Wake a worker once the current transaction commits. A broker that is down only
    delays the work: the periodic sweep finds it in the database."""
    if not settings.ENGINE_WAKEUPS:
        return

    def send():
        from journeys import tasks

        try:
            getattr(tasks, task_name).delay()
        except Exception:
            logger.warning("Could not enqueue %s; the sweep will pick the work up", task_name)

    transaction.on_commit(send)


# --- Flows: a version's parsed definition with the journey's goals and conversions ----------


@dataclasses.dataclass
class Flow:
    version: JourneyVersion
    definition: Definition
    steps: dict
    conversions: dict  # key -> Conversion row
    goals: dict  # key -> Goal row
    event_names: set[str]
    lookback: timedelta | None
    holdout_horizon: timedelta


# Parsed definitions per (version id, signature of the journey's goals and conversions): a
# published version never changes, and an edited goal or conversion changes the signature.
_definition_cache: dict[tuple, tuple] = {}
_DEFINITION_CACHE_SIZE = 256


def _parsed_definition(version: JourneyVersion, goals: list, conversions: list) -> tuple:
    from journeys.selectors import conversion_definition, goal_definition

    # The stored definition is part of the key too: a draft's changes, or (in tests) ids
    # reused after a rollback, never serve a stale flow.
    signature = tuple((row._meta.model_name, row.pk, row.updated_at) for row in goals + conversions)
    cache_key = (version.pk, repr(version.definition), version.journey.key, signature)
    cached = _definition_cache.get(cache_key)
    if cached is None:
        stored = version.definition
        data = {
            "key": version.journey.key,
            "name": version.journey.name,
            **{part: stored[part] for part in VERSION_PARTS if part in stored},
            "goals": [goal_definition(goal) for goal in goals],
            "conversions": [conversion_definition(conversion) for conversion in conversions],
        }
        definition = Definition.model_validate(data)
        names, lookback = engine.definition_event_needs(definition)
        cached = (definition, names, lookback, engine.holdout_horizon(definition))
        if len(_definition_cache) >= _DEFINITION_CACHE_SIZE:
            _definition_cache.clear()
        _definition_cache[cache_key] = cached
    return cached


def load_flows(*, versions: list[JourneyVersion]) -> dict[int, Flow]:
    """The flows of versions (with `journey` loaded), keyed by version id: two queries for
    the goals and conversions of their journeys, definitions parsed once per process."""
    from conversions.models import Conversion, Goal

    journey_ids = {version.journey_id for version in versions}
    goals_by_journey: dict[int, list] = {}
    conversions_by_journey: dict[int, list] = {}
    for goal in Goal.objects.filter(journey_id__in=journey_ids).select_related("conversion"):
        goals_by_journey.setdefault(goal.journey_id, []).append(goal)
    for conversion in Conversion.objects.filter(journey_id__in=journey_ids):
        conversions_by_journey.setdefault(conversion.journey_id, []).append(conversion)
    flows = {}
    for version in versions:
        goals = goals_by_journey.get(version.journey_id, [])
        conversions = conversions_by_journey.get(version.journey_id, [])
        definition, names, lookback, horizon = _parsed_definition(version, goals, conversions)
        flows[version.pk] = Flow(
            version=version,
            definition=definition,
            steps=definition.step_map(),
            conversions={conversion.key: conversion for conversion in conversions},
            goals={goal.key: goal for goal in goals},
            event_names=names,
            lookback=lookback,
            holdout_horizon=horizon,
        )
    return flows


def _contact_dict(external_id: str, email: str, attributes: dict | None) -> dict:
    """The contact as templates and criteria see it: plain data, never a model object."""
    return {"external_id": external_id, "email": email, "attributes": dict(attributes or {})}


def _pg_values(field, values: list) -> list:
    # psycopg adapts plain Python values (str, int, bool, Decimal, aware datetime, None)
    # itself; JSON goes as text and is cast. Skipping get_db_prep_save per value halves the
    # engine's Python time per batch.
    if field.get_internal_type() == "JSONField":
        return [None if value is None else json.dumps(value) for value in values]
    return values


def _pg_array(field, values: list) -> str | list:
    """One column's values as an array parameter: an array literal built here for plain
    values (psycopg quotes a list element by element in Python, a third of the engine's
    write time), else the list for psycopg to adapt."""
    values = _pg_values(field, values)
    try:
        return array_literal(values)
    except TypeError:
        return values


def _pg_cast(field, connection_) -> str:
    return f"%s::{field.db_type(connection_)}[]"


def _pg_unnest(fields: list, columns: list[list]) -> tuple[list[str], list, str]:
    """Rows as `FROM unnest(one array per column) AS u(c0, c1, ...)`: returns the expression
    that reads each column, the parameters in the order they appear, and the FROM source.
    A column with one value in every row (a batch's time, version, status) is sent once as
    a scalar, the others as one array each; the first column always as an array, since
    unnest() needs one to count the rows. The expressions come before the FROM source in
    every statement using it, so their scalars come first in the parameters."""
    selects, scalars, arrays, casts = [], [], [], []
    for index, (field, values) in enumerate(zip(fields, columns, strict=True)):
        first = values[0]
        # list.count and set(map(type)) compare in C: most columns differ at once.
        if index and values.count(first) == len(values) and len(set(map(type, values))) == 1:
            selects.append(f"%s::{field.db_type(connection)}")
            scalars.append(_pg_values(field, [first])[0])
        else:
            selects.append(f"u.c{len(arrays)}")
            arrays.append(_pg_array(field, values))
            casts.append(_pg_cast(field, connection))
    names = ", ".join(f"c{index}" for index in range(len(arrays)))
    return selects, [*scalars, *arrays], f"unnest({', '.join(casts)}) AS u({names})"


def bulk_update_rows(model, objs: list, fields: list[str]) -> None:
    """UPDATE rows by primary key in one statement: FROM unnest(one array per column) on
    PostgreSQL, FROM (VALUES ...) elsewhere.

    Django's bulk_update builds a CASE WHEN per field and row, which costs about 1 ms of
    Python per row for a dozen fields; the engine writes every batch this way instead.
    `objs` need `pk` and the fields' attnames.
    """
    if not objs:
        return
    model_fields = [model._meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    pk_column = quote(model._meta.pk.column)
    assignments = ", ".join(
        f"{quote(field.column)} = v.column{index + 2}" for index, field in enumerate(model_fields)
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            selects, params, source = _pg_unnest(
                [model._meta.pk, *model_fields],
                [[obj.pk for obj in objs]]
                + [[getattr(obj, field.attname) for obj in objs] for field in model_fields],
            )
            assignments = ", ".join(
                f"{quote(field.column)} = {select}"
                for field, select in zip(model_fields, selects[1:], strict=True)
            )
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM {source} WHERE {table}.{pk_column} = "
                f"{selects[0]}",
                params,
            )
            return
        row = "(" + ", ".join(["%s"] * (len(model_fields) + 1)) + ")"
        for start in range(0, len(objs), 1000):
            chunk = objs[start : start + 1000]
            params = []
            for obj in chunk:
                params.append(obj.pk)
                params.extend(
                    field.get_db_prep_save(getattr(obj, field.attname), connection)
                    for field in model_fields
                )
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM (VALUES {', '.join([row] * len(chunk))}) "
                f"AS v WHERE {table}.{pk_column} = v.column1",
                params,
            )


# --- Events in --------------------------------------------------------------------------------

_EVENT_COLUMNS = (
    "event_id",
    "contact",
    "name",
    "properties",
    "timestamp",
    "received_at",
    "source",
    "depth",
    "status",
    "attempts",
    "error",
)


def _contact_ids(external_ids: set[str]) -> dict[str, int]:
    """Contact ids by external id, creating the contacts not seen before."""
    found = dict(
        Contact.objects.filter(external_id__in=external_ids).values_list("external_id", "pk")
    )
    missing = external_ids - found.keys()
    if missing:
        # A concurrent request may create the same contact: the conflict is ignored and the
        # row read back.
        Contact.objects.bulk_create(
            [Contact(external_id=external_id) for external_id in sorted(missing)],
            ignore_conflicts=True,
        )
        found.update(
            Contact.objects.filter(external_id__in=missing).values_list("external_id", "pk")
        )
    return found


def insert_rows(
    model,
    rows: list[dict],
    *,
    ignore_conflicts: bool = False,
    conflict_target: str | None = None,
    returning: tuple = (),
) -> list[tuple]:
    """INSERT rows (dicts by field name, the same fields in each) in one statement,
    optionally ON CONFLICT DO NOTHING, RETURNING the given columns of the rows stored.

    On PostgreSQL the values travel as one array per column (INSERT ... SELECT FROM unnest),
    which keeps a 500-row insert to a handful of parameters; Django's bulk_create costs the
    engine more in building model objects and a huge statement than the database spends
    on the rows. It also cannot say which rows ON CONFLICT DO NOTHING skipped.
    """
    if not rows:
        return []
    fields = [model._meta.get_field(name) for name in rows[0]]
    if connection.vendor != "postgresql":
        # SQLite takes at most 32,766 parameters a statement.
        size = max(1, 30000 // len(fields))
        if len(rows) > size:
            return [
                found
                for start in range(0, len(rows), size)
                for found in insert_rows(
                    model,
                    rows[start : start + size],
                    ignore_conflicts=ignore_conflicts,
                    conflict_target=conflict_target,
                    returning=returning,
                )
            ]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "
    if connection.vendor == "postgresql":
        selects, params, source = _pg_unnest(
            fields, [[row[field.name] for row in rows] for field in fields]
        )
        sql += f"SELECT {', '.join(selects)} FROM {source}"
    else:
        params = []
        for row in rows:
            params.extend(field.get_db_prep_save(row[field.name], connection) for field in fields)
        placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
        sql += f"VALUES {', '.join([placeholder] * len(rows))}"
    if conflict_target:
        sql += f" ON CONFLICT ({quote(conflict_target)}) DO NOTHING"
    elif ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += " RETURNING " + ", ".join(
            quote(model._meta.get_field(name).column) for name in returning
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if returning else []


def _insert_events(rows: list[dict]) -> int:
    """The number of rows actually stored: exact even when the same ids arrive concurrently
    (which bulk_create(ignore_conflicts=True) cannot report)."""
    return len(insert_rows(Event, rows, conflict_target="event_id", returning=("event_id",)))


def ingest_events(
    *, events: list[dict], source: str = Event.Source.API, now=None
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
    with transaction.atomic():
        contact_ids = _contact_ids({event["contact"] for event in unique.values()})
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
                "attempts": 0,
                "error": "",
            }
            for event_id, event in unique.items()
        ]
        accepted = _insert_events(rows) if rows else 0
        if accepted:
            _enqueue("process_events")
    return accepted, len(events) - accepted


def upsert_contact(
    *, external_id: str, email: str | None = None, attributes: dict | None = None
) -> tuple[Contact, bool]:
    """Create or update a contact; returns it and whether it was created. Given attributes
    are merged into the stored ones, and an attribute set to null is removed; an email left
    out stays as it is.

    Locks the contact row (FOR UPDATE) so that a concurrent update or an engine step
    writing attributes is never lost. Safe to run twice: the second call changes nothing.
    """
    with transaction.atomic():
        contact = (
            Contact.objects.select_for_update(no_key=True).filter(external_id=external_id).first()
        )
        created = contact is None
        if created:
            try:
                with transaction.atomic():
                    contact = Contact.objects.create(external_id=external_id)
            except IntegrityError:
                # Created by a concurrent call since the read above.
                contact = Contact.objects.select_for_update(no_key=True).get(
                    external_id=external_id
                )
                created = False
        if email is not None:
            contact.email = email
        if attributes:
            merged = {**(contact.attributes or {}), **attributes}
            contact.attributes = {key: value for key, value in merged.items() if value is not None}
        contact.save(update_fields=["email", "attributes", "updated_at"])
    return contact, created


# --- Enrollments --------------------------------------------------------------------------------

_ENTRY_LOCKS = {"once": "once", "after_exit": "active", "concurrent": None}


def _pick_version(versions: list[JourneyVersion]) -> JourneyVersion:
    """One of a journey's live versions: at random by their traffic shares when two run
    side by side."""
    if len(versions) == 1:
        return versions[0]
    weights = [version.traffic or 100 for version in versions]
    return versions[engine.choose_weighted(weights, _rng)]


def _new_enrollment(
    *, flow: Flow, contact_id: int, now, trigger_event_id: int | None = None
) -> Enrollment:
    settings_ = flow.definition.settings
    held_out = settings_.holdout_percent > 0 and _rng.random() * 100 < settings_.holdout_percent
    return Enrollment(
        contact_id=contact_id,
        journey_id=flow.version.journey_id,
        version=flow.version,
        held_out=held_out,
        current_step="" if held_out else flow.definition.first_step.key,
        # A held-out enrollment takes no step and stays active as long as the flow could.
        due_at=now + flow.holdout_horizon if held_out else now,
        entry_lock=_ENTRY_LOCKS[settings_.reentry],
        trigger_event_id=trigger_event_id,
        started_at=now,
    )


def _live_flows() -> dict[int, list[Flow]]:
    """The flows of every live version of journeys that take new enrollments, by journey."""
    versions = list(
        JourneyVersion.objects.filter(state=JourneyVersion.State.LIVE)
        .exclude(journey__status__in=[Journey.Status.PAUSED, Journey.Status.ARCHIVED])
        .select_related("journey")
        .order_by("journey_id", "number")
    )
    by_journey: dict[int, list[Flow]] = {}
    for flow in load_flows(versions=versions).values():
        by_journey.setdefault(flow.version.journey_id, []).append(flow)
    return by_journey


def enroll_contact(*, journey: Journey, contact: Contact, now, trigger_event=None) -> Enrollment:
    """Enroll a contact in the journey's live version (at random between two on a split).

    Raises EnrollmentRefused when the journey has no live version or its re-entry rule
    forbids another enrollment. Locks: the unique index entries of the new row; the
    `enrollment_reentry` constraint refuses a second entry whatever races happen, so
    running it twice enrolls once (under `once` and `after_exit`).
    """
    flows = _live_flows().get(journey.pk)
    if not flows or journey.status in (Journey.Status.PAUSED, Journey.Status.ARCHIVED):
        raise EnrollmentRefused(f"Journey '{journey.key}' has no live version to enroll in.")
    flow = _pick_version_flow(flows)
    enrollment = _new_enrollment(
        flow=flow,
        contact_id=contact.pk,
        now=now,
        trigger_event_id=trigger_event.pk if trigger_event else None,
    )
    try:
        with transaction.atomic():
            enrollment.save(force_insert=True)
            _enqueue("advance_enrollments")
    except IntegrityError:
        reentry = flow.definition.settings.reentry
        reason = (
            "has already been enrolled once"
            if reentry == "once"
            else "is still active in it (re-entry: after_exit)"
            if reentry == "after_exit"
            else "was already enrolled by this event"
        )
        raise EnrollmentRefused(
            f"Contact '{contact.external_id}' {reason}; journey '{journey.key}' does not "
            "allow another enrollment."
        ) from None
    return enrollment


def _pick_version_flow(flows: list[Flow]) -> Flow:
    version = _pick_version([flow.version for flow in flows])
    return next(flow for flow in flows if flow.version.pk == version.pk)


def _end_fields(state: str, now, reason: str = "") -> dict:
    # after_exit's lock ("active") is released when the enrollment ends; "once" stays. A
    # failed enrollment keeps its current step, where a retry resumes.
    fields = {
        "state": state,
        "ended_at": now,
        "exit_reason": reason,
        "due_at": None,
        "waiting_for_goal": "",
        "wait_until": None,
        "leased_until": None,
        "entry_lock": Case(When(entry_lock="active", then=Value(None)), default=F("entry_lock")),
    }
    if state != Enrollment.State.FAILED:
        fields["current_step"] = ""
    return fields


# --- Events processed -------------------------------------------------------------------------


def _claim(queryset, limit: int):
    if connection.features.has_select_for_update_skip_locked:
        queryset = queryset.select_for_update(skip_locked=True)
    return list(queryset[:limit])


def _conversion_value(conversion, properties: dict) -> Decimal:
    if conversion.value_property:
        raw = properties.get(conversion.value_property)
        if not isinstance(raw, bool) and isinstance(raw, int | float | str):
            try:
                value = Decimal(str(raw)).quantize(Decimal("0.01"))
            except (InvalidOperation, ValueError):
                value = None
            if value is not None and value.is_finite() and 0 <= value < Decimal("1e12"):
                return value
    return conversion.value


def process_pending_events(*, limit: int | None = None, now) -> int:
    """Match a batch of pending events, in one transaction; returns how many were processed.
    See `_process_event_batch`; a batch that PostgreSQL picks as a deadlock victim is rolled
    back whole and tried again (at most 3 times, then left to the next run)."""
    return _retrying_deadlocks(
        lambda: _process_event_batch(limit=limit, now=now), what="Event batch"
    )


def _retrying_deadlocks(action, *, what: str):
    """Run `action` (one transaction of its own) again when PostgreSQL rolls it back to
    break a deadlock, at most 3 times in all. Not when the caller holds a transaction: its
    locks, still held, would meet the same deadlock again."""
    for attempt in range(3):
        try:
            return action()
        except OperationalError as exc:
            victim = getattr(exc.__cause__, "sqlstate", None) == "40P01"
            if connection.in_atomic_block or not victim or attempt == 2:
                raise
            logger.warning("%s was a deadlock victim; trying again", what)


def _process_event_batch(*, limit: int | None, now) -> int:
    """Match a batch of pending events, in one transaction.

    For each event, in order: awards of event-based conversions (to enrollments active, or
    within the conversion's window, when the event arrived), exits by `exit_when`, wake-ups
    of enrollments waiting on a goal, and new enrollments whose triggers match. A contact's
    events after one that started or exited an enrollment are left for the next batch, so
    that they see it. The events are marked processed in the same transaction.

    Locks: the claimed event rows (FOR UPDATE SKIP LOCKED, so workers share the backlog),
    then the enrollment rows it exits or wakes (each UPDATE re-checks `state='active'`, so an
    enrollment a worker just ended is left alone). Safe to run twice: a processed event is
    not pending any more, a rolled-back batch stays pending, and new enrollments and awards
    are guarded by unique constraints (one enrollment per journey and trigger event, the
    re-entry lock, the award counting constraints).
    """
    from conversions.actions import AwardRequest, award_conversions
    from conversions.models import Conversion, ConversionAward

    limit = limit or settings.ENGINE_BATCH_SIZE
    with transaction.atomic():
        events = _claim(Event.objects.filter(status=Event.Status.PENDING).order_by("id"), limit)
        if not events:
            return 0
        contact_ids = {event.contact_id for event in events}
        names = {event.name for event in events}
        live = _live_flows()

        # Archived ones too: a conversion archived after a version was published (by a
        # draft that leaves it out) still counts for that version's enrollments.
        conversions = list(
            Conversion.objects.filter(event_name__in=names).select_related("journey")
        )
        windows = [conversion.window for conversion in conversions if conversion.window]
        filters = {conversion.pk: _filters(conversion.event_where) for conversion in conversions}
        nearby = Q(state=Enrollment.State.ACTIVE)
        if windows:
            nearby |= Q(started_at__gte=min(event.timestamp for event in events) - max(windows))
        enrollments = list(
            Enrollment.objects.filter(nearby, contact_id__in=contact_ids).select_related(
                "version__journey", "journey"
            )
        )
        by_contact: dict[int, list[Enrollment]] = {}
        for enrollment in enrollments:
            by_contact.setdefault(enrollment.contact_id, []).append(enrollment)
        flows = load_flows(versions=list({e.version_id: e.version for e in enrollments}.values()))
        entered = _entered_at(enrollments)

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
                    if enrollment.journey_id != conversion.journey_id or not _counts_for(
                        conversion, enrollment
                    ):
                        continue
                    # Only what the contact did once in the journey: a purchase sent (or
                    # backfilled) from before the trigger is not this journey's conversion.
                    entered_at = entered.get(enrollment.pk, enrollment.started_at)
                    if event.timestamp < entered_at:
                        continue
                    active = enrollment.state == Enrollment.State.ACTIVE
                    in_window = (
                        conversion.window and event.timestamp <= entered_at + conversion.window
                    )
                    if active or in_window:
                        awards.append(
                            AwardRequest(
                                conversion=conversion,
                                enrollment=enrollment,
                                source=ConversionAward.Source.EVENT,
                                value=_conversion_value(conversion, event.properties),
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
                    exits.setdefault(_exit_reason(rule), set()).add(enrollment.pk)
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
                        _new_enrollment(
                            flow=_pick_version_flow(journey_flows),
                            contact_id=event.contact_id,
                            now=now,
                            trigger_event_id=event.pk,
                        )
                    )
                    changed_contacts.add(event.contact_id)

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
                **_end_fields(Enrollment.State.EXITED, now, reason)
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
            Enrollment.objects.bulk_create(starts, ignore_conflicts=True)
        if starts or wakes:
            _enqueue("advance_enrollments")
        Event.objects.filter(pk__in=processed).update(
            status=Event.Status.PROCESSED, processed_at=now, attempts=F("attempts") + 1
        )
    return len(processed)


def _counts_for(conversion, enrollment: Enrollment) -> bool:
    """A conversion counts for the enrollments of every version published while it was
    active: archiving it (a new draft leaving it out) changes no live version."""
    if conversion.archived_at is None:
        return True
    published_at = enrollment.version.published_at
    return published_at is not None and published_at <= conversion.archived_at


def _filters(where: list) -> list:
    from journeys.definition import EventTrigger

    if not where:
        return []
    return EventTrigger.model_validate({"type": "event", "event": "x", "where": where}).where


def _exit_reason(rule) -> str:
    if rule.type == "event":
        return f"exit_when: event '{rule.event}'"
    target = rule.conversion if rule.type == "conversion" else rule.goal
    where = f" of journey '{rule.journey}'" if rule.journey else ""
    return f"exit_when: {rule.type} '{target}'{where}"


# --- Enrollments advanced ---------------------------------------------------------------------


def _claim_due_enrollments(*, limit: int, now) -> tuple[list[int], object]:
    """Lease a batch of due enrollments: commit `leased_until` and one more attempt, so a
    worker killed mid-batch leaves rows that another takes once the lease has run out, and
    an enrollment that keeps killing workers is parked after ENGINE_MAX_ATTEMPTS."""
    lease_until = now + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)
    if connection.vendor == "postgresql":
        return _claim_due_enrollments_pg(limit=limit, now=now, lease_until=lease_until)
    # Inside a batch's transaction (the next batch's lease, committed with it): no savepoint.
    with transaction.atomic(savepoint=False):
        claimed = _claim(
            Enrollment.objects.filter(state=Enrollment.State.ACTIVE, due_at__lte=now)
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
            .order_by("due_at")
            .values_list("pk", "attempts"),
            limit,
        )
        _park_worn_out(
            [pk for pk, attempts in claimed if attempts >= settings.ENGINE_MAX_ATTEMPTS], now=now
        )
        ids = sorted(pk for pk, attempts in claimed if attempts < settings.ENGINE_MAX_ATTEMPTS)
        if ids:
            Enrollment.objects.filter(pk__in=ids).update(
                leased_until=lease_until, attempts=F("attempts") + 1
            )
    return ids, lease_until


def _claim_due_enrollments_pg(*, limit: int, now, lease_until) -> tuple[list[int], object]:
    """`_claim_due_enrollments` in one statement: the claim (FOR UPDATE SKIP LOCKED, in
    due order) and the lease, RETURNING the rows' attempts."""
    table = Enrollment._meta.db_table
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {table} SET leased_until = %s, attempts = attempts + 1
                WHERE id IN (
                    SELECT id FROM {table}
                    WHERE state = %s AND due_at <= %s
                      AND (leased_until IS NULL OR leased_until < %s)
                    ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED
                ) RETURNING id, attempts""",
            [lease_until, Enrollment.State.ACTIVE, now, now, limit],
        )
        claimed = cursor.fetchall()
        # attempts counts this claim now: more than the maximum means the maximum had run.
        _park_worn_out(
            [pk for pk, attempts in claimed if attempts > settings.ENGINE_MAX_ATTEMPTS], now=now
        )
    ids = sorted(pk for pk, attempts in claimed if attempts <= settings.ENGINE_MAX_ATTEMPTS)
    return ids, lease_until


def _park_worn_out(ids: list[int], *, now) -> None:
    """Park enrollments whose runs were started ENGINE_MAX_ATTEMPTS times and never written:
    each time the process running them died, so another try would most likely kill the next
    one too."""
    if ids:
        Enrollment.objects.filter(pk__in=ids).update(
            **_end_fields(Enrollment.State.FAILED, now),
            attempts=settings.ENGINE_MAX_ATTEMPTS,
            last_error=f"Gave up after {settings.ENGINE_MAX_ATTEMPTS} attempts: the "
            "process running it stopped before finishing each time.",
        )


def _retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


def _record_failures(failures: dict[int, str], *, now) -> None:
    """An enrollment whose step raised: retried later with backoff, parked as failed (with
    its error, visible and retryable in the admin) after ENGINE_MAX_ATTEMPTS."""
    for enrollment in Enrollment.objects.filter(pk__in=failures, state=Enrollment.State.ACTIVE):
        error = failures[enrollment.pk][:2000]
        if enrollment.attempts >= settings.ENGINE_MAX_ATTEMPTS:
            Enrollment.objects.filter(pk=enrollment.pk).update(
                **_end_fields(Enrollment.State.FAILED, now), last_error=error
            )
        else:
            Enrollment.objects.filter(pk=enrollment.pk).update(
                due_at=now + _retry_delay(enrollment.attempts),
                leased_until=None,
                last_error=error,
            )


_ENROLLMENT_FIELDS = [
    "state",
    "current_step",
    "due_at",
    "waiting_for_goal",
    "wait_until",
    "path",
    "ended_at",
    "exit_reason",
    "entry_lock",
    "leased_until",
    "attempts",
    "last_error",
]


@dataclasses.dataclass(slots=True)
class _Run:
    """An enrollment as a batch reads and writes it: plain values, not a model instance
    (building 500 of those, with every column converted, was a large share of a batch's
    Python time). Awards take it as their `enrollment`: it has the ids, journey and version.
    """

    pk: int
    contact_id: int
    journey_id: int
    version_id: int
    held_out: bool
    current_step: str
    path: list
    started_at: datetime
    waiting_for_goal: str
    wait_until: datetime | None
    trigger_event_id: int | None
    entry_lock: str | None
    exit_reason: str
    state: str = Enrollment.State.ACTIVE
    due_at: datetime | None = None
    ended_at: datetime | None = None
    leased_until: datetime | None = None
    attempts: int = 0
    last_error: str = ""
    journey: Journey | None = None
    version: JourneyVersion | None = None


# The columns a batch reads: the fields of _Run without a default, in their order.
_RUN_COLUMNS = [
    field.name for field in dataclasses.fields(_Run) if field.default is dataclasses.MISSING
]


def _leased_runs(ids: list[int], lease_until) -> tuple[list[_Run], dict[int, dict]]:
    """The batch's enrollments still active under this lease, locked (FOR NO KEY UPDATE:
    the foreign-key checks of the visits and awards inserted for them take KEY SHARE
    locks, which this does not block) in id order; and their contacts as plain dicts (read
    in the same query, not locked)."""
    queryset = Enrollment.objects.filter(
        pk__any=ids, state=Enrollment.State.ACTIVE, leased_until=lease_until
    ).order_by("pk")
    if connection.features.has_select_for_update:
        queryset = queryset.select_for_update(no_key=True, of=("self",))
    runs, contacts = [], {}
    width = len(_RUN_COLUMNS)
    for row in queryset.values_list(
        *_RUN_COLUMNS, "contact__external_id", "contact__email", "contact__attributes"
    ):
        run = _Run(*row[:width])
        runs.append(run)
        contacts[run.contact_id] = _contact_dict(*row[width:])
    return runs, contacts


def _advance_batch(*, ids: list[int], lease_until, now) -> tuple[int, dict[int, str]]:
    """Run the engine over leased enrollments and write the outcome in bulk; returns (steps
    run, failures by enrollment id). Runs inside the caller's transaction."""
    from conversions.actions import (
        AchievementRequest,
        AwardRequest,
        award_conversions,
        record_goal_achievements,
    )
    from conversions.models import ConversionAward

    runs, contacts = _leased_runs(ids, lease_until)
    if not runs:
        return 0, {}
    versions = {
        version.pk: version
        for version in JourneyVersion.objects.filter(
            pk__any={run.version_id for run in runs}
        ).select_related("journey")
    }
    flows = load_flows(versions=list(versions.values()))
    criteria_starts = _entered_at(
        [run for run in runs if flows[run.version_id].event_names and not run.held_out]
    )
    events_by_contact = _criteria_events(runs, flows, now, criteria_starts)

    failures: dict[int, str] = {}
    results: list[tuple[_Run, engine.Outcome]] = []
    steps_run = 0
    for run in runs:
        flow = flows[run.version_id]
        run.version = flow.version
        run.journey = flow.version.journey
        try:
            outcome = engine.advance(
                state=engine.State(
                    current_step=run.current_step,
                    path=run.path,
                    started_at=criteria_starts.get(run.pk, run.started_at),
                    waiting_for_goal=run.waiting_for_goal,
                    wait_until=run.wait_until,
                    held_out=run.held_out,
                ),
                definition=flow.definition,
                contact=contacts[run.contact_id],
                events=events_by_contact.get(run.contact_id, ()),
                rng=_rng,
                now=now,
                steps=flow.steps,
            )
            for award in outcome.awards:
                if award.conversion not in flow.conversions:
                    raise engine.EngineError(f"No conversion '{award.conversion}' in the journey")
        except Exception as exc:
            failures[run.pk] = f"{type(exc).__name__}: {exc}"
            continue
        steps_run += outcome.steps_run
        results.append((run, outcome))

    visits = []
    visit_outcomes = []
    messages = []
    attribute_updates: dict[int, dict] = {}
    awards = []
    achievements = []
    trigger_depths = _trigger_depths([run for run, o in results if o.awards or o.achievements])
    for run, outcome in results:
        for visit in outcome.visits:
            if visit.new:
                visits.append(
                    {
                        "enrollment": run.pk,
                        "version": run.version_id,
                        "step_key": visit.step_key,
                        "outcome": visit.outcome,
                        "seq": visit.seq,
                        "entered_at": visit.entered_at,
                    }
                )
            else:
                visit_outcomes.append((run.pk, visit.seq, visit.outcome))
        for message in outcome.messages:
            messages.append((run, message))
        if outcome.attribute_updates:
            attribute_updates.setdefault(run.contact_id, {}).update(outcome.attribute_updates)
        flow = flows[run.version_id]
        depth = trigger_depths.get(run.trigger_event_id, 0)
        for award in outcome.awards:
            awards.append(
                AwardRequest(
                    conversion=flow.conversions[award.conversion],
                    enrollment=run,
                    source=ConversionAward.Source.GOAL
                    if award.source == "goal"
                    else ConversionAward.Source.CONVERT_STEP,
                    step_key=award.step_key,
                    dedupe_key=f"seq:{award.seq}",
                    cause_depth=depth,
                )
            )
        for achievement in outcome.achievements:
            achievements.append(
                AchievementRequest(
                    goal=flow.goals[achievement.goal],
                    enrollment=run,
                    step_key=achievement.step_key,
                    cause_depth=depth,
                )
            )
        run.path = outcome.path
        run.current_step = outcome.current_step
        run.due_at = outcome.due_at
        run.waiting_for_goal = outcome.waiting_for_goal
        run.wait_until = outcome.wait_until
        if outcome.ended:
            run.state = outcome.state
            run.ended_at = now
            run.exit_reason = outcome.exit_reason
            if run.entry_lock == "active":
                run.entry_lock = None

    if results:
        bulk_update_rows(Enrollment, [run for run, _ in results], _ENROLLMENT_FIELDS)
    visit_ids = {
        (enrollment_id, seq): pk
        for pk, enrollment_id, seq in insert_rows(
            StepVisit, visits, returning=("id", "enrollment", "seq")
        )
    }
    for enrollment_id, seq, label in visit_outcomes:
        StepVisit.objects.filter(enrollment_id=enrollment_id, seq=seq).update(outcome=label)
    if messages:
        insert_rows(
            OutboxMessage,
            [
                {
                    "visit": visit_ids[(run.pk, message.seq)],
                    "enrollment": run.pk,
                    "contact": run.contact_id,
                    "step_key": message.step_key,
                    "channel": message.channel,
                    "recipient": message.recipient,
                    "subject": message.subject,
                    "body": message.body,
                    "status": OutboxMessage.Status.PENDING,
                    "attempts": 0,
                    "due_at": now,
                    "error": "",
                    "created_at": now,
                }
                for run, message in messages
            ],
        )
        _enqueue("deliver_messages")
    if attribute_updates:
        _update_contact_attributes(attribute_updates)
    record_goal_achievements(requests=achievements, now=now)
    award_conversions(requests=awards, now=now)
    if awards or achievements:
        _enqueue("process_events")
    return steps_run, failures


def _entered_at(enrollments) -> dict[int, datetime]:
    """When the contact entered, for enrollments started by an event whose `timestamp` is
    earlier than the time a worker processed it (`started_at`): criteria ("since the
    enrollment started") and event conversions count from then, so an event sent right
    after the trigger (or in the same request) counts even if both were processed together.
    One query."""
    ids = {e.trigger_event_id for e in enrollments if e.trigger_event_id}
    sent = dict(Event.objects.filter(pk__any=ids).values_list("pk", "timestamp")) if ids else {}
    return {
        e.pk: min(e.started_at, sent[e.trigger_event_id])
        for e in enrollments
        if e.trigger_event_id in sent
    }


def _criteria_events(
    enrollments, flows, now, starts: dict[int, datetime]
) -> dict[int, list[engine.ContactEvent]]:
    """The events that the batch's criteria can look at, in one query."""
    names: set[str] = set()
    since = now
    for enrollment in enrollments:
        flow = flows[enrollment.version_id]
        if flow.event_names and not enrollment.held_out:
            names |= flow.event_names
            start = starts.get(enrollment.pk, enrollment.started_at)
            if flow.lookback is not None:
                start = min(start, now - flow.lookback)
            since = min(since, start)
    if not names:
        return {}
    events: dict[int, list[engine.ContactEvent]] = {}
    rows = Event.objects.filter(
        contact__any={e.contact_id for e in enrollments},
        name__any=names,
        timestamp__gte=since,
        timestamp__lte=now,
    ).values_list("contact_id", "name", "properties", "timestamp")
    for contact_id, name, properties, timestamp in rows:
        events.setdefault(contact_id, []).append(
            engine.ContactEvent(name=name, properties=properties or {}, timestamp=timestamp)
        )
    return events


def _trigger_depths(enrollments) -> dict[int, int]:
    ids = {e.trigger_event_id for e in enrollments if e.trigger_event_id}
    if not ids:
        return {}
    return dict(Event.objects.filter(pk__any=ids).values_list("pk", "depth"))


def _update_contact_attributes(updates: dict[int, dict]) -> None:
    """Merge the batch's attribute updates into its contacts, keeping any update made in
    between (by the API, say): on PostgreSQL one UPDATE merges in SQL (`attributes ||
    changes`, under the row locks it takes in id order); elsewhere the rows are re-read
    under a lock and written back."""
    now = timezone.now()
    ids = sorted(updates)
    if connection.vendor == "postgresql":
        table = Contact._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"""UPDATE {table} AS c
                    SET attributes = COALESCE(c.attributes, '{{}}'::jsonb) || v.changes,
                        updated_at = %s
                    FROM unnest(%s::bigint[], %s::jsonb[]) AS v(id, changes)
                    WHERE c.id = v.id AND c.id IN (
                        SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE
                    )""",
                [
                    now,
                    array_literal(ids),
                    array_literal([json.dumps(updates[pk]) for pk in ids]),
                    array_literal(ids),
                ],
            )
        return
    contacts = Contact.objects.filter(pk__any=ids).order_by("pk")
    if connection.features.has_select_for_update:
        contacts = contacts.select_for_update(no_key=True)
    changed = [
        SimpleNamespace(pk=pk, attributes={**(attributes or {}), **updates[pk]}, updated_at=now)
        for pk, attributes in contacts.values_list("pk", "attributes")
    ]
    bulk_update_rows(Contact, changed, ["attributes", "updated_at"])


def advance_due_enrollments(*, limit: int | None = None, now) -> int:
    """Advance due enrollments in leased batches; returns how many enrollments were taken.

    Each batch is leased (FOR UPDATE SKIP LOCKED, then `leased_until` and `attempts + 1`)
    and committed before it runs: the first by a short transaction of its own, each next
    one by the transaction of the batch before it. One transaction per batch re-reads the
    rows FOR UPDATE still active under this lease, runs the engine, writes everything in
    bulk (enrollment updates, step visits, outbox messages, contact attributes, goal
    achievements, awards) and leases the next batch.
    Safe to run twice and alongside any number of workers: a leased row is skipped by
    others until its lease runs out, the write re-checks state and lease, and visits
    (enrollment, seq), outbox rows (one per visit) and awards are unique in the database.
    An enrollment whose step raises is retried with backoff and then parked as failed; a
    batch whose write fails is retried one enrollment at a time, so one bad enrollment never
    blocks the others.
    """
    batch_size = settings.ENGINE_BATCH_SIZE
    limit = limit or batch_size
    taken = 0
    ids, lease_until = _claim_due_enrollments(limit=min(batch_size, limit), now=now)
    while ids:
        taken += len(ids)
        full = len(ids) == min(batch_size, limit - taken + len(ids))
        next_ids, next_lease = [], None
        try:
            with transaction.atomic():
                _, failures = _advance_batch(ids=ids, lease_until=lease_until, now=now)
                _record_failures(failures, now=now)
                # The next batch's lease commits with this batch's writes: one commit a batch.
                if full and taken < limit:
                    next_ids, next_lease = _claim_due_enrollments(
                        limit=min(batch_size, limit - taken), now=now
                    )
        except Exception:
            logger.exception("Engine batch of %s enrollments failed; retrying one by one", len(ids))
            for enrollment_id in ids:
                try:
                    with transaction.atomic():
                        _, failures = _advance_batch(
                            ids=[enrollment_id], lease_until=lease_until, now=now
                        )
                        _record_failures(failures, now=now)
                except Exception as exc:
                    logger.exception("Enrollment %s failed", enrollment_id)
                    _record_failures({enrollment_id: f"{type(exc).__name__}: {exc}"}, now=now)
            if full and taken < limit:
                next_ids, next_lease = _claim_due_enrollments(
                    limit=min(batch_size, limit - taken), now=now
                )
        ids, lease_until = next_ids, next_lease
    return taken


def retry_enrollments(*, enrollments, now) -> int:
    """Put failed enrollments back to work at the step they failed on (the admin's retry).

    Locks: the rows it updates. Safe to run twice: only failed rows are touched; one whose
    re-entry lock was taken meanwhile by a newer enrollment stays failed.
    """
    retried = 0
    for enrollment in enrollments:
        if enrollment.state != Enrollment.State.FAILED:
            continue
        lock = enrollment.entry_lock
        if lock is None and _reentry(enrollment) == "after_exit":
            lock = "active"
        try:
            with transaction.atomic():
                retried += Enrollment.objects.filter(
                    pk=enrollment.pk, state=Enrollment.State.FAILED
                ).update(
                    state=Enrollment.State.ACTIVE,
                    due_at=now,
                    ended_at=None,
                    attempts=0,
                    leased_until=None,
                    entry_lock=lock,
                )
        except IntegrityError:
            continue
    if retried:
        _enqueue("advance_enrollments")
    return retried


def _reentry(enrollment: Enrollment) -> str:
    return (enrollment.version.definition.get("settings") or {}).get("reentry", "once")


# --- Messages out -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _compiled(template_text: str):
    from journeys.definition import TEMPLATE_ENGINE

    return TEMPLATE_ENGINE.from_string(template_text)


def _render(template_text: str, contact: dict) -> str:
    from journeys.templating import read_only

    # Read-only: a template must not be able to change what the next message sees.
    return _compiled(template_text).render(
        TemplateContext({"contact": read_only(contact)}, autoescape=False)
    )


def deliver_due_messages(*, limit: int | None = None, now) -> int:
    """Send due outbox messages; returns how many were attempted.

    Subjects, bodies and texts are rendered with Django's template engine from a plain dict
    of the contact as it is now. A template error or a contact without an address marks
    that message failed with the reason; a backend error is retried with backoff, then the
    message is failed. Locks: the claimed rows (FOR UPDATE SKIP LOCKED) while a lease is
    committed; sending happens outside any transaction. Safe to run twice: a sent message is
    not pending any more, and a leased one is skipped until its lease runs out (a process
    killed between sending and recording may send that one message again: at least once).
    """
    from django.core.mail import EmailMessage, get_connection

    from journeys.sms import get_sms_backend

    limit = limit or settings.ENGINE_BATCH_SIZE
    lease_until = now + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)
    with transaction.atomic():
        messages = _claim(
            OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING, due_at__lte=now)
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
            .order_by("due_at"),
            limit,
        )
        if not messages:
            return 0
        OutboxMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
            leased_until=lease_until, attempts=F("attempts") + 1
        )
    contacts = {
        contact.pk: _contact_dict(contact.external_id, contact.email, contact.attributes)
        for contact in Contact.objects.filter(pk__in={m.contact_id for m in messages})
    }
    email_connection = None
    sms_backend = None
    for message in messages:
        message.attempts += 1
        message.leased_until = None
        contact = contacts.get(message.contact_id, {"attributes": {}})
        recipient = message.recipient or (
            contact.get("email") if message.channel == OutboxMessage.Channel.EMAIL else ""
        )
        if not recipient:
            what = (
                "email address"
                if message.channel == OutboxMessage.Channel.EMAIL
                else "phone number (attribute 'phone')"
            )
            _fail(message, f"The contact has no {what}.")
            continue
        try:
            subject = " ".join(_render(message.subject, contact).split())
            body = _render(message.body, contact)
        except Exception as exc:
            _fail(message, f"Template error: {type(exc).__name__}: {exc}")
            continue
        try:
            if message.channel == OutboxMessage.Channel.EMAIL:
                email_connection = email_connection or get_connection()
                EmailMessage(
                    subject,
                    body,
                    settings.DEFAULT_FROM_EMAIL,
                    [recipient],
                    connection=email_connection,
                ).send()
            else:
                sms_backend = sms_backend or get_sms_backend()
                sms_backend.send(to=recipient, text=body)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if message.attempts >= MESSAGE_MAX_ATTEMPTS:
                _fail(message, f"Gave up after {message.attempts} attempts; last error: {error}")
            else:
                message.error = error
                message.due_at = now + _retry_delay(message.attempts)
            continue
        message.status = OutboxMessage.Status.SENT
        message.sent_at = now
        message.error = ""
    bulk_update_rows(
        OutboxMessage,
        messages,
        ["status", "attempts", "leased_until", "sent_at", "error", "due_at"],
    )
    return len(messages)


def _fail(message: OutboxMessage, reason: str) -> None:
    message.status = OutboxMessage.Status.FAILED
    message.error = reason[:2000]


# --- All of it --------------------------------------------------------------------------------


def enqueue_due_work(*, now) -> list[str]:
    """The periodic sweep: wake a worker for each kind of work the database holds due now,
    whatever messages were lost. Returns the task names enqueued. Writes nothing."""
    due = []
    if Event.objects.filter(status=Event.Status.PENDING).exists():
        due.append("process_events")
    if Enrollment.objects.filter(
        Q(leased_until__isnull=True) | Q(leased_until__lt=now),
        state=Enrollment.State.ACTIVE,
        due_at__lte=now,
    ).exists():
        due.append("advance_enrollments")
    if OutboxMessage.objects.filter(
        Q(leased_until__isnull=True) | Q(leased_until__lt=now),
        status=OutboxMessage.Status.PENDING,
        due_at__lte=now,
    ).exists():
        due.append("deliver_messages")
    for task_name in due:
        _enqueue(task_name)
    return due


def run_due(*, now=None, max_rounds: int = 1000) -> dict[str, int]:
    """Process every pending event, due enrollment and due message, in this process, until
    nothing is due (`manage.py run_due`). Safe alongside workers: it claims work the same way.
    Returns how many of each were handled."""
    totals = {"events": 0, "enrollments": 0, "messages": 0}
    for _ in range(max_rounds):
        moment = now or timezone.now()
        events = process_pending_events(now=moment)
        enrollments = advance_due_enrollments(now=moment)
        messages = deliver_due_messages(now=moment)
        totals["events"] += events
        totals["enrollments"] += enrollments
        totals["messages"] += messages
        if not (events or enrollments or messages):
            break
    return totals


# --- Personal data (owner: security) ----------------------------------------------------------

ERASED_PREFIX = "erased-"


def erase_contact(*, contact: Contact, now=None) -> Contact:
    """Remove a contact's personal data and keep what reports count (see `_erase_contact`).

    Erasure locks the contact, then its enrollments; a worker's batch holds the enrollments
    and then updates the contact. When both meet, PostgreSQL rolls one back: a batch is
    retried by the engine, an erasure here (at most 3 times, unless the caller holds a
    transaction of its own)."""
    return _retrying_deadlocks(
        lambda: _erase_contact(contact=contact, now=now), what=f"Erasing contact {contact.pk}"
    )


@transaction.atomic
def _erase_contact(*, contact: Contact, now=None) -> Contact:
    """Remove a contact's personal data and keep what reports count.

    The contact row stays, anonymous: its external id becomes a random `erased-…` token and
    its email and attributes are emptied; its events are deleted (enrollments and awards
    that pointed at one keep their place with no event); its messages lose recipient,
    subject and body, and pending ones fail; active enrollments exit ("Contact erased") so
    nothing more is sent. Enrollments, step visits, goal achievements and conversion awards
    remain, so every report shows the same numbers. Locks the contact and its enrollments
    (FOR UPDATE), so an ingest or a worker touching them waits. Safe to run twice: the
    second run finds nothing left and keeps the first token and time.
    """
    now = now or timezone.now()
    contact = Contact.objects.select_for_update().get(pk=contact.pk)
    first_time = contact.erased_at is None
    if first_time:
        contact.external_id = ERASED_PREFIX + secrets.token_hex(12)
        contact.erased_at = now
    contact.email = ""
    contact.attributes = {}
    contact.save(update_fields=["external_id", "erased_at", "email", "attributes", "updated_at"])
    Event.objects.filter(contact=contact).delete()
    active = list(
        Enrollment.objects.select_for_update()
        .filter(contact=contact, state=Enrollment.State.ACTIVE)
        .values_list("pk", flat=True)
    )
    Enrollment.objects.filter(pk__in=active).update(
        **_end_fields(Enrollment.State.EXITED, now, "Contact erased")
    )
    Enrollment.objects.filter(contact=contact).exclude(last_error="").update(last_error="")
    # A delivery error may quote the address, so it goes too.
    OutboxMessage.objects.filter(contact=contact).update(
        recipient="", subject="", body="", error=""
    )
    OutboxMessage.objects.filter(contact=contact, status=OutboxMessage.Status.PENDING).update(
        status=OutboxMessage.Status.FAILED, error="Contact erased before sending."
    )
    if first_time:
        from journeys.audit import record_erasure

        record_erasure(contact)
    logger.info("Contact %s erased", contact.pk)
    return contact
