import functools
import logging

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailError, AnymailWebhookValidationFailure
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponseBadRequest, HttpResponseForbidden
from django.urls import URLPattern, include, path
from django.views.generic import RedirectView

from config.api import api, segment_api
from config.health import healthz
from config.metrics import metrics
from journeys.audit import journey_audit_page


def _login_not_required(urls):
    """The API's URLs, exempt from LoginRequiredMiddleware: each route authenticates its
    caller by bearer key and answers 401 in JSON (journeys.auth.KeyAuth), and the schema and
    its docs are public, so none of it may redirect to the login page."""
    patterns, _, _ = urls
    for pattern in patterns:
        login_not_required(pattern.callback)
    return urls


logger = logging.getLogger(__name__)


def _forbidden_when_unverified(view):
    """anymail answers a webhook whose signature or basic auth does not verify with 400
    (Django's SuspiciousOperation); issue 13 asks for 403, which also tells a provider's
    dashboard that the credentials, not the payload, are wrong. Nothing is recorded: the
    view raises before it sends any signal. A body anymail cannot parse is a 400."""

    @functools.wraps(view)
    def guarded(request, *args, **kwargs):
        if getattr(view.view_class, "warn_if_no_basic_auth", False) and not _webhook_secret():
            # For providers that do not sign (Postmark...), basic auth is the only check:
            # without it anyone could bounce or unsubscribe our contacts. anymail only warns.
            return HttpResponseForbidden("Set ANYMAIL_WEBHOOK_SECRET to receive this webhook.")
        try:
            return view(request, *args, **kwargs)
        except AnymailWebhookValidationFailure as error:
            logger.warning("Email webhook refused (%s): %s", request.path, error)
            return HttpResponseForbidden("Webhook signature or credentials do not verify.")
        except (ValueError, TypeError, KeyError, AttributeError, AnymailError):
            # A body that is not the provider's JSON (anymail's parsers assume it is): a
            # 400, not a 500 that the provider would retry for days. Logged with its
            # traceback, in case it was the provider's format that changed.
            logger.warning("Email webhook unreadable (%s)", request.path, exc_info=True)
            return HttpResponseBadRequest("The webhook's body is not what this provider sends.")

    return guarded


def _webhook_secret():
    return getattr(settings, "ANYMAIL", {}).get("WEBHOOK_SECRET") or getattr(
        settings, "ANYMAIL_WEBHOOK_SECRET", None
    )


# One tracking endpoint per provider, /webhooks/email/<provider>/tracking/, each with the
# provider's own checks (anymail's views: they are csrf-exempt and need no login).
EMAIL_WEBHOOKS = [
    path(str(p.pattern), _forbidden_when_unverified(p.callback), name=p.name)
    for p in anymail_urls.urlpatterns
    # sendinblue/ is anymail's deprecated alias of brevo/.
    if isinstance(p, URLPattern)
    and str(p.pattern).endswith("/tracking/")
    and not str(p.pattern).startswith("sendinblue/")
]

# Every page needs a login (LoginRequiredMiddleware) except the ones marked here and in
# their views (the login page, /healthz); the admin sends to its own login page.
urlpatterns = [
    path("", login_not_required(RedirectView.as_view(url="/journeys/", permanent=False))),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", login_not_required(auth_views.LogoutView.as_view()), name="logout"),
    path("api/v1/", _login_not_required(api.urls)),
    path("webhooks/email/", include((EMAIL_WEBHOOKS, "anymail"))),
    path("", include("journeys.click_urls")),
    path("api/segment/", _login_not_required(segment_api.urls)),
    path("journeys/<slug:key>/audit/", journey_audit_page, name="journey-audit"),
    path("", include("journeys.urls")),
    path("", include("conversions.urls")),
    path("", include("reporting.urls")),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("webhooks/", include("webhooks.urls")),
]

# A database outage answers 503 with Retry-After rather than a generic 500.
handler500 = "config.security.server_error"
