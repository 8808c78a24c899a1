"""Security plumbing that settings point at: the login lockout page and the log filter that
keeps email addresses out of log lines."""

import logging
import re
import sys

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.views.defaults import server_error as default_server_error

# Also URL-encoded ("ann%40example.com"), as a search query carries it, and encoded again
# ("%2540", "%252540"), as a URL that went through a redirect or a proxy carries it.
_AT = r"(?:@|%(?:25)*40)"
_DOT = r"(?:\.|%(?:25)*2[Ee])"
EMAIL_RE = re.compile(
    rf"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*{_AT}((?:[A-Za-z0-9-]+{_DOT})+[A-Za-z]{{2,}})"
)


def mask_emails(text: str) -> str:
    """'ada.lovelace@example.com' -> 'a***@example.com': enough to tell addresses apart in
    an incident, not enough to contact anyone."""
    return EMAIL_RE.sub(r"\1***@\2", text)


class MaskEmailsFilter(logging.Filter):
    """Rewrites each record's message with email addresses masked. The record is formatted
    once here (args merged into msg) so an address passed as an argument is masked too."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        masked = mask_emails(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def client_ip(request) -> str | None:
    """The address django-axes counts failed logins against. Behind TRUSTED_PROXY_COUNT
    proxies REMOTE_ADDR is the nearest proxy, shared by every user, so the client is the
    address the outermost trusted proxy appended to X-Forwarded-For: the Nth entry from the
    right. Entries left of it come from the client and can be anything, so they are never
    read; with no proxy configured the header is not read at all."""
    remote_addr = request.META.get("REMOTE_ADDR")
    if not settings.TRUSTED_PROXY_COUNT:
        return remote_addr
    forwarded = [
        address.strip()
        for address in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if address.strip()
    ]
    if len(forwarded) < settings.TRUSTED_PROXY_COUNT:
        # Not through every proxy (a probe inside the network, a misconfigured proxy): the
        # header cannot be trusted, the peer's own address can.
        return remote_addr
    return forwarded[-settings.TRUSTED_PROXY_COUNT]


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' answer once a username and address have failed too often: the login
    page again, status 429, with the reason and when to try again above the form."""
    # Imported here: logging settings load this module before Django's apps are ready, and
    # the form imports the user model.
    from django.contrib.auth.forms import AuthenticationForm

    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60) or 1
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    form = AuthenticationForm(request, initial={"username": username})
    form.cleaned_data = {}
    form.add_error(
        None,
        ValidationError(
            f"Too many failed login attempts. Log in is locked for {minutes} minutes; "
            "try again later or ask an administrator to unlock the account."
        ),
    )
    response = render(
        request,
        "registration/login.html",
        {"form": form, "next": request.POST.get("next", "")},
        status=429,
    )
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response


def url_length(request) -> int:
    """The URL's length as the client sent it: gunicorn's RAW_URI, or path and query
    re-encoded where no gunicorn stands in front (runserver, the test client)."""
    return len(request.META.get("RAW_URI") or request.get_full_path())


class ApiErrorShapeMiddleware:
    """Outermost on purpose: whatever answers an /api/ request with an error that is not
    the contract's JSON (Django's 404 page for an unknown path, ninja's bare 405, a 400 for
    a bad Host header, a crash page) is rewritten to `{"errors": [{"loc", "message"}]}` with
    the same status and headers that matter."""

    KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")
    NUL_MESSAGE = "A NUL character is not allowed in the URL."

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
            # No route can use a NUL, and the database refuses to store or compare one.
            response = HttpResponseBadRequest(self.NUL_MESSAGE)
        elif request.path.startswith("/api/") and url_length(request) > settings.API_MAX_URL_LENGTH:
            return JsonResponse(
                {
                    "errors": [
                        {
                            "loc": ["url"],
                            "message": f"The URL is longer than {settings.API_MAX_URL_LENGTH} "
                            "characters; send fewer or shorter query parameters.",
                        }
                    ]
                },
                status=414,
            )
        else:
            response = self.get_response(request)
        if (
            response.status_code < 400
            or response.streaming
            or not request.path.startswith("/api/")
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        if response.content == self.NUL_MESSAGE.encode():
            message = self.NUL_MESSAGE
        elif response.status_code == 404:
            message = f"No API route at {request.path}."
        elif response.status_code == 405:
            message = f"Method {request.method} is not allowed here; allowed: {response.get('Allow', '')}."
        else:
            message = response.reason_phrase or "Request refused."
        shaped = JsonResponse(
            {"errors": [{"loc": [], "message": message}]}, status=response.status_code
        )
        for header in self.KEPT_HEADERS:
            if header in response:
                shaped[header] = response[header]
        return shaped


DATABASE_DOWN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Briefly unavailable · Waypoint</title></head>
<body><main><h1>Waypoint is briefly unavailable</h1>
<p>The database cannot be reached right now. Nothing you saved before this is lost; reload the
page in a few seconds.</p></main></body></html>
"""


def server_error(request):
    """handler500: while the database is down (a restart, a failover, a full disk) a short
    503 page with Retry-After instead of the generic server error; that page touches neither
    the database nor the session. The API answers its own 503 JSON (config/api.py)."""
    exception = sys.exc_info()[1]
    if not isinstance(exception, (OperationalError, InterfaceError)):
        return default_server_error(request)
    response = HttpResponse(DATABASE_DOWN_PAGE, status=503)
    response["Retry-After"] = "5"
    return response
