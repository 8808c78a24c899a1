"""docs/contract.md §4, the pages behind login: each needs one; the journeys list shows
status and headline rate; the report page and its CSV (charts and a table, a sequential
p-value worded as before/after, dated changes of the conversion); admin for every model,
with the report's rollups read-only."""

import datetime
import io

import pytest
from django.core.management import call_command
from django.test import Client

from journeys.tests.contract_example import CONTRACT_EXAMPLE
from tests.contract.public_surface import create, definition, live, publish
from tests.contract.sample_journeys import REPORT_CONVERSIONS, REPORT_STEPS, enroll_and_convert

pytestmark = pytest.mark.django_db

PAGES = [
    "/journeys/",
    "/journeys/trial-nurture/",
    "/journeys/trial-nurture/report/",
    "/journeys/trial-nurture/report.csv",
    "/admin/",
]


@pytest.fixture
def example_live(api):
    create(api, CONTRACT_EXAMPLE)
    publish(api, "trial-nurture", 1)


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_login(example_live, path):
    response = Client().get(path)
    assert response.status_code == 302
    assert "login" in response["Location"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_render_for_a_logged_in_user(example_live, superuser, path):
    client = Client()
    client.force_login(superuser)
    response = client.get(path)
    assert response.status_code == 200
    if path.endswith(".csv"):
        assert response["Content-Type"].startswith("text/csv")
        assert response.content.decode().splitlines()[0].startswith("Version,Enrolled")
        assert response["Content-Disposition"].startswith("attachment;")


def test_journeys_page_shows_status_and_headline_rate(api, viewer, clock):
    live(
        api, definition("rated", REPORT_STEPS, name="Rated journey", conversions=REPORT_CONVERSIONS)
    )
    enroll_and_convert(api, "r", 4, 1, 1)
    client = Client()
    client.force_login(viewer)
    html = client.get("/journeys/").content.decode()
    assert "Rated journey" in html
    assert ">Live<" in html or "Live" in html
    assert "25%" in html


def test_admin_lists_every_model(superuser):
    from django.apps import apps

    client = Client()
    client.force_login(superuser)
    html = client.get("/admin/").content.decode()
    for app in ("journeys", "conversions", "reporting"):
        for model in apps.get_app_config(app).get_models():
            assert f"/admin/{app}/{model._meta.model_name}/" in html, model


def test_report_page_marks_changes_of_the_conversion(api, superuser, clock):
    data = definition("changed", REPORT_STEPS, conversions=REPORT_CONVERSIONS)
    live(api, data)
    clock.shift(datetime.timedelta(days=3))
    data["conversions"][0]["value"] = 99
    assert api.post("/api/v1/journeys/changed/versions", data).status_code == 201
    client = Client()
    client.force_login(superuser)
    html = client.get("/journeys/changed/report/").content.decode()
    assert "Changes to" in html
    assert (
        "2026-03-05" in html
        or "5 Mar 2026" in html
        or "Mar 5, 2026" in html
        or "March 5, 2026" in html
    )


def test_sequential_report_page_shows_p_value_as_before_after_with_charts_and_table(
    api, superuser, clock
):
    data = definition("seq", REPORT_STEPS, conversions=REPORT_CONVERSIONS)
    live(api, data)
    enroll_and_convert(api, "a", 6, 2, 1)
    api.post("/api/v1/journeys/seq/versions", data)
    publish(api, "seq", 2)
    enroll_and_convert(api, "b", 6, 4, 1)
    client = Client()
    client.force_login(superuser)
    html = client.get("/journeys/seq/report/").content.decode()
    assert "<table" in html and "<svg" in html
    assert "before/after" in html.lower()
    csv = client.get("/journeys/seq/report.csv").content.decode().splitlines()
    assert len(csv) == 3  # header and one row per version


def test_admin_pages_of_report_rollups_load_and_are_read_only(api, superuser, clock):
    from django.apps import apps

    live(api, definition("rolled", REPORT_STEPS, conversions=REPORT_CONVERSIONS))
    enroll_and_convert(api, "r", 3, 1, 5)
    call_command("rebuild_report_rollups", stdout=io.StringIO())
    client = Client()
    client.force_login(superuser)
    for model in apps.get_app_config("reporting").get_models():
        base = f"/admin/reporting/{model._meta.model_name}/"
        assert client.get(base).status_code == 200, model
        assert client.get(base + "add/").status_code == 403, model
        for pk in model.objects.values_list("pk", flat=True):
            page = client.get(f"{base}{pk}/change/")
            assert page.status_code == 200, model
            assert b'name="_save"' not in page.content
