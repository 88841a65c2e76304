"""The storage layout: landing zone, one working DuckDB file per agency, published copies.

    <home>/landing/<agency>/<dataset>/<YYYY-MM-DD>/<files>   what agencies drop
    <home>/warehouse/<agency>/<agency>.duckdb                 the pipeline's working file
    <home>/warehouse/<agency>/raw/, models/                   raw Parquet, trained models
    <home>/receipts/<agency>/<dataset>/<YYYY-MM-DD>.json      load receipts
    <home>/published/<agency>/<dataset>/<YYYY-MM-DD>.parquet  read-only copies for analysts
    <home>/published/<agency>/_clear/<dataset>/<YYYY-MM-DD>.parquet  the same, personal data
                                                              in clear (access/masking.py)

Everything of one agency sits in ``<zone>/<agency>/`` folders (names.py), so a deployment
can mount one agency's folders alone. A home of the layout before that (the working file
at ``warehouse/<agency>.duckdb``, receipts in ``warehouse/<agency>/receipts/``) is moved
on the first open of the agency's file (``FluxWarehouse.migrate_layout``, under the file's
own DuckDB lock) or by ``flux access apply``; both are idempotent.

One writer per agency file is enforced by Dagster (a pool per agency); a file lock held by
someone else is a TransientError after a short, jittered wait, never a silent hang.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from flux_pipelines.contracts.ddl import (
    DatasetTables,
    contract_ddl,
    create_table_sql,
    curated_columns,
)
from flux_pipelines.contracts.model import (
    DEFAULT_MAX_FIELD_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    MAX_FIELD_BYTES_ENV,
    MAX_LINE_BYTES_ENV,
    ColumnSpec,
    Contract,
    SizeLimits,
)
from flux_pipelines.errors import ConfigurationError, StorageNotConfined, TransientError
from flux_pipelines.files import fsync_path, replacing
from flux_pipelines.home import confined, resolve_home
from flux_pipelines.locks import exclusive_lock
from flux_pipelines.names import (
    LANDING_ZONE,
    WAREHOUSE_ZONE,
    agency_db,
    agency_receipts,
    legacy_agency_db,
    legacy_agency_receipts,
    published_root,
)
from flux_pipelines.slugs import check_slug
from flux_pipelines.sql import quote, write_parquet_atomic

if TYPE_CHECKING:
    import duckdb

    from flux_pipelines.contracts.evolution import TypeMigration

LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "lock on file")
LAYOUT_LOCK = ".layout.lock"  # in warehouse/<agency>/: one mover of an agency's old layout
# Left in the agency's folder only by loads (raw Parquet, models): proof the working file
# existed, so a missing one is not a fresh start (see ``_refuse_hidden_file``).
LOAD_TRACES = ("raw", "models")


class FluxWarehouse(dg.ConfigurableResource["FluxWarehouse"]):
    """Where Flux reads deliveries and writes each agency's DuckDB file."""

    home: str = Field(
        default="",
        description="Root of landing/, warehouse/, published/; empty: $FLUX_HOME at run time, "
        "else <project>/.flux",
    )
    lock_wait_seconds: float = Field(
        default=20.0, description="How long to wait for another process's file lock"
    )
    threads: int = Field(default=2, description="DuckDB threads per connection")
    memory_limit: str = Field(
        default="1GB", description="DuckDB memory limit per connection (bounds peak memory)"
    )
    # Size limits of delivered files (``SizeLimits``, where the defaults live): unset, the
    # environment's FLUX_MAX_LINE_BYTES / FLUX_MAX_FIELD_BYTES, else the defaults.
    max_line_bytes: int | None = Field(
        default=None,
        description="Longest record a delivered file may hold, in bytes (a CSV record, a JSON "
        "Lines line, a whole .json file, a Parquet row); a file with a longer one is rejected "
        f"whole (delivery.line_too_long). Unset: ${MAX_LINE_BYTES_ENV}, else "
        f"{DEFAULT_MAX_LINE_BYTES:,}",
    )
    max_field_bytes: int | None = Field(
        default=None,
        description="Longest field (one value as delivered) in bytes; a file with a longer "
        f"one is rejected whole (delivery.field_too_long). Unset: ${MAX_FIELD_BYTES_ENV}, "
        f"else {DEFAULT_MAX_FIELD_BYTES:,}",
    )

    def size_limits(self) -> SizeLimits:
        """The record and field limits loads apply (``PartitionLoader(limits=...)``)."""
        return SizeLimits.resolve(
            max_line_bytes=self.max_line_bytes, max_field_bytes=self.max_field_bytes
        )

    @property
    def root(self) -> Path:
        return resolve_home(self.home or None)

    @property
    def landing_root(self) -> Path:
        return self.root / LANDING_ZONE

    def landing_dir(self, agency: str, dataset: str, day: str) -> Path:
        return (
            self.landing_root / check_slug(agency, "agency") / check_slug(dataset, "dataset") / day
        )

    def agency_db(self, agency: str) -> Path:
        """The agency's working DuckDB file (``names.agency_db``)."""
        return agency_db(self.root, check_slug(agency, "agency"))

    def raw_root(self, agency: str, dataset: str) -> Path:
        """A dataset's raw Parquet partitions (behind the ``raw_<dataset>`` view)."""
        return confined(
            self.root / WAREHOUSE_ZONE, check_slug(agency, "agency"), "raw",
            check_slug(dataset, "dataset"),
        )  # fmt: skip

    def models_dir(self, agency: str, name: str) -> Path:
        """Trained models of an agency (beside its file: they are derived from its data)."""
        return confined(self.root / WAREHOUSE_ZONE, check_slug(agency, "agency"), "models", name)

    def receipt_path(self, agency: str, dataset: str, day: str | dt.date) -> Path:
        """The delivery receipt of a day (ingest/receipts.py): what content was last loaded.

        Until the agency's old layout is moved (``migrate_layout``), a receipt found only
        where the old layout kept it is returned from there, so readers (landing sensors,
        the intake, metrics) keep seeing what was loaded."""
        # Parsed, so a day is always YYYY-MM-DD and never a path
        name = (day if isinstance(day, dt.date) else dt.date.fromisoformat(day)).isoformat()
        agency, dataset = check_slug(agency, "agency"), check_slug(dataset, "dataset")
        path = confined(agency_receipts(self.root, agency), dataset, f"{name}.json")
        if path.exists():
            return path
        try:
            old = confined(legacy_agency_receipts(self.root, agency), dataset, f"{name}.json")
        except StorageNotConfined:  # a link where the old layout was: never read through
            return path
        return old if old.is_file() else path

    def has_db(self, agency: str) -> bool:
        """Whether the agency has a working file yet, in either layout."""
        agency = check_slug(agency, "agency")
        return agency_db(self.root, agency).exists() or legacy_agency_db(self.root, agency).exists()

    def old_layout(self, agency: str) -> list[Path]:
        """What of the agency is still where the layout before per-agency folders kept it."""
        agency = check_slug(agency, "agency")
        found = [legacy_agency_db(self.root, agency), legacy_agency_receipts(self.root, agency)]
        return [p for p in found if os.path.lexists(p)]

    def migrate_layout(self, agency: str) -> list[str]:
        """Move the agency's files of the old layout into its folders; idempotent.

        The working file moves under its own DuckDB lock (opened read-write with the usual
        bounded wait, checkpointed, renamed while held, so no other process can open it
        between), receipts file by file (they may sit on another mount in a pod). Returns
        one line per move. ``ConfigurationError`` when both layouts hold a working file,
        ``TransientError`` when another process holds the old file past the wait."""
        agency = check_slug(agency, "agency")
        if not self.old_layout(agency):
            return []
        folder = confined(self.root / WAREHOUSE_ZONE, agency)
        folder.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(folder / LAYOUT_LOCK):
            return self._move_db(agency) + self._move_receipts(agency)

    def _move_db(self, agency: str) -> list[str]:
        old, new = legacy_agency_db(self.root, agency), agency_db(self.root, agency)
        if not old.exists():
            return []
        if new.exists():
            raise ConfigurationError(
                f"agency {agency}: both {old} (the layout before per-agency folders) and {new} "
                "hold a working file; Flux will not guess which holds the agency's data. Open "
                "both read-only, keep the one with the loaded days, move the other out of "
                f"{self.root / WAREHOUSE_ZONE}, then run again"
            )
        conn = self._open(old, read_only=False)
        try:
            conn.execute("CHECKPOINT")
            try:
                os.rename(old, new)  # the held lock moves with the file (same inode)
            except OSError as exc:
                raise ConfigurationError(
                    f"agency {agency}: cannot move {old} to {new} ({exc.strerror}); run "
                    "`python -m flux_pipelines.access.layout` where the whole warehouse/ "
                    "folder is one mount"
                ) from exc
            wal = old.with_name(old.name + ".wal")
            if wal.exists():
                os.rename(wal, new.with_name(new.name + ".wal"))
            _fsync_dirs(old.parent, new.parent)
        finally:
            conn.close()
        return [f"{old} -> {new}"]

    def _move_receipts(self, agency: str) -> list[str]:
        old, new = legacy_agency_receipts(self.root, agency), agency_receipts(self.root, agency)
        if not old.is_dir() or old.is_symlink():
            return []
        moved = 0
        for source in sorted(old.rglob("*")):
            if source.is_symlink() or not source.is_file():
                continue
            if source.name.startswith(".") and source.name.endswith(".tmp"):
                source.unlink()  # a writer's leftover from a crash: never a receipt
                continue
            if source.suffix != ".json" or source.name.startswith("."):
                continue  # not Flux's: left in place, so the old layout stays reported
            target = confined(new, *source.relative_to(old).parts)
            if not target.exists():  # a receipt already there was written later: it wins
                with replacing(target, durable=True) as tmp:
                    shutil.copyfile(source, tmp)
                moved += 1
            source.unlink()
        _remove_empty(old)
        return [f"{old} -> {new} ({moved} receipt(s))"]

    def published_dir(self, agency: str, dataset: str) -> Path:
        return confined(
            published_root(self.root), check_slug(agency, "agency"), check_slug(dataset, "dataset")
        )

    def published_file(self, agency: str, dataset: str, day: dt.date) -> Path:
        """A day's published copy: what analysts read."""
        return confined(self.published_dir(agency, dataset), f"{day.isoformat()}.parquet")

    @contextmanager
    def connect(
        self, agency: str, *, read_only: bool = False
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the agency's file, waiting briefly (with jitter) if another process holds it.

        The first open after an upgrade moves the agency's old layout (``migrate_layout``)."""
        self.migrate_layout(agency)
        path = self.agency_db(agency)
        if not path.exists():
            self._refuse_hidden_file(agency, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._open(path, read_only=read_only)
        try:
            yield conn
        finally:
            conn.close()

    def _refuse_hidden_file(self, agency: str, path: Path) -> None:
        """A missing working file beside earlier loads' raw Parquet or models is not a fresh
        start: in a pod that mounts only ``warehouse/<agency>/``, the old layout's file lies
        outside the mount. Creating an empty file would split the agency's data in two."""
        traces = [confined(path.parent, t) for t in LOAD_TRACES]
        if any(t.is_dir() for t in traces):
            raise ConfigurationError(
                f"agency {agency}: {path} is missing, yet {path.parent} holds earlier loads "
                f"({', '.join(t.name for t in traces if t.is_dir())}/). If the working file "
                "is still in the layout before per-agency folders (warehouse/<agency>.duckdb, "
                "not visible where only the agency's folders are mounted), move it where the "
                "whole home is mounted: `flux access apply --home <home>` on a host, `python "
                "-m flux_pipelines.access.layout --home <home>` anywhere (Kubernetes: the Job "
                "deploy/k8s/jobs/flux-home-layout.yaml); if it was deleted, "
                f"restore it (flux restore) or move {path.parent} away to start the agency "
                "afresh"
            )

    def _open(self, path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        import duckdb  # at first use: the definitions, which hold this resource, must not

        deadline = time.monotonic() + self.lock_wait_seconds
        delay = 0.1
        config: dict[str, str | bool | int | float | list[str]] = {
            "threads": str(self.threads),
            "memory_limit": self.memory_limit,
            # Tables are read with ORDER BY where order matters; letting inserts run
            # unordered makes bulk loads ~1.5x faster (measured on 1M typed rows).
            "preserve_insertion_order": "false",
        }
        while True:
            try:
                return duckdb.connect(str(path), read_only=read_only, config=config)
            except duckdb.IOException as exc:
                if not any(m in str(exc) for m in LOCK_MARKERS):
                    raise
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"{path} is locked by another process after {self.lock_wait_seconds:.0f}s "
                        "(an analyst session on the working file, or a second writer); analysts "
                        "should read published/ copies. The run will be retried."
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)


def _fsync_dirs(*folders: Path) -> None:
    """Make renames in these folders durable (a crash must not bring an old name back)."""
    for folder in dict.fromkeys(folders):
        fsync_path(folder)


def _remove_empty(folder: Path) -> None:
    """Remove ``folder`` and its sub-folders when nothing is left in them."""
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


@dataclass(frozen=True)
class MigrationContext:
    """Who converts a curated table's columns: named in the refusal and the record."""

    agency: str
    run_id: str


def ensure_tables(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    *,
    migrate: MigrationContext | None = None,
) -> list[TypeMigration]:
    """Create the dataset's tables, and add columns a newer contract version introduces.

    With ``migrate`` (only the loader of a dataset's own days, whose ``contract`` carries
    the newest version's types), curated columns whose stored type differs are converted
    (``contracts/evolution.py``); returns the conversions applied. One catalog query when
    everything exists (every partition load calls this; a DDL statement per table cost
    ~25 ms a partition in a year-long backfill).
    """
    from flux_pipelines.contracts.evolution import migrate_types

    wanted = contract_ddl(contract)
    existing: dict[str, dict[str, str]] = {}
    for table, column, data_type in conn.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE schema_name = current_schema() AND table_name IN (SELECT unnest(?))",
        [list(wanted)],
    ).fetchall():
        existing.setdefault(table, {})[column] = data_type
    renames = {c.name: c.renamed_from for c in contract.columns if c.renamed_from}
    curated = DatasetTables.for_dataset(contract.dataset).curated
    migrations: list[TypeMigration] = []
    for table, columns in wanted.items():
        if table not in existing:
            conn.execute(create_table_sql(table, columns))
            continue
        have = existing[table]
        for name, old in renames.items():
            # A renamed column keeps its data: rename it in place (the contract's migration).
            if table == curated and name not in have and old in have:
                conn.execute(
                    f"ALTER TABLE {quote(table)} RENAME COLUMN {quote(old)} TO {quote(name)}"
                )
                have[name] = have.pop(old)
        for name, sql_type in columns:
            if name not in have:
                nullable_type = sql_type.replace(" NOT NULL", "")
                conn.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} {nullable_type}")
        if table == curated and migrate is not None:
            migrations = migrate_types(
                conn,
                agency=migrate.agency,
                table=table,
                wanted=dict(curated_columns(contract)[: len(contract.columns)]),
                have=have,
                contract=contract,
                run_id=migrate.run_id,
            )
    return migrations


def publish_partition(
    conn: duckdb.DuckDBPyConnection,
    warehouse: FluxWarehouse,
    agency: str,
    dataset: str,
    table: str,
    day: dt.date,
    *,
    columns: Sequence[ColumnSpec],
) -> Path | None:
    """Write the curated partition as read-only Parquet copies, each swapped in atomically.

    Analysts read these (or ``published/<agency>/catalog.duckdb`` views over them), never the
    working file, so a query can never block a load (analysts never block a load). The
    analysts' copy applies the ``agency_analyst`` treatments to the classified ``columns``
    (``access/masking.py``); when that hides a column the agency's personal-data group may
    see, the group's copy goes to ``published/<agency>/_clear/<dataset>/<day>.parquet`` (and
    is removed when the day no longer needs it). Returns the analysts' copy.
    """
    from flux_pipelines.access import masking

    target = warehouse.published_file(agency, dataset, day)
    entitled_target = masking.entitled_file(warehouse.root, agency, dataset, day.isoformat())
    # fetchall, not fetchone: DuckDB 2.0 keeps a half-read result open on the connection,
    # and the step reuses this connection for every partition of a backfill.
    ((count,),) = conn.execute(
        f"SELECT count(*) FROM {quote(table)} WHERE _partition_date = ?", [day]
    ).fetchall()
    if count == 0:
        target.unlink(missing_ok=True)
        entitled_target.unlink(missing_ok=True)
        return None
    names = [
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = current_schema() AND table_name = ? ORDER BY column_index",
            [table],
        ).fetchall()
    ]
    present = [c for c in columns if c.name in set(names)]
    analysts = masking.treatments(present, "agency_analyst")
    entitled = masking.treatments(present, "own_agency_personal")
    if any(t == "hash" for t in (*analysts.values(), *entitled.values())):
        masking.bind_key(conn, warehouse.root)
    # Rows in delivery order (a content table has files, not rows: its path orders it).
    order = ", ".join(c for c in ("_file", "_row_number", "path") if c in names)
    source = (
        f"FROM {quote(table)} WHERE _partition_date = DATE '{day.isoformat()}' ORDER BY {order}"
    )
    copies = [(target, analysts)]
    if entitled != analysts:
        copies.append((entitled_target, entitled))
    else:
        entitled_target.unlink(missing_ok=True)
    for path, held in copies:
        write_parquet_atomic(
            conn,
            f"SELECT {masking.select_list(names, held)} {source}",
            path,
            options=f"FORMAT parquet, COMPRESSION zstd, {masking.footer(held)}",
        )
    return target
