"""The report page (and its HTMX fragment), its CSV download and the contacts behind a path."""

import csv
import datetime
import math

from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_replace
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import NON_FIELD_ERRORS
from django.db.models import F
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from conversions.models import Conversion
from journeys.models import Journey, JourneyVersion
from reporting import charts, selectors, stats
from reporting.forms import CsvForm, ReportFilterForm
from reporting.tables import report_tables

# The report inlines server-drawn SVG charts, and pygal writes a <style> element into each:
# HTMX swaps new charts into the page after load, so a per-response nonce cannot cover them.
# Scripts stay 'self' only; no other page gets this.
allow_inline_styles = csp_replace({"style-src": [SELF, UNSAFE_INLINE]})

VIEW = "journeys.view_journey"
FILTER_FIELDS = ("conversion", "start", "end", "versions", "baseline", "attribution")


def _filters(request, journey: Journey):
    """The bound filter form and, when it is valid, the report context; otherwise the
    problem to show and, when the request named the filters at fault, their errors in the
    API's shape (a journey with no conversion is no fault of the request's)."""
    conversions = Conversion.objects.filter(journey=journey).order_by(
        F("archived_at").asc(nulls_first=True), "position", "key"
    )
    numbers = (
        JourneyVersion.objects.filter(journey=journey, published_at__isnull=False)
        .order_by("number")
        .values_list("number", flat=True)
    )
    data = request.GET if any(f in request.GET for f in FILTER_FIELDS) else None
    form = ReportFilterForm(data, conversions=conversions, version_numbers=list(numbers))
    if data is not None and not form.is_valid():
        errors = _form_errors(form)
        return form, None, " ".join(e["message"] for e in errors), errors
    cleaned = form.cleaned_data if data is not None else {}
    try:
        ctx = selectors.report_context(
            journey=journey,
            conversion_key=cleaned.get("conversion") or None,
            start=cleaned.get("start"),
            end=cleaned.get("end"),
            versions=cleaned.get("versions") or None,
            baseline=cleaned.get("baseline"),
            attribution=cleaned.get("attribution") or None,
        )
    except selectors.ReportInputError as error:
        if data is not None and error.field in form.fields:
            form.add_error(error.field, error.message)
        errors = []
        if error.field in request.GET:
            errors = [{"loc": ["query", error.field], "message": error.message}]
        return form, None, error.message, errors
    return form, ctx, None, []


def _form_errors(form) -> list[dict]:
    return [
        {"loc": ["query"] + ([] if field == NON_FIELD_ERRORS else [field]), "message": " ".join(m)}
        for field, m in form.errors.items()
    ]


def _bad_request(request, errors: list[dict], *, page: tuple[str, dict] | None = None):
    """400 for a request whose parameters are wrong (contract 6.4): a browser asking for a
    page gets that page with the errors in it; anything else (an integration, a script
    fetching the CSV) gets the API's error shape, which it can read without parsing HTML."""
    wants_html = request.htmx or (
        request.get_preferred_type(["application/json", "text/html"]) == "text/html"
    )
    if page is not None and wants_html:
        template, context = page
        return render(request, template, context, status=400)
    return JsonResponse({"errors": errors}, status=400)


def _split_notes(request, report: selectors.Report, *, today: datetime.date) -> list[dict]:
    """Randomized comparisons whose report also holds enrollments from before the split:
    offer the side-by-side period alone, the comparison the randomization protects.

    The note states when the split really began. Report filters are whole UTC days, and the
    day a split began also holds the baseline's enrollments from before it, so the link
    starts at the first whole day, and is offered only once that day has begun (before,
    it would show nobody enrolled)."""
    notes = []
    for row in report.versions:
        if row.split_from is None:
            continue
        if report.ctx.start is not None and report.ctx.start >= row.split_from:
            continue
        query = request.GET.copy()
        query["start"] = row.split_from.isoformat()
        since = row.split_since
        notes.append(
            {
                "version": row.version,
                "since": since,
                "at_midnight": since.time() == datetime.time(),
                "first_day": row.split_from,
                "query": query.urlencode() if row.split_from <= today else None,
            }
        )
    return notes


def _kpis(report: selectors.Report) -> list[tuple[str, str]]:
    totals = sum((row.counts for row in report.versions), selectors.Counts())
    return [
        ("Enrolled", f"{totals.enrolled:,}"),
        ("Converted", f"{totals.converted:,}"),
        ("Conversion rate", "–" if totals.rate is None else f"{totals.rate * 100:.1f}%"),
        ("Value", f"{totals.value:,.2f}"),
    ]


def _holdout_text(lift) -> str:
    if lift is None:
        return ""
    if lift.diff is None:
        return "No lift can be computed yet."
    text = (
        f"Enrollments that received the journey converted at {lift.treated_rate * 100:.1f}% "
        f"against {lift.held_out_rate * 100:.1f}% for those held out: "
        f"{stats.format_points(lift.diff, sign=True)} pts"
    )
    if lift.diff_ci_low is not None:
        text += (
            f" (95% CI {stats.format_points(lift.diff_ci_low)} to "
            f"{stats.format_points(lift.diff_ci_high)})"
        )
    if lift.lift is not None:
        text += f", a relative lift of {lift.lift * 100:+.0f}%"
        if lift.lift_ci_low is not None:
            text += f" (95% CI {lift.lift_ci_low * 100:+.0f}% to {lift.lift_ci_high * 100:+.0f}%)"
    text += "."
    if not lift.enough_data:
        text += " Not enough data yet to rely on it."
    return text


def _outlook_text(comparison: stats.Comparison) -> str:
    """ "When will we know?" for a split, in a sentence."""
    outlook = comparison.outlook
    pair = f"v{comparison.version} vs v{comparison.baseline}"
    if outlook is None or outlook.detectable_now is None:
        return f"{pair}: too little traffic or no conversions yet to say when it will be known."
    text = (
        f"{pair}: with the enrollments so far, a difference of "
        f"{stats.format_points(outlook.detectable_now)} pts or more would show now"
    )
    if outlook.days_to_effect is None:
        return text + "."
    effect = stats.format_points(outlook.effect)
    if outlook.days_to_effect == 0:
        return text + f"; that covers a difference of {effect} pts."
    return text + (
        f"; one of {effect} pts needs about {math.ceil(outlook.days_to_effect)} more days "
        "at the recent daily traffic."
    )


def _query(request) -> dict:
    return {key: request.GET.getlist(key) for key in FILTER_FIELDS if request.GET.get(key)}


@permission_required(VIEW, raise_exception=True)
@allow_inline_styles
def report(request, key: str):
    journey = get_object_or_404(Journey, key=key)
    form, ctx, problem, errors = _filters(request, journey)
    context = {"journey": journey, "form": form, "problem": problem, "nav": "journeys"}
    if ctx is not None:
        full = selectors.build_report(ctx, selectors.FAST_PANELS)
        tables = report_tables(full, only=("versions", "holdout", "daily", "revisions", "steps"))
        comparisons = [row.comparison for row in full.versions if row.comparison]
        context.update(
            report=full,
            tables=tables,
            comparisons=comparisons,
            sequential=any(c.kind == "sequential" for c in comparisons),
            outlooks=[_outlook_text(c) for c in comparisons if c.kind == stats.RANDOMIZED],
            mismatches=[c for c in comparisons if c.sample_ratio and c.sample_ratio.mismatch],
            split_notes=_split_notes(request, full, today=timezone.now().date()),
            kpis=_kpis(full),
            holdout_text=_holdout_text(full.holdout),
            rates_chart=charts.rates_chart(full),
            over_time_chart=charts.over_time_chart(full),
            funnel_chart=charts.funnel_chart(full),
            csv_query=request.GET.urlencode(),
            panels=[(key, PANEL_TITLES[key]) for key in selectors.SLOW_PANELS],
        )
    template = "reporting/report.html"
    if request.htmx:
        template += "#report"
    if errors:
        return _bad_request(request, errors, page=(template, context))
    return render(request, template, context)


PANEL_TITLES = {
    "paths": "Most common paths",
    "messages": "Messages",
    "goals": "Goals",
    "time_to_convert": "Time to convert",
}


@permission_required(VIEW, raise_exception=True)
def report_panel(request, key: str, panel: str):
    """One of the panels loaded by the page after it answered (paths and messages read the
    raw facts, goals and time to convert their histograms); none needs the statistics."""
    journey = get_object_or_404(Journey, key=key)
    if panel not in selectors.SLOW_PANELS:
        raise Http404(f"No report panel '{panel}'.")
    form, ctx, problem, errors = _filters(request, journey)
    if ctx is None:
        return _bad_request(request, errors or [{"loc": [], "message": problem}])
    report = selectors.build_report(ctx, (panel,), compare=False)
    table = report_tables(report, query=_query(request), only=(panel,))[panel]
    return render(
        request,
        "reporting/_panel.html",
        {"panel": panel, "title": PANEL_TITLES[panel], "table": table, "report": report},
    )


@permission_required(VIEW, raise_exception=True)
def report_csv(request, key: str):
    journey = get_object_or_404(Journey, key=key)
    choice = CsvForm(request.GET)
    if not choice.is_valid():
        tables = ", ".join(k for k, _ in choice.fields["table"].choices)
        message = f"Unknown table: choose one of {tables}."
        return _bad_request(request, [{"loc": ["query", "table"], "message": message}])
    form, ctx, problem, errors = _filters(request, journey)
    if ctx is None:
        return _bad_request(request, errors or [{"loc": [], "message": problem}])
    name = choice.cleaned_data["table"] or "versions"
    table = report_tables(selectors.build_report(ctx, (name,)), only=(name,))[name]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="{journey.key}-{ctx.conversion.key}-{name}.csv"'
    )
    csv.writer(response).writerows(table.csv_rows())
    return response


@permission_required(VIEW, raise_exception=True)
def path_contacts(request, key: str):
    journey = get_object_or_404(Journey, key=key)
    if "path" not in request.GET:
        message = "Give the path as ?path=step,step,..."
        return _bad_request(request, [{"loc": ["query", "path"], "message": message}])
    form, ctx, problem, errors = _filters(request, journey)
    path = [part for part in request.GET["path"].split(",") if part]
    enrollments = list(selectors.path_enrollments(ctx, path=path)) if ctx else []
    page = (
        "reporting/path_contacts.html",
        {
            "journey": journey,
            "ctx": ctx,
            "problem": problem,
            "path": path,
            "enrollments": enrollments,
            "limit": selectors.PATH_CONTACTS_LIMIT,
            "back_query": _back_query(request),
            "nav": "journeys",
        },
    )
    if errors:
        return _bad_request(request, errors, page=page)
    return render(request, *page)


def _back_query(request) -> str:
    query = request.GET.copy()
    query.pop("path", None)
    return query.urlencode()
