"""The alert sensors: three for the whole registry (not one per agency), built once.

- ``flux_alerts_run_failure`` (Dagster's ``run_failure_sensor``, every job of the location):
  a run that failed and will not be retried by Dagster's run retries (``dagster/will_retry``,
  else ``dagster/retry_number`` < ``dagster/max_retries`` and the failure reason) notifies
  the operators, once per agency, dataset and day the run failed for.
- ``flux_alerts_late``: the delivery status rules (``quality/delivery_status.py``) over the
  last ``late_lookback_days`` days; a late day notifies the operators and the agency's owner.
- ``flux_alerts_quality``: the ingest step's check results, read from the event log after a
  storage-id cursor (the sensor's own cursor). ``anomalies`` failed at ERROR is a day held
  back from certification (the agency's owner); a ``conservation`` result in a run that did
  not materialize the day is a file rejected whole (the submitting agency). It also resolves:
  a later load of the day clears a run failure and a rejection, a later non-ERROR
  ``anomalies`` result or an override in the audit trail clears a hold.

Default status: RUNNING when ``contracts/alerts.yaml`` configures a channel, else STOPPED,
so a demo home or a test without the file stays quiet; a bad file fails the definitions
load with a ConfigurationError naming it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.home import resolve_home
from flux_pipelines.names import ANOMALIES, CONSERVATION, ingest_keys
from flux_pipelines.ops.alerts import (
    AlertsConfig,
    Cause,
    Ledger,
    Notice,
    Router,
    alerts_path,
    build_channels,
    ledger_session,
    load_alerts_config,
    notice,
    unknown_agencies,
)

if TYPE_CHECKING:
    from flux_pipelines.contracts.registry import Agency

RUN_FAILURE_SENSOR = "flux_alerts_run_failure"
LATE_SENSOR = "flux_alerts_late"
QUALITY_SENSOR = "flux_alerts_quality"
PAGE = 200  # finished runs read per tick
UPDATE_MARGIN_S = 60.0  # a run's update time trails its end time by less than this
PARTITION_TAG = "dagster/partition"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AlertContext:
    """What every alert sensor shares: the config, the registry's curated keys, channels."""

    def __init__(self, registry: Registry, config: AlertsConfig, home: Path | None) -> None:
        self.registry = registry
        self.config = config
        self._home = home
        self.router = Router(config, registry)
        self.channels = build_channels(config)
        self.forget_after = dt.timedelta(days=config.thresholds.forget_after_days)

    @property
    def home(self) -> Path:
        return self._home or resolve_home()

    @functools.cached_property
    def curated(self) -> dict[dg.AssetKey, tuple[Agency, str]]:
        """Curated asset key -> (agency, dataset); built on first use, not at load."""
        return {ingest_keys(a, d)[1]: (a, d) for a in self.registry.agencies for d in a.datasets}

    def links(self, run_id: str | None = None, key: dg.AssetKey | None = None) -> dict[str, str]:
        ui = (self.config.ui_url or "").rstrip("/")
        if not ui:
            return {}
        found = {}
        if run_id:
            found["run"] = f"{ui}/runs/{run_id}"
        if key is not None:
            found["asset"] = f"{ui}/assets/{'/'.join(key.path)}"
        return found

    def dispatch(
        self,
        instance: dg.DagsterInstance,
        causes: set[Cause],
        now: dt.datetime,
        changes: Callable[[Ledger], None],
    ) -> dict[str, int]:
        """Apply ``changes`` to the ledger, then send what is due, in one locked session."""
        with ledger_session(instance) as ledger:
            changes(ledger)
            return ledger.dispatch(
                self.channels, self.router, causes, now.timestamp(), self.forget_after
            )


# -- run failures ---------------------------------------------------------------------------


def will_be_retried(run: dg.DagsterRun, instance: dg.DagsterInstance) -> bool:
    """Whether Dagster's run retries will re-execute the failed run (no notice yet)."""
    tags = run.tags
    if "dagster/will_retry" in tags:  # set by Dagster when the run failed
        return tags["dagster/will_retry"].lower() == "true"
    if not instance.run_retries_enabled:
        return False
    retries = int(tags.get("dagster/max_retries", instance.run_retries_max_retries))
    if int(tags.get("dagster/retry_number", 0)) >= retries:
        return False
    on_step = tags.get("dagster/retry_on_asset_or_op_failure")
    retry_on_step = (
        on_step.lower() == "true"
        if on_step is not None
        else instance.run_retries_retry_on_asset_or_op_failure
    )
    return tags.get("dagster/failure_reason") != "STEP_FAILURE" or retry_on_step


def _failure_descriptions(
    context: dg.RunFailureSensorContext,
) -> list[tuple[str, Mapping[str, Any]]]:
    found: list[tuple[str, Mapping[str, Any]]] = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        user = data.user_failure_data if data else None
        text = (user.description if user else None) or (
            data.error.message if data and data.error else ""
        )
        found.append((text or "", dict(user.metadata) if user else {}))
    return found


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def _failed_partitions(
    ctx: AlertContext, run: dg.DagsterRun, metadata: list[Mapping[str, Any]], today: dt.date
) -> list[tuple[str, str, str]]:
    """(agency, dataset, day) the run failed for: the ingest step's own failure metadata
    (agency, datasets, days), else the run's curated assets and partition (or range), else
    the job itself."""
    triples: list[tuple[str, str, str]] = []
    for meta in metadata:
        agency, datasets, days = (_value(meta.get(k)) for k in ("agency", "datasets", "days"))
        if agency and datasets and days:
            triples += [(str(agency), str(d), str(day)) for d in datasets for day in days]
    if triples:
        return list(dict.fromkeys(triples))
    tags = run.tags
    day = (
        tags.get(PARTITION_TAG)
        or (f"{tags[RANGE_START]}..{tags[RANGE_END]}" if RANGE_START in tags else "")
        or today.isoformat()  # an unpartitioned job: one notice per job and day
    )
    pairs = [ctx.curated[k] for k in (run.asset_selection or ()) if k in ctx.curated]
    if pairs:
        return list(dict.fromkeys((a.id, d, day) for a, d in pairs))
    return [(tags.get("agency", "-").replace("_", "-"), run.job_name, day)]


def _loaded_since(
    ctx: AlertContext, instance: dg.DagsterInstance, where: tuple[str, str, str], ended: float
) -> bool:
    """Whether the agency-day loaded after the failed run ended (a failure read late, or
    read again, is not news)."""
    agency, dataset, day = where
    keys = [k for k, (a, d) in ctx.curated.items() if a.id == agency and d == dataset]
    if not keys:
        return False
    page = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=keys[0], asset_partitions=[day]), limit=1
    )
    return bool(page.records) and page.records[0].timestamp > ended


def run_failure_alerts(
    ctx: AlertContext, default_status: dg.DefaultSensorStatus, clock: Clock
) -> dg.RunFailureSensorDefinition:
    @dg.run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        default_status=default_status,
        minimum_interval_seconds=ctx.config.thresholds.run_failure_interval_seconds,
        description="Notifies the operators of a failed run that Dagster will not retry: one "
        "notice per agency, dataset and day, and a resolve notice when the day loads.",
    )
    def _run_failure(context: dg.RunFailureSensorContext) -> None:
        run, instance = context.dagster_run, context.instance
        if will_be_retried(run, instance):
            context.log.info(f"run {run.run_id} failed and will be retried: no notice yet")
            return
        failures = _failure_descriptions(context)
        reason = "; ".join(t for t, _ in failures if t) or (context.failure_event.message or "")
        retry = run.tags.get("dagster/retry_number")
        retried = f" after {retry} retr{'y' if retry == '1' else 'ies'}" if retry else ""
        now = clock()

        triples = _failed_partitions(ctx, run, [m for _, m in failures], now.date())
        record = instance.get_run_record_by_id(run.run_id)
        ended = record.end_time if record is not None and record.end_time else now.timestamp()
        triples = [t for t in triples if not _loaded_since(ctx, instance, t, ended)]

        def changes(ledger: Ledger) -> None:
            for agency, dataset, day in triples:
                n = notice(
                    Cause.RUN_FAILURE,
                    agency,
                    dataset,
                    day,
                    title=f"Run failed: {agency}/{dataset} {day}",
                    text=f"Run {run.run_id} of job {run.job_name} failed{retried}. {reason[:1500]}",
                    links=ctx.links(run.run_id),
                )
                ledger.fire(
                    n,
                    now.timestamp(),
                    {
                        "run_id": run.run_id,
                        "job": run.job_name,
                        "partition": run.tags.get(PARTITION_TAG),
                    },
                )

        tally = ctx.dispatch(instance, {Cause.RUN_FAILURE}, now, changes)
        context.log.info(f"run {run.run_id}: {tally}")

    return _run_failure


# -- late deliveries ------------------------------------------------------------------------


def late_tick(ctx: AlertContext, instance: dg.DagsterInstance, now: dt.datetime) -> dict[str, int]:
    """Classify the lookback window (and the days of open late notices) and notify."""
    from flux_pipelines.quality.delivery_status import State, classify, day_range, fetch_facts

    t = ctx.config.thresholds
    window = day_range(now.date(), t.late_lookback_days)
    with ledger_session(instance) as ledger:
        open_days = {e.notice.day for e in ledger.open(Cause.LATE)}
    days = sorted(set(window) | {dt.date.fromisoformat(d) for d in open_days})
    pairs = [(a, d) for a in ctx.registry.agencies for d in a.datasets]
    facts = fetch_facts(
        instance, pairs, days, landing_root=ctx.home / "landing", with_metadata=False
    )
    judged_at = now - dt.timedelta(minutes=t.late_grace_minutes)

    def changes(ledger: Ledger) -> None:
        for agency, dataset in pairs:
            for day in days:
                s = classify(agency, dataset, day, facts.get((agency.id, dataset, day)), judged_at)
                key = (Cause.LATE, agency.id, dataset, day.isoformat())
                if s.state == State.LATE and day in window:
                    ledger.fire(
                        notice(
                            *key,
                            title=f"Late delivery: {agency.id}/{dataset} {day}",
                            text=f"No {dataset} delivery from {agency.name} for {day} has loaded; "
                            f"it was due {s.deadline:%Y-%m-%d %H:%M} UTC (delivery_deadline "
                            f"{agency.delivery_deadline}). {s.note}".strip(),
                            severity="WARN",
                        ),
                        now.timestamp(),
                    )
                elif s.state in (State.LOADED, State.FAILED):
                    ledger.resolve(
                        "|".join(map(str, key)),
                        f"The {dataset} delivery from "
                        f"{agency.id} for {day} arrived ({s.state.value}).",
                    )

    return ctx.dispatch(instance, {Cause.LATE}, now, changes)


def late_alerts(
    ctx: AlertContext, default_status: dg.DefaultSensorStatus, clock: Clock
) -> dg.SensorDefinition:
    @dg.sensor(
        name=LATE_SENSOR,
        default_status=default_status,
        minimum_interval_seconds=ctx.config.thresholds.late_interval_seconds,
        description="Notifies the operators and the agency's owner of a delivery late against "
        "its delivery_deadline, once per agency, dataset and day; resolves when it loads.",
    )
    def _late(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        return dg.SkipReason(f"late deliveries: {late_tick(ctx, context.instance, clock())}")

    return _late


# -- check results: anomaly holds, files rejected whole, loads that resolve --------------------


def _rejection_reason(text: str, agency: str, dataset: str, day: str) -> str:
    """The day's sentence of the step's failure message (it names file, reason and rule)."""
    match = re.search(
        re.escape(f"{agency}/{dataset} {day}:") + r".*?(?:re-deliver[^.]*\.|$)", text, flags=re.S
    )
    return match.group(0) if match else text[:1500]


def _rejected(
    agency: str, dataset: str, day: str, run_id: str, failure: str, links: dict[str, str]
) -> Notice:
    return notice(
        Cause.REJECTED, agency, dataset, day,
        title=f"File rejected: {agency}/{dataset} {day}",
        text=f"Your {dataset} delivery for {day} was rejected whole and not loaded "
        f"(run {run_id}). {_rejection_reason(failure, agency, dataset, day)}",
        links=links,
    )  # fmt: skip


def _held(
    agency: str, dataset: str, day: str, run_id: str, findings: str, links: dict[str, str]
) -> Notice:
    return notice(
        Cause.ANOMALY_HOLD, agency, dataset, day,
        title=f"Held back from certification: {agency}/{dataset} {day}",
        text=f"The anomaly monitors raised ERROR on {agency}/{dataset} {day} (run {run_id}); "
        "the day is held out of the cross-agency outputs until an operator overrides it "
        f"(`flux quality override`) or a corrected delivery loads.\n{findings}",
        links=links,
    )  # fmt: skip


def _finished_runs(
    instance: dg.DagsterInstance, after: float, seen: set[str]
) -> list[dg.RunRecord]:
    """Runs that ended after ``after`` (epoch seconds; ``seen``: those ending exactly then),
    oldest end first, at most PAGE. Queried by update time (indexed) with a margin, kept by
    end time, which never changes: a run re-tagged later is not read again."""
    records = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                      dg.DagsterRunStatus.CANCELED],
            updated_after=dt.datetime.fromtimestamp(after - UPDATE_MARGIN_S, dt.UTC),
        ),
        limit=PAGE,
        order_by="update_timestamp",
        ascending=True,
    )  # fmt: skip
    done = [r for r in records if r.end_time is not None]
    fresh = [r for r in done if _ended_after(r, after, seen)]
    return sorted(fresh, key=lambda r: r.end_time or 0.0)


def _ended_after(record: dg.RunRecord, after: float, seen: set[str]) -> bool:
    end = record.end_time
    if end is None:
        return False
    return end > after or (end == after and record.dagster_run.run_id not in seen)


def _run_steps(
    ctx: AlertContext, instance: dg.DagsterInstance, run_id: str
) -> list[tuple[Notice, dict[str, Any]] | tuple[str, str]]:
    """What one finished run's events say, in event order: causes raised, causes cleared."""
    kinds = {
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.STEP_FAILURE,
    }
    events = [
        r.event_log_entry for r in instance.get_records_for_run(run_id, of_type=kinds).records
    ]
    materialized: set[tuple[dg.AssetKey | None, str | None]] = set()
    failures: list[str] = []
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialized.add((event.asset_key, event.partition))
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_failure_data:
            data = event.step_failure_data
            user = data.user_failure_data
            failures.append(
                (user.description if user else None) or (data.error.message if data.error else "")
            )
    failure = " ".join(f for f in failures if f)
    steps: list[tuple[Notice, dict[str, Any]] | tuple[str, str]] = []
    for entry in events:
        event = entry.dagster_event
        if event is None or event.event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            continue
        evaluation = event.asset_check_evaluation_data
        found = ctx.curated.get(evaluation.asset_key)
        if found is None or evaluation.partition is None:
            continue
        (agency, dataset), day = found, evaluation.partition
        where = f"{agency.id}|{dataset}|{day}"
        links = ctx.links(run_id, evaluation.asset_key)
        if evaluation.check_name == CONSERVATION:
            if (evaluation.asset_key, day) in materialized:
                done = f"{agency.id}/{dataset} {day} loaded in run {run_id}."
                steps += [
                    (f"{Cause.REJECTED}|{where}", f"A replacement file loaded: {done}"),
                    (f"{Cause.RUN_FAILURE}|{where}", f"The day loaded: {done}"),
                ]
            else:  # the day's checks were recorded, its materialization was not
                rejected = _rejected(agency.id, dataset, day, run_id, failure, links)
                steps.append((rejected, {"run_id": run_id}))
        elif evaluation.check_name == ANOMALIES:
            if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
                findings = str(_value(evaluation.metadata.get("findings")) or "")
                held = _held(agency.id, dataset, day, run_id, findings, links)
                steps.append((held, {"run_id": run_id}))
            else:
                steps.append((
                    f"{Cause.ANOMALY_HOLD}|{where}",
                    f"A later load of the day passed the anomaly monitors (run {run_id}); "
                    "it is certified.",
                ))  # fmt: skip
    return steps


def quality_tick(
    ctx: AlertContext, instance: dg.DagsterInstance, cursor: str | None, now: dt.datetime
) -> tuple[str, dict[str, int]]:
    """Read the runs that ended since ``cursor``; returns the new cursor and what was sent."""
    state = json.loads(cursor) if cursor else {}
    after = float(state.get("after", (now - ctx.forget_after).timestamp()))
    seen = set(state.get("seen", []))
    # In event order: a cause raised and cleared within one tick is never sent.
    steps: list[tuple[Notice, dict[str, Any]] | tuple[str, str]] = []
    for record in _finished_runs(instance, after, seen):
        end = float(record.end_time or after)
        seen = (seen if end == after else set()) | {record.dagster_run.run_id}
        after = end
        steps += _run_steps(ctx, instance, record.dagster_run.run_id)

    def changes(ledger: Ledger) -> None:
        for first, second in steps:
            if isinstance(first, Notice) and isinstance(second, dict):
                ledger.fire(first, now.timestamp(), dict(second))
            elif isinstance(first, str) and isinstance(second, str):
                ledger.resolve(first, second)
        _resolve_overrides(ctx, ledger)
        _resolve_job_failures(instance, ledger)

    tally = ctx.dispatch(
        instance, {Cause.ANOMALY_HOLD, Cause.REJECTED, Cause.RUN_FAILURE}, now, changes
    )
    return json.dumps({"after": after, "seen": sorted(seen)}), tally


def _resolve_overrides(ctx: AlertContext, ledger: Ledger) -> None:
    """A held day an operator overrode (an audit-trail record) is certified."""
    holds = ledger.open(Cause.ANOMALY_HOLD)
    if not holds:
        return
    from flux_pipelines.audit.trail import AuditTrail

    trail = AuditTrail(ctx.home)
    if not trail.exists():
        return
    by_day = {
        (str(e.agency), str(e.dataset), str(e.day)): e for e in trail.iter_records(kind="override")
    }
    for entry in holds:
        n = entry.notice
        record = by_day.get((n.agency, n.dataset, n.day))
        if record is not None:
            ledger.resolve(
                n.key,
                f"Overridden by {record.payload.get('who', '?')}: "
                f"{record.payload.get('reason', '')}. The day is certified.",
            )


def _resolve_job_failures(instance: dg.DagsterInstance, ledger: Ledger) -> None:
    """A failed run of a job that loads no agency-day clears with a later successful run of
    the same job (and partition)."""
    for entry in ledger.open(Cause.RUN_FAILURE):
        job = entry.context.get("job")
        if not job or entry.notice.dataset != job:
            continue  # an agency-day: resolved by its load
        partition = entry.context.get("partition")
        later = instance.get_runs(
            dg.RunsFilter(
                job_name=job,
                statuses=[dg.DagsterRunStatus.SUCCESS],
                tags={PARTITION_TAG: partition} if partition else {},
                created_after=dt.datetime.fromtimestamp(entry.fired_at, dt.UTC),
            ),
            limit=1,
        )
        if later:
            ledger.resolve(entry.notice.key, f"Run {later[0].run_id} of {job} succeeded.")


def quality_alerts(
    ctx: AlertContext, default_status: dg.DefaultSensorStatus, clock: Clock
) -> dg.SensorDefinition:
    @dg.sensor(
        name=QUALITY_SENSOR,
        default_status=default_status,
        minimum_interval_seconds=ctx.config.thresholds.quality_interval_seconds,
        description="Notifies the agency's owner of a day held back by an anomaly ERROR and "
        "the submitting agency of a file rejected whole, from the event log; resolves "
        "holds, rejections and run failures when the day loads or is overridden.",
    )
    def _quality(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        cursor, tally = quality_tick(ctx, context.instance, context.cursor, clock())
        context.update_cursor(cursor)
        return dg.SkipReason(f"runs read to {cursor}: {tally}")

    return _quality


def alert_sensors(
    registry: Registry,
    *,
    config_path: Path | None = None,
    home: Path | None = None,
    clock: Clock = _utcnow,
) -> list[dg.SensorDefinition]:
    """The three alert sensors for every agency (tests pass a config file, home and clock)."""
    path = config_path or alerts_path(registry)
    config = load_alerts_config(path)
    unknown = unknown_agencies(config, {a.id for a in registry.agencies})
    if unknown:
        raise ConfigurationError(
            f"alerts file {path}: agency {', '.join(unknown)} is not in "
            f"{registry.root / 'agencies.yaml'} (named under channels.webhook.by_agency or "
            "audiences.agencies); use an agency id from that file or remove the entry"
        )
    status = (
        dg.DefaultSensorStatus.RUNNING if config.has_channels else dg.DefaultSensorStatus.STOPPED
    )
    ctx = AlertContext(registry, config, home)
    return [
        run_failure_alerts(ctx, status, clock),
        late_alerts(ctx, status, clock),
        quality_alerts(ctx, status, clock),
    ]
