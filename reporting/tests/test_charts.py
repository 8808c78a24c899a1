import dataclasses
import re

import pytest

from reporting import charts, selectors
from reporting.tests.test_selectors import history  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db


def chart_id(svg):
    return re.search(r'<svg[^>]* id="([^"]+)"', svg).group(1)


def test_charts_are_script_free_svg_with_an_accessible_name(history):  # noqa: F811
    report = selectors.full_report(selectors.report_context(journey=history["journey"]))
    for draw in (charts.rates_chart, charts.over_time_chart, charts.funnel_chart):
        svg = str(draw(report))
        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert "<script" not in svg.lower()
        assert 'role="img" aria-label="' in svg


def test_the_same_figures_reuse_the_drawn_chart_and_new_figures_redraw(history):  # noqa: F811
    report = selectors.full_report(selectors.report_context(journey=history["journey"]))
    first = charts.rates_chart(report)
    assert charts.rates_chart(report) == first  # pygal gives every drawing a new id
    changed = dataclasses.replace(report, versions=report.versions[:1])
    assert chart_id(charts.rates_chart(changed)) != chart_id(first)


def test_rates_chart_shows_each_rate_with_its_interval(history):  # noqa: F811
    report = selectors.full_report(selectors.report_context(journey=history["journey"]))
    svg = charts.rates_chart(report)
    for row in report.versions:
        assert f"{row.rate * 100:.1f}%" in svg
    assert svg.count('class="ci"') == len(report.versions)  # one whisker per bar
