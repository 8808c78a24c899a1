"""Unsubscribe links: a signed token names one contact and one channel (docs/messages.md).

The token is `django.core.signing` over [contact id, channel] with its own salt, so no other
signed value of the site can pass for one and nobody can make one for another contact. It
does not expire: an email read a year later must still unsubscribe, and unsubscribing (or
resubscribing from the page it leads to) is all it can do. Rotating SECRET_KEY invalidates
every link sent before; list the old key in SECRET_KEY_FALLBACKS to keep them working.
"""

from django.conf import settings
from django.core import signing

from journeys.models import SUBSCRIPTION_CHANNELS

UNSUBSCRIBE_SALT = "journeys.unsubscribe"


def unsubscribe_token(*, contact_id: int, channel: str) -> str:
    return signing.dumps([contact_id, channel], salt=UNSUBSCRIBE_SALT)


def read_unsubscribe_token(token: str) -> tuple[int, str] | None:
    """The contact id and channel the token names; None for a forged or garbled one."""
    try:
        value = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    except signing.BadSignature:
        return None
    match value:
        case [int() as contact_id, str() as channel] if channel in SUBSCRIPTION_CHANNELS:
            return contact_id, channel
    return None


def unsubscribe_url(*, contact_id: int, channel: str = "email") -> str:
    token = unsubscribe_token(contact_id=contact_id, channel=channel)
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/u/{token}"
