from django.urls import path

from reporting import views

app_name = "reporting"

urlpatterns = [
    path("journeys/<slug:key>/report/", views.report, name="report"),
    path("journeys/<slug:key>/report.csv", views.report_csv, name="report_csv"),
    path(
        "journeys/<slug:key>/report/panels/<slug:panel>/",
        views.report_panel,
        name="report_panel",
    ),
    path("journeys/<slug:key>/report/contacts/", views.path_contacts, name="path_contacts"),
]
