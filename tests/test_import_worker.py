"""A CSV import started from the page runs on a real Celery worker process (woken through
Redis, or found by the worker's own sweep), on PostgreSQL (docs/integrations.md)."""

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from journeys.models import Contact, ContactImport
from tests.processes import celery_processes, wait_for
from tests.test_reliability import needs_postgres

REDIS_URL = os.environ.get("IMPORT_REDIS_URL", "redis://127.0.0.1:6379/15")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.slow
def test_an_import_from_the_page_runs_on_a_worker(client, editor, tmp_path, settings):
    needs_postgres()
    settings.CONTACT_IMPORT_DIR = tmp_path / "imports"
    rows = "".join(f"w{i},w{i}@example.com,plan-{i % 3}\n" for i in range(12_000))
    content = ("external_id,email,plan\n" + rows + "w5,dup@example.com,x\n").encode()
    client.force_login(editor)
    response = client.post(
        "/contacts/import/", {"file": SimpleUploadedFile("people.csv", content, "text/csv")}
    )
    assert response.status_code == 302
    item = ContactImport.objects.get()
    client.post(f"/contacts/import/{item.pk}/start/")

    with celery_processes(
        tmp_path,
        broker_url=REDIS_URL,
        workers=["import"],
        CONTACT_IMPORT_DIR=str(tmp_path / "imports"),
    ):
        wait_for(
            lambda: (
                ContactImport.objects.get().status
                in (ContactImport.Status.DONE, ContactImport.Status.FAILED)
            ),
            90,
            "the worker to finish the import",
        )
    item.refresh_from_db()
    assert item.status == ContactImport.Status.DONE, (tmp_path / "celery.log").read_text()
    assert (item.rows_total, item.rows_done) == (12_001, 12_001)
    assert (item.created_count, item.refused_count) == (11_999, 2)
    assert Contact.objects.count() == 11_999
    page = client.get(f"/contacts/import/{item.pk}/", headers={"HX-Request": "true"})
    assert 'value="100"' in page.content.decode()
