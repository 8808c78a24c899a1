"""docs/contract.md §2, `GET /api/v1/journeys/{key}/report`: the keys of the answer, rates
with Wilson intervals and pooled z-test p-values checked by hand, the baseline (default: the
lowest version), `randomized` against `sequential` comparisons, the step funnel, lift over
the holdout, and unknown parameters refused by name."""

import datetime
import math

import pytest
from django.test import Client

from tests.contract.public_surface import (
    assert_error_shape,
    contact,
    definition,
    event,
    live,
    publish,
    run_due,
    send,
)
from tests.contract.sample_journeys import REPORT_CONVERSIONS, REPORT_STEPS, enroll_and_convert

pytestmark = pytest.mark.django_db


def wilson(converted, n, z=1.959963984540054):
    p = converted / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return (centre - margin) / denominator, (centre + margin) / denominator


def pooled_z_p_value(c1, n1, c0, n0):
    pooled = (c1 + c0) / (n1 + n0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    z = (c1 / n1 - c0 / n0) / se
    return math.erfc(abs(z) / math.sqrt(2))


def test_report_has_contract_keys_and_hand_checked_statistics(api, clock):
    data = definition("rep", REPORT_STEPS, conversions=REPORT_CONVERSIONS)
    live(api, data)
    enroll_and_convert(api, "a", 10, 3, 20)
    clock.shift(datetime.timedelta(days=1))
    data["steps"][1]["duration"] = "P9D"
    api.post("/api/v1/journeys/rep/versions", data)
    publish(api, "rep", 2)
    enroll_and_convert(api, "b", 8, 6, 5)

    response = api.get("/api/v1/journeys/rep/report?conversion=paid&baseline=1")
    assert response.status_code == 200
    report = response.json()
    assert {"journey", "conversion", "versions", "steps"} <= set(report)
    assert report["journey"] == "rep"
    assert report["conversion"] == {"key": "paid", "name": "Started paid plan"}
    version_keys = {
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
    for row in report["versions"]:
        assert version_keys <= set(row)
    v1, v2 = report["versions"]
    assert (v1["version"], v1["enrolled"], v1["converted"]) == (1, 10, 3)
    assert (v2["version"], v2["enrolled"], v2["converted"]) == (2, 8, 6)
    assert v1["rate"] == pytest.approx(0.3)
    assert v2["rate"] == pytest.approx(0.75)
    assert (v1["ci_low"], v1["ci_high"]) == pytest.approx(wilson(3, 10), abs=1e-9)
    assert (v2["ci_low"], v2["ci_high"]) == pytest.approx(wilson(6, 8), abs=1e-9)
    assert v1["ci_low"] == pytest.approx(0.1078, abs=1e-4)
    assert v1["ci_high"] == pytest.approx(0.6032, abs=1e-4)
    assert v1["value"] == pytest.approx(60.0)
    assert v2["value"] == pytest.approx(30.0)
    assert (v1["diff"], v1["p_value"]) == (None, None)
    assert v2["diff"] == pytest.approx(0.45)
    assert v2["p_value"] == pytest.approx(pooled_z_p_value(6, 8, 3, 10), abs=1e-9)
    assert v2["p_value"] == pytest.approx(0.0578, abs=1e-4)
    assert v2["comparison"] == "sequential"

    steps = {(s["version"], s["step"]): s for s in report["steps"]}
    for s in report["steps"]:
        assert set(s) == {"version", "step", "entered", "converted"}
    assert (steps[(1, "hello")]["entered"], steps[(1, "hello")]["converted"]) == (10, 3)
    assert (steps[(2, "pause")]["entered"], steps[(2, "pause")]["converted"]) == (8, 6)

    # Baseline 2: the other row carries the comparison, mirrored.
    swapped = api.get("/api/v1/journeys/rep/report?conversion=paid&baseline=2").json()
    s1, s2 = swapped["versions"]
    assert s1["diff"] == pytest.approx(-0.45)
    assert s1["p_value"] == pytest.approx(v2["p_value"])
    assert (s2["diff"], s2["p_value"]) == (None, None)


def test_report_defaults_to_the_lowest_version_and_marks_a_random_split(api, clock):
    data = definition(
        "ab",
        REPORT_STEPS,
        conversions=REPORT_CONVERSIONS,
        settings={"reentry": "once", "holdout_percent": 0},
    )
    live(api, data)
    api.post("/api/v1/journeys/ab/versions", data)
    publish(api, "ab", 2, traffic=50)
    enroll_and_convert(api, "c", 40, 10, 1)
    report = api.get("/api/v1/journeys/ab/report?conversion=paid").json()
    v1, v2 = report["versions"]
    # No baseline given: version 1, the lowest, is the baseline row.
    assert (v1["version"], v1["diff"], v1["p_value"]) == (1, None, None)
    assert v2["comparison"] == "randomized"
    c1, e1, c2, e2 = v1["converted"], v1["enrolled"], v2["converted"], v2["enrolled"]
    assert e1 + e2 == 40 and c1 + c2 == 10
    assert v2["diff"] == pytest.approx(c2 / e2 - c1 / e1)
    if 0 < c1 + c2 < e1 + e2:
        assert v2["p_value"] == pytest.approx(pooled_z_p_value(c2, e2, c1, e1), abs=1e-9)

    # Version 2 wins and is published alone: the two still took enrollments side by side.
    clock.shift(datetime.timedelta(days=1))
    publish(api, "ab", 2)
    after = api.get("/api/v1/journeys/ab/report?conversion=paid").json()
    assert [v["comparison"] for v in after["versions"]] == [None, "randomized"]
    assert [(v["enrolled"], v["converted"]) for v in after["versions"]] == [(e1, c1), (e2, c2)]


@pytest.mark.parametrize(
    ("query", "loc_part"),
    [
        ("conversion=nope", "conversion"),
        ("conversion=paid&baseline=7", "baseline"),
        ("conversion=paid&baseline=x", "baseline"),
    ],
)
def test_report_refuses_unknown_parameters_by_name(api, query, loc_part):
    live(api, definition("r", REPORT_STEPS, conversions=REPORT_CONVERSIONS))
    errors = assert_error_shape(api.get(f"/api/v1/journeys/r/report?{query}"), 400)
    assert any(loc_part in error["loc"] for error in errors)


def test_report_counts_a_converted_enrollment_once_and_sums_every_value(api, clock):
    conversions = [
        {
            "key": "buy",
            "name": "Buy",
            "counting": "every_time",
            "event": {"event": "purchase", "value_property": "amount"},
        }
    ]
    live(api, definition("sum", REPORT_STEPS, conversions=conversions))
    send(api, event("ann", "signed_up"), event("bob", "signed_up"))
    run_due()
    send(
        api,
        event("ann", "purchase", properties={"amount": 10}),
        event("ann", "purchase", properties={"amount": 15}),
    )
    run_due()
    (row,) = api.get("/api/v1/journeys/sum/report").json()["versions"]
    assert (row["enrolled"], row["converted"], row["rate"], row["value"]) == (2, 1, 0.5, 25.0)


def test_report_steps_list_every_step_of_each_version_even_unentered(api, clock):
    steps = [
        {
            "key": "is-pro",
            "type": "condition",
            "if": {"attribute": "plan", "op": "eq", "value": "pro"},
            "then": "pro-mail",
            "else": None,
        },
        {"key": "pro-mail", "type": "send_email", "subject": "s", "body": "b", "next": None},
    ]
    live(api, definition("funnel", steps, conversions=REPORT_CONVERSIONS))
    send(api, event("ann", "signed_up"))
    run_due()
    report = api.get("/api/v1/journeys/funnel/report").json()
    assert [(s["step"], s["entered"], s["converted"]) for s in report["steps"]] == [
        ("is-pro", 1, 0),
        ("pro-mail", 0, 0),
    ]


def test_reports_show_lift_over_the_holdout(api, superuser, clock):
    settings = {"reentry": "once", "holdout_percent": 50}
    live(api, definition("lift", REPORT_STEPS, conversions=REPORT_CONVERSIONS, settings=settings))
    enroll_and_convert(api, "h", 40, 20, 1)
    people = [contact(api, f"h{i}")["enrollments"][0] for i in range(40)]
    held = sum(e["held_out"] for e in people)
    held_converted = sum(e["held_out"] for e in people[:20])
    report = api.get("/api/v1/journeys/lift/report").json()
    (row,) = report["versions"]
    assert (row["enrolled"], row["converted"]) == (40, 20)
    assert report["holdout"]["held_out"]["enrolled"] == held
    assert report["holdout"]["held_out"]["converted"] == held_converted
    client = Client()
    client.force_login(superuser)
    html = client.get("/journeys/lift/report/").content.decode()
    assert "Lift over the holdout" in html
