"""``flux validate``'s output: the verdict (``reports/verdict.py``) as a person reads it, and
its violations as a CSV an agency can open.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import typer

from flux_pipelines.contracts.model import SHORT_ROW_MESSAGE, SHORT_ROW_RULE
from flux_pipelines.reports.broker import neutralised
from flux_pipelines.reports.verdict import Verdict
from flux_pipelines.sql import literal, quote


def print_verdict(verdict: Verdict, *, show: int) -> None:
    r = verdict.result
    c = r.contract
    typer.echo(f"contract {c.id} {c.version} ({c.dataset}) for {r.day}")
    for f in r.files:
        typer.echo(f"file {f.file}: {f.status}; sha256 {f.sha256}")
        if f.reason:
            typer.echo(f"  REJECTED [{f.rule_id}]: {f.reason}")
        if f.unmapped:
            typer.echo(f"  columns not in the contract (kept in raw): {', '.join(f.unmapped)}")
        if f.missing:
            typer.echo(f"  contract columns not delivered: {', '.join(f.missing)}")
    typer.echo(
        f"rows: {r.rows_in} in, {r.rows_curated} would load, {r.rows_quarantined} would be "
        f"quarantined ({r.reject_rate:.2%}), {r.rows_with_warnings} with warnings"
    )
    if r.rule_counts:
        typer.echo("violations by rule:")
        for rule_id, n in r.rule_counts.most_common():
            typer.echo(f"  {n:>8}  {rule_id:<40} {_rule_label(verdict, rule_id)}")
    if show and verdict.violations.height:
        typer.echo(f"first {min(show, verdict.violations.height)} violation(s):")
        for row in verdict.violations.head(show).iter_rows(named=True):
            typer.echo(
                f"  {row['_file']} row {row['_row_number']} [{row['unique_id']}] "
                f"{row['rule_id']} ({row['severity']}): {row['field'] or '(record)'}="
                f"{_short(row['value_provided'])!r}, expected {_short(row['expected'])}"
            )


def _rule_label(verdict: Verdict, rule_id: str) -> str:
    rule = next((x for x in verdict.result.contract.rules if x.id == rule_id), None)
    if rule is not None:
        return f"{rule.severity:<7} {rule.message}"
    if rule_id == SHORT_ROW_RULE:
        return f"{'fatal':<7} {_short(SHORT_ROW_MESSAGE, 60)}"
    return f"{'fatal':<7} (whole file)"


def write_errors_csv(violations: pl.DataFrame, path: Path) -> int:
    """Every violation as CSV, text cells neutralised against spreadsheet formulas exactly
    as the agency reports are (``reports.broker.neutralised``: a cell starting with = + - @,
    tab or CR gets a leading '), since delivered values are hostile. Returns lines written."""
    cells = ", ".join(
        f"{neutralised(quote(name))} AS {quote(name)}" if dtype == pl.String else quote(name)
        for name, dtype in violations.schema.items()
    )
    with duckdb.connect(":memory:") as conn:
        conn.register("violations", violations)
        conn.execute(
            f"COPY (SELECT {cells} FROM violations) TO {literal(path)} (FORMAT csv, HEADER true)"
        )
    return violations.height


def _short(value: object, limit: int = 80) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
