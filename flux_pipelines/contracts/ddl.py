"""DuckDB DDL generated from a contract: the curated, raw, quarantine and warnings tables.

Tables are created if missing and widened (ADD COLUMN) when a newer contract version adds
columns, so a dataset's history stays in one table across versions.
"""

from __future__ import annotations

from flux_pipelines.contracts.logical_types import type_row
from flux_pipelines.contracts.model import Contract
from flux_pipelines.names import (
    DELIVERIES_TABLE,
    FILE,
    PARTITION,
    REJECTED_ATTEMPTS_TABLE,
    ROW,
    DatasetTables,
)
from flux_pipelines.sql import quote

__all__ = ["DELIVERIES_TABLE", "PARTITION", "DatasetTables"]

LINEAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    (PARTITION, "DATE NOT NULL"),
    (FILE, "VARCHAR NOT NULL"),
    (ROW, "BIGINT"),
    ("_file_sha256", "VARCHAR NOT NULL"),
    ("_contract_version", "VARCHAR NOT NULL"),
    ("_run_id", "VARCHAR NOT NULL"),
    ("_loaded_at", "TIMESTAMP NOT NULL"),
)
VIOLATION_COLUMNS: tuple[tuple[str, str], ...] = (
    (PARTITION, "DATE NOT NULL"),
    (FILE, "VARCHAR NOT NULL"),
    (ROW, "BIGINT"),
    ("rule_id", "VARCHAR NOT NULL"),
    ("field", "VARCHAR"),
    ("value_provided", "VARCHAR"),
    ("expected", "VARCHAR"),
    ("difference", "VARCHAR"),  # cross-dataset sum rules: this side minus the other side
    ("severity", "VARCHAR NOT NULL"),
    ("category", "VARCHAR"),
    ("message", "VARCHAR NOT NULL"),
    ("unique_id", "VARCHAR"),
    ("original_row", "JSON"),
    ("_file_sha256", "VARCHAR NOT NULL"),
    ("_contract_id", "VARCHAR NOT NULL"),
    ("_contract_version", "VARCHAR NOT NULL"),
    ("_run_id", "VARCHAR NOT NULL"),
    ("_loaded_at", "TIMESTAMP NOT NULL"),
)
DELIVERY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("dataset", "VARCHAR NOT NULL"),
    (PARTITION, "DATE NOT NULL"),
    ("file", "VARCHAR NOT NULL"),
    ("file_sha256", "VARCHAR"),
    ("size_bytes", "BIGINT"),
    ("format", "VARCHAR"),
    ("status", "VARCHAR NOT NULL"),
    ("rule_id", "VARCHAR"),
    ("reason", "VARCHAR"),
    ("rows_read", "BIGINT"),
    ("rows_curated", "BIGINT NOT NULL"),
    ("rows_quarantined", "BIGINT NOT NULL"),
    ("rows_with_warnings", "BIGINT NOT NULL"),
    ("unmapped_columns", "VARCHAR[]"),
    ("missing_columns", "VARCHAR[]"),
    ("columns_reordered", "BOOLEAN"),
    ("drift", "VARCHAR"),  # schema drift in plain words, for the agency report
    ("contract_version", "VARCHAR NOT NULL"),
    ("run_id", "VARCHAR NOT NULL"),
    ("loaded_at", "TIMESTAMP NOT NULL"),
)


def curated_columns(contract: Contract) -> list[tuple[str, str]]:
    return [(c.name, type_row(c.logical_type).duckdb) for c in contract.columns] + list(
        LINEAGE_COLUMNS
    )


def create_table_sql(table: str, columns: list[tuple[str, str]]) -> str:
    body = ",\n  ".join(f"{quote(name)} {sql_type}" for name, sql_type in columns)
    return f"CREATE TABLE IF NOT EXISTS {quote(table)} (\n  {body}\n)"


def contract_ddl(contract: Contract) -> dict[str, list[tuple[str, str]]]:
    """Every table a dataset needs, with its columns (name, DuckDB type).

    ``raw_<dataset>`` is not a table: it is a view over the raw Parquet partitions.
    """
    tables = DatasetTables.for_dataset(contract.dataset)
    return {
        tables.curated: curated_columns(contract),
        tables.quarantine: list(VIOLATION_COLUMNS),
        tables.warnings: list(VIOLATION_COLUMNS),
        DELIVERIES_TABLE: list(DELIVERY_COLUMNS),
        REJECTED_ATTEMPTS_TABLE: list(DELIVERY_COLUMNS),
    }


def ddl_script(contract: Contract) -> str:
    """The CREATE statements as one script (shown on the contract page)."""
    return ";\n\n".join(create_table_sql(t, cols) for t, cols in contract_ddl(contract).items())


def record_key_sql(contract: Contract, prefix: str = "") -> str:
    """A curated record's key as text, the one spelling every table that names records
    uses (eligibility, content files, exports): the identifier's values joined by '|', else
    ``<file>#<row>``. Beside the DDL because it reads only the contract and the lineage
    columns, so the collections and content code that both need it import neither."""
    if contract.identifier:
        parts = ", ".join(f"CAST({prefix}{quote(c)} AS VARCHAR)" for c in contract.identifier)
        return f"concat_ws('|', {parts})"
    return f"{prefix}{FILE} || '#' || CAST({prefix}{ROW} AS VARCHAR)"
