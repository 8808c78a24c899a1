from django.apps import AppConfig


class JourneysConfig(AppConfig):
    name = "journeys"

    def ready(self):
        # The guards that keep published versions and awards unchangeable (journeys.audit).
        from journeys import audit, lookups  # noqa: F401  (lookups registers __any)

        audit.connect_guards()
