import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from journeys.models import Journey
from journeys.selectors import journey_definition


class Command(BaseCommand):
    help = "Print a journey's definition as JSON (default: its newest version)."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # --version is this command's version number, not Django's.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("key", help="The journey's key.")
        parser.add_argument("--version", type=int, dest="number", help="The version number.")
        parser.add_argument("--output", help="Write the JSON to this file instead.")

    def handle(self, *args, key, number, output, **options):
        journey = Journey.objects.filter(key=key).first()
        if journey is None:
            raise CommandError(f"No journey has the key '{key}'.")
        version = None
        if number is not None:
            version = journey.versions.filter(number=number).first()
            if version is None:
                raise CommandError(f"Journey '{key}' has no version {number}.")
        elif not journey.versions.exists():
            raise CommandError(f"Journey '{key}' has no version yet.")
        text = json.dumps(journey_definition(journey=journey, version=version), indent=2)
        if output:
            try:
                Path(output).write_text(text + "\n", encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"{output}: cannot be written ({exc}).") from None
            self.stderr.write(f"Wrote the definition of '{key}' to {output}.")
        else:
            self.stdout.write(text)
