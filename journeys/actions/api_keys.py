"""API keys: created with a raw value shown once, revoked, and looked up by their hash."""

import hashlib
import secrets
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from journeys.models import ApiKey

API_KEY_PREFIX = "wp_"
# last_used_at is written at most this often per key, so a busy integration does not turn
# every API call into an UPDATE of the same row.
API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)


def hash_api_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def create_api_key(
    *, name: str, scope: str = ApiKey.Scope.ALL, created_by=None
) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value, which is never stored or shown again."""
    if scope not in ApiKey.Scope.values:
        raise ValueError(
            f"Unknown scope '{scope}'; expected one of {', '.join(ApiKey.Scope.values)}."
        )
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name,
        scope=scope,
        prefix=raw_key[:10],
        key_hash=hash_api_key(raw_key),
        created_by=created_by,
    )
    return key, raw_key


@transaction.atomic
def revoke_api_key(*, key: ApiKey) -> None:
    """Idempotent: revoking a revoked key keeps the first revocation time. Saved through the
    model (row locked) rather than a queryset update so the audit log records who revoked it."""
    locked = ApiKey.objects.select_for_update().get(pk=key.pk)
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])


class UnknownApiKey(Exception):
    """No key, or more than one, answers to what was given; `message` says which."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def find_api_key(*, ident: str) -> ApiKey:
    """The one key that `ident` names: the whole raw key, the start of its prefix (`wp_…`,
    as the admin lists it) or its name. Active keys win over revoked ones of the same name,
    so a name reused after a revocation still names the key in use. Raises UnknownApiKey
    when none or several match."""
    ident = ident.strip().rstrip("…")
    if not ident:
        raise UnknownApiKey("Give the key's prefix (wp_…) or its name.")
    named = Q(key_hash=hash_api_key(ident)) | Q(name=ident)
    if ident.startswith(API_KEY_PREFIX):
        named |= Q(prefix__startswith=ident[:10])
    matches = list(ApiKey.objects.filter(named).order_by("created_at"))
    active = [key for key in matches if key.revoked_at is None]
    matches = active or matches
    if not matches:
        raise UnknownApiKey(f"No API key has the prefix or name '{ident}'.")
    if len(matches) > 1:
        listed = ", ".join(str(key) for key in matches)
        raise UnknownApiKey(f"'{ident}' names {len(matches)} keys ({listed}); give its prefix.")
    return matches[0]


def authenticate_api_key(*, raw_key: str) -> ApiKey | None:
    """The active key for a raw value, recording its last use; None for unknown or revoked."""
    if not raw_key or len(raw_key) > 200:
        return None
    key = ApiKey.objects.filter(key_hash=hash_api_key(raw_key), revoked_at__isnull=True).first()
    if key is None:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > API_KEY_TOUCH_INTERVAL:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
