"""Service level objectives (``contracts/slos.yaml``), measured from the stores Flux keeps.

Every indicator is counted from what already exists, never from a second copy of the truth:

- ``curated_within``: a *delivery* is an (agency, dataset, day) whose files are in the landing
  zone or named by the day's receipt (``ingest/receipts.py``). It arrived when its newest file
  was last modified (the landing file's mtime, else the mtime the receipt recorded when the
  load read it, else the receipt's time). It was handled when the curated asset's partition
  was materialized at or after that (the event log's timestamp), or, for a file rejected
  whole, when the receipt saying so was written: a rejection with a reason is the platform's
  answer too. Good: handled within ``minutes``. Bad: handled later, or not yet handled after
  ``minutes``. Not counted yet: unhandled and younger than ``minutes``.
- ``run_success``: the instance's runs created in the window. A run and its retries (Dagster's
  ``dagster/root_run_id``; run retries and re-executions from failure) are one event, judged
  by the latest attempt: a run that failed and succeeded on retry is good, because the retry
  is the designed recovery and nobody had to act. In progress (or a failure whose retry is
  coming, ``dagster/will_retry``) and canceled (an operator's decision, not an outcome) runs
  are not counted.
- ``nothing_lost``: every delivered file (landing files and files named by receipts) is
  accounted for by a receipt that saw this version of it (loaded or rejected) or by the
  landing sensors' findings (``landing_findings.json``: not loadable, with the rule and
  reason). A file older than ``grace_minutes`` that neither accounts for is lost.
- ``freshness``: each agency-day in the window on which the agency's ``delivery_deadline``
  expects a delivery and the deadline has passed, classified as ``flux status`` does
  (``delivery_status.classify``). Good: loaded, and its delivery arrived before the deadline.
  Bad: late, failed, or loaded from a delivery that arrived after the deadline.

An agency's DuckDB working file is never opened (a reader would block its loads). The cost
is a directory listing of the landing zone and the receipts, two event-log queries per
curated asset, and one runs query: cheap enough for a metrics scrape.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flux_pipelines.config_files import read_yaml, validated
from flux_pipelines.errors import ConfigurationError, UnsafePath
from flux_pipelines.names import LANDING_FINDINGS_FILE

if TYPE_CHECKING:
    import dagster as dg

    from flux_pipelines.contracts.registry import Agency, Registry
    from flux_pipelines.quality.delivery_status import PartitionFacts

SLO_FILE = Path(__file__).resolve().parents[2] / "contracts" / "slos.yaml"
SLO_FILE_ENV = "FLUX_SLOS"
Status = Literal["met", "burning", "exhausted"]
# More than this share of the error budget spent (but not all of it): "burning".
BURNING_AT = 0.5
# Bad events named in a result (the report shows them; the metric does not need them).
MAX_EXAMPLES = 5
_WINDOW = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_window(text: str) -> dt.timedelta:
    """``28d``, ``12h`` or ``90m`` as a timedelta; ``ValueError`` saying the form otherwise."""
    match = _WINDOW.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"window {text!r} is not <n>d, <n>h or <n>m with n > 0 (e.g. 28d)")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CuratedWithin(_Strict):
    kind: Literal["curated_within"]
    minutes: int = Field(gt=0)


class RunSuccess(_Strict):
    kind: Literal["run_success"]
    # all: every run of the instance (a failed `flux load` is a failed run too);
    # automated: only runs a sensor, a schedule or a backfill started.
    runs: Literal["all", "automated"] = "all"


class NothingLost(_Strict):
    kind: Literal["nothing_lost"]
    grace_minutes: int = Field(default=60, gt=0)


class Freshness(_Strict):
    kind: Literal["freshness"]


Indicator = Annotated[
    CuratedWithin | RunSuccess | NothingLost | Freshness, Field(discriminator="kind")
]


class Objective(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    target: float = Field(gt=0, le=1)
    window: str
    indicator: Indicator
    agencies: tuple[str, ...] | None = None

    @field_validator("window")
    @classmethod
    def _window_parses(cls, value: str) -> str:
        parse_window(value)
        return value


class SloFile(_Strict):
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    objectives: tuple[Objective, ...] = Field(min_length=1)

    @field_validator("objectives")
    @classmethod
    def _unique_ids(cls, value: tuple[Objective, ...]) -> tuple[Objective, ...]:
        twice = {id_ for id_, n in Counter(o.id for o in value).items() if n > 1}
        if twice:
            raise ValueError(f"objective ids must be unique; repeated: {', '.join(sorted(twice))}")
        return value


def load_slos(path: Path | None = None) -> SloFile:
    """The objectives file (default ``contracts/slos.yaml``, or ``$FLUX_SLOS``);
    ``ConfigurationError`` naming the file and each bad entry when it is unusable."""
    source = path or Path(os.environ.get(SLO_FILE_ENV) or SLO_FILE)
    raw = read_yaml(source, "SLO file")
    if raw is None:
        raise ConfigurationError(f"SLO file {source}: expected a mapping at the top")
    return validated(SloFile, raw, source, "SLO file")


@dataclass(frozen=True)
class SloResult:
    """One objective measured over its window: what a report line and a gauge show."""

    id: str
    description: str
    kind: str
    target: float
    window: str
    good: int
    total: int
    ratio: float | None  # None: no event in the window (nothing to judge; counts as met)
    allowed_bad: float  # the error budget: (1 - target) x total events
    budget_left: float  # allowed_bad - bad; negative once exhausted
    budget_left_pct: float  # of the budget, 0..100 (0 once exhausted)
    status: Status
    examples: tuple[str, ...] = ()  # some bad events, for a person

    @property
    def bad(self) -> int:
        return self.total - self.good

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "bad": self.bad, "examples": list(self.examples)}


def judge(
    objective: Objective, window: str, good: int, total: int, examples: Sequence[str]
) -> SloResult:
    """The error-budget arithmetic: the budget is the bad events the target allows over
    the window; exhausted once the bad events exceed it (a zero-tolerance objective: at the
    first bad event)."""
    bad = total - good
    allowed = round((1.0 - objective.target) * total, 9)
    left = allowed - bad
    if bad == 0:
        pct = 100.0
    elif allowed > 0:
        pct = max(0.0, 100.0 * left / allowed)
    else:
        pct = 0.0
    if bad > allowed:
        status: Status = "exhausted"
    elif bad > BURNING_AT * allowed:
        status = "burning"
    else:
        status = "met"
    return SloResult(
        id=objective.id,
        description=objective.description,
        kind=objective.indicator.kind,
        target=objective.target,
        window=window,
        good=good,
        total=total,
        ratio=good / total if total else None,
        allowed_bad=allowed,
        budget_left=round(left, 9),
        budget_left_pct=round(pct, 2),
        status=status,
        examples=tuple(examples[:MAX_EXAMPLES]),
    )


# -- what was delivered --------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveredFile:
    """One file of a delivery, from the landing zone and/or the day's receipt."""

    agency: str
    dataset: str
    day: str
    name: str
    arrived: dt.datetime  # UTC, aware
    in_landing: bool
    accounted: bool  # a receipt saw this version of it, or a landing finding names it

    @property
    def path(self) -> str:
        return f"{self.agency}/{self.dataset}/{self.day}/{self.name}"


@dataclass(frozen=True)
class Delivery:
    """An (agency, dataset, day) with its files; handled = curated or rejected, and when."""

    agency: str
    dataset: str
    day: str
    arrived: dt.datetime  # the newest file's arrival (UTC, aware)
    files: tuple[DeliveredFile, ...]
    rejected_at: dt.datetime | None  # a receipt saying "rejected", written after arrival

    @property
    def label(self) -> str:
        return f"{self.agency}/{self.dataset} {self.day}"


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _day_names(folder: Path) -> list[str]:
    """Sub-folder names that are days (links are never followed)."""
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    days = []
    for name in names:
        try:
            dt.date.fromisoformat(name)
        except ValueError:
            continue
        days.append(name)
    return days


def _landing_entries(landing: Path, folder: Path) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of the day folder's delivery entries, listed confined to landing/."""
    from flux_pipelines.ingest.confine import LANDING, open_dir_under
    from flux_pipelines.ingest.receipts import is_delivery_name

    try:
        with open_dir_under(landing, folder, zone=LANDING) as opened:
            return [(e.name, e.stat) for e in opened.entries() if is_delivery_name(e.name)]
    except (UnsafePath, OSError):
        return []


def _findings(home: Path) -> set[str]:
    """Landing paths (agency/dataset/day[/file]) the sensors reported as not loadable."""
    try:
        doc = json.loads((home / LANDING_FINDINGS_FILE).read_text(encoding="utf-8"))
        return {str(f["path"]) for f in doc.get("unloadable", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _named(findings: set[str], path: str) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:n]) in findings for n in range(1, len(parts) + 1))


def deliveries(home: Path, agencies: Iterable[Agency], since: dt.datetime) -> list[Delivery]:
    """Every delivery with a file that arrived after ``since``, from the landing zone and the
    receipts (a day whose landing folder retention purged still counts by its receipt)."""
    from flux_pipelines.ingest.receipts import is_delivery_name, read_receipt
    from flux_pipelines.names import agency_receipts, legacy_agency_receipts

    landing, findings = home / "landing", _findings(home)
    found: list[Delivery] = []
    for agency in agencies:
        for dataset in agency.datasets:
            receipts = agency_receipts(home, agency.id) / dataset
            if not receipts.is_dir():  # an old layout not moved yet (FluxWarehouse.migrate_layout)
                receipts = legacy_agency_receipts(home, agency.id) / dataset
            receipt_days = _receipt_days(receipts, since)
            days = set(_day_names(landing / agency.id / dataset)) | set(receipt_days)
            for day in sorted(days):
                receipt = read_receipt(receipts / f"{day}.json") if day in receipt_days else None
                entries = _landing_entries(landing, landing / agency.id / dataset / day)
                files: dict[str, DeliveredFile] = {}
                for name, st in entries:
                    seen = (
                        receipt is not None
                        and name in receipt.files
                        and (
                            receipt.stats.get(name, "").split(":")[1:2] == [str(st.st_mtime_ns)]
                            or receipt.written_at.timestamp() >= st.st_mtime
                        )
                    )
                    path = f"{agency.id}/{dataset}/{day}/{name}"
                    files[name] = DeliveredFile(
                        agency.id,
                        dataset,
                        day,
                        name,
                        _utc(st.st_mtime),
                        True,
                        accounted=seen or _named(findings, path),
                    )
                if receipt is not None:
                    for name in receipt.files:
                        if name in files or not is_delivery_name(name):
                            continue
                        key = receipt.stats.get(name, "").split(":")
                        arrived = _utc(int(key[1]) / 1e9) if len(key) == 3 else receipt.written_at
                        files[name] = DeliveredFile(
                            agency.id, dataset, day, name, arrived, False, accounted=True
                        )
                if not files:
                    continue
                arrived = max(f.arrived for f in files.values())
                if arrived <= since:
                    continue
                rejected_at = (
                    receipt.written_at
                    if receipt is not None
                    and receipt.status == "rejected"
                    and receipt.written_at >= arrived
                    else None
                )
                found.append(
                    Delivery(agency.id, dataset, day, arrived, tuple(files.values()), rejected_at)
                )
    return found


def _receipt_days(folder: Path, since: dt.datetime) -> set[str]:
    """Days with a receipt written after ``since`` (a receipt is rewritten at every load,
    so an older one belongs to a delivery that arrived before the window)."""
    try:
        with os.scandir(folder) as it:
            return {
                e.name[: -len(".json")]
                for e in it
                if e.name.endswith(".json")
                and e.is_file(follow_symlinks=False)
                and e.stat(follow_symlinks=False).st_mtime > since.timestamp()
            }
    except OSError:
        return set()


# -- evaluation ----------------------------------------------------------------------------


@dataclass
class _Stores:
    """What the indicators read, each read at most once per evaluation."""

    home: Path
    instance: dg.DagsterInstance
    registry: Registry
    now: dt.datetime
    _facts: dict[tuple[str, str, dt.date], PartitionFacts] = field(default_factory=dict)
    _asked: set[tuple[str, str, dt.date]] = field(default_factory=set)
    _deliveries: dict[dt.datetime, list[Delivery]] = field(default_factory=dict)

    def agencies(self, objective: Objective) -> list[Agency]:
        if objective.agencies is None:
            return list(self.registry.agencies)
        return [self.registry.agency(a) for a in objective.agencies]

    def deliveries(self, since: dt.datetime) -> list[Delivery]:
        if since not in self._deliveries:
            self._deliveries[since] = deliveries(self.home, self.registry.agencies, since)
        return self._deliveries[since]

    def facts(
        self, wanted: Iterable[tuple[Agency, str, dt.date]]
    ) -> dict[tuple[str, str, dt.date], PartitionFacts]:
        """The instance's facts about agency-dataset-days: one fetch per asset for every
        day not asked before."""
        from flux_pipelines.quality.delivery_status import fetch_facts

        todo: dict[tuple[str, str], tuple[Agency, set[dt.date]]] = {}
        for agency, dataset, day in wanted:
            if (agency.id, dataset, day) not in self._asked:
                todo.setdefault((agency.id, dataset), (agency, set()))[1].add(day)
                self._asked.add((agency.id, dataset, day))
        for (_, dataset), (agency, days) in todo.items():
            self._facts |= fetch_facts(
                self.instance,
                [(agency, dataset)],
                sorted(days),
                landing_root=self.home / "landing",
            )
        return self._facts

    @cached_property
    def agency_index(self) -> dict[str, Agency]:
        return {a.id: a for a in self.registry.agencies}


def evaluate(
    home: Path,
    instance: dg.DagsterInstance,
    registry: Registry,
    *,
    now: dt.datetime,
    window: str | None = None,
    slos: SloFile | None = None,
) -> list[SloResult]:
    """Every objective measured over its window ending ``now`` (UTC, aware); ``window``
    (``28d``) replaces each objective's own. ``ConfigurationError`` for a bad window or file."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    if window is not None:
        try:
            parse_window(window)
        except ValueError as exc:
            raise ConfigurationError(f"--window: {exc}") from None
    slos = slos or load_slos()
    stores = _Stores(home, instance, registry, now.astimezone(dt.UTC))
    results = []
    for objective in slos.objectives:
        span = window or objective.window
        since = stores.now - parse_window(span)
        indicator = objective.indicator
        if isinstance(indicator, CuratedWithin):
            good, total, bad = _curated_within(stores, objective, indicator, since)
        elif isinstance(indicator, RunSuccess):
            good, total, bad = _run_success(stores, indicator, since)
        elif isinstance(indicator, NothingLost):
            good, total, bad = _nothing_lost(stores, objective, indicator, since)
        else:
            good, total, bad = _freshness(stores, objective, since)
        results.append(judge(objective, span, good, total, bad))
    return results


Counted = tuple[int, int, list[str]]  # good, total, some bad events


def _mine(stores: _Stores, objective: Objective, found: list[Delivery]) -> list[Delivery]:
    ids = {a.id for a in stores.agencies(objective)}
    return [d for d in found if d.agency in ids]


def _curated_within(
    stores: _Stores, objective: Objective, indicator: CuratedWithin, since: dt.datetime
) -> Counted:
    limit = dt.timedelta(minutes=indicator.minutes)
    found = _mine(stores, objective, stores.deliveries(since))
    index = stores.agency_index
    facts = stores.facts((index[d.agency], d.dataset, dt.date.fromisoformat(d.day)) for d in found)
    good = total = 0
    bad: list[str] = []
    for d in found:
        fact = facts.get((d.agency, d.dataset, dt.date.fromisoformat(d.day)))
        curated = (
            fact.loaded_at.replace(tzinfo=dt.UTC)
            if fact is not None and fact.materialized and fact.loaded_at is not None
            else None
        )
        handled = [t for t in (curated, d.rejected_at) if t is not None and t >= d.arrived]
        if handled:
            took = min(handled) - d.arrived
        elif stores.now - d.arrived > limit:
            took = stores.now - d.arrived
        else:
            continue  # arrived lately, not handled yet: no verdict
        total += 1
        if took <= limit:
            good += 1
        else:
            state = "handled" if handled else "not curated yet"
            bad.append(f"{d.label}: {state} after {int(took.total_seconds() // 60)} min")
    return good, total, bad


AUTOMATED_TAGS = ("dagster/sensor_name", "dagster/schedule_name", "dagster/backfill")


def _run_success(stores: _Stores, indicator: RunSuccess, since: dt.datetime) -> Counted:
    import dagster as dg

    runs = stores.instance.get_runs(
        filters=dg.RunsFilter(created_after=since, created_before=stores.now)
    )
    latest: dict[str, dg.DagsterRun] = {}
    order: dict[str, int] = {}
    for position, run in enumerate(runs):  # newest first
        root = run.tags.get("dagster/root_run_id", run.run_id)
        if root not in latest:
            latest[root], order[root] = run, position
    good = total = 0
    bad: list[str] = []
    for root, run in sorted(latest.items(), key=lambda item: order[item[0]]):
        family = [r for r in runs if r.tags.get("dagster/root_run_id", r.run_id) == root]
        if indicator.runs == "automated" and not any(
            t in r.tags for r in family for t in AUTOMATED_TAGS
        ):
            continue
        if not run.is_finished or run.status == dg.DagsterRunStatus.CANCELED:
            continue
        if run.status == dg.DagsterRunStatus.FAILURE and run.tags.get("dagster/will_retry") == (
            "true"
        ):
            continue  # its retry is coming: judged by that
        total += 1
        if run.status == dg.DagsterRunStatus.SUCCESS:
            good += 1
        else:
            bad.append(f"run {run.run_id[:8]} ({run.job_name}) {run.status.value.lower()}")
    return good, total, bad


def _nothing_lost(
    stores: _Stores, objective: Objective, indicator: NothingLost, since: dt.datetime
) -> Counted:
    grace = dt.timedelta(minutes=indicator.grace_minutes)
    good = total = 0
    bad: list[str] = []
    for d in _mine(stores, objective, stores.deliveries(since)):
        for f in d.files:
            if f.arrived <= since:
                continue
            if not f.accounted and stores.now - f.arrived <= grace:
                continue  # the sensor and the load still have time
            total += 1
            if f.accounted:
                good += 1
            else:
                age = int((stores.now - f.arrived).total_seconds() // 60)
                bad.append(f"{f.path}: in landing {age} min, no load, no rejection recorded")
    return good, total, bad


def _freshness(stores: _Stores, objective: Objective, since: dt.datetime) -> Counted:
    from flux_pipelines.quality.delivery_status import State, classify, expected_deadline

    naive_now = stores.now.replace(tzinfo=None)
    first = since.date()
    days = [first + dt.timedelta(days=n) for n in range((stores.now.date() - first).days + 1)]
    agencies = stores.agencies(objective)
    wanted = [
        (a, ds, day)
        for a in agencies
        for ds in a.datasets
        for day in days
        if (deadline := expected_deadline(a.delivery_deadline, a.onboarded, day)) is not None
        and since.replace(tzinfo=None) < deadline <= naive_now
    ]
    facts = stores.facts(wanted)
    arrivals = {(d.agency, d.dataset, d.day): d.arrived for d in stores.deliveries(since)}
    good = total = 0
    bad: list[str] = []
    for agency, dataset, day in wanted:
        status = classify(agency, dataset, day, facts.get((agency.id, dataset, day)), naive_now)
        if status.state in (State.NOT_EXPECTED, State.PENDING):
            continue
        total += 1
        arrived = arrivals.get((agency.id, dataset, day.isoformat()))
        when = (
            arrived.replace(tzinfo=None)
            if arrived is not None
            else status.loaded_at  # its files are gone: the load is the latest it can be
        )
        on_time = status.deadline is not None and when is not None and when <= status.deadline
        if status.state == State.LOADED and on_time:
            good += 1
        else:
            why = "loaded after the deadline" if status.state == State.LOADED else status.state
            bad.append(f"{agency.id}/{dataset} {day}: {why}")
    return good, total, bad
