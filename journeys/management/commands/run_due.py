from django.core.management.base import BaseCommand

from journeys.actions.sweep import run_due


class Command(BaseCommand):
    help = (
        "Process every pending event, due enrollment step and due outbox message in this "
        "process, until nothing is due. Safe alongside workers: nothing is done twice."
    )

    def handle(self, *args, **options):
        totals = run_due()
        self.stdout.write(
            f"Processed {totals['events']} events, advanced {totals['enrollments']} "
            f"enrollments, delivered {totals['messages']} messages."
        )
