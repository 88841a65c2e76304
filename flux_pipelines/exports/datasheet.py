"""An export's datasheet: what is in it, what was left out and why, and where it came from.

Counted from the sources, not from the build's bookkeeping: every certified agency-day's
decisions for the use case (records in, eligible, excluded by reason), every content file
with its decision, the days the certification gate held back or that carry no decision yet,
and the delivered files the exported records came from (with their sha256). Written as JSON
(for tools) and Markdown (for people), with no timestamp: the same inputs give the same
datasheet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from flux_pipelines.collections.use_cases import (
    UseCase,
    needs_content,
    no_usable_file,
    reason_causes,
)
from flux_pipelines.exports.sources import (
    ExportPaths,
    Sources,
    content_decisions,
    read_eligibility,
    write_json,
)
from flux_pipelines.names import FILE

if TYPE_CHECKING:
    import duckdb

DATASHEET_JSON = "datasheet.json"
DATASHEET_MD = "datasheet.md"
TOP_REASONS = 10
MD_FILES = 50  # excluded files listed by name in the Markdown datasheet (JSON: all)


def write_datasheet(
    conn: duckdb.DuckDBPyConnection,
    paths: ExportPaths,
    use_case: UseCase,
    version: str,
    sources: Sources,
    parts: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Count, write ``datasheet.json`` and ``datasheet.md`` beside the manifest, return it."""
    decided, files = _decisions(conn, sources, use_case)
    sheet = {
        "use_case": use_case.id,
        "description": use_case.description,
        "use_cases_version": version,
        "requires": use_case.model_dump(mode="json", exclude={"id", "description"}),
        "records": _totals(decided),
        "files": _totals(files),
        "by_agency": _by_agency(decided, files),
        "by_rights_class": _by(decided, "rights_class"),
        "by_content_type": _by(decided, "content_type"),
        "excluded_by_reason": {
            "records": _reasons(decided),
            "files": _reasons(files),
        },
        "excluded_files": _excluded_files(files),
        "held_back": [_day(v) for v in sources.held_back],
        "not_yet_decided": [_day(v) for v in sources.undecided],
        "provenance": _provenance(decided),
        "parts": len(parts),
    }
    write_json(paths.docs / DATASHEET_JSON, sheet)
    (paths.docs / DATASHEET_MD).write_text(render_markdown(sheet), encoding="utf-8")
    return sheet


def _decisions(
    conn: duckdb.DuckDBPyConnection, sources: Sources, use_case: UseCase
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every record decision and every content file decision of the certified days."""
    records, files = [], []
    for source in sources.days:
        decided = read_eligibility(conn, source, use_case.id)
        eligible = decided.filter(pl.col("eligible"))
        found = content_decisions(conn, source, use_case, eligible)
        if needs_content(use_case):
            decided = _without_usable_file(decided, found, use_case)
        records.append(decided)
        if found.height:
            files.append(found)
    empty = pl.DataFrame(schema={"agency": pl.String, "eligible": pl.Boolean})
    return (
        pl.concat(records, how="diagonal_relaxed") if records else empty,
        pl.concat(files, how="diagonal_relaxed") if files else empty,
    )


def _without_usable_file(
    decided: pl.DataFrame, files: pl.DataFrame, use_case: UseCase
) -> pl.DataFrame:
    """Eligible records with no file the use case may use are counted as excluded, with
    that reason (``build.day_part`` leaves them out)."""
    usable = (
        files.filter(pl.col("eligible"))["record_key"]
        if files.height
        else pl.Series([], dtype=pl.String)
    )
    lacking = pl.col("eligible") & ~pl.col("record_key").is_in(usable.implode())
    return decided.with_columns(
        pl.when(lacking).then(pl.lit(no_usable_file(use_case))).otherwise("reason").alias("reason"),
        pl.when(lacking).then(False).otherwise("eligible").alias("eligible"),
    )


def _totals(frame: pl.DataFrame) -> dict[str, int]:
    eligible = int(frame["eligible"].sum()) if frame.height else 0
    return {"in": frame.height, "eligible": eligible, "excluded": frame.height - eligible}


def _by_agency(records: pl.DataFrame, files: pl.DataFrame) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for frame, kind in ((records, "records"), (files, "files")):
        if frame.height == 0:
            continue
        for (agency, dataset), group in frame.group_by(["agency", "dataset"]):
            entry = rows.setdefault(
                (str(agency), str(dataset)),
                {"agency": agency, "dataset": dataset, "records_in": 0, "records_eligible": 0,
                 "files_in": 0, "files_eligible": 0},
            )  # fmt: skip
            entry[f"{kind}_in"] = group.height
            entry[f"{kind}_eligible"] = int(group["eligible"].sum())
    return [rows[k] for k in sorted(rows)]


def _by(records: pl.DataFrame, column: str) -> list[dict[str, Any]]:
    if records.height == 0:
        return []
    grouped = (
        records.group_by(pl.col(column).fill_null("(none)"))
        .agg(pl.len().alias("records_in"), pl.col("eligible").sum().alias("records_eligible"))
        .sort(column)
    )
    return [
        {
            column: r[column],
            "records_in": r["records_in"],
            "records_eligible": r["records_eligible"],
        }
        for r in grouped.iter_rows(named=True)
    ]


def _reasons(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Excluded rows by cause (``reason_causes``), most frequent first."""
    if frame.height == 0:
        return []
    counted: Counter[str] = Counter()
    for reason in frame.filter(~pl.col("eligible"))["reason"]:
        for cause in reason_causes(reason or ""):
            counted[cause] += 1
    ordered = sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"reason": r, "count": n} for r, n in ordered[:TOP_REASONS]]


def _excluded_files(files: pl.DataFrame) -> list[dict[str, Any]]:
    """Every content file left out, with its reason (the per-file record of the decision;
    per-record decisions are the published ``<dataset>_eligibility`` copies)."""
    if files.height == 0:
        return []
    left = files.filter(~pl.col("eligible")).sort("agency", "dataset", "_partition_date", "path")
    return [
        {
            "agency": r["agency"],
            "dataset": r["dataset"],
            "day": r["_partition_date"].isoformat(),
            "path": r["path"],
            "sha256": r["sha256"],
            "reason": r["reason"],
        }
        for r in left.iter_rows(named=True)
    ]


def _day(verdict: Any) -> dict[str, str]:
    return {
        "agency": verdict.agency,
        "dataset": verdict.dataset,
        "day": verdict.day.isoformat(),
        "why": verdict.summary or "no eligibility decision published for the day",
    }


def _provenance(records: pl.DataFrame) -> list[dict[str, Any]]:
    """Each delivered file the exported records came from, with its hash."""
    if records.height == 0:
        return []
    exported = records.filter(pl.col("eligible"))
    if exported.height == 0:
        return []
    grouped = (
        exported.group_by(
            "agency", "dataset", "_partition_date", FILE, "_file_sha256", "_contract_version"
        )
        .agg(pl.len().alias("records_exported"))
        .sort("agency", "dataset", "_partition_date", FILE)
    )
    return [
        {
            "agency": r["agency"],
            "dataset": r["dataset"],
            "day": r["_partition_date"].isoformat(),
            "file": r[FILE],
            "file_sha256": r["_file_sha256"],
            "contract_version": r["_contract_version"],
            "records_exported": r["records_exported"],
        }
        for r in grouped.iter_rows(named=True)
    ]


def render_markdown(sheet: Mapping[str, Any]) -> str:
    """The datasheet for people: totals, breakdowns, exclusions, held-back days, sources."""
    rec, fil = sheet["records"], sheet["files"]
    lines = [
        f"# Datasheet: {sheet['use_case']} export",
        "",
        str(sheet["description"]),
        "",
        f"Use cases version {sheet['use_cases_version']}. Requires: "
        + ", ".join(f"{k} {v}" for k, v in sheet["requires"].items() if v is not None),
        "",
        "| | in | eligible | excluded |",
        "|---|---|---|---|",
        f"| records | {rec['in']} | {rec['eligible']} | {rec['excluded']} |",
        f"| content files | {fil['in']} | {fil['eligible']} | {fil['excluded']} |",
        "",
        "## By agency",
        "",
        "| agency | dataset | records in | eligible | files in | eligible |",
        "|---|---|---|---|---|---|",
        *(
            f"| {a['agency']} | {a['dataset']} | {a['records_in']} | {a['records_eligible']} "
            f"| {a['files_in']} | {a['files_eligible']} |"
            for a in sheet["by_agency"]
        ),
        "",
        *_breakdown("By rights class", "rights_class", sheet["by_rights_class"]),
        *_breakdown("By content type", "content_type", sheet["by_content_type"]),
        "## Excluded, by reason",
        "",
        *_reason_lines("Records", sheet["excluded_by_reason"]["records"]),
        *_reason_lines("Content files", sheet["excluded_by_reason"]["files"]),
        *_excluded_file_lines(sheet["excluded_files"]),
        "## Days not in the export",
        "",
        *(
            f"- {d['agency']}/{d['dataset']} {d['day']}: {d['why']}"
            for d in [*sheet["held_back"], *sheet["not_yet_decided"]]
        ),
        *(["- none"] if not sheet["held_back"] and not sheet["not_yet_decided"] else []),
        "",
        "## Provenance",
        "",
        "| agency | dataset | day | delivered file | sha256 | contract | records |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {p['agency']} | {p['dataset']} | {p['day']} | {p['file']} | "
            f"{p['file_sha256']} | {p['contract_version']} | {p['records_exported']} |"
            for p in sheet["provenance"]
        ),
        "",
    ]
    return "\n".join(lines)


def _breakdown(title: str, column: str, rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"## {title}",
        "",
        f"| {column.replace('_', ' ')} | records in | eligible |",
        "|---|---|---|",
        *(f"| {r[column]} | {r['records_in']} | {r['records_eligible']} |" for r in rows),
        "",
    ]


def _excluded_file_lines(files: list[dict[str, Any]]) -> list[str]:
    if not files:
        return []
    shown = files[:MD_FILES]
    more = [f"- ... and {len(files) - MD_FILES} more (datasheet.json)"] if files[MD_FILES:] else []
    return [
        "Content files left out:",
        "",
        *(f"- {f['agency']}/{f['dataset']} {f['day']} `{f['path']}`: {f['reason']}" for f in shown),
        *more,
        "",
    ]


def _reason_lines(title: str, reasons: list[dict[str, Any]]) -> list[str]:
    if not reasons:
        return [f"{title}: none excluded.", ""]
    return [f"{title}:", "", *(f"- {r['count']}: {r['reason']}" for r in reasons), ""]
