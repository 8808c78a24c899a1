import csv
import datetime
import io
import re
from decimal import Decimal
from html.parser import HTMLParser

import pytest

from conversions.models import Revision
from conversions.tests.factories import ConversionFactory, GoalFactory
from journeys.models import JourneyVersion
from journeys.tests.factories import JourneyFactory, JourneyVersionFactory, UserFactory
from reporting import selectors, tables
from reporting.tests.factories import enroll

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 6, 1, 8, 0, tzinfo=datetime.UTC)
D = datetime.timedelta(days=1)
H = datetime.timedelta(hours=1)
URL = "/journeys/trial-nurture/report/"
DEFINITION = {
    "settings": {"reentry": "once", "holdout_percent": 10},
    "triggers": [],
    "exit_when": [],
    "steps": [
        {"key": "welcome", "type": "send_email", "next": "wait"},
        {"key": "wait", "type": "wait", "next": "nudge"},
        {"key": "nudge", "type": "send_sms", "next": "convert"},
        {"key": "convert", "type": "convert", "next": None},
    ],
}


@pytest.fixture
def journey():
    journey = JourneyFactory(key="trial-nurture", name="Trial nurture")
    paid = ConversionFactory(
        journey=journey, key="paid", name="Started paid plan", value=Decimal("49")
    )
    goal = GoalFactory(journey=journey, key="activated", name="Activated")
    v1 = JourneyVersionFactory(
        journey=journey, number=1, definition=DEFINITION, published_at=T0,
        retired_at=T0 + 5 * D, state=JourneyVersion.State.RETIRED,
    )  # fmt: skip
    v2 = JourneyVersionFactory(
        journey=journey, number=2, definition=DEFINITION, published_at=T0 + 5 * D,
        state=JourneyVersion.State.LIVE,
    )  # fmt: skip
    full = ("welcome", "wait", "nudge", "convert")
    for i in range(12):
        enroll(v1, T0 + (i % 5) * D, path=full if i < 5 else full[:2],
               awards=((paid, 30 * H),) if i < 5 else (), goals=((goal, 5 * H),) if i < 3 else ())  # fmt: skip
    for i in range(9):
        enroll(v2, T0 + (5 + i % 3) * D, path=full if i < 6 else full[:3],
               awards=((paid, 20 * H),) if i < 6 else ())  # fmt: skip
    enroll(v2, T0 + 6 * D, held_out=True, awards=((paid, 10 * H),))
    Revision.objects.create(
        journey=journey, conversion=paid, kind=Revision.Kind.CHANGED, snapshot={},
        changes={"value": [39, 49]}, created_at=T0 + 3 * D,
    )  # fmt: skip
    return journey


class Tables(HTMLParser):
    """Rows of cell texts of every table, by caption."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.row, self.cell, self.in_caption = (
            {},
            None,
            None,
            None,
            False,
        )

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.current = []
        elif tag == "caption":
            self.in_caption, self.caption = True, ""
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "caption":
            self.in_caption = False
            self.tables[self.caption.strip()] = self.current
        elif tag in ("td", "th") and self.row is not None:
            self.row.append(self.cell.strip())
            self.cell = None
        elif tag == "tr":
            self.current.append(self.row)

    def handle_data(self, data):
        if self.in_caption:
            self.caption += data
        elif self.cell is not None:
            self.cell += data


def tables_of(html):
    parser = Tables()
    parser.feed(html)
    return parser.tables


def test_anonymous_visitor_is_sent_to_login(client, journey):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("role", ["viewer", "editor", "publisher", "superuser"])
def test_every_role_can_read_the_report(client, journey, role, request):
    client.force_login(request.getfixturevalue(role))
    response = client.get(URL)
    assert response.status_code == 200
    assert b"Version comparison" in response.content


def test_a_user_without_a_role_is_refused(client, journey):
    client.force_login(UserFactory(username="nobody"))
    assert client.get(URL).status_code == 403


def test_charts_are_inline_svg_with_no_script(client, viewer, journey):
    client.force_login(viewer)
    html = client.get(URL).content.decode()
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) == 3
    for svg in svgs:
        assert "<script" not in svg.lower()
        assert 'role="img"' in svg
    for src in re.findall(r"<script[^>]*src=\"([^\"]+)\"", html):
        assert src.startswith("/static/"), src
    assert "kozea.github.io" not in html and "pygal.js" not in html


def test_table_numbers_equal_the_api(client, viewer, api, journey):
    client.force_login(viewer)
    tables = tables_of(client.get(URL).content.decode())
    rows = tables["Version comparison: Started paid plan"]
    header, v1, v2 = rows
    assert header[:5] == ["Version", "Enrolled (incl. held out)", "Converted", "Rate", "95% CI"]
    body = api.get("/api/v1/journeys/trial-nurture/report").json()
    for row, version in zip((v1, v2), body["versions"], strict=True):
        assert row[1] == str(version["enrolled"])
        assert row[2] == str(version["converted"])
        assert row[3] == f"{version['rate'] * 100:.1f}%"
        assert row[4] == f"{version['ci_low'] * 100:.1f}–{version['ci_high'] * 100:.1f}%"
        assert row[5] == f"{version['value']:,.2f}"
    assert v2[6] == f"{body['versions'][1]['diff'] * 100:+.1f}"
    low, high = body["versions"][1]["diff_ci_low"], body["versions"][1]["diff_ci_high"]
    assert v2[7] == f"{low * 100:+.1f} to {high * 100:+.1f}"
    assert v2[-1] == "before/after"
    steps = {r[0]: r for r in tables["Step funnel"][1:]}
    for step in body["steps"]:
        column = 1 + 3 * (step["version"] - 1)
        assert steps[step["step"]][column] == str(step["entered"])
        assert steps[step["step"]][column + 1] == str(step["converted"])


def test_page_shows_before_after_verdict_revisions_and_holdout(client, viewer, journey):
    client.force_login(viewer)
    html = client.get(URL).content.decode()
    assert "Not enough data yet to compare v2 with v1" in html
    assert "Before/after comparisons are weaker than a split" in html
    assert "Changed: value" in html
    assert "Lift over the holdout" in html
    assert "Received the journey" in html


def test_htmx_filter_request_swaps_only_the_report(client, viewer, journey):
    client.force_login(viewer)
    response = client.get(URL + "?versions=2", headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert html.lstrip().startswith('<div id="report"')
    assert tables_of(html)["Version comparison: Started paid plan"][1][0] == "v2 (baseline)"


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_invalid_filters_show_inline_errors_with_a_400(client, viewer, journey):
    client.force_login(viewer)
    response = client.get(URL + "?start=2026-06-10&end=2026-06-01", headers=BROWSER)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert "The end date is before the start date." in response.content.decode()
    response = client.get(URL + "?versions=1&baseline=2", headers=BROWSER)
    assert response.status_code == 400
    assert "The baseline must be one of the versions shown." in response.content.decode()


def test_htmx_filter_request_with_a_bad_date_swaps_the_report_with_its_error(
    client, viewer, journey
):
    client.force_login(viewer)
    response = client.get(URL + "?end=9999-12-31", headers={"HX-Request": "true"})
    assert response.status_code == 400
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="report"')
    assert "year 1 to 9998" in html


REPORT_ROUTES = [
    URL,
    "/journeys/trial-nurture/report.csv",
    *(f"/journeys/trial-nurture/report/panels/{panel}/" for panel in selectors.SLOW_PANELS),
    "/journeys/trial-nurture/report/contacts/?path=welcome",
]
OUT_OF_RANGE = [
    ("end=9999-12-31", "end", "year 1 to 9998"),
    ("start=9999-01-01", "start", "year 1 to 9998"),
    ("start=0000-01-01", "start", "valid date"),
    ("start=2026-06-10&end=2026-06-01", "end", "before the start"),
]


@pytest.mark.parametrize("route", REPORT_ROUTES)
@pytest.mark.parametrize(("query", "field", "message"), OUT_OF_RANGE)
def test_out_of_range_filters_get_a_400_in_the_error_shape_on_every_route(
    client, viewer, journey, route, query, field, message
):
    client.force_login(viewer)
    response = client.get(route + ("&" if "?" in route else "?") + query)
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    (error,) = response.json()["errors"]
    assert error["loc"] == ["query", field]
    assert message in error["message"]


@pytest.mark.parametrize("route", REPORT_ROUTES)
def test_the_widest_range_in_bounds_still_answers(client, viewer, journey, route):
    client.force_login(viewer)
    query = "start=0001-01-01&end=9998-12-31"
    response = client.get(route + ("&" if "?" in route else "?") + query)
    assert response.status_code == 200, response.content


def test_path_contacts_page_shows_a_bad_filter_to_a_browser(client, viewer, journey):
    client.force_login(viewer)
    response = client.get(
        "/journeys/trial-nurture/report/contacts/?path=welcome&end=9999-12-31", headers=BROWSER
    )
    assert response.status_code == 400
    assert "year 1 to 9998" in response.content.decode()


def test_filter_form_is_shareable_and_pushes_its_url(client, viewer, journey):
    client.force_login(viewer)
    html = client.get(URL + "?start=2026-06-02&versions=1").content.decode()
    assert 'hx-push-url="true"' in html
    assert 'value="2026-06-02"' in html
    assert "report.csv?start=2026-06-02&amp;versions=1" in html


def test_journey_without_conversions_explains_what_to_do(client, viewer):
    JourneyFactory(key="empty")
    client.force_login(viewer)
    response = client.get("/journeys/empty/report/")
    assert response.status_code == 200
    assert "has no conversions to report on" in response.content.decode()


def test_unknown_journey_is_404(client, viewer, db):
    client.force_login(viewer)
    assert client.get("/journeys/nope/report/").status_code == 404


def read_csv(response):
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_csv_defaults_to_the_version_comparison(client, viewer, api, journey):
    client.force_login(viewer)
    response = client.get("/journeys/trial-nurture/report.csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "trial-nurture-paid-versions.csv" in response["Content-Disposition"]
    header, v1, v2 = read_csv(response)
    assert header[0] == "Version" and header[4] == "Rate"
    body = api.get("/api/v1/journeys/trial-nurture/report").json()
    assert [int(v1[1]), int(v1[3])] == [
        body["versions"][0]["enrolled"],
        body["versions"][0]["converted"],
    ]
    assert float(v2[4]) == pytest.approx(body["versions"][1]["rate"], abs=1e-6)
    assert float(v2[11]) == pytest.approx(body["versions"][1]["p_value"], abs=1e-6)


@pytest.mark.parametrize(
    "table,first",
    [("steps", ["welcome", "12", "5"]), ("daily", ["2026-06-01", "v1", "3", "1"]),
     ("paths", ["welcome → wait → nudge → convert", "11", "11"]),
     ("messages", ["welcome", "email", "v1", "12", "0", "0", "0", "0", "0", "0"]), ("goals", ["Activated", "v1", "3"]),
     ("time_to_convert", ["v1", "5", "105544.0", "105544.0"]), ("revisions", [])],  # 30 h, read as its bucket's middle
)  # fmt: skip
def test_csv_of_every_table(client, viewer, journey, table, first):
    client.force_login(viewer)
    response = client.get(f"/journeys/trial-nurture/report.csv?table={table}")
    assert response.status_code == 200
    rows = read_csv(response)
    if first:
        assert rows[1][: len(first)] == first


def test_csv_refuses_an_unknown_table_or_bad_filter(client, viewer, journey):
    client.force_login(viewer)
    assert client.get("/journeys/trial-nurture/report.csv?table=nope").status_code == 400
    response = client.get("/journeys/trial-nurture/report.csv?conversion=nope")
    assert response.status_code == 400


def test_page_loads_the_raw_fact_panels_after_answering(client, viewer, journey):
    client.force_login(viewer)
    html = client.get(URL + "?versions=1").content.decode()
    for panel in ("paths", "messages", "goals", "time_to_convert"):
        assert f'hx-get="/journeys/trial-nurture/report/panels/{panel}/?versions=1"' in html
    response = client.get("/journeys/trial-nurture/report/panels/goals/?versions=1")
    assert response.status_code == 200
    rows = tables_of(response.content.decode())["Goals"]
    assert rows[1][:3] == ["Activated", "v1", "3"]
    assert len(rows) == 2  # v2 filtered out
    assert client.get("/journeys/trial-nurture/report/panels/nope/").status_code == 404
    assert client.get("/journeys/trial-nurture/report/panels/goals/?baseline=9").status_code == 400


def test_path_link_lists_the_contacts_who_took_it(client, viewer, journey):
    client.force_login(viewer)
    html = client.get("/journeys/trial-nurture/report/panels/paths/").content.decode()
    link = re.search(
        r'href="(/journeys/trial-nurture/report/contacts/\?path=welcome%2Cwait)"', html
    )
    assert link
    response = client.get(link.group(1).replace("&amp;", "&"))
    assert response.status_code == 200
    rows = tables_of(response.content.decode())["Contacts who took this path"]
    assert len(rows) == 1 + 7  # header + the seven v1 enrollments that stopped at wait


def test_randomized_report_offers_the_side_by_side_period_alone(client, viewer):
    journey = JourneyFactory(key="split")
    ConversionFactory(journey=journey, key="paid")
    v1 = JourneyVersionFactory(journey=journey, number=1, definition=DEFINITION, published_at=T0)
    JourneyVersionFactory(
        journey=journey, number=2, definition=DEFINITION, published_at=T0 + 3 * D + H,
        split_with=v1, traffic=50,
    )  # fmt: skip
    enroll(v1, T0 + D)
    client.force_login(viewer)
    html = client.get("/journeys/split/report/").content.decode()
    assert "ran side by side from Jun 4, 2026 09:00 UTC" in html
    assert 'href="/journeys/split/report/?start=2026-06-05"' in html
    assert "(from Jun 5, its first whole day" in html
    html = client.get("/journeys/split/report/?start=2026-06-05").content.decode()
    assert "ran side by side" not in html


def test_journey_with_only_a_draft_has_an_empty_report_not_an_error(client, viewer, api):
    journey = JourneyFactory(key="drafty")
    ConversionFactory(journey=journey, key="paid")
    JourneyVersionFactory(
        journey=journey, number=1, definition=DEFINITION, published_at=None,
        state=JourneyVersion.State.DRAFT,
    )  # fmt: skip
    client.force_login(viewer)
    response = client.get("/journeys/drafty/report/")
    assert response.status_code == 200
    assert "Nothing is published yet" in response.content.decode()
    body = api.get("/api/v1/journeys/drafty/report").json()
    assert body["versions"] == [] and body["steps"] == []


FORMULAS = ['=HYPERLINK("http://x","y")', "@SUM(A1:A9)", "+1+2", "-1+2", "\tTab", "\rReturn"]


def test_csv_neutralises_text_a_spreadsheet_would_run(client, viewer, journey):
    for i, name in enumerate(FORMULAS):
        GoalFactory(journey=journey, name=name, normalized_name=f"formula-{i}")
    client.force_login(viewer)
    rows = read_csv(client.get("/journeys/trial-nurture/report.csv?table=goals"))
    names = {row[0] for row in rows[1:]}
    assert {"'" + name for name in FORMULAS} <= names
    assert "Activated" in names


def test_csv_keeps_negative_numbers_as_numbers(client, viewer, journey):
    client.force_login(viewer)
    rows = read_csv(client.get("/journeys/trial-nurture/report.csv?baseline=2"))
    header, v1 = rows[0], rows[1]
    diff = v1[header.index("Diff (pts)")]
    assert diff.startswith("-") and float(diff) < 0


@pytest.mark.parametrize(
    ("value", "written"),
    [(-3, -3), (-0.25, -0.25), (Decimal("-4.50"), Decimal("-4.50")), ("-3", "'-3"),
     ("=1+1", "'=1+1"), ("a=b", "a=b"), ("", ""), (None, "")],
)  # fmt: skip
def test_csv_value_quotes_formula_text_only(value, written):
    assert tables.csv_value(value) == written


def test_a_split_states_its_stopping_rule_and_when_it_will_be_known(client, viewer):
    journey = JourneyFactory(key="split")
    paid = ConversionFactory(journey=journey, key="paid")
    v1 = JourneyVersionFactory(journey=journey, number=1, definition=DEFINITION, published_at=T0)
    v2 = JourneyVersionFactory(
        journey=journey, number=2, definition=DEFINITION, published_at=T0, split_with=v1,
        traffic=50,
    )  # fmt: skip
    for i in range(10):
        enroll(v1, T0 + H, awards=((paid, H),) if i < 3 else ())
        enroll(v2, T0 + H, awards=((paid, H),) if i < 5 else ())
    client.force_login(viewer)
    html = client.get("/journeys/split/report/").content.decode()
    assert "Looking every day is safe" in html
    assert "When will we know? v2 vs v1: with the enrollments so far, a difference of" in html
    assert "Always-valid p" in html and "Chance to beat" in html


def test_enrolled_says_whether_it_counts_the_holdout_on_the_list_the_report_and_the_api(
    client, viewer, api, journey
):
    # 22 enrollments, one of them held out: the list leaves it out, the report counts it in
    # its version, and each says which figure it is.
    client.force_login(viewer)
    listing = tables_of(client.get("/journeys/").content.decode())["Journeys"]
    column = listing[0].index("Enrolled (excl. held out)")
    assert listing[1][column] == "21"

    report = tables_of(client.get(URL).content.decode())["Version comparison: Started paid plan"]
    column = report[0].index("Enrolled (incl. held out)")
    assert [row[column] for row in report[1:]] == ["12", "10"]

    schema = api.get("/api/v1/openapi.json").json()["components"]["schemas"]["VersionOut"]
    assert "held out included" in schema["properties"]["enrolled"]["description"]
    assert "Enrolled (excl. held out)" in schema["properties"]["enrolled"]["description"]


def test_path_link_keeps_multi_valued_filters_after_apply(client, viewer, journey):
    # Issue 14 bug 1: the link carried versions=['1', '2'] and found nobody.
    client.force_login(viewer)
    query = "?conversion=paid&versions=1&versions=2&start=2026-06-01"
    html = client.get("/journeys/trial-nurture/report/panels/paths/" + query).content.decode()
    links = re.findall(r'href="(/journeys/trial-nurture/report/contacts/\?[^"]*)"', html)
    assert links
    for link in links:
        link = link.replace("&amp;", "&")
        assert "%5B" not in link and "versions=1&versions=2" in link
    link = next(x for x in links if x.endswith("path=welcome%2Cwait")).replace("&amp;", "&")
    response = client.get(link)
    assert response.status_code == 200
    rows = tables_of(response.content.decode())["Contacts who took this path"]
    assert len(rows) == 1 + 7


def test_a_split_published_today_states_its_real_start_and_offers_no_empty_period(
    client, viewer, time_machine
):
    # Issue 14 bug 2: published Nov 30 16:18 UTC, the note said "from Dec 1" and its link
    # showed 0 enrolled, since Dec 1 had not begun.
    published = datetime.datetime(2026, 11, 30, 16, 18, tzinfo=datetime.UTC)
    time_machine.move_to(published + 2 * H, tick=False)
    journey = JourneyFactory(key="split")
    ConversionFactory(journey=journey, key="paid")
    v1 = JourneyVersionFactory(
        journey=journey, number=1, definition=DEFINITION, published_at=published - 9 * D
    )
    JourneyVersionFactory(
        journey=journey, number=2, definition=DEFINITION, published_at=published,
        split_with=v1, traffic=50,
    )  # fmt: skip
    enroll(v1, published - D)
    client.force_login(viewer)
    html = client.get("/journeys/split/report/").content.decode()
    assert "ran side by side from Nov 30, 2026 16:18 UTC" in html
    assert "start=2026-12-01" not in html
    assert "can be compared from Dec 1, its first whole day" in html
    time_machine.move_to(published + D, tick=False)
    html = client.get("/journeys/split/report/").content.decode()
    assert 'href="/journeys/split/report/?start=2026-12-01"' in html


def test_reports_name_steps_by_their_labels_and_keep_the_key_in_the_csv(client, viewer):
    # Issue 14 bug 4: the report said `evaluate-goal-1`, not the name the marketer gave it.
    journey = JourneyFactory(key="named")
    ConversionFactory(journey=journey, key="paid")
    steps = [
        {"key": "welcome", "type": "send_email", "name": "Welcome email", "next": "nudge"},
        {"key": "nudge", "type": "send_sms", "next": None},
    ]
    version = JourneyVersionFactory(
        journey=journey, number=1, definition={**DEFINITION, "steps": steps}, published_at=T0
    )
    enroll(version, T0, path=("welcome", "nudge"))
    client.force_login(viewer)
    html = client.get("/journeys/named/report/").content.decode()
    assert [row[0] for row in tables_of(html)["Step funnel"][1:]] == ["Welcome email", "nudge"]
    assert "Welcome email" in html.split('aria-label="Step funnel')[1].split("</svg>")[0]
    panel = client.get("/journeys/named/report/panels/paths/").content.decode()
    assert tables_of(panel)["Most common paths"][1][0] == "Welcome email → nudge"
    panel = client.get("/journeys/named/report/panels/messages/").content.decode()
    assert tables_of(panel)["Messages"][1][0] == "Welcome email"
    rows = read_csv(client.get("/journeys/named/report.csv?table=steps"))
    assert (rows[0][0], rows[0][-1]) == ("Step", "Step key")
    assert (rows[1][0], rows[1][-1]) == ("Welcome email", "welcome")
    rows = read_csv(client.get("/journeys/named/report.csv?table=paths"))
    assert (rows[1][0], rows[1][-1]) == ("Welcome email → nudge", "welcome → nudge")
    rows = read_csv(client.get("/journeys/named/report.csv?table=messages"))
    assert (rows[1][0], rows[1][-1]) == ("Welcome email", "welcome")
