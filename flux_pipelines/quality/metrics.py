"""Delivery metrics the anomaly monitors watch, computed in DuckDB from the agency file."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from flux_pipelines.contracts.ddl import DELIVERIES_TABLE, PARTITION, DatasetTables
from flux_pipelines.contracts.logical_types import type_row
from flux_pipelines.contracts.model import Contract
from flux_pipelines.sql import quote

if TYPE_CHECKING:
    import duckdb


ROW_COUNT = "row_count"
REJECT_RATE = "reject_rate"
NULL_RATE = "null_rate."
MEAN = "mean."


def delivery_metrics(
    conn: duckdb.DuckDBPyConnection, contract: Contract, day: dt.date
) -> dict[str, float]:
    """row_count, reject_rate (points), null_rate.<column> (points) and mean.<numeric column>.

    ``contract`` is the version as stored (column names of the curated table).
    """
    ((read, quarantined),) = conn.execute(
        f"SELECT coalesce(sum(rows_read), 0), coalesce(sum(rows_quarantined), 0) "
        f"FROM {DELIVERIES_TABLE} WHERE dataset = ? AND {PARTITION} = ?",
        [contract.dataset, day],
    ).fetchall()
    metrics = {
        ROW_COUNT: float(read),
        REJECT_RATE: 100.0 * quarantined / read if read else 0.0,
    }
    numeric = [c.name for c in contract.columns if type_row(c.logical_type).numeric]
    parts = ["count(*)"]
    parts += [f"count(*) FILTER (WHERE {quote(c)} IS NULL)" for c in contract.column_names]
    parts += [f"avg({quote(c)})::DOUBLE" for c in numeric]
    table = quote(DatasetTables.for_dataset(contract.dataset).curated)
    ((total, *values),) = conn.execute(
        f"SELECT {', '.join(parts)} FROM {table} WHERE {PARTITION} = ?", [day]
    ).fetchall()
    if not total:
        return metrics
    nulls, means = values[: len(contract.column_names)], values[len(contract.column_names) :]
    for column, n in zip(contract.column_names, nulls, strict=True):
        metrics[f"{NULL_RATE}{column}"] = 100.0 * n / total
    for column, mean in zip(numeric, means, strict=True):
        if mean is not None:
            metrics[f"{MEAN}{column}"] = float(mean)
    return metrics
