"""``flux validate``: the loader's own verdict on a file, in a throw-away in-memory database.

Same code path as a real load (same contract version for the day, same rules, same
uniqueness pass), so what an agency sees here is what Flux will do with the delivery.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import typer

from flux_pipelines.contracts.ddl import DatasetTables, quote
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.ingest.delivery import PartitionLoader, PartitionResult, load_partition

REPORT_COLUMNS = [
    "_file", "_row_number", "unique_id", "rule_id", "field", "value_provided", "expected",
    "severity", "message",
]  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    result: PartitionResult
    violations: pl.DataFrame

    @property
    def exit_code(self) -> int:
        if self.result.errors:
            return 2
        return 1 if self.result.rows_quarantined else 0


def validate_file(path: Path, *, dataset: str, day: dt.date, agency: str) -> Verdict:
    # Cross-dataset rules need the agency's other tables; they run at load, not here.
    registry = load_registry()
    known = next((a for a in registry.agencies if a.id == agency), None)
    contract = registry.contract_for(dataset, day, known).model_copy(update={"cross_rules": ()})
    tables = DatasetTables.for_dataset(dataset)
    with tempfile.TemporaryDirectory(prefix="flux-validate-") as scratch:
        conn = duckdb.connect(":memory:")
        try:
            loader = PartitionLoader(
                conn,
                agency=agency,
                contract=contract,
                day=day,
                run_id="flux-validate",
                raw_root=Path(scratch) / "raw",
            )
            result = load_partition(loader, [path])
            cols = ", ".join(REPORT_COLUMNS)
            violations = conn.sql(
                f"SELECT {cols} FROM {quote(tables.quarantine)} UNION ALL "
                f"SELECT {cols} FROM {quote(tables.warnings)} ORDER BY _row_number, rule_id"
            ).pl()
        finally:
            conn.close()
    return Verdict(result=result, violations=violations)


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
            rule = next((x for x in c.rules if x.id == rule_id), None)
            label = f"{rule.severity:<7} {rule.message}" if rule else "fatal   (whole file)"
            typer.echo(f"  {n:>8}  {rule_id:<40} {label}")
    if show and verdict.violations.height:
        typer.echo(f"first {min(show, verdict.violations.height)} violation(s):")
        for row in verdict.violations.head(show).iter_rows(named=True):
            typer.echo(
                f"  {row['_file']} row {row['_row_number']} [{row['unique_id']}] "
                f"{row['rule_id']} ({row['severity']}): {row['field']}="
                f"{_short(row['value_provided'])!r}, expected {_short(row['expected'])}"
            )


def _short(value: object, limit: int = 80) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
