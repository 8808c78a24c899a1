"""CSV import of contacts: the command, the action and the page (docs/contract.md §6.3)."""

import datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.utils import timezone

from journeys.actions import imports
from journeys.actions.contacts import erase_contact
from journeys.actions.imports import (
    create_contact_import,
    run_pending_import,
    upsert_contacts,
)
from journeys.actions.sweep import enqueue_due_work
from journeys.models import Contact, ContactImport

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
GOOD = (
    "external_id,email,phone,timezone,plan\n"
    "ann,ann@example.com,+33 1 23,Europe/Paris,pro\n"
    "bob,,,,free\n"
)


def write(tmp_path, text, name="contacts.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def run(path, capsys=None):
    call_command("import_contacts", str(path))
    return capsys.readouterr() if capsys else None


def test_the_command_upserts_rows_by_external_id(tmp_path, capsys):
    Contact.objects.create(external_id="bob", email="bob@example.com", attributes={"age": "3"})
    out = run(write(tmp_path, GOOD), capsys).out
    assert "2 rows: 1 created, 1 updated, 0 unchanged, 0 refused." in out
    ann = Contact.objects.get(external_id="ann")
    assert ann.email == "ann@example.com"
    assert ann.attributes == {"phone": "+33 1 23", "plan": "pro"}
    assert ann.timezone == "Europe/Paris"
    bob = Contact.objects.get(external_id="bob")
    # An empty cell keeps what is stored; the others are merged in.
    assert (bob.email, bob.attributes) == ("bob@example.com", {"age": "3", "plan": "free"})


def test_importing_the_same_file_again_changes_nothing(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    run(path)
    before = dict(Contact.objects.values_list("external_id", "updated_at"))
    out = run(path, capsys).out
    assert "0 created, 0 updated, 2 unchanged" in out
    assert dict(Contact.objects.values_list("external_id", "updated_at")) == before


def test_bad_rows_are_reported_with_their_line_and_skipped(tmp_path, capsys):
    text = (
        "external_id,email,timezone\n"
        "ann,ann@example.com,\n"
        "bob,not-an-email,\n"
        "cat,,Mars/Base\n"
        ",x@example.com,\n"
        "\n"
        "dan,only-two\n"
        "eve,eve@example.com,UTC\n"
    )
    result = run(write(tmp_path, text), capsys)
    assert "line 3: email 'not-an-email' is not a valid email address." in result.err
    assert "line 4: timezone 'Mars/Base' is not an IANA time zone name" in result.err
    assert "line 5: external_id is empty." in result.err
    assert "line 7: The row has 2 cells where the header has 3." in result.err
    assert "2 created" in result.out and "4 refused" in result.out
    assert set(Contact.objects.values_list("external_id", flat=True)) == {"ann", "eve"}


def test_an_id_on_two_lines_is_refused_on_both(tmp_path, capsys):
    text = "external_id,plan\nann,a\nbob,b\nann,c\n"
    result = run(write(tmp_path, text), capsys)
    assert "line 2: external_id 'ann' is on more than one line (2, 4)" in result.err
    assert "line 4: external_id 'ann' is on more than one line (2, 4)" in result.err
    assert list(Contact.objects.values_list("external_id", flat=True)) == ["bob"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The file is empty."),
        (
            "external_id,plan\nann,caf\xe9\n".encode("latin-1"),
            "The file is not UTF-8: byte 0xE9 at line 2 (byte 25)",
        ),
        (b"id,email\n1,a@example.com\n", "The file has no 'external_id' column"),
        (b"external_id,plan,plan\nann,a,b\n", "The header repeats the column(s) plan"),
        (b"external_id,,plan\nann,a,b\n", "Column 2 of the header (line 1) has no name"),
    ],
)
def test_whole_file_errors_exit_non_zero_and_import_nothing(tmp_path, content, message):
    with pytest.raises(CommandError) as raised:
        run(write(tmp_path, content))
    assert message in str(raised.value)
    assert "Nothing was imported" in str(raised.value)
    assert not Contact.objects.exists()


def test_a_bad_byte_late_in_the_file_fails_it_before_any_write(tmp_path):
    # Past what the preview reads: the import's own scan finds it before writing.
    rows = "".join(f"c{i},{'x' * 60}\n" for i in range(80_000))
    content = ("external_id,pad\n" + rows).encode() + b"late,\xff\n"
    with pytest.raises(CommandError, match="not UTF-8: byte 0xFF at line 80002"):
        run(write(tmp_path, content))
    assert not Contact.objects.exists()


def test_a_file_over_the_size_limit_is_refused(tmp_path, settings):
    settings.CONTACT_IMPORT_MAX_BYTES = 10
    with pytest.raises(CommandError, match="at most 10 can be imported"):
        run(write(tmp_path, GOOD))


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="cannot be read"):
        run(tmp_path / "nope.csv")


def test_an_erased_contact_is_never_written(tmp_path):
    contact = Contact.objects.create(external_id="ann")
    erased = erase_contact(contact=contact)
    rows = [
        {
            "external_id": erased.external_id,
            "email": "x@example.com",
            "timezone": "",
            "attributes": {},
        }
    ]
    assert upsert_contacts(rows=rows, now=NOW) == (0, 0)
    erased.refresh_from_db()
    assert erased.email == ""


def test_a_worker_resumes_after_the_last_committed_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(imports, "BATCH_SIZE", 2)
    text = "external_id\na\nb\nc\nd\ne\n"
    item = create_contact_import(path=str(write(tmp_path, text)), file_name="x.csv", size=1)
    # A worker took it, committed the batch of a and b, and died: its lease ran out.
    ContactImport.objects.filter(pk=item.pk).update(
        status=ContactImport.Status.RUNNING,
        attempts=1,
        leased_until=NOW - datetime.timedelta(seconds=1),
        rows_done=2,
        created_count=2,
    )
    assert enqueue_due_work(now=NOW) == ["import_contacts"]
    done = run_pending_import(now=NOW)
    assert done.pk == item.pk
    assert done.status == ContactImport.Status.DONE
    assert (done.rows_done, done.rows_total, done.created_count) == (5, 5, 5)
    # a and b were not written again (nor at all: the dead worker's rows are simulated).
    assert sorted(Contact.objects.values_list("external_id", flat=True)) == ["c", "d", "e"]
    assert run_pending_import(now=NOW) is None


def test_a_worker_whose_lease_was_taken_over_stops_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(imports, "BATCH_SIZE", 1)
    create_contact_import(
        path=str(write(tmp_path, "external_id\na\nb\n")), file_name="x.csv", size=1, start=True
    )
    commit = imports._commit_batch
    calls = []

    def taken_over_after_the_first_batch(contact_import, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            ContactImport.objects.filter(pk=contact_import.pk).update(attempts=9)
        return commit(contact_import, *args, **kwargs)

    monkeypatch.setattr(imports, "_commit_batch", taken_over_after_the_first_batch)
    run_pending_import(now=NOW)
    assert list(Contact.objects.values_list("external_id", flat=True)) == ["a"]
    assert ContactImport.objects.get().rows_done == 1


def test_an_unexpected_error_fails_the_import_with_its_reason(tmp_path, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(imports, "upsert_contacts", broken)
    create_contact_import(path=str(write(tmp_path, GOOD)), file_name="x.csv", size=1, start=True)
    item = run_pending_import(now=NOW)
    assert item.status == ContactImport.Status.FAILED
    assert "disk on fire" in item.error


# --- The page ---------------------------------------------------------------------------------


def upload(client, content, name="people.csv"):
    return client.post("/contacts/import/", {"file": SimpleUploadedFile(name, content, "text/csv")})


def test_the_page_previews_then_imports_on_the_worker_with_a_report(
    client, editor, settings, tmp_path
):
    settings.CONTACT_IMPORT_DIR = tmp_path
    client.force_login(editor)
    content = b"external_id,email,plan\nann,ann@example.com,pro\n=cmd,bad,x\n"
    response = upload(client, content)
    assert response.status_code == 302
    item = ContactImport.objects.get()
    assert item.status == ContactImport.Status.DRAFT
    page = client.get(response["Location"]).content.decode()
    assert "attribute &#x27;plan&#x27;" in page or "attribute 'plan'" in page
    assert "the contact&#x27;s email" in page or "the contact's email" in page
    assert "ann@example.com" in page
    assert not Contact.objects.exists()

    assert client.post(f"/contacts/import/{item.pk}/start/").status_code == 302
    progress = client.get(f"/contacts/import/{item.pk}/", headers={"HX-Request": "true"})
    assert 'hx-trigger="every 1s"' in progress.content.decode()

    run_pending_import(now=timezone.now())  # what the woken worker does
    progress = client.get(f"/contacts/import/{item.pk}/", headers={"HX-Request": "true"})
    html = progress.content.decode()
    assert "every 1s" not in html
    assert 'value="100"' in html
    report = client.get(f"/contacts/import/{item.pk}/refused.csv")
    assert report["Content-Type"] == "text/csv"
    lines = b"".join(report.streaming_content).decode().splitlines()
    assert lines[0] == "line,external_id,reason"
    assert lines[1].startswith("3,'=cmd,")
    assert list(Contact.objects.values_list("external_id", flat=True)) == ["ann"]
    # The upload is gone once imported; the report comes from the database.
    assert list(tmp_path.iterdir()) == []
    assert client.get(f"/contacts/import/{item.pk}/refused.csv").status_code == 200


def test_the_command_leaves_the_users_file_in_place(tmp_path):
    path = write(tmp_path, GOOD)
    run(path)
    assert path.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"id,email\n1,x\n", "no &#x27;external_id&#x27; column"),
        ("external_id\ncaf\xe9\n".encode("latin-1"), "not UTF-8"),
        (b"", "empty"),
    ],
)
def test_a_bad_file_gets_an_inline_error_and_no_import(
    client, editor, settings, tmp_path, content, message
):
    settings.CONTACT_IMPORT_DIR = tmp_path
    client.force_login(editor)
    response = upload(client, content)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert 'class="field-error"' in response.content.decode()
    assert not ContactImport.objects.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_viewer_cannot_import(client, viewer):
    client.force_login(viewer)
    assert client.get("/contacts/import/").status_code == 403
    assert upload(client, GOOD.encode()).status_code == 403


def test_subscription_columns_set_consent_per_channel_and_are_checked(tmp_path, capsys):
    Contact.objects.create(external_id="bob", subscriptions={"email": "subscribed"})
    text = (
        "external_id,subscription_email,subscription_sms\n"
        "ann,unsubscribed,\n"
        "bob,,unsubscribed\n"
        "cat,maybe,\n"
    )
    result = run(write(tmp_path, text), capsys)
    assert Contact.objects.get(external_id="ann").subscriptions == {
        "email": "unsubscribed",
        "sms": "subscribed",
    }
    assert Contact.objects.get(external_id="bob").subscriptions == {
        "email": "subscribed",
        "sms": "unsubscribed",
    }
    assert not Contact.objects.filter(external_id="cat").exists()
    assert "line 4: subscription_email 'maybe' is not one of" in result.err
    assert "subscription_email" not in Contact.objects.get(external_id="ann").attributes
