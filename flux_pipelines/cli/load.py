"""``flux load``: load a delivery already in the landing zone through Dagster, then report.

The run is the agency's ingest job, executed in this process on the home's Dagster instance
(the one ``flux dev`` serves), restricted to the dataset's three ingest assets, for one day
(a partition) or a day range (a single-run backfill, as the landing sensors request it). So
the run, its per-day materializations and its check results are in the UI, and every check
runs as it does for a sensor's run.

The report is read back from the run's own events in the instance, not from the warehouse:
per day, the curated asset's materialization (rows in, curated, quarantined, reject rate,
top rules, contract version), the raw asset's (files) and the three checks' evaluations;
a rejected delivery from the step's failure (agency, dataset, day, file, rule). The CLI shows
what the UI shows.

Exit code: 0 every day loaded with no row quarantined, 1 rows were quarantined, 2 a file was
rejected whole, the conservation or contract_schema check failed, or the run failed.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from flux_pipelines.contracts.ddl import DatasetTables
from flux_pipelines.contracts.registry import Agency, Registry, check_ids, load_registry
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.names import (
    CHECK_NAMES,
    CONSERVATION,
    CONTRACT_SCHEMA,
    RANGE_END_TAG,
    RANGE_START_TAG,
)

SOURCE_TAG = "flux/source"
CHECKS = CHECK_NAMES
BLOCKING_CHECKS = (CONSERVATION, CONTRACT_SCHEMA)  # a failure of these exits 2


@dataclass(frozen=True)
class LoadRequest:
    agency: Agency
    dataset: str
    days: list[dt.date]

    @property
    def span(self) -> str:
        first, last = self.days[0].isoformat(), self.days[-1].isoformat()
        return first if first == last else f"{first}..{last}"


@dataclass
class DayResult:
    """One day of the run as its events recorded it."""

    day: str
    materialized: bool = False
    files: int | None = None
    rows_in: int | None = None
    curated: int | None = None
    quarantined: int | None = None
    reject_rate: float | None = None
    contract_version: str | None = None
    top_rules: list[tuple[str, int]] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)  # the anomalies check's
    rejected: bool = False


@dataclass(frozen=True)
class Rejection:
    day: str
    file: str
    rule: str


@dataclass
class RunReport:
    run_id: str
    success: bool
    status: str
    days: dict[str, DayResult]
    failure: str | None = None  # the step's failure description (or error message)
    rejections: list[Rejection] = field(default_factory=list)

    def exit_code(self) -> int:
        checks_failed = any(
            d.checks.get(name) is False for d in self.days.values() for name in BLOCKING_CHECKS
        )
        if not self.success or self.rejections or checks_failed:
            return 2
        if any((d.quarantined or 0) > 0 for d in self.days.values()):
            return 1
        return 0


# --- the request --------------------------------------------------------------------------------


def parse_day(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(f"{option} {value!r} is not a day (YYYY-MM-DD)") from None


def resolve_request(
    registry: Registry,
    *,
    agency_id: str,
    dataset: str,
    day: str | None,
    start: str | None,
    end: str | None,
) -> LoadRequest:
    """Check the agency, dataset and days; ConfigurationError with what to do otherwise."""
    agency = check_ids(registry, agency_id, dataset)
    assert agency is not None
    if day is not None and (start is not None or end is not None):
        raise ConfigurationError("give either --day, or --from and --to, not both")
    if day is not None:
        first = last = parse_day(day, "--day")
    elif start is not None and end is not None:
        first, last = parse_day(start, "--from"), parse_day(end, "--to")
        if last < first:
            raise ConfigurationError(f"--to {last} is before --from {first}")
    elif start is not None or end is not None:
        raise ConfigurationError("a range needs both --from and --to (or give one --day)")
    else:
        raise ConfigurationError("give the delivery day: --day YYYY-MM-DD, or --from and --to")
    earliest = agency.onboarded
    latest = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    for d in (first, last):
        if not earliest <= d <= latest:
            raise ConfigurationError(
                f"{d} is outside {agency.id}'s delivery days ({earliest}, its onboarding, "
                f"to {latest}): see onboarded in contracts/agencies.yaml"
            )
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    for d in days:
        registry.contract_for(dataset, d, agency)  # a day before any contract fails here
    return LoadRequest(agency, dataset, days)


def check_landing(home: Path, request: LoadRequest) -> list[Path]:
    """Every day's landing folder, each holding a delivery; ConfigurationError otherwise.

    A day without a delivery is refused rather than run: loading nothing is never what the
    user meant, and for a range it would hide a missing day.
    """
    from flux_pipelines.ingest.delivery import delivered_files
    from flux_pipelines.ingest.manifest import manifest_path

    root = home / "landing" / request.agency.id / request.dataset
    folders = [root / d.isoformat() for d in request.days]
    missing = [f for f in folders if not f.is_dir()]
    empty = [f for f in folders if f.is_dir() and not delivered_files(f) and not manifest_path(f)]
    where = f"{request.agency.id}/{request.dataset}"
    if missing:
        names = ", ".join(f.name for f in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ConfigurationError(
            f"no delivery for {where} on {names}: no folder {root}/<day>/ (home {home}); "
            "deliver the files there first, or load only the days that have a folder"
        )
    if empty:
        names = ", ".join(f.name for f in empty[:10]) + (" ..." if len(empty) > 10 else "")
        raise ConfigurationError(
            f"no delivery for {where} on {names}: the folder under {root} holds no data file "
            "(hidden, temporary and manifest files are not data)"
        )
    return folders


# --- the run ------------------------------------------------------------------------------------


def run_load(
    *,
    home: Path,
    agency_id: str,
    dataset: str,
    day: str | None,
    start: str | None,
    end: str | None,
) -> int:
    """Load, print the per-day report, return the exit code. ConfigurationError on bad input."""
    registry = load_registry()
    request = resolve_request(
        registry, agency_id=agency_id, dataset=dataset, day=day, start=start, end=end
    )
    folders = check_landing(home, request)

    from flux_pipelines.instance.config import prepare_dagster_home

    info = prepare_dagster_home(home)  # before the definitions load: they read FLUX_HOME
    typer.echo(info.describe())
    where = folders[0] if len(folders) == 1 else f"{folders[0].parent}/<day>"
    typer.echo(
        f"loading {request.agency.id}/{request.dataset} {request.span} "
        f"({len(request.days)} day(s)) from {where}"
    )
    started = time.perf_counter()
    run_id = execute(request)
    report = read_report(run_id, request)
    typer.echo(
        f"run {run_id} {report.status} in {time.perf_counter() - started:.1f}s "
        f"(job {job_name(request)})\n"
    )
    print_report(report, request)
    typer.echo(f"\nSee the run in the UI: uv run flux dev --home {home}, then Runs > {run_id[:8]}")
    return report.exit_code()


def job_name(request: LoadRequest) -> str:
    from flux_pipelines.defs.ingest.jobs import agency_job_name

    return agency_job_name(request.agency)


def execute(request: LoadRequest) -> str:
    """The agency's ingest job for the dataset's assets and the days, in this process."""
    import dagster as dg

    from flux_pipelines.definitions import defs
    from flux_pipelines.defs.ingest.assets import asset_keys

    first, last = request.days[0].isoformat(), request.days[-1].isoformat()
    tags = {SOURCE_TAG: "flux load", "dataset": request.dataset}
    partition: dict[str, Any] = {}
    if first == last:
        partition["partition_key"] = first
    else:
        tags |= {RANGE_START_TAG: first, RANGE_END_TAG: last}
    job = defs.resolve_job_def(job_name(request))
    try:
        result = job.execute_in_process(
            instance=dg.DagsterInstance.get(),
            asset_selection=list(asset_keys(request.agency, request.dataset)),
            # The report below says what happened; Dagster's console lines (a failure's
            # stack trace) would only repeat it. Every event is in the instance all the same.
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            tags=tags,
            raise_on_error=False,
            **partition,
        )
    except dg.DagsterError as exc:  # refused before a run existed (settings, selection)
        raise ConfigurationError(f"Dagster refused the run: {exc}") from exc
    return result.run_id


# --- the run's events ---------------------------------------------------------------------------


def read_report(run_id: str, request: LoadRequest) -> RunReport:
    """The run's outcome per day, from its events in the instance (what the UI shows)."""
    import dagster as dg

    from flux_pipelines.defs.ingest.assets import asset_keys

    instance = dg.DagsterInstance.get()
    raw_key, curated_key, quarantine_key = asset_keys(request.agency, request.dataset)
    days = {d.isoformat(): DayResult(d.isoformat()) for d in request.days}
    unpartitioned_checks: dict[str, bool] = {}
    report = RunReport(run_id, success=False, status="UNKNOWN", days=days)
    for event in _events(instance, run_id):
        kind = event.event_type
        if kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            m = event.step_materialization_data.materialization
            target = days.get(m.partition or "")
            if target is None:
                continue
            meta = _values(m.metadata)
            if m.asset_key == curated_key:
                _read_curated(target, meta)
            elif m.asset_key == raw_key and target.files is None:
                target.files = _files(meta.get("files"))
            elif m.asset_key == quarantine_key and not target.top_rules:
                target.top_rules = _rules(meta.get("top_rules"))
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.asset_check_evaluation_data
            if check.asset_key != curated_key:
                continue
            target = days.get(check.partition or "")
            if target is None:
                # a check evaluated over the whole run (no partition): it holds for every day
                unpartitioned_checks[check.check_name] = check.passed
                continue
            target.checks[check.check_name] = check.passed
            meta = _values(check.metadata)
            if check.check_name == "anomalies" and not check.passed:
                target.findings = _bullets(meta.get("findings"))
            if target.rows_in is None:  # a rejected day: no materialization, counts are here
                target.rows_in = _int(meta.get("rows_in"))
                target.curated = _int(meta.get("rows_curated"))
                target.quarantined = _int(meta.get("rows_quarantined"))
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            _read_failure(report, event.step_failure_data, request)
    for d in days.values():
        for name, passed in unpartitioned_checks.items():
            d.checks.setdefault(name, passed)
    for r in report.rejections:
        if r.day in days:
            days[r.day].rejected = True
    run = instance.get_run_by_id(run_id)
    report.status = run.status.value if run is not None else "UNKNOWN"
    report.success = run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    return report


def _events(instance: Any, run_id: str) -> Iterable[Any]:
    import dagster as dg

    wanted = {
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        dg.DagsterEventType.STEP_FAILURE,
    }
    cursor = None
    while True:
        page = instance.get_records_for_run(run_id, cursor=cursor, of_type=wanted, limit=1000)
        for record in page.records:
            if record.event_log_entry.dagster_event is not None:
                yield record.event_log_entry.dagster_event
        if not page.has_more:
            return
        cursor = page.cursor


def _values(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _read_curated(target: DayResult, meta: dict[str, Any]) -> None:
    target.materialized = True
    target.curated = _int(meta.get("dagster/row_count"))
    target.rows_in = _int(meta.get("rows_in"))
    target.quarantined = _int(meta.get("rows_quarantined"))
    rate = meta.get("reject_rate")
    target.reject_rate = float(rate) if isinstance(rate, int | float) else None
    version = meta.get("contract_version")
    target.contract_version = str(version) if version is not None else None
    files = _files(meta.get("files"))
    if files is not None:
        target.files = files
    target.top_rules = _rules(meta.get("top_rules")) or target.top_rules


def _table_rows(markdown: str) -> list[list[str]]:
    """The body rows of a Markdown table (header and separator dropped)."""
    lines = [ln.strip() for ln in markdown.splitlines() if ln.strip().startswith("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]


def _files(value: Any) -> int | None:
    """A file count: a number, or the rows of a Markdown files table."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return len(_table_rows(value))
    return None


def _rules(value: Any) -> list[tuple[str, int]]:
    if not isinstance(value, str):
        return []
    return [(r[0], int(r[1])) for r in _table_rows(value) if len(r) >= 2 and r[1].isdigit()]


def _bullets(value: Any) -> list[str]:
    if not isinstance(value, str):
        return []
    return [ln.strip()[2:] for ln in value.splitlines() if ln.strip().startswith("- ")]


def _read_failure(report: RunReport, data: Any, request: LoadRequest) -> None:
    user = data.user_failure_data
    if user is not None:
        report.failure = user.description or user.label
        meta = _values(user.metadata)
        files = [str(f) for f in meta.get("files") or []]
        rules = [str(r) for r in meta.get("rules") or []]
        days = [str(d) for d in meta.get("days") or []]
        if not days and len(request.days) == 1:
            days = [request.days[0].isoformat()]
        for i, (file, rule) in enumerate(zip(files, rules, strict=False)):
            report.rejections.append(Rejection(_day_of(i, files, days), file, rule))
        return
    error = data.error
    while error is not None and error.cause is not None:  # the user code's own exception
        error = error.cause
    report.failure = (error.message.strip() if error is not None else None) or "the step failed"


def _day_of(index: int, files: list[str], days: list[str]) -> str:
    """The day of the index-th rejected file: the step lists rejected days in order, each
    with at least one file, so one day, or as many files as days, is unambiguous."""
    if len(days) == 1:
        return days[0]
    if len(days) == len(files):
        return days[index]
    return " or ".join(days) if days else "?"


# --- printing -----------------------------------------------------------------------------------


def _show(value: int | None) -> str:
    return "-" if value is None else str(value)


def print_report(report: RunReport, request: LoadRequest) -> None:
    typer.echo(
        f"{'day':<10} {'status':<9} {'files':>5} {'rows in':>8} {'curated':>8} {'quarant.':>8} "
        f"{'reject':>7}  {'conservation':<12} {'contract_schema':<15} {'anomalies':<9}  top rules"
    )
    for d in report.days.values():
        status = "rejected" if d.rejected else "loaded" if d.materialized else "no result"
        rate = d.reject_rate
        if rate is None and d.rows_in:
            rate = (d.quarantined or 0) / d.rows_in
        checks = [
            "-" if d.checks.get(name) is None else "passed" if d.checks[name] else "FAILED"
            for name in CHECKS
        ]
        rules = ", ".join(f"{r} ({n})" for r, n in d.top_rules[:3]) or "-"
        typer.echo(
            f"{d.day:<10} {status:<9} {_show(d.files):>5} {_show(d.rows_in):>8} "
            f"{_show(d.curated):>8} {_show(d.quarantined):>8} "
            f"{'-' if rate is None else f'{rate:.1%}':>7}  {checks[0]:<12} {checks[1]:<15} "
            f"{checks[2]:<9}  {rules}"
        )
        for finding in d.findings[:3]:
            typer.echo(f"{'':<10} anomaly: {finding}")
    where = f"agency={request.agency.id} dataset={request.dataset}"
    code = report.exit_code()
    if report.rejections:
        typer.echo(f"\nFAILED: {report.failure}")
        for r in report.rejections:
            typer.echo(f"  rejected: {where} day={r.day} file={r.file} rule={r.rule}")
    elif report.failure:
        typer.echo(f"\nFAILED ({where}, {request.span}): {report.failure}")
    elif not report.success:
        typer.echo(f"\nFAILED ({where}, {request.span}): the run ended {report.status}")
    elif code == 2:
        typer.echo(
            f"\nFAILED ({where}): the conservation or contract_schema check failed; see "
            "the check's metadata in the UI"
        )
    quarantined = sum(d.quarantined or 0 for d in report.days.values())
    if code == 1:
        typer.echo(
            f"\n{quarantined} row(s) quarantined: rule, field, value and expected per row in "
            f"{request.agency.key}/{DatasetTables.for_dataset(request.dataset).quarantine} "
            "and the agency's error report"
        )
    elif code == 0:
        typer.echo(f"\nevery day loaded cleanly ({len(report.days)} day(s))")
