"""DuckDB SQL helpers every stage shares: quoting, existence checks, typed queries, atomic
Parquet writes.

One place for each so that escaping, locking habits and DuckDB 2.0's API quirks are handled
once: ``DuckDBPyConnection.sql`` is typed as returning ``None`` for statements without a
result, and an unconsumed ``execute`` result makes the next ``sql`` call fail.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def table_exists(conn: duckdb.DuckDBPyConnection, table: str, schema: str | None = None) -> bool:
    """Whether a table or view of that name exists (in ``schema`` when given)."""
    query = "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?"
    views = "SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND NOT internal"
    params: list[object] = [table]
    if schema is not None:
        query += " AND schema_name = ?"
        views += " AND schema_name = ?"
        params.append(schema)
    return bool(scalar(conn, query, params)) or bool(scalar(conn, views, params))


def write_parquet_atomic(
    conn: duckdb.DuckDBPyConnection,
    query: str,
    target: Path,
    params: Sequence[object] | None = None,
    options: str = "FORMAT parquet",
) -> None:
    """Write a query's result to ``target`` as Parquet, readers seeing the old file or the
    whole new one: written beside it under a temporary name, then ``os.replace``d."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        conn.execute(f"COPY ({query}) TO {literal(tmp)} ({options})", params or [])
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
