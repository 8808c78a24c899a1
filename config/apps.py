from django.contrib.admin.apps import AdminConfig


class WaypointAdminConfig(AdminConfig):
    default_site = "config.admin.WaypointAdminSite"
