"""DuckDB SQL helpers every stage shares: quoting, existence checks, typed queries, atomic
Parquet writes.

One place for each so that escaping, locking habits and DuckDB 2.0's API quirks are handled
once: ``DuckDBPyConnection.sql`` is typed as returning ``None`` for statements without a
result, and an unconsumed ``execute`` result makes the next ``sql`` call fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flux_pipelines.files import replacing

if TYPE_CHECKING:
    import duckdb
    import polars as pl


class EmptyResult(RuntimeError):
    """A query that must return rows was a statement without a result (a programming error)."""


def quote(identifier: str) -> str:
    """A SQL identifier (table, column) in double quotes, inner quotes doubled."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(value: str | Path) -> str:
    """A SQL string literal (a path, a name) with its quotes doubled."""
    return "'" + str(value).replace("'", "''") + "'"


def relation(
    conn: duckdb.DuckDBPyConnection, query: str, params: Sequence[object] | None = None
) -> duckdb.DuckDBPyRelation:
    """The relation of a query that returns rows (``conn.sql`` typed as never ``None``)."""
    result = conn.sql(query, params=params) if params is not None else conn.sql(query)
    if result is None:
        raise EmptyResult(f"query returned no result: {query[:120]}")
    return result


def rows(
    conn: duckdb.DuckDBPyConnection, query: str, params: Sequence[object] | None = None
) -> list[tuple[Any, ...]]:
    """Every row of a query, as tuples."""
    return relation(conn, query, params).fetchall()


def scalar(
    conn: duckdb.DuckDBPyConnection, query: str, params: Sequence[object] | None = None
) -> Any:
    """The first column of the first row (``None`` when the query returns no row)."""
    found = relation(conn, query, params).fetchall()
    return found[0][0] if found else None


def frame(
    conn: duckdb.DuckDBPyConnection, query: str, params: Sequence[object] | None = None
) -> pl.DataFrame:
    """A query's result as a polars frame."""
    result: pl.DataFrame = relation(conn, query, params).pl()
    return result


def table_exists(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    schema: str | None = None,
    database: str | None = None,
) -> bool:
    """Whether a table or view of that name exists in ``database`` (default: the current one)
    and ``schema`` (default: any).

    Asked of the catalog, not by probing ``SELECT ... FROM table``: a failed probe inside a
    transaction aborts the transaction.
    """
    where = (
        "database_name = coalesce(?, current_database()) AND schema_name = coalesce(?, schema_name)"
    )
    query = (
        f"SELECT EXISTS (SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND {where} "
        f"UNION ALL SELECT 1 FROM duckdb_views() WHERE view_name = ? AND NOT internal AND {where})"
    )
    params = [table, database, schema, table, database, schema]
    return bool(scalar(conn, query, params))


def write_parquet_atomic(
    conn: duckdb.DuckDBPyConnection,
    query: str,
    target: Path,
    params: Sequence[object] | None = None,
    options: str = "FORMAT parquet",
) -> None:
    """Write a query's result to ``target`` as Parquet, readers seeing the old file or the
    whole new one (``files.replacing``). ``options`` are COPY's (compression, footer)."""
    with replacing(target) as tmp:
        conn.execute(f"COPY ({query}) TO {literal(tmp)} ({options})", params or []).fetchall()
