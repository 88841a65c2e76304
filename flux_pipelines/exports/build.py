"""Build one use case's export from every agency's certified days.

Sources, per certified agency-day of a dataset whose contract maps rights and content
(``Contract.content``): the day's published records (the clearest copy, read with the
cross-agency treatments: what every entitled reader may see), its published eligibility
rows (``collections/eligibility.py``, decided at load) and its published content files
(``content/load.py``), never an agency's working file. A day the certification gate holds
back contributes nothing until it is overridden.

Layout under ``published/cross_agency/`` (the cross-agency catalog shows each folder as a
view):

- ``export_<use>_records/<agency>~<dataset>~<day>.parquet``: the eligible records, one part
  per agency-day, each with its rights statement, classes, reason and provenance (the
  delivered file, its sha256, the row, the contract version) and the record as JSON;
- ``export_<use>_files/<agency>~<dataset>~<day>.parquet``: the eligible content files of
  those records (path, sha256, detected type, size, pixels, pages, rights);
- ``exports/<use>/manifest.json`` (every part: rows, sha256, the sources it was built from)
  and ``datasheet.json`` / ``datasheet.md`` (``datasheet.py``).

Incremental: a part is rewritten only when its sources changed (the published copies'
sha256 and the use-case file's version); an agency-day no longer certified loses its parts.
Reproducible: parts are sorted by key and written without a timestamp, so the same inputs
give the same bytes. New parts are written to a staging folder, checked (``verify.py``) and
only then swapped in, so a failed check leaves the previous export as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from flux_pipelines.access.masking import classified_columns, shared_select, treatments
from flux_pipelines.collections.use_cases import UseCase, UseCases, needs_content
from flux_pipelines.contracts.registry import Registry
from flux_pipelines.exports.datasheet import write_datasheet
from flux_pipelines.exports.sources import (
    ExportPaths,
    SourceDay,
    Sources,
    content_decisions,
    export_paths,
    find_sources,
    write_json,
)
from flux_pipelines.exports.verify import verify_parts
from flux_pipelines.files import sha256_file
from flux_pipelines.names import FILE, PARTITION, ROW, export_name
from flux_pipelines.sql import literal, quote

if TYPE_CHECKING:
    import duckdb

    from flux_pipelines.audit.trail import AuditTrail

MANIFEST = "manifest.json"
RECORD_SORT = (PARTITION, FILE, ROW)


# --- one agency-day ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DayPart:
    """One agency-day's eligible records and files for one use case."""

    records: pl.DataFrame
    files: pl.DataFrame


def day_part(
    conn: duckdb.DuckDBPyConnection,
    home: Path,
    registry: Registry,
    source: SourceDay,
    use_case: UseCase,
) -> DayPart:
    """The agency-day's eligible records (with the record as JSON, cross-agency treatments
    applied) and the eligible files of those records."""
    wanted = treatments(classified_columns(registry.versions(source.dataset)), "cross_agency")
    shared = shared_select(conn, home, [source.records], wanted)
    fields = [
        n
        for (n, *_) in conn.execute(f"DESCRIBE {shared}").fetchall()
        if not n.startswith("_") and n != "agency"
    ]
    record_json = "json_object(" + ", ".join(f"{literal(n)}, r.{quote(n)}" for n in fields) + ")"
    records = conn.sql(
        f"""WITH r AS ({shared})
        SELECT ? AS agency, ? AS dataset, e.{PARTITION}, e.record_key, e.use_case,
               e.rights_statement, e.rights_class, e.metadata_licence,
               e.metadata_licence_class, e.content_type, e.object_kind, e.content_files,
               e.reason, e.use_cases_version, e._file, e._row_number, e._file_sha256,
               e._contract_version, CAST({record_json} AS VARCHAR) AS record
        FROM read_parquet({literal(source.eligibility)}) e
        JOIN r ON r._file = e._file AND r._row_number = e._row_number
        WHERE e.use_case = ? AND e.eligible
        ORDER BY {", ".join(f"e.{c}" for c in RECORD_SORT)}""",
        params=[source.agency, source.dataset, use_case.id],
    ).pl()
    files = _eligible_files(conn, source, use_case, records)
    if needs_content(use_case):  # a record whose files are all unusable is no use to it
        with_file = files["record_key"] if files.height else pl.Series([], dtype=pl.String)
        records = records.filter(pl.col("record_key").is_in(with_file.implode()))
    return DayPart(records=records, files=files)


def _eligible_files(
    conn: duckdb.DuckDBPyConnection, source: SourceDay, use_case: UseCase, records: pl.DataFrame
) -> pl.DataFrame:
    decided = content_decisions(conn, source, use_case, records)
    if decided.height == 0:
        return decided
    return decided.filter(pl.col("eligible")).drop("eligible")


# --- the whole export ----------------------------------------------------------------------------
@dataclass
class BuildResult:
    """What one build did: the parts it rewrote or kept, and the export's totals."""

    paths: ExportPaths
    sources: Sources
    rewritten: list[str]
    kept: list[str]
    removed: list[str]
    records: int
    files: int
    problems: list[str]  # the check's findings (verify.py); non-empty: nothing was swapped in

    @property
    def passed(self) -> bool:
        return not self.problems


def build_export(
    home: Path,
    registry: Registry,
    trail: AuditTrail,
    use_cases: UseCases,
    use_case_id: str,
) -> BuildResult:
    """Bring one use case's export up to date (see the module docstring), or leave it as it
    was and report why when the re-derived eligibility finds anything it should not hold."""
    import duckdb

    use_case = use_cases.get(use_case_id)
    paths = export_paths(home, use_case.id)
    sources = find_sources(home, registry, trail)
    manifest = _read_manifest(paths)
    staging = paths.root / f".staging-{export_name(use_case.id)}-{uuid.uuid4().hex[:8]}"
    (staging / "records").mkdir(parents=True)
    (staging / "files").mkdir()
    parts: dict[str, dict[str, Any]] = {}
    rewritten, kept = [], []
    try:
        with duckdb.connect() as conn:
            conn.execute("SET threads = 1")  # one writer order: the same bytes every time
            for source in sources.days:
                hashes = source.hashes(use_cases.version)
                previous = manifest.get("parts", {}).get(source.part)
                if (
                    previous is not None
                    and previous.get("sources") == hashes
                    and _intact(paths, source.part, previous)
                ):
                    parts[source.part] = previous
                    kept.append(source.part)
                    continue
                part = day_part(conn, home, registry, source, use_case)
                parts[source.part] = {
                    "agency": source.agency,
                    "dataset": source.dataset,
                    "day": source.day.isoformat(),
                    "sources": hashes,
                    "records": _write_part(part.records, staging / "records" / source.part),
                    "files": _write_part(part.files, staging / "files" / source.part),
                }
                rewritten.append(source.part)
            problems = verify_parts(
                registry, use_case, _part_files(paths, staging, parts, rewritten)
            )
            if problems:
                return BuildResult(paths, sources, [], [], [], 0, 0, problems)
            removed = _swap_in(paths, staging, parts, rewritten)
            manifest = {
                "use_case": use_case.id,
                "use_cases_version": use_cases.version,
                "parts": dict(sorted(parts.items())),
            }
            paths.docs.mkdir(parents=True, exist_ok=True)
            write_json(paths.docs / MANIFEST, manifest)
            write_datasheet(conn, paths, use_case, use_cases.version, sources, parts)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    records = sum(p["records"]["rows"] for p in parts.values())
    files = sum(p["files"]["rows"] for p in parts.values())
    return BuildResult(paths, sources, rewritten, kept, removed, records, files, [])


def _read_manifest(paths: ExportPaths) -> dict[str, Any]:
    try:
        loaded = json.loads((paths.docs / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # no export yet, or a damaged manifest: every part is rebuilt
    return loaded if isinstance(loaded, dict) else {}


def _intact(paths: ExportPaths, part: str, entry: dict[str, Any]) -> bool:
    """A kept part must still be the file the manifest describes (nobody edited it)."""
    for kind, folder in (("records", paths.records), ("files", paths.files)):
        listed = entry.get(kind, {})
        path = folder / part
        if listed.get("rows", 0) == 0:
            if path.exists():
                return False
            continue
        if not path.is_file() or sha256_file(path) != listed.get("sha256"):
            return False
    return True


def _write_part(frame: pl.DataFrame, path: Path) -> dict[str, Any]:
    """A part's Parquet file (none when it holds no row), and what the manifest says of it."""
    if frame.height == 0:
        return {"rows": 0, "sha256": None}
    frame.write_parquet(path, compression="zstd", statistics=True)
    return {"rows": frame.height, "sha256": sha256_file(path)}


def _part_files(
    paths: ExportPaths, staging: Path, parts: dict[str, dict[str, Any]], rewritten: Sequence[str]
) -> dict[str, list[Path]]:
    """Every part file of the export-to-be: rewritten ones from staging, kept ones in place."""
    found: dict[str, list[Path]] = {"records": [], "files": []}
    for name, entry in parts.items():
        for kind, folder in (("records", paths.records), ("files", paths.files)):
            if entry[kind]["rows"]:
                where = staging / kind if name in rewritten else folder
                found[kind].append(where / name)
    return found


def _swap_in(
    paths: ExportPaths, staging: Path, parts: dict[str, dict[str, Any]], rewritten: Sequence[str]
) -> list[str]:
    """Move the rewritten parts in and remove the parts of days no longer exported."""
    removed = []
    for kind, folder in (("records", paths.records), ("files", paths.files)):
        folder.mkdir(parents=True, exist_ok=True)
        for name in rewritten:
            staged, target = staging / kind / name, folder / name
            if staged.exists():
                os.replace(staged, target)
            else:
                target.unlink(missing_ok=True)  # the day has no row of this kind now
        for stale in sorted(folder.glob("*.parquet")):
            if stale.name not in parts:
                stale.unlink()
                removed.append(f"{kind}/{stale.name}")
    return removed
