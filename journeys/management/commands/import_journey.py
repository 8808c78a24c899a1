import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from journeys.actions.versions import (
    VersionStateError,
    create_journey,
    publish_version,
    save_draft_version,
)
from journeys.definition import DefinitionError
from journeys.models import Journey


class Command(BaseCommand):
    help = (
        "Import a journey definition (JSON): creates the journey, or a new draft version of "
        "an existing one (replacing its unpublished draft)."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The definition's JSON file ('-' reads standard input).")
        parser.add_argument(
            "--publish", action="store_true", help="Publish the imported version as well."
        )

    def handle(self, *args, file, publish, **options):
        definition = self._read(file)
        try:
            with transaction.atomic():
                journey = (
                    Journey.objects.filter(key=definition.get("key")).first()
                    if isinstance(definition, dict) and isinstance(definition.get("key"), str)
                    else None
                )
                if journey is None:
                    journey, version, warnings = create_journey(definition=definition)
                    action = "Created journey"
                else:
                    result = save_draft_version(journey=journey, definition=definition)
                    version, warnings = result.version, result.warnings
                    action = "Saved a draft of journey"
                if publish:
                    version = publish_version(version=version)
        except DefinitionError as exc:
            for error in exc.errors:
                self.stderr.write(f"{json.dumps(error['loc'])}: {error['message']}")
            raise CommandError(
                f"{file}: the definition has {len(exc.errors)} error(s); nothing was imported."
            ) from None
        except VersionStateError as exc:
            raise CommandError(f"{file}: {exc.message}; nothing was imported.") from None
        for warning in warnings:
            self.stdout.write(f"warning: {json.dumps(warning['loc'])}: {warning['message']}")
        state = "published (live)" if publish else "a draft"
        self.stdout.write(f"{action} '{journey.key}': version {version.number} is {state}.")

    def _read(self, file: str) -> object:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CommandError(f"{file}: no such file.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{file}: cannot be read ({exc}).") from None
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise CommandError(f"{file}: not valid JSON ({exc}).") from None
        except RecursionError:
            raise CommandError(f"{file}: nested too deeply.") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")
