"""`/c/TOKEN`: the signed redirects of our click tracking (journeys.links)."""

from django.contrib.auth.decorators import login_not_required
from django.core import signing
from django.http import Http404, HttpResponseRedirect
from django.utils import timezone
from django.views.decorators.http import require_GET

from journeys.actions.delivery import record_click
from journeys.links import read_click_token


@login_not_required
@require_GET
def click_redirect(request, token: str):
    """No login: the reader of the email follows it. A forged or altered token is a 404,
    whatever message or URL it names; a real one records the click and answers 302 to the
    URL that was in the message."""
    try:
        outbox_id, url = read_click_token(token)
    except signing.BadSignature:
        raise Http404("No such link.") from None
    record_click(outbox_id=outbox_id, url=url, now=timezone.now())
    return HttpResponseRedirect(url)
