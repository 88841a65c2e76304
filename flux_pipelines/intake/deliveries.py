"""Intake receipts (``<home>/state/intake/<id>.json``) and a delivery's status.

The status is read only from files Flux already writes beside the pipeline, never from the
agency's working DuckDB file (even a read-only open of it would block the next load):

- the load receipt of the day (``ingest/receipts.py``): whether the content this upload
  carried (its name *and* sha256) is what the last load read, and whether that load
  loaded or rejected the day;
- the audit trail's ``load`` record of that run: rows read, curated and quarantined;
- the outbox report folder (``reports/report.py``): error and warning line counts.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flux_pipelines.audit.trail import AuditTrail
from flux_pipelines.errors import UnsafePath
from flux_pipelines.files import write_atomic
from flux_pipelines.home import confined
from flux_pipelines.ingest.confine import OUTBOX, ConfinedDir, open_zone
from flux_pipelines.ingest.receipts import Receipt, read_receipt
from flux_pipelines.names import outbox_root
from flux_pipelines.reports.report import ERROR_REPORT, SUMMARY, WARNING_REPORT

INTAKE_STATE = ("state", "intake")
REPORT_FILES = {"errors": ERROR_REPORT, "warnings": WARNING_REPORT, "summary": SUMMARY}


@dataclass(frozen=True)
class IntakeReceipt:
    """One upload as the intake received it: what, for whom, from whom, when."""

    id: str
    agency: str
    dataset: str
    day: str
    file: str
    sha256: str
    size: int
    content_type: str | None
    who: dict[str, Any]
    received_at: str  # ISO 8601, UTC

    @classmethod
    def new(cls, **fields: Any) -> IntakeReceipt:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return cls(id=uuid.uuid4().hex, received_at=now, **fields)

    @property
    def received(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.received_at)


def receipt_path(home: Path, delivery_id: str) -> Path:
    return confined(home / INTAKE_STATE[0], INTAKE_STATE[1], f"{delivery_id}.json")


def write_intake_receipt(home: Path, receipt: IntakeReceipt) -> Path:
    """Written aside, flushed, renamed: a receipt is whole or absent."""
    path = receipt_path(home, receipt.id)
    write_atomic(path, json.dumps(asdict(receipt), indent=2, sort_keys=True), durable=True)
    return path


def remove_intake_receipt(home: Path, delivery_id: str) -> None:
    receipt_path(home, delivery_id).unlink(missing_ok=True)


def read_intake_receipt(home: Path, delivery_id: str) -> IntakeReceipt | None:
    """The receipt of ``delivery_id`` (an id ``checks.check_delivery_id`` accepted)."""
    try:
        text = receipt_path(home, delivery_id).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return IntakeReceipt(**json.loads(text))  # one the intake wrote: anything else is a bug


def load_receipt(home: Path, receipt: IntakeReceipt) -> Receipt | None:
    from flux_pipelines.resources.warehouse import FluxWarehouse

    warehouse = FluxWarehouse(home=str(home))
    return read_receipt(warehouse.receipt_path(receipt.agency, receipt.dataset, receipt.day))


def covers(load: Receipt | None, receipt: IntakeReceipt) -> bool:
    """Whether the day's last load read exactly the content this upload delivered."""
    return load is not None and load.files.get(receipt.file) == receipt.sha256


def delivery_status(home: Path, receipt: IntakeReceipt) -> dict[str, Any]:
    """The status document of one upload (see the module docstring for its sources)."""
    load = load_receipt(home, receipt)
    doc: dict[str, Any] = {
        "id": receipt.id,
        "agency": receipt.agency,
        "dataset": receipt.dataset,
        "day": receipt.day,
        "file": receipt.file,
        "sha256": receipt.sha256,
        "size": receipt.size,
        "received_at": receipt.received_at,
        "status": _status(load, receipt),
    }
    if load is None or not covers(load, receipt):
        return doc
    doc["run_id"] = load.run_id
    doc["loaded_at"] = load.written_at.isoformat(timespec="seconds")
    doc["counts"] = load_counts(home, receipt, load.run_id)
    doc["report"] = report_counts(home, receipt, load)
    return doc


def _status(load: Receipt | None, receipt: IntakeReceipt) -> str:
    """landed (waiting for a load), loaded / rejected (the day's last load read this very
    content), superseded (a load since read another file under this name)."""
    if covers(load, receipt):
        assert load is not None
        return load.status
    if load is not None and receipt.file in load.files and load.written_at > receipt.received:
        return "superseded"
    return "landed"


def load_counts(home: Path, receipt: IntakeReceipt, run_id: str) -> dict[str, Any] | None:
    """Rows read, curated and quarantined by the run, from its audit ``load`` record; None
    while the run has not recorded it yet (reports are written after the receipt)."""
    records = AuditTrail(home).iter_records(
        kind="load", agency=receipt.agency, dataset=receipt.dataset, day=receipt.day
    )
    found = None
    for entry in records:
        if entry.run_id == run_id:
            found = entry.payload
    if found is None:
        return None
    keys = ("rows_read", "rows_curated", "rows_quarantined", "contract_version")
    return {k: found.get(k) for k in keys}


def report_counts(home: Path, receipt: IntakeReceipt, load: Receipt) -> dict[str, Any]:
    """Lines of the error and warning reports (header excluded), None where absent."""
    counts: dict[str, Any] = {}
    try:
        with open_report_folder(home, receipt, load) as folder:
            for kind, name in (("errors", ERROR_REPORT), ("warnings", WARNING_REPORT)):
                counts[kind] = _data_lines(folder, name)
            counts["summary"] = folder.lstat(SUMMARY) is not None
    except (FileNotFoundError, UnsafePath, OSError):
        return {"errors": None, "warnings": None, "summary": False}
    return counts


def open_report_folder(home: Path, receipt: IntakeReceipt, load: Receipt) -> ConfinedDir:
    """The report folder of this load, opened without following a link."""
    day_parts = [receipt.agency, receipt.dataset, receipt.day]
    if load.status == "rejected":
        attempt = [*day_parts, "rejected", load.run_id]
        try:
            return open_zone(outbox_root(home), attempt, zone=OUTBOX)
        except FileNotFoundError:
            pass  # no attempt folder: the day itself was rejected, its report is the day's
    return open_zone(outbox_root(home), day_parts, zone=OUTBOX)


def _data_lines(folder: ConfinedDir, name: str) -> int | None:
    """Records after the header, counted by the csv module (a quoted value holding a
    newline is one record), streamed: a report may be large."""
    if folder.lstat(name) is None:
        return None
    with folder.open_file(name) as handle, handle.reopen() as raw:
        text = (line.decode("utf-8", "replace") for line in raw)
        return max(sum(1 for _ in csv.reader(text)) - 1, 0)
