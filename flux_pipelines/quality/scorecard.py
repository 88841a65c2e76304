"""The quality scorecard: one row per agency, dataset and delivery day, for analysts.

Each ingest step writes its days' rows into the agency file (``_flux_scorecard``) and
publishes them as read-only Parquet (``published/<agency>/_scorecard/<dataset>/<day>``) so
the cross-agency scorecard and the certification gate read copies, never a working file.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from flux_pipelines.contracts.ddl import PARTITION
from flux_pipelines.contracts.logical_types import ROWS
from flux_pipelines.cron import first_tick_at_or_after
from flux_pipelines.files import replacing
from flux_pipelines.ingest.delivery import PartitionResult
from flux_pipelines.sql import quote

if TYPE_CHECKING:
    import duckdb


SCORECARD_TABLE = "_flux_scorecard"
SCORECARD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("agency", "VARCHAR NOT NULL"),
    ("dataset", "VARCHAR NOT NULL"),
    (PARTITION, "DATE NOT NULL"),
    ("contract_version", "VARCHAR"),
    ("files", "BIGINT NOT NULL"),
    ("files_rejected", "BIGINT NOT NULL"),
    ("rows_in", "BIGINT NOT NULL"),
    ("rows_curated", "BIGINT NOT NULL"),
    ("rows_quarantined", "BIGINT NOT NULL"),
    ("rows_with_warnings", "BIGINT NOT NULL"),
    ("reject_rate_pct", "DOUBLE NOT NULL"),
    ("rules_fired", "BIGINT NOT NULL"),
    ("top_rules", "VARCHAR"),
    ("anomaly_severity", "VARCHAR"),  # NULL, WARN or ERROR (the worst monitor finding)
    ("anomalies", "BIGINT NOT NULL"),
    ("anomaly_summary", "VARCHAR"),
    ("delivered_at", "TIMESTAMP"),  # the newest delivered file's modification time (UTC)
    ("deadline", "TIMESTAMP"),  # the agency's delivery deadline for the day (UTC)
    ("on_time", "BOOLEAN"),
    ("loaded_at", "TIMESTAMP"),
    ("run_id", "VARCHAR"),
)


def deadline_for(cron: str, day: dt.date) -> dt.datetime:
    """The first tick of the agency's delivery-deadline cron on or after the day starts."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return first_tick_at_or_after(cron, start).astimezone(dt.UTC).replace(tzinfo=None)


def delivered_at(files: list[Path]) -> dt.datetime | None:
    """When the delivery arrived: the newest file's modification time."""
    if not files:
        return None
    newest = max(os.stat(f).st_mtime for f in files)
    return dt.datetime.fromtimestamp(newest, dt.UTC).replace(tzinfo=None)


def scorecard_row(
    result: PartitionResult,
    *,
    run_id: str,
    deadline_cron: str,
    files: list[Path],
    anomaly_severity: str | None,
    anomalies: list[str],
) -> dict[str, object]:
    """The day's scorecard row, from what the load counted (no table scan)."""
    arrived = delivered_at(files)
    deadline = deadline_for(deadline_cron, result.day)
    rules = result.rule_counts.most_common()
    return {
        "agency": result.agency,
        "dataset": result.dataset,
        PARTITION: result.day,
        "contract_version": result.contract.version,
        "files": len(result.files),
        "files_rejected": sum(1 for f in result.files if f.status == "rejected"),
        "rows_in": result.rows_in,
        "rows_curated": result.rows_curated,
        "rows_quarantined": result.rows_quarantined,
        "rows_with_warnings": result.rows_with_warnings,
        "reject_rate_pct": 100.0 * result.reject_rate,
        "rules_fired": len(rules),
        "top_rules": ", ".join(f"{r}={n}" for r, n in rules[:5]) or None,
        "anomaly_severity": anomaly_severity,
        "anomalies": len(anomalies),
        "anomaly_summary": "; ".join(anomalies) or None,
        "delivered_at": arrived,
        "deadline": deadline,
        "on_time": None if arrived is None else arrived <= deadline,
        "loaded_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "run_id": run_id,
    }


def write_scorecard(
    conn: duckdb.DuckDBPyConnection, published_root: Path, rows: list[dict[str, object]]
) -> list[Path]:
    """Replace the days' rows in ``_flux_scorecard`` and publish one Parquet file per day."""
    if not rows:
        return []
    _ensure_table(conn)
    frame = pl.DataFrame(rows, schema=_POLARS_SCHEMA)
    conn.register("_flux_scorecard_rows", frame)
    try:
        conn.execute(
            f"DELETE FROM {SCORECARD_TABLE} s USING _flux_scorecard_rows r "
            f"WHERE s.agency = r.agency AND s.dataset = r.dataset "
            f"AND s.{PARTITION} = r.{PARTITION}"
        ).fetchall()
        conn.execute(
            f"INSERT INTO {SCORECARD_TABLE} BY NAME SELECT * FROM _flux_scorecard_rows"
        ).fetchall()
    finally:
        conn.unregister("_flux_scorecard_rows")
    written = []
    for row in frame.iter_slices(1):
        agency, dataset, day = row["agency"][0], row["dataset"][0], row[PARTITION][0]
        target = published_root / agency / "_scorecard" / dataset / f"{day.isoformat()}.parquet"
        with replacing(target) as tmp:
            row.write_parquet(tmp)
        written.append(target)
    return written


_POLARS_TYPES: dict[str, pl.DataType] = {row.duckdb: row.polars for row in ROWS}
_POLARS_SCHEMA = {n: _POLARS_TYPES[t.split(" ")[0]] for n, t in SCORECARD_COLUMNS}


def scorecard_glob(published_root: Path) -> str:
    """Every agency's published scorecard rows."""
    return str(published_root / "*" / "_scorecard" / "*" / "*.parquet")


def _ensure_table(conn: duckdb.DuckDBPyConnection) -> None:
    body = ", ".join(f"{quote(n)} {t}" for n, t in SCORECARD_COLUMNS)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {SCORECARD_TABLE} ({body})").fetchall()
