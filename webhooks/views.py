"""The Webhooks page: endpoints (account-wide, so not under a journey) and their recent
deliveries, with "Send a test event". Like every page, Viewers read it (no secret is ever
on it) and Editors act on it: a test event changes nothing but the receiver's log.
Endpoints themselves are made through the API, which shows the secret once."""

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from webhooks.actions import send_test_event
from webhooks.models import WebhookDelivery, WebhookEndpoint

RECENT_DELIVERIES = 50


@permission_required("journeys.view_journey", raise_exception=True)
def webhook_list(request):
    endpoints = WebhookEndpoint.objects.order_by("id")
    deliveries = WebhookDelivery.objects.select_related("event", "endpoint").order_by("-id")[
        :RECENT_DELIVERIES
    ]
    return render(
        request,
        "webhooks/list.html",
        {
            "endpoints": endpoints,
            "deliveries": deliveries,
            "nav": "webhooks",
            "can_test": request.user.has_perm("journeys.change_journey"),
        },
    )


@require_POST
@permission_required("journeys.change_journey", raise_exception=True)
def send_test(request, endpoint_id: int):
    endpoint = get_object_or_404(WebhookEndpoint, pk=endpoint_id)
    send_test_event(endpoint=endpoint, now=timezone.now())
    messages.success(request, f"A test event is on its way to {endpoint.url}.")
    return redirect("webhooks:list")


def warn_of_disabled_endpoints(request) -> None:
    """The admin's notice (on its index and the endpoints' list) of endpoints that a day
    of failed deliveries disabled."""
    disabled = WebhookEndpoint.objects.filter(enabled=False).count()
    if disabled:
        messages.warning(
            request,
            f"{disabled} webhook endpoint(s) disabled after a day of failed deliveries: in "
            "Webhook endpoints, filter by Enabled: No, fix the receiver, then use “Enable "
            "selected endpoints”.",
        )
