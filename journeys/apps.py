from django.apps import AppConfig


class JourneysConfig(AppConfig):
    name = "journeys"

    def ready(self):
        # Imported here, not at the top: Django imports this module before any model is
        # loaded, and both import models. bulk registers the `__any` lookup; audit's guards
        # keep published versions and awards unchangeable.
        from journeys import audit, bulk  # noqa: F401

        audit.connect_guards()
