"""Admin for the report rollups: view only. They are derived from the facts the engine
writes, so a hand edit or a deleted row would make reports wrong; `rebuild_report_rollups`
is the way to change them."""

from django.contrib import admin

from reporting.models import (
    ConversionDay,
    ConvertTimeDay,
    GoalTimeDay,
    MessageChunkDay,
    MessageCreditChunkDay,
    MessageCreditDay,
    MessageCreditWindow,
    MessageDay,
    PathConversionDay,
    PathDay,
    RollupWatermark,
    StepConversionDay,
    StepDay,
    VersionDay,
)


class RollupAdmin(admin.ModelAdmin):
    list_select_related = True
    # Nobody deletes these rows by hand, but they go with the journey (version, conversion)
    # they sum up: the journey's delete page does not ask for a permission on them
    # (journeys.admin JourneyAdmin.get_deleted_objects).
    derived_rows = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(VersionDay)
class VersionDayAdmin(RollupAdmin):
    list_display = ["version", "day", "held_out", "enrolled"]
    list_filter = ["held_out"]
    date_hierarchy = "day"


@admin.register(ConversionDay)
class ConversionDayAdmin(RollupAdmin):
    list_display = ["conversion", "version", "day", "held_out", "converted", "value"]
    list_filter = ["held_out"]
    date_hierarchy = "day"


@admin.register(StepDay)
class StepDayAdmin(RollupAdmin):
    list_display = ["version", "day", "step_key", "entered"]
    date_hierarchy = "day"


@admin.register(StepConversionDay)
class StepConversionDayAdmin(RollupAdmin):
    list_display = ["conversion", "version", "day", "step_key", "converted"]
    date_hierarchy = "day"


@admin.register(ConvertTimeDay)
class ConvertTimeDayAdmin(RollupAdmin):
    list_display = ["conversion", "version", "day", "bucket", "converted"]
    date_hierarchy = "day"


@admin.register(GoalTimeDay)
class GoalTimeDayAdmin(RollupAdmin):
    list_display = ["goal", "version", "day", "bucket", "achieved"]
    date_hierarchy = "day"


@admin.register(PathDay)
class PathDayAdmin(RollupAdmin):
    list_display = ["version", "day", "path", "enrolled"]
    date_hierarchy = "day"


@admin.register(PathConversionDay)
class PathConversionDayAdmin(RollupAdmin):
    list_display = ["conversion", "version", "day", "path_hash", "converted"]
    date_hierarchy = "day"


@admin.register(MessageDay)
class MessageDayAdmin(RollupAdmin):
    list_display = ["version", "day", "step_key", "channel", "sent", "delivered", "opened",
                    "clicked", "bounced", "unsubscribed"]  # fmt: skip
    date_hierarchy = "day"


@admin.register(MessageCreditDay)
class MessageCreditDayAdmin(RollupAdmin):
    list_display = ["conversion", "attribution", "version", "day", "step_key", "awards", "value"]
    list_filter = ["attribution"]
    date_hierarchy = "day"


@admin.register(MessageChunkDay)
class MessageChunkDayAdmin(RollupAdmin):
    list_display = ["chunk", "version", "day", "step_key", "channel", "sent", "delivered",
                    "opened", "clicked", "bounced", "unsubscribed"]  # fmt: skip
    date_hierarchy = "day"


@admin.register(MessageCreditChunkDay)
class MessageCreditChunkDayAdmin(RollupAdmin):
    list_display = ["chunk", "conversion", "attribution", "version", "day", "step_key", "awards",
                    "value"]  # fmt: skip
    list_filter = ["attribution"]
    date_hierarchy = "day"


@admin.register(MessageCreditWindow)
class MessageCreditWindowAdmin(RollupAdmin):
    list_display = ["conversion", "window"]


@admin.register(RollupWatermark)
class RollupWatermarkAdmin(RollupAdmin):
    list_display = ["fact", "rolled_up", "seen", "updated_at"]
