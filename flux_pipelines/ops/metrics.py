"""Prometheus series computed at scrape time from the stores Flux already keeps.

Nothing is counted in memory: every value is read from Dagster's instance (runs, the event
log, sensor ticks), the delivery receipts and published scorecards under the home, and the
audit trail, so a restart of the exporter changes no value. What is kept in memory is only
a *cache of those stores* that spares re-reading what cannot have changed:

- the latest curated materialization per (agency, dataset, day), advanced by event-log
  cursor (storage id) each scrape, so a scrape reads only new materializations; a re-load
  of a day replaces the day's entry, it never adds to it;
- the audit trail's verdict, keyed by the trail's and anchors' size/mtime/inode;
- the scorecard verdicts (anomalies, holds), keyed by the scorecard files and the trail.

The exporter never opens an agency's working DuckDB file under ``warehouse/`` (DuckDB lets
one process hold a file, so a reader there blocks every load into it): receipts are JSON
files beside them, and the anomaly verdicts come from the published scorecard Parquet files.

Windows, so that a scrape's cost does not grow with history: runs by job and status count
the latest ``run_window`` runs; step durations cover the latest ``step_window`` STEP_SUCCESS
and STEP_FAILURE events of the event log (a failed step's duration from its STEP_START);
delivery states cover the ``status_days`` days up to today.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from flux_pipelines.ops.health import AuditCache, Problem

if TYPE_CHECKING:
    import dagster as dg

    from flux_pipelines.contracts.registry import Registry

log = logging.getLogger(__name__)

RUN_WINDOW = 2000
STEP_WINDOW = 1000
STATUS_DAYS = 14
SLO_EVERY_SECONDS = 60.0  # how often a scrape re-measures the SLOs
MATERIALIZATION_PAGE = 1000
FACTS_MAX_AGE = 300.0  # seconds
STEP_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENCY_BUCKETS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400,
                   7 * 86400)  # fmt: skip
_RULE_ROW = re.compile(r"^\|\s*([^|]+?)\s*\|\s*(\d+)\s*\|$")


@dataclass
class DayLoad:
    """The latest curated load of one (agency, dataset, day), as its materialization says."""

    rows_in: int
    curated: int
    quarantined: int
    violations: dict[str, int]
    loaded_at: float  # the materialization's timestamp
    arrived_at: float | None  # the newest delivered file's mtime, from the day's receipt


@dataclass
class _Loads:
    """Latest curated materialization per partition, advanced by event-log storage id."""

    cursor: int | None = None
    latest: dict[tuple[str, str, str], DayLoad] = field(default_factory=dict)


def _value(metadata: Any, name: str) -> Any:
    value = metadata.get(name)
    return getattr(value, "value", value)


def _int(metadata: Any, name: str) -> int:
    raw = _value(metadata, name)
    return int(raw) if isinstance(raw, int | float) else 0


def rule_counts(table: object) -> dict[str, int]:
    """Rule -> violations from the ``top_rules`` Markdown table (the top 15 rules)."""
    counts: dict[str, int] = {}
    for line in str(table or "").splitlines():
        match = _RULE_ROW.match(line.strip())
        if match and match.group(1) != "rule":
            counts[match.group(1)] = int(match.group(2))
    return counts


def arrival_time(home: Path, agency: str, dataset: str, day: str, run_id: str) -> float | None:
    """When the day's delivery arrived: the newest file mtime its receipt recorded when the
    load read it; None without a receipt of that very run."""
    from flux_pipelines.errors import StorageNotConfined
    from flux_pipelines.ingest.receipts import read_receipt
    from flux_pipelines.resources.warehouse import FluxWarehouse

    try:
        path = FluxWarehouse(home=str(home)).receipt_path(agency, dataset, day)
    except StorageNotConfined:  # a link where a folder belongs: no receipt to trust
        return None
    receipt = read_receipt(path)
    if receipt is None or receipt.run_id != run_id or not receipt.stats:
        return None
    mtimes = [int(key.split(":")[1]) for key in receipt.stats.values() if key.count(":") == 2]
    return max(mtimes) / 1e9 if mtimes else None


class FluxCollector(Collector):
    """The ``flux_*`` series of one Flux home and its Dagster instance."""

    def __init__(
        self,
        home: Path,
        instance: dg.DagsterInstance,
        *,
        registry: Registry | None = None,
        readiness: Callable[[], list[Problem]] | None = None,
        audit: AuditCache | None = None,
        now: Callable[[], dt.datetime] | None = None,
        run_window: int = RUN_WINDOW,
        step_window: int = STEP_WINDOW,
        status_days: int = STATUS_DAYS,
    ) -> None:
        from flux_pipelines.contracts.registry import load_registry
        from flux_pipelines.names import ingest_keys

        self.home = home
        self.instance = instance
        self.registry = registry or load_registry()
        self.readiness = readiness
        self.audit = audit or AuditCache(home)
        self.now = now or (lambda: dt.datetime.now(dt.UTC))
        self.run_window, self.step_window, self.status_days = run_window, step_window, status_days
        self._curated = {
            ingest_keys(agency, dataset)[1]: (agency.id, dataset)
            for agency in self.registry.agencies
            for dataset in agency.datasets
        }
        self._loads = _Loads()
        self._verdicts: tuple[object, list[Any]] | None = None
        self._facts_cache: tuple[object, float, Any] | None = None
        self._slos: tuple[float, list[Any]] | None = None  # (when measured, results)
        self._lock = threading.Lock()  # one scrape at a time: the caches are shared

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: the stores are read at scrape time only

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started = time.perf_counter()
            errors = GaugeMetricFamily(
                "flux_collector_errors",
                "1 when a section of this scrape could not read its store (see the exporter's "
                "log), else 0",
                labels=["section"],
            )
            sections: list[tuple[str, Callable[[], list[Metric]]]] = [
                ("runs", self._runs),
                ("steps", self._steps),
                ("loads", self._load_metrics),
                ("deliveries", self._deliveries),
                ("verdicts", self._verdict_metrics),
                ("audit", self._audit_metrics),
                ("readiness", self._readiness_metrics),
                ("slo", self._slo_metrics),
            ]
            for name, section in sections:
                try:
                    yield from section()
                    errors.add_metric([name], 0)
                except Exception:
                    log.exception("flux metrics: section %s failed", name)
                    errors.add_metric([name], 1)
            yield errors
            duration = GaugeMetricFamily(
                "flux_scrape_duration_seconds", "How long computing this scrape took"
            )
            duration.add_metric([], time.perf_counter() - started)
            yield duration

    # -- Dagster: runs and steps ----------------------------------------------------------

    def _runs(self) -> list[Metric]:
        records = self.instance.get_run_records(limit=self.run_window)
        counted = Counter((r.dagster_run.job_name, r.dagster_run.status.value) for r in records)
        runs = GaugeMetricFamily(
            "flux_runs",
            f"Runs by job and status among the latest {self.run_window} runs (Dagster run storage)",
            labels=["job", "status"],
        )
        for (job, status), n in sorted(counted.items()):
            runs.add_metric([job, status], n)
        latest_failure = GaugeMetricFamily(
            "flux_run_last_failure_timestamp_seconds",
            "When the latest failed run (of the window) ended, by job",
            labels=["job"],
        )
        failed: dict[str, float] = {}
        for r in records:
            if r.dagster_run.status.value == "FAILURE" and r.end_time is not None:
                job = r.dagster_run.job_name
                failed[job] = max(failed.get(job, 0.0), r.end_time)
        for job, ended in sorted(failed.items()):
            latest_failure.add_metric([job], ended)
        return [runs, latest_failure]

    def _steps(self) -> list[Metric]:
        import dagster as dg
        from dagster import DagsterEventType

        durations: dict[tuple[str, str], list[float]] = defaultdict(list)
        for record in self.instance.get_event_records(
            dg.EventRecordsFilter(event_type=DagsterEventType.STEP_SUCCESS), limit=self.step_window
        ):
            event = record.event_log_entry.dagster_event
            # StepSuccessData is not public Dagster API: read its field by name.
            duration_ms = getattr(event.event_specific_data, "duration_ms", None) if event else None
            if isinstance(duration_ms, int | float):
                job = record.event_log_entry.job_name or ""
                durations[(job, "success")].append(duration_ms / 1000.0)
        failures = self.instance.get_event_records(
            dg.EventRecordsFilter(event_type=DagsterEventType.STEP_FAILURE), limit=self.step_window
        )
        by_run: dict[str, list[Any]] = defaultdict(list)
        for record in failures:
            by_run[record.run_id].append(record.event_log_entry)
        for run_id, entries in list(by_run.items())[:50]:  # failed runs: rare, bounded
            starts = {
                e.step_key: e.timestamp
                for e in self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
            }
            for entry in entries:
                if entry.step_key in starts:
                    durations[(entry.job_name or "", "failure")].append(
                        entry.timestamp - starts[entry.step_key]
                    )
        family = HistogramMetricFamily(
            "flux_step_duration_seconds",
            f"Step durations over the latest {self.step_window} STEP_SUCCESS and STEP_FAILURE "
            "events of the event log (a window, not a counter: use histogram_quantile on the "
            "buckets without rate())",
            labels=["job", "status"],
        )
        for (job, status), values in sorted(durations.items()):
            family.add_metric([job, status], *_buckets(values, STEP_BUCKETS))
        return [family]

    # -- Dagster: the latest curated load per day -------------------------------------------

    def _advance_loads(self) -> None:
        import dagster as dg
        from dagster import DagsterEventType

        while True:
            with warnings.catch_warnings():  # fetch_materializations needs an asset key
                warnings.simplefilter("ignore", UserWarning)
                records = self.instance.get_event_records(
                    dg.EventRecordsFilter(
                        event_type=DagsterEventType.ASSET_MATERIALIZATION,
                        after_cursor=self._loads.cursor,
                    ),
                    limit=MATERIALIZATION_PAGE,
                    ascending=True,
                )
            for record in records:
                self._loads.cursor = record.storage_id
                materialization = record.asset_materialization
                if materialization is None or record.partition_key is None:
                    continue
                pair = self._curated.get(materialization.asset_key)
                if pair is None:
                    continue
                agency, dataset = pair
                meta = materialization.metadata
                self._loads.latest[(agency, dataset, record.partition_key)] = DayLoad(
                    rows_in=_int(meta, "rows_in"),
                    curated=_int(meta, "dagster/row_count"),
                    quarantined=_int(meta, "rows_quarantined"),
                    violations=rule_counts(_value(meta, "top_rules")),
                    loaded_at=record.timestamp,
                    arrived_at=arrival_time(
                        self.home, agency, dataset, record.partition_key, record.run_id
                    ),
                )
            if len(records) < MATERIALIZATION_PAGE:
                return

    def _load_metrics(self) -> list[Metric]:
        self._advance_loads()
        labels = ["agency", "dataset"]
        rows_in = GaugeMetricFamily(
            "flux_rows_in", "Rows delivered, over each day's latest curated load", labels=labels
        )
        curated = GaugeMetricFamily(
            "flux_rows_curated", "Rows curated, over each day's latest load", labels=labels
        )
        quarantined = GaugeMetricFamily(
            "flux_rows_quarantined", "Rows quarantined, over each day's latest load", labels=labels
        )
        days = GaugeMetricFamily(
            "flux_days_loaded", "Delivery days with a curated load", labels=labels
        )
        violations = GaugeMetricFamily(
            "flux_quarantine_violations",
            "Fatal-rule violations of quarantined rows by rule, over each day's latest load (a "
            "day's top 15 rules; a row may break several rules)",
            labels=[*labels, "rule"],
        )
        last_load = GaugeMetricFamily(
            "flux_last_load_timestamp_seconds",
            "When the latest curated load of the agency's dataset was recorded",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "flux_delivery_to_curated_seconds",
            "From a delivery's arrival (newest file mtime, per its receipt) to its curated "
            "load (the materialization), over each day's latest load",
            labels=labels,
        )
        totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        rules: Counter[tuple[str, str, str]] = Counter()
        latest: dict[tuple[str, str], float] = {}
        waits: dict[tuple[str, str], list[float]] = defaultdict(list)
        for (agency, dataset, _day), load in self._loads.latest.items():
            pair = (agency, dataset)
            total = totals[pair]
            total[0] += load.rows_in
            total[1] += load.curated
            total[2] += load.quarantined
            total[3] += 1
            for rule, n in load.violations.items():
                rules[(agency, dataset, rule)] += n
            latest[pair] = max(latest.get(pair, 0.0), load.loaded_at)
            if load.arrived_at is not None:
                waits[pair].append(max(0.0, load.loaded_at - load.arrived_at))
        for pair, (n_in, n_cur, n_q, n_days) in sorted(totals.items()):
            rows_in.add_metric(list(pair), n_in)
            curated.add_metric(list(pair), n_cur)
            quarantined.add_metric(list(pair), n_q)
            days.add_metric(list(pair), n_days)
            last_load.add_metric(list(pair), latest[pair])
        for key, n in sorted(rules.items()):
            violations.add_metric(list(key), n)
        for pair, values in sorted(waits.items()):
            latency.add_metric(list(pair), *_buckets(values, LATENCY_BUCKETS))
        return [rows_in, curated, quarantined, days, violations, last_load, latency]

    # -- delivery status: late against each agency's deadline --------------------------------

    def _deliveries(self) -> list[Metric]:
        from flux_pipelines.quality.delivery_status import (
            State,
            classify,
            day_range,
            fetch_facts,
        )

        now = self.now()
        today = now.astimezone(dt.UTC).date() if now.tzinfo else now.date()
        days = day_range(today, self.status_days)
        pairs = [(a, d) for a in self.registry.agencies for d in a.datasets]
        facts = self._facts(pairs, days, fetch_facts)
        counted: Counter[tuple[str, str, str]] = Counter()
        for agency, dataset in pairs:
            for day in days:
                status = classify(agency, dataset, day, facts.get((agency.id, dataset, day)), now)
                counted[(agency.id, dataset, status.state.value)] += 1
        states = GaugeMetricFamily(
            "flux_delivery_days",
            f"Delivery days of the latest {self.status_days} (UTC, today included) by state: "
            "loaded, failed, late (deadline passed, nothing loaded), pending, not_expected",
            labels=["agency", "dataset", "state"],
        )
        late = GaugeMetricFamily(
            "flux_deliveries_late",
            f"Expected deliveries of the latest {self.status_days} days whose deadline passed "
            "with nothing loaded",
            labels=["agency", "dataset"],
        )
        for agency, dataset in pairs:
            for state in State:
                states.add_metric(
                    [agency.id, dataset, state.value], counted[(agency.id, dataset, state.value)]
                )
            late.add_metric([agency.id, dataset], counted[(agency.id, dataset, State.LATE.value)])
        return [states, late]

    def _facts(self, pairs: list[Any], days: list[dt.date], fetch: Callable[..., Any]) -> Any:
        """The instance's facts about the window, re-read only when the event log or a run
        changed since (or after ``FACTS_MAX_AGE``: a landing folder looked at for a failed
        attempt can change without an event); the states are re-classified every scrape,
        since they change with the clock alone."""
        newest = self.instance.get_run_records(limit=1)
        run_state = (
            (
                newest[0].dagster_run.run_id,
                newest[0].dagster_run.status.value,
                newest[0].update_timestamp,
            )
            if newest
            else None
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            import dagster as dg
            from dagster import DagsterEventType

            last_event = self.instance.get_event_records(
                dg.EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION), limit=1
            )
        key = (days[0], days[-1], self._loads.cursor, run_state,
               last_event[0].storage_id if last_event else None)  # fmt: skip
        cached = self._facts_cache
        if cached is None or cached[0] != key or time.monotonic() - cached[1] > FACTS_MAX_AGE:
            facts = fetch(
                self.instance, pairs, days, landing_root=self.home / "landing", with_metadata=False
            )
            self._facts_cache = (key, time.monotonic(), facts)
            return facts
        return cached[2]

    # -- anomaly monitors and the certification gate -----------------------------------------

    def _verdict_metrics(self) -> list[Metric]:
        from flux_pipelines.names import published_root
        from flux_pipelines.quality.certification import day_verdicts

        root = published_root(self.home)
        files = sorted(root.glob("*/_scorecard/*/*.parquet"))
        key = (
            tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files),
            self.audit._state(),
        )
        if self._verdicts is None or self._verdicts[0] != key:
            datasets = sorted({d for a in self.registry.agencies for d in a.datasets})
            verdicts = (
                [v for d in datasets for v in day_verdicts(root, self.audit.trail, d)]
                if files
                else []
            )
            self._verdicts = (key, verdicts)
        findings = GaugeMetricFamily(
            "flux_anomaly_days",
            "Published delivery days whose anomaly monitors found something, by the worst "
            "severity (WARN, ERROR), from the published scorecards",
            labels=["agency", "dataset", "severity"],
        )
        holds = GaugeMetricFamily(
            "flux_certification_holds",
            "Published delivery days held back by the certification gate (anomalies ERROR, "
            "no operator override in the audit trail)",
            labels=["agency", "dataset"],
        )
        by_severity: Counter[tuple[str, str, str]] = Counter()
        held: Counter[tuple[str, str]] = Counter()
        for v in self._verdicts[1]:
            if v.anomaly_severity in ("WARN", "ERROR"):
                by_severity[(v.agency, v.dataset, v.anomaly_severity)] += 1
            if not v.certified:
                held[(v.agency, v.dataset)] += 1
        for agency, dataset in sorted({(v.agency, v.dataset) for v in self._verdicts[1]}):
            for severity in ("WARN", "ERROR"):
                findings.add_metric(
                    [agency, dataset, severity], by_severity[(agency, dataset, severity)]
                )
            holds.add_metric([agency, dataset], held[(agency, dataset)])
        return [findings, holds]

    # -- the audit trail and readiness ------------------------------------------------------

    def _audit_metrics(self) -> list[Metric]:
        status = self.audit.status()
        ok = GaugeMetricFamily(
            "flux_audit_trail_verified",
            "1 when the audit trail verifies end to end against both anchors, else 0",
        )
        ok.add_metric([], 1 if status.ok else 0)
        records = GaugeMetricFamily("flux_audit_trail_records", "Records in the audit trail")
        records.add_metric([], status.records)
        problems = GaugeMetricFamily(
            "flux_audit_trail_problems", "Problems the latest verification found"
        )
        problems.add_metric([], len(status.problems))
        when = GaugeMetricFamily(
            "flux_audit_trail_verified_timestamp_seconds",
            "When the trail was last verified (it is re-verified only when it or an anchor "
            "changed)",
        )
        when.add_metric([], status.verified_at)
        return [ok, records, problems, when]

    def _slo_metrics(self) -> list[Metric]:
        """``contracts/slos.yaml`` measured as ``flux slo report`` measures it (one
        evaluation, ``ops/slo.py``), at most once per ``SLO_EVERY_SECONDS``: the objectives
        span weeks, so a minute-old figure is current."""
        from flux_pipelines.ops.slo import evaluate

        if self._slos is None or time.monotonic() - self._slos[0] > SLO_EVERY_SECONDS:
            results = evaluate(self.home, self.instance, self.registry, now=self.now())
            self._slos = (time.monotonic(), results)
        labels = ["objective", "window"]
        ratio = GaugeMetricFamily(
            "flux_slo_ratio", "Good events / all events over the objective's window", labels=labels
        )
        target = GaugeMetricFamily("flux_slo_target", "The objective's target ratio", labels=labels)
        left = GaugeMetricFamily(
            "flux_slo_error_budget_left_ratio",
            "Share of the error budget left over the window (0 once exhausted)",
            labels=labels,
        )
        events = GaugeMetricFamily(
            "flux_slo_events", "Events judged over the window", labels=[*labels, "outcome"]
        )
        for r in self._slos[1]:
            key = [r.id, r.window]
            if r.ratio is not None:
                ratio.add_metric(key, r.ratio)
            target.add_metric(key, r.target)
            left.add_metric(key, r.budget_left_pct / 100)
            events.add_metric([*key, "good"], r.good)
            events.add_metric([*key, "bad"], r.bad)
        return [ratio, target, left, events]

    def _readiness_metrics(self) -> list[Metric]:
        if self.readiness is None:
            return []
        found = self.readiness()
        ready = GaugeMetricFamily("flux_ready", "1 when every readiness check passes, else 0")
        ready.add_metric([], 0 if found else 1)
        failing = GaugeMetricFamily(
            "flux_readiness_failing",
            "1 for each readiness check that fails now (postgres, home, landing, audit, sensor)",
            labels=["check"],
        )
        for check in ("postgres", "home", "landing", "audit", "sensor"):
            failing.add_metric([check], 1 if any(p.check == check for p in found) else 0)
        return [ready, failing]


def _buckets(
    values: list[float], bounds: tuple[float, ...]
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) buckets, +Inf included, and the sum, for HistogramMetricFamily."""
    buckets = [(_le(b), float(sum(1 for v in values if v <= b))) for b in bounds]
    buckets.append(("+Inf", float(len(values))))
    return buckets, float(sum(values))


def _le(bound: float) -> str:
    return str(float(bound))
