"""System checks of the journeys app (`manage.py check`, and every test run).

journeys.definition is the one source of the step types and the comparison operators. The
tables that hold something per type or per operator (the engine's handlers, the editor's
forms, operator labels and choices) are written out by hand: a type or an operator added to
the definition without its entry in one of them would otherwise only fail when a marketer
picks it.
"""

from django.conf import settings
from django.core import checks

from journeys import definition, editing, engine, forms
from journeys.ratelimit import parse_limit

RATE_LIMIT_SETTINGS = ("INGEST_RATE_LIMIT", "CONTACTS_READ_RATE_LIMIT", "CONTACTS_ERASE_RATE_LIMIT")


def check_vocabularies(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    errors = []
    for name, table, source in (
        ("journeys.engine.STEP_HANDLERS", engine.STEP_HANDLERS, "STEP_TYPES"),
        ("journeys.forms.STEP_FORMS", forms.STEP_FORMS, "STEP_TYPES"),
        ("journeys.editing.OP_LABELS", editing.OP_LABELS, "OPS"),
        ("journeys.forms.OP_CHOICES", dict(forms.OP_CHOICES), "OPS"),
    ):
        vocabulary = getattr(definition, source)
        missing = [key for key in vocabulary if key not in table]
        unknown = [key for key in table if key not in vocabulary]
        if missing or unknown:
            errors.append(
                checks.Error(
                    f"{name} does not match journeys.definition.{source}.",
                    hint=f"Missing: {missing or 'none'}; not in {source}: {unknown or 'none'}.",
                    obj=name,
                    id="journeys.E001",
                )
            )
    return errors


def check_rate_limits(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A rate limit written wrong stops `migrate`, `check` and bin/run at once, instead of
    answering 500 to the first API call that spends it."""
    errors = []
    for name in RATE_LIMIT_SETTINGS:
        try:
            parse_limit(getattr(settings, name))
        except ValueError as exc:
            errors.append(checks.Error(f"{name}: {exc}", obj=name, id="journeys.E002"))
    return errors
