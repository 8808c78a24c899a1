"""Click tracking of our own (the setting CLICK_TRACKING, off by default): at send, every
http(s) link of an email's HTML part becomes a signed redirect `/c/TOKEN`, which
journeys.clicks records on the outbox row and answers with a 302 to the original URL.

The token signs the message and the URL together, so only a URL that was in that message
can be a target: nobody can turn /c/ into an open redirect, and a forged or altered token is
a 404. Links to our own pages (PUBLIC_BASE_URL, such as the unsubscribe link) are left as
they are. Providers that track clicks themselves report them through their webhooks instead
(journeys.actions.delivery); use one or the other.
"""

import html
import re

from django.conf import settings
from django.core import signing
from django.urls import reverse

SALT = "journeys.clicks"
HTTP = re.compile(r"https?://", re.IGNORECASE)
HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)


def click_url(*, outbox_id: int, url: str) -> str:
    # No timestamp: a link works as long as the email is kept, and the same link of the same
    # message is the same URL.
    token = signing.Signer(salt=SALT).sign_object([outbox_id, url], compress=True)
    # The route alone, not the site's URLconf (see journeys.click_urls).
    path = reverse("click", args=[token], urlconf="journeys.click_urls")
    return settings.PUBLIC_BASE_URL.rstrip("/") + path


def tracked_html(content: str, *, outbox_id: int) -> str:
    """The HTML with each http(s) link (other than ours) replaced by its signed redirect."""
    ours = settings.PUBLIC_BASE_URL.rstrip("/") + "/"

    def replace(match: re.Match) -> str:
        prefix, quote, escaped = match.groups()
        url = html.unescape(escaped)
        if url.startswith(ours):
            return match.group(0)
        return f"{prefix}{quote}{html.escape(click_url(outbox_id=outbox_id, url=url))}{quote}"

    return HREF.sub(replace, content)


def track_email_clicks(email, *, outbox_id: int) -> None:
    """Rewrite the links of the HTML alternatives of a Django email, in place."""
    if not settings.CLICK_TRACKING:
        return
    email.alternatives = [
        (tracked_html(content, outbox_id=outbox_id), mimetype)
        if mimetype == "text/html"
        else (content, mimetype)
        for content, mimetype in getattr(email, "alternatives", [])
    ]


def read_click_token(token: str) -> tuple[int, str]:
    """(outbox id, URL) of a token click_url made; raises signing.BadSignature otherwise."""
    try:
        outbox_id, url = signing.Signer(salt=SALT).unsign_object(token)
    except (ValueError, TypeError):
        raise signing.BadSignature("Not a click token.") from None
    if not isinstance(outbox_id, int) or not isinstance(url, str) or not HTTP.match(url):
        raise signing.BadSignature("Not a click token.")
    return outbox_id, url
