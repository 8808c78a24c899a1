"""The step forms lose nothing: a step shown in its form and saved unchanged is the same
step, for every step type of the contract's example."""

import pytest

from journeys.definition import parse_definition, render_definition
from journeys.forms import step_form
from journeys.tests.contract_example import contract_example


def canonical_steps():
    definition, _ = parse_definition(contract_example())
    rendered = render_definition(definition)
    extra = [
        {"key": "bye", "type": "exit"},
        {"key": "later", "type": "wait", "duration": "P1DT12H", "next": None},
        {"key": "text", "type": "send_sms", "name": "Nudge", "text": "Hi", "next": None},
        {
            "key": "event-check",
            "type": "condition",
            "if": {"event": "demo_booked", "within": "P7D"},
            "then": None,
            "else": None,
        },
        {
            "key": "compound",
            "type": "condition",
            "if": {"any": [{"attribute": "plan", "op": "in", "value": ["pro", "team"]}]},
            "then": None,
            "else": None,
        },
        {"key": "set", "type": "update_contact", "attributes": {"score": 3, "vip": True, "tier": "gold"}, "next": None},
    ]  # fmt: skip
    return rendered, rendered["steps"] + extra


DEFINITION, STEPS = canonical_steps()


@pytest.mark.parametrize("step", STEPS, ids=[s["key"] for s in STEPS])
def test_a_step_saved_unchanged_from_its_form_is_the_same_step(step):
    definition = {**DEFINITION, "steps": STEPS}
    form = step_form(step, definition)
    shown = list(form)
    if getattr(form, "rows", None) is not None:  # a Condition's criteria rows
        shown += [*form.rows.management_form, *(field for row in form.rows for field in row)]
    # As a browser posts them: an unticked checkbox is not sent.
    data = {
        f.html_name: f.value() for f in shown if f.value() is not None and f.value() is not False
    }
    bound = step_form(step, definition, data=data)
    assert bound.is_valid(), bound.errors
    assert bound.to_step() == step
