"""The quality scorecard: one row per agency, dataset and delivery day, for analysts.

Each ingest step writes its days' rows into the agency file (``_flux_scorecard``) and
publishes them as read-only Parquet (``published/<agency>/_scorecard/<dataset>/<day>``) so
the cross-agency scorecard and the certification gate read copies, never a working file.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import duckdb
from dagster._utils.schedules import cron_string_iterator

from flux_pipelines.contracts.ddl import DELIVERIES_TABLE, PARTITION, DatasetTables, quote

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
    tick = next(cron_string_iterator(start.timestamp(), cron, "UTC"))
    return tick.astimezone(dt.UTC).replace(tzinfo=None)


def delivered_at(files: list[Path]) -> dt.datetime | None:
    """When the delivery arrived: the newest file's modification time."""
    if not files:
        return None
    newest = max(os.stat(f).st_mtime for f in files)
    return dt.datetime.fromtimestamp(newest, dt.UTC).replace(tzinfo=None)


def record_scorecard(
    conn: duckdb.DuckDBPyConnection,
    *,
    agency: str,
    dataset: str,
    day: dt.date,
    run_id: str,
    deadline_cron: str,
    files: list[Path],
    anomaly_severity: str | None,
    anomalies: int,
    anomaly_summary: str,
) -> None:
    """Replace the day's scorecard row, computed from the deliveries log and the tables."""
    _ensure_table(conn)
    t = DatasetTables.for_dataset(dataset)
    arrived = delivered_at(files)
    deadline = deadline_for(deadline_cron, day)
    conn.execute(
        f"DELETE FROM {SCORECARD_TABLE} WHERE agency = ? AND dataset = ? AND {PARTITION} = ?",
        [agency, dataset, day],
    ).fetchall()
    conn.execute(
        f"""INSERT INTO {SCORECARD_TABLE} BY NAME
        WITH d AS (
          SELECT * FROM {DELIVERIES_TABLE} WHERE dataset = ? AND {PARTITION} = ?
        ), rules AS (
          SELECT rule_id, count(*) AS n FROM (
            SELECT rule_id FROM {quote(t.quarantine)} WHERE {PARTITION} = ?
            UNION ALL SELECT rule_id FROM {quote(t.warnings)} WHERE {PARTITION} = ?)
          GROUP BY 1
        )
        SELECT ? AS agency, ? AS dataset, ?::DATE AS {PARTITION},
          (SELECT max(contract_version) FROM d) AS contract_version,
          (SELECT count(*) FROM d) AS files,
          (SELECT count(*) FILTER (WHERE status = 'rejected') FROM d) AS files_rejected,
          (SELECT coalesce(sum(rows_read), 0) FROM d) AS rows_in,
          (SELECT coalesce(sum(rows_curated), 0) FROM d) AS rows_curated,
          (SELECT coalesce(sum(rows_quarantined), 0) FROM d) AS rows_quarantined,
          (SELECT coalesce(sum(rows_with_warnings), 0) FROM d) AS rows_with_warnings,
          (SELECT CASE WHEN coalesce(sum(rows_read), 0) = 0 THEN 0.0
                  ELSE 100.0 * sum(rows_quarantined) / sum(rows_read) END FROM d)
            AS reject_rate_pct,
          (SELECT count(*) FROM rules) AS rules_fired,
          (SELECT string_agg(rule_id || '=' || n, ', ' ORDER BY n DESC, rule_id)
             FROM (SELECT * FROM rules ORDER BY n DESC, rule_id LIMIT 5)) AS top_rules,
          ? AS anomaly_severity, ? AS anomalies, ? AS anomaly_summary,
          ?::TIMESTAMP AS delivered_at, ?::TIMESTAMP AS deadline,
          CASE WHEN ?::TIMESTAMP IS NULL THEN NULL ELSE ?::TIMESTAMP <= ?::TIMESTAMP END
            AS on_time,
          (SELECT max(loaded_at) FROM d) AS loaded_at, ? AS run_id""",
        [
            dataset,
            day,
            day,
            day,
            agency,
            dataset,
            day,
            anomaly_severity,
            anomalies,
            anomaly_summary or None,
            arrived,
            deadline,
            arrived,
            arrived,
            deadline,
            run_id,
        ],
    ).fetchall()


def publish_scorecard(
    conn: duckdb.DuckDBPyConnection, published_root: Path, agency: str, dataset: str, day: dt.date
) -> Path:
    """The day's row as a read-only Parquet copy, swapped in atomically."""
    folder = published_root / agency / "_scorecard" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{day.isoformat()}.parquet"
    tmp = folder / f".{day.isoformat()}.parquet.tmp"
    literal = str(tmp).replace("'", "''")
    conn.execute(
        f"COPY (SELECT * FROM {SCORECARD_TABLE} WHERE agency = ? AND dataset = ? "
        f"AND {PARTITION} = ?) TO '{literal}' (FORMAT parquet)",
        [agency, dataset, day],
    ).fetchall()
    os.replace(tmp, target)
    return target


def scorecard_glob(published_root: Path) -> str:
    """Every agency's published scorecard rows."""
    return str(published_root / "*" / "_scorecard" / "*" / "*.parquet")


def _ensure_table(conn: duckdb.DuckDBPyConnection) -> None:
    body = ", ".join(f"{quote(n)} {t}" for n, t in SCORECARD_COLUMNS)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {SCORECARD_TABLE} ({body})").fetchall()
