"""Where a use case's export reads and writes: the certified agency-days it is built from,
its folders, and each day's eligibility and content-file decisions.

Shared by the build (``build.py``) and the datasheet (``datasheet.py``), which counts from
these same sources rather than from the build's bookkeeping.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from flux_pipelines.access.masking import source_file
from flux_pipelines.collections.use_cases import UseCase, file_eligibility
from flux_pipelines.contracts.registry import Registry
from flux_pipelines.files import sha256_file, write_atomic
from flux_pipelines.names import (
    CROSS_AGENCY,
    EXPORTS_FOLDER,
    FILE,
    PARTITION,
    DatasetTables,
    export_name,
    published_root,
)
from flux_pipelines.quality.certification import DayVerdict, day_verdicts
from flux_pipelines.sql import frame, literal, quote

if TYPE_CHECKING:
    import duckdb

    from flux_pipelines.audit.trail import AuditTrail

# What a part is made by: bump it with every change to how records and files are selected
# or written, so parts built by the previous rules are rebuilt rather than kept (the check
# would otherwise refuse them on every build: 2 = vr's records need a usable file).
BUILDER_VERSION = 2
FILE_SORT = (PARTITION, "path")
# Content-file columns an export carries (the rest of the content table is the load's).
FILE_COLUMNS = (
    "record_key", "path", "sha256", "size_bytes", "detected_type", "container", "kind",
    "width", "height", "pages", "duration_s", "gltf_version", "rights", "sidecar_rights",
    FILE, "_contract_version",
)  # fmt: skip


@dataclass(frozen=True)
class SourceDay:
    """One certified agency-day of a dataset with rights and content, as published."""

    agency: str
    dataset: str
    day: dt.date
    records: Path
    eligibility: Path
    content: Path | None

    @property
    def part(self) -> str:
        """The part's file name ('~' never occurs in an agency or dataset slug)."""
        return f"{self.agency}~{self.dataset}~{self.day.isoformat()}.parquet"

    def hashes(self, use_cases_version: str) -> dict[str, str | int | None]:
        """What the part is built from: a changed copy or use-case file rebuilds it."""
        return {
            "records": sha256_file(self.records),
            "eligibility": sha256_file(self.eligibility),
            "content": sha256_file(self.content) if self.content is not None else None,
            "use_cases_version": use_cases_version,
            "builder": BUILDER_VERSION,
        }


@dataclass
class Sources:
    """The certified agency-days an export reads, and the days it cannot."""

    days: list[SourceDay] = field(default_factory=list)
    held_back: list[DayVerdict] = field(default_factory=list)  # the certification gate's
    undecided: list[DayVerdict] = field(default_factory=list)  # no published eligibility


@dataclass(frozen=True)
class ExportPaths:
    """Where one use case's export lives (names: ``names.export_name``)."""

    root: Path  # published/cross_agency
    use_case: str

    @property
    def records(self) -> Path:
        return self.root / f"{export_name(self.use_case)}_records"

    @property
    def files(self) -> Path:
        return self.root / f"{export_name(self.use_case)}_files"

    @property
    def docs(self) -> Path:
        return self.root / EXPORTS_FOLDER / self.use_case


def export_paths(home: Path, use_case: str) -> ExportPaths:
    return ExportPaths(published_root(home) / CROSS_AGENCY, use_case)


def published_table_file(home: Path, agency: str, table: str, day: dt.date) -> Path:
    """A day's published copy of a per-day table other than the curated one (its folder is
    named after the table: ``published/<agency>/<dataset>_eligibility/<day>.parquet``)."""
    return source_file(home, agency, table, day.isoformat())


def find_sources(home: Path, registry: Registry, trail: AuditTrail) -> Sources:
    """Every certified agency-day of every content dataset, with its published copies."""
    found = Sources()
    for dataset in registry.content_datasets():
        tables = DatasetTables.for_dataset(dataset)
        for verdict in day_verdicts(published_root(home), trail, dataset):
            if not verdict.certified:
                found.held_back.append(verdict)
                continue
            records = source_file(home, verdict.agency, dataset, verdict.day.isoformat())
            eligibility = published_table_file(
                home, verdict.agency, tables.eligibility, verdict.day
            )
            if not records.is_file() or not eligibility.is_file():
                found.undecided.append(verdict)
                continue
            content = published_table_file(home, verdict.agency, tables.content, verdict.day)
            found.days.append(
                SourceDay(
                    agency=verdict.agency,
                    dataset=dataset,
                    day=verdict.day,
                    records=records,
                    eligibility=eligibility,
                    content=content if content.is_file() else None,
                )
            )
    return found


# --- one agency-day's decisions ---------------------------------------------------------
def read_eligibility(
    conn: duckdb.DuckDBPyConnection, source: SourceDay, use_case: str
) -> pl.DataFrame:
    """The agency-day's decisions for ``use_case`` (eligible or not), with its identity."""
    return frame(
        conn,
        f"SELECT ? AS agency, ? AS dataset, * FROM read_parquet({literal(source.eligibility)}) "
        "WHERE use_case = ? ORDER BY _file, _row_number",
        [source.agency, source.dataset, use_case],
    )


def content_decisions(
    conn: duckdb.DuckDBPyConnection, source: SourceDay, use_case: UseCase, eligible: pl.DataFrame
) -> pl.DataFrame:
    """The agency-day's content files with ``use_case``'s decision on each: a file is
    eligible when its record is and ``file_eligibility`` says so (its own sidecar's rights
    against the record's statement, its detected type, its pixels)."""
    if source.content is None:
        return pl.DataFrame()
    selected = ", ".join(quote(c) for c in FILE_COLUMNS)
    files = frame(
        conn,
        f"SELECT ? AS agency, ? AS dataset, {PARTITION}, {selected} "
        f"FROM read_parquet({literal(source.content)}) ORDER BY {', '.join(FILE_SORT)}",
        [source.agency, source.dataset],
    )
    rights = dict(zip(eligible["record_key"], eligible["rights_statement"], strict=True))
    decisions = [_file_decision(use_case, row, rights) for row in files.iter_rows(named=True)]
    return files.with_columns(
        pl.Series("eligible", [d[0] for d in decisions], dtype=pl.Boolean),
        pl.Series("reason", [d[1] for d in decisions], dtype=pl.String),
    )


def _file_decision(
    use_case: UseCase, row: dict[str, Any], record_rights: dict[str, str | None]
) -> tuple[bool, str]:
    key = row["record_key"]
    if key not in record_rights:
        return False, f"not eligible for {use_case.id}: its record is not eligible"
    facts = {**row, "record_rights": record_rights[key]}
    decision = file_eligibility(use_case, facts)
    return decision.eligible, decision.sentence


def write_json(path: Path, payload: object) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
