from django.urls import path

from conversions import views

app_name = "conversions"

urlpatterns = [
    path("journeys/<slug:key>/goals-conversions/", views.panel, name="panel"),
    path("journeys/<slug:key>/conversions/", views.conversion_save, name="conversion-add"),
    path(
        "journeys/<slug:key>/conversions/<slug:conversion_key>/",
        views.conversion_save,
        name="conversion",
    ),
    path(
        "journeys/<slug:key>/conversions/<slug:item_key>/archive/",
        views.archive,
        {"kind": "conversion"},
        name="conversion-archive",
    ),
    path("journeys/<slug:key>/goals/", views.goal_save, name="goal-add"),
    path("journeys/<slug:key>/goals/<slug:goal_key>/", views.goal_save, name="goal"),
    path(
        "journeys/<slug:key>/goals/<slug:item_key>/archive/",
        views.archive,
        {"kind": "goal"},
        name="goal-archive",
    ),
]
