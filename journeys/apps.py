from anymail.signals import tracking
from django.apps import AppConfig
from django.core import checks
from django.db.backends.signals import connection_created
from django.db.models.signals import pre_save


class JourneysConfig(AppConfig):
    name = "journeys"

    def ready(self):
        # Imported here, not at the top: Django imports this module before any model is
        # loaded, and these modules import models. bulk registers the `__any` lookup.
        from journeys import bulk  # noqa: F401
        from journeys.actions.delivery import receive_tracking_event
        from journeys.checks import check_rate_limits, check_vocabularies
        from journeys.signals import published_version_immutable

        pre_save.connect(
            published_version_immutable,
            sender=self.get_model("JourneyVersion"),
            dispatch_uid="audit-published-version-immutable",
        )
        connection_created.connect(bulk.load_timestamps_in_c, dispatch_uid="journeys-timestamps")
        checks.register(check_vocabularies)
        checks.register(check_rate_limits)
        # Email providers' delivery feedback, verified by anymail's webhook views.
        tracking.connect(receive_tracking_event, dispatch_uid="journeys-delivery-feedback")
