import os

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from journeys.actions.imports import (
    ImportFileError,
    claim_draft_import,
    create_contact_import,
    inspect_csv,
    run_contact_import,
)
from journeys.models import ContactImport

SHOWN_REFUSALS = 50


class Command(BaseCommand):
    help = (
        "Import contacts from a CSV file (UTF-8, first line the column names): external_id "
        "(required), email, phone, timezone and any others as attributes. Rows are upserted "
        "by external_id; bad rows are reported with their line and skipped. Runs in this "
        "process (the page /contacts/import/ runs imports on the workers)."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The CSV file.")

    def handle(self, *args, file, **options):
        path = os.path.abspath(file)
        try:
            size = os.path.getsize(path)
            inspect_csv(path=path, size=size)
        except OSError as exc:
            raise CommandError(f"{file}: cannot be read ({exc.strerror}).") from None
        except ImportFileError as exc:
            raise CommandError(f"{file}: {exc} Nothing was imported.") from None
        contact_import = create_contact_import(
            path=path, file_name=os.path.basename(path), size=size
        )
        claim_draft_import(contact_import=contact_import, now=timezone.now())
        contact_import = run_contact_import(contact_import=contact_import, now=timezone.now())
        if contact_import.status == ContactImport.Status.FAILED:
            raise CommandError(f"{file}: {contact_import.error} Nothing more was imported.")
        refusals = contact_import.refusals.order_by("line")
        for refusal in refusals[:SHOWN_REFUSALS]:
            self.stderr.write(f"line {refusal.line}: {refusal.reason}")
        if contact_import.refused_count > SHOWN_REFUSALS:
            self.stderr.write(
                f"... and {contact_import.refused_count - SHOWN_REFUSALS} more refused rows "
                f"(the report: /contacts/import/{contact_import.pk}/refused.csv)."
            )
        self.stdout.write(
            f"{contact_import.rows_total} rows: {contact_import.created_count} created, "
            f"{contact_import.updated_count} updated, {contact_import.unchanged_count} "
            f"unchanged, {contact_import.refused_count} refused."
        )
