"""Flows: a version's parsed definition with its journey's goals and conversions, as the
engine's actions need it, parsed once per process.

A published version never changes, and an edited goal or conversion changes the cache key,
so a worker parses a definition once however many batches run on it.
"""

import dataclasses
from datetime import timedelta

from django.db import connection

from conversions.models import Conversion, Goal
from conversions.selectors import (
    conversion_definition,
    goal_definition,
    goals_and_conversions_by_journey,
)
from journeys import engine
from journeys.definition import VERSION_PARTS, Definition, EvaluateGoal
from journeys.models import Journey, JourneyVersion


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
    """The flows of versions (with `journey` loaded), keyed by version id: the goals and
    conversions of their journeys from the per-process catalogue (`_current`, one query),
    definitions parsed once per process."""
    goals_by_journey, conversions_by_journey = _current(
        "goals_and_conversions", goals_and_conversions_by_journey
    )
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


def live_flows() -> dict[int, list[Flow]]:
    """The flows of every live version of journeys that take new enrollments, by journey."""
    versions = list(
        JourneyVersion.objects.filter(state=JourneyVersion.State.LIVE)
        .exclude(journey__status__in=[Journey.Status.PAUSED, Journey.Status.STOPPED])
        .select_related("journey")
        .order_by("journey_id", "number")
    )
    by_journey: dict[int, list[Flow]] = {}
    for flow in load_flows(versions=versions).values():
        by_journey.setdefault(flow.version.journey_id, []).append(flow)
    return by_journey


@dataclasses.dataclass(frozen=True)
class Listening:
    """What event matching can act on: these names, and, when some published version waits
    on a goal, any event of a contact whose enrollment waits (it re-checks the goal)."""

    names: frozenset[str]
    goal_waits: bool


# What this process read of the journeys' catalogue (goals, conversions, the names listened
# to), with the signature it was read under: {"signature": ..., name: value}.
_catalogue: dict = {}


def forget_catalogue() -> None:
    """Read everything again at the next call (tests: ids and a frozen clock repeat after a
    rollback, and with them the signature)."""
    _catalogue.clear()


def _current(name: str, compute):
    """`compute()`, kept per process while the catalogue's signature stays the same: one
    query a call instead of reading the catalogue again for every batch and request.

    A published version never changes, and a version created, published or deleted moves
    the count of versions or of published ones, the highest id or the latest publication; a
    goal or conversion added, edited or deleted moves its table's count, highest id or
    latest `updated_at`. (A draft's definition and a version's traffic are not in it: what
    is kept here never depends on them.)"""
    quote = connection.ops.quote_name
    version, goal, conversion = (
        quote(model._meta.db_table) for model in (JourneyVersion, Goal, Conversion)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            " UNION ALL ".join(
                f"SELECT COUNT(*), COUNT({column}), MAX(id), MAX({column}) FROM {table}"
                for table, column in (
                    (version, "published_at"),
                    (goal, "updated_at"),
                    (conversion, "updated_at"),
                )
            )
        )
        signature = tuple(cursor.fetchall())
    if _catalogue.get("signature") != signature:
        _catalogue.clear()
        _catalogue["signature"] = signature
    if name in _catalogue:
        return _catalogue[name]
    # Read after the signature, so never older than it. A nested call (listening loads
    # flows) may have found a newer signature meanwhile: then this is not kept under it.
    value = compute()
    if _catalogue.get("signature") == signature:
        _catalogue[name] = value
    return value


def listening() -> Listening:
    """The event names that journeys can act on: the triggers and exit rules
    of every published version (a retired or paused version's enrollments still exit, wait
    on goals and convert), the names their conditions and goals look at, and every
    conversion's event, archived ones included. Ingestion stores any other event as
    processed: nothing would come of matching it. One query a call (`_current`)."""
    return _current("listening", _what_is_listened_to)


def _what_is_listened_to() -> Listening:
    versions = list(
        JourneyVersion.objects.filter(published_at__isnull=False).select_related("journey")
    )
    names = set(
        Conversion.objects.exclude(event_name="").values_list("event_name", flat=True).distinct()
    )
    goal_waits = False
    for flow in load_flows(versions=versions).values():
        names |= flow.event_names
        names |= {
            engine.rule_event_name(rule)
            for rule in [*flow.definition.triggers, *flow.definition.exit_when]
        }
        goal_waits = goal_waits or any(
            isinstance(step, EvaluateGoal) and step.wait for step in flow.definition.steps
        )
    return Listening(names=frozenset(names), goal_waits=goal_waits)
