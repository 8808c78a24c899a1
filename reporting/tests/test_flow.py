"""The report over facts written by the real engine: a journey made and published through
the API, events in, `run_due`, then the report call."""

import pytest
from django.core.management import call_command

from journeys.tests.contract_example import contract_example
from reporting import stats

pytestmark = pytest.mark.django_db


def post_events(api, events):
    response = api.post("/api/v1/events", {"events": events})
    assert response.status_code == 202, response.content


def test_report_counts_what_the_engine_did(api):
    definition = contract_example(settings={"reentry": "once", "holdout_percent": 0})
    assert api.post("/api/v1/journeys", definition).status_code == 201
    assert api.post("/api/v1/journeys/trial-nurture/versions/1/publish").status_code == 200
    for n in range(6):
        api.put(
            f"/api/v1/contacts/c{n}", {"email": f"c{n}@example.com", "attributes": {"plan": "pro"}}
        )
    post_events(
        api,
        [{"id": f"t{n}", "contact": f"c{n}", "name": "trial_started", "properties": {"plan": "pro"}}
         for n in range(6)],
    )  # fmt: skip
    call_command("run_due")
    # Two of them start paying: the event-based conversion "paid" is awarded to them.
    post_events(
        api,
        [{"id": f"s{n}", "contact": f"c{n}", "name": "subscription_started",
          "properties": {"amount": 49}} for n in range(2)],
    )  # fmt: skip
    call_command("run_due")

    response = api.get("/api/v1/journeys/trial-nurture/report?conversion=paid")
    assert response.status_code == 200, response.content
    body = response.json()
    (v1,) = body["versions"]
    assert (v1["version"], v1["enrolled"], v1["converted"]) == (1, 6, 2)
    assert v1["rate"] == pytest.approx(2 / 6)
    assert (v1["ci_low"], v1["ci_high"]) == pytest.approx(stats.wilson_interval(2, 6))
    assert v1["value"] == 98
    assert v1["diff"] is None and v1["p_value"] is None
    steps = {s["step"]: s for s in body["steps"]}
    assert steps["welcome"]["entered"] == 6
    assert steps["welcome"]["converted"] == 2

    # A second version on a 50/50 split is compared as randomized.
    v2_definition = contract_example(settings={"reentry": "once", "holdout_percent": 0})
    assert api.post("/api/v1/journeys/trial-nurture/versions", v2_definition).status_code == 201
    published = api.post("/api/v1/journeys/trial-nurture/versions/2/publish", {"traffic": 50})
    assert published.status_code == 200, published.content
    body = api.get("/api/v1/journeys/trial-nurture/report").json()
    assert [v["version"] for v in body["versions"]] == [1, 2]
    assert body["versions"][1]["comparison"] == "randomized"
