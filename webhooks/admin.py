from django.contrib import admin
from django.utils import timezone

from webhooks.actions import enable_endpoints, send_test_event
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.views import warn_of_disabled_endpoints


@admin.action(description="Enable selected endpoints (their pending deliveries go at once)")
def enable_selected(modeladmin, request, queryset):
    count = enable_endpoints(endpoints=queryset, now=timezone.now())
    modeladmin.message_user(request, f"{count} endpoint(s) enabled.")


@admin.action(description="Send a test event to selected endpoints")
def send_test(modeladmin, request, queryset):
    for endpoint in queryset:
        send_test_event(endpoint=endpoint, now=timezone.now())
    modeladmin.message_user(request, f"{queryset.count()} test event(s) queued.")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    # The secret is never shown again after the API answered with it.
    exclude = ["secret"]
    list_display = ["url", "enabled", "failing_since", "disabled_at", "created_at"]
    list_filter = ["enabled"]
    readonly_fields = ["failing_since", "disabled_at", "disabled_reason", "created_at"]
    actions = [enable_selected, send_test]

    def has_add_permission(self, request):
        return False  # Created through the API, which shows the secret once.

    def changelist_view(self, request, extra_context=None):
        warn_of_disabled_endpoints(request)
        return super().changelist_view(request, extra_context)


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["attempted_at", "status_code", "duration_ms", "error"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "event",
        "endpoint",
        "status",
        "attempts",
        "due_at",
        "delivered_at",
        "last_error",
    ]
    list_filter = ["status", "endpoint"]
    list_select_related = ["event", "endpoint"]
    ordering = ["-id"]
    readonly_fields = [
        "event",
        "endpoint",
        "status",
        "attempts",
        "due_at",
        "leased_until",
        "delivered_at",
        "last_error",
        "created_at",
    ]
    inlines = [AttemptInline]

    def has_add_permission(self, request):
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ["msg_id", "event_type", "created_at", "fanned_out"]
    list_filter = ["event_type", "fanned_out"]
    search_fields = ["msg_id"]
    readonly_fields = ["msg_id", "event_type", "payload", "created_at", "fanned_out", "endpoint"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(admin.ModelAdmin):
    list_display = ["delivery", "attempted_at", "status_code", "duration_ms", "error"]
    list_select_related = ["delivery"]
    ordering = ["-id"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
