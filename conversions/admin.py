"""Admin for goals, conversions and what they recorded.

Goals and conversions are saved through conversions.actions, so an admin edit checks names
the same way as the editor and leaves a dated revision. Revisions, achievements and awards
are history: read-only.
"""

from django import forms
from django.contrib import admin

from conversions.actions import check_conversion, check_goal, save_conversion, save_goal
from conversions.models import Conversion, ConversionAward, Goal, GoalAchievement, Revision
from journeys.admin import ReadOnlyAdmin
from journeys.definition import DefinitionError, format_duration

CONVERSION_FIELDS = {
    "key": "key",
    "name": "name",
    "value": "value",
    "counting": "counting",
    "window": "window",
    "description": "description",
    "event": "event_name",
}
GOAL_FIELDS = {
    "key": "key",
    "name": "name",
    "criteria": "criteria",
    "conversion": "conversion",
    "description": "description",
}


class DefinitionForm(forms.ModelForm):
    """A goal or conversion form that checks its data with the definition's own rules."""

    # Each subclass names its fields' definition names, its validating action, and writes
    # definition_data(cleaned) -> the item's definition JSON.
    error_fields: dict[str, str] = {}
    check_action = None

    def clean(self):
        cleaned = super().clean()
        journey = cleaned.get("journey") or getattr(self.instance, "journey", None)
        if self.errors or journey is None:
            return cleaned
        key = self.instance.key if self.instance.pk else None
        data = self.definition_data({**cleaned, "key": key or cleaned.get("key")})
        try:
            type(self).check_action(journey=journey, data=data, key=key)
        except DefinitionError as exc:
            for error in exc.errors:
                loc = [str(part) for part in error["loc"]]
                field = self.error_fields.get(loc[0]) if loc else None
                if loc[:2] == ["event", "where"]:
                    field = "event_where"
                elif loc[:2] == ["event", "value_property"]:
                    field = "value_property"
                self.add_error(field if field in self.fields else None, error["message"])
        self.definition = data
        return cleaned


class ConversionForm(DefinitionForm):
    error_fields = CONVERSION_FIELDS
    check_action = check_conversion

    class Meta:
        model = Conversion
        fields = [
            "journey",
            "key",
            "name",
            "description",
            "value",
            "counting",
            "window",
            "event_name",
            "event_where",
            "value_property",
        ]

    def definition_data(self, cleaned):
        data = {
            "key": cleaned.get("key"),
            "name": cleaned.get("name"),
            "value": float(cleaned.get("value") or 0),
            "counting": cleaned.get("counting"),
        }
        if cleaned.get("window"):
            try:
                data["window"] = format_duration(cleaned["window"])
            except ValueError as exc:
                self.add_error("window", str(exc))
        if cleaned.get("event_name"):
            data["event"] = {"event": cleaned["event_name"]}
            if cleaned.get("event_where"):
                data["event"]["where"] = cleaned["event_where"]
            if cleaned.get("value_property"):
                data["event"]["value_property"] = cleaned["value_property"]
        elif cleaned.get("event_where") or cleaned.get("value_property"):
            self.add_error("event_name", "Name the event that these filters apply to.")
        if cleaned.get("description"):
            data["description"] = cleaned["description"]
        return data


class GoalForm(DefinitionForm):
    error_fields = GOAL_FIELDS
    check_action = check_goal

    class Meta:
        model = Goal
        fields = ["journey", "key", "name", "description", "criteria", "conversion"]

    def definition_data(self, cleaned):
        data = {
            "key": cleaned.get("key"),
            "name": cleaned.get("name"),
            "criteria": cleaned.get("criteria"),
        }
        conversion = cleaned.get("conversion")
        if conversion is not None:
            journey = cleaned.get("journey") or self.instance.journey
            if conversion.journey_id != journey.pk:
                self.add_error("conversion", "Choose a conversion of the same journey.")
            data["conversion"] = conversion.key
        if cleaned.get("description"):
            data["description"] = cleaned["description"]
        return data


class DefinitionAdmin(admin.ModelAdmin):
    save_action = None

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
    form = ConversionForm
    save_action = save_conversion
    list_display = [
        "key",
        "name",
        "journey",
        "value",
        "counting",
        "window",
        "event_name",
        "archived_at",
    ]
    list_filter = ["counting", ("archived_at", admin.EmptyFieldListFilter), "journey"]
    search_fields = ["key", "name", "journey__key", "journey__name", "event_name"]
    list_select_related = ["journey"]


@admin.register(Goal)
class GoalAdmin(DefinitionAdmin):
    form = GoalForm
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
    list_select_related = ["journey", "conversion", "goal", "created_by"]


@admin.register(GoalAchievement)
class GoalAchievementAdmin(ReadOnlyAdmin):
    list_display = ["goal", "contact", "journey", "version", "step_key", "achieved_at"]
    list_filter = ["journey"]
    search_fields = ["goal__key", "contact__external_id", "journey__key"]
    date_hierarchy = "achieved_at"
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
    list_select_related = ["conversion", "contact", "journey", "version__journey"]
