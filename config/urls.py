from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.generic import RedirectView

from config.api import api, segment_api
from config.health import healthz
from journeys.audit import journey_audit_page


def _login_not_required(urls):
    """The API's URLs, exempt from LoginRequiredMiddleware: each route authenticates its
    caller by bearer key and answers 401 in JSON (journeys.auth.KeyAuth), and the schema and
    its docs are public, so none of it may redirect to the login page."""
    patterns, _, _ = urls
    for pattern in patterns:
        login_not_required(pattern.callback)
    return urls


# Every page needs a login (LoginRequiredMiddleware) except the ones marked here and in
# their views (the login page, /healthz); the admin sends to its own login page.
urlpatterns = [
    path("", login_not_required(RedirectView.as_view(url="/journeys/", permanent=False))),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", login_not_required(auth_views.LogoutView.as_view()), name="logout"),
    path("api/v1/", _login_not_required(api.urls)),
    path("api/segment/", _login_not_required(segment_api.urls)),
    path("journeys/<slug:key>/audit/", journey_audit_page, name="journey-audit"),
    path("", include("journeys.urls")),
    path("", include("conversions.urls")),
    path("", include("reporting.urls")),
    path("healthz", healthz, name="healthz"),
]

# A database outage answers 503 with Retry-After rather than a generic 500.
handler500 = "config.security.server_error"
