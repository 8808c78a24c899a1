from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from config.api import api
from config.health import healthz
from journeys.audit import journey_audit_page

urlpatterns = [
    path("", RedirectView.as_view(url="/journeys/", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", api.urls),
    path("journeys/<slug:key>/audit/", journey_audit_page, name="journey-audit"),
    path("", include("journeys.urls")),
    path("", include("conversions.urls")),
    path("", include("reporting.urls")),
    path("healthz", healthz, name="healthz"),
]

# A database outage answers 503 with Retry-After rather than a generic 500.
handler500 = "config.security.server_error"
