"""Pages of the journeys app: the journeys list, the journey editor, contacts and their CSV
import.

One view serves a page and, for an HTMX request, the named partial that changed. Every
change to the flow goes through save_draft_version(allow_invalid=True): the editor keeps
a draft with errors and shows them, the API refuses it.
"""

import dataclasses
import os
import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required, permission_required
from django.core.exceptions import PermissionDenied
from django.core.mail import get_connection
from django.http import Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from conversions.actions import save_conversion, save_goal
from conversions.models import Revision
from conversions.selectors import new_definition_key, resolve_journey_refs, rule_choices
from journeys.actions.consent import set_subscription
from journeys.actions.imports import (
    ImportFileError,
    create_contact_import,
    inspect_csv,
    refused_rows_csv,
    start_contact_import,
)
from journeys.actions.lifecycle import (
    LifecycleRefused,
    discard_draft,
    duplicate_journey,
    pause_journey,
    resume_journey,
    stop_journey,
)
from journeys.actions.messages import (
    PreparedMessage,
    build_email,
    compose_message,
    describe_template_error,
)
from journeys.actions.versions import (
    VersionStateError,
    create_empty_journey,
    publish_version,
    save_draft_version,
)
from journeys.consent import read_unsubscribe_token
from journeys.definition import DefinitionError, parse_definition
from journeys.editing import (
    build_diagram,
    definition_names,
    delete_step,
    describe_error,
    describe_rule,
    find_step,
    insert_step,
    invalid_step_keys,
    replace_step,
    summarize_changes,
    valid_port,
)
from journeys.forms import (
    NEW,
    AddStepForm,
    ContactFilterForm,
    ContactImportForm,
    JourneyCreateForm,
    PreviewForm,
    PublishForm,
    RuleForm,
    SettingsForm,
    SubscriptionsForm,
    TestSendForm,
    step_form,
)
from journeys.models import (
    SUBSCRIPTION_CHANNELS,
    Contact,
    ContactImport,
    Enrollment,
    Journey,
    JourneyVersion,
    OutboxMessage,
    Subscription,
)
from journeys.selectors import (
    CONTACT_PAGES_MAX,
    ContactFilters,
    contact_search,
    contact_timeline,
    editor_definition,
    journey_definition,
    journey_for_editor,
    journey_list_rows,
    liquid_attribute_keys,
    preview_contact,
    step_counts,
)

VIEW = "journeys.view_journey"
EDIT = "journeys.change_journey"
PUBLISH = "journeys.publish_journey"


def _require(request, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied


# --- The journeys list ----------------------------------------------------------------------


@permission_required(VIEW, raise_exception=True)
def journey_list(request):
    search = request.GET.get("q", "").strip()
    status = request.GET.get("status", "")
    if status not in Journey.Status.values:
        status = ""
    context = {
        "nav": "journeys",
        "rows": journey_list_rows(search=search, status=status),
        "search": search,
        "status": status,
        "statuses": Journey.Status.choices,
        "can_edit": request.user.has_perm(EDIT),
    }
    template = "journeys/list.html"
    if request.htmx and not request.htmx.boosted:
        template += "#rows"
    return render(request, template, context)


def _errors_onto(form, exc: DefinitionError) -> None:
    """A definition's errors on the form's fields they name (the key, the name), the rest
    above the form."""
    for error in exc.errors:
        field = (error.get("loc") or [None])[0]
        form.add_error(field if field in form.fields else None, error["message"])


@permission_required(EDIT, raise_exception=True)
def journey_create(request):
    form = JourneyCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            journey = create_empty_journey(
                key=data["key"],
                name=data["name"],
                description=data["description"],
                user=request.user,
            )
        except DefinitionError as exc:
            _errors_onto(form, exc)
        else:
            return HttpResponseRedirect(reverse("journeys:editor", args=[journey.key]))
    return render(request, "journeys/create.html", {"nav": "journeys", "form": form})


# --- The editor -----------------------------------------------------------------------------


@dataclasses.dataclass
class EditorState:
    journey: Journey
    version: JourneyVersion | None  # the version shown
    draft: JourneyVersion | None
    live: list[JourneyVersion]
    definition: dict
    readonly: bool


def _load(key: str) -> Journey:
    journey = journey_for_editor(key=key)
    if journey is None:
        raise Http404("No such journey")
    return journey


def _state(journey: Journey, *, number: int | None = None) -> EditorState:
    versions = journey.history
    draft = next((v for v in versions if v.state == JourneyVersion.State.DRAFT), None)
    live = sorted(
        (v for v in versions if v.state == JourneyVersion.State.LIVE), key=lambda v: v.number
    )
    if number is not None:
        version = next((v for v in versions if v.number == number), None)
        if version is None:
            raise Http404("No such version")
        return EditorState(
            journey,
            version,
            draft,
            live,
            journey_definition(journey=journey, version=version),
            readonly=version.state != JourneyVersion.State.DRAFT,
        )
    version = draft or (live[-1] if live else (versions[0] if versions else None))
    return EditorState(
        journey, version, draft, live, editor_definition(journey=journey, version=version), False
    )


def _shown_counts(version: JourneyVersion | None) -> dict | None:
    """The canvas numbers of the version shown; a draft has had nobody in it."""
    if version is None or version.state == JourneyVersion.State.DRAFT:
        return None
    return step_counts(version=version)


def _history(journey: Journey) -> list[dict]:
    ordered = sorted(journey.history, key=lambda v: v.number)
    rows = []
    previous = None
    for version in ordered:
        rows.append(
            {
                "version": version,
                "summary": summarize_changes(
                    previous.definition if previous is not None else None, version.definition
                ),
            }
        )
        previous = version
    return list(reversed(rows))


def editor_context(
    request,
    journey: Journey,
    *,
    number: int | None = None,
    selected: str | None = None,
    form=None,
    panel: str = "flow",
    errors_override: list | None = None,
    notice: str = "",
    left_forms: dict | None = None,
) -> dict:
    """Everything the editor template draws; the Goals & conversions panel adds its own."""
    state = _state(journey, number=number)
    definition = state.definition
    can_edit = request.user.has_perm(EDIT) and not state.readonly
    errors, warnings = [], []
    if state.version is not None and state.version.state == JourneyVersion.State.DRAFT:
        try:
            _, warnings = parse_definition(definition, resolve_journey=resolve_journey_refs)
        except DefinitionError as exc:
            errors = exc.errors
    if errors_override is not None:
        errors = errors_override
    step = find_step(definition, selected) if selected else None
    if step is not None and form is None:
        form = step_form(step, definition)
    names = definition_names(definition)
    liquid_fields = []
    if step is not None and step.get("type") in ("send_email", "send_sms"):
        liquid_fields = [
            "contact.external_id",
            "contact.email",
            *(f"contact.attributes.{name}" for name in liquid_attribute_keys(journey=journey)),
        ]
        if step.get("type") == "send_email":
            liquid_fields.append("unsubscribe_url")
    context = {
        "nav": "journeys",
        "journey": journey,
        "state": state,
        "definition": definition,
        "diagram": build_diagram(
            definition,
            invalid_steps=invalid_step_keys(definition, errors),
            selected=step.get("key") if step else None,
            counts=_shown_counts(state.version),
        ),
        "errors": [describe_error(definition, error) for error in errors],
        "warnings": [describe_error(definition, warning) for warning in warnings],
        "step": step,
        "step_form": form,
        "can_edit": can_edit,
        "can_publish": request.user.has_perm(PUBLISH) and not state.readonly,
        "can_republish": request.user.has_perm(PUBLISH)
        and state.version is not None
        and state.version.state == JourneyVersion.State.RETIRED,
        "history": _history(journey),
        "panel": panel,
        "notice": notice,
        "triggers": [
            describe_rule(rule, journey_key=journey.key, names=names)
            for rule in definition.get("triggers") or []
        ],
        "exit_rules": [
            describe_rule(rule, journey_key=journey.key, names=names)
            for rule in definition.get("exit_when") or []
        ],
        "step_types": AddStepForm.base_fields["type"].choices,
        "liquid_fields": liquid_fields,
        "preview_form": PreviewForm() if step and step.get("type") == "send_email" else None,
        "test_send_form": TestSendForm(prefix="test")
        if step and step.get("type") == "send_email"
        else None,
    }
    if can_edit and panel == "flow":
        forms = left_forms or {}
        conversions, goals = rule_choices()
        context["settings_form"] = forms.get("settings") or SettingsForm.for_definition(definition)
        context["trigger_form"] = forms.get("trigger") or RuleForm(
            prefix="trigger", conversions=conversions, goals=goals
        )
        context["exit_form"] = forms.get("exit") or RuleForm(
            prefix="exit", conversions=conversions, goals=goals
        )
        context["editing"] = forms.get("editing")
    if context["can_publish"]:
        context["publish_form"] = PublishForm()
    # Two live versions are a split: either may take every new enrollment alone.
    context["end_split"] = (
        state.live if request.user.has_perm(PUBLISH) and len(state.live) == 2 else []
    )
    if can_edit and state.draft is not None and len(journey.history) > 1:
        context["can_discard"] = True
    if request.user.has_perm(EDIT):
        context["can_duplicate"] = True
    if request.user.has_perm(PUBLISH) and journey.status in _LIFECYCLE_FROM_STATUS:
        context["lifecycle"] = {
            "running": Enrollment.objects.filter(
                journey=journey, state=Enrollment.State.ACTIVE
            ).count(),
            "can": _LIFECYCLE_FROM_STATUS[journey.status],
        }
    return context


# Which lifecycle buttons the editor offers in each status (contract 6.2).
_LIFECYCLE_FROM_STATUS = {
    Journey.Status.LIVE: ("pause", "stop"),
    Journey.Status.PAUSED: ("resume", "stop"),
}


def _render_editor(request, context: dict, *, fragment: str | None = None, status: int = 200):
    template = "journeys/editor.html"
    if fragment and request.htmx:
        template += "#" + fragment
    return render(request, template, context, status=status)


@permission_required(VIEW, raise_exception=True)
def journey_editor(request, key: str):
    journey = _load(key)
    selected = request.GET.get("step") or None
    context = editor_context(request, journey, selected=selected)
    fragment = None
    if request.htmx:
        fragment = "left" if request.htmx.target == "left-panel" else "workspace"
    return _render_editor(request, context, fragment=fragment)


@permission_required(VIEW, raise_exception=True)
def version_detail(request, key: str, number: int):
    journey = _load(key)
    context = editor_context(request, journey, number=number)
    if context["state"].version.state == JourneyVersion.State.DRAFT:
        return HttpResponseRedirect(reverse("journeys:editor", args=[key]))
    return _render_editor(request, context)


def _save(request, journey: Journey, definition: dict):
    """Save the change as the draft; the journey is re-read so the page shows what was
    stored."""
    result = save_draft_version(
        journey=journey, definition=definition, user=request.user, allow_invalid=True
    )
    return _load(journey.key), result


def _back_to_editor(request, journey: Journey, *, notice: str, selected: str | None = None):
    """Without HTMX: the notice as a message, and the editor page again."""
    if notice:
        messages.success(request, notice)
    url = reverse("journeys:editor", args=[journey.key])
    return HttpResponseRedirect(url + (f"?step={selected}" if selected else ""))


def _after_change(request, journey: Journey, *, selected: str | None = None, notice: str = ""):
    """Answer a change: the workspace for HTMX, a redirect otherwise."""
    if not request.htmx:
        return _back_to_editor(request, journey, notice=notice, selected=selected)
    context = editor_context(request, journey, selected=selected, notice=notice)
    return _render_editor(request, context, fragment="workspace")


@require_POST
def step_add(request, key: str):
    _require(request, EDIT)
    journey = _load(key)
    state = _state(journey)
    form = AddStepForm(request.POST)
    if not form.is_valid() or not valid_port(
        state.definition, form.cleaned_data["after"] or None, form.cleaned_data["port"]
    ):
        context = editor_context(
            request, journey, notice="That place in the flow no longer exists; try again."
        )
        return _render_editor(request, context, fragment="workspace")
    definition, new_key = insert_step(
        state.definition,
        after=form.cleaned_data["after"] or None,
        port=form.cleaned_data["port"],
        kind=form.cleaned_data["type"],
    )
    journey, _ = _save(request, journey, definition)
    return _after_change(request, journey, selected=new_key)


@permission_required(VIEW, raise_exception=True)
def step_detail(request, key: str, step_key: str):
    journey = _load(key)
    state = _state(journey)
    step = find_step(state.definition, step_key)
    if step is None:
        raise Http404("No such step")
    if request.method == "GET":
        context = editor_context(request, journey, selected=step_key)
        return _render_editor(request, context, fragment="workspace")
    _require(request, EDIT)
    form = step_form(step, state.definition, data=request.POST)
    # "Add condition" shows the form again with one more row; nothing is saved yet.
    if getattr(form, "adding_row", False) or not form.is_valid():
        context = editor_context(request, journey, selected=step_key, form=form)
        return _render_editor(request, context, fragment="workspace")
    new_step = form.to_step()
    try:
        _create_picked_definitions(request, journey, form, new_step)
    except DefinitionError as exc:
        field = "new_conversion" if step.get("type") == "convert" else "new_goal"
        for error in exc.errors:
            target = field if (error.get("loc") or ["name"])[0] in ("name", "key") else None
            form.add_error(target, error["message"])
        context = editor_context(request, _load(key), selected=step_key, form=form)
        return _render_editor(request, context, fragment="workspace")
    journey = _load(key)
    definition = replace_step(_state(journey).definition, key=step_key, step=new_step)
    journey, _ = _save(request, journey, definition)
    return _after_change(request, journey, selected=step_key, notice="Step saved to the draft.")


def _create_picked_definitions(request, journey: Journey, form, step: dict) -> None:
    """ "New conversion…" / "New goal…" in a step form: create it through the panel's own
    actions, so a name that matches an existing one is refused, never duplicated."""
    data = form.cleaned_data
    if step.get("type") == "convert" and step.get("conversion") == NEW:
        name = data["new_conversion"].strip()
        conversion = save_conversion(
            journey=journey,
            data={"key": new_definition_key(journey, "conversion", name), "name": name},
            user=request.user,
        )
        step["conversion"] = conversion.key
    if step.get("type") == "evaluate_goal" and step.get("goal") == NEW:
        name = data["new_goal"].strip()
        goal = save_goal(
            journey=journey,
            data={
                "key": new_definition_key(journey, "goal", name),
                "name": name,
                "criteria": {"event": data["new_goal_event"].strip()},
            },
            user=request.user,
        )
        step["goal"] = goal.key


@require_POST
def step_delete(request, key: str, step_key: str):
    _require(request, EDIT)
    journey = _load(key)
    state = _state(journey)
    if find_step(state.definition, step_key) is None:
        raise Http404("No such step")
    journey, _ = _save(request, journey, delete_step(state.definition, key=step_key))
    return _after_change(request, journey, notice=f"Step '{step_key}' deleted from the draft.")


def _left_change(request, journey: Journey, *, forms: dict | None = None, notice: str = ""):
    """Answer a change made in the left panel: the panel and, out of band, the workspace."""
    if not request.htmx and not forms:
        return _back_to_editor(request, journey, notice=notice)
    context = editor_context(request, journey, left_forms=forms, notice=notice)
    if not request.htmx:
        return _render_editor(request, context)
    context["oob"] = True
    return _render_editor(request, context, fragment="left-and-workspace")


@require_POST
def settings_update(request, key: str):
    _require(request, EDIT)
    journey = _load(key)
    state = _state(journey)
    form = SettingsForm(request.POST)
    if not form.is_valid():
        return _left_change(request, journey, forms={"settings": form})
    journey, _ = _save(request, journey, form.apply(state.definition))
    return _left_change(request, journey, notice="Settings saved to the draft.")


@require_POST
def rule_add(request, key: str, section: str):
    _require(request, EDIT)
    journey = _load(key)
    state = _state(journey)
    conversions, goals = rule_choices()
    prefix = "trigger" if section == "triggers" else "exit"
    form = RuleForm(request.POST, prefix=prefix, conversions=conversions, goals=goals)
    if form.adding_row or not form.is_valid():
        return _left_change(request, journey, forms={prefix: form})
    definition = dict(state.definition)
    definition[section] = [
        *(definition.get(section) or []),
        form.rule(journey_key=journey.key, section=section),
    ]
    journey, _ = _save(request, journey, definition)
    what = "Trigger" if section == "triggers" else "Exit rule"
    return _left_change(request, journey, notice=f"{what} added to the draft.")


def rule_edit(request, key: str, section: str, index: int):
    """A stored trigger or exit rule in its form (GET), and the changed one saved in its
    place (POST)."""
    _require(request, EDIT)
    journey = _load(key)
    rules = list(_state(journey).definition.get(section) or [])
    if not 0 <= index < len(rules):
        raise Http404("No such rule")
    conversions, goals = rule_choices()
    kind = "trigger" if section == "triggers" else "exit"
    what = "Trigger" if section == "triggers" else "Exit rule"
    options = {"prefix": f"{kind}-{index}", "conversions": conversions, "goals": goals}
    form = RuleForm.for_rule(rules[index], journey_key=journey.key, **options)
    if form is None:
        notice = f"{what} {index + 1} nests groups of filters, which the editor cannot show: remove it and add it again, or change it over the API."
        return _left_change(request, journey, notice=notice)
    if request.method == "POST":
        form = RuleForm(request.POST, **options)
        if not form.adding_row and form.is_valid():
            rules[index] = form.rule(journey_key=journey.key, section=section)
            definition = {**_state(journey).definition, section: rules}
            journey, _ = _save(request, journey, definition)
            return _left_change(request, journey, notice=f"{what} saved to the draft.")
    editing = {"section": "triggers" if section == "triggers" else "exit", "index": index}
    return _left_change(request, journey, forms={"editing": {**editing, "form": form}})


@require_POST
def rule_delete(request, key: str, section: str, index: int):
    _require(request, EDIT)
    journey = _load(key)
    state = _state(journey)
    rules = list(state.definition.get(section) or [])
    if not 0 <= index < len(rules):
        raise Http404("No such rule")
    del rules[index]
    journey, _ = _save(request, journey, {**state.definition, section: rules})
    what = "Trigger" if section == "triggers" else "Exit rule"
    return _left_change(request, journey, notice=f"{what} removed from the draft.")


@require_POST
def publish(request, key: str, number: int | None = None):
    """Publish the draft (alone, or as a split test with a share of traffic), or with
    `number` an older version again (a rollback)."""
    _require(request, PUBLISH)
    journey = _load(key)
    state = _state(journey, number=number)
    target = state.draft if number is None else state.version
    form = PublishForm(request.POST)
    split = "split" in request.POST
    problems: list[dict] = []
    if target is None:
        problems = [{"loc": [], "message": "There is no draft to publish: change something first."}]
    elif not form.is_valid():
        problems = [{"loc": ["traffic"], "message": e} for e in form.errors.get("traffic", [])]
    elif split and form.cleaned_data["traffic"] is None:
        problems = [{"loc": ["traffic"], "message": "Give the share of traffic (1 to 99)."}]
    if not problems:
        try:
            version = publish_version(
                version=target,
                traffic=form.cleaned_data["traffic"] if split else None,
                user=request.user,
            )
        except DefinitionError as exc:
            problems = exc.errors
        except VersionStateError as exc:
            problems = [{"loc": exc.loc, "message": exc.message}]
        else:
            share = f" for {version.traffic}% of new enrollments" if version.traffic else ""
            notice = f"Version {version.number} is live{share}."
            if not request.htmx:
                return _back_to_editor(request, journey, notice=notice)
            context = editor_context(request, _load(key), notice=notice)
            context["oob_head"] = True
            return _render_editor(request, context, fragment="workspace-and-head")
    context = editor_context(
        request,
        journey,
        number=number,
        notice="Not published: fix what is listed below first.",
        errors_override=problems,
    )
    return _render_editor(request, context, fragment="workspace")


_LIFECYCLE_CHANGES = {
    "pause": (lambda journey: pause_journey(journey=journey), "Journey paused."),
    "resume": (lambda journey: resume_journey(journey=journey), "Journey resumed."),
    "stop": (
        lambda journey: stop_journey(journey=journey, now=timezone.now()),
        "Journey stopped: publish a new version to make it live again.",
    ),
}


@require_POST
def lifecycle(request, key: str, change: str):
    """Pause, resume or stop the journey (Publisher role), then the editor again with what
    happened, or why not."""
    _require(request, PUBLISH)
    journey = get_object_or_404(Journey, key=key)
    if change not in _LIFECYCLE_CHANGES:
        raise Http404("No such change")
    action, notice = _LIFECYCLE_CHANGES[change]
    try:
        action(journey)
    except LifecycleRefused as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, notice)
    return HttpResponseRedirect(reverse("journeys:editor", args=[key]))


def publish_review(request, key: str):
    """The dialog the Publish button opens (HTMX): what the draft changes against the live
    version (steps; goals and conversions changed since it was published) and how many
    contacts run on the live versions, then Publish. Editors may read it (the publish
    itself checks the Publisher role); a journey without a draft gets a 404."""
    _require(request, EDIT)
    journey = _load(key)
    state = _state(journey)
    if state.draft is None:
        raise Http404("No draft to publish")
    live = state.live[-1] if state.live else None
    revisions = []
    if live is not None:
        revisions = [
            f"{'Conversion' if revision.conversion_id else 'Goal'} "
            f"'{(revision.conversion or revision.goal).name}' {revision.get_kind_display().lower()}"
            for revision in Revision.objects.filter(
                journey=journey, created_at__gt=live.published_at
            )
            .select_related("conversion", "goal")
            .order_by("created_at")
        ]
    context = {
        "journey": journey,
        "draft": state.draft,
        "live": live,
        "flow_changes": summarize_changes(
            live.definition if live else None, state.draft.definition
        ),
        "revisions": revisions,
        "running": Enrollment.objects.filter(
            version__in=state.live, state=Enrollment.State.ACTIVE
        ).count(),
    }
    return render(request, "journeys/_publish_review.html", context)


@require_POST
def draft_discard(request, key: str):
    """Throw the draft away (Editor role); the editor shows the live version again."""
    _require(request, EDIT)
    journey = get_object_or_404(Journey, key=key)
    try:
        draft = discard_draft(journey=journey)
    except LifecycleRefused as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Draft version {draft.number} discarded.")
    return HttpResponseRedirect(reverse("journeys:editor", args=[key]))


@permission_required(EDIT, raise_exception=True)
def journey_duplicate(request, key: str):
    """A copy of the journey under a new key, its newest version as the copy's draft, with
    goals and conversions (Editor role); a bad or taken key is shown on the form."""
    journey = _load(key)
    form = JourneyCreateForm(
        request.POST or None,
        initial={"key": f"{journey.key}-copy", "name": f"{journey.name} (copy)"},
    )
    if request.method == "POST" and form.is_valid():
        try:
            copy = duplicate_journey(
                journey=journey,
                key=form.cleaned_data["key"],
                name=form.cleaned_data["name"],
                user=request.user,
            )
        except DefinitionError as exc:
            _errors_onto(form, exc)
        else:
            messages.success(request, f"Copied from '{journey.key}': this is its draft.")
            return HttpResponseRedirect(reverse("journeys:editor", args=[copy.key]))
    status = 400 if form.errors else 200
    context = {"nav": "journeys", "journey": journey, "form": form}
    return render(request, "journeys/duplicate.html", context, status=status)


# --- Contacts -------------------------------------------------------------------------------


@permission_required("journeys.view_contact", raise_exception=True)
def contact_list(request):
    """Search and filters come in the query string (so a filtered list is a link to share);
    a bad value gets the form back with its error and a 400."""

    form = ContactFilterForm(
        request.GET or None,
        max_page=CONTACT_PAGES_MAX,
        journeys=Journey.objects.order_by("name"),
    )
    context = {"nav": "contacts", "form": form, "results": None}
    status = 200
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        data = form.cleaned_data if form.is_bound else {}
        filters = ContactFilters(
            query=data.get("q", ""),
            attribute=data.get("attribute"),
            subscriptions=tuple(
                (channel, data[channel]) for channel in SUBSCRIPTION_CHANNELS if data.get(channel)
            ),
            journey=data.get("journey"),
            version=data.get("version"),
            step=data.get("step", ""),
            reached=data.get("reached", ""),
        )
        results = contact_search(filters=filters, page=data.get("page") or 1)
        context |= {"results": results, "filtered": bool(filters)}
        context |= _page_links(request, results)
    template = "journeys/contacts.html"
    if request.htmx:
        template += "#results"
    return render(request, template, context, status=status)


def _page_links(request, results) -> dict:
    """The previous and next pages' query strings: the same filters, another page."""

    def link(number):
        params = request.GET.copy()
        params.pop("page", None)
        if number > 1:
            params["page"] = number
        return "?" + params.urlencode()

    return {
        "previous_page": link(results.number - 1) if results.has_previous else None,
        "next_page": link(results.number + 1) if results.has_next else None,
    }


@permission_required("journeys.view_contact", raise_exception=True)
def contact_detail(request, external_id: str):
    contact = get_object_or_404(Contact, external_id=external_id)
    form = SubscriptionsForm(initial=_subscriptions_of(contact))
    return render(request, "journeys/contact.html", _contact_context(request, contact, form))


def _contact_context(request, contact: Contact, form: SubscriptionsForm) -> dict:
    return {
        "nav": "contacts",
        "contact": contact,
        "timeline": contact_timeline(contact=contact),
        "subscriptions": _subscription_rows(contact),
        "subscriptions_form": form,
        "can_edit_contact": request.user.has_perm("journeys.change_contact"),
    }


# --- Contact import (docs/integrations.md, "CSV import") ---------------------------------------

IMPORT = "journeys.change_contact"


def _save_upload(upload) -> str:
    """The upload written where the workers read it (CONTACT_IMPORT_DIR), a chunk at a time."""
    folder = settings.CONTACT_IMPORT_DIR
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{uuid.uuid4().hex}.csv")
    with open(path, "wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return path


@permission_required(IMPORT, raise_exception=True)
def contact_import(request):
    """Upload a CSV file; a file that passes the header and encoding checks becomes a draft
    import, shown with its column mapping before it runs."""
    form = ContactImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        if upload.size > settings.CONTACT_IMPORT_MAX_BYTES:
            form.add_error(
                "file",
                f"The file is {upload.size:,} bytes; at most "
                f"{settings.CONTACT_IMPORT_MAX_BYTES:,} can be imported at once.",
            )
        else:
            path = _save_upload(upload)
            try:
                inspect_csv(path=path, size=upload.size)
            except ImportFileError as exc:
                os.remove(path)
                form.add_error("file", str(exc))
            else:
                draft = create_contact_import(
                    path=path, file_name=upload.name, size=upload.size, user=request.user
                )
                return HttpResponseRedirect(reverse("journeys:import", args=[draft.pk]))
    imports = ContactImport.objects.order_by("-created_at")[:10]
    context = {"nav": "contacts", "form": form, "imports": imports}
    status = 400 if form.errors else 200
    return render(request, "journeys/contact_import.html", context, status=status)


@permission_required(IMPORT, raise_exception=True)
def contact_import_detail(request, pk: int):
    """A draft's preview and mapping, or a started import's progress (the `progress`
    partial alone for HTMX polling, which stops once the import is over)."""
    item = get_object_or_404(ContactImport, pk=pk)
    context = {"nav": "contacts", "item": item}
    if request.htmx:
        return render(request, "journeys/contact_import_detail.html#progress", context)
    if item.status == ContactImport.Status.DRAFT:
        try:
            context["preview"] = inspect_csv(path=item.path, size=item.size)
        except (ImportFileError, OSError) as exc:
            context["preview_error"] = str(exc)
    return render(request, "journeys/contact_import_detail.html", context)


@require_POST
@permission_required(IMPORT, raise_exception=True)
def contact_import_start(request, pk: int):
    item = get_object_or_404(ContactImport, pk=pk)
    start_contact_import(contact_import=item)
    return HttpResponseRedirect(reverse("journeys:import", args=[item.pk]))


@permission_required(IMPORT, raise_exception=True)
def contact_import_report(request, pk: int):
    """The refused rows, line by line with the reason, as CSV."""
    item = get_object_or_404(ContactImport, pk=pk)
    response = StreamingHttpResponse(refused_rows_csv(item), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="import-{item.pk}-refused.csv"'
    return response


def _subscriptions_of(contact: Contact) -> dict[str, str]:
    return {channel: contact.subscription(channel) for channel in SUBSCRIPTION_CHANNELS}


def _subscription_rows(contact: Contact) -> list[tuple[str, str]]:
    labels = dict(Subscription.choices)
    return [
        (SubscriptionsForm.base_fields[channel].label, labels[status])
        for channel, status in _subscriptions_of(contact).items()
    ]


@require_POST
@permission_required("journeys.change_contact", raise_exception=True)
def contact_subscriptions(request, external_id: str):
    contact = get_object_or_404(Contact, external_id=external_id)
    form = SubscriptionsForm(request.POST)
    if not form.is_valid():
        return render(request, "journeys/contact.html", _contact_context(request, contact, form))
    for channel in SUBSCRIPTION_CHANNELS:
        if form.cleaned_data[channel] != contact.subscription(channel):
            set_subscription(
                contact_id=contact.pk, channel=channel, status=form.cleaned_data[channel]
            )
    messages.success(request, "Subscriptions saved.")
    return HttpResponseRedirect(reverse("journeys:contact", args=[contact.external_id]))


# Mail clients post the one-click unsubscribe (RFC 8058) without a session or a CSRF token;
# the signed token is the credential, and all it can do is change that one channel.
@login_not_required
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    named = read_unsubscribe_token(token)
    contact = Contact.objects.filter(pk=named[0]).first() if named else None
    if contact is None:
        raise Http404("This unsubscribe link is not valid.")
    channel = named[1]
    done = ""
    if request.method == "POST":
        resubscribe = "resubscribe" in request.POST
        status = Subscription.SUBSCRIBED if resubscribe else Subscription.UNSUBSCRIBED
        contact = set_subscription(contact_id=contact.pk, channel=channel, status=status) or contact
        done = "resubscribed" if resubscribe else "unsubscribed"
    context = {
        "channel": "email" if channel == "email" else "text messages",
        "subscribed": contact.subscription(channel) == Subscription.SUBSCRIBED,
        "done": done,
    }
    return render(request, "journeys/unsubscribe.html", context)


# --- Email preview and test send ----------------------------------------------------------

# The HTML of a preview is a marketer's: it runs nothing and loads nothing but images, even
# opened on its own (the `sandbox` directive), and only this site may frame it.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "frame-ancestors 'self'; sandbox"
)


@dataclasses.dataclass
class EmailPreview:
    contact: Contact | None
    message: PreparedMessage | None = None
    problem: str = ""


def _email_preview(journey: Journey, step_key: str, query: str, *, to: str = "") -> EmailPreview:
    """The draft's email step rendered for a contact, as it would be sent."""
    step = find_step(_state(journey).definition, step_key)
    if step is None or step.get("type") != "send_email":
        raise Http404("No such email step")
    contact = preview_contact(journey=journey, query=query)
    if contact is None:
        problem = f"No contact has the email or external id '{query}'." if query else ""
        return EmailPreview(None, problem=problem or "There are no contacts yet.")
    message = OutboxMessage(
        channel=OutboxMessage.Channel.EMAIL,
        contact_id=contact.pk,
        subject=step.get("subject") or "",
        body=step.get("body") or "",
        preheader=step.get("preheader") or "",
        html=step.get("html") or "",
        from_email=step.get("from_email") or "",
        reply_to=step.get("reply_to") or "",
    )
    message.category = step.get("category") or OutboxMessage.Category.MARKETING
    return preview_message(message, contact, to=to)


def preview_message(message: OutboxMessage, contact: Contact, *, to: str = "") -> EmailPreview:
    """`message` rendered for the contact as it is now; the unsubscribe link is a
    placeholder that unsubscribes nobody (a test email or a preview is forwarded, clicked)."""
    marketing = message.category == OutboxMessage.Category.MARKETING
    link = f"{settings.PUBLIC_BASE_URL.rstrip('/')}/u/preview" if marketing else ""
    data = {"external_id": contact.external_id, "email": contact.email}
    data["attributes"] = dict(contact.attributes or {})
    try:
        prepared = compose_message(
            message, data, recipient=to or contact.email, unsubscribe_link=link
        )
    except Exception as exc:
        return EmailPreview(contact, problem=f"Template error: {describe_template_error(exc)}")
    return EmailPreview(contact, prepared)


@permission_required(EDIT, raise_exception=True)
def step_preview(request, key: str, step_key: str):
    journey = _load(key)
    form = PreviewForm(request.GET)
    query = form.cleaned_data["contact"] if form.is_valid() else ""
    preview = _email_preview(journey, step_key, query)
    context = {"journey": journey, "step_key": step_key, "preview": preview, "query": query}
    return render(request, "journeys/_email_preview.html", context)


@xframe_options_sameorigin
@permission_required(EDIT, raise_exception=True)
def step_preview_html(request, key: str, step_key: str):
    preview = _email_preview(_load(key), step_key, request.GET.get("contact", "")[:255])
    return sandboxed_html(preview.message)


def sandboxed_html(message: PreparedMessage | None) -> HttpResponse:
    """A rendered email's HTML as its own document, for a sandboxed frame of this site."""
    if message is None or not message.html:
        body = "<p>This email has no HTML body.</p>" if message else "<p></p>"
    else:
        body = message.html
    response = HttpResponse(body, content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = PREVIEW_CSP
    return response


@require_POST
@permission_required(EDIT, raise_exception=True)
def step_test_send(request, key: str, step_key: str):
    journey = _load(key)
    form = TestSendForm(request.POST, prefix="test")
    sent_to = ""
    if form.is_valid():
        to = form.cleaned_data["to"]
        preview = _email_preview(journey, step_key, form.cleaned_data["contact"], to=to)
        if preview.message is None:
            form.add_error("contact", preview.problem)
        else:
            test = dataclasses.replace(preview.message, subject=f"[Test] {preview.message.subject}")
            try:
                build_email(test, headers={}, connection=get_connection()).send()
            except Exception as exc:
                form.add_error(None, f"The mail server refused it: {type(exc).__name__}: {exc}")
            else:
                sent_to = to
    context = {"journey": journey, "step_key": step_key, "test_send_form": form, "sent_to": sent_to}
    return render(request, "journeys/_email_preview.html#test-send", context)
