"""create_api_key, import_journey and export_journey (docs/contract.md §3)."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from journeys.actions.api_keys import authenticate_api_key
from journeys.models import ApiKey, Journey, JourneyVersion
from journeys.tests.contract_example import CONTRACT_EXAMPLE, contract_example, simple_definition

pytestmark = pytest.mark.django_db


def run(*args, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(tmp_path, definition, name="journey.json"):
    path = tmp_path / name
    path.write_text(definition if isinstance(definition, str) else json.dumps(definition))
    return str(path)


def test_create_api_key_prints_the_key_alone_on_its_last_line_and_stores_only_its_hash():
    out, _ = run("create_api_key", "crm", "--scope", "ingest")

    raw_key = out.strip().splitlines()[-1]
    key = ApiKey.objects.get()
    assert (key.name, key.scope) == ("crm", "ingest")
    assert raw_key not in {key.key_hash, key.prefix}
    assert authenticate_api_key(raw_key=raw_key) == key


def test_create_api_key_defaults_to_all_and_refuses_an_unknown_scope():
    run("create_api_key", "everything")
    assert ApiKey.objects.get().scope == "all"

    with pytest.raises(CommandError):
        run("create_api_key", "x", "--scope", "root")


def test_import_creates_the_journey_with_a_draft_and_prints_warnings(tmp_path):
    out, _ = run("import_journey", write(tmp_path, CONTRACT_EXAMPLE))

    journey = Journey.objects.get(key="trial-nurture")
    assert [(v.number, v.state) for v in journey.versions.order_by("number")] == [(1, "draft")]
    assert out.count("warning: ") == 2
    assert "version 1 is a draft" in out


def test_import_of_an_existing_journey_makes_a_new_draft_and_can_publish_it(tmp_path):
    run("import_journey", write(tmp_path, CONTRACT_EXAMPLE), "--publish")

    out, _ = run("import_journey", write(tmp_path, contract_example(name="v2")), "--publish")

    versions = Journey.objects.get(key="trial-nurture").versions.order_by("number")
    assert [(v.number, v.state) for v in versions] == [(1, "retired"), (2, "live")]
    assert "version 2 is published" in out


def test_import_prints_every_error_and_exits_non_zero_without_writing(tmp_path):
    definition = contract_example()
    definition["steps"][0]["next"] = "nowhere"
    definition["steps"][1]["duration"] = "P1M"
    err = io.StringIO()

    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_journey", write(tmp_path, definition), stderr=err)

    assert '["steps", 0, "next"]: No step has the key \'nowhere\'' in err.getvalue()
    assert '["steps", 1, "duration"]: ' in err.getvalue()
    assert not Journey.objects.exists()


def test_import_with_publish_of_an_invalid_version_writes_nothing(tmp_path):
    run("import_journey", write(tmp_path, simple_definition("one")))

    with pytest.raises(CommandError):
        run("import_journey", write(tmp_path, simple_definition("one", steps=[])), "--publish")

    assert JourneyVersion.objects.get().state == "draft"


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ('{"a": Infinity}', "not valid JSON"), ("[]", "error")],
)
def test_import_of_a_bad_file_is_a_clear_error(tmp_path, content, message):
    with pytest.raises(CommandError, match=message):
        run("import_journey", write(tmp_path, content))


def test_import_of_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        run("import_journey", str(tmp_path / "missing.json"))


def test_export_prints_the_definition_and_it_round_trips_through_import(tmp_path):
    run("import_journey", write(tmp_path, CONTRACT_EXAMPLE), "--publish")
    exported, _ = run("export_journey", "trial-nurture")

    run("import_journey", write(tmp_path, exported, "again.json"))
    again, _ = run("export_journey", "trial-nurture", "--version", "2")

    assert again == exported
    assert exported == json.dumps(json.loads(exported), indent=2) + "\n"
    assert json.loads(exported)["name"] == "Trial nurture"


def test_export_writes_to_a_file(tmp_path):
    run("import_journey", write(tmp_path, simple_definition("one")))
    target = tmp_path / "out.json"

    run("export_journey", "one", "--output", str(target))

    assert json.loads(target.read_text())["key"] == "one"


def test_export_of_an_unknown_journey_or_version_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="No journey has the key 'nope'"):
        run("export_journey", "nope")
    run("import_journey", write(tmp_path, simple_definition("one")))
    with pytest.raises(CommandError, match="has no version 4"):
        run("export_journey", "one", "--version", "4")


@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800"])
def test_import_refuses_text_the_database_cannot_store(tmp_path, escape):
    text = json.dumps(simple_definition("one", name="NAME")).replace("NAME", f"bad{escape}")
    err = io.StringIO()

    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_journey", write(tmp_path, text), stderr=err)

    assert err.getvalue().startswith('["name"]: Text must not contain NUL')
    assert not Journey.objects.exists()
