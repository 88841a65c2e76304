"""Load one (agency, dataset, day) delivery: raw, curated, quarantine and warnings.

Curated, quarantine, warnings and the deliveries log are written inside one DuckDB
transaction, so a re-run replaces exactly the partition and a crash leaves the previous
state. The raw layer is Parquet (one folder per partition, behind a ``raw_<dataset>`` view):
DuckDB ingests text columns at a fraction of Parquet's speed (measured: 2-4 s vs 0.4 s per
1M rows x 10 text columns), so raw rows are staged in a private folder during the load and
swapped in only after the commit (``load_partition`` does the whole dance). Memory is
bounded by the chunk size: files are streamed chunk by chunk, and each row is read once.
Each chunk is staged as raw Parquet plus a hash of each unique key and validated as it is
read, its curated, quarantine and warning rows staged as Parquet. Uniqueness spans the whole
delivery, so chunks validate without it; once every file is staged, DuckDB finds the
repeated keys over the hashes (spilling to disk when it must) and confirms them on the
values, and only the rows whose key repeats are read back from raw and validated again,
their second verdict replacing the first when the staged rows are inserted.

Invariant, per file: rows read = rows curated + rows quarantined. A file that cannot be
accepted as a whole is quarantined with one reason (``delivery.*`` rule ids).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from flux_pipelines.contracts.ddl import DELIVERIES_TABLE, PARTITION, DatasetTables
from flux_pipelines.contracts.evolution import ContractMigrationError
from flux_pipelines.contracts.model import DELIVERY_RULES, Contract, SizeLimits
from flux_pipelines.contracts.validator import (
    MAX_CELL_BYTES,
    RowValidator,
    dup_flag,
    truncate,
)
from flux_pipelines.errors import DeliveryError, UnsafePath
from flux_pipelines.faults import crash_point
from flux_pipelines.ingest.confine import LANDING, Entry, landing_root_of, open_dir_under
from flux_pipelines.ingest.cross_checks import apply_cross_rules
from flux_pipelines.ingest.manifest import (
    MANIFEST_NAMES,
    Manifest,
    ManifestInvalid,
    manifest_path,
    read_manifest,
)
from flux_pipelines.ingest.readers import (
    DEFAULT_CHUNK_ROWS,
    FileFacts,
    display_name,
    inspect_file,
    mark_short_rows,
    read_chunks,
)
from flux_pipelines.ingest.scanning import FileProblem
from flux_pipelines.names import CONTENT_FOLDER, FILE, REJECTED_ATTEMPTS_TABLE, ROW
from flux_pipelines.resources.warehouse import MigrationContext, ensure_tables
from flux_pipelines.slugs import normalise_header
from flux_pipelines.sql import literal, quote, rows

if TYPE_CHECKING:
    import duckdb

    from flux_pipelines.contracts.evolution import TypeMigration


IGNORED_PREFIXES = (".", "_", "~")
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".filepart", ".crdownload", ".swp")
KEYS_DIR = ".keys"
# A file at least this large parsed into one record that holds no value in any contract
# column is implausible (``_stage_file``): a legitimate one-record delivery holds values,
# and one empty record of a few bytes (a header and a line of commas) is left to the rules.
IMPLAUSIBLE_ONE_ROW_BYTES = 4096
SPLIT_DIR = ".split"
# Rejections after which the raw rows stay: the file was read whole, so they are what
# was delivered (evidence for the agency), but none of them is curated.
READ_WHOLE_REJECTIONS = {
    "delivery.missing_required_columns",
    "delivery.manifest_sha256_mismatch",
    "delivery.manifest_row_count_mismatch",
}


@dataclass
class FileOutcome:
    file: str
    status: str = "loaded"  # loaded | rejected
    sha256: str | None = None
    size_bytes: int | None = None
    format: str | None = None
    rule_id: str | None = None
    reason: str | None = None
    rows_read: int | None = 0
    rows_curated: int = 0
    rows_quarantined: int = 0
    rows_with_warnings: int = 0
    unmapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    reordered: bool = False  # the contract's columns arrived in another order

    @property
    def drift(self) -> str:
        """Schema drift in plain words ('' when the file matches the contract's layout)."""
        parts = []
        if self.unmapped:
            parts.append(f"extra columns kept in raw: {', '.join(self.unmapped)}")
        if self.missing:
            parts.append(f"missing optional columns: {', '.join(self.missing)}")
        if self.reordered:
            parts.append("columns in another order than the contract's")
        return "; ".join(parts)


@dataclass
class PartitionResult:
    """What one partition load did; the asset turns it into metadata and check results."""

    agency: str
    dataset: str
    day: dt.date
    contract: Contract
    files: list[FileOutcome]
    rule_counts: Counter[str]
    errors: list[DeliveryError]
    # The day's earlier load, kept because this delivery was rejected whole (its curated
    # rows; None: nothing was kept, the partition holds this delivery).
    kept_rows: int | None = None
    # Curated columns converted to a new contract version's type by this load (committed
    # with it): every other day's published copy must follow.
    migrations: list[TypeMigration] = field(default_factory=list)

    @property
    def rejected_whole(self) -> bool:
        """Every file of the delivery was rejected: nothing of it can replace the day."""
        return bool(self.errors) and not any(f.status == "loaded" for f in self.files)

    @property
    def rows_in(self) -> int:
        return sum(f.rows_read or 0 for f in self.files)

    @property
    def rows_curated(self) -> int:
        return sum(f.rows_curated for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)

    @property
    def rows_with_warnings(self) -> int:
        return sum(f.rows_with_warnings for f in self.files)

    @property
    def reject_rate(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0


def is_data_file_name(name: str) -> bool:
    """False for hidden, temporary (still being written) and manifest files."""
    return (
        not name.startswith(IGNORED_PREFIXES)
        and name not in MANIFEST_NAMES
        and not name.lower().endswith(TEMPORARY_SUFFIXES)
    )


def is_content_folder(entry: Entry) -> bool:
    """The day's reserved content package (``names.CONTENT_FOLDER``) when it is a real folder:
    read by ``flux_pipelines/content``, never as a data file. A link or a file under that
    name is no package: it stays a data entry, so the loader rejects it with its reason."""
    return entry.name == CONTENT_FOLDER and entry.is_dir


def delivered_files(folder: Path) -> list[Path]:
    """The data entries of a delivery folder: every name that is not hidden, temporary or
    a manifest, *whatever it is*, listed without following a link (``confine.py``); the
    content package folder (``is_content_folder``) is not a data entry.

    A link, a sub-folder or a FIFO under a data name is listed so that the loader rejects
    it with its ``delivery.*`` reason rather than skipping it unseen; a day folder that is
    itself a link, lies under one or cannot be listed is returned alone, for the same
    reason. A folder that does not exist delivered nothing.
    """
    try:
        with open_dir_under(landing_root_of(folder, 3), folder, zone=LANDING) as opened:
            names = [
                e.name
                for e in opened.entries()
                if is_data_file_name(e.name) and not is_content_folder(e)
            ]
    except FileNotFoundError:
        return []
    except (UnsafePath, OSError):
        return [folder]
    return [folder / name for name in names]


def delivery_manifest(folder: Path) -> Manifest | ManifestInvalid | None:
    """The delivery's manifest, the reason it is unusable, or None when there is none."""
    path = manifest_path(folder)
    if path is None:
        return None
    try:
        return read_manifest(path)
    except ManifestInvalid as exc:
        return exc


class BackgroundWriter:
    """Writes staged Parquet on one thread while the caller reads or validates the next chunk.

    polars releases the GIL while it writes, so writing chunk n overlaps work on chunk n+1.
    At most one write is in flight (``submit`` waits for the previous one), so memory stays
    at about two chunks.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flux-writer")
        self._pending: Future[None] | None = None

    def submit(self, fn: Callable[..., None], *args: object, **kwargs: object) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args, **kwargs)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()


class PartitionLoader:
    """Streams a delivery's files into the agency file under one contract version."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        *,
        agency: str,
        contract: Contract,
        day: dt.date,
        run_id: str,
        raw_root: Path,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        references: Mapping[str, Contract] | None = None,
        storage: Contract | None = None,
        limits: SizeLimits | None = None,
    ) -> None:
        self.conn = conn
        # How long a record and a field may be (None: FLUX_MAX_LINE_BYTES / _FIELD_BYTES,
        # else the defaults; resolved once, so a bad setting fails before any file is read).
        self.limits = limits if limits is not None else SizeLimits.resolve()
        # The version as stored (a later version may have renamed columns); rows validate
        # against ``contract`` and are written under ``storage``'s column names.
        self.storage = storage or contract
        self._renames = {
            old.name: new.name
            for old, new in zip(contract.columns, self.storage.columns, strict=True)
            if old.name != new.name
        }
        # Contracts of the datasets this one's cross-dataset rules read (same agency file).
        self.references = dict(references or {})
        self.raw_dir = partition_dir(raw_root, day)
        self.staging = raw_root / f".staging-{day.isoformat()}-{uuid.uuid4().hex[:8]}"
        self._raw_parts: dict[str, list[Path]] = {}
        self._parts_written = 0
        self._split_parts: dict[str, dict[str, list[Path]]] = {}  # file -> table -> parts
        # file -> (its first verdicts' parts, the rows validated again to leave out of them)
        self._first_verdicts: dict[str, tuple[dict[str, list[Path]], Path]] = {}
        self._writer = BackgroundWriter()
        self.agency = agency
        self.contract = contract
        self.day = day
        self.run_id = run_id
        self.chunk_rows = chunk_rows
        self.tables = DatasetTables.for_dataset(contract.dataset)
        self.validator = RowValidator(contract)
        self.loaded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        self._aliases = _alias_map(contract)
        # unique rules by key (one column, a composite key, or whole rows)
        self._keys = {r.key_name: r for r in contract.rules if r.kind == "unique"}
        self._text_columns = [FILE, ROW, *contract.column_names, "_unmapped"]

    # -- orchestration --------------------------------------------------------------------
    def load(
        self, files: Sequence[Path], manifest: Manifest | ManifestInvalid | None = None
    ) -> PartitionResult:
        """Replace the partition with these files' rows (call inside a transaction)."""
        self.migrations = ensure_tables(
            self.conn, self.storage, migrate=MigrationContext(self.agency, self.run_id)
        )
        self._delete_partition()
        self._remove_leftovers()
        self.staging.mkdir(parents=True, exist_ok=True)
        (self.staging / KEYS_DIR).mkdir()
        (self.staging / SPLIT_DIR).mkdir()
        staged: list[FileFacts] = []
        outcomes: list[FileOutcome] = []
        for path in files:
            outcome, facts = self._stage_file(path, manifest)
            outcomes.append(outcome)
            if facts is not None:
                staged.append(facts)
        outcomes += self._missing_from_manifest(manifest, files)
        crash_point("loader.staged")
        duplicates = self._duplicates()
        for facts in staged:
            self._revalidate_duplicates(facts, duplicates)
            self._insert_split(facts)
        for folder in (KEYS_DIR, SPLIT_DIR):
            shutil.rmtree(self.staging / folder, ignore_errors=True)
        if self.contract.cross_rules:
            apply_cross_rules(
                self.conn,
                self.contract,
                self.day,
                run_id=self.run_id,
                loaded_at=self.loaded_at,
                references=self.references,
            )
        crash_point("loader.inserted")
        self._recount(outcomes)
        self._record_deliveries(outcomes)
        return PartitionResult(
            agency=self.agency,
            dataset=self.contract.dataset,
            day=self.day,
            contract=self.contract,
            files=outcomes,
            rule_counts=self._final_rule_counts(),
            errors=[
                DeliveryError(
                    agency=self.agency,
                    dataset=self.contract.dataset,
                    file=o.file,
                    rule_id=o.rule_id or "delivery.rejected",
                    reason=o.reason or "rejected",
                )
                for o in outcomes
                if o.status == "rejected"
            ],
        )

    def _stage_file(
        self, path: Path, manifest: Manifest | ManifestInvalid | None
    ) -> tuple[FileOutcome, FileFacts | None]:
        """Pass 1: check the file as a whole and stage its rows; None if it is rejected.

        A file rejected here is let go of at once (``FileFacts.abandon``: its descriptor and
        the hashing thread's handle closed), whether the rejection came before its rows were
        read (doubled columns) or after (a missing column, a manifest mismatch), and also
        when the load itself fails: a delivery of many rejected files must not hold a
        descriptor per file until the garbage collector happens by.

        Implausible row counts are rejected, never loaded as-is. Implausible means, exactly
        (conservative: each is a layout misread, not a small delivery):

        - zero records from a file holding data: anything but blank lines after a CSV's
          header or in JSON Lines, elements in a JSON array, rows in a Parquet footer
          (``readers.holds_data``; ``delivery.unreadable``);
        - one record that holds no value (null or blank) in any contract column, from a file
          of at least ``IMPLAUSIBLE_ONE_ROW_BYTES`` (``delivery.unreadable``);
        - a .json document that is one object whose keys include no contract column,
          whatever its size (``delivery.layout_mismatch``): a wrapper or a report, no record.

        A header with no rows stays ``delivery.empty_file``."""
        outcome = FileOutcome(file=display_name(path))  # a name that is not UTF-8 is escaped
        facts: FileFacts | None = None
        try:
            if isinstance(manifest, ManifestInvalid):
                outcome.rows_read = None  # not read: the delivery is not trusted
                raise FileProblem("delivery.manifest_invalid", str(manifest))
            facts = inspect_file(
                path, self.limits, reading=self.contract.reading, workdir=self.staging
            )
            outcome.size_bytes, outcome.format = facts.size_bytes, facts.format
            mapping, outcome.unmapped, outcome.missing = self._map_headers(facts.headers)
            if facts.single_object and not mapping:
                raise self._no_record(facts)
            outcome.reordered = self._reordered(facts.headers)
            missing_required = [c for c in self.contract.required_columns if c in outcome.missing]
            rows, empty = self._stage_raw(facts, mapping, validate=not missing_required)
            outcome.rows_read = rows
            outcome.sha256 = facts.sha256  # waits for the hash; raises on bad encoding
            if rows == 0:
                raise FileProblem("delivery.empty_file", "the file has a header but no rows")
            if missing_required:
                raise FileProblem(
                    "delivery.missing_required_columns",
                    f"required column(s) {', '.join(missing_required)} are missing; the file "
                    f"has {', '.join(facts.headers)}",
                )
            if rows == 1 and empty and facts.size_bytes >= IMPLAUSIBLE_ONE_ROW_BYTES:
                raise self._implausible_one_row(facts)
            if manifest is not None:
                _check_against_manifest(manifest, outcome)
        except FileProblem as problem:
            if facts is not None:
                facts.abandon()
            self._reject(outcome, problem)
            return outcome, None
        except BaseException:
            if facts is not None:
                facts.abandon()
            raise
        return outcome, facts

    # -- reading and writing --------------------------------------------------------------
    def _map_headers(self, headers: Sequence[str]) -> tuple[dict[str, str], list[str], list[str]]:
        mapping = {h: self._aliases[h] for h in headers if h in self._aliases}
        self._reject_doubled_columns(mapping)
        unmapped = [h for h in headers if h not in self._aliases]
        present = set(mapping.values())
        missing = [c for c in self.contract.column_names if c not in present]
        return mapping, unmapped, missing

    def _reject_doubled_columns(self, mapping: dict[str, str]) -> None:
        """One contract column delivered under two headers (its name and its name before a
        rename, or a source name): which to load would be a guess, so the file is rejected."""
        by_column: dict[str, list[str]] = {}
        for header, column in mapping.items():
            by_column.setdefault(column, []).append(header)
        doubled = {c: hs for c, hs in by_column.items() if len(hs) > 1}
        if not doubled:
            return
        clashes = "; ".join(
            f"{' and '.join(hs)} both deliver column {c} ({self._spellings(c)})"
            for c, hs in doubled.items()
        )
        raise FileProblem(
            "delivery.duplicate_columns",
            f"{clashes}; deliver each column once, under its current name",
        )

    def _contract_fields(self, headers: Sequence[str]) -> int:
        """How many leading fields a record needs to hold every contract column it has."""
        return max((i + 1 for i, h in enumerate(headers) if h in self._aliases), default=0)

    def _spellings(self, column: str) -> str:
        spec = self.contract.column(column)
        said = [f"{column} is its name in contract {self.contract.version}"]
        if spec.renamed_from:
            said.append(f"{spec.renamed_from} its name before")
        if spec.source_names:
            said.append(f"{', '.join(spec.source_names)} its source name(s)")
        return ", ".join(said)

    def _reordered(self, headers: Sequence[str]) -> bool:
        delivered = [self._aliases[h] for h in headers if h in self._aliases]
        expected = [c for c in self.contract.column_names if c in set(delivered)]
        return delivered != expected

    def _stage_raw(
        self, facts: FileFacts, mapping: dict[str, str], *, validate: bool
    ) -> tuple[int, bool]:
        """Stage the file's rows as raw Parquet and, when ``validate``, validate each chunk
        as it is read, its splits staged (``_stage_split``): (rows, whether its first row
        holds no value in any contract column).

        Each row is read once: uniqueness is not known yet, so chunks validate with no
        duplicate; the few rows whose key repeats are validated again once it is
        (``_revalidate_duplicates``) and replace their first verdict."""
        rows, empty = 0, False
        unmapped = [h for h in facts.headers if h not in mapping]
        needed = self._contract_fields(facts.headers)
        try:
            for chunk in read_chunks(facts, self.chunk_rows):
                text = self._contract_frame(chunk, mapping, unmapped, facts.path.name)
                if rows == 0:
                    empty = _blank_row(text.head(1), self.contract.column_names)
                self._write_raw(text, facts)
                if validate:
                    self._validate_and_split(mark_short_rows(text, facts, needed), facts)
                rows += chunk.height
        finally:
            self._writer.wait()
        return rows, empty

    def _no_record(self, facts: FileFacts) -> FileProblem:
        """A .json document that is one object with no contract column among its keys is
        no record of this dataset (a wrapper, a report): never loaded as an empty row."""
        keys = ", ".join(facts.headers[:10]) + (" ..." if len(facts.headers) > 10 else "")
        return FileProblem(
            "delivery.layout_mismatch",
            f"{display_name(facts.path)}: the JSON document is one object whose keys ({keys}) "
            f"include none of the contract's columns: it is no record of {self.contract.dataset}. "
            "Deliver an array of records; if the records sit deeper in this object, declare "
            "customProperty jsonRecordsPath (keys joined by '.') in the contract",
        )

    def _implausible_one_row(self, facts: FileFacts) -> FileProblem:
        return FileProblem(
            "delivery.unreadable",
            f"{display_name(facts.path)}: {facts.size_bytes:,} bytes parsed into one record "
            "with no value in any contract column: implausible for a file this size, so Flux "
            f"does not load it as-is; check its layout (the header, the separator, where the "
            f"records sit). The file's columns: {', '.join(facts.headers[:10])}",
        )

    def _revalidate_duplicates(self, facts: FileFacts, duplicates: dict[str, pl.DataFrame]) -> None:
        """Validate again, with their uniqueness known, the file's rows whose key repeats in
        the delivery (read back from raw Parquet, usually a handful); their first verdict
        (``_stage_raw``, made without it) is left out when the splits are inserted."""
        name = facts.path.name
        mine = {
            key: dups.filter(pl.col(FILE) == name).get_column(ROW)
            for key, dups in duplicates.items()
        }
        redo = pl.concat([rows for rows in mine.values()]).unique() if mine else None
        if redo is None or redo.len() == 0:
            return
        parts = self._raw_parts.get(name, [])
        text = (
            pl.scan_parquet(parts, glob=False)
            .select(self._text_columns)
            .filter(pl.col(ROW).is_in(redo.implode()))
            .collect()
        )
        text = text.with_columns(
            pl.col(ROW).is_in(rows.implode()).alias(dup_flag(key)) for key, rows in mine.items()
        )
        first = self._split_parts.pop(name, {})
        excluded = self.staging / SPLIT_DIR / f"redo-{self._parts_written:06d}.parquet"
        self._parts_written += 1
        redo.to_frame(ROW).write_parquet(excluded)
        try:
            needed = self._contract_fields(facts.headers)
            self._validate_and_split(mark_short_rows(text, facts, needed), facts)
        finally:
            self._writer.wait()
        self._first_verdicts[name] = (first, excluded)

    def _contract_frame(
        self, chunk: pl.DataFrame, mapping: dict[str, str], unmapped: list[str], file: str
    ) -> pl.DataFrame:
        renamed = chunk.rename(mapping)
        missing = [c for c in self.contract.column_names if c not in renamed.columns]
        unmapped_json = (
            pl.struct(unmapped).struct.json_encode() if unmapped else pl.lit(None, dtype=pl.String)
        )
        return renamed.with_columns(
            *[pl.lit(None, dtype=pl.String).alias(c) for c in missing],
            unmapped_json.alias("_unmapped"),
            pl.lit(file).alias(FILE),
        ).select(FILE, ROW, *self.contract.column_names, "_unmapped")

    def _write_raw(self, text: pl.DataFrame, facts: FileFacts) -> None:
        parts = self._raw_parts.setdefault(facts.path.name, [])
        part = self.staging / f"{self._parts_written:06d}.parquet"
        self._parts_written += 1
        parts.append(part)
        self._writer.submit(self._write_raw_part, text, part)

    def _write_raw_part(self, text: pl.DataFrame, part: Path) -> None:
        # Lineage constants (day, sha256, run id) are not repeated per row: the view adds them
        # from the folder name and the deliveries log.
        text.write_parquet(part, compression="lz4", statistics=False)
        if self._keys:
            # The keys first, then their hashes from the columns: an expression holding a
            # Python step is not shared, so hashing the key expression computed it 3 times.
            keys = text.select(
                FILE,
                ROW,
                *[self.validator.unique_key_expr(r).alias(name) for name, r in self._keys.items()],
            )
            keys.with_columns(
                _key_hash(pl.col(name)).alias(f"{name}__hash") for name in self._keys
            ).write_parquet(self.staging / KEYS_DIR / part.name, compression="uncompressed")

    def _validate_and_split(self, text: pl.DataFrame, facts: FileFacts) -> None:
        checked = self.validator.validate(text)
        good = checked.typed.filter(~checked.fatal)
        self._stage_split(facts, self.tables.curated, good)
        if checked.violations.height == 0:
            return
        fatal_rows = checked.typed.select(ROW).with_columns(checked.fatal.alias("_fatal"))
        violations = checked.violations.join(fatal_rows, on=ROW, how="left")
        originals = self._originals(text, violations.get_column(ROW).unique())
        unique_ids = self._unique_ids(checked.typed, violations.get_column(ROW).unique())
        enriched = violations.join(originals, on=ROW, how="left").join(
            unique_ids, on=ROW, how="left"
        )
        quarantined = enriched.filter(pl.col("_fatal")).drop("_fatal")
        warnings = enriched.filter(~pl.col("_fatal")).drop("_fatal")
        self._stage_split(facts, self.tables.quarantine, quarantined)
        self._stage_split(facts, self.tables.warnings, warnings)

    def _stage_split(self, facts: FileFacts, table: str, frame: pl.DataFrame) -> None:
        """Stage a chunk's rows for ``table`` as Parquet; ``_insert_split`` loads them.

        DuckDB keeps rows appended from Arrow inside an open transaction in memory (1.6 GB
        for 12.5M rows here) but streams ``INSERT ... SELECT FROM read_parquet`` to disk
        (0.7 GB), and twice as fast: staging keeps memory flat whatever the file size.
        """
        if frame.height == 0:
            return
        if table == self.tables.curated and self._renames:
            frame = frame.rename(self._renames)
        parts = self._split_parts.setdefault(facts.path.name, {}).setdefault(table, [])
        part = self.staging / SPLIT_DIR / f"{table}-{self._parts_written:06d}.parquet"
        self._parts_written += 1
        self._writer.submit(
            frame.drop(FILE).write_parquet, part, compression="uncompressed", statistics=False
        )
        parts.append(part)

    def _insert_split(self, facts: FileFacts) -> None:
        """Insert the file's staged splits: the first verdicts without the rows validated
        again (``_revalidate_duplicates``), then those rows' second verdict."""
        first, excluded = self._first_verdicts.pop(facts.path.name, ({}, None))
        for table, parts in first.items():
            self._insert(
                table, parts, facts, contract_id=table != self.tables.curated, excluded=excluded
            )
        for table, parts in self._split_parts.pop(facts.path.name, {}).items():
            self._insert(table, parts, facts, contract_id=table != self.tables.curated)

    def _originals(self, text: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
        """The delivered row as JSON (fields over 10 KB truncated with a marker)."""
        flagged = text.filter(pl.col(ROW).is_in(rows.implode()))
        columns = [*self.contract.column_names]
        return (
            flagged.select(
                pl.col(ROW),
                pl.struct([truncate(pl.col(c), MAX_CELL_BYTES).alias(c) for c in columns])
                .struct.json_encode()
                .alias("original_row"),
                pl.col("_unmapped"),
            )
            .with_columns(
                pl.when(pl.col("_unmapped").is_not_null())
                .then(
                    pl.concat_str(
                        [
                            pl.col("original_row").str.head(-1),
                            pl.lit(',"_unmapped":'),
                            _bounded_json(pl.col("_unmapped"), MAX_CELL_BYTES * 4),
                            pl.lit("}"),
                        ]
                    )
                )
                .otherwise(pl.col("original_row"))
                .alias("original_row")
            )
            .drop("_unmapped")
        )

    def _unique_ids(self, typed: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
        """The Broker's 'Unique ID': the identifying columns' values, or the row number."""
        flagged = typed.filter(pl.col(ROW).is_in(rows.implode()))
        ids = self.contract.identifier
        if not ids:
            expr = pl.format("row={}", pl.col(ROW))
        else:
            expr = pl.concat_str(
                [pl.format(f"{c}={{}}", pl.col(c).cast(pl.String).fill_null("")) for c in ids],
                separator=", ",
            )
        return flagged.select(pl.col(ROW), expr.alias("unique_id"))

    def _insert(
        self,
        table: str,
        parts: list[Path],
        facts: FileFacts,
        *,
        contract_id: bool,
        excluded: Path | None = None,
    ) -> None:
        # Constants as SQL literals: DuckDB inserts ~2x slower with bound parameters here.
        extras = {
            PARTITION: f"DATE {literal(self.day.isoformat())}",
            FILE: literal(facts.path.name),
            "_file_sha256": literal(facts.sha256),
            "_run_id": literal(self.run_id),
            "_loaded_at": f"TIMESTAMP {literal(self.loaded_at.isoformat(sep=' '))}",
            "_contract_version": literal(self.contract.version),
        }
        if contract_id:
            extras["_contract_id"] = literal(self.contract.id)
        select = ", ".join(f"{expr} AS {quote(name)}" for name, expr in extras.items())
        listed = ", ".join(literal(str(p)) for p in parts)
        import duckdb  # the module loads with the definitions, which never import DuckDB

        where = (
            f" WHERE {quote(ROW)} NOT IN "
            f"(SELECT {quote(ROW)} FROM read_parquet({literal(str(excluded))}))"
            if excluded is not None
            else ""
        )
        try:
            self.conn.execute(
                f"INSERT INTO {quote(table)} BY NAME SELECT *, {select} "
                f"FROM read_parquet([{listed}]){where}"
            )
        except duckdb.ConversionException as exc:
            raise ContractMigrationError(
                f"agency {self.agency}, dataset {self.contract.dataset}, day {self.day}, file "
                f"{facts.path.name}: rows valid under contract {self.contract.version} cannot "
                f"be stored in {table}, whose columns have a later version's types "
                f"({str(exc).strip().splitlines()[0]}). Nothing of the day was changed. Give "
                "the retyped column a new name in the later version (the old one keeps its "
                "history), or load this day under a version whose type it meets."
            ) from exc

    # -- delivery-level failures ---------------------------------------------------------
    def _reject(self, outcome: FileOutcome, problem: FileProblem) -> None:
        outcome.status = "rejected"
        outcome.rule_id = problem.rule_id
        outcome.reason = problem.reason
        day = self.day
        # A rejected file's rows are never keyed (they must not make other files' rows
        # duplicates). Its raw rows stay only when they were read whole (a missing column:
        # they are what was delivered); partial rows of an unreadable file would mislead.
        keep_raw = problem.rule_id in READ_WHOLE_REJECTIONS
        self._split_parts.pop(outcome.file, None)  # its rows' verdicts are never inserted
        for part in self._raw_parts.pop(outcome.file, []):
            (self.staging / KEYS_DIR / part.name).unlink(missing_ok=True)
            if not keep_raw:
                part.unlink(missing_ok=True)
        if not keep_raw and (outcome.rows_read or problem.rule_id == "delivery.unreadable"):
            outcome.rows_read = None  # raw rows dropped, file not read whole: no count to trust
        self.conn.execute(
            f"""INSERT INTO {quote(self.tables.quarantine)} BY NAME
            SELECT ?::DATE AS {PARTITION}, ? AS _file, NULL AS _row_number, ? AS rule_id,
                   NULL AS field, NULL AS value_provided, ? AS expected, 'fatal' AS severity,
                   'existence' AS category, ? AS message, NULL AS unique_id, NULL AS original_row,
                   ? AS _file_sha256, ? AS _contract_id, ? AS _contract_version, ? AS _run_id,
                   ?::TIMESTAMP AS _loaded_at""",
            [
                day,
                outcome.file,
                problem.rule_id,
                _expected_for(problem.rule_id),
                problem.reason,
                outcome.sha256 or "",
                self.contract.id,
                self.contract.version,
                self.run_id,
                self.loaded_at,
            ],
        )

    def _missing_from_manifest(
        self, manifest: Manifest | ManifestInvalid | None, files: Sequence[Path]
    ) -> list[FileOutcome]:
        """One rejected outcome per file the manifest lists that was not delivered."""
        if not isinstance(manifest, Manifest):
            return []
        present = {p.name for p in files}
        outcomes = []
        for entry in manifest.files:
            if entry.name in present:
                continue
            outcome = FileOutcome(file=entry.name, rows_read=None)
            problem = FileProblem(
                "delivery.manifest_missing_file",
                f"the manifest lists {entry.name} ({entry.rows} rows) but it was not "
                "delivered; send the file or a corrected manifest",
            )
            self._reject(outcome, problem)
            outcomes.append(outcome)
        return outcomes

    # -- whole-delivery rules --------------------------------------------------------------
    def _duplicates(self) -> dict[str, pl.DataFrame]:
        """Rows whose key repeats anywhere in the delivery (every copy), per unique key.

        A key is what the curated table would store (``5``, ``05``, ``+5`` and ``5.0`` are
        one integer key; ``RowValidator.unique_key_expr``).

        DuckDB groups the 64-bit hashes (cheap, spills when it must); the few candidate rows
        are then confirmed on the values, so a hash collision can never flag a row.
        """
        keys = sorted((self.staging / KEYS_DIR).glob("*.parquet"))
        if not keys:
            return {}
        listed = ", ".join(literal(str(k)) for k in keys)
        found: dict[str, pl.DataFrame] = {}
        for name in self._keys:
            col, hashed = quote(name), quote(f"{name}__hash")
            candidates = self.conn.sql(
                f"""WITH repeated AS (
                      SELECT {hashed} AS h FROM read_parquet([{listed}])
                      WHERE {hashed} IS NOT NULL GROUP BY 1 HAVING count(*) > 1)
                SELECT _file, _row_number, {col} AS v FROM read_parquet([{listed}])
                WHERE {hashed} IN (SELECT h FROM repeated)"""
            ).pl()
            repeated = candidates.filter(pl.col("v").is_not_null() & (pl.len().over("v") > 1))
            found[name] = repeated.select(FILE, ROW)
        return found

    # -- raw zone ---------------------------------------------------------------------------
    def publish_raw(self) -> None:
        """Swap the staged partition folder in (after the DuckDB commit), then define the
        ``raw_<dataset>`` view again if this day could have changed it."""
        old = self.raw_dir.parent / f".old-{self.raw_dir.name}-{uuid.uuid4().hex[:8]}"
        replaced = self.raw_dir.exists()
        if replaced:
            os.replace(self.raw_dir, old)
        os.replace(self.staging, self.raw_dir)
        shutil.rmtree(old, ignore_errors=True)
        self._raw_parts = {}
        if self._raw_view_stale(replaced) and any(self.raw_dir.parent.glob("*/*.parquet")):
            self.conn.execute(
                raw_view_sql(self.tables.raw, self.contract.dataset, self.raw_dir.parent)
            )
            described = f"SELECT column_name FROM (DESCRIBE {quote(self.tables.raw)})"
            columns = [name for (name,) in rows(self.conn, described)]
            mark = json.dumps({"definition": RAW_VIEW, "columns": columns})
            self.conn.execute(f"COMMENT ON VIEW {quote(self.tables.raw)} IS {literal(mark)}")

    def _raw_view_stale(self, replaced: bool) -> bool:
        """Whether the view must be defined again: it is missing or another definition's
        (``RAW_VIEW``, in the view's comment with the columns it was defined with), a day
        was replaced (the union of columns may shrink), or this day's Parquet has columns
        the view lacks.

        Defining the view reads the footer of every day's files (``union_by_name``), so
        defining it after every day made a backfill's cost grow with the square of its days
        (101 CCN days: 63 ms a day by the end); the view reads the files anew at each query,
        so a day whose columns it already has needs nothing."""
        if replaced:
            return True
        (comment,) = rows(
            self.conn,
            "SELECT max(comment) FROM duckdb_views() WHERE database_name = current_database() "
            "AND schema_name = current_schema() AND view_name = ?",
            [self.tables.raw],
        )[0]
        try:
            mark = json.loads(comment or "null")
        except json.JSONDecodeError:
            return True
        if not isinstance(mark, dict) or mark.get("definition") != RAW_VIEW:
            return True
        return not set(self._text_columns) <= set(mark.get("columns") or [])

    def discard_raw(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Drop this day's staging and mid-swap folders that a killed load left behind.

        Safe because one writer at a time holds the agency's pool slot and file lock.
        """
        root = self.raw_dir.parent
        for pattern in (f".staging-{self.day.isoformat()}-*", f".old-{self.raw_dir.name}-*"):
            for folder in root.glob(pattern):
                shutil.rmtree(folder, ignore_errors=True)

    # -- bookkeeping ------------------------------------------------------------------------
    def _delete_partition(self) -> None:
        t = self.tables
        for table in (t.curated, t.quarantine, t.warnings):
            self.conn.execute(f"DELETE FROM {quote(table)} WHERE {PARTITION} = ?", [self.day])
        self.conn.execute(
            f"DELETE FROM {DELIVERIES_TABLE} WHERE dataset = ? AND {PARTITION} = ?",
            [self.contract.dataset, self.day],
        )

    def _recount(self, outcomes: list[FileOutcome]) -> None:
        """Counts come from the tables themselves, so the log cannot drift from the data."""
        t = self.tables
        counts: dict[str, dict[str, int]] = {}
        for key, sql in {
            "curated": f"SELECT _file, count(*) FROM {quote(t.curated)}",
            "quarantined": f"SELECT _file, count(DISTINCT _row_number) FROM {quote(t.quarantine)}",
            "warned": f"SELECT _file, count(DISTINCT _row_number) FROM {quote(t.warnings)}",
        }.items():
            rows = self.conn.execute(f"{sql} WHERE {PARTITION} = ? GROUP BY 1", [self.day])
            counts[key] = dict(rows.fetchall())
        for o in outcomes:
            o.rows_curated = counts["curated"].get(o.file, 0)
            o.rows_with_warnings = counts["warned"].get(o.file, 0)
            if o.status == "rejected":
                o.rows_quarantined = o.rows_read or 0
            else:
                o.rows_quarantined = counts["quarantined"].get(o.file, 0)

    def _final_rule_counts(self) -> Counter[str]:
        rows = self.conn.execute(
            f"""SELECT rule_id, count(*) FROM (
                  SELECT rule_id FROM {quote(self.tables.quarantine)} WHERE {PARTITION} = ?
                  UNION ALL
                  SELECT rule_id FROM {quote(self.tables.warnings)} WHERE {PARTITION} = ?)
                GROUP BY 1""",
            [self.day, self.day],
        ).fetchall()
        return Counter(dict(rows))

    def previous_rows(self) -> int | None:
        """The day's curated rows when a delivery of it loaded before, else None."""
        ensure_tables(self.conn, self.storage)
        ((loaded,),) = self.conn.execute(
            f"SELECT count(*) FROM {DELIVERIES_TABLE} "
            f"WHERE dataset = ? AND {PARTITION} = ? AND status = 'loaded'",
            [self.contract.dataset, self.day],
        ).fetchall()
        if not loaded:
            return None
        ((rows,),) = self.conn.execute(
            f"SELECT count(*) FROM {quote(self.tables.curated)} WHERE {PARTITION} = ?",
            [self.day],
        ).fetchall()
        return int(rows)

    def record_rejected_attempt(self, outcomes: list[FileOutcome]) -> None:
        """Append a rejected attempt's files (its own transaction, after the rollback)."""
        self.conn.begin()
        try:
            self._record_deliveries(outcomes, table=REJECTED_ATTEMPTS_TABLE)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def _record_deliveries(
        self, outcomes: list[FileOutcome], table: str = DELIVERIES_TABLE
    ) -> None:
        for o in outcomes:
            self.conn.execute(
                f"""INSERT INTO {table} BY NAME SELECT
                    ? AS dataset, ?::DATE AS {PARTITION}, ? AS file, ? AS file_sha256,
                    ? AS size_bytes, ? AS format, ? AS status, ? AS rule_id, ? AS reason,
                    ? AS rows_read, ? AS rows_curated, ? AS rows_quarantined,
                    ? AS rows_with_warnings, ?::VARCHAR[] AS unmapped_columns,
                    ?::VARCHAR[] AS missing_columns, ? AS columns_reordered, ? AS drift,
                    ? AS contract_version, ? AS run_id, ?::TIMESTAMP AS loaded_at""",
                [
                    self.contract.dataset,
                    self.day,
                    o.file,
                    o.sha256,
                    o.size_bytes,
                    o.format,
                    o.status,
                    o.rule_id,
                    o.reason,
                    o.rows_read,
                    o.rows_curated,
                    o.rows_quarantined,
                    o.rows_with_warnings,
                    o.unmapped,
                    o.missing,
                    o.reordered,
                    o.drift or None,
                    self.contract.version,
                    self.run_id,
                    self.loaded_at,
                ],
            )


def load_partition(
    loader: PartitionLoader,
    files: Sequence[Path],
    manifest: Manifest | ManifestInvalid | None = None,
    report_rejected: Callable[[PartitionResult], object] | None = None,
    before_commit: Callable[[PartitionResult], object] | None = None,
) -> PartitionResult:
    """Load in one transaction, then swap the staged raw Parquet in; undo both on failure.

    ``before_commit`` runs inside the transaction once the rows are in (not for a delivery
    rejected whole): what it writes (a day's content files, its eligibility) commits or
    rolls back with them.

    A re-delivery rejected whole never replaces a day that loaded before: its transaction
    is rolled back (the day's curated rows, quarantine, raw files and published copy stay
    as they were), ``report_rejected`` is called first, inside the transaction, so the
    agency's report on the attempt reads the attempt's own rows, and the attempt's files are
    appended to ``REJECTED_ATTEMPTS_TABLE``. ``kept_rows`` on the result says what was kept.
    """
    conn = loader.conn
    conn.begin()
    try:
        previous = loader.previous_rows()
        result = loader.load(files, manifest)
        if previous is not None and result.rejected_whole:
            if report_rejected is not None:
                report_rejected(result)
            conn.rollback()
            loader.discard_raw()
            loader.record_rejected_attempt(result.files)
            result.kept_rows = previous
            return result
        if before_commit is not None and not result.rejected_whole:
            before_commit(result)
        conn.commit()
    except BaseException:
        conn.rollback()
        loader.discard_raw()
        raise
    result.migrations = loader.migrations
    crash_point("loader.committed")
    loader.publish_raw()
    return result


def partition_dir(raw_root: Path, day: dt.date) -> Path:
    """One partition's raw folder, hive style so the view reads the day from the path."""
    return raw_root / f"{PARTITION}={day.isoformat()}"


def raw_counts(raw_dir: Path, conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per delivered file in one partition's raw folder (0 files: empty)."""
    if not any(raw_dir.glob("*.parquet")):
        return {}
    pattern = literal(raw_dir / "*.parquet")
    rows = conn.execute(f"SELECT _file, count(*) FROM read_parquet({pattern}) GROUP BY 1")
    return dict(rows.fetchall())


# The raw view's definition, as its catalog comment: a Flux that defines it differently
# changes this, and the next load defines the view again (``PartitionLoader._raw_view_stale``).
RAW_VIEW = "flux raw view: every day's Parquet, union by name, lineage from the deliveries log"


def raw_view_sql(table: str, dataset: str, raw_root: Path) -> str:
    """The ``raw_<dataset>`` view over every partition's Parquet files, with lineage.

    Partition folders are named ``_partition_date=<day>`` (hive style). Hidden folders
    (``.staging-*`` of a load in progress or killed, ``.old-*`` mid-swap) are not partitions:
    DuckDB's ``*`` matches them, so the folder glob excludes a leading dot.
    """
    pattern = literal(raw_root / "[!.]*" / "*.parquet")
    return f"""CREATE OR REPLACE VIEW {quote(table)} AS
        SELECT r.*, d.file_sha256 AS _file_sha256, d.run_id AS _run_id,
               d.loaded_at AS _loaded_at
        FROM read_parquet({pattern}, union_by_name = true, hive_partitioning = true) r
        LEFT JOIN {DELIVERIES_TABLE} d
          ON d.dataset = {literal(dataset)} AND d.{PARTITION} = r.{PARTITION}
         AND d.file = r._file"""


def _key_hash(key: pl.Expr) -> pl.Expr:
    """64-bit hash of a key; null stays null (an empty key is never a duplicate)."""
    return pl.when(key.is_not_null()).then(key.hash(seed=7))


def _alias_map(contract: Contract) -> dict[str, str]:
    """Normalised header spelling -> contract column (its name and its sourceNames)."""
    aliases: dict[str, str] = {}
    for column in contract.columns:
        old = (column.renamed_from,) if column.renamed_from else ()
        for spelling in (column.name, *column.source_names, *old):
            aliases[normalise_header(spelling)] = column.name
    return aliases


def _bounded_json(expr: pl.Expr, limit: int) -> pl.Expr:
    """A JSON value of at most ``limit`` bytes: cutting JSON text would leave it malformed,
    so an oversized object becomes a JSON string saying where the full row is (raw)."""
    size = expr.str.len_bytes()
    marker = pl.format('"[{} bytes of extra columns, truncated by Flux: see the raw table]"', size)
    return pl.when(size > limit).then(marker).otherwise(expr)


def _blank_row(row: pl.DataFrame, columns: Sequence[str]) -> bool:
    """Whether the row holds no value (null or blank) in any of ``columns``."""
    if row.height == 0:
        return False
    blank = [(pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "")) for c in columns]
    return bool(row.select(pl.all_horizontal(blank)).item()) if blank else True


def _expected_for(rule_id: str) -> str:
    """The catalogue's expected text for a whole-file rejection (one catalogue: ``model``)."""
    return DELIVERY_RULES.get(rule_id, ("", "an acceptable file"))[1]


def _check_against_manifest(manifest: Manifest, outcome: FileOutcome) -> None:
    """Raise the delivery-level fatal when a staged file differs from its manifest entry."""
    entry = manifest.entry(outcome.file)
    if entry is None:
        listed = ", ".join(f.name for f in manifest.files)
        raise FileProblem(
            "delivery.manifest_unlisted_file",
            f"{outcome.file} is not listed in the manifest (it lists {listed}); add it to "
            "the manifest or remove the file",
        )
    if (outcome.sha256 or "").lower() != entry.sha256.lower():
        raise FileProblem(
            "delivery.manifest_sha256_mismatch",
            f"sha256 is {outcome.sha256}, the manifest says {entry.sha256.lower()}: the file "
            "changed or was cut short in transit; re-send it",
        )
    if outcome.rows_read != entry.rows:
        raise FileProblem(
            "delivery.manifest_row_count_mismatch",
            f"{outcome.rows_read} data rows read, the manifest says {entry.rows}; re-send the "
            "file or a corrected manifest",
        )
