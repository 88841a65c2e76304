"""Delivery status: per agency, dataset and day, was a delivery expected, and what became of it.

Every (agency, dataset, day) is exactly one of

- ``not_expected``: before the agency's onboarding date, or a day on which its
  ``delivery_deadline`` cron does not fire (weekends for ``0 9 * * 1-5``);
- ``pending``: expected, the deadline has not passed, nothing loaded;
- ``late``: expected, the deadline has passed, nothing loaded and no failed load;
- ``loaded``: the curated asset's partition is materialized and no later attempt failed;
- ``failed``: the latest attempt at the partition failed (a file rejected whole, a broken
  count, a crashed step).

An actual outcome wins over the calendar: a delivery loaded (or failed) on a day none was
expected shows as loaded (failed), not as ``not_expected``.

The source of truth is the Dagster instance (the event log and the runs, from which the UI
draws its partition status: a partition is failed when the latest run that planned it
failed without materializing it) plus the registry (onboarding date, deadline). The work is
split in two so the rules are testable on constructed facts: :func:`fetch_facts` queries the
instance, two queries per asset whatever the number of days, and :func:`classify` /
:func:`status_table` are pure functions of the facts.

Two refinements over the UI's partition status: (1) it keeps a partition failed until it
is materialized, even when a later run planned it and succeeded; here the latest attempt
counts (it succeeded without the day: nothing was delivered). (2) A failed run marks every
day it planned, so a backfill over a range where one day's file was rejected also fails
the range's days without any delivery. A day the failed attempt recorded no check result
for and whose landing folder holds no delivery had no failed load: it is late (or pending,
or loaded when an earlier load stands), with a note saying so.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.names import CHECK_NAMES, LANDING_FINDINGS_FILE, ingest_keys
from flux_pipelines.quality.scorecard import deadline_for

if TYPE_CHECKING:
    import dagster as dg
    import polars as pl


class State(StrEnum):
    NOT_EXPECTED = "not_expected"
    PENDING = "pending"
    LATE = "late"
    LOADED = "loaded"
    FAILED = "failed"


SYMBOLS: dict[State, str] = {
    State.LOADED: "✓",
    State.FAILED: "✗",
    State.LATE: "!",
    State.PENDING: "…",
    State.NOT_EXPECTED: "·",
}
LEGEND = "  ".join(f"{SYMBOLS[s]} {s.value.replace('_', ' ')}" for s in SYMBOLS)
PROBLEMS = (State.LATE, State.FAILED)

# The latest attempt at a partition that did not materialize it (see PartitionFacts.attempt).
ATTEMPT_FAILED, ATTEMPT_RUNNING, ATTEMPT_SKIPPED = "failed", "running", "skipped"


@dataclass(frozen=True)
class PartitionFacts:
    """What the instance says about one curated asset partition (one agency, dataset, day)."""

    # The latest materialization (whatever came after it) and its metadata.
    materialized: bool = False
    rows_curated: int | None = None
    rows_quarantined: int | None = None
    loaded_at: dt.datetime | None = None  # UTC, naive
    run_id: str | None = None
    # A run that planned the partition after its latest materialization (or without one)
    # and did not materialize it: "failed" (the run failed), "running" (not finished),
    # "skipped" (the run succeeded or was canceled without it: nothing delivered); None when
    # the latest attempt materialized it, or there was none.
    attempt: str | None = None
    attempt_run_id: str | None = None
    # check name -> "passed" | "failed" | "planned" (planned by the latest attempt, no result)
    checks: Mapping[str, str] = field(default_factory=dict)
    # Whether the landing folder holds a delivery; None when not looked at.
    delivered: bool | None = None


@dataclass(frozen=True)
class DayStatus:
    agency: str
    dataset: str
    day: dt.date
    state: State
    expected: bool
    deadline: dt.datetime | None  # UTC, naive; None when no delivery is expected
    running: bool = False  # a run is loading the day now
    rows_curated: int | None = None
    rows_quarantined: int | None = None
    loaded_at: dt.datetime | None = None
    run_id: str | None = None
    checks: Mapping[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.state]

    def as_row(self) -> dict[str, Any]:
        return {
            "agency": self.agency,
            "dataset": self.dataset,
            "day": self.day,
            "state": self.state.value,
            "expected": self.expected,
            "deadline": self.deadline,
            "running": self.running,
            "rows_curated": self.rows_curated,
            "rows_quarantined": self.rows_quarantined,
            "loaded_at": self.loaded_at,
            "run_id": self.run_id,
            **{name: self.checks.get(name) for name in CHECK_NAMES},
            "note": self.note or None,
        }


@functools.lru_cache(maxsize=65536)
def expected_deadline(cron: str, onboarded: dt.date, day: dt.date) -> dt.datetime | None:
    """The day's delivery deadline (UTC, naive), or None when no delivery is expected: before
    onboarding, or when the deadline cron has no tick on the day. Cached: a few distinct
    crons serve hundreds of agencies."""
    if day < onboarded:
        return None
    deadline = deadline_for(cron, day)
    return deadline if deadline.date() == day else None


def classify(
    agency: Agency, dataset: str, day: dt.date, facts: PartitionFacts | None, now: dt.datetime
) -> DayStatus:
    """The day's state from the facts; ``now`` is UTC (aware or naive)."""
    facts = facts or PartitionFacts()
    now = now.astimezone(dt.UTC).replace(tzinfo=None) if now.tzinfo else now
    deadline = expected_deadline(agency.delivery_deadline, agency.onboarded, day)
    note = ""
    failed = facts.attempt == ATTEMPT_FAILED
    if failed and facts.delivered is False and not _recorded(facts.checks):
        # A failed run planned the day, but nothing was delivered and the step recorded
        # nothing for it: the run failed on another day (a backfill over a range).
        failed = False
        note = f"run {facts.attempt_run_id} failed on another day; nothing delivered for this one"
    if failed:
        state = State.FAILED
        note = note or f"latest attempt: run {facts.attempt_run_id} failed"
    elif facts.materialized:
        state = State.LOADED
    elif deadline is None:
        state = State.NOT_EXPECTED
    elif now > deadline:
        state = State.LATE
    else:
        state = State.PENDING
    return DayStatus(
        agency=agency.id,
        dataset=dataset,
        day=day,
        state=state,
        expected=deadline is not None,
        deadline=deadline,
        running=facts.attempt == ATTEMPT_RUNNING,
        rows_curated=facts.rows_curated,
        rows_quarantined=facts.rows_quarantined,
        loaded_at=facts.loaded_at,
        run_id=facts.run_id,
        checks=dict(facts.checks),
        note=note,
    )


def _recorded(checks: Mapping[str, str]) -> bool:
    """Whether the latest attempt recorded a check result (True when unknown)."""
    return not checks or any(v != "planned" for v in checks.values())


def status_table(
    pairs: Sequence[tuple[Agency, str]],
    days: Sequence[dt.date],
    facts: Mapping[tuple[str, str, dt.date], PartitionFacts],
    now: dt.datetime,
) -> list[DayStatus]:
    """Every (agency, dataset) pair's days, classified; facts keyed (agency id, dataset, day)."""
    return [
        classify(agency, dataset, day, facts.get((agency.id, dataset, day)), now)
        for agency, dataset in pairs
        for day in days
    ]


def counts(statuses: Iterable[DayStatus]) -> dict[State, int]:
    counted = Counter(s.state for s in statuses)
    return {state: counted.get(state, 0) for state in State}


# -- the instance --------------------------------------------------------------------------


def curated_key(agency: Agency, dataset: str) -> dg.AssetKey:
    return ingest_keys(agency, dataset)[1]


def fetch_facts(
    instance: dg.DagsterInstance,
    pairs: Sequence[tuple[Agency, str]],
    days: Sequence[dt.date],
    *,
    landing_root: Path | None = None,
    with_metadata: bool = True,
    with_checks: bool = False,
) -> dict[tuple[str, str, dt.date], PartitionFacts]:
    """The facts about each pair's days: two queries per asset whatever the number of days,
    plus one query per 100 runs involved.

    ``with_metadata`` reads each day's latest materialization (rows curated, quarantined,
    when, which run); without it only which days are materialized (no event to deserialize:
    ~3 ms instead of ~8 ms an asset on SQLite for 30 days).
    Check verdicts cost one query per check and asset (3 per asset): fetched for every asset
    with ``with_checks``, else only for assets with a failed attempt in the window (to tell
    a failed load from a day a failed run planned without a delivery). ``landing_root`` is
    looked at only for failed attempts that recorded no check result.
    """
    partitions = [d.isoformat() for d in days]
    wanted = set(partitions)
    per_asset = []
    for agency, dataset in pairs:
        key = curated_key(agency, dataset)
        if with_metadata:
            latest = _latest_materializations(instance, key, partitions)
        else:
            latest = dict.fromkeys(wanted & instance.get_materialized_partitions(key))
        attempts = {
            p: run_event
            for p, run_event in _unmaterialized_attempts(instance, key).items()
            if p in wanted
        }
        per_asset.append((agency, dataset, key, latest, attempts))
    outcomes = _run_outcomes(
        instance, {run_id for *_, attempts in per_asset for run_id, _ in attempts.values()}
    )
    facts: dict[tuple[str, str, dt.date], PartitionFacts] = {}
    for agency, dataset, key, latest, attempts in per_asset:
        attempt = {p: (outcomes.get(run_id), run_id) for p, (run_id, _) in attempts.items()}
        failing = any(outcome == ATTEMPT_FAILED for outcome, _ in attempt.values())
        if with_checks and (latest or attempts):
            checks = _check_verdicts(instance, key, partitions)
        elif failing:
            checks = _check_verdicts(instance, key, sorted(attempts))
        else:
            checks = {}
        for day, partition in zip(days, partitions, strict=True):
            materialized, record = partition in latest, latest.get(partition)
            outcome, attempt_run = attempt.get(partition, (None, None))
            if not materialized and outcome is None and partition not in checks:
                continue
            delivered = None
            if outcome == ATTEMPT_FAILED and landing_root is not None:
                delivered = _has_delivery(landing_root / agency.id / dataset / partition)
            facts[(agency.id, dataset, day)] = PartitionFacts(
                materialized=materialized,
                rows_curated=_int(record, "dagster/row_count"),
                rows_quarantined=_int(record, "rows_quarantined"),
                loaded_at=_timestamp(record),
                run_id=record.run_id if record is not None else None,
                attempt=outcome,
                attempt_run_id=attempt_run,
                checks=checks.get(partition, {}),
                delivered=delivered,
            )
    return facts


def _latest_materializations(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: list[str]
) -> dict[str, Any]:
    """Partition -> its latest materialization record (one query per page of the window)."""
    import dagster as dg

    latest: dict[str, Any] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions),
            limit=max(100, 2 * len(partitions)),
            cursor=cursor,
        )
        for record in page.records:  # newest first
            if record.partition_key is not None:
                latest.setdefault(record.partition_key, record)
        if not page.has_more or len(latest) == len(partitions):
            return latest
        cursor = page.cursor


def _unmaterialized_attempts(
    instance: dg.DagsterInstance, key: dg.AssetKey
) -> Mapping[str, tuple[str, int]]:
    """Partition -> (run id, event id) of its latest planned materialization when no
    materialization followed it in that run: what Dagster derives a partition's failed and
    in-progress status from (dagster/_core/storage/partition_status_cache.py)."""
    # Private storage API: Dagster 1.13's public get_status_by_partition costs ~23 ms an asset
    # on SQLite (it refreshes the status cache) and needs the asset's partitions definition;
    # this is the one query that cache is built from, and it reads, never writes.
    storage = instance.event_log_storage
    return storage.get_latest_asset_partition_materialization_attempts_without_materializations(key)


def _run_outcomes(instance: dg.DagsterInstance, run_ids: set[str]) -> dict[str, str]:
    """Run id -> failed / running / skipped, 100 runs a query (runs deleted since: absent,
    so their attempts count for nothing, as in Dagster's partition status)."""
    import dagster as dg

    outcomes: dict[str, str] = {}
    ordered = sorted(run_ids)
    for i in range(0, len(ordered), 100):
        for run in instance.get_runs(filters=dg.RunsFilter(run_ids=ordered[i : i + 100])):
            if run.status == dg.DagsterRunStatus.FAILURE:
                outcomes[run.run_id] = ATTEMPT_FAILED
            elif run.is_finished:
                outcomes[run.run_id] = ATTEMPT_SKIPPED
            else:
                outcomes[run.run_id] = ATTEMPT_RUNNING
    return outcomes


def _check_verdicts(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: list[str]
) -> dict[str, dict[str, str]]:
    """Partition -> check name -> passed / failed / planned (the latest execution)."""
    import dagster as dg

    storage = instance.event_log_storage
    if not partitions or not storage.supports_asset_checks:
        return {}
    verdicts: dict[str, dict[str, str]] = {}
    # Private storage API: Dagster 1.13 has no public per-partition check status; this is
    # the call the UI's check partition view makes (one query per check, all days at once).
    infos = storage.get_asset_check_partition_info(
        [dg.AssetCheckKey(key, name) for name in CHECK_NAMES], partition_keys=partitions
    )
    for info in infos:
        if info.partition_key is None:
            continue
        status = info.latest_execution_status.value  # PLANNED | SUCCEEDED | FAILED
        verdict = {"SUCCEEDED": "passed", "FAILED": "failed"}.get(status, "planned")
        verdicts.setdefault(info.partition_key, {})[info.check_key.name] = verdict
    return verdicts


def _has_delivery(folder: Path) -> bool:
    from flux_pipelines.ingest.delivery import delivered_files
    from flux_pipelines.ingest.manifest import manifest_path

    return bool(delivered_files(folder)) or manifest_path(folder) is not None


def _int(record: Any, name: str) -> int | None:
    if record is None:
        return None
    value = record.asset_materialization.metadata.get(name)
    raw = getattr(value, "value", value)
    return int(raw) if isinstance(raw, int | float) else None


def _timestamp(record: Any) -> dt.datetime | None:
    if record is None:
        return None
    return dt.datetime.fromtimestamp(record.timestamp, dt.UTC).replace(tzinfo=None)


# -- selection and rendering ---------------------------------------------------------------


def select_pairs(
    registry: Registry, agency: str | None = None, dataset: str | None = None
) -> list[tuple[Agency, str]]:
    """The (agency, dataset) pairs to report; ConfigurationError for an unknown agency or
    dataset, or an agency that does not deliver the dataset."""
    from flux_pipelines.errors import ConfigurationError

    agencies = [registry.agency(agency)] if agency else list(registry.agencies)
    if dataset is not None:
        registry.versions(dataset)  # unknown dataset: ConfigurationError
    pairs = [(a, d) for a in agencies for d in a.datasets if dataset in (None, d)]
    if not pairs:
        raise ConfigurationError(
            f"agency {agency} does not deliver {dataset}; it delivers "
            f"{', '.join(registry.agency(agency).datasets)}"
            if agency
            else f"no agency delivers {dataset}"
        )
    return pairs


def day_range(last: dt.date, days: int) -> list[dt.date]:
    return [last - dt.timedelta(days=n) for n in range(days - 1, -1, -1)]


def _grouped(statuses: Sequence[DayStatus]) -> dict[tuple[str, str], list[DayStatus]]:
    rows: dict[tuple[str, str], list[DayStatus]] = {}
    for s in statuses:
        rows.setdefault((s.agency, s.dataset), []).append(s)
    return rows


def render_matrix(statuses: Sequence[DayStatus], days: Sequence[dt.date]) -> str:
    """One line per agency/dataset, one symbol per day, the row's counts at the end."""
    rows = _grouped(statuses)
    width = max([len("agency/dataset"), *(len(f"{a}/{d}") for a, d in rows)])
    tally = [State.LOADED, State.FAILED, State.LATE, State.PENDING]
    head = " ".join(f"{SYMBOLS[s]:>3}" for s in tally)
    lines = [
        f"{'':<{width}}  " + " ".join(d.strftime("%a")[:2] for d in days),
        f"{'agency/dataset':<{width}}  " + " ".join(f"{d.day:02d}" for d in days) + f"  {head}",
    ]
    for (agency, dataset), row in rows.items():
        n = counts(row)
        cells = " ".join(f"{s.symbol} " for s in row)
        lines.append(
            f"{agency + '/' + dataset:<{width}}  {cells} " + " ".join(f"{n[s]:>3}" for s in tally)
        )
    return "\n".join(lines)


def render_markdown(statuses: Sequence[DayStatus], days: Sequence[dt.date]) -> str:
    """The matrix as a Markdown table (the asset's metadata in the UI)."""
    rows = _grouped(statuses)
    head = (
        "| agency/dataset | " + " | ".join(d.strftime("%m-%d") for d in days) + " | late | failed |"
    )
    lines = [
        f"{LEGEND}; days {days[0]} .. {days[-1]} (UTC)" if days else LEGEND,
        "",
        head,
        "|" + "---|" * (len(days) + 3),
    ]
    for (agency, dataset), row in rows.items():
        n = counts(row)
        cells = " | ".join(s.symbol for s in row)
        lines.append(f"| {agency}/{dataset} | {cells} | {n[State.LATE]} | {n[State.FAILED]} |")
    return "\n".join(lines)


def summary_line(statuses: Sequence[DayStatus], limit: int = 10) -> str:
    """Counts, how many rows have a problem, and the failed days (they need a person)."""
    n = counts(statuses)
    rows = _grouped(statuses)
    troubled = sum(1 for row in rows.values() if any(s.state in PROBLEMS for s in row))
    line = (
        f"{n[State.LATE]} late, {n[State.FAILED]} failed, {n[State.LOADED]} loaded, "
        f"{n[State.PENDING]} pending, {n[State.NOT_EXPECTED]} not expected; "
        f"{troubled} of {len(rows)} agency/datasets late or failed"
    )
    failed = [s for s in statuses if s.state == State.FAILED]
    if failed:
        listed = ", ".join(f"{s.agency}/{s.dataset} {s.day}" for s in failed[:limit])
        more = f" and {len(failed) - limit} more" if len(failed) > limit else ""
        line += f"\nfailed: {listed}{more}"
    return line


def status_frame(statuses: Sequence[DayStatus]) -> pl.DataFrame:
    """The full status table (one row per agency, dataset and day) for analysts."""
    import polars as pl

    schema = {
        "agency": pl.String(),
        "dataset": pl.String(),
        "day": pl.Date(),
        "state": pl.String(),
        "expected": pl.Boolean(),
        "deadline": pl.Datetime("us"),
        "running": pl.Boolean(),
        "rows_curated": pl.Int64(),
        "rows_quarantined": pl.Int64(),
        "loaded_at": pl.Datetime("us"),
        "run_id": pl.String(),
        **{name: pl.String() for name in CHECK_NAMES},
        "note": pl.String(),
    }
    return pl.DataFrame([s.as_row() for s in statuses], schema=schema, orient="row")


# -- `flux status` ---------------------------------------------------------------------------


def report_days(
    days: int, start: str | None, end: str | None, today: dt.date | None = None
) -> list[dt.date]:
    """The days to report: ``--from``/``--to`` when given (either may be alone), else the
    ``days`` days ending today (UTC)."""
    from flux_pipelines.errors import ConfigurationError

    def parse(value: str, option: str) -> dt.date:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"{option} {value!r} is not YYYY-MM-DD") from None

    today = today or dt.datetime.now(dt.UTC).date()
    last = parse(end, "--to") if end else today
    if start is None:
        return day_range(last, days)
    first = parse(start, "--from")
    if first > last:
        raise ConfigurationError(f"--from {first} is after --to {last}")
    if (last - first).days >= 3660:
        raise ConfigurationError("at most 3660 days at once")
    return day_range(last, (last - first).days + 1)


def status_report(
    home: Path,
    *,
    agency: str | None = None,
    dataset: str | None = None,
    days: int = 14,
    start: str | None = None,
    end: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[str, int]:
    """``flux status``: the matrix, legend and summary for the home's instance, and the exit
    code (0 nothing late or failed, 1 otherwise)."""
    import dagster as dg

    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.instance.config import prepare_dagster_home

    now = now or dt.datetime.now(dt.UTC)
    registry = load_registry()
    pairs = select_pairs(registry, agency, dataset)
    wanted = report_days(days, start, end, today=now.date())
    info = prepare_dagster_home(home)
    with dg.DagsterInstance.get() as instance:
        facts = fetch_facts(
            instance, pairs, wanted, landing_root=home / "landing", with_metadata=False
        )
    statuses = status_table(pairs, wanted, facts, now)
    n = counts(statuses)
    unloadable = landing_findings(home, agency, dataset)
    text = "\n".join(
        [
            info.describe(),
            f"delivery status {wanted[0]} .. {wanted[-1]} (UTC; now {now:%Y-%m-%d %H:%M})",
            f"legend: {LEGEND}; per row: loaded, failed, late, pending",
            "",
            render_matrix(statuses, wanted),
            "",
            summary_line(statuses),
            *render_findings(unloadable, home / LANDING_FINDINGS_FILE),
        ]
    )
    return text, 1 if n[State.LATE] or n[State.FAILED] or unloadable else 0


MAX_FINDINGS_SHOWN = 20


def landing_findings(home: Path, agency: str | None, dataset: str | None) -> list[dict[str, str]]:
    """What the landing sensors last reported they will not load (``landing_findings.json``),
    for one agency / dataset when asked; nothing when no sensor has run yet."""
    import json

    try:
        doc = json.loads((home / LANDING_FINDINGS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        from flux_pipelines.errors import ConfigurationError

        raise ConfigurationError(
            f"{home / LANDING_FINDINGS_FILE} is unreadable ({exc}); the landing sensors rewrite "
            "it on their next tick"
        ) from exc
    found = []
    for finding in doc.get("unloadable", []):
        parts = str(finding.get("path", "")).split("/")
        if agency and parts[0] != agency:
            continue
        if dataset and (len(parts) < 2 or parts[1] != dataset):
            continue
        found.append(finding)
    return found


def render_findings(findings: list[dict[str, str]], source: Path) -> list[str]:
    if not findings:
        return []
    lines = ["", f"not loaded from landing/ ({len(findings)}; all of them in {source}):"]
    lines += [
        f"  {f['path']}: {f['reason']} [{f['rule']}] since {f.get('first_seen', '?')}"
        for f in findings[:MAX_FINDINGS_SHOWN]
    ]
    if len(findings) > MAX_FINDINGS_SHOWN:
        lines.append(f"  ... {len(findings) - MAX_FINDINGS_SHOWN} more")
    return lines
