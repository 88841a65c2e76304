"""The export's blocking check: eligibility re-derived from what the export holds.

Selection used the eligibility rows decided at load; this check starts again from the
exported text (each record's rights statement, metadata licence and object kind, each
file's detected type, pixels and rights), classifies it afresh (``rights.classify``) and
decides again (``record_eligibility``, ``file_eligibility``). A single record or file the
use case may not use, a class that no longer matches its statement, or a file whose record
is not in the export fails the check; the build then swaps nothing in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from flux_pipelines.collections.rights import classify
from flux_pipelines.collections.use_cases import (
    RecordFacts,
    UseCase,
    file_eligibility,
    needs_content,
    no_usable_file,
    record_content_type,
    record_eligibility,
)
from flux_pipelines.contracts.model import ContentMapping
from flux_pipelines.contracts.registry import Registry

SHOWN = 20  # findings listed by name; the rest are counted
_RECORD_FACTS = ("dataset", "_contract_version", "rights_statement", "metadata_licence")


def verify_parts(
    registry: Registry,
    use_case: UseCase,
    parts: Mapping[str, Sequence[Path]],
) -> list[str]:
    """Every finding against the export made of ``parts`` (records and files), empty when
    each record and file is one ``use_case`` may use."""
    records = _read(parts.get("records", ()))
    files = _read(parts.get("files", ()))
    findings = _record_findings(registry, use_case, records)
    findings += _file_findings(use_case, records, files)
    if needs_content(use_case):
        findings += _records_without_files(use_case, records, files)
    if len(findings) > SHOWN:
        return [*findings[:SHOWN], f"... and {len(findings) - SHOWN} more"]
    return findings


def _read(paths: Sequence[Path]) -> pl.DataFrame:
    if not paths:
        return pl.DataFrame()
    return pl.concat([pl.read_parquet(p) for p in paths], how="diagonal_relaxed")


def _where(row: Mapping[str, Any]) -> str:
    return f"{row['agency']}/{row['dataset']} {row['_partition_date']} {row['record_key']}"


def _record_findings(registry: Registry, use_case: UseCase, records: pl.DataFrame) -> list[str]:
    if records.height == 0:
        return []
    findings = []
    judged: dict[tuple[Any, ...], list[str]] = {}
    for row in records.iter_rows(named=True):
        combo = (*(row[c] for c in _RECORD_FACTS), row["object_kind"], row["rights_class"])
        if combo not in judged:
            judged[combo] = _judge_record(registry, use_case, row)
        findings += [f"record {_where(row)}: {problem}" for problem in judged[combo]]
    return findings


def _judge_record(registry: Registry, use_case: UseCase, row: Mapping[str, Any]) -> list[str]:
    rights = classify(row["rights_statement"])
    problems = []
    if rights.rights_class != row["rights_class"]:
        problems.append(
            f"exported as {row['rights_class']} but its statement is {rights.rights_class} "
            f"({rights.reason})"
        )
    facts = RecordFacts(
        content_rights=rights,
        metadata_licence=classify(row["metadata_licence"]),
        content_type=record_content_type(_mapping(registry, row), row["object_kind"]),
        object_kind=row["object_kind"],
    )
    decision = record_eligibility(use_case, facts)
    if not decision.eligible:
        problems.append(decision.sentence)
    return problems


def _mapping(registry: Registry, row: Mapping[str, Any]) -> ContentMapping:
    """The content mapping of the contract version the record was loaded under."""
    versions = registry.versions(row["dataset"])
    contract = next((c for c in versions if c.version == row["_contract_version"]), versions[-1])
    assert contract.content is not None  # exports read only datasets that map content
    return contract.content


def _records_without_files(
    use_case: UseCase, records: pl.DataFrame, files: pl.DataFrame
) -> list[str]:
    if records.height == 0:
        return []
    key = ["agency", "dataset", "_partition_date", "record_key"]
    exported = {tuple(r) for r in files.select(key).iter_rows()} if files.height else set()
    return [
        f"record {_where(row)}: {no_usable_file(use_case)}"
        for row in records.iter_rows(named=True)
        if tuple(row[k] for k in key) not in exported
    ]


def _file_findings(use_case: UseCase, records: pl.DataFrame, files: pl.DataFrame) -> list[str]:
    if files.height == 0:
        return []
    rights: dict[tuple[Any, ...], str | None] = {}
    if records.height:
        for row in records.select(
            "agency", "dataset", "_partition_date", "record_key", "rights_statement"
        ).iter_rows():
            rights[row[:4]] = row[4]
    findings = []
    for file in files.iter_rows(named=True):
        key = (file["agency"], file["dataset"], file["_partition_date"], file["record_key"])
        where = f"file {file['path']} of {_where(file)}"
        if key not in rights:
            findings.append(f"{where}: its record is not in the export")
            continue
        decision = file_eligibility(use_case, {**file, "record_rights": rights[key]})
        if not decision.eligible:
            findings.append(f"{where}: {decision.sentence}")
    return findings
