from django.core.management.base import BaseCommand, CommandError

from journeys.actions.api_keys import UnknownApiKey, find_api_key, revoke_api_key


class Command(BaseCommand):
    help = (
        "Revoke an API key: its next call gets 401. Name it by its prefix (wp_…, as the admin "
        "lists it) or its name; revoking a revoked key changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("key", help="The key's prefix (e.g. wp_AbCdEfG) or its name.")

    def handle(self, *args, key, **options):
        try:
            api_key = find_api_key(ident=key)
        except UnknownApiKey as error:
            raise CommandError(error.message) from None
        already = api_key.revoked_at
        revoke_api_key(key=api_key)
        if already:
            self.stdout.write(f"API key {api_key} was already revoked at {already:%Y-%m-%d %H:%M}.")
        else:
            self.stdout.write(f"Revoked API key {api_key}; its next call gets 401.")
