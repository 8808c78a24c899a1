"""The journeys app's system checks: the tables kept per step type and per operator match
the definition's vocabulary, and `manage.py check` says so when they do not."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from journeys import engine, forms
from journeys.checks import check_rate_limits, check_vocabularies


def test_the_tables_match_the_definitions_step_types_and_operators():
    assert check_vocabularies() == []


def test_a_step_type_without_an_engine_handler_is_an_error(monkeypatch):
    monkeypatch.delitem(engine.STEP_HANDLERS, "wait")

    errors = check_vocabularies()

    assert [(error.id, error.obj) for error in errors] == [
        ("journeys.E001", "journeys.engine.STEP_HANDLERS")
    ]
    assert "'wait'" in errors[0].hint


def test_an_operator_the_definition_does_not_know_is_an_error(monkeypatch):
    monkeypatch.setattr(forms, "OP_CHOICES", [*forms.OP_CHOICES, ("matches", "matches")])

    errors = check_vocabularies()

    assert [(error.id, error.obj) for error in errors] == [
        ("journeys.E001", "journeys.forms.OP_CHOICES")
    ]
    assert "'matches'" in errors[0].hint


def test_manage_py_check_fails_when_the_vocabularies_disagree(monkeypatch):
    monkeypatch.delitem(forms.STEP_FORMS, "split")

    with pytest.raises(SystemCheckError, match="journeys.E001"):
        call_command("check")


def test_a_rate_limit_written_wrong_stops_manage_py_check(settings):
    # It used to pass every check and answer 500 to the first API call that spent it.
    assert check_rate_limits() == []
    settings.CONTACTS_READ_RATE_LIMIT = "1200 per minute"

    errors = check_rate_limits()

    assert [(error.id, error.obj) for error in errors] == [
        ("journeys.E002", "CONTACTS_READ_RATE_LIMIT")
    ]
    assert "reads like '100000/60s'" in errors[0].msg
    with pytest.raises(SystemCheckError, match="journeys.E002"):
        call_command("check")
