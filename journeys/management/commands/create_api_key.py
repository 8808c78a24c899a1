from django.core.management.base import BaseCommand, CommandError

from journeys.actions.api_keys import create_api_key
from journeys.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key and print it; only its hash is stored, so copy it now."

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the key is for, e.g. the integration's name.")
        parser.add_argument(
            "--scope",
            choices=ApiKey.Scope.values,
            default=ApiKey.Scope.ALL,
            help="ingest: contacts and events; manage: journeys and reports; all: both.",
        )

    def handle(self, *args, name, scope, **options):
        name = name.strip()
        limit = ApiKey._meta.get_field("name").max_length
        if not name:
            raise CommandError("Give the key a name that says what it is for.")
        if len(name) > limit:
            raise CommandError(f"The key's name must be at most {limit} characters.")
        key, raw_key = create_api_key(name=name, scope=scope)
        self.stdout.write(
            f"Created API key '{key.name}' ({key.get_scope_display()}). It is shown only once:"
        )
        self.stdout.write(raw_key)
