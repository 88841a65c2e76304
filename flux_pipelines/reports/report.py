"""Write one delivery's validation report back to the agency's outbox.

``outbox_root/<agency>/<dataset>/<YYYY-MM-DD>/`` receives ``error_report.csv``,
``warning_report.csv`` (DATA Act Broker layout, see ``broker.py``) and ``summary.html``
(see ``summary.py``). Agencies pick the folder up by themselves, so they must never see a
half-written file: each file is written under a hidden ``.tmp`` name in the same folder
and moved over the old one with ``os.replace`` (atomic on one filesystem), and the three
moves happen only once all three files are complete. Re-running a day replaces its report.

Agencies may be able to write into their outbox, so the folder is opened confined to
``outbox/<agency>/`` (``ingest/confine.py``): no folder on the way may be a link (refused
with ``delivery.symlink``, naming it), and every write, rename and clean-up happens through
that folder's descriptor, so nothing is ever written or deleted outside it.
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
from flux_pipelines.errors import ConfigurationError, UnsafePath
from flux_pipelines.ingest.confine import OUTBOX, ConfinedDir, open_zone, relative_parts
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
    folder: Path | None = None,
) -> DeliveryReport:
    """Write (or replace) the error CSV, warning CSV and summary page of one delivery day.

    ``conn`` is the agency's DuckDB file; only read (COPY streams the CSVs, so memory stays
    flat however many violations the day has). ``folder`` replaces the day's own folder
    (``rejected_attempt_folder``). ``history_days`` caps how many earlier
    delivery days the trend shows.
    """
    if history_days < 0:
        raise ConfigurationError(f"report history_days must be >= 0, got {history_days}")
    if folder is None:  # else a sub-folder of it (a rejected attempt's own report)
        folder = report_folder(outbox_root, agency, contract.dataset, day)
    final = {name: folder / name for name in (ERROR_REPORT, WARNING_REPORT, SUMMARY)}
    # An unguessable staging name: the file does not exist until DuckDB creates it through
    # the confined folder, so no link can be planted at it beforehand.
    token = uuid.uuid4().hex
    staged = {name: f".{name}.{token}.tmp" for name in final}
    tables = DatasetTables.for_dataset(contract.dataset)
    with open_outbox(outbox_root, agency, folder) as out:
        _remove_leftovers(out, final)
        try:
            errors = write_report_csv(
                conn, error_sources(conn, tables), day, Path(out.child(staged[ERROR_REPORT]))
            )
            warnings = write_report_csv(
                conn, warning_sources(conn, tables), day, Path(out.child(staged[WARNING_REPORT]))
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
            _write_new(out, staged[SUMMARY], render_summary(summary).encode("utf-8"))
            _publish(out, staged)
        finally:
            for name in staged.values():
                out.unlink(name)
    return DeliveryReport(
        folder=folder,
        error_report=final[ERROR_REPORT],
        warning_report=final[WARNING_REPORT],
        summary=final[SUMMARY],
        errors=errors,
        warnings=warnings,
        rejected_files=len(summary.rejected),
    )


def open_outbox(outbox_root: Path, agency: str, folder: Path) -> ConfinedDir:
    """``folder`` opened (made if missing) inside ``outbox_root/<agency>/`` without following
    a link; anything else is an ``UnsafePath`` naming the folder."""
    parts = relative_parts(folder, outbox_root, OUTBOX)
    if not parts or parts[0] != agency:
        raise UnsafePath(
            "delivery.outside_outbox",
            str(folder),
            f"a report of {agency} belongs in {outbox_root / agency}, not in {folder}",
        )
    return open_zone(outbox_root, parts, zone=OUTBOX, create=True)


def write_outbox_file(outbox_root: Path, agency: str, name: str, data: bytes | None) -> bool:
    """Replace (or, ``data`` None, remove) ``outbox_root/<agency>/<name>`` through the
    confined folder, only when its content changes; returns whether it changed."""
    with open_outbox(outbox_root, agency, outbox_root / agency) as out:
        if out.lstat(name) is not None:
            with out.open_file(name) as current, current.reopen() as stream:
                if stream.read() == data:
                    return False
        elif data is None:
            return False
        if data is None:
            out.unlink(name)
            return True
        staged = f".{name}.{uuid.uuid4().hex}.tmp"
        _write_new(out, staged, data)
        _publish(out, {name: staged})
        return True


def _write_new(out: ConfinedDir, name: str, data: bytes) -> None:
    fd = out.create_file(name)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _publish(out: ConfinedDir, staged: dict[str, str]) -> None:
    """Flush every staged file, then move each over its final name (atomic per file; a link
    at a final name is replaced, never written through)."""
    for name in staged.values():
        out.fsync_file(name)
    for final, name in staged.items():
        out.replace(name, final)


def _remove_leftovers(out: ConfinedDir, final: dict[str, Path]) -> None:
    """Drop staged files a killed run left (one writer per agency, so none is in use); only
    names in this folder, a link among them removed itself, never its target."""
    for entry in out.entries():
        if any(
            entry.name.startswith(f".{name}.") and entry.name.endswith(".tmp") for name in final
        ):
            out.unlink(entry.name)
