"""docs/contract.md §3, the management commands: `create_api_key` (scopes, the key alone
on its last line, only a hash stored), `run_due` (safe at any time, delivers what is due,
nothing done twice alongside another run), `import_journey` / `export_journey` in the
definition format, and `seed_demo`."""

import datetime
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from journeys.tests.contract_example import CONTRACT_EXAMPLE
from tests.contract.public_surface import contact, create, definition, event, live, run_due, send
from tests.contract.sample_journeys import BROKEN_STEPS

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("scope", [None, "ingest", "manage", "all"])
def test_create_api_key_prints_the_key_alone_on_its_last_line(client, scope):
    out = io.StringIO()
    args = ["create_api_key", "my-integration"] + (["--scope", scope] if scope else [])
    call_command(*args, stdout=out)
    raw = out.getvalue().strip().splitlines()[-1]
    assert raw and " " not in raw
    headers = {"Authorization": f"Bearer {raw}"}
    journeys = client.get("/api/v1/journeys", headers=headers).status_code
    events = client.post(
        "/api/v1/events",
        json.dumps({"events": [{"id": f"k-{scope}", "contact": "a", "name": "x"}]}),
        content_type="application/json",
        headers=headers,
    ).status_code
    expected = {None: (200, 202), "all": (200, 202), "ingest": (403, 202), "manage": (200, 403)}
    assert (journeys, events) == expected[scope]
    from journeys.models import ApiKey

    assert not ApiKey.objects.filter(key_hash=raw).exists()  # only a hash is stored


def test_create_api_key_refuses_an_unknown_scope():
    with pytest.raises(CommandError):
        call_command("create_api_key", "x", "--scope", "everything", stdout=io.StringIO())


def test_run_due_is_safe_to_run_at_any_time(api, clock):
    run_due()  # nothing to do
    live(
        api, definition("due", [{"key": "pause", "type": "wait", "duration": "PT1H", "next": None}])
    )
    send(api, event("ann", "signed_up"))
    run_due()
    run_due()
    assert contact(api, "ann")["enrollments"][0]["path"] == ["pause"]
    assert contact(api, "ann")["enrollments"][0]["state"] == "active"
    clock.shift(datetime.timedelta(hours=1))
    run_due()
    run_due()
    enrollment = contact(api, "ann")["enrollments"][0]
    assert (enrollment["state"], enrollment["path"]) == ("completed", ["pause"])


def test_export_then_import_round_trips(api, tmp_path):
    create(api, CONTRACT_EXAMPLE)
    out = io.StringIO()
    call_command("export_journey", "trial-nurture", stdout=out)
    exported = json.loads(out.getvalue())
    assert exported == api.get("/api/v1/journeys/trial-nurture/definition").json()
    exported["key"] = "copy"
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(exported))
    call_command("import_journey", str(path), stdout=io.StringIO())
    copied = api.get("/api/v1/journeys/copy/definition").json()
    assert copied == exported
    # Importing an existing key makes a new draft of it.
    call_command("import_journey", str(path), stdout=io.StringIO())
    assert [v["state"] for v in api.get("/api/v1/journeys/copy").json()["versions"]] == ["draft"]


def test_import_journey_refuses_an_invalid_definition_with_every_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(definition("bad-import", BROKEN_STEPS)))
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_journey", str(path), stdout=io.StringIO(), stderr=err)
    assert "nowhere" in err.getvalue() and "ghost-goal" in err.getvalue()
    with pytest.raises(CommandError):
        call_command("import_journey", str(Path(tmp_path / "missing.json")), stdout=io.StringIO())
    with pytest.raises(CommandError):
        call_command("export_journey", "bad-import", stdout=io.StringIO())


def test_seed_demo_loads_four_journeys_with_two_versions_and_reports(api):
    call_command("seed_demo", "--days", "4", "--contacts-per-day", "3", stdout=io.StringIO())
    journeys = api.get("/api/v1/journeys").json()
    assert len(journeys) == 4
    for row in journeys:
        detail = api.get(f"/api/v1/journeys/{row['key']}").json()
        assert len(detail["versions"]) >= 2, row["key"]
        report = api.get(f"/api/v1/journeys/{row['key']}/report").json()
        assert len(report["versions"]) >= 2, row["key"]
        assert sum(v["enrolled"] for v in report["versions"]) > 0, row["key"]


def test_run_due_delivers_due_email_and_sms(api, clock, mailoutbox):
    from journeys import sms

    sms.outbox.clear()
    steps = [
        {
            "key": "mail",
            "type": "send_email",
            "subject": "Hi {{ contact.attributes.first_name }}",
            "body": "Welcome",
            "next": "pause",
        },
        {"key": "pause", "type": "wait", "duration": "PT1H", "next": "text"},
        {
            "key": "text",
            "type": "send_sms",
            "text": "Need a hand, {{ contact.attributes.first_name }}?",
        },
    ]
    live(api, definition("messages", steps))
    api.put(
        "/api/v1/contacts/ann",
        {"email": "ann@example.com", "attributes": {"first_name": "Ann", "phone": "+15550100"}},
    )
    send(api, event("ann", "signed_up"))
    run_due()
    assert [(m.to, m.subject) for m in mailoutbox] == [(["ann@example.com"], "Hi Ann")]
    assert sms.outbox == []
    clock.shift(datetime.timedelta(hours=1))
    run_due()
    assert sms.outbox == [{"to": "+15550100", "text": "Need a hand, Ann?"}]
    run_due()
    assert len(mailoutbox) == 1 and len(sms.outbox) == 1


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_create_api_key_refuses_a_blank_or_too_long_name(name):
    from journeys.models import ApiKey

    with pytest.raises(CommandError, match="name"):
        call_command("create_api_key", name, stdout=io.StringIO())
    assert not ApiKey.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_run_due_at_once_do_nothing_twice(api, mailoutbox):
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks (SKIP LOCKED) to run two at once")
    steps = [
        {"key": "hello", "type": "send_email", "subject": "Hi", "body": "x", "next": "buy"},
        {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
    ]
    conversions = [{"key": "paid", "name": "Paid", "value": 1}]
    live(api, definition("together", steps, conversions=conversions))
    people = [f"p{i}" for i in range(40)]
    for person in people:
        api.put(f"/api/v1/contacts/{person}", {"email": f"{person}@example.com"})
    send(api, *[event(p, "signed_up") for p in people])
    errors = []

    def worker():
        try:
            run_due()
        except Exception as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run_due()
    assert errors == []
    assert sorted(m.to[0] for m in mailoutbox) == sorted(f"{p}@example.com" for p in people)
    for person in people:
        body = contact(api, person)
        assert len(body["enrollments"]) == 1
        assert [a["conversion"] for a in body["conversions"]] == ["paid"]
