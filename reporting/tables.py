"""The report's tables, built once from a Report: the page shows their formatted cells and
the CSV download writes their raw values, so the two can never disagree."""

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from reporting import selectors, stats


@dataclass(frozen=True)
class Column:
    label: str
    kind: str = "text"  # text, int, pct, pts, money, p, duration, date, pct_range, pts_range
    # Where the column appears: a page shows an interval as one cell, a CSV as two numbers.
    page: bool = True
    csv: bool = True

    @property
    def numeric(self) -> bool:
        return self.kind != "text"


@dataclass(frozen=True)
class Cell:
    text: str
    numeric: bool = False
    href: str | None = None


@dataclass
class Table:
    key: str
    title: str
    columns: list[Column]
    rows: list[list] = field(default_factory=list)
    links: list[str | None] = field(default_factory=list)  # one per row, for its first cell
    empty: str = "Nothing yet."

    def add(self, *values, link: str | None = None) -> None:
        self.rows.append(list(values))
        self.links.append(link)

    @property
    def page_columns(self) -> list[Column]:
        return [column for column in self.columns if column.page]

    @property
    def display_rows(self) -> list[list[Cell]]:
        return [
            [
                Cell(
                    FORMATS[column.kind](value) if _present(value) else "–",
                    column.numeric,
                    link if i == 0 else None,
                )
                for i, (column, value) in enumerate(zip(self.columns, row, strict=True))
                if column.page
            ]
            for row, link in zip(self.rows, self.links, strict=True)
        ]

    @property
    def html_rows(self) -> SafeString:
        """The body rows as HTML: built here because a template loop over a few hundred
        cells costs more than the report's queries."""
        rows = []
        for cells in self.display_rows:
            parts = []
            for i, cell in enumerate(cells):
                text = escape(cell.text)
                if i == 0:
                    if cell.href:
                        text = f'<a href="{escape(cell.href)}">{text}</a>'
                    parts.append(f'<th scope="row">{text}</th>')
                else:
                    parts.append(
                        f'<td class="num">{text}</td>' if cell.numeric else f"<td>{text}</td>"
                    )
            rows.append(f"<tr>{''.join(parts)}</tr>")
        return mark_safe("\n".join(rows))  # noqa: S308 - every text escaped above

    def csv_rows(self) -> list[list]:
        keep = [i for i, column in enumerate(self.columns) if column.csv]
        header = [csv_value(self.columns[i].label) for i in keep]
        return [header] + [[csv_value(row[i]) for i in keep] for row in self.rows]


def _present(value) -> bool:
    if isinstance(value, tuple):
        return all(v is not None for v in value)
    return value is not None


def format_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


FORMATS: dict[str, Callable] = {
    "text": str,
    "int": lambda v: f"{v:,}",
    "pct": lambda v: f"{v * 100:.1f}%",
    "pts": lambda v: stats.format_points(v, sign=True),
    "money": lambda v: f"{v:,.2f}",
    "p": lambda v: "< 0.001" if v < 0.001 else f"{v:.3f}",
    "duration": format_duration,
    "date": lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v),
    "pct_range": lambda v: f"{v[0] * 100:.1f}–{v[1] * 100:.1f}%",
    "pts_range": lambda v: (
        f"{stats.format_points(v[0], sign=True)} to {stats.format_points(v[1], sign=True)}"
    ),
}


# A spreadsheet runs a cell that begins with one of these as a formula (OWASP's "CSV
# injection"): a goal named =HYPERLINK(...) would run on the marketer's machine.
# The comparison counts held-out enrollments in their version (intent to treat); the journeys
# list leaves them out. Each says so in its label, the same words everywhere.
ENROLLED_WITH_HOLDOUT = "Enrolled (incl. held out)"

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_value(value):
    """A cell as the CSV writes it: numbers stay numbers (a negative one too), text that a
    spreadsheet would run as a formula gets a leading ' so it shows as typed (contract 6.4)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def path_label(path: tuple[str, ...], labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    return " → ".join(labels.get(key, key) for key in path) if path else "(no steps yet)"


def contacts_url(report: selectors.Report, path: tuple[str, ...], query: dict) -> str:
    url = reverse("reporting:path_contacts", args=[report.ctx.journey.key])
    # doseq: a filter may hold several values (versions=1&versions=2), never a list's repr.
    return f"{url}?{urlencode({**query, 'path': ','.join(path)}, doseq=True)}"


def report_tables(
    report: selectors.Report, *, query: dict | None = None, only=None
) -> dict[str, Table]:
    """The tables of the page (`only` those keys), by the key `?table=` uses in the CSV."""
    query = query or {}
    builders = {
        "versions": versions_table,
        "holdout": holdout_table,
        "daily": daily_table,
        "revisions": revisions_table,
        "steps": steps_table,
        "paths": lambda r: paths_table(r, query),
        "messages": messages_table,
        "goals": goals_table,
        "time_to_convert": time_to_convert_table,
    }
    return {key: build(report) for key, build in builders.items() if only is None or key in only}


TABLE_KEYS = (
    "versions", "holdout", "daily", "revisions", "steps", "paths", "messages", "goals",
    "time_to_convert",
)  # fmt: skip


def versions_table(report: selectors.Report) -> Table:
    table = Table(
        "versions",
        f"Version comparison: {report.ctx.conversion.name}",
        [
            Column("Version"),
            Column(ENROLLED_WITH_HOLDOUT, "int"),
            Column("Held out", "int", page=False),
            Column("Converted", "int"),
            Column("Rate", "pct"),
            Column("95% CI", "pct_range", csv=False),
            Column("95% CI low", "pct", page=False),
            Column("95% CI high", "pct", page=False),
            Column("Value", "money"),
            Column("Diff (pts)", "pts"),
            Column("Diff 95% CI (pts)", "pts_range", csv=False),
            Column("Diff CI low (pts)", "pts", page=False),
            Column("Diff CI high (pts)", "pts", page=False),
            Column("p-value", "p"),
            Column("Always-valid p", "p"),
            Column("Chance to beat", "pct"),
            Column("Comparison"),
        ],  # fmt: skip
        empty="No published version in this report.",
    )
    for row in report.versions:
        c = row.comparison
        table.add(
            f"v{row.version}" + (" (baseline)" if c is None else ""),
            row.enrolled,
            row.held_out.enrolled,
            row.converted,
            row.rate,
            (row.ci_low, row.ci_high),
            row.ci_low,
            row.ci_high,
            row.counts.value,
            c.diff if c else None,
            (c.diff_ci_low, c.diff_ci_high) if c else None,
            c.diff_ci_low if c else None,
            c.diff_ci_high if c else None,
            c.p_value if c else None,
            c.p_value_always_valid if c else None,
            c.chance_to_beat if c else None,
            (c.kind if c.kind == stats.RANDOMIZED else "before/after") if c else "baseline",
        )
    return table


def holdout_table(report: selectors.Report) -> Table:
    table = Table(
        "holdout",
        "Holdout",
        [
            Column("Group"),
            Column("Enrolled", "int"),
            Column("Converted", "int"),
            Column("Rate", "pct"),
        ],
        empty="Nobody was held out: set holdout_percent in the journey's settings to measure lift.",
    )
    lift = report.holdout
    if lift is not None:
        table.add(
            "Received the journey", lift.treated_enrolled, lift.treated_converted, lift.treated_rate
        )
        table.add("Held out", lift.held_out_enrolled, lift.held_out_converted, lift.held_out_rate)
    return table


def daily_table(report: selectors.Report) -> Table:
    table = Table(
        "daily",
        "Conversions over time",
        [
            Column("Day", "date"),
            Column("Version"),
            Column("Enrolled", "int"),
            Column("Converted", "int"),
        ],
        empty="No enrollments in this period.",
    )
    for d in report.daily:
        table.add(d.day, f"v{d.version}", d.enrolled, d.converted)
    return table


def revisions_table(report: selectors.Report) -> Table:
    table = Table(
        "revisions",
        "Changes to the conversion",
        [Column("Changed at", "date"), Column("Change")],
        empty="The conversion has not changed.",
    )
    for mark in report.revisions:
        table.add(mark.at.strftime("%Y-%m-%d %H:%M UTC"), mark.summary)
    return table


def steps_table(report: selectors.Report) -> Table:
    numbers = [v.number for v in report.ctx.versions]
    columns = [Column("Step")]
    for n in numbers:
        columns += [Column(f"v{n} entered", "int"), Column(f"v{n} converted", "int"),
                    Column(f"v{n} converted of entered", "pct")]  # fmt: skip
    # The key last, so the columns before it stay where they were.
    columns.append(Column("Step key", page=False))
    table = Table("steps", "Step funnel", columns, empty="No steps.")
    found = {(s.version, s.step): s for s in report.steps}
    labels = selectors.step_labels(report.ctx)
    for key in selectors.step_order(report.ctx):
        cells: list = [labels.get(key, key)]
        for n in numbers:
            s = found.get((n, key))
            cells += (
                [s.entered, s.converted, stats.rate(s.converted, s.entered)] if s else [None] * 3
            )
        table.add(*cells, key)
    return table


def paths_table(report: selectors.Report, query: dict) -> Table:
    table = Table(
        "paths",
        "Most common paths",
        [
            Column("Path"),
            Column("Enrolled", "int"),
            Column("Converted", "int"),
            Column("Rate", "pct"),
            Column("Path keys", page=False),
        ],
        empty="No enrollment has taken a step yet.",
    )
    labels = selectors.step_labels(report.ctx)
    for p in report.paths:
        table.add(
            path_label(p.path, labels), p.enrolled, p.converted, p.rate, path_label(p.path),
            link=contacts_url(report, p.path, query),
        )  # fmt: skip
    return table


def messages_table(report: selectors.Report) -> Table:
    table = Table(
        "messages",
        "Messages",
        [
            Column("Step"),
            Column("Channel"),
            Column("Version"),
            Column("Sent", "int"),
            Column("Delivered", "int"),
            Column("Opened", "int"),
            Column("Clicked", "int"),
            Column("Bounced", "int"),
            Column("Unsubscribed", "int"),
            Column("Conversions attributed", "int"),
            Column("Value attributed", "money"),
            Column("Conversions per 100 sent", "money"),
            Column("Step key", page=False),
        ],  # fmt: skip
        empty="This journey sends no messages.",
    )
    labels = selectors.step_labels(report.ctx)
    for m in report.messages:
        per_100 = m.conversions * 100 / m.sent if m.sent else None
        table.add(
            labels.get(m.step, m.step), m.channel, f"v{m.version}", m.sent, m.delivered, m.opened, m.clicked,
            m.bounced, m.unsubscribed, m.conversions, m.value, per_100, m.step,
        )  # fmt: skip
    return table


def goals_table(report: selectors.Report) -> Table:
    enrolled = {row.version: row.enrolled for row in report.versions}
    table = Table(
        "goals",
        "Goals",
        [
            Column("Goal"),
            Column("Version"),
            Column("Achieved", "int"),
            Column("Of enrolled", "pct"),
            Column("Median time to achieve", "duration"),
            Column("90th percentile", "duration"),
        ],  # fmt: skip
        empty="This journey has no goals.",
    )
    for g in report.goals:
        table.add(
            g.name, f"v{g.version}", g.achieved, stats.rate(g.achieved, enrolled.get(g.version, 0)),
            g.median_seconds, g.p90_seconds,
        )  # fmt: skip
    return table


def time_to_convert_table(report: selectors.Report) -> Table:
    table = Table(
        "time_to_convert",
        "Time to convert",
        [
            Column("Version"),
            Column("Converted", "int"),
            Column("Median", "duration"),
            Column("90th percentile", "duration"),
        ],  # fmt: skip
    )
    for t in report.convert_times:
        table.add(f"v{t.version}", t.converted, t.median_seconds, t.p90_seconds)
    return table
