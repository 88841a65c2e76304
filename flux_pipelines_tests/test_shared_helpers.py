"""The helpers every stage shares, each in one place: SQL quoting, table existence and atomic
Parquet writes (sql.py), file hashing and atomic writes (files.py), the logical-type table
(contracts/logical_types.py) and "which agencies deliver X" (Registry.agencies_for)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from pathlib import Path
from typing import get_args

import duckdb
import jsonschema
import polars as pl
import pytest

from flux_pipelines.contracts.logical_types import LOGICAL_TYPES, ROWS, from_odcs
from flux_pipelines.contracts.model import LogicalType
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.files import replacing, sha256_file, write_atomic
from flux_pipelines.sql import literal, quote, scalar, table_exists, write_parquet_atomic

AWKWARD = "it's a \"name\" with 'quotes'"


# --- sql.py ------------------------------------------------------------------------------------


def test_literal_and_quote_survive_quotes_in_duckdb(tmp_path: Path) -> None:
    with duckdb.connect() as conn:
        assert scalar(conn, f"SELECT {literal(AWKWARD)}") == AWKWARD
        conn.execute(f"CREATE TABLE {quote(AWKWARD)} ({quote(AWKWARD)} INTEGER)")
        conn.execute(f"INSERT INTO {quote(AWKWARD)} VALUES (7)")
        assert scalar(conn, f"SELECT {quote(AWKWARD)} FROM {quote(AWKWARD)}") == 7
        folder = tmp_path / "o'brien"
        folder.mkdir()
        target = folder / "x.parquet"
        conn.execute(f"COPY (SELECT 1 AS a) TO {literal(target)} (FORMAT parquet)")
        assert scalar(conn, f"SELECT a FROM read_parquet({literal(target)})") == 1


def test_table_exists_sees_tables_and_views_in_the_current_database_only() -> None:
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE t (a INTEGER)")
        conn.execute("CREATE SCHEMA s")
        conn.execute("CREATE VIEW s.v AS SELECT 1 AS a")
        conn.execute("ATTACH ':memory:' AS other")
        conn.execute("CREATE TABLE other.o (a INTEGER)")
        assert table_exists(conn, "t")
        assert table_exists(conn, "v") and table_exists(conn, "v", schema="s")
        assert not table_exists(conn, "v", schema="main")
        assert not table_exists(conn, "o")  # another database's table is not this one's
        assert table_exists(conn, "o", database="other")
        assert not table_exists(conn, "nope")
        assert not table_exists(conn, "duckdb_tables")  # internal views are not tables


def test_table_exists_inside_a_transaction_leaves_it_usable() -> None:
    """A probe (``SELECT ... FROM missing``) would abort the transaction; the catalog
    query does not."""
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE t (a INTEGER)")
        conn.execute("BEGIN")
        assert not table_exists(conn, "missing")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("COMMIT")
        assert scalar(conn, "SELECT count(*) FROM t") == 1


def test_write_parquet_atomic_replaces_whole_or_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "day.parquet"
    with duckdb.connect() as conn:
        write_parquet_atomic(conn, "SELECT ? AS a", target, params=[1])
        write_parquet_atomic(
            conn,
            "SELECT range AS a FROM range(3)",
            target,
            options="FORMAT parquet, COMPRESSION zstd",
        )
        assert pl.read_parquet(target)["a"].to_list() == [0, 1, 2]
        with pytest.raises(duckdb.Error):
            write_parquet_atomic(conn, "SELECT * FROM no_such_table", target)
    assert pl.read_parquet(target)["a"].to_list() == [0, 1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["day.parquet"]  # no temp left


# --- files.py ----------------------------------------------------------------------------------


def test_sha256_file_of_a_path_and_of_a_handle(tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"  # more than one read block
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    with path.open("rb") as handle:
        handle.seek(len(data) - 4)
        assert sha256_file(handle) == hashlib.sha256(b"tail").hexdigest()  # from where it stands


def test_write_atomic_replaces_text_and_bytes_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "state" / "receipt.json"
    write_atomic(path, "first ünïcode")
    assert path.read_text(encoding="utf-8") == "first ünïcode"
    write_atomic(path, b"second", durable=True)
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["receipt.json"]


def test_write_atomic_mode_keeps_a_private_file_private(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    write_atomic(path, "{}", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_replacing_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


# --- contracts/logical_types.py ---------------------------------------------------------------


def test_one_row_per_logical_type() -> None:
    assert [r.name for r in ROWS] == list(get_args(LogicalType))


def test_duckdb_and_polars_columns_of_a_row_agree() -> None:
    """A curated column (DDL from the row) read back into polars has the row's dtype: the
    validator's typed frame and pandera's check describe the table DuckDB holds."""
    values = {
        "string": "'x'", "integer": "7", "number": "1.5", "boolean": "true",
        "date": "DATE '2026-01-02'", "timestamp": "TIMESTAMP '2026-01-02 03:04:05'",
    }  # fmt: skip
    with duckdb.connect() as conn:
        columns = ", ".join(f"{quote(r.name)} {r.duckdb}" for r in ROWS)
        conn.execute(f"CREATE TABLE t ({columns})")
        conn.execute(f"INSERT INTO t VALUES ({', '.join(values[r.name] for r in ROWS)})")
        frame = conn.sql("SELECT * FROM t").pl()
    assert {name: frame.schema[name] for name in frame.columns} == {r.name: r.polars for r in ROWS}


@pytest.mark.parametrize(
    ("logical", "good", "bad"),
    [
        ("integer", [12, " 12 ", "12.0"], ["12.5", "twelve", True]),
        ("number", [1.5, "-1e3", ".5"], ["1,5", "n/a"]),
        ("boolean", [True, "yes"], [1]),
        ("date", ["2026-01-02"], ["02/01/2026"]),
        ("timestamp", ["2026-01-02T03:04:05Z"], [12, None]),  # format: needs rfc3339-validator
        ("string", ["anything"], [12]),
    ],
)
def test_json_schema_of_a_row_accepts_values_as_delivered(
    logical: LogicalType, good: list[object], bad: list[object]
) -> None:
    schema = LOGICAL_TYPES[logical].json_schema()
    checker = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert all(checker.is_valid(v) for v in good)
    assert not any(checker.is_valid(v) for v in bad)


def test_odcs_spellings_and_widening() -> None:
    assert from_odcs("Date", "TIMESTAMP") == "timestamp"
    assert from_odcs("date", None) == "date"
    assert from_odcs("date", "varchar") == "date"
    assert from_odcs("timestamp", None) is None  # not an ODCS v3.0.2 logicalType
    assert from_odcs("decimal", None) is None
    assert "number" in LOGICAL_TYPES["integer"].widens_to
    assert "integer" not in LOGICAL_TYPES["number"].widens_to
    assert all("string" in r.widens_to for r in ROWS if r.name != "string")
    assert [r.name for r in ROWS if r.numeric] == ["integer", "number"]


# --- Registry.agencies_for ------------------------------------------------------------------


def test_agencies_for_one_or_several_datasets() -> None:
    registry = load_registry()
    one = registry.agencies_for("contract_transactions")
    assert [a.id for a in one] == [
        a.id for a in registry.agencies if "contract_transactions" in a.datasets
    ]
    both = registry.agencies_for("contract_transactions", "meteorites")
    assert [a.id for a in both] == ["nasa"]
    assert {a.id for a in both} <= {a.id for a in one}
    assert registry.agencies_for("no_such_dataset") == []


def test_a_date_survives_widening_to_a_timestamp_unchanged() -> None:
    with duckdb.connect() as conn:
        back = scalar(conn, "SELECT CAST(CAST(DATE '2026-01-02' AS TIMESTAMP) AS DATE)")
    assert back == dt.date(2026, 1, 2)
