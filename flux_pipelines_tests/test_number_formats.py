"""Amounts written as agencies write them (issue 14): a column's ``numberFormat`` declares
currency symbols, thousands separators, the decimal mark, negatives in parentheses and
percent signs; values that follow it load as exact numbers, values that do not are
quarantined for the column's type with the format in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pytest

from flux_pipelines.contracts.jsonschema_export import json_schema
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.errors import ContractError
from flux_pipelines_tests.conftest import DAY, contract_doc, run_load, write_contract

DOLLARS = {"currency": ["$", "USD"], "thousands": ",", "negativeParentheses": True}


def _contract(tmp_path: Path, amount: dict[str, Any], logical: str = "number") -> Contract:
    properties = [
        {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
        {
            "name": "amount",
            "logicalType": logical,
            "customProperties": [{"property": "numberFormat", "value": amount}],
        },
    ]
    return load_contract(write_contract(tmp_path / "contracts", contract_doc(properties)))


def _load(tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract, rows: list[str]):
    folder = tmp_path / "landing" / DAY.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "amounts.csv"
    lines = [f'{i},"{value}"' for i, value in enumerate(rows, start=1)]
    path.write_text("id,amount\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return run_load(conn, contract, [path], tmp_path)


def test_currency_amounts_load_as_exact_numbers(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    rows = [" $149,800 ", "(1,200.00)", "-$5", "$-5.25", "5 USD", "1,234,567.89", "42", "0.1"]
    result = _load(tmp_path, conn, _contract(tmp_path, DOLLARS), rows)
    assert result.rows_quarantined == 0
    stored = [v for (v,) in conn.execute("SELECT amount FROM items ORDER BY id").fetchall()]
    assert stored == [149800.0, -1200.0, -5.0, -5.25, 5.0, 1234567.89, 42.0, 0.1]
    raw = conn.execute("SELECT amount FROM raw_items ORDER BY _row_number").fetchall()
    assert raw[0] == (" $149,800 ",)  # raw keeps what was delivered


def test_values_off_the_format_are_quarantined_with_the_format_in_words(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    rows = ["1,2,3", "1234,567", "€5", "-(5)", "(-5)", "$", "12%", "$5"]
    _load(tmp_path, conn, _contract(tmp_path, DOLLARS), rows)
    flagged = conn.execute(
        "SELECT _row_number, value_provided, message FROM items_quarantine "
        "WHERE rule_id = 'amount.type' ORDER BY 1"
    ).fetchall()
    assert [n for n, _, _ in flagged] == [1, 2, 3, 4, 5, 6, 7]
    assert flagged[0][1] == "1,2,3"
    assert "currency $ or USD, thousands separated by ','" in flagged[0][2]
    assert "negatives in parentheses" in flagged[0][2]
    assert conn.execute("SELECT id, amount FROM items").fetchall() == [(8, 5.0)]


def test_percent_and_a_decimal_comma(tmp_path: Path, conn: duckdb.DuckDBPyConnection) -> None:
    fraction = _contract(tmp_path / "f", {"percent": "fraction"})
    _load(tmp_path / "f", conn, fraction, ["12%", "12.5 %", "0.5", "1e3%"])
    assert conn.execute("SELECT id, amount FROM items ORDER BY id").fetchall() == [
        (1, 0.12),
        (2, 0.125),
        (3, 0.5),
    ]
    europe = _contract(tmp_path / "e", {"thousands": ".", "decimal": ","})
    with duckdb.connect(str(tmp_path / "e.duckdb")) as other:
        _load(tmp_path / "e", other, europe, ["1.234,5", "1234,5", "1.5", "1.234.567"])
        assert other.execute("SELECT id, amount FROM items ORDER BY id").fetchall() == [
            (1, 1234.5),
            (2, 1234.5),
            (4, 1234567.0),
        ]


def test_an_integer_column_with_thousands_stays_exact(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    contract = _contract(tmp_path, {"thousands": ","}, logical="integer")
    _load(tmp_path, conn, contract, ["9,007,199,254,740,993", "1,000.5"])
    assert conn.execute("SELECT id, amount FROM items").fetchall() == [(1, 9007199254740993)]
    ((message,),) = conn.execute(
        "SELECT message FROM items_quarantine WHERE _row_number = 2"
    ).fetchall()
    assert "not a whole number" in message


def test_the_agency_json_schema_accepts_the_declared_spelling(tmp_path: Path) -> None:
    schema = json_schema(_contract(tmp_path, DOLLARS))
    validator = jsonschema.Draft202012Validator(schema)
    for good in ["$149,800", "(1,200.00)", "5 USD", 12.5]:
        assert not list(validator.iter_errors({"id": 1, "amount": good})), good
    for bad in ["1,2,3", "abc"]:
        assert list(validator.iter_errors({"id": 1, "amount": bad})), bad


@pytest.mark.parametrize(
    ("value", "logical", "problem"),
    [
        ({"thousands": ","}, "string", "applies to number and integer columns"),
        ({"currency": "$", "grouping": ","}, "number", "unknown keys ['grouping']"),
        ({"thousands": ",", "decimal": ","}, "number", "must differ"),
        ({"currency": ["US$1"]}, "number", "no digits"),
        ({"percent": "half"}, "number", "percent: fraction or points"),
        ({"percent": "fraction"}, "integer", "the column is an integer"),
    ],
)
def test_a_wrong_number_format_fails_at_load_naming_it(
    tmp_path: Path, value: dict[str, Any], logical: str, problem: str
) -> None:
    with pytest.raises(ContractError, match="numberFormat") as error:
        _contract(tmp_path, value, logical=logical)
    assert problem in str(error.value)
