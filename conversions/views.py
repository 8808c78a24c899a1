"""The Goals & conversions panel of the journey editor.

The panel lists the journey's goals and conversions with where each is used, and opens
one inline form at a time (add or edit), so its fields keep unique labels. Every answer to
an HTMX request is the whole panel, swapped in place of the left panel: no page reload.
Without JavaScript the same URLs render the full editor page with the panel open.
"""

from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from conversions.actions import archive_conversion, archive_goal, save_conversion, save_goal
from conversions.forms import ConversionForm, GoalForm
from conversions.models import Conversion, Goal
from conversions.selectors import journey_revisions, new_definition_key
from journeys.definition import DefinitionError, format_duration
from journeys.editing import describe_criteria, humanize_duration
from journeys.models import Journey, JourneyVersion
from journeys.selectors import definition_usages, journey_for_editor
from journeys.views import VIEW, editor_context

EDIT_CONVERSIONS = "conversions.change_conversion"
EDIT_GOALS = "conversions.change_goal"
LIVE_WARNING = (
    "This journey is live: a change here applies at once to running enrollments and to "
    "reports, so reports and automation logic should be reviewed."
)


def _journey(key: str) -> Journey:
    journey = journey_for_editor(key=key)
    if journey is None:
        raise Http404("No such journey")
    return journey


def _is_live(journey: Journey) -> bool:
    return any(v.state == JourneyVersion.State.LIVE for v in journey.history)


def _conversion_choices(journey: Journey) -> list:
    return [(c.key, c.name) for c in journey.active_conversions]


def _panel_context(
    request, journey: Journey, *, form=None, form_kind="", form_key="", notice="", error=""
):
    usages = definition_usages(journey=journey)
    archived = list(
        Conversion.objects.filter(journey=journey, archived_at__isnull=False).order_by("name")
    ) + list(Goal.objects.filter(journey=journey, archived_at__isnull=False).order_by("name"))
    return {
        "journey": journey,
        "panel": "gc",
        "live": _is_live(journey),
        "live_warning": LIVE_WARNING,
        "can_edit_gc": request.user.has_perm(EDIT_CONVERSIONS)
        and request.user.has_perm(EDIT_GOALS),
        "conversions": [
            {
                "row": c,
                "window": humanize_duration(format_duration(c.window)) if c.window else "",
                "usages": usages.get(f"conversion:{c.key}", []),
                "goals": [g for g in journey.active_goals if g.conversion_id == c.pk],
            }
            for c in journey.active_conversions
        ],
        "goals": [
            {
                "row": g,
                "criteria": describe_criteria(g.criteria),
                "usages": usages.get(f"goal:{g.key}", []),
            }
            for g in journey.active_goals
        ],
        "archived": archived,
        "revisions": journey_revisions(journey=journey),
        "gc_form": form,
        "form_kind": form_kind,
        "form_key": form_key,
        "gc_notice": notice,
        "gc_error": error,
    }


def _render_panel(request, journey: Journey, **kwargs):
    context = _panel_context(request, journey, **kwargs)
    if request.htmx:
        return render(request, "conversions/panel.html", context)
    # Without JavaScript: the whole editor, with this panel open on the left.
    page = editor_context(request, journey, panel="gc")
    return render(request, "journeys/editor.html", {**page, **context})


def _blank_or_edit_form(request, journey: Journey):
    """The form that ?add=conversion|goal or ?edit=conversion:KEY asks for."""
    add = request.GET.get("add", "")
    kind, _, key = request.GET.get("edit", "").partition(":")
    if add in ("conversion", "goal"):
        kind, key = add, ""
    if kind not in ("conversion", "goal"):
        return None, "", ""
    perm = EDIT_CONVERSIONS if kind == "conversion" else EDIT_GOALS
    if not request.user.has_perm(perm):
        raise PermissionDenied
    if kind == "conversion":
        row = _row(Conversion, journey, key) if key else None
        return ConversionForm.for_conversion(row), kind, key
    row = _row(Goal, journey, key) if key else None
    return GoalForm.for_goal(row, conversions=_conversion_choices(journey)), kind, key


def _row(model, journey: Journey, key: str):
    row = model.objects.filter(journey=journey, key=key).first()
    if row is None:
        raise Http404("No such goal or conversion")
    return row


@permission_required(VIEW, raise_exception=True)
def panel(request, key: str):
    journey = _journey(key)
    form, kind, form_key = _blank_or_edit_form(request, journey)
    return _render_panel(request, journey, form=form, form_kind=kind, form_key=form_key)


def _done(request, journey_key: str, notice: str):
    if request.htmx:
        return _render_panel(request, _journey(journey_key), notice=notice)
    return HttpResponseRedirect(reverse("conversions:panel", args=[journey_key]))


def _save_item(request, journey: Journey, *, kind: str, key: str | None, form, save):
    """Save a valid form through its action; errors go beside their fields."""
    if form.is_valid():
        data = form.definition
        data["key"] = key or new_definition_key(journey, kind, data["name"])
        try:
            saved = save(journey=journey, data=data, key=key, user=request.user)
        except DefinitionError as exc:
            form.add_action_errors(exc.errors)
        else:
            notice = f"{kind.capitalize()} “{saved.name}” {'saved' if key else 'added'}."
            if _is_live(journey):
                notice += " " + LIVE_WARNING
            return _done(request, journey.key, notice)
    return _render_panel(request, journey, form=form, form_kind=kind, form_key=key or "")


@require_POST
def conversion_save(request, key: str, conversion_key: str | None = None):
    if not request.user.has_perm(EDIT_CONVERSIONS):
        raise PermissionDenied
    journey = _journey(key)
    row = _row(Conversion, journey, conversion_key) if conversion_key else None
    form = ConversionForm(request.POST, keep_where=row.event_where if row is not None else None)
    return _save_item(
        request,
        journey,
        kind="conversion",
        key=conversion_key,
        form=form,
        save=save_conversion,
    )


@require_POST
def goal_save(request, key: str, goal_key: str | None = None):
    if not request.user.has_perm(EDIT_GOALS):
        raise PermissionDenied
    journey = _journey(key)
    row = _row(Goal, journey, goal_key) if goal_key else None
    form = GoalForm.for_goal(row, conversions=_conversion_choices(journey), data=request.POST)
    return _save_item(
        request,
        journey,
        kind="goal",
        key=goal_key,
        form=form,
        save=save_goal,
    )


def _where_used(journey: Journey, kind: str, key: str) -> str:
    usages = definition_usages(journey=journey).get(f"{kind}:{key}", [])
    return "; ".join(f"{u.where} in {u.journey_name} v{u.version} ({u.state})" for u in usages)


@require_POST
def archive(request, key: str, kind: str, item_key: str):
    perm = EDIT_CONVERSIONS if kind == "conversion" else EDIT_GOALS
    if not request.user.has_perm(perm):
        raise PermissionDenied
    journey = _journey(key)
    try:
        if kind == "conversion":
            row = archive_conversion(
                conversion=_row(Conversion, journey, item_key), user=request.user
            )
        else:
            row = archive_goal(goal=_row(Goal, journey, item_key), user=request.user)
    except DefinitionError as exc:
        where = _where_used(journey, kind, item_key)
        message = " ".join(error["message"] for error in exc.errors)
        if where:
            message += f". Used by: {where}."
        return _render_panel(request, journey, error=f"Cannot archive: {message}")
    return _done(
        request, key, f"{kind.capitalize()} “{row.name}” archived; its history stays in reports."
    )
