"""Write one delivery's validation report back to the agency's outbox.

``outbox_root/<agency>/<dataset>/<YYYY-MM-DD>/`` receives ``error_report.csv``,
``warning_report.csv`` (DATA Act Broker layout, see ``broker.py``) and ``summary.html``
(see ``summary.py``). Agencies pick the folder up by themselves, so they must never see a
half-written file: each file is written under a hidden ``.tmp`` name in the same folder
and moved over the old one with ``os.replace`` (atomic on one filesystem), and the three
moves happen only once all three files are complete. Re-running a day replaces its report.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flux_pipelines.contracts.ddl import DatasetTables
from flux_pipelines.contracts.model import Contract
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.reports.broker import error_sources, warning_sources, write_report_csv
from flux_pipelines.reports.summary import collect_summary, render_summary

if TYPE_CHECKING:
    import duckdb


ERROR_REPORT = "error_report.csv"
WARNING_REPORT = "warning_report.csv"
SUMMARY = "summary.html"
# One path segment of the outbox: agency ids and dataset names are slugs.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class DeliveryReport:
    """Where one delivery's report was written, and what it says in numbers."""

    folder: Path
    error_report: Path
    warning_report: Path
    summary: Path
    errors: int  # lines of error_report.csv (fatal violations and files rejected whole)
    warnings: int  # lines of warning_report.csv
    rejected_files: int

    def metadata(self) -> dict[str, str | int]:
        """Dagster-ready metadata: paths as strings (wrap them in ``MetadataValue.path``)."""
        return {
            "report_folder": str(self.folder),
            "error_report": str(self.error_report),
            "warning_report": str(self.warning_report),
            "summary": str(self.summary),
            "errors": self.errors,
            "warnings": self.warnings,
            "rejected_files": self.rejected_files,
        }


def report_folder(outbox_root: Path, agency: str, dataset: str, day: dt.date) -> Path:
    """``outbox_root/<agency>/<dataset>/<YYYY-MM-DD>``; refuses names that would escape it."""
    for what, name in (("agency", agency), ("dataset", dataset)):
        if not _SEGMENT.match(name) or name in {".", ".."}:
            raise ConfigurationError(
                f"report outbox: {what} {name!r} is not a plain name (letters, digits, '-', "
                "'_', '.'); fix the agency registry or the contract"
            )
    return outbox_root / agency / dataset / day.isoformat()


def write_delivery_report(
    conn: duckdb.DuckDBPyConnection,
    *,
    agency: str,
    contract: Contract,
    day: dt.date,
    outbox_root: Path,
    history_days: int = 30,
) -> DeliveryReport:
    """Write (or replace) the error CSV, warning CSV and summary page of one delivery day.

    ``conn`` is the agency's DuckDB file; only read (COPY streams the CSVs, so memory stays
    flat however many violations the day has). ``history_days`` caps how many earlier
    delivery days the trend shows.
    """
    if history_days < 0:
        raise ConfigurationError(f"report history_days must be >= 0, got {history_days}")
    folder = report_folder(outbox_root, agency, contract.dataset, day)
    folder.mkdir(parents=True, exist_ok=True)
    final = {name: folder / name for name in (ERROR_REPORT, WARNING_REPORT, SUMMARY)}
    _remove_leftovers(folder, final)
    token = uuid.uuid4().hex[:8]
    staged = {name: folder / f".{name}.{token}.tmp" for name in final}
    tables = DatasetTables.for_dataset(contract.dataset)
    try:
        errors = write_report_csv(conn, error_sources(conn, tables), day, staged[ERROR_REPORT])
        warnings = write_report_csv(
            conn, warning_sources(conn, tables), day, staged[WARNING_REPORT]
        )
        summary = collect_summary(
            conn,
            agency=agency,
            contract=contract,
            day=day,
            errors=errors,
            warnings=warnings,
            history_days=history_days,
        )
        staged[SUMMARY].write_text(render_summary(summary), encoding="utf-8")
        _publish(staged, final)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return DeliveryReport(
        folder=folder,
        error_report=final[ERROR_REPORT],
        warning_report=final[WARNING_REPORT],
        summary=final[SUMMARY],
        errors=errors,
        warnings=warnings,
        rejected_files=len(summary.rejected),
    )


def _publish(staged: dict[str, Path], final: dict[str, Path]) -> None:
    """Flush every staged file, then move each over its final name (atomic per file)."""
    for path in staged.values():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    for name, path in staged.items():
        os.replace(path, final[name])


def _remove_leftovers(folder: Path, final: dict[str, Path]) -> None:
    """Drop staged files a killed run left (one writer per agency, so none is in use)."""
    for name in final:
        for stale in folder.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
