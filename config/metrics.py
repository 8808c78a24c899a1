"""Prometheus metrics for operators at `/metrics` (docs/integrations.md#metrics).

prometheus-client directly rather than django-prometheus: what operators watch here is the
database (the queues of record, the totals of facts, the report's rollup watermarks), read
by one collector at scrape time, so every web and worker process agrees on it and nothing
is lost when a process restarts. django-prometheus would add per-process counters and patch
the database backends to count queries, neither of which is needed. Only request latency is
measured in the process, by `RequestLatencyMiddleware`; under gunicorn with several workers
set PROMETHEUS_MULTIPROC_DIR (an empty directory, cleared at start) and every worker's
histogram is added up at scrape time.

Access: a bearer token (`METRICS_TOKEN`); without one set the endpoint answers 404.
"""

import hmac
import os
import time
from datetime import datetime

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.db.models import Case, Count, Value, When
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from conversions.models import ConversionAward
from journeys.models import Enrollment, Event, OutboxMessage, StepVisit
from journeys.selectors import due_work_ages
from reporting.rollups import FACT_TABLES, rolled_up
from webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

REQUEST_LATENCY = Histogram(
    "waypoint_http_request_duration_seconds",
    "Time to answer a request, by route name.",
    ["route", "method", "status"],
    registry=None,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RequestLatencyMiddleware:
    """Times every request, labelled by its URL pattern's name (never the raw path, whose
    ids would make a series per contact)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.view_name or match.route) if match else "unmatched"
        REQUEST_LATENCY.labels(route, request.method, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response


def _message_reason():
    """A failed message's reason, in a handful of values (the error text is free)."""
    return Case(
        When(error__startswith="Template error", then=Value("template")),
        When(error__startswith="The contact has no", then=Value("no_address")),
        When(error__startswith="Outcome unknown", then=Value("outcome_unknown")),
        When(error__startswith="Gave up", then=Value("provider")),
        When(error__startswith="Could not prepare", then=Value("prepare")),
        default=Value("other"),
    )


class DatabaseCollector:
    """The queues, totals and lags, read from the database at each scrape."""

    def __init__(self, *, now: datetime):
        self.now = now

    def collect(self):
        now = self.now
        depth = GaugeMetricFamily(
            "waypoint_queue_depth", "Items due now in each queue of record.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "waypoint_queue_oldest_due_seconds",
            "How long the oldest due item of each queue has waited (0 when none).",
            labels=["queue"],
        )
        webhooks_due = WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, due_at__lte=now, endpoint__enabled=True
        )
        counts = {
            "events": Event.objects.filter(status=Event.Status.PENDING).count(),
            "enrollments": Enrollment.objects.filter(
                state=Enrollment.State.ACTIVE, due_at__lte=now
            ).count(),
            "messages": OutboxMessage.objects.filter(
                status=OutboxMessage.Status.PENDING, due_at__lte=now
            ).count(),
            "webhooks": webhooks_due.count()
            + WebhookEvent.objects.filter(fanned_out=False).count(),
        }
        ages = due_work_ages(now=now)
        ages["messages"] = ages.pop("outbox")
        since = webhooks_due.order_by("due_at").values_list("due_at", flat=True).first()
        ages["webhooks"] = None if since is None else max((now - since).total_seconds(), 0.0)
        for queue, count in counts.items():
            depth.add_metric([queue], count)
            oldest.add_metric([queue], ages[queue] or 0.0)
        yield depth
        yield oldest

        events = CounterMetricFamily(
            "waypoint_events_ingested", "Events stored, by source.", labels=["source"]
        )
        # Every known label value, zero included, so a series exists before its first fact.
        found = dict(Event.objects.values_list("source").annotate(n=Count("id")))
        for source in Event.Source.values:
            events.add_metric([source], found.get(source, 0))
        yield events
        yield CounterMetricFamily(
            "waypoint_steps_advanced",
            "Steps entered by enrollments.",
            value=StepVisit.objects.count(),
        )
        messages = CounterMetricFamily(
            "waypoint_messages",
            "Outbox messages by channel and status.",
            labels=["channel", "status"],
        )
        found = {
            (channel, status): count
            for channel, status, count in OutboxMessage.objects.values_list(
                "channel", "status"
            ).annotate(n=Count("id"))
        }
        for channel in OutboxMessage.Channel.values:
            for status in OutboxMessage.Status.values:
                messages.add_metric([channel, status], found.get((channel, status), 0))

        yield messages
        yield CounterMetricFamily(
            "waypoint_conversion_awards",
            "Conversions awarded.",
            value=ConversionAward.objects.count(),
        )
        deliveries = CounterMetricFamily(
            "waypoint_webhook_deliveries", "Webhook deliveries by status.", labels=["status"]
        )
        found = dict(WebhookDelivery.objects.values_list("status").annotate(n=Count("id")))
        for status in WebhookDelivery.Status.values:
            deliveries.add_metric([status], found.get(status, 0))
        yield deliveries
        yield GaugeMetricFamily(
            "waypoint_webhook_endpoints_disabled",
            "Webhook endpoints disabled after a day of failures.",
            value=WebhookEndpoint.objects.filter(enabled=False).count(),
        )

        failures = CounterMetricFamily(
            "waypoint_failures", "Failed work by queue and reason.", labels=["queue", "reason"]
        )
        failures.add_metric(
            ["events", "processing"], Event.objects.filter(status=Event.Status.FAILED).count()
        )
        failures.add_metric(
            ["enrollments", "engine"],
            Enrollment.objects.filter(state=Enrollment.State.FAILED).count(),
        )
        for reason, count in (
            OutboxMessage.objects.filter(status=OutboxMessage.Status.FAILED)
            .annotate(failure=_message_reason())
            .values_list("failure")
            .annotate(n=Count("id"))
        ):
            failures.add_metric(["messages", reason], count)
        failures.add_metric(
            ["webhooks", "gave_up"],
            WebhookDelivery.objects.filter(status=WebhookDelivery.Status.FAILED).count(),
        )
        yield failures

        lag = GaugeMetricFamily(
            "waypoint_report_rollup_lag_rows",
            "Facts stored but not yet in the report's rollups, by fact table.",
            labels=["fact"],
        )
        marks = rolled_up()
        with connection.cursor() as cursor:
            for fact, table in FACT_TABLES.items():
                cursor.execute(f"SELECT MAX(id) FROM {connection.ops.quote_name(table)}")
                highest = cursor.fetchone()[0] or 0
                lag.add_metric([fact], max(highest - marks.get(fact, 0), 0))
        yield lag


def registry(*, now: datetime) -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    found.register(DatabaseCollector(now=now))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(found)
    else:
        found.register(REQUEST_LATENCY)
    return found


@login_not_required
@require_GET
def metrics(request):
    """The Prometheus text format, for a scraper holding METRICS_TOKEN."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("Metrics are off: set METRICS_TOKEN.")
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        response = HttpResponse("A valid metrics token is required.\n", status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(
        generate_latest(registry(now=timezone.now())), content_type=CONTENT_TYPE_LATEST
    )
