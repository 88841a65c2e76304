"""What each loaded partition leaves for people: the agency's report and the audit trail.

Both are written after the partition's DuckDB commit, inside the same step, so an agency
gets its report (and the trail its records) for every delivery, including one whose files
were rejected whole.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb

from flux_pipelines.audit.trail import (
    AuditRecord,
    AuditTrail,
    contract_version_record,
    delivery_record,
    load_record,
    publication_record,
    quarantine_record,
    report_record,
)
from flux_pipelines.contracts.ddl import PARTITION, DatasetTables
from flux_pipelines.contracts.model import Contract
from flux_pipelines.files import sha256_file
from flux_pipelines.ingest.delivery import PartitionResult
from flux_pipelines.names import outbox_root
from flux_pipelines.quality.metrics import REJECT_RATE, ROW_COUNT, delivery_metrics
from flux_pipelines.quality.monitors import Finding, evaluate_and_record
from flux_pipelines.reports import DeliveryReport, write_delivery_report
from flux_pipelines.reports.report import report_folder
from flux_pipelines.sql import quote

_CONTRACTS_RECORDED: set[tuple[str, str, str, str]] = set()  # (trail, dataset, version, sha)


@dataclass(frozen=True)
class MonitorOutcome:
    """The anomaly monitors' verdict on one delivery day, as the check and scorecard need it."""

    day: dt.date
    severity: str | None  # None, WARN or ERROR
    findings: tuple[str, ...]
    notes: tuple[str, ...]
    metadata: dict[str, float]

    @property
    def summary(self) -> str:
        return "; ".join(self.findings)

    def with_forest(self, verdict: Finding | str | None) -> MonitorOutcome:
        """This outcome with the Isolation Forest's finding (WARN) or note added."""
        if isinstance(verdict, Finding):
            severity = self.severity or verdict.severity
            return replace(self, severity=severity, findings=(*self.findings, str(verdict)))
        if verdict:
            return replace(self, notes=(*self.notes, verdict))
        return self


def monitor_partition(
    conn: duckdb.DuckDBPyConnection, contract: Contract, day: dt.date
) -> MonitorOutcome:
    """Compute the day's metrics and judge them against the agency's history."""
    metrics = delivery_metrics(conn, contract, day)
    result = evaluate_and_record(conn, contract.dataset, day, metrics, forest=False)
    return MonitorOutcome(
        day=day,
        severity=result.worst,
        findings=tuple(str(f) for f in result.findings),
        notes=tuple(result.notes),
        metadata={k: metrics[k] for k in (ROW_COUNT, REJECT_RATE) if k in metrics},
    )


class DeliveryOutputs:
    """Writes the agency reports and audit records on one background thread and its own
    DuckDB cursor while the step loads the next day: they read only committed rows, and a
    year-long backfill would otherwise spend a third of its time on them."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, home: Path, run_id: str) -> None:
        self._cursor = conn.cursor()
        self._home = home
        self._run_id = run_id
        self._trail = AuditTrail(home)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flux-outputs")

    def submit(
        self, agency: str, result: PartitionResult, published: Path | None
    ) -> Future[DeliveryReport]:
        return self._pool.submit(self._write, agency, result, published)

    def _write(
        self, agency: str, result: PartitionResult, published: Path | None
    ) -> DeliveryReport:
        report = write_report(self._cursor, self._home, agency, result)
        audit_partition(
            self._trail,
            self._cursor,
            result,
            run_id=self._run_id,
            published=published,
            report=report,
        )
        return report

    def submit_rejected(
        self, result: PartitionResult, report: DeliveryReport
    ) -> Future[DeliveryReport]:
        """The trail's records of a re-delivery rejected whole (its report is written)."""
        return self._pool.submit(self._write_rejected, result, report)

    def _write_rejected(self, result: PartitionResult, report: DeliveryReport) -> DeliveryReport:
        audit_rejected_attempt(self._trail, result, run_id=self._run_id, report=report)
        return report

    def close(self) -> None:
        """Wait for every pending write (their errors surface through their futures)."""
        self._pool.shutdown(wait=True)
        self._cursor.close()


def write_report(
    conn: duckdb.DuckDBPyConnection, home: Path, agency: str, result: PartitionResult
) -> DeliveryReport:
    return write_delivery_report(
        conn,
        agency=agency,
        contract=result.contract,
        day=result.day,
        outbox_root=outbox_root(home),
    )


def rejected_attempt_folder(home: Path, result: PartitionResult, run_id: str) -> Path:
    """``outbox/<agency>/<dataset>/<day>/rejected/<run id>/``: the report on a re-delivery
    rejected whole, beside (never over) the report of the load the day kept."""
    day_folder = report_folder(outbox_root(home), result.agency, result.dataset, result.day)
    return day_folder / "rejected" / run_id


def write_rejected_report(
    conn: duckdb.DuckDBPyConnection, home: Path, result: PartitionResult, run_id: str
) -> DeliveryReport:
    """The attempt's report, written inside its transaction (before the rollback), so it
    reads the attempt's own rejection rows."""
    return write_delivery_report(
        conn,
        agency=result.agency,
        contract=result.contract,
        day=result.day,
        outbox_root=outbox_root(home),
        folder=rejected_attempt_folder(home, result, run_id),
    )


def audit_rejected_attempt(
    trail: AuditTrail, result: PartitionResult, *, run_id: str, report: DeliveryReport
) -> None:
    """Delivery records of the attempt's files and its report: nothing was loaded,
    quarantined or published by it, so no load, quarantine or publication record."""
    records: list[AuditRecord] = _contract_records(trail, result.contract)
    records += _delivery_records(result, run_id)
    records.append(_report_record(report, result.agency, result.day))
    trail.append_many(records)


def audit_partition(
    trail: AuditTrail,
    conn: duckdb.DuckDBPyConnection,
    result: PartitionResult,
    *,
    run_id: str,
    published: Path | None,
    report: DeliveryReport,
) -> None:
    """One batch of records per partition: contract, deliveries, load, quarantines, outputs."""
    agency, dataset, day = result.agency, result.dataset, result.day
    records: list[AuditRecord] = _contract_records(trail, result.contract)
    records += _delivery_records(result, run_id)
    records.append(
        load_record(
            agency,
            dataset,
            day,
            run_id=run_id,
            rows_read=result.rows_in,
            rows_curated=result.rows_curated,
            rows_quarantined=result.rows_quarantined,
            contract_version=result.contract.version,
        )
    )
    records += [
        quarantine_record(agency, dataset, day, file=f, rule_id=r, rows=n, run_id=run_id)
        for f, r, n in _quarantined_by_rule(conn, dataset, day)
    ]
    if published is not None:
        records.append(
            publication_record(
                agency,
                dataset,
                day,
                target=str(published),
                rows=result.rows_curated,
                sha256=sha256_file(published),
                run_id=run_id,
            )
        )
    records.append(_report_record(report, agency, day))
    trail.append_many(records)


def _delivery_records(result: PartitionResult, run_id: str) -> list[AuditRecord]:
    return [
        delivery_record(
            result.agency,
            result.dataset,
            result.day,
            file=f.file,
            sha256=f.sha256 or "",
            size=f.size_bytes or 0,
            run_id=run_id,
        )
        for f in result.files
    ]


def _report_record(report: DeliveryReport, agency: str, day: dt.date) -> AuditRecord:
    files = [report.error_report, report.warning_report, report.summary]
    return report_record([str(f) for f in files], agency=agency, day=day.isoformat())


def _contract_records(trail: AuditTrail, contract: Contract) -> list[AuditRecord]:
    """A contract version enters the trail the first time a load applies it."""
    digest = sha256_file(Path(contract.source_path)) if contract.source_path else ""
    key = (str(trail.path), contract.dataset, contract.version, digest)
    if key in _CONTRACTS_RECORDED:
        return []
    seen = any(
        e.payload.get("version") == contract.version and e.payload.get("sha256") == digest
        for e in trail.iter_records(kind="contract_version", dataset=contract.dataset)
    )
    _CONTRACTS_RECORDED.add(key)
    return [] if seen else [contract_version_record(contract.dataset, contract.version, digest)]


def _quarantined_by_rule(
    conn: duckdb.DuckDBPyConnection, dataset: str, day: dt.date
) -> list[tuple[str, str, int]]:
    """Rows quarantined per file and fatal rule (a rejected file counts once, as a file)."""
    table = quote(DatasetTables.for_dataset(dataset).quarantine)
    rows = conn.execute(
        f"SELECT _file, rule_id, greatest(count(DISTINCT _row_number), 1) FROM {table} "
        f"WHERE {PARTITION} = ? AND severity = 'fatal' GROUP BY 1, 2 ORDER BY 1, 2",
        [day],
    ).fetchall()
    return [(str(f), str(r), int(n)) for f, r, n in rows]
