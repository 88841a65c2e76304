"""Readers a contract steers, and no silent loss (issue 14, point 2 and the reader cases of
point 6): comment lines before a CSV header, JSON records under a key, JSON arrays read in
bounded memory with every field as text, implausible row counts, declared encodings.

Every test drives real files through the real loader (``run_load``) and asserts the outcome:
rows curated and quarantined, or the ``delivery.*`` rule and the words of its reason. Reader
cases of the issue already in ``test_hostile_corpus.py`` are not repeated here (see the
report of issue 14 for which test covers each).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

import flux_pipelines.ingest.json_records as json_records
import flux_pipelines.ingest.readers as readers_module
from flux_pipelines.cli.main import app
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract, SizeLimits
from flux_pipelines.contracts.registry import CONTRACTS_DIR_ENV, load_registry
from flux_pipelines.errors import ContractError
from flux_pipelines.ingest.delivery import (
    FileOutcome,
    PartitionLoader,
    PartitionResult,
    load_partition,
)
from flux_pipelines.ingest.scanning import FileProblem
from flux_pipelines_tests.conftest import DAY, contract_doc, run_load, write_contract

runner = CliRunner()
KiB = 1 << 10

ITEMS: list[dict[str, Any]] = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {"name": "name", "logicalType": "string"},
    {"name": "amount", "logicalType": "number"},
    {"name": "day", "logicalType": "date"},
]
HEADER = "id,name,amount,day"


def _contract(tmp_path: Path, **reading: str) -> Contract:
    """The items contract with the contract-level reading options given (ODCS names)."""
    custom = [{"property": k, "value": v} for k, v in reading.items()]
    doc = contract_doc(ITEMS, custom=custom)
    return load_contract(write_contract(tmp_path / "contracts", doc))


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    """A file in the loader's agency day folder, as an agency delivers it."""
    folder = tmp_path / "landing" / "test-agency" / "items" / DAY.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _load(
    tmp_path: Path,
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    limits: SizeLimits | None = None,
    **reading: str,
) -> tuple[PartitionResult, FileOutcome]:
    contract = _contract(tmp_path, **reading)
    if limits is None:
        result = run_load(conn, contract, [path], tmp_path)
    else:
        loader = PartitionLoader(
            conn,
            agency="test-agency",
            contract=contract,
            day=DAY,
            run_id="run-1",
            raw_root=tmp_path / "raw" / contract.dataset,
            limits=limits,
        )
        result = load_partition(loader, [path])
    [outcome] = result.files
    return result, outcome


def _rejected(outcome: FileOutcome, rule_id: str, *words: str) -> None:
    """The file is rejected with ``rule_id`` and a reason naming it and each of ``words``."""
    assert (outcome.status, outcome.rule_id) == ("rejected", rule_id), outcome.reason
    reason = outcome.reason or ""
    assert all(w in reason for w in words), reason
    assert "Traceback" not in reason and "Try setting" not in reason


def _curated(conn: duckdb.DuckDBPyConnection, columns: str = "id, name") -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT {columns} FROM items ORDER BY _row_number").fetchall()


def _quarantined(conn: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT _row_number, rule_id, value_provided FROM items_quarantine "
        "WHERE _row_number IS NOT NULL ORDER BY 1, 2"
    ).fetchall()


def _records(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"Item {i}", "amount": i + 0.5, "day": "2026-01-05"}
        for i in range(start, start + n)
    ]


# --- 1. comment lines before the header -----------------------------------------------------

COMMENTED = (
    "# Meteoritical Bulletin export, 2026-01-05\n"
    "# columns: id, name, amount, day\n"
    "\n"
    f"{HEADER}\n"
    "1,Aachen,21.5,2026-01-05\n"
    "2,Aarhus,-x,2026-01-05\n"  # amount.type: row 2, counted from the header
    "3,Abee\n"  # short: its missing fields are reported on row 3
    "4,Acapulco,1.5,2026-01-05\n"
)


def test_declared_comment_lines_are_skipped_and_rows_count_from_the_header(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    path = _write(tmp_path, "export.csv", COMMENTED)
    result, outcome = _load(tmp_path, conn, path, commentPrefix="#")
    assert outcome.status == "loaded", outcome.reason
    assert outcome.rows_read == 4
    assert _curated(conn) == [(1, "Aachen"), (4, "Acapulco")]
    assert [(n, r) for n, r, _ in _quarantined(conn)] == [(2, "amount.type"), (3, "row.short")]
    assert result.rows_curated + result.rows_quarantined == 4


def test_undeclared_comment_lines_are_rejected_saying_what_to_declare(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """Before: polars' "found more fields than defined in 'Schema'", no word of comments."""
    path = _write(tmp_path, "export.csv", COMMENTED)
    _, outcome = _load(tmp_path, conn, path)
    _rejected(
        outcome,
        "delivery.layout_mismatch",
        "export.csv",
        "the file starts with 2 comment line(s) ('# Meteoritical Bulletin export, 2026-01-05')",
        "declare customProperty commentPrefix: '#' in the contract",
    )
    assert _curated(conn) == []


def test_a_header_whose_first_column_starts_with_a_hash_is_no_comment(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    path = _write(tmp_path, "h.csv", "#id,name,amount,day\n1,a,1.5,2026-01-05\n")
    _, outcome = _load(tmp_path, conn, path)
    assert outcome.status == "loaded", outcome.reason
    assert _curated(conn) == [(1, "a")]


# --- 2. JSON records under a key ------------------------------------------------------------


def _wrapped(n: int) -> str:
    return json.dumps({"version": 1, "generated": "2026-01-05", "releases": _records(n)}, indent=1)


def test_wrapped_json_is_read_from_the_declared_records_path(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    path = _write(tmp_path, "releases.json", _wrapped(1010))
    _, outcome = _load(tmp_path, conn, path, jsonRecordsPath="releases")
    assert (outcome.status, outcome.rows_read, outcome.rows_curated) == ("loaded", 1010, 1010)
    rows = _curated(conn, "_row_number, id, amount")
    assert rows[0] == (1, 1, 1.5) and rows[-1] == (1010, 1010, 1010.5)
    assert outcome.unmapped == []  # the wrapper's keys are no columns


def test_a_deeper_records_path_is_followed_past_other_members(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    doc = {
        "meta": {"items": [{"id": 99}], "note": "not these"},
        "data": {"count": 2, "items": _records(2)},
        "tail": [1, 2, 3],
    }
    path = _write(tmp_path, "deep.json", json.dumps(doc))
    _, outcome = _load(tmp_path, conn, path, jsonRecordsPath="data.items")
    assert outcome.status == "loaded", outcome.reason
    assert _curated(conn) == [(1, "Item 1"), (2, "Item 2")]


def test_about_a_thousand_wrapped_records_are_never_one_row(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 1,010 wrapped records became ONE empty row and ``flux validate`` exited 0."""
    path = _write(tmp_path, "releases.json", _wrapped(1010))
    _, outcome = _load(tmp_path, conn, path)
    _rejected(
        outcome,
        "delivery.layout_mismatch",
        "releases.json",
        "the records seem to sit under 'releases': declare customProperty jsonRecordsPath: "
        "releases",
    )
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
    assert outcome.rows_read == 0
    # and the CLI says the file is rejected (exit 2), naming the key
    registry = tmp_path / "registry"
    write_contract(registry, contract_doc(ITEMS))
    agencies = {"agencies": [{"id": "acme", "name": "Acme", "datasets": ["items"]}]}
    (registry / "agencies.yaml").write_text(yaml.safe_dump(agencies), encoding="utf-8")
    monkeypatch.setenv(CONTRACTS_DIR_ENV, str(registry))
    load_registry.cache_clear()
    try:
        ran = runner.invoke(
            app, ["validate", str(path), "--dataset", "items", "--day", "2026-01-05"]
        )
    finally:
        load_registry.cache_clear()
    assert ran.exit_code == 2, ran.output
    assert "jsonRecordsPath" in ran.output


def _artwork(record_id: int) -> str:
    """A museum's one-file-per-record export: one object whose fields hold arrays of
    objects (Tate's artworks: ``contributors``), the shape a wrapper also has."""
    return json.dumps(
        {
            "id": record_id,
            "name": f"Artwork {record_id}",
            "contributors": [{"fc": "Sir David Wilkie", "role": "artist"}],
            "subjects": {"children": [{"id": 78, "name": "objects"}]},
        },
        indent=2,
    )


def test_a_document_declared_one_record_loads_whole_with_its_arrays_kept_raw(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """Undeclared, such a file is taken for a wrapper (rejected, saying what to declare);
    with ``jsonDocument: record`` it is one row, its nested fields kept in raw."""
    path = _write(tmp_path, "n00921.json", _artwork(16182))
    _, outcome = _load(tmp_path, conn, path)
    _rejected(outcome, "delivery.layout_mismatch", "'contributors'", "jsonDocument: record")

    _, outcome = _load(tmp_path, conn, path, jsonDocument="record")
    assert (outcome.status, outcome.rows_read, outcome.rows_curated) == ("loaded", 1, 1)
    assert _curated(conn) == [(16182, "Artwork 16182")]
    assert outcome.unmapped == ["contributors", "subjects"]
    ((unmapped,),) = conn.execute("SELECT _unmapped FROM raw_items").fetchall()
    assert json.loads(unmapped)["contributors"] == '[{"fc":"Sir David Wilkie","role":"artist"}]'


def test_a_document_declared_one_record_that_is_an_array_is_rejected(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    path = _write(tmp_path, "items.json", json.dumps(_records(3)))
    _, outcome = _load(tmp_path, conn, path, jsonDocument="record")
    _rejected(outcome, "delivery.layout_mismatch", "items.json", "jsonDocument: record")
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)


@pytest.mark.parametrize(
    ("document", "path"),
    [("records", "releases"), ("record", "releases"), ("one", "")],
)
def test_json_document_is_checked_when_the_contract_loads(
    tmp_path: Path, document: str, path: str
) -> None:
    reading = {"jsonDocument": document} | ({"jsonRecordsPath": path} if path else {})
    if document == "records":
        assert _contract(tmp_path, **reading).reading.json_document_record is False
        return
    with pytest.raises(ContractError, match="jsonDocument must be 'record'"):
        _contract(tmp_path, **reading)


@pytest.mark.parametrize(
    ("document", "path", "rule_id", "words"),
    [
        (
            {"version": 1, "data": [{"id": 1}], "more": [{"id": 2}]},
            "",
            "delivery.layout_mismatch",
            ["may sit under 'data' or 'more'", "jsonRecordsPath"],
        ),
        (
            {"version": 1, "releases": _records(2)},
            "items",
            "delivery.layout_mismatch",
            ["jsonRecordsPath 'items' leads nowhere", "'version', 'releases'"],
        ),
        (
            {"version": 1, "releases": 5},
            "releases",
            "delivery.layout_mismatch",
            ["leads to a number under 'releases'", "not to an array of records"],
        ),
        (
            {"data": {"items": {"id": 1}}},
            "data.items",
            "delivery.layout_mismatch",
            ["leads to an object under 'items'"],
        ),
        (_records(2), "releases", "delivery.layout_mismatch", ["the JSON document is an array"]),
        (
            {"version": 1, "status": "ok"},
            "",
            "delivery.layout_mismatch",
            ["one object whose keys (version, status)", "none of the contract's columns"],
        ),
        ({"releases": []}, "releases", "delivery.empty_file", ["holds no records"]),
        ({"version": 1, "releases": _records(2)}, "", "delivery.layout_mismatch", ["'releases'"]),
        ({"releases": _records(1), "releases ": []}, "releases", None, []),
    ],
    ids=[
        "two_arrays",
        "path_nowhere",
        "path_to_a_number",
        "path_to_an_object",
        "path_but_an_array",
        "object_no_record",
        "path_to_empty",
        "undeclared",
        "near_twin_keys",
    ],
)
def test_json_layouts_are_read_as_declared_or_rejected_with_the_reason(
    tmp_path: Path,
    conn: duckdb.DuckDBPyConnection,
    document: Any,
    path: str,
    rule_id: str | None,
    words: list[str],
) -> None:
    file = _write(tmp_path, "doc.json", json.dumps(document))
    options = {"jsonRecordsPath": path} if path else {}
    _, outcome = _load(tmp_path, conn, file, **options)
    if rule_id is None:
        assert outcome.status == "loaded", outcome.reason
    else:
        _rejected(outcome, rule_id, "doc.json", *words)


def test_a_single_object_that_is_a_record_still_loads(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    record = {"id": 7, "name": "Seven", "tags": ["a", "b"], "amount": 1.25}
    _, outcome = _load(tmp_path, conn, _write(tmp_path, "one.json", json.dumps(record)))
    assert outcome.status == "loaded", outcome.reason
    assert _curated(conn, "id, name, amount") == [(7, "Seven", 1.25)]
    [(unmapped,)] = conn.execute("SELECT _unmapped FROM raw_items").fetchall()
    assert json.loads(unmapped) == {"tags": '["a","b"]'}


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("numbers.json", b"[1, 2, 3]", ["record 1 is a number, not an object"]),
        ("strings.json", b'["x", "y"]', ["record 1 is a string, not an object"]),
        ("mixed.json", b'[{"id": 1}, [2]]', ["record 2 is an array, not an object"]),
        ("string.json", b'"x"', ["a single value ('\"x\"')", "array of objects"]),
        ("cut.json", b'[{"id": 1, "name": "a"}, {"id": 2', ["ends before it is complete"]),
        ("two.json", b'[{"id": 1}] [{"id": 2}]', ["text after the JSON document at byte 12"]),
        ("bad.json", b'[{"id": 1},\n {"id": 2, "x": tru}]', ["record 2 is not valid JSON"]),
        ("keys.json", b'{"version": 1 "data": []}', ["a comma missing?", "byte 20 (line 1)"]),
        ("lines.jsonl", b'{"id": 1}\n\n{"id": 2,\n{"id": 3}\n', ["line 3 is not valid JSON"]),
        ("scalar.jsonl", b'{"id": 1}\n5\n', ["record 2 is a number, not an object"]),
    ],
)
def test_json_that_is_no_records_is_rejected_naming_where(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, name: str, data: bytes, words: list[str]
) -> None:
    """JSON of scalars, a cut document, two documents, a broken record or JSON Lines line:
    ``delivery.unreadable`` naming the file and the record or line, never a library's text."""
    _, outcome = _load(tmp_path, conn, _write(tmp_path, name, data))
    _rejected(outcome, "delivery.unreadable", name, *words)


# --- 3. JSON arrays streamed: the record limit is per element --------------------------------

SMALL = SizeLimits(max_line_bytes=64 * KiB, max_field_bytes=16 * KiB)


def test_a_json_array_larger_than_the_record_limit_loads_element_by_element(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """Before: a .json file was one record, so an array over ``max_line_bytes`` (8 MiB by
    default) was rejected, and under it parsed whole (200 MB: 2.2 GB RSS)."""
    path = _write(tmp_path, "big.json", json.dumps(_records(6000), indent=2))
    assert path.stat().st_size > 8 * SMALL.max_line_bytes
    _, outcome = _load(tmp_path, conn, path, limits=SMALL)
    assert (outcome.status, outcome.rows_read, outcome.rows_curated) == ("loaded", 6000, 6000)
    assert conn.execute("SELECT min(id), max(id) FROM items").fetchone() == (1, 6000)


def test_one_json_element_over_the_record_limit_is_rejected_naming_it(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    records = _records(3)
    records[1]["blob"] = ["x" * 1000] * 100  # ~100 KB, each value under the field limit
    path = _write(tmp_path, "big.json", "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]")
    _, outcome = _load(tmp_path, conn, path, limits=SMALL)
    _rejected(
        outcome,
        "delivery.line_too_long",
        "big.json: record 2 of the JSON array (from line 3) is",
        f"limit of {SMALL.max_line_bytes:,} bytes per record",
    )


def _element_sizes(text: str, start: int) -> list[int]:
    """The sizes of the array at ``start``'s elements, character by character (a reference:
    text between the separators at the array's own level, outside strings)."""
    sizes, depth, inside, escaped, mark = [], 0, False, False, start
    for i in range(start, len(text)):
        c = text[i]
        if inside:
            escaped, inside = (False, inside) if escaped else (c == "\\", c != '"')
        elif c == '"':
            inside = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                if text[mark + 1 : i].strip() or sizes:
                    sizes.append(i - mark - 1)
                return sizes
        elif c == "," and depth == 1:
            sizes.append(i - mark - 1)
            mark = i
    raise AssertionError("unclosed")


def _value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if depth > 3 or pick < 0.4:
        return rng.choice([1, -0.5, 'a"b\\', "[{,:}]", "\\", None, True, "x" * rng.randint(0, 30)])
    if pick < 0.7:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{{[{i}": _value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def test_the_layout_pass_finds_the_records_whatever_the_block_cuts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The pass carries string, escape and depth state between blocks: cut anywhere (blocks
    of 1 byte up), it counts the records of a plain or wrapped array and finds the first one
    over the limit exactly as a character-by-character reference does."""
    rng = random.Random(14)
    for trial in range(150):
        records = [{"id": j, "v": _value(rng)} for j in range(rng.randint(0, 6))]
        path = ("data",) if trial % 2 else ()
        doc: Any = {"z": _value(rng), "data": records, "w": _value(rng)} if path else records
        text = json.dumps(doc, indent=rng.choice([None, 1]))
        start = text.index("[", text.index('"data"')) if path else 0
        sizes = _element_sizes(text, start)
        limit = rng.randint(5, 60)
        over = next((k + 1 for k, size in enumerate(sizes) if size > limit), None)
        file = tmp_path / "x.json"
        file.write_text(text)
        for block in (1, 2, 7, 64):
            monkeypatch.setattr(json_records, "SCAN_BLOCK", block)
            with readers_module.StagedText(tmp_path, ".json") as opened:
                opened.write(text.encode())
                top, at = json_records._top_value(opened, "x.json")
                scan = json_records.LayoutScan(
                    opened, top=top, start=at, path=path, limits=SizeLimits(max_line_bytes=limit),
                    name="x.json",
                )  # fmt: skip
                if over is None:
                    assert scan.run().elements == len(records), (block, text)
                else:
                    with pytest.raises(FileProblem, match=f"record {over} of the JSON array"):
                        scan.run()


# --- 4. fields the contract does not declare are text, never inferred --------------------------


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_an_undeclared_field_of_changing_type_is_kept_as_text(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, fmt: str
) -> None:
    """Before: a number in record 1 and an object in record 2000 failed polars' inference
    ("Try increasing `infer_schema_length`"), rejecting the whole file."""
    records = _records(2100)
    records[0]["extra"] = 5
    records[999]["extra"] = "text"
    records[1999]["extra"] = {"o": [1, 2.5, "x"]}
    lines = "".join(json.dumps(r) + "\n" for r in records)
    data = json.dumps(records) if fmt == "json" else lines
    _, outcome = _load(tmp_path, conn, _write(tmp_path, f"d.{fmt}", data))
    assert (outcome.status, outcome.rows_curated) == ("loaded", 2100), outcome.reason
    assert outcome.unmapped == ["extra"]
    raw = dict(
        conn.execute(
            "SELECT _row_number, _unmapped FROM raw_items WHERE _row_number IN (1, 1000, 2000, 3)"
        ).fetchall()
    )
    assert {n: json.loads(u)["extra"] for n, u in raw.items()} == {
        1: "5",
        1000: "text",
        2000: '{"o":[1,2.5,"x"]}',
        3: None,
    }


def test_json_numbers_are_kept_as_delivered_text_for_the_rules(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """``1e309`` made polars reject the whole file (InvalidNumber); NaN and Infinity are no
    JSON but agencies' exporters write them: every one is a value for the rules to judge."""
    data = (
        "["
        '{"id": 1, "amount": 1e309}, {"id": 2, "amount": NaN}, {"id": 3, "amount": Infinity},'
        '{"id": 4, "amount": -0}, {"id": 5, "amount": 2.50, "day": "2026-02-30"},'
        '{"id": 6, "amount": 1E+2, "name": "caf\\u00e9 \\u0000"}'
        "]"
    )
    _, outcome = _load(tmp_path, conn, _write(tmp_path, "n.json", data))
    assert outcome.status == "loaded", outcome.reason
    assert _quarantined(conn) == [
        (1, "amount.type", "1e309"),
        (2, "amount.type", "NaN"),
        (3, "amount.type", "Infinity"),
        (5, "day.type", "2026-02-30"),
    ]
    assert _curated(conn, "id, amount, name") == [(4, 0.0, None), (6, 100.0, "café \x00")]


# --- 5. implausible row counts ----------------------------------------------------------------


def test_one_empty_record_from_a_large_file_is_rejected(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    blob = "z" * 5000
    path = _write(tmp_path, "odd.csv", f"{HEADER},blob\n,,,,{blob}\n")
    _, outcome = _load(tmp_path, conn, path)
    _rejected(
        outcome,
        "delivery.unreadable",
        "odd.csv: 5,0",
        "parsed into one record with no value in any contract column",
    )
    small = _write(tmp_path, "small.csv", f"{HEADER}\n1,,,\n")
    _, outcome = _load(tmp_path, conn, small)  # a small one-row file with a value loads
    assert outcome.status == "loaded", outcome.reason


def test_zero_records_from_a_file_holding_data_is_rejected(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parser that finds no record in data lines (a misread layout) must not make an
    empty delivery of them: the file is rejected. (polars is made to find none here.)"""
    real = readers_module._scan

    def finds_nothing(source: str, fmt: str, skip_lines: int = 0) -> pl.LazyFrame:
        return real(source, fmt, skip_lines).head(0)

    monkeypatch.setattr(readers_module, "_scan", finds_nothing)
    data = _write(tmp_path, "data.csv", f"{HEADER}\n1,a,1.5,2026-01-05\n")
    _, outcome = _load(tmp_path, conn, data)
    _rejected(outcome, "delivery.unreadable", "data.csv", "parsed into zero records")
    blank = _write(tmp_path, "blank.csv", f"{HEADER}\n\n  \n")
    _, outcome = _load(tmp_path, conn, blank)
    _rejected(outcome, "delivery.empty_file")


# --- 6. encodings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "fmt"),
    [
        ("latin-1", "csv"),
        ("cp1252", "csv"),
        ("utf-16", "csv"),
        ("latin-1", "json"),
        ("cp1252", "jsonl"),
    ],
)
def test_a_declared_encoding_is_decoded(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, encoding: str, fmt: str
) -> None:
    names = ["Café Zoë", "\u201cquoted\u201d \u20ac5" if encoding == "cp1252" else "Ærø"]
    if fmt == "csv":
        text = f"{HEADER}\n" + "".join(f"{i},{n},1.5,2026-01-05\n" for i, n in enumerate(names, 1))
    else:
        rows = [{"id": i, "name": n} for i, n in enumerate(names, 1)]
        text = (
            json.dumps(rows, ensure_ascii=False)
            if fmt == "json"
            else "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        )
    data = text.encode(encoding)
    path = _write(tmp_path, f"enc.{fmt}", data)
    _, outcome = _load(tmp_path, conn, path, encoding=encoding)
    assert outcome.status == "loaded", outcome.reason
    assert [n for _, n in _curated(conn)] == names
    assert outcome.sha256 == hashlib.sha256(data).hexdigest()  # of the bytes delivered
    # the UTF-8 copy lives in the work folder while the file is read, and no longer
    work = tmp_path / "work"
    work.mkdir()
    reading = _contract(tmp_path, encoding=encoding).reading
    facts = readers_module.inspect_file(path, reading=reading, workdir=work)
    assert [p.name.startswith(".flux-") for p in work.iterdir()] == [True]
    assert sum(c.height for c in readers_module.read_chunks(facts)) == 2
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    ("data", "encoding", "words"),
    [
        (
            f"{HEADER}\n1,Café,1.5,2026-01-05\n".encode("latin-1"),
            None,
            ["not valid UTF-8 (byte 0xe9", "declare customProperty encoding: latin-1 if the "
             "file is Latin-1"],
        ),
        (
            f"{HEADER}\n1,Café,1.5,2026-01-05\n".encode("utf-16"),
            None,
            ["UTF-16 text", "declare customProperty encoding: utf-16"],
        ),
        (
            f"{HEADER}\n1,Café,1.5,2026-01-05\n".encode("utf-16-le"),
            None,
            ["UTF-16 text without a byte-order mark", "encoding: utf-16-le"],
        ),
        (
            f"{HEADER}\n1,Café,1.5,2026-01-05\n".encode(),
            "latin-1",
            ["is UTF-8 text, but its contract declares encoding: iso8859-1"],
        ),
        (
            f"{HEADER}\n1,caf\x81,1.5,2026-01-05\n".encode("latin-1"),
            "cp1252",
            ["not valid cp1252 text", "byte 0x81 at byte offset 24"],
        ),
        (
            gzip.compress(f"{HEADER}\n1,a,1.5,2026-01-05\n".encode()),
            None,
            ["gzip-compressed data, not text", "deliver it uncompressed"],
        ),
    ],
    ids=["latin1", "utf16_bom", "utf16_le", "utf8_declared_latin1", "cp1252_hole", "gzip"],
)  # fmt: skip
def test_text_not_in_its_encoding_is_rejected_saying_what_to_do(
    tmp_path: Path,
    conn: duckdb.DuckDBPyConnection,
    data: bytes,
    encoding: str | None,
    words: list[str],
) -> None:
    path = _write(tmp_path, "t.csv", data)
    options = {"encoding": encoding} if encoding else {}
    _, outcome = _load(tmp_path, conn, path, **options)
    _rejected(outcome, "delivery.bad_encoding", *words)


# --- 7. nested values as JSON text ----------------------------------------------------------


def test_nested_parquet_values_are_stored_as_compact_json_text(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """Nested values are turned into text by polars' encoder (was: ``json.dumps`` per value,
    17 s for 74k values 16 deep), as compact as DuckDB gives a JSON file's nested values."""
    frame = pl.DataFrame(
        {
            "id": [1, 2, 3],
            "name": ["a", "b", "c"],
            "tags": [["x", "é"], None, []],
            "meta": [{"k": 1, "s": 'q"'}, {"k": None, "s": None}, None],
        }
    )
    path = _write(tmp_path, "n.parquet", b"")
    frame.write_parquet(path)
    _, outcome = _load(tmp_path, conn, path)
    assert outcome.status == "loaded", outcome.reason
    raw = conn.execute("SELECT _unmapped FROM raw_items ORDER BY _row_number").fetchall()
    assert [json.loads(u) for (u,) in raw] == [
        {"tags": '["x","é"]', "meta": '{"k":1,"s":"q\\""}'},
        {"tags": None, "meta": '{"k":null,"s":null}'},
        {"tags": "[]", "meta": None},
    ]


def test_a_bom_and_whitespace_before_a_json_document_are_no_content(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    data = codecs.BOM_UTF8 + b"\n  \n" + json.dumps(_records(2)).encode() + b"\n\n"
    _, outcome = _load(tmp_path, conn, _write(tmp_path, "bom.json", data))
    assert outcome.status == "loaded", outcome.reason
    assert _curated(conn) == [(1, "Item 1"), (2, "Item 2")]
