"""The partition loader on real DuckDB files: formats, row numbers, conservation, uniqueness,
idempotency, crash safety and delivery-level failures."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.validator import MAX_CELL_BYTES, TRUNCATION_MARKER
from flux_pipelines.ingest.readers import inspect_file, read_chunks
from flux_pipelines_tests.conftest import (
    DAY,
    contract_doc,
    make_loader,
    raw_dir,
    run_load,
    write_contract,
)

COLUMNS = ["id", "name", "score", "kind", "note"]
PROPS: list[dict[str, Any]] = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {
        "name": "name",
        "logicalType": "string",
        "required": True,
        "customProperties": [{"property": "sourceNames", "value": ["Full Name"]}],
    },
    {
        "name": "score",
        "logicalType": "number",
        "logicalTypeOptions": {"minimum": 0, "maximum": 100},
    },
    {"name": "kind", "logicalType": "string", "enum": [{"value": "x"}, {"value": "y"}]},
    {"name": "note", "logicalType": "string"},
]
QUALITY = [
    {
        "id": "score_high",
        "type": "custom",
        "engine": "flux",
        "implementation": "score <= 90",
        "severity": "warning",
    },
]


@pytest.fixture
def contract(tmp_path: Path) -> Contract:
    return load_contract(
        write_contract(tmp_path / "contracts", contract_doc(PROPS, quality=QUALITY))
    )


def write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def csv_text(rows: list[tuple[Any, ...]], header: str = "id,name,score,kind") -> str:
    return header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)


def frame(conn: duckdb.DuckDBPyConnection, sql: str, *params: object) -> pl.DataFrame:
    return conn.sql(sql, params=list(params)).pl()


def rows(conn: duckdb.DuckDBPyConnection, sql: str, *params: object) -> list[tuple[Any, ...]]:
    return conn.execute(sql, list(params)).fetchall()


def curated(conn: duckdb.DuckDBPyConnection, day: dt.date = DAY) -> list[tuple[Any, ...]]:
    return rows(
        conn, f"SELECT {', '.join(COLUMNS)} FROM items WHERE _partition_date = ? ORDER BY id", day
    )


def snapshot(conn: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    """Every table's rows in a stable order (for before/after comparisons)."""
    tables = ["raw_items", "items", "items_quarantine", "items_warnings", "_flux_deliveries"]
    return {t: frame(conn, f"SELECT * FROM {t} ORDER BY ALL") for t in tables}


# --- formats and CSV quirks ---------------------------------------------------------------------

QUIRKY_CSV = (
    b"\xef\xbb\xbf ID ,Full Name,SCORE , Kind,Extra Col\r\n"
    b'1,"Smith, J",10,x,e1\r\n'
    b'2,"multi\r\nline, too",NA,y,e2\r\n'
    b"3,Doe,,x,e3\r\n"
    b"4,  Roe  ,  ,NA,\r\n"
)
EXPECTED_QUIRKY = [
    (1, "Smith, J", 10.0, "x", None),
    (2, "multi\r\nline, too", None, "y", None),
    (3, "Doe", None, "x", None),
    (4, "Roe", None, None, None),
]


def test_quirky_csv(tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract) -> None:
    path = write(tmp_path, "quirky.csv", QUIRKY_CSV)
    result = run_load(conn, contract, [path], tmp_path)
    assert curated(conn) == EXPECTED_QUIRKY
    [outcome] = result.files
    assert (outcome.status, outcome.rows_read, outcome.rows_curated) == ("loaded", 4, 4)
    assert outcome.unmapped == ["extra_col"]
    assert outcome.missing == ["note"]
    raw = rows(conn, "SELECT _row_number, _unmapped FROM raw_items ORDER BY 1")
    assert [(n, json.loads(u)) for n, u in raw] == [
        (1, {"extra_col": "e1"}),
        (2, {"extra_col": "e2"}),
        (3, {"extra_col": "e3"}),
        (4, {"extra_col": None}),
    ]
    logged = rows(conn, "SELECT unmapped_columns, missing_columns, status FROM _flux_deliveries")
    assert logged == [(["extra_col"], ["note"], "loaded")]


RECORDS = [
    {"ID": 1, "Full Name": "Smith, J", "Score": 10.5, "Kind": "x"},
    {"ID": 2, "Full Name": "multi\nline", "Score": None, "Kind": "y"},
    {"ID": 3, "Full Name": "Doe", "Score": 95.0, "Kind": "x"},
    {"ID": 4, "Full Name": "Bad", "Score": -1.0, "Kind": "z"},
]


def _write_records(folder: Path, fmt: str, records: list[dict[str, Any]]) -> Path:
    if fmt == "csv":
        return write(folder, "d.csv", pl.DataFrame(records).write_csv())
    if fmt == "jsonl":
        return write(folder, "d.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    if fmt == "json":
        return write(folder, "d.json", json.dumps(records))
    path = folder / "d.parquet"
    pl.DataFrame(records).write_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet"])
def test_every_format_gives_the_same_rows(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract, fmt: str
) -> None:
    result = run_load(
        conn, contract, [_write_records(tmp_path, fmt, RECORDS)], tmp_path, chunk_rows=3
    )
    assert curated(conn) == [
        (1, "Smith, J", 10.5, "x", None),
        (2, "multi\nline", None, "y", None),
        (3, "Doe", 95.0, "x", None),
    ]
    assert rows(conn, "SELECT _row_number, rule_id FROM items_quarantine ORDER BY 2") == [
        (4, "kind.allowed_values"),
        (4, "score.minimum"),
    ]
    assert rows(conn, "SELECT _row_number, rule_id FROM items_warnings") == [(3, "score_high")]
    assert result.files[0].format == fmt
    assert result.files[0].missing == ["note"]


# --- row numbers ----------------------------------------------------------------------------------


def _planted(n: int, bad: set[int]) -> list[dict[str, Any]]:
    """n records; every third name holds an embedded newline; rows in ``bad`` break a rule."""
    return [
        {
            "ID": i * 10,
            "Full Name": f"name {i}\nsecond line" if i % 3 == 0 else f"name {i}",
            "Score": -5.0 if i in bad else float(i),
            "Kind": "x",
        }
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_quarantined_row_numbers_are_record_positions(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract, fmt: str
) -> None:
    bad = {2, 3, 7, 11}
    path = _write_records(tmp_path, fmt, _planted(11, bad))
    if fmt == "csv":
        assert path.read_text().count("\n") > 12  # embedded newlines are really there
    run_load(conn, contract, [path], tmp_path, chunk_rows=3)
    quarantined = rows(conn, "SELECT _row_number, unique_id, value_provided FROM items_quarantine")
    assert sorted(quarantined) == [(i, f"id={i * 10}", "-5.0") for i in sorted(bad)]
    cur = rows(conn, "SELECT _row_number, id, name FROM items ORDER BY 1")
    assert [r[0] for r in cur] == [i for i in range(1, 12) if i not in bad]
    assert all(rid == n * 10 for n, rid, _ in cur)
    assert cur[1][2] == "name 4"


def test_read_chunks_respects_chunk_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "ten.csv", csv_text([(i, f"n{i}", i, "x") for i in range(10)]))
    chunks = list(read_chunks(inspect_file(path), chunk_rows=3))
    assert [c.height for c in chunks] == [3, 3, 3, 1]
    assert pl.concat(chunks)["_row_number"].to_list() == list(range(1, 11))
    assert pl.concat(chunks)["id"].to_list() == [str(i) for i in range(10)]


# --- conservation and warnings --------------------------------------------------------------------

CONSERVATION_ROWS = [
    (1, "ok", 5, "x"),  # good
    (2, "two fatal", -1, "z"),  # score.minimum + kind.allowed_values
    (3, "warned", 95, "y"),  # warning only -> curated and warnings
    (4, "", 95, "z"),  # name.required + kind.allowed_values + score_high -> quarantine
    (5, "ok too", "", ""),  # nulls in optional columns
]


def test_conservation_per_file(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    a = write(tmp_path, "a.csv", csv_text(CONSERVATION_ROWS))
    b = write(tmp_path, "b.csv", csv_text([(10, "b1", 1, "x"), (11, "b2", 101, "x")]))
    result = run_load(conn, contract, [a, b], tmp_path, chunk_rows=2)
    for file, raw_n, cur_n, quar_n in [("a.csv", 5, 3, 2), ("b.csv", 2, 1, 1)]:
        counted = rows(
            conn,
            """SELECT (SELECT count(*) FROM raw_items WHERE _file = $1),
                (SELECT count(*) FROM items WHERE _file = $1),
                (SELECT count(DISTINCT _row_number) FROM items_quarantine WHERE _file = $1)""",
            file,
        )
        assert counted == [(raw_n, cur_n, quar_n)]
        assert raw_n == cur_n + quar_n
        outcome = next(o for o in result.files if o.file == file)
        assert (outcome.rows_read, outcome.rows_curated, outcome.rows_quarantined) == (
            raw_n,
            cur_n,
            quar_n,
        )
    assert rows(conn, "SELECT _row_number FROM items WHERE _file = 'a.csv' ORDER BY 1") == [
        (1,),
        (3,),
        (5,),
    ]
    assert rows(conn, "SELECT _file, _row_number, rule_id FROM items_warnings") == [
        ("a.csv", 3, "score_high")
    ]
    assert sorted(
        rows(
            conn,
            "SELECT _row_number, rule_id, severity FROM items_quarantine WHERE _file = 'a.csv'",
        )
    ) == [
        (2, "kind.allowed_values", "fatal"),
        (2, "score.minimum", "fatal"),
        (4, "kind.allowed_values", "fatal"),
        (4, "name.required", "fatal"),
        (4, "score_high", "warning"),
    ]
    assert result.rows_in == 7 and result.rows_curated == 4 and result.rows_quarantined == 3
    assert result.rows_with_warnings == 1
    assert result.rule_counts["kind.allowed_values"] == 2
    assert result.errors == []


# --- uniqueness across files ----------------------------------------------------------------------


def test_uniqueness_across_files_flags_every_copy(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    a = write(
        tmp_path, "a.csv", csv_text([(1, "a1", 5, "x"), (2, "a2", 95, "x"), (3, "a3", 5, "x")])
    )
    b = write(
        tmp_path,
        "b.csv",
        csv_text([(2, "b1", 5, "x"), (4, "b2", 5, "x"), (5, "b3", 5, "x"), (" 5 ", "b4", 5, "q")]),
    )
    result = run_load(conn, contract, [a, b], tmp_path, chunk_rows=2)
    assert rows(conn, "SELECT _file, _row_number FROM items ORDER BY 1, 2") == [
        ("a.csv", 1),
        ("a.csv", 3),
        ("b.csv", 2),
    ]
    unique_hits = rows(
        conn,
        "SELECT _file, _row_number, value_provided, unique_id FROM items_quarantine "
        "WHERE rule_id = 'id.unique' ORDER BY 1, 2",
    )
    assert unique_hits == [
        ("a.csv", 2, "2", "id=2"),
        ("b.csv", 1, "2", "id=2"),
        ("b.csv", 3, "5", "id=5"),
        ("b.csv", 4, " 5 ", "id=5"),  # the value as delivered; compared trimmed
    ]
    # a.csv row 2's warning moved with it; b.csv row 4 keeps its own fatal too
    assert rows(conn, "SELECT count(*) FROM items_warnings") == [(0,)]
    assert sorted(
        rows(
            conn,
            "SELECT _file, _row_number, rule_id FROM items_quarantine WHERE rule_id <> 'id.unique'",
        )
    ) == [
        ("a.csv", 2, "score_high"),
        ("b.csv", 4, "kind.allowed_values"),
    ]
    counts = {
        o.file: (o.rows_curated, o.rows_quarantined, o.rows_with_warnings) for o in result.files
    }
    assert counts == {"a.csv": (2, 1, 0), "b.csv": (1, 3, 0)}


# --- idempotency and crash safety -----------------------------------------------------------------


def _comparable(conn: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    return {
        t: f.drop([c for c in f.columns if c in {"_loaded_at", "_run_id", "loaded_at", "run_id"}])
        for t, f in snapshot(conn).items()
    }


def test_reloading_the_same_delivery_is_idempotent(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    path = write(tmp_path, "a.csv", csv_text(CONSERVATION_ROWS))
    run_load(conn, contract, [path], tmp_path, run_id="first")
    first = _comparable(conn)
    run_load(conn, contract, [path], tmp_path, run_id="second")
    second = _comparable(conn)
    for table, before in first.items():
        assert second[table].equals(before), table
    assert first["items"].height == 3 and first["raw_items"].height == 5
    assert rows(conn, "SELECT DISTINCT _run_id FROM raw_items") == [("second",)]


def test_new_delivery_replaces_its_day_only(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    other_day = DAY - dt.timedelta(days=1)
    old = write(tmp_path, "old.csv", csv_text([(1, "old", 5, "x"), (2, "old", -1, "x")]))
    new = write(tmp_path, "new.csv", csv_text([(7, "new", 5, "y")]))
    run_load(conn, contract, [old], tmp_path, day=other_day)
    run_load(conn, contract, [old], tmp_path, day=DAY)
    kept = {t: f.filter(pl.col("_partition_date") == other_day) for t, f in snapshot(conn).items()}
    run_load(conn, contract, [new], tmp_path, day=DAY)
    assert curated(conn) == [(7, "new", 5.0, "y", None)]
    assert rows(conn, "SELECT DISTINCT _file FROM raw_items WHERE _partition_date = ?", DAY) == [
        ("new.csv",)
    ]
    assert rows(conn, "SELECT count(*) FROM items_quarantine WHERE _partition_date = ?", DAY) == [
        (0,)
    ]
    assert rows(conn, "SELECT file FROM _flux_deliveries WHERE _partition_date = ?", DAY) == [
        ("new.csv",)
    ]
    after = {t: f.filter(pl.col("_partition_date") == other_day) for t, f in snapshot(conn).items()}
    for table, before in kept.items():
        assert after[table].equals(before), table
    assert kept["items"].height == 1 and kept["items_quarantine"].height == 1


def test_crash_before_commit_keeps_the_previous_state(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    run_load(conn, contract, [write(tmp_path, "a.csv", csv_text(CONSERVATION_ROWS))], tmp_path)
    before = snapshot(conn)
    raw_files = sorted(p.name for p in raw_dir(tmp_path, contract, DAY).iterdir())
    replacement = write(tmp_path, "b.csv", csv_text([(9, "b", 5, "x")]))
    loader = make_loader(conn, contract, tmp_path, run_id="crashing")
    conn.begin()
    with pytest.raises(RuntimeError, match="crash"):
        try:
            loader.load([replacement])
            assert curated(conn) == [(9, "b", 5.0, "x", None)]  # it did replace, uncommitted
            raise RuntimeError("crash before commit")
        except BaseException:
            conn.rollback()
            loader.discard_raw()
            raise
    after = snapshot(conn)
    for table, frame_before in before.items():
        assert after[table].equals(frame_before), table
    assert before["items"].height == 3 and before["raw_items"].height == 5
    assert sorted(p.name for p in raw_dir(tmp_path, contract, DAY).iterdir()) == raw_files
    assert [p.name for p in raw_dir(tmp_path, contract, DAY).parent.iterdir()] == [
        raw_dir(tmp_path, contract, DAY).name
    ]


def test_process_death_before_commit_keeps_the_previous_state(
    tmp_path: Path, contract: Contract
) -> None:
    """The process dies mid-load: no rollback call, no clean-up of the staged raw files."""
    db = str(tmp_path / "a.duckdb")
    with duckdb.connect(db) as first:
        run_load(
            first, contract, [write(tmp_path, "a.csv", csv_text([(1, "a", 5, "x")]))], tmp_path
        )
    with duckdb.connect(db) as second:
        second.begin()
        make_loader(second, contract, tmp_path, run_id="lost").load(
            [write(tmp_path, "b.csv", csv_text([(2, "b", 5, "x"), (3, "c", 5, "x")]))]
        )
    with duckdb.connect(db) as third:
        assert curated(third) == [(1, "a", 5.0, "x", None)]
        assert rows(third, "SELECT _file, _run_id, id FROM raw_items") == [("a.csv", "run-1", "1")]
        assert rows(third, "SELECT file, run_id FROM _flux_deliveries") == [("a.csv", "run-1")]


# --- delivery-level failures ----------------------------------------------------------------------

GOOD = csv_text([(100, "good", 5, "x"), (101, "good", 6, "y")])
UNTERMINATED = csv_text([(i, f"n{i}", 5, "x") for i in range(1, 8)]) + '8,"open,5,x\n9,n9,5,x\n'
# name, bytes, rule id, raw rows left for the file, rows read
FAILURES: list[tuple[str, bytes, str, int, int | None]] = [
    ("empty.csv", b"", "delivery.empty_file", 0, 0),
    ("header_only.csv", b"id,name,score,kind\r\n", "delivery.empty_file", 0, 0),
    ("latin1.csv", b"id,name\n1,caf\x94\n", "delivery.bad_encoding", 0, 0),
    ("no_name.csv", b"id,score\n1,5\n2,6\n", "delivery.missing_required_columns", 2, 2),
    ("twice.csv", b"id,Name,name\n1,a,b\n", "delivery.duplicate_columns", 0, 0),
    ("same.csv", b"id,name,id\n1,a,1\n", "delivery.duplicate_columns", 0, 0),
    ("same.jsonl", b'{"id": 1, "Name": "a", "name": "b"}\n', "delivery.duplicate_columns", 0, 0),
    ("wide.csv", b"id,name\n1,a\n2,b,c,d\n3,c\n", "delivery.unreadable", 0, None),
    ("unterminated.csv", UNTERMINATED.encode(), "delivery.unreadable", 0, None),
    ("broken.json", b'[{"id": 1, "name": "a"}, {"id": 2', "delivery.unreadable", 0, None),
    ("sheet.xlsx", b"PK\x03\x04 not really", "delivery.unsupported_format", 0, 0),
]


@pytest.mark.parametrize(
    ("name", "data", "rule_id", "raw_left", "read"), FAILURES, ids=[f[0] for f in FAILURES]
)
def test_delivery_level_failure(
    tmp_path: Path,
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    name: str,
    data: bytes,
    rule_id: str,
    raw_left: int,
    read: int | None,
) -> None:
    bad = write(tmp_path, name, data)
    good = write(tmp_path, "good.csv", GOOD)
    result = run_load(conn, contract, [bad, good], tmp_path, chunk_rows=2)
    quarantined = rows(
        conn,
        "SELECT _row_number, rule_id, severity, original_row FROM items_quarantine WHERE _file = ?",
        name,
    )
    assert quarantined == [(None, rule_id, "fatal", None)]
    assert rows(conn, "SELECT count(*) FROM raw_items WHERE _file = ?", name) == [(raw_left,)]
    assert rows(conn, "SELECT count(*) FROM items WHERE _file = ?", name) == [(0,)]
    assert rows(
        conn, "SELECT file, status, rule_id, rows_read FROM _flux_deliveries ORDER BY 1"
    ) == sorted([(name, "rejected", rule_id, read), ("good.csv", "loaded", None, 2)])
    # the other file of the delivery loads
    assert curated(conn) == [(100, "good", 5.0, "x", None), (101, "good", 6.0, "y", None)]
    [error] = result.errors
    assert (error.file, error.rule_id, error.agency, error.dataset) == (
        name,
        rule_id,
        "test-agency",
        "items",
    )
    outcome = next(o for o in result.files if o.file == name)
    assert (outcome.status, outcome.rule_id, outcome.rows_curated) == ("rejected", rule_id, 0)
    assert outcome.reason and outcome.reason in str(error)


# --- huge fields ----------------------------------------------------------------------------------


def test_huge_field_is_truncated_in_original_row(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    big_a, big_b = "A" * 20_000, "B" * 12_000
    path = write(
        tmp_path,
        "big.csv",
        csv_text(
            [
                (1, big_a, 5, "zz"),  # quarantined by the row validator
                (7, big_b, 5, "x"),  # quarantined by uniqueness (SQL path)
                (7, "short", 5, "x"),
            ]
        ),
    )
    run_load(conn, contract, [path], tmp_path)
    found = rows(conn, "SELECT _row_number, rule_id, original_row FROM items_quarantine ORDER BY 1")
    assert [(n, r) for n, r, _ in found] == [
        (1, "kind.allowed_values"),
        (2, "id.unique"),
        (3, "id.unique"),
    ]
    originals = {n: json.loads(text) for n, _, text in found}
    keep = MAX_CELL_BYTES // 2
    assert originals[1]["name"] == big_a[:keep] + TRUNCATION_MARKER.format(n=20_000)
    assert originals[2]["name"] == big_b[:keep] + TRUNCATION_MARKER.format(n=12_000)
    assert originals[3]["name"] == "short"
    for original in originals.values():
        assert original["score"] == "5"
    assert (originals[1]["id"], originals[1]["kind"]) == ("1", "zz")
    assert (originals[3]["id"], originals[3]["kind"]) == ("7", "x")
    # the raw table keeps the full delivered value
    assert rows(conn, "SELECT strlen(name) FROM raw_items WHERE _row_number = 1") == [(20_000,)]


def test_huge_extra_columns_keep_original_row_valid_json(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    """Oversized unknown columns of a quarantined row cannot break the JSON column."""
    big = "F" * 50_000
    path = write(
        tmp_path,
        "flex.csv",
        csv_text(
            [(1, "a", 5, "zz", big), (2, "b", 5, "x", "small")], "id,name,score,kind,flex_big"
        ),
    )
    result = run_load(conn, contract, [path], tmp_path)
    assert result.rows_quarantined == 1 and result.rows_curated == 1
    (text,) = rows(conn, "SELECT original_row FROM items_quarantine")[0]
    original = json.loads(text)
    assert original["kind"] == "zz"
    assert original["_unmapped"].startswith("[")
    assert "bytes of extra columns, truncated by Flux" in original["_unmapped"]
    assert rows(conn, "SELECT count(*) FROM raw_items") == [(2,)]


def test_empty_keys_are_never_duplicates(tmp_path: Path, conn: duckdb.DuckDBPyConnection) -> None:
    """Optional unique columns: many empty cells are not a repeated key (real NGA ulanid)."""
    doc = contract_doc(
        [
            {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
            {"name": "code", "logicalType": "string", "unique": True},
        ]
    )
    contract = load_contract(write_contract(tmp_path, doc))
    path = tmp_path / "d.csv"
    path.write_text("id,code\n1,\n2,NA\n3,\n4,x\n5,x\n6, \n")
    run_load(conn, contract, [path], tmp_path)
    flagged = rows(
        conn,
        "SELECT _row_number FROM items_quarantine WHERE rule_id = 'code.unique' ORDER BY 1",
    )
    assert flagged == [(4,), (5,)]


def _raw_view_probe(conn: duckdb.DuckDBPyConnection, root: Path, contract: Contract) -> None:
    """Define the raw view as Flux does plus a ``probe`` column, under Flux's own comment:
    while the probe is there, no load has defined the view again."""
    from flux_pipelines.ingest.delivery import raw_view_sql
    from flux_pipelines.sql import literal

    (comment,) = rows(conn, "SELECT comment FROM duckdb_views() WHERE view_name = 'raw_items'")[0]
    definition = raw_view_sql("raw_items", contract.dataset, root / "raw" / contract.dataset)
    conn.execute(definition.replace("SELECT r.*,", "SELECT 'kept' AS probe, r.*,", 1))
    conn.execute(f"COMMENT ON VIEW raw_items IS {literal(comment)}")


def _raw_columns(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [c for (c,) in rows(conn, "SELECT column_name FROM (DESCRIBE raw_items)")]


def test_the_raw_view_is_defined_again_only_when_a_day_can_change_it(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    day = [DAY + dt.timedelta(days=i) for i in range(4)]
    first = write(tmp_path, "a.csv", csv_text([(1, "a", 5, "x")]))
    run_load(conn, contract, [first], tmp_path, day=day[0])
    _raw_view_probe(conn, tmp_path, contract)

    # A new day with the view's columns: the view is left as it is and still reads the day.
    run_load(
        conn,
        contract,
        [write(tmp_path, "b.csv", csv_text([(2, "b", 5, "x")]))],
        tmp_path,
        day=day[1],
    )
    assert rows(conn, "SELECT probe, _partition_date, id FROM raw_items ORDER BY 2") == [
        ("kept", day[0], "1"),
        ("kept", day[1], "2"),
    ]

    # A day with a column the view lacks (a later version adds one): defined again.
    wider = load_contract(
        write_contract(
            tmp_path / "v2",
            contract_doc([*PROPS, {"name": "extra", "logicalType": "string"}], version="2.0.0"),
        )
    )
    extra = write(tmp_path, "c.csv", "id,name,extra\n3,c,new\n")
    run_load(conn, wider, [extra], tmp_path, day=day[2])
    assert "probe" not in _raw_columns(conn) and "extra" in _raw_columns(conn)
    assert rows(conn, "SELECT _partition_date, extra FROM raw_items ORDER BY 1") == [
        (day[0], None),
        (day[1], None),
        (day[2], "new"),
    ]

    # A day delivered again (its columns may have been the only holder of one): defined again.
    _raw_view_probe(conn, tmp_path, contract)
    run_load(conn, wider, [extra], tmp_path, day=day[2])
    assert "probe" not in _raw_columns(conn)

    # A view another definition of Flux made (its comment says which): defined again.
    _raw_view_probe(conn, tmp_path, contract)
    conn.execute("COMMENT ON VIEW raw_items IS 'flux raw view, an older definition'")
    run_load(
        conn,
        contract,
        [write(tmp_path, "d.csv", csv_text([(4, "d", 5, "y")]))],
        tmp_path,
        day=day[3],
    )
    assert "probe" not in _raw_columns(conn)
    assert rows(conn, "SELECT count(*) FROM raw_items") == [(4,)]
