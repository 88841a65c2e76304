"""``flux bench --backfill-days``: a year of small deliveries backfilled through Dagster.

Why: the issue asks that a 365-day backfill of one agency finishes in <= 3 minutes on
small deliveries, and that a multi-agency backfill runs agencies in parallel without ever
putting two writers on one agency file. Both are run the way the product runs them, each
in a fresh process against a persistent instance:

- one agency: one run of ``ingest_<agency>`` over the day range (the range tags Dagster's
  single-run backfill sets; the ingest assets have ``BackfillPolicy.single_run()``), through
  ``flux demo``'s ``materialize_agencies``;
- several agencies: one run of a cohort job (agencies sharing an onboarding day) over the
  range with its multiprocess executor, where the per-agency pools must keep one agency's
  steps apart.

The run processes read a copy of the registry in which the agencies were onboarded on the
first benchmark day, so a year of history has a year of partitions.

The outcome is checked from storage, not from the run's say-so: every landed row is in the
agency file's deliveries log as curated or quarantined, every day is there, and the event
log's step spans show no two steps of one agency at once while different agencies overlap.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl
import typer

from flux_pipelines.contracts.ddl import DELIVERIES_TABLE, PARTITION
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.defs.ingest.jobs import QUIET_LOGS
from flux_pipelines.instance.config import prepare_dagster_home
from flux_pipelines.names import RANGE_END_TAG, RANGE_START_TAG, agency_db

if TYPE_CHECKING:
    import dagster as dg

FIRST_DAY = dt.date(2025, 1, 1)
AGENCY = "nasa"  # two datasets: a single run must load both, one after the other
MULTI_AGENCIES = ("nasa", "nga", "dod")  # 2 + 3 + 1 datasets: uneven, as agencies are
ROWS = 300  # rows per delivery (about): "small deliveries"
TEMPLATE_DAYS = 7  # distinct generated days; later days are copies of them
SEED = 42
COHORT_ENV = "FLUX_BENCH_COHORT"  # the agencies of multi_agency_job, for its step processes
TARGET_SECONDS = 180.0


def day_range(first: dt.date, count: int) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(count)]


# --------------------------------------------------------------------------- landing


@dataclass(frozen=True)
class Landing:
    """What was dropped in the landing zone: the oracle the warehouse is checked against."""

    agencies: tuple[str, ...]
    days: tuple[dt.date, ...]
    rows: dict[tuple[str, str], int]  # (agency, dataset) -> rows landed over all days
    files: int

    @property
    def datasets(self) -> int:
        return len(self.rows)


def count_rows(path: Path) -> int:
    """Rows in a delivered file, read independently of Flux's readers."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pl.read_csv(path, infer_schema=False).height
    if suffix in (".jsonl", ".ndjson"):
        return pl.read_ndjson(path, infer_schema_length=None).height
    if suffix == ".json":
        return pl.read_json(path).height
    if suffix == ".parquet":
        count: int = pl.scan_parquet(path).select(pl.len()).collect().item()
        return count
    raise ValueError(f"cannot count the rows of {path}")


def land_deliveries(
    landing: Path,
    agencies: Sequence[str],
    days: Sequence[dt.date],
    *,
    rows: int = ROWS,
    seed: int = SEED,
    template_days: int = TEMPLATE_DAYS,
) -> Landing:
    """Generate a week of seeded deliveries per dataset, then copy them to fill ``days``.

    Generating costs ~0.2 s per delivery (planted defects are re-validated), so a year
    would take minutes before the bench starts; copies keep the files realistic (same
    formats, defects, BOMs) and each day still is its own delivery folder.
    """
    from flux_pipelines.demo.generator import generate_landing

    registry = load_registry()
    templates = list(days[:template_days])
    generate_landing(
        landing, registry, agencies=agencies, days=templates, seed=seed, rows_per_delivery=rows
    )
    totals: dict[tuple[str, str], int] = {}
    for agency in agencies:
        for dataset in registry.agency(agency).datasets:
            per_template = {
                t: sum(
                    count_rows(f) for f in (landing / agency / dataset / t.isoformat()).iterdir()
                )
                for t in templates
            }
            for i, day in enumerate(days):
                template = templates[i % len(templates)]
                if day != template:
                    _copy_day(landing / agency / dataset, template, day)
                totals[(agency, dataset)] = (
                    totals.get((agency, dataset), 0) + per_template[template]
                )
    files = sum(1 for a in agencies for f in (landing / a).rglob("*") if f.is_file())
    return Landing(tuple(agencies), tuple(days), totals, files)


def _copy_day(dataset_dir: Path, template: dt.date, day: dt.date) -> None:
    source, target = dataset_dir / template.isoformat(), dataset_dir / day.isoformat()
    target.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        shutil.copyfile(f, target / f.name.replace(template.isoformat(), day.isoformat()))


# --------------------------------------------------------------------------- runs


@contextmanager
def flux_home(home: Path, onboarded: dict[str, dt.date] | None = None) -> Iterator[dict[str, str]]:
    """Prepare ``home``'s DAGSTER_HOME and yield the environment a run process needs.

    ``prepare_dagster_home`` points this process's DAGSTER_HOME / FLUX_HOME at ``home``;
    they are restored afterwards so a bench (or a test) leaves its caller's setup alone.
    With ``onboarded``, run processes read a copy of the registry in which those agencies
    were onboarded on the given days (a year-long backfill needs a year of partitions).
    """
    from flux_pipelines.bench.definitions import scale_registry
    from flux_pipelines.contracts.registry import CONTRACTS_DIR_ENV

    saved = dict(os.environ)
    try:
        prepare_dagster_home(home)
        if onboarded:
            contracts = home / "contracts"
            scale_registry(contracts, None, onboarded=onboarded)
            os.environ[CONTRACTS_DIR_ENV] = str(contracts)
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass(frozen=True)
class RunFigures:
    run_id: str
    success: bool
    wall_seconds: float  # the whole fresh process: interpreter, imports, definitions, run
    run_seconds: float  # run start to end, as the instance recorded it
    creation_seconds: float  # run stored to run started: mostly planned-materialization events


def _run_child(env: dict[str, str], *args: str) -> tuple[dict[str, object], float]:
    from flux_pipelines.bench.process import run_python

    code = "from flux_pipelines.bench.backfill import main; main()"
    return run_python(["-c", code, *args], env=env, what=f"backfill process {args}")


def _figures(instance: dg.DagsterInstance, reply: dict[str, object], wall: float) -> RunFigures:
    run_id = str(reply["run_id"])
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.start_time and record.end_time, run_id
    return RunFigures(
        run_id,
        bool(reply["success"]),
        wall,
        record.end_time - record.start_time,
        record.start_time - record.create_timestamp.timestamp(),
    )


def run_agency_backfill(
    env: dict[str, str], instance: dg.DagsterInstance, agency: str, days: Sequence[dt.date]
) -> RunFigures:
    """One agency's days as one run of its job, from a fresh process (as `flux demo` runs)."""
    reply, wall = _run_child(env, "agency", agency, days[0].isoformat(), days[-1].isoformat())
    return _figures(instance, reply, wall)


def run_multi_agency_backfill(
    env: dict[str, str],
    instance: dg.DagsterInstance,
    agencies: Sequence[str],
    days: Sequence[dt.date],
) -> RunFigures:
    """Several agencies' days as one run of a cohort job (multiprocess executor)."""
    reply, wall = _run_child(
        env, "multi", ",".join(agencies), days[0].isoformat(), days[-1].isoformat()
    )
    return _figures(instance, reply, wall)


def multi_agency_job() -> dg.JobDefinition:
    """The benchmark's agencies in one parallel job, importable by name so step processes
    can rebuild it (they share an onboarding day: one job, one partitions definition)."""
    from flux_pipelines.definitions import resolve_cohort_job

    chosen = os.environ.get(COHORT_ENV, ",".join(MULTI_AGENCIES)).split(",")
    return resolve_cohort_job("bench_multi_agency", chosen)


def _child_agency(agency_id: str, days: list[dt.date]) -> dict[str, object]:
    import dagster as dg

    from flux_pipelines.defs.ingest.jobs import agency_job_name
    from flux_pipelines.demo.runs import materialize_agencies

    failed = materialize_agencies([agency_id], days)
    job = agency_job_name(load_registry().agency(agency_id))
    runs = dg.DagsterInstance.get().get_runs(filters=dg.RunsFilter(job_name=job), limit=1)
    return {"run_id": runs[0].run_id, "success": not failed}


def _child_multi(agency_ids: list[str], days: list[dt.date]) -> dict[str, object]:
    import dagster as dg

    from flux_pipelines.defs.ingest.assets import asset_keys

    os.environ[COHORT_ENV] = ",".join(agency_ids)  # step processes rebuild the same job
    registry = load_registry()
    keys = [
        key
        for a in agency_ids
        for dataset in registry.agency(a).datasets
        for key in asset_keys(registry.agency(a), dataset)
    ]
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(multi_agency_job),
            instance,
            run_config=QUIET_LOGS,
            tags={
                RANGE_START_TAG: days[0].isoformat(),
                RANGE_END_TAG: days[-1].isoformat(),
                "flux/source": "flux bench",
            },
            asset_selection=keys,
        )
        return {"run_id": result.run_id, "success": result.success}


def main() -> None:
    """Entry point of a run process: ``agency|multi <agencies> <first day> <last day>``."""
    mode, agencies, first, last = sys.argv[1:5]
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    days = day_range(start, (end - start).days + 1)
    if mode == "agency":
        reply = _child_agency(agencies, days)
    else:
        reply = _child_multi(agencies.split(","), days)
    print(json.dumps(reply))


# --------------------------------------------------------------------------- accounting


@dataclass(frozen=True)
class DatasetAccount:
    """One agency dataset as its deliveries log tells it, beside what was landed."""

    agency: str
    dataset: str
    days_loaded: int
    first_day: dt.date | None
    last_day: dt.date | None
    files: int
    rejected: int
    rows_landed: int
    rows_read: int
    rows_curated: int
    rows_quarantined: int

    def problems(self, days: Sequence[dt.date]) -> list[str]:
        where = f"{self.agency}/{self.dataset}"
        found = []
        if self.days_loaded != len(days):
            found.append(f"{where}: {self.days_loaded} days loaded, expected {len(days)}")
        if (self.first_day, self.last_day) != (days[0], days[-1]):
            found.append(
                f"{where}: days {self.first_day}..{self.last_day}, not {days[0]}..{days[-1]}"
            )
        if self.rejected:
            found.append(f"{where}: {self.rejected} file(s) rejected")
        if self.rows_read != self.rows_landed:
            found.append(f"{where}: {self.rows_read} rows read, {self.rows_landed} landed")
        if self.rows_read != self.rows_curated + self.rows_quarantined:
            found.append(
                f"{where}: {self.rows_read} rows read != {self.rows_curated} curated + "
                f"{self.rows_quarantined} quarantined"
            )
        return found


def account(home: Path, landing: Landing) -> list[DatasetAccount]:
    """Sum each dataset's deliveries log in its agency file (read only)."""
    accounts = []
    for agency in landing.agencies:
        path = agency_db(home, agency)
        if not path.exists():  # nothing loaded: accounting_problems names each dataset
            continue
        with duckdb.connect(str(path), read_only=True) as conn:
            for (a, dataset), landed in landing.rows.items():
                if a != agency:
                    continue
                row = conn.execute(
                    f"""SELECT count(DISTINCT {PARTITION}), min({PARTITION}), max({PARTITION}),
                          count(*), count(*) FILTER (WHERE status <> 'loaded'),
                          coalesce(sum(rows_read), 0), coalesce(sum(rows_curated), 0),
                          coalesce(sum(rows_quarantined), 0)
                        FROM {DELIVERIES_TABLE} WHERE dataset = ?""",
                    [dataset],
                ).fetchone()
                assert row is not None
                accounts.append(DatasetAccount(agency, dataset, row[0], row[1], row[2], row[3],
                                               row[4], landed, row[5], row[6], row[7]))  # fmt: skip
    return accounts


def accounting_problems(accounts: Sequence[DatasetAccount], landing: Landing) -> list[str]:
    missing = [f"{a}/{d}: no account" for a, d in landing.rows if not any(
        x.agency == a and x.dataset == d for x in accounts)]  # fmt: skip
    return missing + [p for a in accounts for p in a.problems(landing.days)]


# --------------------------------------------------------------------------- event log


@dataclass(frozen=True)
class StepSpan:
    """A step from STEP_START to STEP_SUCCESS / STEP_FAILURE, and the agency it writes."""

    step_key: str
    agency: str
    start: float
    end: float
    partition_logs: tuple[float, ...] = ()  # when each partition's summary line was logged

    @property
    def seconds(self) -> float:
        return self.end - self.start


def step_spans(instance: dg.DagsterInstance, run_id: str) -> list[StepSpan]:
    """Step spans from the event log; the agency is the prefix of the step's asset keys.

    Partition marks are the ingest step's per-partition summary lines ("<agency>/<dataset>
    <day>: N file(s), N rows in, ..."); the tests check one mark per day, so a reworded
    line shows up there rather than as a silently empty breakdown.
    """
    import dagster as dg

    by_key = {a.key: a.id for a in load_registry().agencies}
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    agencies: dict[str, set[str]] = {}
    logs: dict[str, list[float]] = {}
    for entry in instance.all_logs(run_id):
        step, event = entry.step_key, entry.dagster_event
        if step is None:
            continue
        if event is None:
            if "file(s)," in entry.user_message and "rows in" in entry.user_message:
                logs.setdefault(step, []).append(entry.timestamp)
            continue
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            starts[step] = entry.timestamp
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            ends[step] = entry.timestamp
        elif (
            kind
            in (
                dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                dg.DagsterEventType.ASSET_MATERIALIZATION,
            )
            and event.asset_key is not None
        ):
            agencies.setdefault(step, set()).add(by_key[event.asset_key.path[0]])
    spans = []
    for step, start in starts.items():
        owners = agencies.get(step, set())
        if len(owners) != 1:
            raise ValueError(f"step {step} writes {sorted(owners) or 'no'} agency files, not one")
        if step not in ends:
            raise ValueError(f"step {step} started but never ended in run {run_id}")
        spans.append(StepSpan(step, owners.pop(), start, ends[step], tuple(logs.get(step, ()))))
    return sorted(spans, key=lambda s: s.start)


@dataclass(frozen=True)
class Overlap:
    """How steps shared time: within an agency (must be 0) and across agencies."""

    same_agency: dict[str, float]  # agency -> seconds two of its steps ran at once
    cross_agency: float  # seconds at least two agencies had a step running
    busy: dict[str, float]  # agency -> seconds at least one of its steps ran
    span: float  # first step start to last step end

    @property
    def same_agency_total(self) -> float:
        return sum(self.same_agency.values())


def analyse_overlap(spans: Sequence[StepSpan]) -> Overlap:
    """Sweep the step boundaries; in each slice, count running steps per agency."""
    bounds = sorted({t for s in spans for t in (s.start, s.end)})
    agencies = sorted({s.agency for s in spans})
    same = dict.fromkeys(agencies, 0.0)
    busy = dict.fromkeys(agencies, 0.0)
    cross = 0.0
    for t0, t1 in pairwise(bounds):
        running: dict[str, int] = {}
        for s in spans:
            if s.start <= t0 and s.end >= t1:
                running[s.agency] = running.get(s.agency, 0) + 1
        for agency, n in running.items():
            busy[agency] += t1 - t0
            if n > 1:
                same[agency] += t1 - t0
        if len(running) > 1:
            cross += t1 - t0
    span = bounds[-1] - bounds[0] if bounds else 0.0
    return Overlap(same, cross, busy, span)


@dataclass(frozen=True)
class StepBreakdown:
    """Where a step's time went: its partition loop, per partition early vs late, the rest.

    A per-partition cost that grows from the first to the last tenth means work that scales
    with what is already loaded (quadratic over a backfill); the tail after the last
    partition is Dagster recording the materializations of every partition.
    """

    step_key: str
    seconds: float
    partitions: int
    loop_seconds: float
    first_tenth_ms: float
    last_tenth_ms: float
    tail_seconds: float


def _mean_ms(seconds: Sequence[float]) -> float:
    return 1000 * sum(seconds) / len(seconds) if seconds else 0.0


def breakdown(span: StepSpan) -> StepBreakdown:
    marks = [span.start, *span.partition_logs]
    gaps = [b - a for a, b in pairwise(marks)]
    tenth = max(1, len(gaps) // 10)
    return StepBreakdown(
        span.step_key,
        span.seconds,
        len(gaps),
        marks[-1] - span.start,
        _mean_ms(gaps[:tenth]),
        _mean_ms(gaps[-tenth:]),
        span.end - marks[-1],
    )


# --------------------------------------------------------------------------- bench


@dataclass
class BackfillOutcome:
    landing: Landing
    run: RunFigures
    accounts: list[DatasetAccount]
    spans: list[StepSpan]
    problems: list[str] = field(default_factory=list)
    generate_seconds: float = 0.0

    @property
    def rows(self) -> tuple[int, int, int]:
        return (
            sum(a.rows_read for a in self.accounts),
            sum(a.rows_curated for a in self.accounts),
            sum(a.rows_quarantined for a in self.accounts),
        )


def backfill(
    home: Path,
    agencies: Sequence[str],
    days: Sequence[dt.date],
    *,
    rows: int = ROWS,
    seed: int = SEED,
    multi: bool = False,
) -> BackfillOutcome:
    """Land, run (one agency: its job; several: a cohort job), then check storage."""
    import dagster as dg

    if not multi and len(agencies) != 1:
        raise ValueError("a single-agency backfill takes one agency")
    shutil.rmtree(home, ignore_errors=True)
    started = time.perf_counter()
    landing = land_deliveries(home / "landing", agencies, days, rows=rows, seed=seed)
    generated = time.perf_counter() - started
    onboarded = {a: min(days) for a in agencies}
    with flux_home(home, onboarded) as env, dg.DagsterInstance.get() as instance:
        if multi:
            run = run_multi_agency_backfill(env, instance, agencies, days)
        else:
            run = run_agency_backfill(env, instance, agencies[0], days)
        spans = step_spans(instance, run.run_id)
    accounts = account(home, landing)
    problems = accounting_problems(accounts, landing)
    if not run.success:
        problems.insert(0, f"run {run.run_id} failed")
    if multi:
        overlap = analyse_overlap(spans)
        problems += [
            f"{a}: two of its steps wrote at once for {s:.2f}s"
            for a, s in overlap.same_agency.items()
            if s > 0
        ]
    return BackfillOutcome(landing, run, accounts, spans, problems, generated)


def _print_breakdown(outcome: BackfillOutcome) -> None:
    for b in map(breakdown, outcome.spans):
        typer.echo(
            f"  step {b.step_key:<44} {b.seconds:6.1f}s: {b.partitions} partitions in "
            f"{b.loop_seconds:.1f}s ({b.first_tenth_ms:.0f} ms each in the first tenth, "
            f"{b.last_tenth_ms:.0f} ms in the last), then {b.tail_seconds:.1f}s recording "
            "materializations"
        )


def _load() -> str:
    """Other processes skew every figure on a 2-core machine: say how busy it was."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def _verdict(problems: Sequence[str]) -> str:
    return "all accounted" if not problems else "PROBLEMS: " + "; ".join(problems)


def _print_one(agency: str, days: int, one: BackfillOutcome, load: str) -> None:
    run = one.run
    read, curated, quarantined = one.rows
    typer.echo(
        f"\nbackfill {days} days x {one.landing.datasets} datasets (agency {agency}): "
        f"{run.wall_seconds:.1f} s, {days / run.wall_seconds * 60:.0f} partitions/min "
        f"({days * one.landing.datasets / run.wall_seconds * 60:.0f} dataset-days/min); "
        f"target <= {TARGET_SECONDS:.0f} s "
        f"({'met' if run.wall_seconds <= TARGET_SECONDS else 'MISSED'}; {load} at start)"
    )
    typer.echo(
        f"  fresh process, one run {run.run_id[:8]}: {run.run_seconds:.1f}s running, "
        f"{run.creation_seconds:.1f}s creating it (planned-materialization events), "
        f"{run.wall_seconds - run.run_seconds - run.creation_seconds:.1f}s interpreter, "
        "imports and definitions"
    )
    typer.echo(
        f"  {one.landing.files} deliveries of ~{ROWS} rows (generated + copied in "
        f"{one.generate_seconds:.1f}s); rows read {read:,} = curated {curated:,} + "
        f"quarantined {quarantined:,}; days loaded per dataset: "
        f"{min(a.days_loaded for a in one.accounts)}; {_verdict(one.problems)}"
    )
    _print_breakdown(one)


def _print_multi(agencies: Sequence[str], days: int, multi: BackfillOutcome, load: str) -> None:
    run = multi.run
    overlap = analyse_overlap(multi.spans)
    busy = sum(overlap.busy.values())
    typer.echo(
        f"\nmulti-agency backfill {days} days x {', '.join(agencies)} ({len(multi.spans)} "
        f"steps, one run of a cohort job, multiprocess executor): "
        f"{run.wall_seconds:.1f} s, {days / run.wall_seconds * 60:.0f} partitions/min "
        f"({days * len(agencies) / run.wall_seconds * 60:.0f} agency-days/min); "
        f"run {run.run_seconds:.1f}s; {load} at start"
    )
    typer.echo(
        "  per-agency time (its steps, start to success): "
        + ", ".join(f"{a} {s:.1f}s" for a, s in overlap.busy.items())
        + f"; sum {busy:.1f}s vs {overlap.span:.1f}s from first step start to last step end "
        f"({busy / overlap.span if overlap.span else 0:.2f}x parallel)"
    )
    typer.echo(
        f"  different agencies overlapped {overlap.cross_agency:.1f}s; same-agency overlap "
        + ", ".join(f"{a} {s:.2f}s" for a, s in overlap.same_agency.items())
        + f" (must be 0: one writer per agency file); {_verdict(multi.problems)}"
    )
    _print_breakdown(multi)


def run_backfill_bench(
    workdir: Path,
    *,
    days: int,
    multi_days: int,
    agency: str = AGENCY,
    multi_agencies: Sequence[str] = MULTI_AGENCIES,
) -> list[str]:
    """Print the backfill figures; returns the problems found (empty when all is accounted)."""
    problems: list[str] = []
    if days > 0:
        load = _load()
        one = backfill(workdir / "backfill_one", [agency], day_range(FIRST_DAY, days))
        _print_one(agency, days, one, load)
        problems += one.problems
    if multi_days > 0:
        load = _load()
        multi = backfill(
            workdir / "backfill_multi",
            list(multi_agencies),
            day_range(FIRST_DAY, multi_days),
            multi=True,
        )
        _print_multi(multi_agencies, multi_days, multi, load)
        problems += multi.problems
    return problems
