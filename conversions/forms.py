"""The goal and conversion forms, of the Goals & conversions panel and of the admin.

Both screens clean what was typed into the item as the definition writes it, which
conversions.actions checks and saves; an error the action reports goes beside the field it
is about. They differ in their fields and in when they check. The panel takes durations in
words and a goal's criteria field by field, makes the key from the name, and saves, showing
the action's errors. The admin edits the model's own fields (with the journey, the key, the
description and a conversion's event filter) and checks while cleaning, because
ModelAdmin.save_model cannot show an error.
"""

from decimal import Decimal

from django import forms

from conversions.actions import check_conversion, check_goal
from conversions.models import Conversion, Counting, Goal
from journeys.definition import DefinitionError, format_duration
from journeys.forms import CriteriaRowsForm, DurationField


def conversion_data(*, name, value, counting, window, event, where, value_property) -> dict:
    """A conversion as the definition writes it, from a form's cleaned values."""
    data = {"name": name, "value": float(value or 0), "counting": counting}
    if window:
        data["window"] = window
    if event:
        data["event"] = {"event": event}
        if where:
            data["event"]["where"] = where
        if value_property:
            data["event"]["value_property"] = value_property
    return data


def goal_data(*, name, criteria, conversion) -> dict:
    """A goal as the definition writes it; `conversion` is the linked one's key, or empty."""
    data = {"name": name, "criteria": criteria}
    if conversion:
        data["conversion"] = conversion
    return data


class DefinitionItemForm(forms.BaseForm):
    """A goal or conversion form of either screen. Once its fields are valid, clean() leaves
    the item as the definition writes it in `definition`."""

    # Where the action's error about a part of the item (its loc) is shown: the field named
    # for the loc's first two parts, else for its first; above the form when this form has
    # no such field (the admin's key once it is read-only, for one).
    error_fields: dict[tuple[str, ...], str] = {}

    def add_action_errors(self, errors: list[dict]) -> None:
        for error in errors:
            loc = tuple(str(part) for part in error.get("loc") or [])
            field = self.error_fields.get(loc[:2]) or self.error_fields.get(loc[:1])
            self.add_error(
                field if field in self.fields else None, error.get("message", "Invalid value")
            )


# --- The panel ------------------------------------------------------------------------------

# The inline form opens on request; focus goes to its first field (htmx honours autofocus).
NAME_INPUT = forms.TextInput(attrs={"autofocus": True})


class ConversionForm(DefinitionItemForm, forms.Form):
    error_fields = {
        ("name",): "name",
        # The key is made from the name.
        ("key",): "name",
        ("value",): "value",
        ("counting",): "counting",
        ("window",): "window",
        ("event",): "event",
        ("event", "value_property"): "value_property",
    }

    name = forms.CharField(label="Name", max_length=200, widget=NAME_INPUT)
    value = forms.DecimalField(
        label="Value",
        min_value=0,
        max_digits=14,
        decimal_places=2,
        required=False,
        initial=Decimal("0"),
        help_text="What one conversion is worth, in your currency.",
    )
    counting = forms.ChoiceField(
        label="Counting", choices=Counting.choices, initial=Counting.ONCE_PER_ENROLLMENT
    )
    window = DurationField(
        label="Window",
        required=False,
        help_text="How long after entry an event still counts, e.g. 30 days; empty: while active.",
    )
    event = forms.CharField(
        label="Event",
        required=False,
        max_length=100,
        help_text="Optional: award it whenever the contact sends this event.",
    )
    value_property = forms.CharField(
        label="Amount property",
        required=False,
        max_length=100,
        help_text="Optional: read the amount from this property of the event.",
    )

    def __init__(self, *args, keep_where=None, **kwargs):
        super().__init__(*args, **kwargs)
        # An event filter the form cannot show is kept as it is.
        self.keep_where = keep_where

    @classmethod
    def for_conversion(cls, conversion, data=None):
        initial = {}
        if conversion is not None:
            initial = {
                "name": conversion.name,
                "value": conversion.value,
                "counting": conversion.counting,
                "window": format_duration(conversion.window) if conversion.window else "",
                "event": conversion.event_name,
                "value_property": conversion.value_property,
            }
        return cls(data, initial=initial)

    def clean(self):
        data = super().clean()
        if data.get("value_property") and not data.get("event"):
            self.add_error("value_property", "Name the event whose property holds the amount.")
        if not self.errors:
            self.definition = conversion_data(
                name=data["name"],
                value=data.get("value"),
                counting=data["counting"],
                window=data.get("window"),
                event=data.get("event"),
                where=self.keep_where,
                value_property=data.get("value_property"),
            )
        return data


class GoalForm(DefinitionItemForm, CriteriaRowsForm):
    """A goal: achieved when its criteria hold, as rows matched all or any (or as JSON when
    the rows cannot show them)."""

    error_fields = {
        ("name",): "name",
        ("key",): "name",
        ("conversion",): "conversion",
        ("criteria",): "criteria_json",
    }

    name = forms.CharField(label="Name", max_length=200, widget=NAME_INPUT)
    conversion = forms.ChoiceField(
        label="Awards conversion",
        required=False,
        help_text="Optional: the conversion awarded when the goal is achieved.",
    )
    field_order = ["name", "match", "criteria_json", "conversion"]

    def __init__(self, data=None, *, conversions=(), criteria=None, **kwargs):
        super().__init__(data, **kwargs)
        self.fields["conversion"].choices = [("", "None")] + list(conversions)
        self.fields["match"].label = "Achieved when it matches"
        self.show_criteria(criteria, data, blank={"criteria_kind": "event"})

    @classmethod
    def for_goal(cls, goal, *, conversions, data=None):
        initial = {}
        if goal is not None:
            initial = {
                "name": goal.name,
                "conversion": goal.conversion.key if goal.conversion_id else "",
            }
        criteria = goal.criteria if goal is not None else None
        return cls(data, initial=initial, conversions=conversions, criteria=criteria)

    def clean(self):
        data = super().clean()
        if not self.errors:
            self.definition = goal_data(
                name=data["name"], criteria=self.criterion, conversion=data.get("conversion")
            )
        return data


# --- The admin ------------------------------------------------------------------------------


class DefinitionModelForm(DefinitionItemForm, forms.ModelForm):
    """The admin's goal or conversion form: the model's fields, checked by `check_action`
    (with the definition's own rules and the name check) while cleaning."""

    # Each subclass names its action, and writes item_data(cleaned, journey) -> the item's
    # definition without its key and description.
    check_action = None

    def clean(self):
        cleaned = super().clean()
        journey = cleaned.get("journey") or getattr(self.instance, "journey", None)
        if self.errors or journey is None:
            return cleaned
        key = self.instance.key if self.instance.pk else None
        # item_data may add errors of its own; the action still checks the rest, so every
        # error shows at once.
        self.definition = {
            "key": key or cleaned.get("key"),
            **self.item_data(cleaned, journey),
        }
        if cleaned.get("description"):
            self.definition["description"] = cleaned["description"]
        try:
            type(self).check_action(journey=journey, data=self.definition, key=key)
        except DefinitionError as exc:
            self.add_action_errors(exc.errors)
        return cleaned


class ConversionModelForm(DefinitionModelForm):
    error_fields = {
        ("key",): "key",
        ("name",): "name",
        ("value",): "value",
        ("counting",): "counting",
        ("window",): "window",
        ("description",): "description",
        ("event",): "event_name",
        ("event", "where"): "event_where",
        ("event", "value_property"): "value_property",
    }
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

    def item_data(self, cleaned, journey) -> dict:
        window = None
        if cleaned.get("window"):
            try:
                window = format_duration(cleaned["window"])
            except ValueError as exc:
                self.add_error("window", str(exc))
        if not cleaned.get("event_name") and (
            cleaned.get("event_where") or cleaned.get("value_property")
        ):
            self.add_error("event_name", "Name the event that these filters apply to.")
        return conversion_data(
            name=cleaned.get("name"),
            value=cleaned.get("value"),
            counting=cleaned.get("counting"),
            window=window,
            event=cleaned.get("event_name"),
            where=cleaned.get("event_where"),
            value_property=cleaned.get("value_property"),
        )


class GoalModelForm(DefinitionModelForm):
    error_fields = {
        ("key",): "key",
        ("name",): "name",
        ("criteria",): "criteria",
        ("conversion",): "conversion",
        ("description",): "description",
    }
    check_action = check_goal

    class Meta:
        model = Goal
        fields = ["journey", "key", "name", "description", "criteria", "conversion"]

    def item_data(self, cleaned, journey) -> dict:
        conversion = cleaned.get("conversion")
        if conversion is not None and conversion.journey_id != journey.pk:
            self.add_error("conversion", "Choose a conversion of the same journey.")
        return goal_data(
            name=cleaned.get("name"),
            criteria=cleaned.get("criteria"),
            conversion=conversion.key if conversion is not None else None,
        )
