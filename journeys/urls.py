from django.urls import path

from journeys import views

app_name = "journeys"

urlpatterns = [
    path("journeys/", views.journey_list, name="list"),
    path("journeys/new/", views.journey_create, name="create"),
    path("journeys/<slug:key>/", views.journey_editor, name="editor"),
    path("journeys/<slug:key>/versions/<int:number>/", views.version_detail, name="version"),
    path(
        "journeys/<slug:key>/versions/<int:number>/publish/",
        views.publish,
        name="version-publish",
    ),
    path("journeys/<slug:key>/steps/add/", views.step_add, name="step-add"),
    path("journeys/<slug:key>/steps/<slug:step_key>/", views.step_detail, name="step"),
    path(
        "journeys/<slug:key>/steps/<slug:step_key>/delete/",
        views.step_delete,
        name="step-delete",
    ),
    path(
        "journeys/<slug:key>/steps/<slug:step_key>/preview/",
        views.step_preview,
        name="step-preview",
    ),
    path(
        "journeys/<slug:key>/steps/<slug:step_key>/preview/html/",
        views.step_preview_html,
        name="step-preview-html",
    ),
    path(
        "journeys/<slug:key>/steps/<slug:step_key>/test-send/",
        views.step_test_send,
        name="step-test-send",
    ),
    path("journeys/<slug:key>/settings/", views.settings_update, name="settings"),
    path(
        "journeys/<slug:key>/triggers/",
        views.rule_add,
        {"section": "triggers"},
        name="trigger-add",
    ),
    path(
        "journeys/<slug:key>/triggers/<int:index>/",
        views.rule_edit,
        {"section": "triggers"},
        name="trigger-edit",
    ),
    path(
        "journeys/<slug:key>/triggers/<int:index>/delete/",
        views.rule_delete,
        {"section": "triggers"},
        name="trigger-delete",
    ),
    path(
        "journeys/<slug:key>/exit-rules/",
        views.rule_add,
        {"section": "exit_when"},
        name="exit-add",
    ),
    path(
        "journeys/<slug:key>/exit-rules/<int:index>/",
        views.rule_edit,
        {"section": "exit_when"},
        name="exit-edit",
    ),
    path(
        "journeys/<slug:key>/exit-rules/<int:index>/delete/",
        views.rule_delete,
        {"section": "exit_when"},
        name="exit-delete",
    ),
    path("journeys/<slug:key>/publish/", views.publish, name="publish"),
    path("journeys/<slug:key>/lifecycle/<slug:change>/", views.lifecycle, name="lifecycle"),
    path("journeys/<slug:key>/draft/discard/", views.draft_discard, name="draft-discard"),
    path("journeys/<slug:key>/publish/review/", views.publish_review, name="draft-review"),
    path("journeys/<slug:key>/duplicate/", views.journey_duplicate, name="duplicate"),
    path("contacts/", views.contact_list, name="contacts"),
    # Before contacts/<path:external_id>/, which would take these paths as contact ids.
    path("contacts/import/", views.contact_import, name="contact-import"),
    path("contacts/import/<int:pk>/", views.contact_import_detail, name="import"),
    path("contacts/import/<int:pk>/start/", views.contact_import_start, name="import-start"),
    path(
        "contacts/import/<int:pk>/refused.csv",
        views.contact_import_report,
        name="import-report",
    ),
    path(
        "contacts/<path:external_id>/subscriptions/",
        views.contact_subscriptions,
        name="contact-subscriptions",
    ),
    path("contacts/<path:external_id>/", views.contact_detail, name="contact"),
    path("u/<str:token>", views.unsubscribe, name="unsubscribe"),
]
