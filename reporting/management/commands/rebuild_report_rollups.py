from django.core.management.base import BaseCommand

from reporting.rollups import rebuild_rollups


class Command(BaseCommand):
    help = "Recompute the report rollups exactly from the facts (enrollments, visits, awards)."

    def handle(self, *args, **options):
        latest = rebuild_rollups()
        summary = ", ".join(f"{fact} up to id {n}" for fact, n in latest.items())
        self.stdout.write(f"Rebuilt the report rollups: {summary}.")
