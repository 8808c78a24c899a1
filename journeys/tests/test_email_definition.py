"""send_email's fields of contract 6.1, validated when the definition is saved."""

import pytest

from journeys.definition import parse_definition, render_definition
from journeys.tests.test_definition import assert_only_error, errors_of, journey

ADDRESS_HELP = "Enter an email address, e.g. news@example.com or Name <news@example.com>"


def step(**fields):
    return {"key": "mail", "type": "send_email", "subject": "Hi", "body": "Hello", **fields}


def test_all_email_fields_round_trip_and_defaults_stay_out():
    full = step(
        body="",
        preheader="Hi {{ contact.email }}",
        html="<p>{{ contact.attributes.name | default: 'there' }}</p>",
        from_email="News <news@example.com>",
        reply_to="help@example.com",
        category="transactional",
        next=None,
    )
    rendered = render_definition(parse_definition(journey(full))[0])
    assert rendered["steps"][0] == full
    plain = render_definition(parse_definition(journey(step(next=None)))[0])
    assert plain["steps"][0] == step(next=None)


def test_html_and_preheader_that_do_not_parse_are_refused_with_the_line():
    errors = errors_of(journey(step(html="<p>\n{% if x %}\n</p>", preheader="{{ x | nope }}")))
    assert {
        "loc": ["steps", 0, "preheader"],
        "message": "Template syntax error on line 1: unknown filter 'nope'",
    } in errors
    [html] = [e for e in errors if e["loc"] == ["steps", 0, "html"]]
    assert html["message"].startswith("Template syntax error on line 3")


def test_html_over_one_megabyte_is_refused():
    assert_only_error(
        journey(step(html="<p>" + "x" * 1_000_000 + "</p>")),
        ["steps", 0, "html"],
        "Must be at most 1 MB",
    )


@pytest.mark.parametrize("field", ["from_email", "reply_to"])
@pytest.mark.parametrize(
    "value", ["not an address", "{{ contact.email }}", "a@example.com\nBcc: b@example.com", ""]
)
def test_sender_and_reply_to_must_be_plain_addresses(field, value):
    assert_only_error(journey(step(**{field: value})), ["steps", 0, field], ADDRESS_HELP)


def test_category_is_marketing_or_transactional():
    assert_only_error(
        journey(step(category="promo")),
        ["steps", 0, "category"],
        "Input should be 'marketing' or 'transactional'",
    )
    assert_only_error(
        journey({"key": "t", "type": "send_sms", "text": "Hi", "category": "news"}),
        ["steps", 0, "category"],
        "Input should be 'marketing' or 'transactional'",
    )


def test_an_email_needs_a_body_or_html():
    assert_only_error(
        journey(step(body=" ")),
        ["steps", 0, "body"],
        "Must not be empty (unless the email has HTML)",
    )
    assert parse_definition(journey(step(body="", html="<p>Hi</p>")))
