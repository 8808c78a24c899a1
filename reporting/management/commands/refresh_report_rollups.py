from django.core.management.base import BaseCommand

from reporting.rollups import refresh_rollups


class Command(BaseCommand):
    help = (
        "Fold the facts seen at the previous refresh into the report rollups (the periodic "
        "task does this; reports are exact either way)."
    )

    def handle(self, *args, **options):
        marks = refresh_rollups()
        summary = ", ".join(f"{fact} up to id {n}" for fact, n in marks.items())
        self.stdout.write(f"Report rollups now hold {summary}.")
