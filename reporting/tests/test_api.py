import datetime
from decimal import Decimal

import pytest

from conversions.tests.factories import ConversionFactory
from journeys.models import JourneyVersion
from journeys.tests.factories import JourneyFactory, JourneyVersionFactory
from reporting import stats
from reporting.tests.factories import enroll

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 5, 4, 8, 0, tzinfo=datetime.UTC)
D = datetime.timedelta(days=1)
STEPS = {
    "settings": {"reentry": "once", "holdout_percent": 0},
    "triggers": [],
    "exit_when": [],
    "steps": [
        {"key": "welcome", "type": "send_email", "next": "convert"},
        {"key": "convert", "type": "convert", "next": None},
    ],
}


@pytest.fixture
def journey():
    journey = JourneyFactory(key="trial-nurture")
    paid = ConversionFactory(
        journey=journey, key="paid", name="Started paid plan", value=Decimal("49")
    )
    ConversionFactory(journey=journey, key="activation", name="Activated", position=1)
    v1 = JourneyVersionFactory(
        journey=journey,
        number=1,
        definition=STEPS,
        published_at=T0,
        state=JourneyVersion.State.LIVE,
    )
    v2 = JourneyVersionFactory(
        journey=journey,
        number=2,
        definition=STEPS,
        published_at=T0 + 2 * D,
        split_with=v1,
        traffic=50,
        state=JourneyVersion.State.LIVE,
    )
    # v1: 4 of 10 convert; v2: 6 of 10 convert, one of them is worth 100.
    for i in range(10):
        enroll(
            v1,
            T0 + 3 * D,
            path=("welcome", "convert") if i < 4 else ("welcome",),
            awards=((paid, D),) if i < 4 else (),
        )
    for i in range(10):
        value = (Decimal("100"),) if i == 0 else ()
        enroll(
            v2,
            T0 + 3 * D,
            path=("welcome", "convert") if i < 6 else ("welcome",),
            awards=((paid, D, *value),) if i < 6 else (),
        )
    return journey


def test_report_answers_the_contracts_shape(api, journey):
    response = api.get("/api/v1/journeys/trial-nurture/report")
    assert response.status_code == 200
    body = response.json()
    assert body["journey"] == "trial-nurture"
    assert body["conversion"] == {"key": "paid", "name": "Started paid plan"}
    v1, v2 = body["versions"]
    contract_fields = {
        "version",
        "enrolled",
        "converted",
        "rate",
        "ci_low",
        "ci_high",
        "value",
        "diff",
        "p_value",
        "comparison",
    }
    assert contract_fields <= set(v1)
    assert (v1["version"], v1["enrolled"], v1["converted"], v1["rate"]) == (1, 10, 4, 0.4)
    assert (v1["ci_low"], v1["ci_high"]) == pytest.approx(stats.wilson_interval(4, 10))
    assert v1["value"] == 4 * 49
    assert v1["diff"] is None and v1["p_value"] is None
    assert (v2["enrolled"], v2["converted"], v2["rate"]) == (10, 6, 0.6)
    assert v2["value"] == 5 * 49 + 100
    assert v2["diff"] == pytest.approx(0.2)
    assert v2["p_value"] == pytest.approx(stats.two_proportion_p_value(6, 10, 4, 10))
    assert v2["comparison"] == "randomized"
    assert v2["verdict"].startswith("Not enough data yet")
    assert {"version": 2, "step": "convert", "entered": 6, "converted": 6} in body["steps"]
    assert {"version": 1, "step": "welcome", "entered": 10, "converted": 4} in body["steps"]
    assert body["holdout"] is None


def test_report_takes_conversion_and_baseline(api, journey):
    body = api.get("/api/v1/journeys/trial-nurture/report?conversion=activation&baseline=2").json()
    assert body["conversion"]["key"] == "activation"
    v1, v2 = body["versions"]
    assert v2["diff"] is None
    assert v1["converted"] == 0
    assert v1["p_value"] is None  # both at 0%: no test exists


def test_report_filters_by_version_and_date(api, journey):
    body = api.get("/api/v1/journeys/trial-nurture/report?versions=2").json()
    assert [v["version"] for v in body["versions"]] == [2]
    body = api.get(f"/api/v1/journeys/trial-nurture/report?end={(T0 + D).date()}").json()
    assert [v["enrolled"] for v in body["versions"]] == [0, 0]
    assert body["versions"][0]["rate"] is None


@pytest.mark.parametrize(
    "query,status,loc",
    [
        ("?conversion=nope", 400, ["query", "conversion"]),
        ("?baseline=7", 400, ["query", "baseline"]),
        ("?baseline=x", 400, ["query", "baseline"]),
        ("?versions=1,zz", 400, ["query", "versions"]),
        ("?versions=4", 400, ["query", "versions"]),
        ("?start=2026-05-10&end=2026-05-01", 400, ["query", "end"]),
        ("?start=yesterday", 400, ["query", "start"]),
        # Out of range (contract 6.4): year 9999 left no room for the day after the end.
        ("?end=9999-12-31", 400, ["query", "end"]),
        ("?end=9999-01-01", 400, ["query", "end"]),
        ("?start=9999-12-31", 400, ["query", "start"]),
        ("?start=0000-01-01", 400, ["query", "start"]),
        ("?start=0001-01-01&end=9998-12-31&versions=1", 200, None),
    ],
)
def test_bad_parameters_get_a_400_naming_them(api, journey, query, status, loc):
    response = api.get(f"/api/v1/journeys/trial-nurture/report{query}")
    assert response.status_code == status
    if loc is not None:
        assert response.json()["errors"][0]["loc"] == loc


def test_unknown_journey_is_a_404(api, db):
    response = api.get("/api/v1/journeys/nope/report")
    assert response.status_code == 404
    assert response.json()["errors"][0]["loc"] == ["path", "key"]


def test_report_is_described_in_the_openapi_schema(api, db):
    schema = api.get("/api/v1/openapi.json").json()
    report = schema["components"]["schemas"]["VersionOut"]["properties"]
    assert {"version", "enrolled", "converted", "rate", "ci_low", "ci_high", "value", "diff",
            "p_value", "comparison"} <= set(report)  # fmt: skip


def test_report_needs_a_manage_key(client, make_api_client, journey):
    assert client.get("/api/v1/journeys/trial-nurture/report").status_code == 401
    assert make_api_client("ingest").get("/api/v1/journeys/trial-nurture/report").status_code == 403
    assert make_api_client("manage").get("/api/v1/journeys/trial-nurture/report").status_code == 200


def test_holdout_lift_is_reported_when_entrants_were_held_out(api, journey):
    v1 = journey.versions.get(number=1)
    paid = journey.conversions.get(key="paid")
    enroll(v1, T0 + 3 * D, held_out=True, awards=((paid, D),))
    enroll(v1, T0 + 3 * D, held_out=True)
    body = api.get("/api/v1/journeys/trial-nurture/report").json()
    holdout = body["holdout"]
    assert holdout["held_out"] == {"enrolled": 2, "converted": 1, "rate": 0.5}
    assert holdout["treated"]["enrolled"] == 20
    assert holdout["diff"] == pytest.approx(0.5 - 0.5)
    assert body["versions"][0]["held_out"] == {"enrolled": 2, "converted": 1, "rate": 0.5}
    assert body["versions"][0]["enrolled"] == 12


def test_versions_carry_the_always_valid_p_value_and_chance_to_beat(api, journey):
    v1, v2 = api.get("/api/v1/journeys/trial-nurture/report").json()["versions"]
    assert v1["p_value_always_valid"] is None and v1["chance_to_beat"] is None
    assert v2["chance_to_beat"] == pytest.approx(stats.chance_to_beat(6, 10, 4, 10))
    # Ten enrollments a version: before the sequential test's burn-in, so no figure yet.
    assert v2["p_value_always_valid"] is None
