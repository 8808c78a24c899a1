"""The inline forms of the Goals & conversions panel. They clean what a marketer typed into
the definition's shape; conversions.actions checks names and saves."""

from decimal import Decimal

from django import forms

from conversions.models import Counting
from journeys.forms import CriteriaFields, DurationField, clean_criteria, criteria_initial

# Where save_conversion / save_goal report a problem -> the field that shows it.
CONVERSION_ERROR_FIELDS = {
    ("name",): "name",
    ("key",): "name",
    ("value",): "value",
    ("counting",): "counting",
    ("window",): "window",
    ("event",): "event",
    ("event", "event"): "event",
    ("event", "value_property"): "value_property",
}
GOAL_ERROR_FIELDS = {
    ("name",): "name",
    ("key",): "name",
    ("conversion",): "conversion",
    ("criteria",): "criteria_kind",
}


def add_action_errors(form: forms.Form, errors: list[dict], fields: dict) -> None:
    """Show each error of an action beside the field it is about (or above the form)."""
    for error in errors:
        loc = tuple(str(part) for part in error.get("loc") or [])
        # Errors may come located in the definition (["conversions", 0, "name"]).
        if len(loc) > 2 and loc[0] in ("conversions", "goals"):
            loc = loc[2:]
        field = fields.get(loc[:2]) or fields.get(loc[:1])
        if field is None and loc[:1] == ("criteria",):
            field = "criteria_kind"
        form.add_error(field, error.get("message", "Invalid value"))


# The inline form opens on request; focus goes to its first field (htmx honours autofocus).
NAME_INPUT = forms.TextInput(attrs={"autofocus": True})


class ConversionForm(forms.Form):
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
                "window": _iso(conversion.window),
                "event": conversion.event_name,
                "value_property": conversion.value_property,
            }
        return cls(data, initial=initial)

    def clean(self):
        data = super().clean()
        if data.get("value_property") and not data.get("event"):
            self.add_error("value_property", "Name the event whose property holds the amount.")
        return data

    def definition(self) -> dict:
        data = self.cleaned_data
        result = {
            "name": data["name"].strip(),
            "value": float(data.get("value") or 0),
            "counting": data["counting"],
        }
        if data.get("window"):
            result["window"] = data["window"]
        if data.get("event"):
            event = {"event": data["event"].strip()}
            if self.keep_where:
                event["where"] = self.keep_where
            if data.get("value_property"):
                event["value_property"] = data["value_property"].strip()
            result["event"] = event
        return result


class GoalForm(CriteriaFields):
    name = forms.CharField(label="Name", max_length=200, widget=NAME_INPUT)
    conversion = forms.ChoiceField(
        label="Awards conversion",
        required=False,
        help_text="Optional: the conversion awarded when the goal is achieved.",
    )
    field_order = [
        "name",
        "criteria_kind",
        "event",
        "within",
        "attribute",
        "op",
        "compare",
        "conversion",
    ]

    def __init__(self, *args, conversions=(), keep_criteria=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_criteria = keep_criteria
        self.fields["conversion"].choices = [("", "None")] + list(conversions)
        self.fields["criteria_kind"].label = "Achieved when"

    @classmethod
    def for_goal(cls, goal, *, conversions, data=None):
        initial = {"criteria_kind": "event"}
        keep = None
        if goal is not None:
            initial = {
                "name": goal.name,
                "conversion": goal.conversion.key if goal.conversion_id else "",
                **criteria_initial(goal.criteria),
            }
            if isinstance(goal.criteria, dict) and (
                "all" in goal.criteria or "any" in goal.criteria
            ):
                keep = goal.criteria
        return cls(data, initial=initial, conversions=conversions, keep_criteria=keep)

    def clean(self):
        data = super().clean()
        self.criterion = clean_criteria(self, data, keep=self.keep_criteria)
        return data

    def definition(self) -> dict:
        result = {"name": self.cleaned_data["name"].strip(), "criteria": self.criterion}
        if self.cleaned_data.get("conversion"):
            result["conversion"] = self.cleaned_data["conversion"]
        return result


def _iso(window) -> str:
    from journeys.definition import format_duration

    return format_duration(window) if window else ""
