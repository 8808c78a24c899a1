"""The guard that keeps conversion awards unchangeable, connected in ConversionsConfig.ready.

An award is what reports count: once written, nobody changes it, through any code path that
saves the model (journeys.signals says why raw queryset updates are left unguarded).
"""

from journeys.signals import HistoryIsImmutable


def award_immutable(sender, instance, raw=False, **kwargs):
    if raw or instance._state.adding or instance.pk is None:
        return
    raise HistoryIsImmutable("A conversion award is history and cannot be changed.")
