"""The agency's one-page summary of a delivery: verdict, files, rules, examples, drift, trend.

Everything on the page is read back from the agency's DuckDB file (the deliveries log and
the quarantine and warnings tables), so the page says what Flux stored, not what a run
believed. The page is one self-contained HTML file (inline CSS and SVG, no script, no
external asset): agencies open it from a mail attachment or a file share, often offline.
Delivered values are hostile input, so the template is rendered with autoescaping on.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import jinja2

from flux_pipelines.collections.eligibility import EligibilityResult, day_summary
from flux_pipelines.contracts.ddl import DELIVERIES_TABLE, PARTITION, DatasetTables
from flux_pipelines.contracts.model import Contract
from flux_pipelines.reports.broker import error_sources, warning_sources
from flux_pipelines.sql import table_exists

if TYPE_CHECKING:
    import duckdb


EXAMPLES_PER_RULE = 5
EXAMPLE_VALUE_CHARS = 200
TEMPLATE = "summary.html.j2"


@dataclass(frozen=True)
class FileLine:
    """One delivered file as the deliveries log recorded it."""

    file: str
    status: str
    rule_id: str | None
    reason: str | None
    rows_read: int | None
    rows_curated: int
    rows_quarantined: int
    rows_with_warnings: int
    unmapped: tuple[str, ...]
    missing: tuple[str, ...]
    contract_version: str

    @property
    def drifted(self) -> bool:
        return bool(self.unmapped or self.missing)


@dataclass(frozen=True)
class Example:
    file: str
    row_number: int | None
    unique_id: str | None
    field: str | None
    value_provided: str | None
    expected: str | None


@dataclass(frozen=True)
class RuleLine:
    """How often one rule fired on the day, with a few lines to look at."""

    rule_id: str
    severity: str
    category: str | None
    message: str
    violations: int
    rows: int
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True)
class DayPoint:
    """One delivery day's totals over every file (reject rate as the loader defines it)."""

    day: dt.date
    files: int
    rejected_files: int
    rows_read: int
    rows_curated: int
    rows_quarantined: int
    rows_with_warnings: int

    @property
    def reject_rate(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0


@dataclass(frozen=True)
class ChartMark:
    """One delivery day in the trend chart: a bar (rows read) and a dot (reject rate)."""

    point: DayPoint
    current: bool
    x: float
    width: float
    bar_y: float
    bar_height: float
    dot_x: float
    dot_y: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    top: float
    bottom: float
    left: float
    right: float
    max_rows: int
    max_rate: float
    marks: tuple[ChartMark, ...]

    @property
    def rate_line(self) -> str:
        return " ".join(f"{m.dot_x:.1f},{m.dot_y:.1f}" for m in self.marks)


@dataclass(frozen=True)
class DeliverySummary:
    """What the page shows; the template only formats it."""

    agency: str
    contract: Contract
    day: dt.date
    files: tuple[FileLine, ...]
    totals: DayPoint
    errors: int
    warnings: int
    rules: tuple[RuleLine, ...]
    history: tuple[DayPoint, ...]  # earlier delivery days, oldest first
    generated_at: dt.datetime
    contract_versions: tuple[str, ...] = field(default=())
    eligibility: EligibilityResult | None = None  # datasets mapping rights and content

    @property
    def rejected(self) -> tuple[FileLine, ...]:
        return tuple(f for f in self.files if f.status == "rejected")

    @property
    def previous(self) -> DayPoint | None:
        return self.history[-1] if self.history else None

    @property
    def comparison(self) -> str:
        """The change against the previous delivery, in words."""
        previous, now = self.previous, self.totals
        if previous is None:
            if not self.files:
                return "No delivery of this dataset is on record yet."
            return "First delivery on record: there is no earlier delivery to compare with."
        if not self.files:
            return (
                f"No delivery on {self.day.isoformat()}; the previous one, on "
                f"{previous.day.isoformat()}, had a reject rate of {previous.reject_rate:.1%}."
            )
        points = (now.reject_rate - previous.reject_rate) * 100
        return (
            f"Reject rate {now.reject_rate:.1%} vs {previous.reject_rate:.1%} on "
            f"{previous.day.isoformat()} ({points:+.1f} points); rows read "
            f"{now.rows_read:,} vs {previous.rows_read:,}."
        )

    @property
    def chart(self) -> Chart:
        points = [*self.history, self.totals] if self.files else list(self.history)
        return chart(points, current=self.day)


def collect_summary(
    conn: duckdb.DuckDBPyConnection,
    *,
    agency: str,
    contract: Contract,
    day: dt.date,
    errors: int,
    warnings: int,
    history_days: int,
) -> DeliverySummary:
    """Read everything the page shows for one delivery day from the agency file."""
    tables = DatasetTables.for_dataset(contract.dataset)
    files = delivered_files(conn, contract.dataset, day)
    versions = tuple(sorted({f.contract_version for f in files})) or (contract.version,)
    return DeliverySummary(
        agency=agency,
        contract=contract,
        day=day,
        files=files,
        totals=day_totals(day, files),
        errors=errors,
        warnings=warnings,
        rules=rule_lines(conn, tables, day, contract),
        history=earlier_days(conn, contract.dataset, day, history_days),
        generated_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        contract_versions=versions,
        eligibility=day_summary(conn, contract, day),
    )


def render_summary(summary: DeliverySummary) -> str:
    return _environment().get_template(TEMPLATE).render(s=summary)


# -- reading the agency file -------------------------------------------------------------------


def delivered_files(
    conn: duckdb.DuckDBPyConnection, dataset: str, day: dt.date
) -> tuple[FileLine, ...]:
    """The day's files, rejected ones first (they are what the agency must act on)."""
    if not table_exists(conn, DELIVERIES_TABLE):
        return ()
    rows = conn.execute(
        f"""SELECT file, status, rule_id, reason, rows_read, rows_curated, rows_quarantined,
                   rows_with_warnings, coalesce(unmapped_columns, []),
                   coalesce(missing_columns, []), contract_version
            FROM {DELIVERIES_TABLE} WHERE dataset = ? AND {PARTITION} = ?
            ORDER BY status <> 'rejected', file""",
        [dataset, day],
    ).fetchall()
    return tuple(
        FileLine(
            file, status, rule_id, reason, read, curated, quarantined, warned,
            unmapped=tuple(unmapped), missing=tuple(missing), contract_version=version,
        )
        for (file, status, rule_id, reason, read, curated, quarantined, warned, unmapped, missing,
             version) in rows
    )  # fmt: skip


def day_totals(day: dt.date, files: Sequence[FileLine]) -> DayPoint:
    return DayPoint(
        day=day,
        files=len(files),
        rejected_files=sum(f.status == "rejected" for f in files),
        rows_read=sum(f.rows_read or 0 for f in files),
        rows_curated=sum(f.rows_curated for f in files),
        rows_quarantined=sum(f.rows_quarantined for f in files),
        rows_with_warnings=sum(f.rows_with_warnings for f in files),
    )


def earlier_days(
    conn: duckdb.DuckDBPyConnection, dataset: str, day: dt.date, limit: int
) -> tuple[DayPoint, ...]:
    """Up to ``limit`` delivery days of the dataset before ``day``, oldest first."""
    if limit <= 0 or not table_exists(conn, DELIVERIES_TABLE):
        return ()
    rows = conn.execute(
        f"""SELECT {PARTITION}, count(*), count(*) FILTER (WHERE status = 'rejected'),
                   sum(coalesce(rows_read, 0)), sum(rows_curated), sum(rows_quarantined),
                   sum(rows_with_warnings)
            FROM {DELIVERIES_TABLE} WHERE dataset = ? AND {PARTITION} < ?
            GROUP BY 1 ORDER BY 1 DESC LIMIT ?""",
        [dataset, day, limit],
    ).fetchall()
    return tuple(DayPoint(*row) for row in reversed(rows))


def rule_lines(
    conn: duckdb.DuckDBPyConnection, tables: DatasetTables, day: dt.date, contract: Contract
) -> tuple[RuleLine, ...]:
    """Violations per rule and severity, most frequent first, with a few examples each.

    The message is the contract's own wording of the rule (a file rejected whole carries
    its specific reason in the files section instead).
    """
    union = _violations(conn, tables)
    counts = conn.execute(
        f"""SELECT rule_id, severity, min(category), min(message), count(*),
                   count(DISTINCT row(_file, _row_number))
            FROM {union} WHERE {PARTITION} = ?
            GROUP BY 1, 2 ORDER BY 5 DESC, 1""",
        [day],
    ).fetchall()
    examples = _examples(conn, union, day)
    wording = {entry.id: entry.message for entry in contract.catalogue()}
    return tuple(
        RuleLine(
            rule_id=rule_id,
            severity=severity,
            category=category,
            message=wording.get(rule_id, message),
            violations=violations,
            rows=rows,
            examples=tuple(examples.get((rule_id, severity), ())),
        )
        for rule_id, severity, category, message, violations, rows in counts
    )


def _violations(conn: duckdb.DuckDBPyConnection, tables: DatasetTables) -> str:
    """Every violation line of the dataset, fatal and warning, as one relation."""
    sources = [*error_sources(conn, tables), *warning_sources(conn, tables)]
    return "(" + " UNION ALL ".join(f"SELECT * FROM {s}" for s in sources) + ")"


def _examples(
    conn: duckdb.DuckDBPyConnection, union: str, day: dt.date
) -> dict[tuple[str, str], list[Example]]:
    rows = conn.execute(
        f"""SELECT rule_id, severity, _file, _row_number, unique_id, field,
                   left(value_provided, {EXAMPLE_VALUE_CHARS + 1}),
                   left(expected, {EXAMPLE_VALUE_CHARS + 1})
            FROM {union} WHERE {PARTITION} = ?
            QUALIFY row_number() OVER (
              PARTITION BY rule_id, severity
              ORDER BY _file, _row_number NULLS FIRST, field NULLS FIRST) <= {EXAMPLES_PER_RULE}
            ORDER BY rule_id, severity, _file, _row_number NULLS FIRST, field NULLS FIRST""",
        [day],
    ).fetchall()
    found: dict[tuple[str, str], list[Example]] = {}
    for rule_id, severity, file, row_number, unique_id, field_name, value, expected in rows:
        found.setdefault((rule_id, severity), []).append(
            Example(file, row_number, unique_id, field_name, _clip(value), _clip(expected))
        )
    return found


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= EXAMPLE_VALUE_CHARS:
        return text
    return text[:EXAMPLE_VALUE_CHARS] + "…"


# -- the trend chart ---------------------------------------------------------------------------


def chart(points: Sequence[DayPoint], *, current: dt.date) -> Chart:
    """Geometry of the trend chart: one bar (rows read) and one dot (reject rate) per day.

    Computed here so the template only draws; the reject-rate axis starts at 0 and tops at
    the highest rate shown (at least 1%, so a clean history does not look like a spike).
    """
    width, height = 640, 200
    left, right, top, bottom = 56.0, 584.0, 16.0, 164.0
    max_rows = max((p.rows_read for p in points), default=0) or 1
    max_rate = max([0.01, *(p.reject_rate for p in points)])
    slot = (right - left) / max(len(points), 1)
    bar_width = max(min(slot * 0.6, 40.0), 2.0)
    marks = []
    for i, point in enumerate(points):
        centre = left + slot * (i + 0.5)
        bar_height = (bottom - top) * point.rows_read / max_rows
        marks.append(
            ChartMark(
                point=point,
                current=point.day == current,
                x=centre - bar_width / 2,
                width=bar_width,
                bar_y=bottom - bar_height,
                bar_height=bar_height,
                dot_x=centre,
                dot_y=bottom - (bottom - top) * point.reject_rate / max_rate,
            )
        )
    return Chart(width, height, top, bottom, left, right, max_rows, max_rate, tuple(marks))


@functools.cache
def _environment() -> jinja2.Environment:
    """One environment per process: it caches the compiled template (~60 ms to compile)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("flux_pipelines.reports", "templates"),
        autoescape=True,  # every delivered value is hostile input
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["n"] = _count
    env.filters["pct"] = _percent
    env.globals["examples_per_rule"] = EXAMPLES_PER_RULE
    return env


def _count(value: int | None) -> str:
    """Thousands separated; a file rejected before it was read has no count, not zero."""
    return "not read" if value is None else f"{value:,}"


def _percent(value: float) -> str:
    return f"{value:.1%}"
