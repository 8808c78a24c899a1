"""Forms of the journey editor. Each one turns what a marketer typed into one part of the
definition (a step, a trigger, the settings); validation of the whole flow stays in
journeys.definition, so the editor and the API apply the same rules."""

import json
import re

from django import forms
from django.core.validators import MaxValueValidator, RegexValidator

from journeys.definition import (
    ADDRESS_PROBLEM,
    DefinitionError,
    is_plain_address,
    parse_clock,
    parse_definition,
)
from journeys.editing import (
    STEP_TYPE_LABELS,
    describe_criteria,
    humanize_duration,
    parse_human_duration,
    step_ports,
)
from journeys.models import Subscription

SLUG_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]*\Z",
    "Use lowercase letters, digits, '-' and '_', starting with a letter or digit.",
)
# One per operator of journeys.definition.OPS; journeys.checks reports any difference.
OP_CHOICES = [
    ("eq", "equals"),
    ("ne", "does not equal"),
    ("gt", "greater than"),
    ("gte", "at least"),
    ("lt", "less than"),
    ("lte", "at most"),
    ("contains", "contains"),
    ("in", "is one of (comma-separated)"),
    ("exists", "exists"),
]
NEW = "__new__"
# Fields shown only while the form's controlling choice is "event" (see static/js/app.js).
EVENT_INPUT = forms.TextInput(attrs={"data-show-for": "event"})
NEW_INPUT = forms.TextInput(attrs={"data-show-for": NEW})
END = ""


def parse_scalar(text: str, op: str):
    """What a marketer typed as a value: numbers and true/false as such, a comma-separated
    list for "in", anything else as text."""
    text = text.strip()
    if op == "in":
        return [parse_scalar(part, "eq") for part in text.split(",") if part.strip()]
    if text in ("true", "false"):
        return text == "true"
    try:
        number = json.loads(text)
    except ValueError:
        return text
    return number if isinstance(number, int | float) and not isinstance(number, bool) else text


def format_scalar(value) -> str:
    if isinstance(value, list):
        return ", ".join(format_scalar(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class DurationField(forms.CharField):
    """A duration in words ("2 days", "12 hours") or ISO 8601; cleans to ISO 8601."""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "e.g. 30 minutes, 12 hours, 2 days, 1 week")
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return (
            humanize_duration(value) if isinstance(value, str) and value.startswith("P") else value
        )

    def clean(self, value):
        value = super().clean(value)
        if not value:
            return None
        try:
            return parse_human_duration(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class JourneyCreateForm(forms.Form):
    key = forms.CharField(
        label="Key",
        max_length=64,
        validators=[SLUG_VALIDATOR],
        help_text="Used by the API and in reports; it cannot change later (e.g. trial-nurture).",
    )
    name = forms.CharField(label="Name", max_length=200)
    description = forms.CharField(
        label="Description", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )


class SettingsForm(forms.Form):
    name = forms.CharField(label="Journey name", max_length=200)
    description = forms.CharField(
        label="Description", required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    reentry = forms.ChoiceField(
        label="Re-entry",
        choices=[
            ("once", "Once: a contact enters at most once"),
            ("after_exit", "Again after the earlier run ended"),
            ("concurrent", "Every trigger starts a run"),
        ],
    )
    holdout_percent = forms.IntegerField(
        label="Holdout %",
        min_value=0,
        max_value=50,
        help_text="Share of entrants held out at random to measure lift (0 to 50).",
    )
    quiet_start = forms.CharField(
        label="Quiet hours from",
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}),
        help_text="In each contact's time zone, e.g. 21:00. Marketing messages wait.",
    )
    quiet_end = forms.CharField(
        label="Quiet hours until",
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}),
        help_text="e.g. 08:00; the window may cross midnight. Leave both empty for none.",
    )

    @classmethod
    def for_definition(cls, definition: dict, **kwargs):
        settings = definition.get("settings") or {}
        quiet = settings.get("quiet_hours") or {}
        initial = {
            "name": definition.get("name", ""),
            "description": definition.get("description", ""),
            "reentry": settings.get("reentry", "once"),
            "holdout_percent": settings.get("holdout_percent", 0),
            "quiet_start": quiet.get("start", ""),
            "quiet_end": quiet.get("end", ""),
        }
        return cls(initial=initial, **kwargs)

    def _clean_clock(self, name: str) -> str:
        value = self.cleaned_data[name].strip()
        if not value:
            return ""
        try:
            parse_clock(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return value

    def clean_quiet_start(self):
        return self._clean_clock("quiet_start")

    def clean_quiet_end(self):
        return self._clean_clock("quiet_end")

    def clean(self):
        data = super().clean()
        start, end = data.get("quiet_start"), data.get("quiet_end")
        if start is None or end is None:
            return data  # One of them already has its error.
        if bool(start) != bool(end):
            self.add_error("quiet_end" if start else "quiet_start", "Give both times, or neither.")
        elif start and start == end:
            self.add_error("quiet_end", "Must differ from the start.")
        return data

    def apply(self, definition: dict) -> dict:
        data = self.cleaned_data
        result = {**definition, "name": data["name"]}
        if data["description"]:
            result["description"] = data["description"]
        else:
            result.pop("description", None)
        result["settings"] = {
            "reentry": data["reentry"],
            "holdout_percent": data["holdout_percent"],
        }
        if data["quiet_start"]:
            result["settings"]["quiet_hours"] = {
                "start": data["quiet_start"],
                "end": data["quiet_end"],
            }
        return result


MATCH_CHOICES = [("all", "all of these"), ("any", "any of these")]
# Rows of one list in a form: enough for any real rule, few enough to read.
MAX_ROWS = 20


def rows_data(data, *, prefix: str, button: str):
    """The posted data for a list of rows: none when the list was not posted at all (a form
    posted without its rows), and one more row when the form's "Add …" button was pressed
    (the form is then shown again, not saved); None for an unbound form."""
    total = f"{prefix}-TOTAL_FORMS"
    if data is None or (button not in data and total in data):
        return data
    data = data.copy()
    if total not in data:
        data.update({total: "0", f"{prefix}-INITIAL_FORMS": "0"})
    if button in data:
        try:
            count = int(data[total])
        except ValueError:
            return data  # The formset reports its broken management form itself.
        data[total] = str(min(count + 1, MAX_ROWS))
    return data


def kept_rows(formset) -> list:
    """What the rows say, leaving out removed and blank rows."""
    # A row left as it was added is not cleaned at all, so it has no result.
    results = [
        getattr(row, "result", None) for row in formset.forms if not row.cleaned_data.get("DELETE")
    ]
    return [result for result in results if result is not None]


def joined(items: list, match: str) -> dict | None:
    """One item as itself (so simple cases are stored as before), several in a group."""
    if not items:
        return None
    return items[0] if len(items) == 1 else {match or "all": items}


class FilterRowForm(forms.Form):
    """One property filter of an event; a row left without a property is ignored."""

    property = forms.CharField(label="Where property", required=False, max_length=100)
    op = forms.ChoiceField(label="Operator", choices=OP_CHOICES, required=False)
    compare = forms.CharField(label="Compared with", required=False, max_length=200)

    def clean(self):
        data = super().clean()
        self.result = None
        name = (data.get("property") or "").strip()
        if not name:
            return data
        op = data.get("op") or "eq"
        self.result = {"property": name, "op": op}
        if op != "exists":
            if not (data.get("compare") or "").strip():
                self.add_error("compare", "Give a value to compare the property with.")
            self.result["value"] = parse_scalar(data.get("compare") or "", op)
        return data


FilterRows = forms.formset_factory(
    FilterRowForm, extra=0, can_delete=True, max_num=MAX_ROWS, validate_max=True
)


class RuleForm(forms.Form):
    """A trigger or an exit rule: an event (with property filters, matched all or any), or
    a conversion or goal of this or another journey, picked from a list."""

    ADD_ROW = "add_filter"

    type = forms.ChoiceField(
        label="When",
        choices=[
            ("event", "the contact sends an event"),
            ("conversion", "a conversion is awarded"),
            ("goal", "a goal is achieved"),
        ],
        widget=forms.Select(attrs={"data-controls": "type"}),
    )
    event = forms.CharField(label="Event", required=False, max_length=100, widget=EVENT_INPUT)
    match = forms.ChoiceField(
        label="Its properties match",
        choices=MATCH_CHOICES,
        required=False,
        widget=forms.Select(attrs={"data-show-for": "event"}),
    )
    conversion = forms.ChoiceField(
        label="Conversion",
        required=False,
        widget=forms.Select(attrs={"data-show-for": "conversion"}),
    )
    goal = forms.ChoiceField(
        label="Goal", required=False, widget=forms.Select(attrs={"data-show-for": "goal"})
    )

    def __init__(self, data=None, *, conversions=(), goals=(), filters=None, **kwargs):
        super().__init__(data, **kwargs)
        self.fields["conversion"].choices = [("", "Choose a conversion")] + list(conversions)
        self.fields["goal"].choices = [("", "Choose a goal")] + list(goals)
        prefix = f"{self.prefix}-where" if self.prefix else "where"
        self.adding_row = data is not None and self.add_prefix(self.ADD_ROW) in data
        self.filters = FilterRows(
            rows_data(data, prefix=prefix, button=self.add_prefix(self.ADD_ROW)),
            prefix=prefix,
            initial=filters or [{"op": "eq"}],
        )

    @classmethod
    def for_rule(cls, rule: dict, *, journey_key: str, **kwargs) -> "RuleForm | None":
        """The form showing a stored rule; None when its filters nest groups that the rows
        cannot show (it is then removed and added again, or changed over the API)."""
        kind = rule.get("type")
        initial = {"type": kind, "event": rule.get("event", ""), "match": "all"}
        if kind in ("conversion", "goal"):
            initial[kind] = f"{rule.get('journey') or journey_key}:{rule.get(kind)}"
        where = rule.get("where") or []
        if len(where) == 1 and isinstance(where[0], dict) and "any" in where[0]:
            initial["match"], where = "any", where[0]["any"]
        if not all(isinstance(item, dict) and "property" in item for item in where):
            return None
        filters = [
            {
                "property": item["property"],
                "op": item.get("op", "eq"),
                "compare": format_scalar(item.get("value")),
            }
            for item in where
        ]
        return cls(initial=initial, filters=filters, **kwargs)

    def clean(self):
        data = super().clean()
        kind = data.get("type")
        if kind == "event":
            if not data.get("event", "").strip():
                self.add_error("event", "Name the event that starts it.")
            if not self.filters.is_valid():
                self.add_error(None, "Check the property filters marked below.")
        elif kind in ("conversion", "goal") and not data.get(kind):
            self.add_error(kind, f"Choose a {kind}.")
        return data

    def rule(self, *, journey_key: str, section: str) -> dict:
        data = self.cleaned_data
        kind = data["type"]
        if kind == "event":
            rule = {"type": "event", "event": data["event"].strip()}
            filters = kept_rows(self.filters)
            # The format's `where` list is matched all; "any" is one any-of group in it.
            if len(filters) > 1 and data.get("match") == "any":
                filters = [{"any": filters}]
            if filters:
                rule["where"] = filters
            return rule
        source_journey, _, target = data[kind].partition(":")
        rule = {"type": kind, kind: target}
        if section == "triggers" or source_journey != journey_key:
            rule["journey"] = source_journey
        return rule


class PublishForm(forms.Form):
    traffic = forms.IntegerField(
        label="Traffic %",
        required=False,
        min_value=1,
        max_value=99,
        help_text="For a split test: the share of new enrollments this version takes.",
    )


class AddStepForm(forms.Form):
    after = forms.CharField(required=False)
    port = forms.CharField()
    type = forms.ChoiceField(choices=list(STEP_TYPE_LABELS.items()))


# --- Step forms, one per type ---------------------------------------------------------------


class StepForm(forms.Form):
    """Fields shared by every step: a label and where each branch leads."""

    step_name = forms.CharField(
        label="Label",
        required=False,
        max_length=200,
        help_text="Shown on the diagram instead of the key.",
    )

    def __init__(self, *args, step: dict, definition: dict, **kwargs):
        self.step = step
        self.definition = definition
        kwargs.setdefault("initial", self.initial_from(step))
        super().__init__(*args, **kwargs)
        targets = [(END, "End the journey here")] + [
            (s.get("key"), s.get("name") or s.get("key"))
            for s in definition.get("steps") or []
            if s.get("key") != step.get("key")
        ]
        self.port_fields = []
        for port, label, target in step_ports(step):
            name = "go_" + port.replace(".", "_")
            caption = {
                "next": "Then go to",
                "then": "If yes, go to",
                "else": "If no, go to",
                "achieved": "If achieved, go to",
                "not_achieved": "If not achieved, go to",
            }.get(port, f"Path {label}, go to")
            self.fields[name] = forms.ChoiceField(
                label=caption, choices=targets, required=False, initial=target or END
            )
            self.port_fields.append((port, name))

    def initial_from(self, step: dict) -> dict:
        return {"step_name": step.get("name", "")}

    def content(self) -> dict:
        """The type's own fields, cleaned into the definition's form."""
        return {}

    def to_step(self) -> dict:
        data = self.cleaned_data
        step = {"key": self.step["key"], "type": self.step["type"]}
        if data.get("step_name", "").strip():
            step["name"] = data["step_name"].strip()
        step.update(self.content())
        for port, name in self.port_fields:
            target = data.get(name) or None
            if port.startswith("paths."):
                continue
            step[port] = target
        if "paths" in step:
            for port, name in self.port_fields:
                if port.startswith("paths."):
                    index = int(port.split(".")[1])
                    if index < len(step["paths"]):
                        step["paths"][index]["next"] = data.get(name) or None
        return step

    def bound_port_fields(self):
        return [self[name] for _, name in self.port_fields]

    def content_fields(self):
        hidden = {name for _, name in self.port_fields} | {"step_name"}
        return [field for field in self if field.name not in hidden]


CATEGORY_CHOICES = [
    ("marketing", "Marketing: needs consent, carries an unsubscribe link"),
    ("transactional", "Transactional: receipts, password resets; sent to anyone"),
]


class CategoryField(forms.ChoiceField):
    """Marketing unless said otherwise: a form posted without it keeps the default."""

    def __init__(self, **kwargs):
        super().__init__(label="Category", choices=CATEGORY_CHOICES, required=False, **kwargs)

    def clean(self, value):
        return super().clean(value) or "marketing"


class AddressField(forms.CharField):
    """A sender or reply-to as the definition takes it (journeys.definition)."""

    def validate(self, value):
        super().validate(value)
        if value and not is_plain_address(value):
            raise forms.ValidationError(ADDRESS_PROBLEM)


class SendEmailForm(StepForm):
    # The optional ones are written to the step only when filled in.
    OPTIONAL = ("preheader", "html", "from_email", "reply_to")

    subject = forms.CharField(label="Subject", max_length=998)
    preheader = forms.CharField(
        label="Preheader",
        required=False,
        max_length=998,
        help_text="The preview line inboxes show after the subject; hidden in the email.",
    )
    body = forms.CharField(
        label="Text body",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Leave empty with an HTML body to send text made from the HTML.",
    )
    html = forms.CharField(
        label="HTML body",
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        help_text="Optional. Styles in a <style> tag are inlined when sent. At most 1 MB.",
    )
    from_email = AddressField(
        label="From", required=False, max_length=320, help_text="Empty: the site's sender."
    )
    reply_to = AddressField(label="Reply-to", required=False, max_length=320)
    category = CategoryField()

    def initial_from(self, step):
        return {
            **super().initial_from(step),
            "subject": step.get("subject", ""),
            "body": step.get("body", ""),
            "category": step.get("category") or "marketing",
            **{name: step.get(name) or "" for name in self.OPTIONAL},
        }

    def clean(self):
        data = super().clean()
        if not (data.get("body") or "").strip() and not (data.get("html") or "").strip():
            self.add_error("body", "Write a text body, an HTML body, or both.")
        return data

    def content(self):
        data = self.cleaned_data
        content = {"subject": data["subject"], "body": data["body"]}
        content.update({name: data[name] for name in self.OPTIONAL if data[name]})
        if data["category"] != "marketing":
            content["category"] = data["category"]
        return content


class SendSmsForm(StepForm):
    text = forms.CharField(label="Message", widget=forms.Textarea(attrs={"rows": 3}))
    category = CategoryField()

    def initial_from(self, step):
        return {
            **super().initial_from(step),
            "text": step.get("text", ""),
            "category": step.get("category") or "marketing",
        }

    def content(self):
        content = {"text": self.cleaned_data["text"]}
        if self.cleaned_data["category"] != "marketing":
            content["category"] = self.cleaned_data["category"]
        return content


class WaitForm(StepForm):
    duration = DurationField(label="Duration")

    def initial_from(self, step):
        return {**super().initial_from(step), "duration": step.get("duration", "")}

    def content(self):
        return {"duration": self.cleaned_data["duration"]}


class CriteriaFields(forms.Form):
    """A single criterion: an attribute comparison, or "sent an event"."""

    criteria_kind = forms.ChoiceField(
        label="Check",
        choices=[("attribute", "a contact attribute"), ("event", "an event the contact sent")],
        widget=forms.Select(attrs={"data-controls": "criteria_kind"}),
    )
    attribute = forms.CharField(
        label="Attribute",
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"data-show-for": "attribute"}),
    )
    op = forms.ChoiceField(
        label="Operator",
        choices=OP_CHOICES,
        required=False,
        widget=forms.Select(attrs={"data-show-for": "attribute"}),
    )
    compare = forms.CharField(
        label="Compared with",
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"data-show-for": "attribute"}),
    )
    event = forms.CharField(label="Event", required=False, max_length=100, widget=EVENT_INPUT)
    within = DurationField(
        label="Within",
        required=False,
        help_text="Leave empty for: since the enrollment started.",
        widget=EVENT_INPUT,
    )


def criteria_initial(criteria) -> dict:
    if not isinstance(criteria, dict):
        return {"criteria_kind": "attribute"}
    if "event" in criteria:
        return {
            "criteria_kind": "event",
            "event": criteria.get("event", ""),
            "within": criteria.get("within", ""),
        }
    if "attribute" in criteria:
        return {
            "criteria_kind": "attribute",
            "attribute": criteria.get("attribute", ""),
            "op": criteria.get("op", "eq"),
            "compare": format_scalar(criteria.get("value")),
        }
    return {"criteria_kind": "attribute"}


def clean_criteria(form: forms.Form, data: dict, *, keep=None):
    """The criterion the fields describe, or `keep` (a compound criterion the form cannot
    show) when they are left empty. Adds field errors to the form."""
    kind = data.get("criteria_kind")
    if kind == "event":
        if not data.get("event", "").strip():
            if keep is not None:
                return keep
            form.add_error("event", "Name the event.")
            return None
        criterion = {"event": data["event"].strip()}
        if data.get("within"):
            criterion["within"] = data["within"]
        return criterion
    if not data.get("attribute", "").strip():
        if keep is not None:
            return keep
        form.add_error("attribute", "Name the attribute to check.")
        return None
    op = data.get("op") or "eq"
    criterion = {"attribute": data["attribute"].strip(), "op": op}
    if op != "exists":
        criterion["value"] = parse_scalar(data.get("compare", ""), op)
    return criterion


class CriterionRowForm(CriteriaFields):
    """One row of a criteria list; a row left without an attribute or event is ignored."""

    def clean(self):
        data = super().clean()
        named = data.get("event") if data.get("criteria_kind") == "event" else data.get("attribute")
        self.result = clean_criteria(self, data) if (named or "").strip() else None
        return data


CriteriaRows = forms.formset_factory(
    CriterionRowForm, extra=0, can_delete=True, max_num=MAX_ROWS, validate_max=True
)


def criteria_rows(criteria) -> tuple[str, list[dict]] | None:
    """How a criterion shows as rows: ("all" or "any", one initial per row); None when the
    rows cannot show it (a group inside a group, an event with property filters)."""

    def row(item) -> dict | None:
        if not isinstance(item, dict) or item.get("where"):
            return None
        return criteria_initial(item) if "event" in item or "attribute" in item else None

    if not isinstance(criteria, dict):
        return "all", [criteria_initial(None)]
    for match in ("all", "any"):
        if match in criteria:
            items = criteria[match]
            rows = [row(item) for item in items] if isinstance(items, list) else [None]
            return (match, rows) if len(rows) > 1 and None not in rows else None
    single = row(criteria)
    return ("all", [single]) if single is not None else None


def criteria_json_problems(definition: dict, step_key: str, criteria) -> list[str]:
    """What the definition's own rules say of `criteria` as this step's `if`; the rest of
    the draft may be unfinished, so only problems inside the criteria count."""
    steps = definition.get("steps") or []
    index = next(i for i, s in enumerate(steps) if s.get("key") == step_key)
    changed = [{**s, "if": criteria} if i == index else s for i, s in enumerate(steps)]
    try:
        parse_definition({**definition, "steps": changed})
    except DefinitionError as exc:
        problems = []
        for error in exc.errors:
            loc = error.get("loc") or []
            if loc[:3] == ["steps", index, "if"]:
                where = " › ".join(str(part) for part in loc[3:])
                problems.append(f"{where}: {error['message']}" if where else error["message"])
        return problems
    return []


class CriteriaRowsForm(forms.Form):
    """Criteria as rows matched all or any; criteria the rows cannot show are read as a
    sentence and edited as JSON (journeys/_criteria_rows.html draws them). A form calls
    show_criteria() once bound and reads `criterion` after cleaning."""

    ADD_ROW = "add_condition"
    ROWS = "if"

    match = forms.ChoiceField(label="Match", choices=MATCH_CHOICES, required=False)
    criteria_json = forms.CharField(
        label="Edit as JSON",
        error_messages={"required": "Give the criteria as JSON."},
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false"}),
        help_text="Checked against the definition's rules when you save.",
    )

    def show_criteria(self, current, data, *, blank: dict | None = None) -> None:
        """Rows for `current` (`blank` is the one row of a form without criteria yet)."""
        self.sentence = describe_criteria(current) if current is not None else ""
        shown = criteria_rows(current) if current is not None else ("all", [blank or {}])
        self.as_json = shown is None
        self.adding_row = data is not None and self.ADD_ROW in data
        self.rows = None
        if self.as_json:
            del self.fields["match"]
            self.fields["criteria_json"].initial = json.dumps(current, indent=2)
            return
        del self.fields["criteria_json"]
        self.fields["match"].initial = shown[0]
        self.rows = CriteriaRows(
            rows_data(data, prefix=self.ROWS, button=self.ADD_ROW),
            prefix=self.ROWS,
            initial=shown[1],
        )

    def criteria_problems(self, criteria) -> list[str]:
        """What is wrong with criteria typed as JSON; the form's own check, if it has one."""
        return []

    def clean(self):
        data = super().clean()
        self.criterion = None
        if self.as_json:
            if data.get("criteria_json"):
                self.criterion = self._criterion_from_json(data["criteria_json"])
        elif not self.rows.is_valid():
            self.add_error(None, "Check the conditions marked below.")
        else:
            self.criterion = joined(kept_rows(self.rows), data.get("match"))
            if self.criterion is None:
                self.add_error(None, "Add at least one condition.")
        return data

    def _criterion_from_json(self, text: str):
        try:
            criteria = json.loads(text)
        except ValueError as exc:
            self.add_error("criteria_json", f"This is not valid JSON: {exc}.")
            return None
        for problem in self.criteria_problems(criteria):
            self.add_error("criteria_json", problem)
        return criteria


class ConditionForm(StepForm, CriteriaRowsForm):
    def __init__(self, data=None, **kwargs):
        super().__init__(data, **kwargs)
        self.show_criteria(self.step.get("if"), data)

    def content_fields(self):
        return []  # _step_panel.html draws the criteria itself.

    def criteria_problems(self, criteria):
        return criteria_json_problems(self.definition, self.step["key"], criteria)

    def content(self):
        return {"if": self.criterion}


class SplitForm(StepForm):
    weights = forms.CharField(
        label="Weights",
        help_text="One whole number per path, e.g. 50, 50 or 1, 1, 1.",
    )

    def initial_from(self, step):
        weights = [str(path.get("weight")) for path in step.get("paths") or []]
        return {**super().initial_from(step), "weights": ", ".join(weights)}

    def clean_weights(self):
        parts = [part.strip() for part in self.cleaned_data["weights"].split(",") if part.strip()]
        if not all(part.isdigit() and int(part) > 0 for part in parts):
            raise forms.ValidationError("Each weight must be a whole number above zero.")
        if not 2 <= len(parts) <= 10:
            raise forms.ValidationError("A split needs 2 to 10 paths.")
        return [int(part) for part in parts]

    def content(self):
        old = self.step.get("paths") or []
        return {
            "paths": [
                {"weight": weight, "next": old[index].get("next") if index < len(old) else None}
                for index, weight in enumerate(self.cleaned_data["weights"])
            ]
        }


class UpdateContactForm(StepForm):
    attributes = forms.CharField(
        label="Attributes to set",
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One per line: attribute = value (numbers and true/false are kept as such).",
    )

    def initial_from(self, step):
        lines = [f"{k} = {format_scalar(v)}" for k, v in (step.get("attributes") or {}).items()]
        return {**super().initial_from(step), "attributes": "\n".join(lines)}

    def clean_attributes(self):
        attributes = {}
        for number, line in enumerate(self.cleaned_data["attributes"].splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise forms.ValidationError(f"Line {number}: write it as attribute = value.")
            attributes[name.strip()] = parse_scalar(value, "eq")
        if not attributes:
            raise forms.ValidationError("Set at least one attribute.")
        return attributes

    def content(self):
        return {"attributes": self.cleaned_data["attributes"]}


class EvaluateGoalForm(StepForm):
    goal = forms.ChoiceField(label="Goal", widget=forms.Select(attrs={"data-controls": "goal"}))
    new_goal = forms.CharField(
        label="New goal called",
        required=False,
        max_length=200,
        help_text="Only when you choose “New goal…”.",
        widget=NEW_INPUT,
    )
    new_goal_event = forms.CharField(
        label="Achieved when the contact sends event",
        required=False,
        max_length=100,
        widget=NEW_INPUT,
    )
    wait = DurationField(
        label="Wait up to",
        required=False,
        help_text="Leave empty to check once; otherwise waits until achieved or this time runs out.",
    )

    def __init__(self, *args, goals=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["goal"].choices = [("", "Choose a goal")] + list(goals) + [(NEW, "New goal…")]

    def initial_from(self, step):
        return {
            **super().initial_from(step),
            "goal": step.get("goal", ""),
            "wait": step.get("wait", ""),
        }

    def clean(self):
        data = super().clean()
        if data.get("goal") == NEW:
            if not data.get("new_goal", "").strip():
                self.add_error("new_goal", "Give the new goal a name.")
            if not data.get("new_goal_event", "").strip():
                self.add_error("new_goal_event", "Name the event that achieves it.")
        return data

    def content(self):
        step = {"goal": self.cleaned_data["goal"]}
        if self.cleaned_data.get("wait"):
            step["wait"] = self.cleaned_data["wait"]
        return step


class ConvertForm(StepForm):
    conversion = forms.ChoiceField(
        label="Conversion", widget=forms.Select(attrs={"data-controls": "conversion"})
    )
    new_conversion = forms.CharField(
        label="New conversion called",
        required=False,
        max_length=200,
        help_text="Only when you choose “New conversion…”.",
        widget=NEW_INPUT,
    )

    def __init__(self, *args, conversions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["conversion"].choices = (
            [("", "Choose a conversion")] + list(conversions) + [(NEW, "New conversion…")]
        )

    def initial_from(self, step):
        return {**super().initial_from(step), "conversion": step.get("conversion", "")}

    def clean(self):
        data = super().clean()
        if data.get("conversion") == NEW and not data.get("new_conversion", "").strip():
            self.add_error("new_conversion", "Give the new conversion a name.")
        return data

    def content(self):
        return {"conversion": self.cleaned_data["conversion"]}


class ExitForm(StepForm):
    pass


# One per step type of journeys.definition.STEP_TYPES; journeys.checks reports any difference.
STEP_FORMS = {
    "send_email": SendEmailForm,
    "send_sms": SendSmsForm,
    "wait": WaitForm,
    "condition": ConditionForm,
    "split": SplitForm,
    "update_contact": UpdateContactForm,
    "evaluate_goal": EvaluateGoalForm,
    "convert": ConvertForm,
    "exit": ExitForm,
}


def step_form(step: dict, definition: dict, data=None) -> StepForm:
    """The form for a step of any type, with the journey's goals and conversions to pick."""
    form_class = STEP_FORMS.get(step.get("type"), ExitForm)
    kwargs = {"step": step, "definition": definition}
    if form_class is ConvertForm:
        kwargs["conversions"] = [
            (c.get("key"), c.get("name")) for c in definition.get("conversions") or []
        ]
    if form_class is EvaluateGoalForm:
        kwargs["goals"] = [(g.get("key"), g.get("name")) for g in definition.get("goals") or []]
    return form_class(data, **kwargs)


class ContactImportForm(forms.Form):
    """The CSV file of a contact import; its header and encoding are checked by
    journeys.actions.imports.inspect_csv once it is saved."""

    file = forms.FileField(
        label="CSV file",
        help_text="UTF-8, first line the column names: external_id (required), email, phone, "
        "timezone, and any others as attributes.",
    )


# --- Consent ----------------------------------------------------------------------------------


class SubscriptionsForm(forms.Form):
    """A contact's status per channel, as the contact page changes it."""

    email = forms.ChoiceField(label="Email", choices=Subscription.choices)
    sms = forms.ChoiceField(label="SMS", choices=Subscription.choices)


class PreviewForm(forms.Form):
    contact = forms.CharField(
        label="Preview for contact",
        required=False,
        max_length=255,
        help_text="An email or external id; empty: the contact who entered last.",
    )


class TestSendForm(PreviewForm):
    to = forms.EmailField(label="Send a test to", max_length=254)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["contact"].label = "With the data of contact"


SUBSCRIPTION_FILTER_CHOICES = [("", "Any"), *Subscription.choices]
ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ContactFilterForm(forms.Form):
    """The contacts list's query string: search, filters and page; every field optional."""

    q = forms.CharField(required=False, max_length=255, label="Email, external id or name")
    attribute = forms.CharField(
        required=False,
        max_length=255,
        label="Attribute",
        help_text="key=value, e.g. plan=pro",
    )
    email = forms.ChoiceField(
        required=False, choices=SUBSCRIPTION_FILTER_CHOICES, label="Email subscription"
    )
    sms = forms.ChoiceField(
        required=False, choices=SUBSCRIPTION_FILTER_CHOICES, label="SMS subscription"
    )
    journey = forms.CharField(
        required=False, max_length=100, label="In journey", widget=forms.Select
    )
    version = forms.IntegerField(required=False, min_value=1, label="Version")
    step = forms.CharField(required=False, max_length=64, label="At step")
    reached = forms.ChoiceField(
        required=False,
        label="Who",
        choices=[
            ("", "At the step now"),
            ("entered", "Entered the step"),
            ("converted", "Entered the step and converted"),
        ],
    )
    page = forms.IntegerField(required=False, min_value=1)

    def __init__(self, *args, max_page: int, journeys, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["page"].validators.append(
            MaxValueValidator(max_page, f"Pages stop at {max_page}: narrow the search instead.")
        )
        self.journeys = {journey.key: journey for journey in journeys}
        self.fields["journey"].widget.choices = [
            ("", "Any"),
            *((key, journey.name) for key, journey in self.journeys.items()),
        ]

    def clean_q(self):
        return self.cleaned_data["q"].strip()

    def clean_attribute(self):
        text = self.cleaned_data["attribute"].strip()
        if not text:
            return None
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not ATTRIBUTE_KEY.fullmatch(key):
            raise forms.ValidationError(
                "Write the attribute as key=value, with a key of letters, digits, _ or -."
            )
        return key, value.strip()

    def clean_journey(self):
        key = self.cleaned_data["journey"].strip()
        if not key:
            return None
        if key not in self.journeys:
            raise forms.ValidationError(f"There is no journey “{key}”.")
        return self.journeys[key]

    def clean(self):
        data = super().clean()
        if data.get("step") and not data.get("journey") and "journey" not in self.errors:
            self.add_error("step", "Choose the journey of this step.")
        if data.get("reached") and not data.get("journey") and "journey" not in self.errors:
            self.add_error("reached", "Choose the journey first.")
        if data.get("version") and not data.get("journey") and "journey" not in self.errors:
            self.add_error("version", "Choose the journey of this version.")
        if journey := data.get("journey"):
            self._check_version_and_step(journey, data.get("version"), data.get("step"))
        return data

    def _check_version_and_step(self, journey, number, step):
        versions = dict(journey.versions.values_list("number", "definition"))
        if number and number not in versions:
            self.add_error("version", f"{journey.name} has no version {number}.")
            return
        definitions = [versions[number]] if number else versions.values()
        if step and not any(
            step == each.get("key") for d in definitions for each in d.get("steps", [])
        ):
            self.add_error("step", f"{journey.name} has no step “{step}”.")
