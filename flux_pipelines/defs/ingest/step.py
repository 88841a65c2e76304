"""The ingest step: load each day of a run, judge it, and record one result per day.

A run may cover one day (a sensor's delivery) or a year (a single-run backfill); either way
every delivered day gets its own materializations and its own check results, stored under
its partition, so the UI's partition view, metadata plots and check history are per day
(a result belongs to its partition). Dagster 1.13.27 records per-partition events
from a range step when the step yields ``AssetMaterialization(partition=day)`` and
``AssetCheckEvaluation(partition=day)`` itself; the asset specs are ``skippable`` so no
range-wide materialization without metadata is recorded beside them (pinned by
``test_multi_day_run_records_one_result_per_day``).

Order of work in a step: load every day (one transaction each), then the checks that are
cheaper once per step (pandera, the Isolation Forest, the scorecard), then the events.
A day without a delivery changes nothing and records nothing: its partition stays as it was
(missing, or its last load). A day with a file rejected whole records its check results but
no materialization, and the step fails naming agency, dataset, day, file and rule, so the
partition shows *failed* while the run's other days show their loads.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl

from flux_pipelines.access.masking import classified_columns
from flux_pipelines.audit.trail import AuditTrail
from flux_pipelines.collections.day import CollectionsDay, prepare_day, published_tables
from flux_pipelines.contracts.ddl import DELIVERIES_TABLE, PARTITION, DatasetTables
from flux_pipelines.contracts.model import ColumnSpec, Contract
from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.defs.ingest.delivery_outputs import (
    DeliveryOutputs,
    MonitorOutcome,
    monitor_partition,
    write_rejected_report,
)
from flux_pipelines.defs.ingest.step_plan import (
    TRANSIENT_RETRIES,
    DatasetStep,
    IngestKeys,
    retry_delay,
)
from flux_pipelines.errors import DayLoadFailed, PartitionRejected, TransientError
from flux_pipelines.faults import crash_point
from flux_pipelines.ingest.delivery import (
    PartitionLoader,
    PartitionResult,
    delivered_files,
    delivery_manifest,
    load_partition,
    raw_counts,
)
from flux_pipelines.ingest.manifest import manifest_path
from flux_pipelines.ingest.receipts import delivery_contents, write_receipt
from flux_pipelines.instance.launcher import record_run_worker
from flux_pipelines.names import ANOMALIES, CONSERVATION, CONTRACT_SCHEMA, published_root
from flux_pipelines.ops.logs import day_fields, failure_fields
from flux_pipelines.quality.monitors import forest_findings
from flux_pipelines.quality.scorecard import scorecard_row, write_scorecard
from flux_pipelines.reports import DeliveryReport
from flux_pipelines.resources.warehouse import FluxWarehouse, publish_partition
from flux_pipelines.sql import quote


@dataclass(frozen=True)
class Recount:
    """A day's partition counted back from storage (the numbers the UI shows)."""

    raw_rows: int
    curated_rows: int
    quarantine_lines: int  # one line per violation of a quarantined row, and per rejected file
    conservation_broken: tuple[str, ...]  # per file: what did not add up

    @property
    def conserved(self) -> bool:
        return not self.conservation_broken


@dataclass(frozen=True)
class SchemaVerdict:
    """The pandera schema's verdict on one day's curated rows."""

    failures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class DayLoad:
    """Everything one delivered day of the step produced, filled in as the step goes."""

    result: PartitionResult
    recount: Recount
    delivered: list[Path]
    published: Path | None
    monitor: MonitorOutcome
    report_pending: Future[DeliveryReport] | None = None
    report: DeliveryReport | None = None
    schema: SchemaVerdict = field(default_factory=SchemaVerdict)
    collections: CollectionsDay | None = None  # content and eligibility (rights datasets)

    @property
    def day(self) -> dt.date:
        return self.result.day

    @property
    def partition(self) -> str:
        return self.result.day.isoformat()

    @property
    def rejected(self) -> bool:
        return bool(self.result.errors)


def run_ingest_step(
    context: dg.AssetExecutionContext,
    warehouse: FluxWarehouse,
    registry: Registry,
    agency: Agency,
    datasets: list[DatasetStep],
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output[None]]:
    """Load the run's days of the selected datasets (referenced datasets first), then yield
    each day's materializations and check results."""
    # Lets run monitoring tell a dead run worker from a slow one (instance/launcher.py).
    record_run_worker(context.instance, context.run.run_id)
    crash_point("ingest.started")
    # A trail whose appends would be refused stops the step before any load commits.
    AuditTrail(warehouse.root).require_intact()
    selected = context.selected_asset_keys
    chosen = [d for d in datasets if d.keys.curated in selected]
    loaded: list[tuple[DatasetStep, list[DayLoad]]] = []
    failures: list[DayLoadFailed] = []
    try:
        # One connection for every dataset and day of the step: opening and checkpointing
        # the agency file per day cost ~35 ms a partition in a year-long backfill.
        with warehouse.connect(agency.id) as conn:
            for step in chosen:
                loads, failed = _load_days(context, conn, warehouse, registry, agency, step.dataset)
                failures += failed
                _judge_schema(conn, registry, loads)
                _finish_monitors(conn, step.dataset, loads)
                write_scorecard(
                    conn,
                    published_root(warehouse.root),
                    [_scorecard_row(load, context.run.run_id, agency) for load in loads],
                )
                loaded.append((step, loads))
    except TransientError as exc:
        # Only transient errors (a held lock) are retried; data and configuration errors
        # fail at once with their message.
        raise dg.RetryRequested(
            max_retries=TRANSIENT_RETRIES, seconds_to_wait=retry_delay(context.retry_number)
        ) from exc
    checks = context.selected_asset_check_keys
    for step, loads in loaded:
        for load in loads:
            # a UI subset may select some of a dataset's assets or checks: report only those
            yield from (e for e in day_events(load, step.keys) if _selected(e, selected, checks))
    _fail_on_rejection_or_loss(agency, loaded, failures)


def check_outputs(context: dg.AssetExecutionContext) -> Iterator[dg.Output[None]]:
    """The step's outputs for its selected checks, once every day's results are recorded."""
    for check in context.selected_asset_check_keys:
        spec = context.assets_def.get_spec_for_check_key(check)
        yield dg.Output(None, output_name=spec.get_python_identifier())


def _selected(
    event: dg.AssetMaterialization | dg.AssetCheckEvaluation,
    assets: AbstractSet[dg.AssetKey],
    checks: AbstractSet[dg.AssetCheckKey],
) -> bool:
    if isinstance(event, dg.AssetCheckEvaluation):
        return dg.AssetCheckKey(event.asset_key, event.check_name) in checks
    return event.asset_key in assets


def _load_days(
    context: dg.AssetExecutionContext,
    conn: duckdb.DuckDBPyConnection,
    warehouse: FluxWarehouse,
    registry: Registry,
    agency: Agency,
    dataset: str,
) -> tuple[list[DayLoad], list[DayLoadFailed]]:
    """Load the run's days in order; reports and audit records follow on a thread.

    A day that fails unexpectedly (its transaction rolled back) is logged with its traceback
    and returned as a ``DayLoadFailed``; the following days still load, and every loaded day
    still gets its events. Transient errors (a held lock) stop the step for a retry.
    """
    loads: list[DayLoad] = []
    failed: list[DayLoadFailed] = []
    outputs = DeliveryOutputs(conn, warehouse.root, context.run.run_id)
    try:
        for partition in context.partition_keys:
            day = dt.date.fromisoformat(partition)
            try:
                load = _load_day(context, conn, outputs, warehouse, registry, agency, dataset, day)
            except TransientError:
                raise
            except Exception as exc:  # classified below; the other days must still load
                failed.append(DayLoadFailed(agency.id, dataset, partition, exc))
                context.log.exception(str(failed[-1]), extra=failure_fields(failed[-1]))
                continue
            if load is None:
                context.log.info(
                    f"{agency.id}/{dataset} {day}: no delivery, nothing changed",
                    extra={"agency": agency.id, "dataset": dataset, "partition": partition},
                )
                continue
            loads.append(load)
            context.log.info(summary_line(load), extra=day_fields(load.result))
    finally:
        outputs.close()
    for load in loads:  # an error writing a report or the trail fails here
        if load.report_pending is not None:
            load.report = load.report_pending.result()
    return loads, failed


def _load_day(
    context: dg.AssetExecutionContext,
    conn: duckdb.DuckDBPyConnection,
    outputs: DeliveryOutputs,
    warehouse: FluxWarehouse,
    registry: Registry,
    agency: Agency,
    dataset: str,
    day: dt.date,
) -> DayLoad | None:
    """Load one day's delivery in one transaction; None when nothing was delivered."""
    folder = warehouse.landing_dir(agency.id, dataset, day.isoformat())
    files = delivered_files(folder)
    if not files and manifest_path(folder) is None:
        return None
    contract = registry.contract_for(dataset, day, agency)
    loader = PartitionLoader(
        conn,
        agency=agency.id,
        contract=contract,
        day=day,
        run_id=context.run.run_id,
        raw_root=warehouse.raw_root(agency.id, dataset),
        references=registry.references_for(contract, day),
        storage=registry.storage_contract(contract),
        limits=warehouse.size_limits(),
    )
    attempt_reports: list[DeliveryReport] = []
    storage = registry.storage_contract(contract)
    collections: list[CollectionsDay] = []

    def report_rejected(result: PartitionResult) -> None:
        attempt_reports.append(
            write_rejected_report(conn, warehouse.root, result, context.run.run_id)
        )

    def prepare_collection(result: PartitionResult) -> None:
        if storage.content is not None:  # rights and content: inside the day's transaction
            collections.append(
                prepare_day(
                    conn,
                    storage,
                    agency=agency.id,
                    day=day,
                    landing=folder,
                    run_id=context.run.run_id,
                )
            )

    result = load_partition(
        loader, files, delivery_manifest(folder), report_rejected, prepare_collection
    )
    recount = recount_partition(conn, contract, day, raw_counts(loader.raw_dir, conn))
    # What analysts may see of each column: the markings of every version of the contract.
    classified = classified_columns(registry.versions(dataset))
    if result.migrations:
        republish_other_days(context, conn, warehouse, agency, result, classified)
    if result.kept_rows is None:
        published = publish_partition(
            conn,
            warehouse,
            agency.id,
            dataset,
            DatasetTables.for_dataset(dataset).curated,
            day,
            columns=classified,
        )
        if collections:
            for table in published_tables(storage):
                publish_partition(conn, warehouse, agency.id, table, table, day, columns=())
    else:  # the day kept its earlier load: its published copy stays as it was
        kept = warehouse.published_file(agency.id, dataset, day)
        published = kept if kept.exists() else None
    crash_point("ingest.published")
    # What was loaded, for the landing sensors: a delivery loaded by any path (a sensor
    # run, `flux load`, the demo, a backfill) is not requested again.
    write_receipt(
        warehouse.receipt_path(agency.id, dataset, day),
        agency=agency.id,
        dataset=dataset,
        day=day,
        contents=delivery_contents(folder, {f.file: f.sha256 for f in result.files}),
        status="rejected" if result.errors else "loaded",
        run_id=context.run.run_id,
    )
    pending = (
        outputs.submit_rejected(result, attempt_reports[0])
        if attempt_reports
        else outputs.submit(agency.id, result, published)
    )
    return DayLoad(
        result=result,
        recount=recount,
        delivered=files,
        published=published,
        monitor=monitor_partition(conn, storage, day),
        report_pending=pending,
        collections=collections[0] if collections else None,
    )


def republish_other_days(
    context: dg.AssetExecutionContext,
    conn: duckdb.DuckDBPyConnection,
    warehouse: FluxWarehouse,
    agency: Agency,
    result: PartitionResult,
    classified: Sequence[ColumnSpec],
) -> None:
    """After a column took a new version's type, every day's published copy follows (one
    type per column for analysts' views over the copies)."""
    for migration in result.migrations:
        context.log.warning(
            f"{agency.id}: contract {result.contract.version}: {migration.describe()} "
            "(recorded in _flux_migrations)",
            extra={"agency": agency.id, "dataset": result.dataset},
        )
    curated = DatasetTables.for_dataset(result.dataset).curated
    days = [
        d for (d,) in conn.execute(f"SELECT DISTINCT {PARTITION} FROM {quote(curated)}").fetchall()
    ]
    for other in sorted(d for d in days if d != result.day):
        publish_partition(
            conn, warehouse, agency.id, result.dataset, curated, other, columns=classified
        )
    context.log.info(
        f"{agency.id}/{result.dataset}: republished {len(days) - 1} other day(s)",
        extra={"agency": agency.id, "dataset": result.dataset},
    )


def recount_partition(
    conn: duckdb.DuckDBPyConnection, contract: Contract, day: dt.date, raw: dict[str, int]
) -> Recount:
    """Recount from storage: per file, raw rows = rows read = curated + quarantined rows."""
    t = DatasetTables.for_dataset(contract.dataset)
    rows = conn.execute(
        f"""SELECT d.file, d.status, d.rows_read,
              (SELECT count(*) FROM {quote(t.curated)} c
                 WHERE c.{PARTITION} = d.{PARTITION} AND c._file = d.file),
              (SELECT count(DISTINCT _row_number) FROM {quote(t.quarantine)} q
                 WHERE q.{PARTITION} = d.{PARTITION} AND q._file = d.file
                   AND q._row_number IS NOT NULL),
              (SELECT count(*) FROM {quote(t.quarantine)} q
                 WHERE q.{PARTITION} = d.{PARTITION} AND q._file = d.file)
            FROM {DELIVERIES_TABLE} d WHERE d.dataset = ? AND d.{PARTITION} = ?""",
        [contract.dataset, day],
    ).fetchall()
    broken = []
    curated_total = lines_total = 0
    for file, status, read, cur_n, quar_n, lines in rows:
        raw_n = raw.get(file, 0)
        curated_total += cur_n
        lines_total += lines
        if status == "loaded":
            ok = read == raw_n == cur_n + quar_n
        else:
            ok = cur_n == 0 and raw_n == (read or 0)
        if not ok:
            broken.append(f"{file}: read={read} raw={raw_n} curated={cur_n} quarantined={quar_n}")
    return Recount(
        raw_rows=sum(raw.values()),
        curated_rows=curated_total,
        quarantine_lines=lines_total,
        conservation_broken=tuple(broken),
    )


def _judge_schema(
    conn: duckdb.DuckDBPyConnection, registry: Registry, loads: list[DayLoad]
) -> None:
    """One pandera call per contract version for all the step's days, verdicts per day."""
    by_version: dict[str, tuple[Contract, list[DayLoad]]] = {}
    for load in loads:
        by_version.setdefault(load.result.contract.version, (load.result.contract, []))[1].append(
            load
        )
    for contract, group in by_version.values():
        verdicts = schema_check(conn, registry.storage_contract(contract), [g.day for g in group])
        for load in group:
            load.schema = verdicts.get(load.day, SchemaVerdict())


def schema_check(
    conn: duckdb.DuckDBPyConnection, contract: Contract, days: list[dt.date]
) -> dict[dt.date, SchemaVerdict]:
    """Validate the days' curated rows, read back from DuckDB, with the contract's pandera
    schema (uniqueness within a day, as the contract defines it); failures per day.

    Once per step and contract version, not per day: pandera's fixed cost (~30 ms a call)
    was a fifth of each partition's time in a year-long backfill.
    """
    # pandera (and numpy under it) is imported by the steps that check, not by every
    # process that loads the definitions (~0.1 s).
    import pandera.errors

    from flux_pipelines.contracts.pandera_schema import pandera_schema

    table = quote(DatasetTables.for_dataset(contract.dataset).curated)
    cols = ", ".join(quote(c) for c in (*contract.column_names, PARTITION))
    frame = conn.sql(
        f"SELECT {cols} FROM {table} WHERE {PARTITION} IN (SELECT unnest(?)) "
        f"ORDER BY {PARTITION}, _file, _row_number",
        params=[days],
    ).pl()
    try:
        pandera_schema(contract, partition=PARTITION).validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        return _failures_by_day(exc.failure_cases, frame, days)
    return {}


def _failures_by_day(
    cases: object, frame: pl.DataFrame, days: list[dt.date]
) -> dict[dt.date, SchemaVerdict]:
    """Pandera's failure cases grouped by the day of the failing row (all days when the
    failure is not about a row, e.g. a missing column)."""
    if not isinstance(cases, pl.DataFrame):
        return {d: SchemaVerdict((str(cases)[:500],)) for d in days}
    row_days = frame.get_column(PARTITION)
    located = cases.with_columns(
        pl.col("index")
        .map_elements(lambda i: row_days[int(i)], return_dtype=pl.Date)
        .alias(PARTITION)
    )
    verdicts: dict[dt.date, SchemaVerdict] = {}
    schema_wide = located.filter(pl.col("index").is_null())
    for day in days:
        mine = pl.concat([located.filter(pl.col(PARTITION) == day), schema_wide])
        if mine.is_empty():
            continue
        summary = (
            mine.group_by("column", "check").len().sort("len", "column", descending=[True, False])
        )
        verdicts[day] = SchemaVerdict(
            tuple(f"{c} {k}: {n} row(s)" for c, k, n in summary.head(10).rows())
        )
    return verdicts


def _finish_monitors(conn: duckdb.DuckDBPyConnection, dataset: str, loads: list[DayLoad]) -> None:
    """Add the Isolation Forest's verdicts: one fit for every delivered day of the step."""
    verdicts = forest_findings(conn, dataset, [load.day for load in loads])
    for load in loads:
        load.monitor = load.monitor.with_forest(verdicts.get(load.day))


def _scorecard_row(load: DayLoad, run_id: str, agency: Agency) -> dict[str, object]:
    return scorecard_row(
        load.result,
        run_id=run_id,
        deadline_cron=agency.delivery_deadline,
        files=load.delivered,
        anomaly_severity=load.monitor.severity,
        anomalies=list(load.monitor.findings),
    )


def day_events(
    load: DayLoad, keys: IngestKeys
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The day's materializations (unless a file was rejected) and its three check results."""
    if not load.rejected:
        yield from _materializations(load, keys)
    yield from _check_evaluations(load, keys.curated)


def _materializations(load: DayLoad, keys: IngestKeys) -> Iterator[dg.AssetMaterialization]:
    r = load.result
    files = r.files
    yield dg.AssetMaterialization(
        asset_key=keys.raw,
        partition=load.partition,
        metadata={
            "dagster/row_count": load.recount.raw_rows,
            "files": dg.MetadataValue.md(_files_table(r)),
            "unmapped_columns": ", ".join(sorted({c for f in files for c in f.unmapped})) or "none",
            "schema_drift": "; ".join(f"{f.file}: {f.drift}" for f in files if f.drift) or "none",
        },
    )
    yield dg.AssetMaterialization(
        asset_key=keys.curated,
        partition=load.partition,
        metadata={
            "dagster/row_count": load.recount.curated_rows,
            "rows_in": r.rows_in,
            "rows_quarantined": r.rows_quarantined,
            "rows_with_warnings": r.rows_with_warnings,
            "reject_rate": r.reject_rate,
            "files": len(r.files),
            "top_rules": dg.MetadataValue.md(_rules_table(r.rule_counts)),
            "contract_version": r.contract.version,
            **({"use_cases": load.collections.summary()} if load.collections else {}),
        },
    )
    yield dg.AssetMaterialization(
        asset_key=keys.quarantine,
        partition=load.partition,
        metadata={
            "dagster/row_count": load.recount.quarantine_lines,
            "rows_quarantined": r.rows_quarantined,
            "reject_rate": r.reject_rate,
            "top_rules": dg.MetadataValue.md(_rules_table(r.rule_counts)),
            **_report_links(load.report),
        },
    )


def _check_evaluations(load: DayLoad, curated: dg.AssetKey) -> Iterator[dg.AssetCheckEvaluation]:
    r, monitor = load.result, load.monitor
    yield dg.AssetCheckEvaluation(
        asset_key=curated,
        check_name=CONSERVATION,
        partition=load.partition,
        passed=load.recount.conserved,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows_in": r.rows_in,
            "rows_curated": load.recount.curated_rows,
            "rows_quarantined": r.rows_quarantined,
            "broken": "; ".join(load.recount.conservation_broken) or "none",
        },
    )
    yield dg.AssetCheckEvaluation(
        asset_key=curated,
        check_name=CONTRACT_SCHEMA,
        partition=load.partition,
        passed=load.schema.ok,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "contract_version": r.contract.version,
            "rows_checked": load.recount.curated_rows,
            "failures": "; ".join(load.schema.failures) or "none",
        },
    )
    yield dg.AssetCheckEvaluation(
        asset_key=curated,
        check_name=ANOMALIES,
        partition=load.partition,
        passed=not monitor.findings,
        severity=dg.AssetCheckSeverity.ERROR
        if monitor.severity == "ERROR"
        else dg.AssetCheckSeverity.WARN,
        metadata={
            "findings": dg.MetadataValue.md(
                "\n".join(f"- {f}" for f in monitor.findings) or "none"
            ),
            "notes": "; ".join(monitor.notes) or "none",
            **monitor.metadata,
        },
    )


def _fail_on_rejection_or_loss(
    agency: Agency,
    loaded: list[tuple[DatasetStep, list[DayLoad]]],
    failures: list[DayLoadFailed],
) -> None:
    """After every day's events: a broken count, a failed day or a rejected file fails the
    step, its message naming each (agency, dataset, day, file, rule)."""
    lost = [
        f"{step.dataset} {load.day}: {b}"
        for step, loads in loaded
        for load in loads
        for b in load.recount.conservation_broken
    ]
    if lost:
        raise dg.Failure(
            description=f"{agency.id}: rows read do not add up to rows curated + quarantined "
            f"({'; '.join(lost)}). Nothing may be lost: re-run the day; if it persists, "
            "report it with the run id.",
            metadata={"agency": agency.id, "broken": lost},
            allow_retries=False,
        )
    rejected = [(step, load) for step, loads in loaded for load in loads if load.rejected]
    if not rejected and not failures:
        return
    messages = [str(f) for f in failures] + [
        str(
            PartitionRejected(
                agency.id,
                step.dataset,
                load.partition,
                load.result.errors,
                kept_rows=load.result.kept_rows,
            )
        )
        for step, load in rejected
    ]
    errors = [e for _, load in rejected for e in load.result.errors]
    cause = failures[0].cause if failures else None  # the first failed day's own error
    raise dg.Failure(
        description=" ".join(messages),
        metadata={
            "agency": agency.id,
            "datasets": sorted(
                {step.dataset for step, _ in rejected} | {f.dataset for f in failures}
            ),
            "days": [load.partition for _, load in rejected] + [f.day for f in failures],
            "files": [e.file for e in errors],
            "rules": [e.rule_id for e in errors],
            "agency_reports": [str(load.report.summary) for _, load in rejected if load.report],
        },
        allow_retries=False,
    ) from cause


def _report_links(report: DeliveryReport | None) -> dict[str, dg.MetadataValue[Any] | int]:
    """Where the agency's reports for the day are."""
    if report is None:
        return {}
    return {
        "agency_report": dg.MetadataValue.path(str(report.summary)),
        "error_report_csv": dg.MetadataValue.path(str(report.error_report)),
        "warning_report_csv": dg.MetadataValue.path(str(report.warning_report)),
        "report_errors": report.errors,
        "report_warnings": report.warnings,
    }


def summary_line(load: DayLoad) -> str:
    r = load.result
    top = ", ".join(f"{k}={v}" for k, v in r.rule_counts.most_common(3)) or "none"
    drift = "".join(f"; drift in {f.file}: {f.drift}" for f in r.files if f.drift)
    return (
        f"{r.agency}/{r.dataset} {r.day}: {len(r.files)} file(s), {r.rows_in} rows in, "
        f"{r.rows_curated} curated, {r.rows_quarantined} quarantined "
        f"(contract {r.contract.version}); top rules: {top}{drift}"
    )


def _files_table(r: PartitionResult) -> str:
    lines = ["| file | status | rows | sha256 |", "|---|---|---|---|"]
    lines += [
        f"| {f.file} | {f.status} | {f.rows_read} | {(f.sha256 or '')[:12]} |" for f in r.files
    ]
    return "\n".join(lines)


def _rules_table(rules: Counter[str]) -> str:
    if not rules:
        return "no violations"
    lines = ["| rule | violations |", "|---|---|"]
    ranked = sorted(rules.items(), key=lambda rule: (-rule[1], rule[0]))  # ties by id
    lines += [f"| {k} | {v} |" for k, v in ranked[:15]]
    return "\n".join(lines)
