"""`GET /api/v1/journeys/{key}/report`: the version comparison and step funnel of
docs/contract.md §2.

Beyond the contract's fields each version row carries the interval of its difference
(`diff_ci_low`/`diff_ci_high`), its held-out part and a one-line `verdict`; the answer also
names its `baseline` and, when some entrants were held out, the `holdout` lift.
"""

import datetime
from typing import Literal

from ninja import Field, Query, Router, Schema

from journeys.auth import ApiError, manage_auth
from journeys.models import Journey
from reporting import selectors

router = Router(tags=["reports"])


class ReportQuery(Schema):
    conversion: str | None = None
    baseline: int | None = None
    start: datetime.date | None = None
    end: datetime.date | None = None
    versions: str | None = None  # comma-separated version numbers


class ConversionRef(Schema):
    key: str
    name: str


class Group(Schema):
    enrolled: int
    converted: int
    rate: float | None = None


class VersionOut(Schema):
    version: int
    enrolled: int = Field(
        description="Enrollments started on the version, held out included (the page's "
        "'Enrolled (incl. held out)'; the journeys list's 'Enrolled (excl. held out)' leaves "
        "them out)."
    )
    converted: int = Field(description="Of them, those with at least one award.")
    rate: float | None
    ci_low: float | None = Field(description="95% Wilson score interval of the rate.")
    ci_high: float | None
    value: float = Field(description="Sum of the awarded values.")
    diff: float | None = Field(description="rate minus the baseline's rate; null on the baseline.")
    p_value: float | None = Field(description="Two-sided pooled two-proportion z-test.")
    p_value_always_valid: float | None = Field(
        description="mSPRT always-valid p-value over the daily cohorts: valid however often "
        "it is looked at; the verdict of a split rests on it. Null on the baseline."
    )
    chance_to_beat: float | None = Field(
        description="Posterior probability (uniform Beta priors) that the rate is above the "
        "baseline's. Null on the baseline."
    )
    comparison: Literal["randomized", "sequential"] | None
    diff_ci_low: float | None = Field(description="95% Newcombe interval of diff.")
    diff_ci_high: float | None
    verdict: str | None
    sample_ratio_p_value: float | None = Field(
        description="Randomized only: chi-square of the split against its traffic setting."
    )
    held_out: Group


class StepOut(Schema):
    version: int
    step: str
    entered: int
    converted: int


class HoldoutOut(Schema):
    treated: Group
    held_out: Group
    diff: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    lift: float | None = Field(description="Relative lift: treated rate / held-out rate - 1.")
    lift_ci_low: float | None
    lift_ci_high: float | None
    p_value: float | None
    enough_data: bool


class ReportOut(Schema):
    journey: str
    conversion: ConversionRef
    baseline: int
    versions: list[VersionOut]
    steps: list[StepOut]
    holdout: HoldoutOut | None


def parse_versions(text: str | None) -> list[int] | None:
    """ "1,3" -> [1, 3]; raises ValueError on anything else."""
    if not text:
        return None
    numbers = [int(part) for part in text.split(",") if part.strip()]
    if any(n < 1 for n in numbers):
        raise ValueError(text)
    return numbers or None


def report_payload(report: selectors.Report) -> dict:
    ctx = report.ctx
    return {
        "journey": ctx.journey.key,
        "conversion": {"key": ctx.conversion.key, "name": ctx.conversion.name},
        "baseline": ctx.baseline,
        "versions": [version_payload(row) for row in report.versions],
        "steps": [
            {"version": s.version, "step": s.step, "entered": s.entered, "converted": s.converted}
            for s in report.steps
        ],
        "holdout": holdout_payload(report.holdout),
    }


def version_payload(row: selectors.VersionRow) -> dict:
    c = row.comparison
    return {
        "version": row.version,
        "enrolled": row.enrolled,
        "converted": row.converted,
        "rate": row.rate,
        "ci_low": row.ci_low,
        "ci_high": row.ci_high,
        "value": row.counts.value,
        "diff": c.diff if c else None,
        "p_value": c.p_value if c else None,
        "p_value_always_valid": c.p_value_always_valid if c else None,
        "chance_to_beat": c.chance_to_beat if c else None,
        "comparison": c.kind if c else None,
        "diff_ci_low": c.diff_ci_low if c else None,
        "diff_ci_high": c.diff_ci_high if c else None,
        "verdict": c.verdict if c else None,
        "sample_ratio_p_value": c.sample_ratio.p_value if c and c.sample_ratio else None,
        "held_out": {
            "enrolled": row.held_out.enrolled,
            "converted": row.held_out.converted,
            "rate": row.held_out.rate,
        },
    }


def holdout_payload(lift) -> dict | None:
    if lift is None:
        return None
    return {
        "treated": {
            "enrolled": lift.treated_enrolled,
            "converted": lift.treated_converted,
            "rate": lift.treated_rate,
        },
        "held_out": {
            "enrolled": lift.held_out_enrolled,
            "converted": lift.held_out_converted,
            "rate": lift.held_out_rate,
        },
        "diff": lift.diff,
        "diff_ci_low": lift.diff_ci_low,
        "diff_ci_high": lift.diff_ci_high,
        "lift": lift.lift,
        "lift_ci_low": lift.lift_ci_low,
        "lift_ci_high": lift.lift_ci_high,
        "p_value": lift.p_value,
        "enough_data": lift.enough_data,
    }


@router.get(
    "/journeys/{key}/report",
    auth=manage_auth,
    response=ReportOut,
    summary="Version comparison report",
)
def journey_report(request, key: str, params: Query[ReportQuery]):
    journey = Journey.objects.filter(key=key).first()
    if journey is None:
        raise ApiError.single(404, f"No journey '{key}'.", ["path", "key"])
    try:
        versions = parse_versions(params.versions)
    except ValueError:
        raise ApiError.single(
            400, "Give version numbers separated by commas, e.g. 1,2.", ["query", "versions"]
        ) from None
    try:
        ctx = selectors.report_context(
            journey=journey,
            conversion_key=params.conversion,
            start=params.start,
            end=params.end,
            versions=versions,
            baseline=params.baseline,
        )
    except selectors.ReportInputError as error:
        raise ApiError.single(400, error.message, ["query", error.field]) from None
    return report_payload(selectors.version_report(ctx))
