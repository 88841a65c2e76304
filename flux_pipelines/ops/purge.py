"""Retention and purge: delete what outlived its retention, never the last copy of a day.

Retention (days, counted from a partition's delivery day; runs from their start) comes from
``contracts/retention.yaml`` (one default per artefact kind), overridden per dataset by the
contract's ``retention`` customProperty (``{raw: 90d}``), read here from the contract file's
raw customProperties so the contract model does not change. Artefact kinds:

- ``raw``: ``warehouse/<agency>/raw/<dataset>/_partition_date=<day>/`` (the delivered rows);
- ``quarantine``: the day's rows of ``<dataset>_quarantine`` and ``<dataset>_warnings``;
- ``published``: ``published/<agency>/<dataset>/<day>.parquet``, its ``_clear/`` copy and the
  day's ``<dataset>_eligibility`` and ``<dataset>_content`` copies (collections);
- ``reports``: ``outbox/<agency>/<dataset>/<day>/``;
- ``runs``: finished Dagster runs (``instance.delete_run``; the event log goes with them),
  except a run that recorded some asset partition's latest materialization;
- the audit trail is never deleted: each purge that finds it grown writes a gzip copy named
  by its head (``audit/archive/trail-<seq>-<hash16>.jsonl.gz``) and leaves the trail in
  place. Moving sealed segments away would make ``verify()`` span two files and make a
  cut trail harder to tell from an archived one; a copy costs disk, not safety.

The last-copy rule: a day's curated data must keep a copy outside the working file's
curated table's own history. So raw Parquet of a day is deleted only when the day's
published copy exists and survives this purge and the day has curated rows (a day never
published, or whose copy is gone, keeps its raw); a published copy is deleted only when the
working file still holds the day's curated rows (it can be rebuilt from them). Curated rows
themselves are never purged here. Quarantine and warnings rows and reports are not copies of
a partition (rejected rows and findings, kept as long as policy says) and go when expired.

Every batch (one per agency, one for runs) is written to the audit trail *before* it is
deleted (kind ``purge``): a crash mid-batch leaves a record of at most what the next purge
deletes again, never a deletion without a record. The Dagster job runs one op per agency
in the agency's pool (``duckdb_<agency>``, the ingest steps' pool), so it never races a
load; the agency file is also opened with the loads' lock and bounded wait.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import re
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, field_validator

from flux_pipelines.config_files import load_model
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.names import DatasetTables
from flux_pipelines.sql import quote, table_exists

if TYPE_CHECKING:
    import dagster as dg

    from flux_pipelines.contracts.registry import Agency, Registry

Kind = Literal["raw", "quarantine", "published", "reports", "runs"]
DATASET_KINDS = ("raw", "quarantine", "published", "reports")
RETENTION_FILE = "retention.yaml"
_DAYS = re.compile(r"^\s*(\d+)\s*d\s*$")
_RAW_DIR = re.compile(r"^_partition_date=(\d{4}-\d{2}-\d{2})$")
_DAY = re.compile(r"^(\d{4}-\d{2}-\d{2})$")
_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.parquet$")


def _days(value: Any) -> int:
    """``400d`` or ``400`` -> 400 (days: the only unit a day partition needs)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _DAYS.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a number of days such as 400d")
    return int(match.group(1))


class Retention(BaseModel):
    """Days each artefact kind is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    raw: int = 400
    quarantine: int = 730
    published: int = 2555
    reports: int = 400
    runs: int = 400

    @field_validator("*", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> int:
        return _days(value)

    def merged(self, override: dict[str, Any]) -> Retention:
        unknown = set(override) - set(DATASET_KINDS)
        if unknown:
            raise ValueError(f"unknown artefact kind(s) {sorted(unknown)}; use {DATASET_KINDS}")
        return self.model_copy(update={k: _days(v) for k, v in override.items()})


def load_defaults(contracts_root: Path) -> Retention:
    return load_model(Retention, contracts_root / RETENTION_FILE, "retention file", missing={})


def dataset_override(registry: Registry, dataset: str) -> dict[str, Any]:
    """The latest contract's ``retention`` customProperty ({} when it has none)."""
    contract = registry.latest(dataset)
    path = Path(contract.source_path)
    if not contract.source_path or not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"contract {path}: {exc}") from exc
    for prop in doc.get("customProperties") or []:
        if isinstance(prop, dict) and prop.get("property") == "retention":
            value = prop.get("value")
            if not isinstance(value, dict):
                raise ConfigurationError(f"contract {path}: retention must be a mapping")
            return value
    return {}


def retention_for(registry: Registry, dataset: str) -> Retention:
    try:
        return load_defaults(registry.root).merged(dataset_override(registry, dataset))
    except ValueError as exc:
        raise ConfigurationError(f"retention of {dataset}: {exc}") from exc


@dataclass(frozen=True)
class Deletion:
    """One thing a purge deletes (or, in ``kept``, would delete but keeps, with why)."""

    kind: Kind
    agency: str | None = None
    dataset: str | None = None
    day: str | None = None
    paths: tuple[str, ...] = ()  # relative to the home
    rows: int = 0
    run_id: str | None = None
    reason: str = ""

    def describe(self) -> str:
        what = self.run_id or ", ".join(self.paths) or f"{self.rows} row(s)"
        where = "/".join(p for p in (self.agency, self.dataset, self.day) if p)
        note = f" ({self.reason})" if self.reason else ""
        return f"{self.kind} {where} {what}{note}".replace("  ", " ")

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v not in (None, (), "", 0) or k == "kind"}  # fmt: skip


def _expired(day: str, keep_days: int, now: dt.date) -> bool:
    return dt.date.fromisoformat(day) < now - dt.timedelta(days=keep_days)


def _children(folder: Path, pattern: re.Pattern[str]) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {m.group(1): p for p in folder.iterdir() if (m := pattern.match(p.name))}


def _rows_by_day(conn: Any, table: str) -> dict[str, int]:
    if not table_exists(conn, table, schema="main"):
        return {}
    query = f"SELECT _partition_date, count(*) FROM {quote(table)} GROUP BY 1"
    rows = conn.execute(query).fetchall()
    return {d.isoformat(): int(n) for d, n in rows}


def plan_agency(
    home: Path, registry: Registry, agency: Agency, *, now: dt.date
) -> tuple[list[Deletion], list[Deletion]]:
    """(deletions, kept) for one agency's datasets."""
    from flux_pipelines.resources.warehouse import FluxWarehouse

    warehouse = FluxWarehouse(home=str(home))
    deletions: list[Deletion] = []
    kept: list[Deletion] = []
    counts: dict[str, dict[str, int]] = {}
    if warehouse.has_db(agency.id):  # in either layout: connect moves an old one
        with warehouse.connect(agency.id, read_only=True) as conn:
            for dataset in agency.datasets:
                t = DatasetTables.for_dataset(dataset)
                for table in (t.curated, t.quarantine, t.warnings):
                    counts[table] = _rows_by_day(conn, table)

    def rel(path: Path) -> str:
        return path.relative_to(home).as_posix()

    for dataset in agency.datasets:
        keep = retention_for(registry, dataset)
        tables = DatasetTables.for_dataset(dataset)
        curated = counts.get(tables.curated, {})
        published = _children(warehouse.published_dir(agency.id, dataset), _DAY_FILE)
        clear = home / "published" / agency.id / "_clear" / dataset
        surviving = set(published)
        for day, path in sorted(published.items()):
            if not _expired(day, keep.published, now):
                continue
            # the day's clear copy and its companions (eligibility, content files) go with it
            companions = [
                warehouse.published_dir(agency.id, table) / path.name
                for table in (tables.eligibility, tables.content)
            ]
            paths = [rel(path)] + [rel(p) for p in [clear / path.name, *companions] if p.exists()]
            item = Deletion("published", agency.id, dataset, day, tuple(paths))
            if curated.get(day, 0) > 0:
                deletions.append(item)
                surviving.discard(day)
            else:
                why = "no curated rows left: the published copy is the last one"
                kept.append(replace(item, reason=why))
        raw = _children(warehouse.raw_root(agency.id, dataset), _RAW_DIR)
        for day, path in sorted(raw.items()):
            if not _expired(day, keep.raw, now):
                continue
            item = Deletion("raw", agency.id, dataset, day, (rel(path),))
            if day in surviving and curated.get(day, 0) > 0:
                deletions.append(item)
            else:
                if curated.get(day, 0) == 0:
                    why = "no curated rows"
                elif day not in published:
                    why = "no published copy (never published, or gone)"
                else:
                    why = "its published copy is purged now"
                kept.append(replace(item, reason=f"{why}: raw is the last copy"))
        for table in (tables.quarantine, tables.warnings):
            for day, n in sorted(counts.get(table, {}).items()):
                if n and _expired(day, keep.quarantine, now):
                    deletions.append(
                        Deletion("quarantine", agency.id, dataset, day, (table,), rows=n)
                    )
        reports = _children(home / "outbox" / agency.id / dataset, _DAY)
        for day, path in sorted(reports.items()):
            if _expired(day, keep.reports, now):
                deletions.append(Deletion("reports", agency.id, dataset, day, (rel(path),)))
    return deletions, kept


def plan_runs(registry: Registry, instance: dg.DagsterInstance, *, now: dt.date) -> list[Deletion]:
    """Finished runs started before ``now - runs``, except a run holding the latest
    materialization of an asset partition: deleting it would delete its events, and the UI
    would show a day whose rows are curated as never materialized (the run history's last
    copy of that partition)."""
    import dagster as dg

    days = load_defaults(registry.root).runs
    cutoff = dt.datetime.combine(now - dt.timedelta(days=days), dt.time(), tzinfo=dt.UTC)
    finished = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                dg.DagsterRunStatus.CANCELED]  # fmt: skip
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=finished, created_before=cutoff)
    )
    return [
        Deletion("runs", run_id=r.dagster_run.run_id)
        for r in records
        if not _holds_a_latest_materialization(instance, r.dagster_run.run_id)
    ]


def _holds_a_latest_materialization(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether some asset partition's newest materialization was recorded by ``run_id``."""
    import dagster as dg

    events = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    seen: set[tuple[object, str | None]] = set()
    for record in events:
        event = record.event_log_entry.dagster_event
        if event is None or event.asset_key is None:
            continue
        key = (event.asset_key, event.partition)
        if key in seen:
            continue
        seen.add(key)
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=event.asset_key,
                asset_partitions=[event.partition] if event.partition else None,
            ),
            limit=1,
        ).records
        if latest and latest[0].run_id == run_id:
            return True
    return False


def plan_with_kept(
    home: Path,
    registry: Registry,
    instance: dg.DagsterInstance | None,
    *,
    now: dt.date,
    agencies: list[str] | None = None,
) -> tuple[list[Deletion], list[Deletion]]:
    deletions: list[Deletion] = []
    kept: list[Deletion] = []
    for agency in registry.agencies:
        if agencies is None or agency.id in agencies:
            d, k = plan_agency(home, registry, agency, now=now)
            deletions += d
            kept += k
    if instance is not None and agencies is None:
        deletions += plan_runs(registry, instance, now=now)
    return deletions, kept


def plan(
    home: Path, registry: Registry, instance: dg.DagsterInstance | None, *, now: dt.date
) -> list[Deletion]:
    """What a purge at ``now`` deletes (see the module docstring for the rules)."""
    return plan_with_kept(home, registry, instance, now=now)[0]


def apply(
    home: Path,
    deletions: list[Deletion],
    instance: dg.DagsterInstance | None,
    *,
    now: dt.date,
) -> list[Deletion]:
    """Record each batch in the audit trail, then delete it; returns what was deleted."""
    from flux_pipelines.audit.trail import AuditRecord, AuditTrail
    from flux_pipelines.resources.warehouse import FluxWarehouse

    trail = AuditTrail(home)
    warehouse = FluxWarehouse(home=str(home))
    batches: dict[str | None, list[Deletion]] = {}
    for item in deletions:
        batches.setdefault(item.agency, []).append(item)
    for agency, batch in batches.items():
        payload: dict[str, Any] = {"now": now.isoformat(), "deleted": [d.to_json() for d in batch]}
        trail.append(AuditRecord("purge", payload, agency=agency))
        rows = [d for d in batch if d.kind == "quarantine"]
        if rows and agency is not None:
            with warehouse.connect(agency) as conn:
                conn.execute("BEGIN")
                for d in rows:
                    conn.execute(f'DELETE FROM "{d.paths[0]}" WHERE _partition_date = ?', [d.day])
                conn.execute("COMMIT")
        for d in batch:
            if d.kind in ("raw", "published", "reports"):
                for p in d.paths:
                    path = home / p
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
            elif d.kind == "runs" and instance is not None and d.run_id:
                instance.delete_run(d.run_id)
    archive_trail(home)
    return deletions


def archive_trail(home: Path) -> Path | None:
    """A gzip copy of the trail named by its head, under the writers' lock; the trail
    stays in place (never purged). None when there is no trail or this head is archived."""
    from flux_pipelines.audit.trail import AuditTrail
    from flux_pipelines.ops.backup import trail_locked

    trail = AuditTrail(home)
    with trail_locked(home):
        head = trail.read_anchor()
        if head is None or not trail.path.exists():
            return None
        folder = trail.dir / "archive"
        target = folder / f"trail-{head.seq:09d}-{head.hash[:16]}.jsonl.gz"
        if target.exists():
            return None
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{target.name}.tmp"
        with trail.path.open("rb") as src, gzip.open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(target)
    return target


def archive_digest(path: Path) -> str:
    """sha256 of an archive's uncompressed content (to compare with the trail's prefix)."""
    with gzip.open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def purge_home(
    home: Path, *, now: dt.date, dry_run: bool = False, registry: Registry | None = None
) -> tuple[list[Deletion], list[Deletion]]:
    """``flux purge``: plan (and unless ``dry_run`` apply) against the home's instance."""
    import dagster as dg

    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.instance.config import prepare_dagster_home

    registry = registry or load_registry()
    prepare_dagster_home(home)
    with dg.DagsterInstance.get() as instance:
        deletions, kept = plan_with_kept(home, registry, instance, now=now)
        if not dry_run:
            apply(home, deletions, instance, now=now)
    return deletions, kept
