import time

from django.core.management.base import BaseCommand, CommandError

from journeys.demo import seed_demo


class Command(BaseCommand):
    help = (
        "Load the demo: the four use cases (lead to customer, trial to paid, sales follow-up, "
        "renewal), two versions each, and weeks of contacts and events run through the engine."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=56, help="Weeks of history, in days.")
        parser.add_argument(
            "--contacts-per-day", type=int, default=14, help="New contacts per journey per day."
        )
        parser.add_argument("--seed", type=int, default=7, help="Random seed.")

    def handle(self, *args, days, contacts_per_day, seed, **options):
        if days < 2 or contacts_per_day < 2:
            raise CommandError("--days and --contacts-per-day must be at least 2.")
        started = time.monotonic()
        self.stdout.write(f"Playing {days} days of demo contacts through the engine...")
        try:
            made = seed_demo(
                days=days, contacts_per_day=contacts_per_day, seed=seed, out=self.stdout
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo loaded: {made['journeys']} journeys, {made['contacts']} contacts, "
                f"{made['events']} events in {time.monotonic() - started:.0f} s."
            )
        )
