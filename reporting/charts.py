"""Server-drawn SVG charts (pygal) in the product's colours, inline and script-free.

pygal links a script from a CDN unless `js=[]`, and even then writes an inline script with
its tooltip config; both are removed from the tree before serialising, so the page loads
nothing from elsewhere and the markup can be marked safe.
"""

import datetime
import hashlib
from xml.etree import ElementTree

import pygal
from django.core.cache import cache
from django.utils.safestring import SafeString, mark_safe
from pygal.style import Style

from reporting import selectors

# The product's palette (static/css/app.css): accent first, then calm contrasting hues.
SERIES_COLOURS = ("#3656d9", "#e0792b", "#1c9a6c", "#8a4fd1", "#c8376b", "#1b8fb3")
MARKER_COLOUR = "#b42318"
CHART_CACHE_VERSION = 1
CHART_CACHE_SECONDS = 600

STYLE = Style(
    background="transparent",
    plot_background="#ffffff",
    foreground="#1d2330",
    foreground_strong="#1d2330",
    foreground_subtle="#dde1e7",
    opacity="0.85",
    opacity_hover="1",
    colors=SERIES_COLOURS,
    font_family='system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif',
    label_font_size=13,
    major_label_font_size=13,
    legend_font_size=13,
    title_font_size=15,
    value_font_size=12,
    tooltip_font_size=12,
    value_colors=("#ffffff",),
)

COMMON = {
    "js": [],
    "style": STYLE,
    "disable_xml_declaration": True,
    "explicit_size": False,
    "legend_at_bottom": True,
    "legend_at_bottom_columns": 4,
    "margin": 12,
    # pygal under-measures a bottom legend with system fonts; leave it room.
    "margin_bottom": 30,
    "show_y_guides": True,
    "show_x_guides": False,
    "truncate_label": -1,
    "truncate_legend": -1,
}


def _style(colours) -> Style:
    """The product style with this chart's series colours, in order."""
    return Style(**{**STYLE.to_dict(), "colors": tuple(colours)})


def inline_svg(chart, *, label: str) -> SafeString:
    """The chart as inline SVG with an accessible name and no script of any kind.

    Drawing costs pygal tens of milliseconds, so the result is cached under a digest of
    everything that shapes it (type, options, labels, series): the same figures give the
    same chart, and new figures a new key."""
    options = {
        name: value.to_dict() if isinstance(value, Style) else value
        for name, value in chart.config.__dict__.items()
    }
    key = "report-chart:" + hashlib.sha256(
        repr(
            (CHART_CACHE_VERSION, type(chart).__name__, label, options, chart.x_labels,
             chart.raw_series)
        ).encode()
    ).hexdigest()  # fmt: skip
    svg = cache.get(key)
    if svg is None:
        svg = _draw(chart, label=label)
        cache.set(key, svg, CHART_CACHE_SECONDS)
    return mark_safe(svg)  # noqa: S308 - built from our numbers, scripts removed in _draw


def _draw(chart, *, label: str) -> str:
    tree = chart.render_tree()
    for parent in tree.iter():
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    tree.set("role", "img")
    tree.set("aria-label", label)
    svg = ElementTree.tostring(tree, encoding="unicode")
    if "<script" in svg.lower():
        raise ValueError("A chart still contains a script; refusing to inline it.")
    return svg


def percent(value: float) -> str:
    return f"{value:.1f}%"


def rates_chart(report: selectors.Report) -> SafeString | None:
    """Conversion rate per version with its 95% Wilson interval as whiskers."""
    rows = [row for row in report.versions if row.rate is not None]
    if not rows:
        return None
    chart = pygal.Bar(
        **COMMON,
        height=300,
        width=420,
        show_legend=False,
        print_values=True,
        print_values_position="center",
        value_formatter=percent,
        y_title="Conversion rate (%)",
        range=(0, min(100, max(row.ci_high for row in rows) * 100 * 1.15 + 1)),
    )
    chart.x_labels = [f"v{row.version}" for row in rows]
    chart.add(
        "Rate",
        [
            {
                "value": row.rate * 100,
                "ci": {"low": row.ci_low * 100, "high": row.ci_high * 100},
                "color": SERIES_COLOURS[i % len(SERIES_COLOURS)],
            }
            for i, row in enumerate(rows)
        ],
    )
    return inline_svg(chart, label="Conversion rate per version with 95% intervals")


def _days(report: selectors.Report) -> list[datetime.date]:
    if not report.daily:
        return []
    first, last = report.daily[0].day, max(d.day for d in report.daily)
    return [first + datetime.timedelta(days=i) for i in range((last - first).days + 1)]


def over_time_chart(report: selectors.Report) -> SafeString | None:
    """Conversions per day and version; every change to the conversion's definition is a
    red marker on the day it happened."""
    days = _days(report)
    if not days:
        return None
    index = {day: i for i, day in enumerate(days)}
    markers = [None] * len(days)
    for mark in report.revisions:
        if mark.at.date() in index:
            markers[index[mark.at.date()]] = mark
    chart = pygal.Line(
        **{
            **COMMON,
            "style": _style(
                [SERIES_COLOURS[i % len(SERIES_COLOURS)] for i in range(len(report.ctx.versions))]
                + [MARKER_COLOUR]
            ),
        },
        height=320,
        width=760,
        show_dots=False,
        stroke_style={"width": 2.5},
        x_label_rotation=0,
        show_minor_x_labels=False,
        x_labels_major_every=7,
        y_title="Converted, by start day",
        min_scale=3,
        include_x_axis=True,
    )
    chart.x_labels = [day.strftime("%b %d") for day in days]
    series: dict[int, list] = {v.number: [None] * len(days) for v in report.ctx.versions}
    first_day: dict[int, int] = {}
    for d in report.daily:
        first_day[d.version] = min(first_day.get(d.version, len(days)), index[d.day])
    for number, values in series.items():
        # Zero from the version's first enrollment on; no line before it existed.
        for i in range(first_day.get(number, len(days)), len(days)):
            values[i] = 0
    for d in report.daily:
        series[d.version][index[d.day]] += d.converted
    top = max((v for values in series.values() for v in values if v is not None), default=0) or 1
    for number, values in series.items():
        chart.add(f"v{number}", values)
    if any(m is not None for m in markers):
        chart.add(
            "Conversion changed",
            [None if m is None else {"value": top, "label": m.summary} for m in markers],
            stroke=False,
            show_dots=True,
            dots_size=6,
        )
    return inline_svg(chart, label="Conversions per day and version")


# Long step names overlapped the bars; pygal keeps the whole name in the label's title.
FUNNEL_LABEL_CHARS = 18


def funnel_chart(report: selectors.Report) -> SafeString | None:
    """Share of each version's enrollments that entered each step, steps lined up by key."""
    order = selectors.step_order(report.ctx)
    if not order or not report.steps:
        return None
    enrolled = {row.version: row.enrolled for row in report.versions}
    found = {(s.version, s.step): s.entered for s in report.steps}
    chart = pygal.HorizontalBar(
        **{**COMMON, "truncate_label": FUNNEL_LABEL_CHARS},
        height=max(220, 60 + 44 * len(order) * max(1, len(enrolled)) // 2),
        width=560,
        value_formatter=percent,
        x_title="Entered the step (% of enrolled)",
        range=(0, 100),
    )
    labels = selectors.step_labels(report.ctx)
    chart.x_labels = [labels.get(key, key) for key in reversed(order)]
    for number, total in enrolled.items():
        chart.add(
            f"v{number}",
            [
                (found[(number, key)] * 100 / total if total else 0)
                if (number, key) in found
                else None
                for key in reversed(order)
            ],
        )
    return inline_svg(chart, label="Step funnel: share of enrollments entering each step")
