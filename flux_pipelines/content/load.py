"""Store a day's content package: ``<dataset>_content`` rows and quarantine entries.

``load_content`` is the one entry point (the ingest step calls it after the day's metadata
is curated): it reads the day's record links from the curated table, examines the
``content/`` package (``examine.py``) and, in one transaction, replaces the day's content
rows and content problems. Fatal problems go to ``<dataset>_quarantine`` and warnings to
``<dataset>_warnings``, in the columns row violations use (``ddl.VIOLATION_COLUMNS``), so
agency reports and the Broker-format CSVs show them; a content problem is told from a row
violation by its rule (``content.*``) or its file (``content/...``).

Invariant, per day: files in = files stored + files quarantined.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flux_pipelines.content.examine import Examined, FileReport, RecordLink, examine_package
from flux_pipelines.content.problems import Problem
from flux_pipelines.contracts.ddl import create_table_sql, record_key_sql
from flux_pipelines.contracts.model import Contract
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.names import CONTENT_FOLDER, FILE, PARTITION, ROW, DatasetTables
from flux_pipelines.resources.warehouse import ensure_tables
from flux_pipelines.sql import quote

if TYPE_CHECKING:
    import duckdb

CONTENT_COLUMNS: tuple[tuple[str, str], ...] = (
    (PARTITION, "DATE NOT NULL"),
    (FILE, "VARCHAR NOT NULL"),  # as seen from the day folder: content/data/images/a.jpg
    ("path", "VARCHAR NOT NULL"),  # inside the package: what manifests and records name
    ("package", "VARCHAR NOT NULL"),  # bagit | flux-manifest
    ("sha256", "VARCHAR NOT NULL"),
    ("size_bytes", "BIGINT NOT NULL"),
    ("declared_type", "VARCHAR"),  # as written
    ("declared_by", "VARCHAR"),  # manifest | metadata | extension
    ("detected_type", "VARCHAR NOT NULL"),  # from the bytes
    ("container", "VARCHAR"),  # the format carrying it (a DNG: TIFF)
    ("kind", "VARCHAR NOT NULL"),  # image | document | text | audio | video | 3d | other
    ("record_key", "VARCHAR"),  # the record it belongs to (the first, if several)
    ("record_keys", "VARCHAR[]"),
    ("width", "BIGINT"),
    ("height", "BIGINT"),
    ("image_mode", "VARCHAR"),
    ("pages", "BIGINT"),
    ("encoding", "VARCHAR"),
    ("line_count", "BIGINT"),
    ("channels", "INTEGER"),
    ("sample_rate", "INTEGER"),
    ("duration_s", "DOUBLE"),
    ("gltf_version", "VARCHAR"),
    ("gltf_generator", "VARCHAR"),
    ("rights", "VARCHAR"),  # a rights statement the file carries itself
    ("sidecar_path", "VARCHAR"),  # the scene document describing it
    ("sidecar_rights", "VARCHAR"),  # that document's rights statement
    ("detail", "VARCHAR"),
    ("_contract_id", "VARCHAR NOT NULL"),
    ("_contract_version", "VARCHAR NOT NULL"),
    ("_run_id", "VARCHAR NOT NULL"),
    ("_loaded_at", "TIMESTAMP NOT NULL"),
)


@dataclass(frozen=True)
class ContentResult:
    """What one day's content load did."""

    package: str  # bagit | flux-manifest | none
    files_in: int
    files_stored: int
    files_quarantined: int
    problems: tuple[Problem, ...]

    @property
    def problems_by_rule(self) -> dict[str, int]:
        return dict(sorted(Counter(p.rule_id for p in self.problems).items()))


def load_content(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    *,
    agency: str,
    day: dt.date,
    folder: Path,
    run_id: str,
    link_columns: Sequence[str] | None = None,
    type_column: str | None = None,
    records: Sequence[RecordLink] | None = None,
    own_transaction: bool = True,
) -> ContentResult:
    """Examine the day's content folder and store it, replacing the day's content rows and
    content problems (idempotent: a re-run gives the same rows).

    ``folder`` is ``landing/<agency>/<dataset>/<day>/content``. The record links come from
    ``records`` when given, else from the day's curated rows: ``link_columns`` (default:
    the contract's content file columns) name the file, ``type_column`` (default: the
    contract's content type column) its type. With ``own_transaction=False`` the caller's
    open transaction holds the writes (the ingest step's, say).
    """
    ensure_tables(conn, contract)
    table = DatasetTables.for_dataset(contract.dataset).content
    conn.execute(create_table_sql(table, list(CONTENT_COLUMNS)))
    if records is None:
        records = record_links(
            conn, contract, day, link_columns=link_columns, type_column=type_column
        )
    examined = examine_package(folder, records)
    loaded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    stamp = (contract.id, contract.version, run_id, loaded_at)
    who = (agency, contract.dataset)
    if own_transaction:
        conn.execute("BEGIN TRANSACTION")
    try:
        _replace_day(conn, contract, table, day, examined, stamp, who)
        if own_transaction:
            conn.execute("COMMIT")
    except BaseException:
        if own_transaction:
            conn.execute("ROLLBACK")
        raise
    stored = sum(1 for f in examined.files if f.stored)
    return ContentResult(
        package=examined.package.kind,
        files_in=len(examined.files),
        files_stored=stored,
        files_quarantined=len(examined.files) - stored,
        problems=tuple(examined.all_problems),
    )


def clear_content_day(conn: duckdb.DuckDBPyConnection, contract: Contract, day: dt.date) -> None:
    """A day delivered without a content folder stores no file (an earlier delivery's
    rows go); the table exists afterwards, so the day's empty copy can be published."""
    table = DatasetTables.for_dataset(contract.dataset).content
    conn.execute(create_table_sql(table, list(CONTENT_COLUMNS)))
    conn.execute(f"DELETE FROM {quote(table)} WHERE {PARTITION} = ?", [day])


def record_links(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    day: dt.date,
    *,
    link_columns: Sequence[str] | None = None,
    type_column: str | None = None,
) -> list[RecordLink]:
    """The day's curated records and the content file each names (``link`` None: none), one
    per record and content file column."""
    mapping = contract.content
    columns = list(link_columns or (mapping.content_file_columns if mapping else ()))
    type_column = type_column or (mapping.content_type_column if mapping else None)
    known = set(contract.column_names)
    unknown = [c for c in (*columns, type_column) if c is not None and c not in known]
    if not columns or unknown:
        raise ConfigurationError(
            f"contract {contract.version_tag}: content files cannot be linked to records: "
            + (f"no column {', '.join(unknown)}" if unknown else "no content file column")
            + " (declare customProperty contentFileColumns)"
        )
    key_sql = record_key_sql(contract)
    type_sql = f"{quote(type_column)}::VARCHAR" if type_column else "NULL"
    curated = DatasetTables.for_dataset(contract.dataset).curated
    links: list[RecordLink] = []
    for column in columns:
        rows = conn.execute(
            f"SELECT {quote(column)}::VARCHAR, {type_sql}, {key_sql} FROM {quote(curated)} "
            f"WHERE {PARTITION} = ? ORDER BY {FILE}, {ROW}",
            [day],
        ).fetchall()
        links += [RecordLink(key, link, _content_type(contract, kind)) for link, kind, key in rows]
    return links


def _content_type(contract: Contract, value: str | None) -> str | None:
    """The record's stated content type: the contract's mapping of the column's value, the
    value itself when it is a media type, or the contract's one content type."""
    mapping = contract.content
    if value is not None and mapping is not None and value in mapping.content_types:
        return mapping.content_types[value]
    if value is not None and "/" in value:
        return value
    return mapping.content_type if mapping is not None else None


# --- writing -----------------------------------------------------------------------------------


def _replace_day(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    table: str,
    day: dt.date,
    examined: Examined,
    stamp: tuple[str, str, str, dt.datetime],
    who: tuple[str, str],
) -> None:
    tables = DatasetTables.for_dataset(contract.dataset)
    conn.execute(f"DELETE FROM {quote(table)} WHERE {PARTITION} = ?", [day])
    for violations in (tables.quarantine, tables.warnings):
        conn.execute(
            f"DELETE FROM {quote(violations)} WHERE {PARTITION} = ? AND (starts_with(rule_id, "
            f"'content.') OR {FILE} = ? OR starts_with({FILE}, ?))",
            [day, CONTENT_FOLDER, CONTENT_FOLDER + "/"],
        )
    rows = [_content_row(f, examined.package.kind, day, stamp) for f in examined.files if f.stored]
    names = [name for name, _ in CONTENT_COLUMNS]
    _insert_rows(conn, table, names, [[row[n] for n in names] for row in rows])
    facts = {id(p): _file_facts(f) for f in examined.files for p in f.problems}
    for severity, target in (("fatal", tables.quarantine), ("warning", tables.warnings)):
        problems = [p for p in examined.all_problems if p.severity == severity]
        _insert_rows(
            conn,
            target,
            list(_VIOLATION_NAMES),
            [_violation(p, day, stamp, who, facts.get(id(p))) for p in problems],
        )


def _insert_rows(
    conn: duckdb.DuckDBPyConnection, table: str, names: list[str], rows: list[list[Any]]
) -> None:
    """Insert ``rows`` (values in ``names``' order) in one statement: a package of thousands
    of files is one Arrow scan, not thousands of single-row inserts."""
    if not rows:
        return
    import polars as pl

    frame = pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
    conn.register("_flux_content_rows", frame)
    try:
        conn.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM _flux_content_rows")
    finally:
        conn.unregister("_flux_content_rows")


_VIOLATION_NAMES = (
    PARTITION,
    FILE,
    "rule_id",
    "value_provided",
    "expected",
    "severity",
    "category",
    "message",
    "unique_id",
    "original_row",
    "_file_sha256",
    "_contract_id",
    "_contract_version",
    "_run_id",
    "_loaded_at",
)


def _violation(
    problem: Problem,
    day: dt.date,
    stamp: tuple[str, str, str, dt.datetime],
    who: tuple[str, str],
    facts: dict[str, Any] | None,
) -> list[Any]:
    return [
        day,
        problem.file,
        problem.rule_id,
        problem.value,
        problem.expected,
        problem.severity,
        "existence",
        problem.message(*who),
        problem.record_key,
        json.dumps(facts, sort_keys=True) if facts else None,
        problem.sha256,
        *stamp,
    ]


def _file_facts(report: FileReport) -> dict[str, Any]:
    """What Flux knows of a problem's file (kept with the entry, like a row's original)."""
    return {
        "path": report.path,
        "size_bytes": report.found.size,
        "sha256": report.sha256 or None,
        "declared_type": report.declared.written if report.declared else None,
        "detected_type": report.detected.shown if report.detected else None,
    }


def _content_row(
    report: FileReport, package: str, day: dt.date, stamp: tuple[str, str, str, dt.datetime]
) -> dict[str, Any]:
    facts, detected, declared = report.facts, report.detected, report.declared
    assert detected is not None
    keys = sorted(report.record_keys)
    contract_id, version, run_id, loaded_at = stamp
    return {
        PARTITION: day,
        FILE: report.found.shown,
        "path": report.path,
        "package": package,
        "sha256": report.sha256,
        "size_bytes": report.found.size,
        "declared_type": declared.written if declared else None,
        "declared_by": declared.source if declared else None,
        "detected_type": detected.media_type,
        "container": detected.container,
        "kind": detected.kind,
        "record_key": keys[0] if keys else None,
        "record_keys": keys,
        "width": facts.width,
        "height": facts.height,
        "image_mode": facts.image_mode,
        "pages": facts.pages,
        "encoding": facts.encoding,
        "line_count": facts.line_count,
        "channels": facts.channels,
        "sample_rate": facts.sample_rate,
        "duration_s": facts.duration_s,
        "gltf_version": facts.gltf_version,
        "gltf_generator": facts.gltf_generator,
        "rights": facts.rights,
        "sidecar_path": report.sidecar.path if report.sidecar else None,
        "sidecar_rights": report.sidecar.facts.rights if report.sidecar else None,
        "detail": "; ".join(facts.details) or None,
        "_contract_id": contract_id,
        "_contract_version": version,
        "_run_id": run_id,
        "_loaded_at": loaded_at,
    }
