"""The guard that keeps published versions unchangeable, connected in JourneysConfig.ready
(conversions.signals guards awards the same way).

Published versions are what reports count: once published, nobody changes their definition.
The guard refuses it for every code path that saves the model (the admin, the actions, a
shell using save()); the admin also shows them read-only. A raw queryset update is not
guarded: no code of the product changes these rows that way, and a database trigger would
also stop the foreign keys that erasing a contact's events must clear.
"""

from journeys.models import JourneyVersion

# Fields of a published version that its life still changes: retiring it, splitting traffic.
VERSION_LIFECYCLE_FIELDS = {"state", "traffic", "split_traffic", "split_with", "retired_at"}


class HistoryIsImmutable(Exception):
    """A write that would rewrite what already happened."""


def published_version_immutable(sender, instance, raw=False, update_fields=None, **kwargs):
    if raw or instance._state.adding or instance.pk is None:
        return
    if update_fields is not None and set(update_fields) <= VERSION_LIFECYCLE_FIELDS:
        return
    stored = sender.objects.filter(pk=instance.pk).values("state", "definition").first()
    if stored is None or stored["state"] == JourneyVersion.State.DRAFT:
        return
    if stored["definition"] != instance.definition:
        raise HistoryIsImmutable(
            f"Version {instance.number} of '{instance.journey.key}' is {stored['state']}: its "
            "definition cannot change. Save a new draft version instead."
        )
