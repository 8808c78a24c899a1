"""Live journeys for engine tests, made the way users make them: create, then publish."""

import copy
import itertools

from journeys.actions.versions import create_journey, publish_version

_keys = itertools.count(1)


def definition(steps, **parts) -> dict:
    """A journey definition with these steps; other parts (settings, triggers, exit_when,
    goals, conversions) as given, with a unique key unless one is given."""
    data = {
        "key": parts.pop("key", None) or f"flow-{next(_keys)}",
        "name": parts.pop("name", None) or "Flow",
        "settings": {"reentry": "once", "holdout_percent": 0},
        "triggers": [{"type": "event", "event": "signed_up"}],
        "exit_when": [],
        "goals": [],
        "conversions": [],
        "steps": copy.deepcopy(steps),
    }
    data.update(copy.deepcopy(parts))
    return data


def live_journey(steps, **parts):
    """Create and publish a journey; returns (journey, version)."""
    journey, version, _ = create_journey(definition=definition(steps, **parts))
    return journey, publish_version(version=version)
