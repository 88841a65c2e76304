"""Hostile values (issue 13): keys compare as typed values, numbers are never rounded, short
CSV records are quarantined, two raw crashes become ``delivery.*`` rejections, and
``flux validate`` / every id argument of the CLI answer with a classified exit code.

Every test loads real files from tmp_path through the real loader (or the real CLI); each
one failed on the behaviour before the fix.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from flux_pipelines.cli.main import app
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.registry import CONTRACTS_DIR_ENV, load_registry
from flux_pipelines.demo.generator import generate_rows, write_delivery
from flux_pipelines_tests.conftest import DAY, contract_doc, run_load, write_contract

runner = CliRunner()
INT64_MAX = 2**63 - 1


def _contract(tmp_path: Path, properties: list[dict[str, Any]]) -> Contract:
    return load_contract(write_contract(tmp_path / "contracts", contract_doc(properties)))


def _landing(tmp_path: Path) -> Path:
    """The day folder of the loader's agency, as an agency would deliver into it."""
    folder = tmp_path / "landing" / "test-agency" / "items" / DAY.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = _landing(tmp_path) / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return conn.execute(sql).fetchall()


def _flagged(conn: duckdb.DuckDBPyConnection, rule_id: str) -> list[int]:
    return [
        n
        for (n,) in _rows(
            conn,
            f"SELECT _row_number FROM items_quarantine WHERE rule_id = '{rule_id}' ORDER BY 1",
        )
    ]


def _curated_rows(conn: duckdb.DuckDBPyConnection) -> list[int]:
    return [n for (n,) in _rows(conn, "SELECT _row_number FROM items ORDER BY 1")]


# --- A. keys compare as values; numbers are exact or quarantined -----------------------------


KEYED = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {"name": "name", "logicalType": "string"},
]


def test_integer_key_spellings_of_one_value_are_one_key(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """Six spellings of 5 were six keys, and six rows with id 5 were curated."""
    spellings = ["5", "5.0", "05", "+5", "5e0", " 5 "]
    rows = [f"{s},copy {i}" for i, s in enumerate(spellings)] + ["6,six", "50e-1,also five"]
    path = _write(tmp_path, "ids.csv", "id,name\n" + "\n".join(rows) + "\n")
    result = run_load(conn, _contract(tmp_path, KEYED), [path], tmp_path)
    assert _flagged(conn, "id.unique") == [1, 2, 3, 4, 5, 6, 8]
    assert _rows(conn, "SELECT id FROM items") == [(6,)]
    assert _rows(
        conn, "SELECT DISTINCT unique_id FROM items_quarantine WHERE rule_id = 'id.unique'"
    ) == [("id=5",)]
    assert (result.rows_curated, result.rows_quarantined) == (1, 7)


def test_a_key_that_is_not_of_its_type_makes_no_duplicate(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    path = _write(tmp_path, "ids.csv", "id,name\nabc,a\nabc,b\n5.5,c\n5.50,d\n7,e\n")
    run_load(conn, _contract(tmp_path, KEYED), [path], tmp_path)
    assert _flagged(conn, "id.type") == [1, 2, 3, 4]
    assert _flagged(conn, "id.unique") == []
    assert _curated_rows(conn) == [5]


def test_integers_are_read_exactly_or_quarantined_never_rounded(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """9007199254740993.0 was stored as 9007199254740992 (read through a float)."""
    big = [
        "9007199254740993.0",  # 2^53 + 1, with a decimal point: exact
        "9007199254740993",
        f"{INT64_MAX}.000",
        f"{INT64_MAX + 1}",  # one past the 64-bit range: quarantined, not clamped
        "12.5",  # not whole: quarantined, not rounded
        "1.5e1",
        "-9223372036854775808",
        "1e999999999",  # must not build a billion-digit text
    ]
    props = [*KEYED, {"name": "big", "logicalType": "integer"}]
    body = "".join(f"{i},n{i},{v}\n" for i, v in enumerate(big, start=1))
    path = _write(tmp_path, "big.csv", "id,name,big\n" + body)
    run_load(conn, _contract(tmp_path, props), [path], tmp_path)
    assert _rows(conn, "SELECT id, big FROM items ORDER BY id") == [
        (1, 9007199254740993),
        (2, 9007199254740993),
        (3, INT64_MAX),
        (6, 15),
        (7, -(2**63)),
    ]
    messages = dict(
        _rows(
            conn,
            "SELECT _row_number, message FROM items_quarantine WHERE rule_id = 'big.type'",
        )
    )
    assert set(messages) == {4, 5, 8}
    assert "outside the 64-bit integer range" in messages[4]
    assert "never rounds or clamps" in messages[4]
    assert "not a whole number" in messages[5]
    assert "outside the 64-bit integer range" in messages[8]


NUMBERED = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {"name": "code", "logicalType": "number", "unique": True},
    {"name": "amount", "logicalType": "number"},
]


def test_number_keys_compare_as_values(tmp_path: Path, conn: duckdb.DuckDBPyConnection) -> None:
    codes = ["1.5", "1.50", "15e-1", "+1.5", "-0.0", "0", "2", "2.5"]
    body = "".join(f"{i},{c},1\n" for i, c in enumerate(codes, start=1))
    path = _write(tmp_path, "codes.csv", "id,code,amount\n" + body)
    run_load(conn, _contract(tmp_path, NUMBERED), [path], tmp_path)
    assert _flagged(conn, "code.unique") == [1, 2, 3, 4, 5, 6]
    assert _rows(conn, "SELECT code FROM items ORDER BY id") == [(2.0,), (2.5,)]


def test_a_number_that_would_lose_digits_as_a_float_is_quarantined(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """9007199254740993 was stored as 9007199254740992 without a word."""
    amounts = [
        "9007199254740993",  # 1: would be ...992
        "0.1",
        "0.30000000000000004",
        "1e-400",  # 4: would underflow to 0
        "1e400",  # 5: no float is that large
        "12.50",
        "78.400000000000006",  # 7: the float 78.4 written with 17 digits: nothing lost
        "3.14159265358979323846",  # 8: 21 digits, a float keeps 17
    ]
    body = "".join(f"{i},,{a}\n" for i, a in enumerate(amounts, start=1))
    path = _write(tmp_path, "amounts.csv", "id,code,amount\n" + body)
    run_load(conn, _contract(tmp_path, NUMBERED), [path], tmp_path)
    assert _rows(conn, "SELECT id, amount FROM items ORDER BY id") == [
        (2, 0.1),
        (3, 0.30000000000000004),
        (6, 12.5),
        (7, 78.4),
    ]
    messages = dict(
        _rows(
            conn,
            "SELECT _row_number, message FROM items_quarantine WHERE rule_id = 'amount.type'",
        )
    )
    assert set(messages) == {1, 4, 5, 8}
    assert "it would become 9007199254740992.0" in messages[1]
    assert "it would become 0.0" in messages[4]
    assert "beyond the range of a 64-bit float" in messages[5]
    assert "it would become 3.141592653589793" in messages[8]


def test_string_and_date_keys_compare_as_stored(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """Strings: surrounding space is trimmed on load, so it does not make a new key; case
    and inner space do. Dates: one day, whatever the accepted spelling."""
    props = [
        {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
        {"name": "code", "logicalType": "string", "unique": True},
        {"name": "day", "logicalType": "date", "unique": True},
    ]
    rows = [
        "1,AB,2026-01-01",
        '2," AB ",2026-01-02',
        "3,ab,2026-01-03",
        "4,A B,2026-01-05",
        "5,CD,2026-1-5",
    ]
    path = _write(tmp_path, "keys.csv", "id,code,day\n" + "\n".join(rows) + "\n")
    run_load(conn, _contract(tmp_path, props), [path], tmp_path)
    assert _flagged(conn, "code.unique") == [1, 2]
    assert _flagged(conn, "day.unique") == [4, 5]
    assert _curated_rows(conn) == [3]


# --- B. short rows ----------------------------------------------------------------------------

SHORT_PROPS = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {"name": "name", "logicalType": "string"},
    {"name": "note", "logicalType": "string"},  # optional: a missing value was silent
]
SHORT_CSV = (
    "id,name,note\n"
    "1,a,x\n"  # 1 complete
    "2,b,\n"  # 2 complete: an empty last field loads as null
    "3,c\n"  # 3 short
    "4\n"  # 4 short
    "\n"  # 5 a blank line: one empty field
    '5,"multi\nline, with a comma"\n'  # 6 short, across two lines
    '6,"say ""hi"", twice",z\n'  # 7 complete, quotes inside quotes
    "7,d,y"  # 8 complete, no final line end
)


@pytest.mark.parametrize("chunk_rows", [1000, 2])
@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_short_rows_are_quarantined(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, chunk_rows: int, eol: str
) -> None:
    """Rows missing trailing fields loaded with NULLs and no word to anyone."""
    text = SHORT_CSV.replace("\n", eol) if eol != "\n" else SHORT_CSV
    path = _write(tmp_path, "short.csv", text)
    result = run_load(
        conn, _contract(tmp_path, SHORT_PROPS), [path], tmp_path, chunk_rows=chunk_rows
    )
    assert _rows(
        conn,
        "SELECT _row_number, value_provided, expected, severity, category FROM items_quarantine "
        "WHERE rule_id = 'row.short' ORDER BY 1",
    ) == [
        (3, "2 field(s)", "3 fields, one per header column", "fatal", "existence"),
        (4, "1 field(s)", "3 fields, one per header column", "fatal", "existence"),
        (5, "1 field(s)", "3 fields, one per header column", "fatal", "existence"),
        (6, "2 field(s)", "3 fields, one per header column", "fatal", "existence"),
    ]
    (message,) = _rows(conn, "SELECT DISTINCT message FROM items_quarantine WHERE _row_number = 3")
    assert "fewer fields than the header" in message[0]
    assert _rows(conn, "SELECT id, name, note FROM items ORDER BY id") == [
        (1, "a", "x"),
        (2, "b", None),
        (6, 'say "hi", twice', "z"),
        (7, "d", "y"),
    ]
    [outcome] = result.files
    assert (outcome.rows_read, outcome.rows_curated, outcome.rows_quarantined) == (8, 4, 4)
    assert _rows(conn, "SELECT count(*) FROM raw_items") == [(8,)]


def test_a_short_row_keeps_its_other_violations(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    props = [*SHORT_PROPS[:2], {"name": "note", "logicalType": "string", "required": True}]
    path = _write(tmp_path, "short.csv", "id,name,note\n1,a,x\n2,b\n")
    run_load(conn, _contract(tmp_path, props), [path], tmp_path)
    assert _rows(conn, "SELECT _row_number, rule_id FROM items_quarantine ORDER BY 2") == [
        (2, "note.required"),
        (2, "row.short"),
    ]


def test_a_record_missing_only_columns_outside_the_contract_loads(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """Every contract value is there; the extra columns are kept in raw, not loaded."""
    path = _write(
        tmp_path, "extra.csv", "id,name,note,flex_a,flex_b\n1,a,x,f,g\n2,b,y,f\n3,c,z\n4,d\n"
    )
    run_load(conn, _contract(tmp_path, SHORT_PROPS), [path], tmp_path)
    assert _flagged(conn, "row.short") == [4]
    assert _curated_rows(conn) == [1, 2, 3]


# --- C. two raw crashes become delivery.* rejections ------------------------------------------

RENAMED = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {
        "name": "kind",
        "logicalType": "string",
        "customProperties": [
            {"property": "renamedFrom", "value": "category"},
            {"property": "sourceNames", "value": ["Kind Code"]},
        ],
    },
]


@pytest.mark.parametrize(
    "header", ["id,category,kind", "id,kind,Kind Code"], ids=["old-and-new", "source-name"]
)
def test_a_column_delivered_under_two_names_rejects_the_file(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, header: str
) -> None:
    """A polars DuplicateError escaped as a traceback; the other file never loaded."""
    bad = _write(tmp_path, "both.csv", f"{header}\n1,a,b\n")
    good = _write(tmp_path, "good.csv", "id,kind\n2,x\n")
    result = run_load(conn, _contract(tmp_path, RENAMED), [bad, good], tmp_path)
    [error] = result.errors
    assert (error.agency, error.dataset, error.file, error.rule_id) == (
        "test-agency",
        "items",
        "both.csv",
        "delivery.duplicate_columns",
    )
    assert "both deliver column kind" in error.reason
    assert _rows(conn, "SELECT _file, rule_id, severity, _row_number FROM items_quarantine") == [
        ("both.csv", "delivery.duplicate_columns", "fatal", None)
    ]
    assert _rows(conn, "SELECT file, status, rule_id FROM _flux_deliveries ORDER BY 1") == [
        ("both.csv", "rejected", "delivery.duplicate_columns"),
        ("good.csv", "loaded", None),
    ]
    assert _rows(conn, "SELECT id, kind FROM items") == [(2, "x")]


def test_validate_rejects_a_file_with_both_names_of_a_renamed_column(tmp_path: Path) -> None:
    """meteorites 2.0.0 renamed recclass to meteorite_class; a file with both crashed."""
    path = tmp_path / "m.csv"
    path.write_text(
        "id,name,nametype,recclass,meteorite_class,mass (g),fall,year,reclat,reclong\n"
        "1,Aachen,Valid,L5,L5,21,Fell,1880,50.775,6.08333\n"
    )
    result = runner.invoke(
        app, ["validate", str(path), "--dataset", "meteorites", "--day", "2026-01-10"]
    )
    assert result.exit_code == 2, result.output
    assert "delivery.duplicate_columns" in result.output
    assert "recclass and meteorite_class" in result.output
    assert "Traceback" not in result.output


def test_a_file_name_that_is_not_utf8_is_rejected_not_a_crash(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """A TypeError (or a DuckDB bad_cast) escaped; the delivery's other files never loaded."""
    folder = _landing(tmp_path)
    bad = Path(os.fsdecode(os.fsencode(folder) + b"/bad\xff\xfe.csv"))
    bad.write_text("id,name\n1,a\n")
    good = _write(tmp_path, "good.csv", "id,name\n2,b\n")
    result = run_load(conn, _contract(tmp_path, KEYED), [bad, good], tmp_path)
    [error] = result.errors
    assert (error.file, error.rule_id) == (
        "bad\\xff\\xfe.csv (name not UTF-8)",
        "delivery.bad_encoding",
    )
    assert "file name" in error.reason and "not valid UTF-8" in error.reason
    assert _rows(conn, "SELECT _file, rule_id FROM items_quarantine") == [
        ("bad\\xff\\xfe.csv (name not UTF-8)", "delivery.bad_encoding")
    ]
    assert _rows(conn, "SELECT file, status FROM _flux_deliveries ORDER BY 1") == [
        ("bad\\xff\\xfe.csv (name not UTF-8)", "rejected"),
        ("good.csv", "loaded"),
    ]
    assert _rows(conn, "SELECT id FROM items") == [(2,)]


# --- D. flux validate and the CLI's id arguments ----------------------------------------------

METEORITES_V1 = (
    "id,name,nametype,recclass,mass (g),fall,year,reclat,reclong,geolocation,states,counties\n"
)


def _validate(path: Path, *args: str) -> Any:
    return runner.invoke(
        app, ["validate", str(path), "--dataset", "meteorites", "--day", "2026-01-05", *args]
    )


def test_validate_exits_0_when_every_row_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(METEORITES_V1 + "1,Aachen,Valid,L5,21,Fell,1880,50.775,6.08333,,,\n")
    result = _validate(path)
    assert result.exit_code == 0, result.output
    assert "rows: 1 in, 1 would load, 0 would be quarantined" in result.output


def test_validate_errors_csv_neutralises_formula_cells(tmp_path: Path) -> None:
    """--errors-csv wrote =1+2 as is: a spreadsheet would run it."""
    path = tmp_path / "m.csv"
    path.write_text(
        METEORITES_V1
        + "1,Aachen,=1+2,L5,21,Fell,1880,50.775,6.08333,,,\n"
        + "2,Bravo,Valid,L5,-5,@SUM(A1),1880,50.775,6.08333,,,\n"
    )
    errors = tmp_path / "errors.csv"
    result = _validate(path, "--errors-csv", str(errors))
    assert result.exit_code == 1, result.output
    with errors.open(encoding="utf-8", newline="") as handle:
        provided = {
            (row["_row_number"], row["rule_id"]): row["value_provided"]
            for row in csv.DictReader(handle)
        }
    assert provided[("1", "nametype.allowed_values")] == "'=1+2"
    assert provided[("2", "fall.allowed_values")] == "'@SUM(A1)"
    assert provided[("2", "mass_g.minimum")] == "'-5"
    assert "=1+2" in result.output  # the console shows the value as delivered


def _transactions(tmp_path: Path) -> Path:
    """A clean contract_transactions file whose first row has fiscal year 2150: a warning
    by the contract, fatal for dod (its severity override)."""
    contract = load_registry().contract_for("contract_transactions", DAY)
    frame = generate_rows(contract, 20, seed=3, defect_rate=0.0).frame
    first = pl.int_range(pl.len()) == 0
    frame = frame.with_columns(
        pl.when(first)
        .then(pl.lit("2150"))
        .otherwise(pl.col("fiscal_year").cast(pl.String))
        .alias("fiscal_year")
    )
    return write_delivery(frame, tmp_path / "ct.csv", "csv")


def test_validate_agency_is_checked_against_the_registry(tmp_path: Path) -> None:
    """--agency DOD silently dropped dod's severity overrides (exit 0 instead of 1)."""
    path = _transactions(tmp_path)
    base = ["validate", str(path), "--dataset", "contract_transactions", "--day", "2026-01-05"]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, [*base, "--agency", "dod"]).exit_code == 1
    wrong_case = runner.invoke(app, [*base, "--agency", "DOD"])
    assert wrong_case.exit_code == 2
    assert "unknown agency 'DOD'" in wrong_case.output and "did you mean 'dod'" in wrong_case.output
    assert "known: " in wrong_case.output and "dod" in wrong_case.output.split("known: ")[1]
    elsewhere = runner.invoke(app, [*base, "--agency", "smithsonian-serc"])
    assert elsewhere.exit_code == 2
    assert "smithsonian-serc does not deliver contract_transactions" in elsewhere.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["load", "--agency", "DOD", "--dataset", "contract_transactions", "--day",
          "2026-01-05"], "did you mean 'dod'"),
        (["load", "--agency", "nasa", "--dataset", "comets", "--day", "2026-01-05"],
         "unknown dataset 'comets'; known: "),
        (["status", "--agency", "nope"], "unknown agency 'nope'; known: "),
        (["status", "--dataset", "comets"], "unknown dataset 'comets'; known: "),
        (["quality", "scorecard", "--agency", "nope"], "unknown agency 'nope'; known: "),
        (["quality", "scorecard", "--dataset", "comets"], "unknown dataset 'comets'; known: "),
        (["quality", "override", "--agency", "NASA", "--dataset", "meteorites", "--day",
          "2026-01-05", "--reason", "a long enough reason"],
         "did you mean 'nasa'"),
        (["quality", "override", "--agency", "nasa", "--dataset", "constituents", "--day",
          "2026-01-05", "--reason", "a long enough reason"],
         "nasa does not deliver constituents"),
        (["contracts", "show", "comets"], "unknown dataset 'comets'; known: "),
        (["contracts", "show", "meteorites", "--agency", "nope"],
         "unknown agency 'nope'; known: "),
        (["contracts", "show", "meteorites", "--agency", "dod"],
         "dod does not deliver meteorites"),
    ],
    ids=[
        "load-agency-case", "load-dataset", "status-agency", "status-dataset",
        "scorecard-agency", "scorecard-dataset", "override-agency-case",
        "override-not-delivered", "show-dataset", "show-agency", "show-not-delivered",
    ],
)  # fmt: skip
def test_every_id_argument_is_checked(tmp_path: Path, args: list[str], expected: str) -> None:
    """Unknown ids read as 'nothing to show' (scorecard exit 1) or as no overrides."""
    home = [] if args[0] == "contracts" else ["--home", str(tmp_path)]
    result = runner.invoke(app, [*args, *home])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def broken_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A registry whose contract compiles but whose row rule fails when it runs: an
    unexpected exception deep in the load path, as any bug would raise one."""
    root = tmp_path / "registry"
    doc = contract_doc(
        [
            {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
            {"name": "name", "logicalType": "string"},
        ],
        quality=[{"id": "name_math", "type": "custom", "engine": "flux",
                  "implementation": "name + 1 > 5"}],
    )  # fmt: skip
    write_contract(root, doc)
    agencies = {"agencies": [{"id": "acme", "name": "Acme", "datasets": ["items"]}]}
    (root / "agencies.yaml").write_text(yaml.safe_dump(agencies), encoding="utf-8")
    monkeypatch.setenv(CONTRACTS_DIR_ENV, str(root))
    load_registry.cache_clear()
    yield root
    load_registry.cache_clear()


def test_validate_internal_error_exits_3_with_one_line(
    tmp_path: Path, broken_registry: Path
) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id,name\n1,a\n")
    result = runner.invoke(
        app, ["validate", str(path), "--dataset", "items", "--day", "2026-01-05"]
    )
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert line.startswith(
        "error: internal error (InvalidOperationError) while validating items.csv"
    )
    assert "no verdict on the input" in line


def test_validate_day_is_still_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(METEORITES_V1)
    result = runner.invoke(app, ["validate", str(path), "--dataset", "meteorites", "--day", "x"])
    assert result.exit_code == 2 and "--day 'x' is not YYYY-MM-DD" in result.output
