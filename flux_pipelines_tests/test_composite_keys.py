"""Keys of several columns and exact duplicate rows (issues 13 and 14): several
``primaryKey`` columns are one uniqueness rule over the tuple, compared as typed values and
reported with all its values; a table-level ``duplicateValues`` quality rule quarantines
rows delivered twice. Each test loads files through the real loader into DuckDB."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pandera.errors
import polars as pl
import pytest

from flux_pipelines.contracts.jsonschema_export import json_schema
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import PRIMARY_KEY_RULE, Contract
from flux_pipelines.contracts.pandera_schema import pandera_schema
from flux_pipelines.demo.generator import generate_rows, write_delivery
from flux_pipelines.errors import ContractError
from flux_pipelines_tests.conftest import DAY, contract_doc, run_load, write_contract

AWARD_KEY = [
    {"name": "award_id", "logicalType": "string", "required": True, "primaryKey": True},
    {"name": "modification", "logicalType": "integer", "primaryKey": True},
    {"name": "amount", "logicalType": "number"},
]


def _contract(
    tmp_path: Path, properties: list[dict[str, Any]], quality: list[dict[str, Any]] | None = None
) -> Contract:
    doc = contract_doc(properties, quality=quality)
    return load_contract(write_contract(tmp_path / "contracts", doc))


def _file(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "landing" / DAY.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _quarantined(conn: duckdb.DuckDBPyConnection, rule_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT _file, _row_number, field, value_provided, unique_id FROM items_quarantine "
        "WHERE rule_id = ? ORDER BY _file, _row_number",
        [rule_id],
    ).fetchall()


def test_several_primary_key_columns_are_one_rule_over_the_tuple(tmp_path: Path) -> None:
    contract = _contract(tmp_path, AWARD_KEY)
    unique = [r for r in contract.rules if r.kind == "unique"]
    assert [(r.id, r.columns) for r in unique] == [(PRIMARY_KEY_RULE, ("award_id", "modification"))]
    assert json_schema(contract)["x-flux-unique"] == [["award_id", "modification"]]


def test_a_composite_key_repeats_only_as_a_whole_compared_as_typed_values(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """A file keyed by two columns: each column repeats on almost every row, which
    per-column uniqueness quarantined; only the repeated pairs are duplicates."""
    rows = [
        "A,0,1.5",  # 1: (A, 0) again at row 4 (00 is 0) and in the second file
        "A,1,2",  # 2
        "B,0,3",  # 3
        " A ,00,4",  # 4: trimmed, and 00 = 0
        "B,1,5",  # 5
        "C,,6",  # 6: an empty part: no key, never a duplicate
        "C,,7",  # 7
        "D,x,8",  # 8: not an integer: quarantined for its type, no key
        "D,x,9",  # 9
    ]
    first = _file(tmp_path, "a.csv", "award_id,modification,amount\n" + "\n".join(rows) + "\n")
    second = _file(tmp_path, "b.csv", "award_id,modification,amount\nA,+0,10\nE,0,11\n")
    result = run_load(conn, _contract(tmp_path, AWARD_KEY), [first, second], tmp_path, chunk_rows=2)
    flagged = _quarantined(conn, PRIMARY_KEY_RULE)
    assert [(f, n) for f, n, *_ in flagged] == [("a.csv", 1), ("a.csv", 4), ("b.csv", 1)]
    field, provided = flagged[1][2], flagged[1][3]
    assert field == "award_id, modification"
    assert provided == "award_id= A ; modification=00"  # every value, as delivered
    assert flagged[0][4] == "award_id=A, modification=0"  # the Broker's unique id
    curated = conn.execute("SELECT award_id, modification FROM items ORDER BY amount").fetchall()
    assert curated == [("A", 1), ("B", 0), ("B", 1), ("C", None), ("C", None), ("E", 0)]
    assert (result.rows_curated, result.rows_quarantined) == (6, 5)


def test_exact_duplicate_rows_are_quarantined_when_the_contract_says_so(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    properties = [
        {"name": "id", "logicalType": "integer"},
        {"name": "name", "logicalType": "string"},
        {"name": "note", "logicalType": "string"},
    ]
    quality = [{"id": "row.duplicate", "type": "library", "rule": "duplicateValues"}]
    contract = _contract(tmp_path, properties, quality)
    (rule,) = [r for r in contract.rules if r.kind == "unique"]
    assert rule.columns == ("id", "name", "note") and rule.nulls_match
    rows = [
        "1,a,",  # 1: the same as 2 and 5 (empty note matches empty note)
        "1,a,",  # 2
        "1,a,x",  # 3: differs in one field
        "2,b,y",  # 4
        "01,a,",  # 5: 01 is the integer 1
        "q,c,z",  # 6: a type error ...
        "r,c,z",  # 7: ... and another: different values as delivered, no duplicates
        "q,c,z",  # 8: delivered exactly like row 6
    ]
    path = _file(tmp_path, "rows.csv", "id,name,note\n" + "\n".join(rows) + "\n")
    run_load(conn, contract, [path], tmp_path)
    assert [n for _, n, *_ in _quarantined(conn, "row.duplicate")] == [1, 2, 5, 6, 8]
    assert [n for _, n, *_ in _quarantined(conn, "id.type")] == [6, 7, 8]
    assert [n for (n,) in conn.execute("SELECT _row_number FROM items ORDER BY 1").fetchall()] == [
        3,
        4,
    ]


def test_a_table_level_key_lists_its_columns(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    properties = [
        {"name": "id", "logicalType": "integer"},
        {"name": "day", "logicalType": "date"},
        {"name": "note", "logicalType": "string"},
    ]
    quality = [
        {
            "id": "id_day.unique",
            "type": "library",
            "rule": "duplicateValues",
            "arguments": {"properties": ["id", "day"]},
        }
    ]
    contract = _contract(tmp_path, properties, quality)
    path = _file(
        tmp_path,
        "d.csv",
        "id,day,note\n1,2026-01-05,a\n1,2026-01-06,b\n1,2026-01-05,c\n2,,d\n2,,e\n",
    )
    run_load(conn, contract, [path], tmp_path)
    assert [n for _, n, *_ in _quarantined(conn, "id_day.unique")] == [1, 3]
    with pytest.raises(ContractError, match=r"arguments\.properties must list columns"):
        bad = [{**quality[0], "arguments": {"properties": ["id", "nope"]}}]
        _contract(tmp_path / "bad", properties, bad)


def test_the_curated_schema_check_holds_composite_keys_within_a_day(tmp_path: Path) -> None:
    schema = pandera_schema(_contract(tmp_path, AWARD_KEY), partition="_partition_date")
    days = [dt.date(2026, 1, 5), dt.date(2026, 1, 6)]
    frame = pl.DataFrame(
        {
            "award_id": ["A", "A", "A", "C", "C"],
            "modification": [0, 1, 0, None, None],
            "amount": [1.0, 2.0, 3.0, 4.0, 5.0],
            "_partition_date": [days[0], days[0], days[1], days[0], days[0]],
        }
    )
    schema.validate(frame)  # (A, 0) on two days; (C, null) twice is no key
    planted = frame.with_columns(pl.lit(days[0]).alias("_partition_date"))
    with pytest.raises(pandera.errors.SchemaError, match=PRIMARY_KEY_RULE):
        schema.validate(planted)


def test_the_generator_plants_composite_keys_and_duplicate_rows_the_loader_finds(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """The demo generator's planted table is exactly what the loader quarantines."""
    properties = [
        {**AWARD_KEY[0], "logicalTypeOptions": {"pattern": "^[A-Z]{3}[0-9]{4}$"}},
        {**AWARD_KEY[1], "logicalTypeOptions": {"minimum": 0, "maximum": 99}},
        AWARD_KEY[2],
    ]
    quality = [{"id": "row.duplicate", "type": "library", "rule": "duplicateValues"}]
    contract = _contract(tmp_path, properties, quality)
    generated = generate_rows(contract, 2_000, seed=3)
    planted = set(generated.planted.iter_rows())
    assert {rule for _, rule in planted} >= {PRIMARY_KEY_RULE, "row.duplicate"}
    path = write_delivery(generated.frame, tmp_path / "landing" / "generated.csv")
    run_load(conn, contract, [path], tmp_path)
    found = set(conn.execute("SELECT _row_number, rule_id FROM items_quarantine").fetchall())
    assert found == planted
