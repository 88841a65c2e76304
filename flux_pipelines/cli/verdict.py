"""``flux validate``: the loader's own verdict on a file, in a throw-away in-memory database.

Same code path as a real load (same contract version for the day, same rules, same
uniqueness pass), so what an agency sees here is what Flux will do with the delivery.

Exit codes (``Verdict.exit_code``; ``flux validate`` adds ``INTERNAL_ERROR``): 0 every row
loads, 1 some rows would be quarantined, 2 the file is rejected whole (or the command was
given an unknown agency, dataset or day), 3 Flux itself failed: no verdict on the file.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import typer

from flux_pipelines.cli.load import check_ids
from flux_pipelines.contracts.ddl import DatasetTables, quote
from flux_pipelines.contracts.model import SizeLimits
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.contracts.validator import SHORT_ROW_MESSAGE, SHORT_ROW_RULE
from flux_pipelines.ingest.delivery import PartitionLoader, PartitionResult, load_partition
from flux_pipelines.reports.broker import neutralised, sql_literal

REPORT_COLUMNS = [
    "_file", "_row_number", "unique_id", "rule_id", "field", "value_provided", "expected",
    "severity", "message",
]  # fmt: skip


CLEAN, QUARANTINED, REJECTED, INTERNAL_ERROR = 0, 1, 2, 3


@dataclass(frozen=True)
class Verdict:
    result: PartitionResult
    violations: pl.DataFrame

    @property
    def exit_code(self) -> int:
        if self.result.errors:
            return REJECTED
        return QUARANTINED if self.result.rows_quarantined else CLEAN


def validate_file(
    path: Path,
    *,
    dataset: str,
    day: dt.date,
    agency: str | None,
    limits: SizeLimits | None = None,
) -> Verdict:
    """The verdict as ``agency`` would get it (its severity overrides applied; None: the
    contract's own severities). ConfigurationError for an unknown agency or dataset, or
    an agency that does not deliver the dataset: never a silently different verdict.

    ``limits`` bound records and fields as a load would (None: ``SizeLimits.resolve``, the
    ``FLUX_MAX_LINE_BYTES`` / ``FLUX_MAX_FIELD_BYTES`` environment, else the defaults), so a
    file too large for the pipeline gets the same ``delivery.*`` rejection here."""
    limits = limits if limits is not None else SizeLimits.resolve()  # a bad setting: exit 2
    # Cross-dataset rules need the agency's other tables; they run at load, not here.
    registry = load_registry()
    known = check_ids(registry, agency, dataset)
    contract = registry.contract_for(dataset, day, known).model_copy(update={"cross_rules": ()})
    tables = DatasetTables.for_dataset(dataset)
    with tempfile.TemporaryDirectory(prefix="flux-validate-") as scratch:
        conn = duckdb.connect(":memory:")
        try:
            loader = PartitionLoader(
                conn,
                agency=agency or "agency",
                contract=contract,
                day=day,
                run_id="flux-validate",
                raw_root=Path(scratch) / "raw",
                limits=limits,
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
            f"COPY (SELECT {cells} FROM violations) TO {sql_literal(str(path))} "
            "(FORMAT csv, HEADER true)"
        )
    return violations.height


def _short(value: object, limit: int = 80) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
