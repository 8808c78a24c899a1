"""Admin for goals, conversions and what they recorded.

Goals and conversions are edited with the admin's forms of conversions.forms and saved
through conversions.actions, so an admin edit checks names the same way as the editor and
leaves a dated revision. Revisions, achievements and awards are history: read-only.
"""

from django.contrib import admin

from conversions.actions import save_conversion, save_goal
from conversions.forms import ConversionModelForm, GoalModelForm
from conversions.models import Conversion, ConversionAward, Goal, GoalAchievement, Revision
from journeys.admin import DURATIONS_IN_WORDS, ReadOnlyAdmin, human_duration


class DefinitionAdmin(admin.ModelAdmin):
    save_action = None
    formfield_overrides = DURATIONS_IN_WORDS

    def get_readonly_fields(self, request, obj=None):
        # The journey and the key are how versions refer to it: fixed once created.
        fixed = ["journey", "key"] if obj is not None else []
        return [*fixed, "archived_at", "created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        saved = type(self).save_action(
            journey=obj.journey,
            data=form.definition,
            key=obj.key if change else None,
            user=request.user,
        )
        obj.pk = saved.pk
        obj._state.adding = False


@admin.register(Conversion)
class ConversionAdmin(DefinitionAdmin):
    form = ConversionModelForm
    save_action = save_conversion
    list_display = [
        "key",
        "name",
        "journey",
        "value",
        "counting",
        "window_display",
        "event_name",
        "archived_at",
    ]
    list_filter = ["counting", ("archived_at", admin.EmptyFieldListFilter), "journey"]
    search_fields = ["key", "name", "journey__key", "journey__name", "event_name"]
    list_select_related = ["journey"]

    @admin.display(description="Window", ordering="window")
    def window_display(self, conversion):
        return human_duration(conversion.window)


@admin.register(Goal)
class GoalAdmin(DefinitionAdmin):
    form = GoalModelForm
    save_action = save_goal
    list_display = ["key", "name", "journey", "conversion", "archived_at"]
    list_filter = [("archived_at", admin.EmptyFieldListFilter), "journey"]
    search_fields = ["key", "name", "journey__key", "journey__name"]
    list_select_related = ["journey", "conversion"]


@admin.register(Revision)
class RevisionAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "journey",
        "kind",
        "conversion",
        "goal",
        "while_live",
        "created_by",
    ]
    list_filter = ["kind", "while_live"]
    search_fields = ["journey__key", "conversion__key", "goal__key"]
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    list_select_related = ["journey", "conversion", "goal", "created_by"]


@admin.register(GoalAchievement)
class GoalAchievementAdmin(ReadOnlyAdmin):
    list_display = ["goal", "contact", "journey", "version", "step_key", "achieved_at"]
    list_filter = ["journey"]
    search_fields = ["goal__key", "contact__external_id", "journey__key"]
    date_hierarchy = "achieved_at"
    ordering = ["-achieved_at"]
    list_select_related = ["goal", "contact", "journey", "version__journey"]


@admin.register(ConversionAward)
class ConversionAwardAdmin(ReadOnlyAdmin):
    list_display = [
        "conversion",
        "contact",
        "journey",
        "version",
        "value",
        "source",
        "counting",
        "step_key",
        "awarded_at",
    ]
    list_filter = ["source", "counting", "journey"]
    search_fields = ["conversion__key", "contact__external_id", "journey__key"]
    date_hierarchy = "awarded_at"
    ordering = ["-awarded_at"]
    list_select_related = ["conversion", "contact", "journey", "version__journey"]
