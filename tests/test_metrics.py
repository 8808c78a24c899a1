"""`/metrics` for operators: behind METRICS_TOKEN, the queues read from the database, and
every metric the Grafana dashboard in docs/ queries actually exposed."""

import datetime
import json
import re
from pathlib import Path

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from conversions.tests.factories import ConversionFactory
from journeys.actions.events import ingest_events
from journeys.tests.factories import EnrollmentFactory

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
TOKEN = "scrape-me"
# PromQL words that are not metric names.
PROMQL = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "without", "avg", "max"}

pytestmark = pytest.mark.django_db


@pytest.fixture
def scrape(client, settings):
    settings.METRICS_TOKEN = TOKEN

    def get():
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.content
        return {
            sample.name: sample
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples
        }, response.content.decode()

    return get


def test_metrics_are_404_without_a_token_configured(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


def test_metrics_need_the_token(client, settings):
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"] == "Bearer"


def test_queue_depth_and_oldest_due_age_come_from_the_database(scrape):
    now = timezone.now()
    ConversionFactory(event_name="x")  # events nothing listens to are never queued
    ingest_events(events=[{"id": f"e{i}", "contact": "c", "name": "x"} for i in range(3)])
    EnrollmentFactory(due_at=now - datetime.timedelta(minutes=10))
    _, text = scrape()
    assert 'waypoint_queue_depth{queue="events"} 3.0' in text
    assert 'waypoint_queue_depth{queue="enrollments"} 1.0' in text
    assert 'waypoint_queue_depth{queue="webhooks"} 0.0' in text
    age = re.search(r'waypoint_queue_oldest_due_seconds\{queue="enrollments"\} (\S+)', text)
    assert 600 <= float(age[1]) < 700
    assert 'waypoint_events_ingested_total{source="api"} 3.0' in text


def test_request_latency_is_measured_by_route_name(scrape, client):
    def healthz_count():
        _, text = scrape()
        found = re.search(
            r'waypoint_http_request_duration_seconds_count\{method="GET",route="healthz",'
            r'status="200"\} (\S+)',
            text,
        )
        return float(found[1]) if found else 0.0

    # The histogram is the process's: count this test's requests, not the run's.
    before = healthz_count()
    client.get("/healthz")
    client.get("/healthz")
    assert healthz_count() == before + 2


def test_every_metric_the_grafana_dashboard_queries_is_exposed(scrape):
    # On an empty database: every series exists before its first fact.
    exposed, _ = scrape()
    dashboard = json.loads(DASHBOARD.read_text())
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            # Leave out label matchers, ranges, strings and the labels of by (...).
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\bby \([^)]*\)", "", target["expr"])
            queried |= set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL
    assert queried, "the dashboard queries nothing"
    names = set(exposed)
    # A histogram's samples are its _bucket, _count and _sum; a counter's its _total.
    missing = {name for name in queried if name not in names}
    assert not missing, f"the dashboard queries metrics the endpoint does not expose: {missing}"
