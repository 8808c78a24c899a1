from django.contrib import admin
from django.utils import timezone

from journeys.selectors import engine_status
from webhooks.views import warn_of_disabled_endpoints


class WaypointAdminSite(admin.AdminSite):
    """Django's admin with the engine's state on its index page, for operators."""

    site_header = "Waypoint administration"
    site_title = "Waypoint admin"

    def index(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "engine": engine_status(now=timezone.now())}
        warn_of_disabled_endpoints(request)
        return super().index(request, extra_context)
