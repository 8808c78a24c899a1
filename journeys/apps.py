from django.apps import AppConfig
from django.core import checks


class JourneysConfig(AppConfig):
    name = "journeys"

    def ready(self):
        # The guards that keep published versions and awards unchangeable (journeys.audit).
        from journeys import audit, lookups  # noqa: F401  (lookups registers __any)
        from journeys.checks import check_vocabularies

        audit.connect_guards()
        checks.register(check_vocabularies)
