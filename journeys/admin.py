"""Admin for the journeys app. History (events, published versions, visits) is
read-only here: it is what reports count, and editing it would rewrite the past."""

import datetime

from auditlog.admin import LogEntryAdmin
from auditlog.models import LogEntry
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.clickjacking import xframe_options_sameorigin

from journeys.actions.api_keys import create_api_key, revoke_api_key
from journeys.actions.contacts import erase_contact
from journeys.actions.enrollments import retry_enrollments
from journeys.actions.events import retry_events
from journeys.actions.lifecycle import (
    LifecycleRefused,
    pause_journey,
    resume_journey,
    stop_journey,
)
from journeys.actions.messages import retry_messages
from journeys.audit import describe_changes
from journeys.definition import format_duration, parse_duration
from journeys.editing import humanize_duration, parse_human_duration
from journeys.models import (
    ApiKey,
    Contact,
    ContactImport,
    ContactImportRefusal,
    DeliveryEvent,
    EngineLease,
    Enrollment,
    Event,
    Journey,
    JourneyVersion,
    OutboxMessage,
    StepVisit,
)
from journeys.parsers import BodyError, check_json
from journeys.views import preview_message, sandboxed_html


def human_duration(value) -> str:
    """A timedelta as people write it ("1 week", "1 day 12 hours"), not as str() does
    ("7 days, 0:00:00"); for list columns and read-only fields that show a duration."""
    if not value:
        return "—"
    return humanize_duration(format_duration(value))


class HumanDurationField(forms.DurationField):
    """A model DurationField in an admin form: shown as "1 week", typed as "2 days",
    "12 hours" or ISO 8601, where Django's own shows and wants "7 00:00:00"."""

    def prepare_value(self, value):
        if isinstance(value, datetime.timedelta):
            return humanize_duration(format_duration(value))
        return value

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, datetime.timedelta):
            return value
        try:
            return parse_duration(parse_human_duration(str(value)))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


# For every admin whose model has a DurationField (formfield_overrides).
DURATIONS_IN_WORDS = {models.DurationField: {"form_class": HumanDurationField}}


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable and deletable by superusers, never added or changed by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.action(description="Erase personal data of selected contacts", permissions=["change"])
def erase_contacts(modeladmin, request, queryset):
    erased = 0
    for contact in queryset.filter(erased_at__isnull=True):
        erase_contact(contact=contact)
        erased += 1
    modeladmin.message_user(
        request,
        f"{erased} contact(s) erased: email, attributes, events and message contents removed; "
        "their anonymous enrollments and conversions still count in reports.",
    )


class ContactForm(forms.ModelForm):
    # No Meta: the admin builds it with every field of the model, as for any ModelAdmin.

    def clean_attributes(self):
        # The API's rules: what the engine cannot compute with never reaches it.
        attributes = self.cleaned_data["attributes"]
        try:
            check_json(attributes, limit=settings.API_MAX_JSON_DEPTH, loc=["attributes"])
        except BodyError as exc:
            where = ".".join(map(str, exc.loc)) if exc.loc != ["body"] else "attributes"
            raise forms.ValidationError(f"{where}: {exc}") from None
        return attributes


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    form = ContactForm
    list_display = ["external_id", "email", "timezone", "created_at", "updated_at", "erased_at"]
    list_filter = ["erased_at"]
    search_fields = ["external_id", "email"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    readonly_fields = ["created_at", "updated_at"]
    actions = [erase_contacts]


@admin.action(description="Retry failed events", permissions=["retry"])
def retry_failed_events(modeladmin, request, queryset):
    retried = retry_events(
        ids=queryset.filter(status=Event.Status.FAILED).values_list("pk", flat=True)
    )
    modeladmin.message_user(request, f"{retried} failed event(s) will be processed again.")


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = [
        "event_id",
        "name",
        "contact",
        "timestamp",
        "source",
        "status",
        "depth",
        "attempts",
        "error",
    ]
    list_filter = ["status", "source"]
    search_fields = ["event_id", "name", "contact__external_id", "error"]
    date_hierarchy = "timestamp"
    ordering = ["-timestamp"]
    list_select_related = ["contact"]
    actions = [retry_failed_events]

    def has_retry_permission(self, request):
        # Events are history and never changed by hand; putting a failed one back in the
        # queue is the one write, for whoever may change events.
        return request.user.has_perm("journeys.change_event")


class JourneyVersionInline(admin.TabularInline):
    model = JourneyVersion
    fields = ["number", "state", "traffic", "published_at", "retired_at"]
    readonly_fields = fields
    ordering = ["-number"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


def _change_journeys(modeladmin, request, queryset, change, done: str) -> None:
    changed, refused = [], []
    for journey in queryset.order_by("pk"):
        try:
            change(journey)
        except LifecycleRefused as exc:
            refused.append(exc.message)
        else:
            changed.append(journey.key)
    if changed:
        modeladmin.message_user(request, f"{done}: {', '.join(changed)}.")
    for message in refused:
        modeladmin.message_user(request, message, level=messages.WARNING)


@admin.action(
    description="Pause selected journeys (running contacts hold)", permissions=["publish"]
)
def pause_journeys(modeladmin, request, queryset):
    _change_journeys(modeladmin, request, queryset, lambda j: pause_journey(journey=j), "Paused")


@admin.action(description="Resume selected journeys", permissions=["publish"])
def resume_journeys(modeladmin, request, queryset):
    _change_journeys(modeladmin, request, queryset, lambda j: resume_journey(journey=j), "Resumed")


@admin.action(description="Stop selected journeys (running contacts exit)", permissions=["publish"])
def stop_journeys(modeladmin, request, queryset):
    now = timezone.now()
    _change_journeys(
        modeladmin,
        request,
        queryset,
        lambda j: stop_journey(journey=j, now=now),
        "Stopped (running contacts exited; publish a new version to go live again)",
    )


@admin.register(Journey)
class JourneyAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "status", "created_at", "updated_at"]
    actions = [pause_journeys, resume_journeys, stop_journeys]
    list_filter = ["status"]
    search_fields = ["key", "name", "description"]
    date_hierarchy = "created_at"
    readonly_fields = ["status", "created_at", "updated_at", "created_by"]
    inlines = [JourneyVersionInline]

    def has_publish_permission(self, request):
        return request.user.has_perm("journeys.publish_journey")

    def get_deleted_objects(self, objs, request):
        """As Django's, except that rows derived from the journey (report rollups, whose
        admin sets derived_rows) need no delete permission of their own: their admin
        refuses every hand deletion, which would otherwise make a journey undeletable."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        derived = {
            str(model._meta.verbose_name)
            for model, model_admin in self.admin_site._registry.items()
            if getattr(model_admin, "derived_rows", False)
        }
        return deleted, counts, perms_needed - derived, protected

    def get_readonly_fields(self, request, obj=None):
        # The key names the journey in every definition and API path: fixed once created.
        if obj is not None:
            return ["key", *self.readonly_fields]
        return self.readonly_fields


@admin.register(JourneyVersion)
class JourneyVersionAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "journey",
        "number",
        "state",
        "traffic",
        "split_with",
        "published_at",
        "retired_at",
        "created_at",
    ]
    list_filter = ["state"]
    search_fields = ["journey__key", "journey__name"]
    date_hierarchy = "created_at"
    ordering = ["journey", "-number"]
    list_select_related = ["journey", "split_with__journey"]
    # The definition is edited through the editor, the API or import_journey, which validate
    # it.
    readonly_fields = [
        "journey",
        "number",
        "state",
        "definition",
        "traffic",
        "split_with",
        "created_at",
        "created_by",
        "published_at",
        "published_by",
        "retired_at",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.state != JourneyVersion.State.DRAFT:
            return False
        return super().has_change_permission(request, obj)


@admin.action(description="Retry failed enrollments")
def retry_failed_enrollments(modeladmin, request, queryset):
    retried = retry_enrollments(
        enrollments=queryset.filter(state=Enrollment.State.FAILED), now=timezone.now()
    )
    modeladmin.message_user(request, f"{retried} failed enrollment(s) will be retried.")


@admin.register(Enrollment)
class EnrollmentAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "contact",
        "journey",
        "version",
        "state",
        "held_out",
        "current_step",
        "due_at",
        "started_at",
        "ended_at",
        "attempts",
        "last_error",
    ]
    list_filter = ["state", "held_out", "journey"]
    search_fields = ["contact__external_id", "contact__email", "journey__key", "last_error"]
    date_hierarchy = "started_at"
    ordering = ["-started_at"]
    list_select_related = ["contact", "journey", "version__journey"]
    raw_id_fields = ["contact", "journey", "version", "trigger_event"]
    actions = [retry_failed_enrollments]


@admin.register(EngineLease)
class EngineLeaseAdmin(ReadOnlyAdmin):
    """The batches workers hold now. A lease ends by its batch's write or, run out, by the
    next claim (which counts an attempt on each of its enrollments): never by hand."""

    list_display = ["id", "enrollments", "leased_until"]
    ordering = ["leased_until"]

    @admin.display(description="Enrollments")
    def enrollments(self, lease):
        return len(lease.enrollment_ids)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(StepVisit)
class StepVisitAdmin(ReadOnlyAdmin):
    list_display = ["enrollment", "version", "step_key", "outcome", "seq", "entered_at"]
    list_filter = ["outcome"]
    search_fields = ["step_key", "enrollment__contact__external_id"]
    date_hierarchy = "entered_at"
    ordering = ["-enrollment__started_at", "seq"]
    list_select_related = ["enrollment", "version__journey"]


@admin.action(description="Retry selected failed messages", permissions=["change"])
def retry_failed_messages(modeladmin, request, queryset):
    # A message failed with "Outcome unknown" may have arrived: sending it again is a
    # person's decision, never the worker's.
    retried = retry_messages(messages=queryset, now=timezone.now())
    modeladmin.message_user(request, f"{retried} failed message(s) will be sent again.")


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = [
        "channel",
        "recipient",
        "subject",
        "category",
        "status",
        "reason",
        "attempts",
        "due_at",
        "sending_since",
        "sent_at",
        "error",
        "created_at",
    ]
    actions = [retry_failed_messages]
    list_filter = ["channel", "status", "reason", "category"]
    search_fields = ["recipient", "subject", "contact__external_id", "step_key"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    list_select_related = ["contact"]
    raw_id_fields = ["visit", "enrollment", "contact"]
    readonly_fields = ["rendered"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # A message is history: what was (or will be) sent, and how it went. Its change page
        # is view only; the change permission without an object is what the retry action
        # asks for, and the action is the one way to send a failed message again.
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    # For bin/run and anyone checking what went out: the message as its contact gets it,
    # rendered again from its template and the contact's data as they are now.
    @admin.display(description="Rendered")
    def rendered(self, message):
        if message.pk is None or message.channel != OutboxMessage.Channel.EMAIL:
            return "—"
        preview = preview_message(message, message.contact)
        if preview.message is None:
            return preview.problem
        url = reverse("admin:journeys_outboxmessage_rendered", args=[message.pk])
        return format_html(
            '<p><strong>{}</strong></p><pre class="rendered-text">{}</pre>'
            '<iframe sandbox src="{}" title="Rendered HTML" width="640" height="480"></iframe>',
            preview.message.subject,
            preview.message.text,
            url,
        )

    def get_urls(self):
        rendered = self.admin_site.admin_view(xframe_options_sameorigin(self.rendered_html))
        return [
            path("<int:pk>/rendered/", rendered, name="journeys_outboxmessage_rendered"),
            *super().get_urls(),
        ]

    def rendered_html(self, request, pk: int):
        message = OutboxMessage.objects.select_related("contact").filter(pk=pk).first()
        if message is None or not self.has_view_permission(request, message):
            raise PermissionDenied
        return sandboxed_html(preview_message(message, message.contact).message)


@admin.register(DeliveryEvent)
class DeliveryEventAdmin(ReadOnlyAdmin):
    """What email providers reported, as recorded (journeys.actions.delivery)."""

    list_display = ["message", "provider", "event_type", "occurred_at", "received_at"]
    list_filter = ["provider", "event_type"]
    search_fields = ["event_id", "message__provider_message_id", "message__recipient"]
    date_hierarchy = "received_at"
    ordering = ["-received_at"]
    list_select_related = ["message"]
    raw_id_fields = ["message"]


@admin.action(description="Revoke selected keys")
def revoke_keys(modeladmin, request, queryset):
    for key in queryset:
        revoke_api_key(key=key)
    modeladmin.message_user(request, f"{queryset.count()} key(s) revoked.")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "scope",
        "is_active",
        "created_at",
        "created_by",
        "last_used_at",
    ]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    date_hierarchy = "created_at"
    list_select_related = ["created_by"]
    actions = [revoke_keys]
    readonly_fields = ["prefix", "created_at", "created_by", "last_used_at", "revoked_at"]

    @admin.display(boolean=True, description="Active")
    def is_active(self, obj):
        return obj.is_active

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "scope"]
        return ["name", "scope", *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        created, raw_key = create_api_key(name=obj.name, scope=obj.scope, created_by=request.user)
        # The admin's response needs the saved row; the raw key is shown once and never stored.
        obj.pk = created.pk
        obj.prefix, obj.key_hash, obj.created_at = (
            created.prefix,
            created.key_hash,
            created.created_at,
        )
        obj.created_by = created.created_by
        obj._state.adding = False
        messages.success(
            request,
            f"The new API key is {raw_key} — copy it now: it is stored only as a hash and "
            "cannot be shown again.",
        )


@admin.register(ContactImport)
class ContactImportAdmin(ReadOnlyAdmin):
    """CSV imports (journeys.actions.imports); the page /contacts/import/ runs them."""

    list_display = [
        "file_name",
        "status",
        "rows_done",
        "rows_total",
        "created_count",
        "updated_count",
        "refused_count",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["file_name"]


@admin.register(ContactImportRefusal)
class ContactImportRefusalAdmin(ReadOnlyAdmin):
    list_display = ["contact_import", "line", "external_id", "reason"]
    search_fields = ["external_id"]
    list_select_related = ["contact_import"]


admin.site.unregister(LogEntry)


@admin.register(LogEntry)
class AuditLogEntryAdmin(LogEntryAdmin):
    """django-auditlog's pages, with each change said in words (journeys.audit) instead of
    raw field values and reverse relations."""

    @admin.display(description="Changes")
    def msg_short(self, obj):
        changes = describe_changes(obj)
        text = "; ".join(changes[:3]) + (
            f"; and {len(changes) - 3} more" if len(changes) > 3 else ""
        )
        return text or "—"

    @admin.display(description="Changes")
    def msg(self, obj):
        changes = describe_changes(obj)
        if not changes:
            return "—"
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((c,) for c in changes))
        )
