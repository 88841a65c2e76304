"""The ingest asset factory: one multi-asset per (agency, dataset), built from the contract.

Shape (DESIGN option b): assets are keyed ``<agency>/raw_<dataset>``, ``<agency>/<dataset>``
and ``<agency>/<dataset>_quarantine``, grouped by agency, with daily partitions. Why:
a ``pool`` per agency gives one writer per agency DuckDB file while agencies run in
parallel, single-run backfills over a time window are well trodden (no multi-partition
backfill bugs), and owners / freshness are per agency for free.

The three assets are produced in one step and one DuckDB transaction, so raw, curated and
quarantine can never disagree about a partition.
"""

import datetime as dt
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb
import pandera.errors
import polars as pl
from dagster import AssetExecutionContext

from flux_pipelines.assets.delivery_outputs import (
    DeliveryOutputs,
    MonitorOutcome,
    monitor_partition,
)
from flux_pipelines.contracts.ddl import (
    DELIVERIES_TABLE,
    DUCKDB_TYPES,
    PARTITION,
    DatasetTables,
    quote,
)
from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.page import rule_catalogue_markdown
from flux_pipelines.contracts.pandera_schema import pandera_schema
from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.errors import PartitionRejected, TransientError
from flux_pipelines.faults import crash_point
from flux_pipelines.ingest.delivery import (
    PartitionLoader,
    PartitionResult,
    delivered_files,
    delivery_manifest,
    load_partition,
    raw_counts,
)
from flux_pipelines.instance.launcher import record_run_worker
from flux_pipelines.quality.monitors import forest_findings
from flux_pipelines.quality.scorecard import scorecard_row, write_scorecard
from flux_pipelines.reports import DeliveryReport
from flux_pipelines.resources.warehouse import FluxWarehouse, publish_partition

PARTITIONS_START = "2020-01-01"
DAILY = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1, timezone="UTC")
CONSERVATION = "conservation"
TRANSIENT_RETRIES = 3
DELIVERY_WINDOW = dt.timedelta(hours=24)


def retry_delay(attempt: int, base: float = 2.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter (so parallel retries do not stampede)."""
    return random.uniform(0, min(cap, base * 2**attempt))


@contextmanager
def transient_retries(retry_number: int) -> Iterator[None]:
    """A TransientError (a held file lock) inside becomes a retry with backoff; nothing else."""
    try:
        yield
    except TransientError as exc:
        raise dg.RetryRequested(
            max_retries=TRANSIENT_RETRIES, seconds_to_wait=retry_delay(retry_number)
        ) from exc


CONTRACT_SCHEMA = "contract_schema"
ANOMALIES = "anomalies"


def delivery_freshness(agency: Agency) -> dg.FreshnessPolicy:
    """Fresh when a delivery loaded in the 24 hours before the agency's daily deadline."""
    return dg.FreshnessPolicy.cron(
        deadline_cron=agency.delivery_deadline, lower_bound_delta=DELIVERY_WINDOW, timezone="UTC"
    )


def agency_pool(agency: Agency) -> str:
    """One concurrency pool per agency file: at most one writer at a time."""
    return f"duckdb_{agency.key}"


def asset_keys(agency: Agency, dataset: str) -> tuple[dg.AssetKey, dg.AssetKey, dg.AssetKey]:
    tables = DatasetTables.for_dataset(dataset)
    return (
        dg.AssetKey([agency.key, tables.raw]),
        dg.AssetKey([agency.key, tables.curated]),
        dg.AssetKey([agency.key, tables.quarantine]),
    )


def column_schema(contract: Contract) -> dg.TableSchema:
    """The curated table's columns as the UI shows them, constraints included."""
    columns = []
    for c in contract.columns:
        other = [
            r.expected
            for r in contract.rules
            if r.column == c.name and r.kind not in ("required", "type", "unique")
        ]
        columns.append(
            dg.TableColumn(
                name=c.name,
                type=DUCKDB_TYPES[c.logical_type],
                description=c.description or None,
                constraints=dg.TableColumnConstraints(
                    nullable=not c.required, unique=c.unique or c.primary_key, other=other
                ),
            )
        )
    return dg.TableSchema(columns=columns)


def build_ingest_asset(agency: Agency, dataset: str, registry: Registry) -> dg.AssetsDefinition:
    """The raw / curated / quarantine multi-asset for one agency's dataset."""
    contract = registry.latest_for(dataset, agency)
    raw_key, curated_key, quarantine_key = asset_keys(agency, dataset)
    # Cross-dataset rules read other curated tables of the agency: load those first.
    referenced = sorted({d for r in contract.cross_rules for d in r.datasets})
    tables = DatasetTables.for_dataset(dataset)
    common = {
        "group_name": agency.key,
        "owners": [agency.owner] if agency.owner else [],
        "tags": {"domain": contract.domain, "agency": agency.key, "dataset": dataset},
        "partitions_def": DAILY,
    }
    specs = [
        dg.AssetSpec(
            raw_key,
            description=f"Every delivered row of {agency.name}'s {contract.title}, as text, "
            "with file, row number, file sha256 and run id.",
            kinds={"duckdb", "polars"},
            metadata={"dagster/table_name": f"{agency.id}.{tables.raw}"},
            **common,
        ),
        dg.AssetSpec(
            curated_key,
            deps=[raw_key, *(asset_keys(agency, d)[1] for d in referenced)],
            description=f"{contract.title} rows of {agency.name} that pass every fatal rule of "
            f"contract {contract.id}, typed. {contract.description}".strip(),
            kinds={"duckdb", "pandera"},
            metadata={
                "dagster/column_schema": column_schema(contract),
                "dagster/table_name": f"{agency.id}.{tables.curated}",
                "contract": dg.MetadataValue.path(contract.source_path),
                "contract_version": contract.version,
                "rules": len(contract.catalogue()),
                "rule_catalogue": dg.MetadataValue.md(rule_catalogue_markdown(contract)),
            },
            freshness_policy=delivery_freshness(agency),
            **common,
        ),
        dg.AssetSpec(
            quarantine_key,
            deps=[raw_key],
            description=f"Rows of {agency.name}'s {contract.title} that fail a fatal rule (one "
            "row per violation: rule, field, value, expected, severity, row, file, contract "
            "version) and files rejected whole.",
            kinds={"duckdb"},
            metadata={"dagster/table_name": f"{agency.id}.{tables.quarantine}"},
            **common,
        ),
    ]
    checks = [
        dg.AssetCheckSpec(
            CONSERVATION,
            asset=curated_key,
            description="Nothing lost: per file, rows read = rows curated + rows quarantined.",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            CONTRACT_SCHEMA,
            asset=curated_key,
            description=f"The curated partition satisfies the pandera schema generated from "
            f"contract {contract.id} (fatal rules).",
        ),
        dg.AssetCheckSpec(
            ANOMALIES,
            asset=curated_key,
            description="Delivery metrics (row count, reject rate, null rates, numeric means) "
            "against this agency's own history: DPLA's volume-drop and reject-rate rules, "
            "seasonal z-scores (weekday, day of month), an Isolation Forest. WARN or ERROR; an "
            "ERROR holds the day out of the cross-agency outputs until overridden.",
        ),
    ]

    @dg.multi_asset(
        name=f"{agency.key}__{tables.curated}__ingest",
        specs=specs,
        check_specs=checks,
        can_subset=False,
        pool=agency_pool(agency),
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def _ingest(
        context: AssetExecutionContext, warehouse: FluxWarehouse
    ) -> Iterator[dg.MaterializeResult]:
        # Lets run monitoring tell a dead run worker from a slow one (instance/launcher.py).
        record_run_worker(context.instance, context.run.run_id)
        crash_point("ingest.started")
        results: list[PartitionResult] = []
        check_rows: list[dict[str, object]] = []
        try:
            # One connection for every partition of the step: opening and checkpointing the
            # agency file per day cost ~35 ms a partition in a year-long backfill.
            with warehouse.connect(agency.id) as conn:
                outputs = DeliveryOutputs(conn, warehouse.root, context.run.run_id)
                try:
                    for key in context.partition_keys:
                        result, check = _load_one(
                            context, conn, outputs, warehouse, registry, agency, dataset, key
                        )
                        results.append(result)
                        check_rows.append(check)
                        context.log.info(_summary_line(result))
                finally:
                    outputs.close()
                for check in check_rows:  # an error writing a report or the trail fails here
                    if "report" in check:
                        check["report"] = check["report"].result()  # type: ignore[attr-defined]
                schema = [
                    schema_check(conn, registry.storage_contract(c), days)
                    for c, days in _days_by_contract(results)
                ]
                _finish_monitors(conn, dataset, check_rows)
                write_scorecard(
                    conn,
                    warehouse.root / "published",
                    [
                        _scorecard_row(r, c, context.run.run_id, agency)
                        for r, c in zip(results, check_rows, strict=True)
                        if "monitor" in c
                    ],
                )
        except TransientError as exc:
            # Only transient errors (a held lock) are retried; data and configuration errors
            # fail at once with their message.
            raise dg.RetryRequested(
                max_retries=TRANSIENT_RETRIES, seconds_to_wait=retry_delay(context.retry_number)
            ) from exc
        errors = [e for r in results for e in r.errors]
        if errors:
            first = next(r for r in results if r.errors)
            rejection = PartitionRejected(agency.id, dataset, first.day.isoformat(), errors)
            raise dg.Failure(
                description=str(rejection),
                metadata={
                    "agency": agency.id,
                    "dataset": dataset,
                    "files": [e.file for e in errors],
                    "rules": [e.rule_id for e in errors],
                },
                allow_retries=False,
            )
        yield from _materializations(
            results, check_rows, schema, raw_key, curated_key, quarantine_key
        )

    return _ingest


def _load_one(
    context: AssetExecutionContext,
    conn: duckdb.DuckDBPyConnection,
    outputs: DeliveryOutputs,
    warehouse: FluxWarehouse,
    registry: Registry,
    agency: Agency,
    dataset: str,
    partition_key: str,
) -> tuple[PartitionResult, dict[str, object]]:
    day = dt.date.fromisoformat(partition_key)
    contract = registry.contract_for(dataset, day, agency)
    folder = warehouse.landing_dir(agency.id, dataset, partition_key)
    files, manifest = delivered_files(folder), delivery_manifest(folder)
    loader = PartitionLoader(
        conn,
        agency=agency.id,
        contract=contract,
        day=day,
        run_id=context.run.run_id,
        raw_root=warehouse.raw_root(agency.id, dataset),
        references=registry.references_for(contract, day),
        storage=registry.storage_contract(contract),
    )
    result = load_partition(loader, files, manifest)
    checks = {
        "day": partition_key,
        **conservation(conn, contract, day, raw_counts(loader.raw_dir, conn)),
    }
    published = publish_partition(
        conn, warehouse, agency.id, dataset, DatasetTables.for_dataset(dataset).curated, day
    )
    crash_point("ingest.published")
    if result.files:  # a day without a delivery has nothing to report or audit
        checks["monitor"] = monitor_partition(conn, registry.storage_contract(contract), day)
        checks["files_delivered"] = files
        checks["report"] = outputs.submit(agency.id, result, published)
    return result, checks


def conservation(
    conn: duckdb.DuckDBPyConnection, contract: Contract, day: dt.date, raw: dict[str, int]
) -> dict[str, object]:
    """Recount from storage: per file, raw rows = rows read = curated + quarantined rows."""
    t = DatasetTables.for_dataset(contract.dataset)
    rows = conn.execute(
        f"""SELECT d.file, d.status, d.rows_read,
              (SELECT count(*) FROM {quote(t.curated)} c
                 WHERE c.{PARTITION} = d.{PARTITION} AND c._file = d.file),
              (SELECT count(DISTINCT _row_number) FROM {quote(t.quarantine)} q
                 WHERE q.{PARTITION} = d.{PARTITION} AND q._file = d.file
                   AND q._row_number IS NOT NULL)
            FROM {DELIVERIES_TABLE} d WHERE d.dataset = ? AND d.{PARTITION} = ?""",
        [contract.dataset, day],
    ).fetchall()
    broken = []
    for file, status, read, cur_n, quar_n in rows:
        raw_n = raw.get(file, 0)
        if status == "loaded":
            ok = read == raw_n == cur_n + quar_n
        else:
            ok = cur_n == 0 and raw_n == (read or 0)
        if not ok:
            broken.append(f"{file}: read={read} raw={raw_n} curated={cur_n} quarantined={quar_n}")
    return {"conservation_ok": not broken, "conservation_broken": broken, "files": len(rows)}


def _days_by_contract(results: list[PartitionResult]) -> list[tuple[Contract, list[dt.date]]]:
    groups: dict[str, tuple[Contract, list[dt.date]]] = {}
    for r in results:
        groups.setdefault(r.contract.version, (r.contract, []))[1].append(r.day)
    return list(groups.values())


def schema_check(
    conn: duckdb.DuckDBPyConnection, contract: Contract, days: list[dt.date]
) -> dict[str, object]:
    """Validate the curated partitions, read back from DuckDB, with the pandera schema.

    Once per step and contract version, not per day: pandera's fixed cost (~30 ms a call)
    was a fifth of each partition's time in a year-long backfill.
    """
    table = quote(DatasetTables.for_dataset(contract.dataset).curated)
    cols = ", ".join(quote(c) for c in contract.column_names)
    frame = conn.sql(
        f"SELECT {cols} FROM {table} WHERE {PARTITION} IN (SELECT unnest(?))", params=[days]
    ).pl()
    try:
        pandera_schema(contract).validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        summary = (
            cases.group_by("column", "check").len().sort("len", descending=True).head(10).rows()
            if isinstance(cases, pl.DataFrame)
            else str(cases)[:500]
        )
        span = f"{min(days)}..{max(days)}" if len(days) > 1 else str(days[0])
        return {"schema_ok": False, "schema_failures": [f"{span}: {s}" for s in summary]}
    return {"schema_ok": True, "schema_failures": []}


def _materializations(
    results: list[PartitionResult],
    checks: list[dict[str, object]],
    schema: list[dict[str, object]],
    raw_key: dg.AssetKey,
    curated_key: dg.AssetKey,
    quarantine_key: dg.AssetKey,
) -> Iterator[dg.MaterializeResult]:
    rows_in = sum(r.rows_in for r in results)
    curated = sum(r.rows_curated for r in results)
    quarantined = sum(r.rows_quarantined for r in results)
    rules: Counter[str] = Counter()
    for r in results:
        rules.update(r.rule_counts)
    files = [f for r in results for f in r.files]
    drift = sorted({c for f in files for c in f.unmapped})
    versions = sorted({r.contract.version for r in results})
    yield dg.MaterializeResult(
        asset_key=raw_key,
        metadata={
            "dagster/row_count": rows_in,
            "files": dg.MetadataValue.md(_files_table(results)),
            "unmapped_columns": ", ".join(drift) or "none",
            "schema_drift": "; ".join(f"{f.file}: {f.drift}" for f in files if f.drift) or "none",
        },
    )
    conservation_ok = all(bool(c["conservation_ok"]) for c in checks)
    schema_ok = all(bool(c["schema_ok"]) for c in schema)
    yield dg.MaterializeResult(
        asset_key=curated_key,
        metadata={
            "dagster/row_count": curated,
            "rows_in": rows_in,
            "rows_quarantined": quarantined,
            "rows_with_warnings": sum(r.rows_with_warnings for r in results),
            "reject_rate": quarantined / rows_in if rows_in else 0.0,
            "contract_version": ", ".join(versions),
            "partitions": len(results),
            "deliveries_missing": sum(1 for r in results if not r.files),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=CONSERVATION,
                passed=conservation_ok,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "rows_in": rows_in,
                    "rows_curated": curated,
                    "rows_quarantined": quarantined,
                    "broken": "; ".join(str(b) for c in checks for b in c["conservation_broken"])
                    or "none",  # type: ignore[attr-defined]
                },
            ),
            _anomaly_result([c["monitor"] for c in checks if "monitor" in c]),  # type: ignore[misc]
            dg.AssetCheckResult(
                check_name=CONTRACT_SCHEMA,
                passed=schema_ok,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "failures": "; ".join(str(f) for c in schema for f in c["schema_failures"])
                    or "none",  # type: ignore[attr-defined]
                },
            ),
        ],
    )
    yield dg.MaterializeResult(
        asset_key=quarantine_key,
        metadata={
            "dagster/row_count": quarantined,
            "rows_quarantined": quarantined,
            "reject_rate": quarantined / rows_in if rows_in else 0.0,
            "top_rules": dg.MetadataValue.md(_rules_table(rules)),
            **_report_links([c["report"] for c in checks if "report" in c]),  # type: ignore[misc]
        },
    )


def _finish_monitors(
    conn: duckdb.DuckDBPyConnection, dataset: str, checks: list[dict[str, object]]
) -> None:
    """Add the Isolation Forest's verdicts: one fit for every delivered day of the step."""
    judged = [c for c in checks if "monitor" in c]
    verdicts = forest_findings(conn, dataset, [c["monitor"].day for c in judged])  # type: ignore[attr-defined]
    for c in judged:
        outcome: MonitorOutcome = c["monitor"]  # type: ignore[assignment]
        c["monitor"] = outcome.with_forest(verdicts.get(outcome.day))


def _scorecard_row(
    result: PartitionResult, checks: dict[str, object], run_id: str, agency: Agency
) -> dict[str, object]:
    outcome: MonitorOutcome = checks["monitor"]  # type: ignore[assignment]
    return scorecard_row(
        result,
        run_id=run_id,
        deadline_cron=agency.delivery_deadline,
        files=checks["files_delivered"],  # type: ignore[arg-type]
        anomaly_severity=outcome.severity,
        anomalies=list(outcome.findings),
    )


def _anomaly_result(outcomes: list[MonitorOutcome]) -> dg.AssetCheckResult:
    """One result for the step's days: the worst severity, every finding listed."""
    findings = [f"{o.day}: {f}" for o in outcomes for f in o.findings]
    worst = "ERROR" if any(o.severity == "ERROR" for o in outcomes) else "WARN"
    notes = sorted({n for o in outcomes for n in o.notes})
    return dg.AssetCheckResult(
        check_name=ANOMALIES,
        passed=not findings,
        severity=dg.AssetCheckSeverity.ERROR if worst == "ERROR" else dg.AssetCheckSeverity.WARN,
        metadata={
            "findings": dg.MetadataValue.md("\n".join(f"- {f}" for f in findings) or "none"),
            "days_checked": len(outcomes),
            "notes": "; ".join(notes) or "none",
            **(outcomes[-1].metadata if outcomes else {}),
        },
    )


def _report_links(reports: list[DeliveryReport]) -> dict[str, object]:
    """Where the agency's reports are (the latest day's, for a range)."""
    if not reports:
        return {}
    last = reports[-1]
    return {
        "agency_report": dg.MetadataValue.path(str(last.summary)),
        "error_report_csv": dg.MetadataValue.path(str(last.error_report)),
        "warning_report_csv": dg.MetadataValue.path(str(last.warning_report)),
        "report_errors": last.errors,
        "report_warnings": last.warnings,
        "reports_written": len(reports),
    }


def _summary_line(r: PartitionResult) -> str:
    top = ", ".join(f"{k}={v}" for k, v in r.rule_counts.most_common(3)) or "none"
    drift = "".join(f"; drift in {f.file}: {f.drift}" for f in r.files if f.drift)
    return (
        f"{r.agency}/{r.dataset} {r.day}: {len(r.files)} file(s), {r.rows_in} rows in, "
        f"{r.rows_curated} curated, {r.rows_quarantined} quarantined "
        f"(contract {r.contract.version}); top rules: {top}{drift}"
    )


def _files_table(results: list[PartitionResult]) -> str:
    lines = ["| day | file | status | rows | sha256 |", "|---|---|---|---|---|"]
    for r in results:
        for f in r.files:
            lines.append(
                f"| {r.day} | {f.file} | {f.status} | {f.rows_read} | {(f.sha256 or '')[:12]} |"
            )
    return "\n".join(lines) if len(lines) > 2 else "no delivery"


def _rules_table(rules: Counter[str]) -> str:
    if not rules:
        return "no violations"
    lines = ["| rule | violations |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rules.most_common(15)]
    return "\n".join(lines)
