from django.apps import AppConfig


class JourneysConfig(AppConfig):
    name = "journeys"

    def ready(self):
        # The guards that keep published versions and awards unchangeable (journeys.audit).
        from journeys import audit

        audit.connect_guards()
