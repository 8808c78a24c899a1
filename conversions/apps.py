from django.apps import AppConfig
from django.db.models.signals import pre_save


class ConversionsConfig(AppConfig):
    name = "conversions"

    def ready(self):
        # Imported here, not at the top: Django imports this module before any model is
        # loaded, and the signals import models.
        from conversions.signals import award_immutable

        pre_save.connect(
            award_immutable,
            sender=self.get_model("ConversionAward"),
            dispatch_uid="audit-award-immutable",
        )
