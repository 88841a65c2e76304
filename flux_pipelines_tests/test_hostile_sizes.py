"""Hostile sizes (issue 13, item 7): memory is bounded per record and per field.

Before: one 1 GB field drove ``flux validate`` to 9.5 GB RSS (14.9 GB in the issue's run) and
the file was accepted; a 35 KB Parquet file holding a 1 GB value did the same. Now a
streaming pass over the bytes (``readers.bound_sizes``) rejects such a file whole, before
any parser holds the value, with ``delivery.line_too_long`` / ``delivery.field_too_long``
naming the file, the record, the size found and the limit. Also here: the rule catalogue is
the one source of every ``delivery.*`` and fixed row rule, and a rejected file holds no
file descriptor once the loader moves on.

Every test reads real files through the real readers, loader, CLI or Dagster step; small
limits (``SizeLimits``) keep the files small where the size itself does not matter.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import flux_pipelines.ingest.delivery as delivery_module
import flux_pipelines.ingest.readers as readers_module
from flux_pipelines.cli.main import app
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import (
    DEFAULT_MAX_FIELD_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    DELIVERY_RULES,
    FIXED_ROW_RULES,
    MAX_FIELD_BYTES_ENV,
    MAX_LINE_BYTES_ENV,
    SHORT_ROW_RULE,
    Contract,
    SizeLimits,
    parse_size,
)
from flux_pipelines.contracts.page import rule_catalogue_markdown
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.ingest.confine import LANDING_RULES
from flux_pipelines.ingest.delivery import PartitionLoader, PartitionResult, load_partition
from flux_pipelines.ingest.readers import inspect_file, read_chunks
from flux_pipelines.ingest.scanning import FileProblem, RecordScan
from flux_pipelines.names import agency_db
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import (
    DAY,
    contract_doc,
    deliver,
    ingest_assets,
    ingest_keys,
    materialize,
    materialize_grouped,
    write_contract,
)

runner = CliRunner()
KiB, MiB = 1 << 10, 1 << 20
SMALL = SizeLimits(max_line_bytes=64 * KiB, max_field_bytes=16 * KiB)
ITEMS = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {"name": "name", "logicalType": "string"},
    {"name": "note", "logicalType": "string"},
]
HEADER = "id,name,note\n"


# --- helpers -----------------------------------------------------------------------------------


def _contract(tmp_path: Path) -> Contract:
    return load_contract(write_contract(tmp_path / "contracts", contract_doc(ITEMS)))


def _landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing" / "test-agency" / "items" / DAY.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = _landing(tmp_path) / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _load(
    tmp_path: Path, files: list[Path], limits: SizeLimits | None = SMALL
) -> tuple[PartitionResult, duckdb.DuckDBPyConnection]:
    conn = duckdb.connect(str(tmp_path / "a.duckdb"))
    loader = PartitionLoader(
        conn,
        agency="test-agency",
        contract=_contract(tmp_path),
        day=DAY,
        run_id="run-1",
        raw_root=tmp_path / "raw" / "items",
        limits=limits,
    )
    return load_partition(loader, files), conn


def _rejection(tmp_path: Path, path: Path, limits: SizeLimits = SMALL) -> FileProblem:
    with pytest.raises(FileProblem) as rejected:
        facts = inspect_file(path, limits)
        for _ in read_chunks(facts):
            pass
    return rejected.value


def _numbers(reason: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", reason)]


# --- 1. the streaming pass is exact --------------------------------------------------------------


def _reference(data: bytes, limits: SizeLimits, eol: int, csv: bool) -> tuple[Any, ...] | None:
    """Records and fields byte by byte: the first over a limit (a field before its record)."""
    parity, record_start, field_start, line, record_line = 0, 0, 0, 1, 1
    fields: list[int] = []
    records: list[tuple[int, int, list[int]]] = []
    for i, byte in enumerate(data):
        if csv and byte == ord('"'):
            parity ^= 1
        if parity == 0 and csv and byte == ord(","):
            fields.append(i - field_start)
            field_start = i + 1
        if parity == 0 and byte == eol:
            fields.append(i - field_start)
            records.append((record_line, i - record_start, fields))
            fields, record_start, field_start = [], i + 1, i + 1
        if byte == eol:
            line += 1
            if parity == 0:
                record_line = line
    if record_start < len(data):
        fields.append(len(data) - field_start)
        records.append((record_line, len(data) - record_start, fields))
    for index, (start_line, length, sizes) in enumerate(records):
        for position, size in enumerate(sizes if csv else ()):
            if size > limits.max_field_bytes:
                return ("delivery.field_too_long", index, start_line, position, size)
        if length > limits.max_line_bytes:
            return ("delivery.line_too_long", index, start_line, None, length)
    return None


def test_the_block_scan_agrees_with_a_byte_by_byte_reading() -> None:
    """Quotes, doubled quotes, LF / CR line ends, records and fields cut anywhere between
    blocks: the vectorised scan finds the same first oversize record or field, on the same
    record, line and field, of the same size, as reading byte by byte. Where the scan stops
    early (it never reads a record to its end once it is over the limit), its size is a
    lower bound over the limit and may name the record before its field passes its own."""
    rng = random.Random(13)
    pieces = [b"a", b"a", b"a", b",", b"\n", b'"', b"bb", b"\r"]
    for _ in range(3000):
        csv = rng.random() < 0.8
        eol = rng.choice([10, 10, 13])
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        max_field = rng.randint(1, 8)
        limits = SizeLimits(max_line_bytes=rng.randint(max_field, 20), max_field_bytes=max_field)
        expected = _reference(data, limits, eol, csv)
        scan, found, offset = RecordScan(limits, eol=eol, csv=csv), None, 0
        while offset < len(data) and found is None:
            size = rng.choice([1, 2, 3, 5, 8, 64])
            found = scan.feed(data[offset : offset + size])
            offset += size
        case = f"{data!r} csv={csv} eol={eol} {limits}"
        assert (found is None) == (expected is None), case
        if found is None or expected is None:
            continue
        rule, record, line, position, size = expected
        if not found.complete and found.rule_id != rule:  # stopped at the record limit first
            assert (found.rule_id, rule, found.record) == (
                "delivery.line_too_long",
                "delivery.field_too_long",
                record,
            ), case
            continue
        assert (found.rule_id, found.record, found.line, found.field) == (
            rule,
            record,
            line,
            position,
        ), case
        limit = limits.max_field_bytes if position is not None else limits.max_line_bytes
        assert found.size == size if found.complete else found.size > limit, case


# --- 2. CSV -----------------------------------------------------------------------------------


def test_a_field_over_the_limit_rejects_the_file_unparsed_and_the_others_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reason names the file, the field, its record and line, the size and the limit;
    nothing of the file is parsed (polars is never asked to read it), raw or curated; the
    delivery's other file loads."""
    big = _write(tmp_path, "big.csv", HEADER + "1,a,x\n2," + "b" * (100 * KiB) + ",y\n3,c,z\n")
    good = _write(tmp_path, "good.csv", HEADER + "4,d,w\n")
    real_scan = delivery_module.read_chunks

    def read_chunks_not_for_big(facts: Any, chunk_rows: int = 0) -> Any:
        assert facts.path.name != "big.csv", "the oversize file was handed to the parser"
        return real_scan(facts, chunk_rows)

    monkeypatch.setattr(delivery_module, "read_chunks", read_chunks_not_for_big)
    result, conn = _load(tmp_path, [big, good])
    outcomes = {o.file: o for o in result.files}
    assert outcomes["big.csv"].rule_id == "delivery.field_too_long"
    reason = outcomes["big.csv"].reason or ""
    assert reason.startswith("big.csv: field 2 (name) of record 2 (from line 3) is ")
    assert f"is {100 * KiB:,} bytes, more than the limit of {16 * KiB:,} bytes per" in reason
    assert MAX_FIELD_BYTES_ENV in reason
    assert outcomes["good.csv"].status == "loaded"
    assert conn.execute("SELECT id FROM items").fetchall() == [(4,)]
    expected = DELIVERY_RULES["delivery.field_too_long"][1]
    assert conn.execute(
        "SELECT rule_id, expected FROM items_quarantine WHERE _file = 'big.csv'"
    ).fetchall() == [("delivery.field_too_long", expected)]
    raw = pl.read_parquet(tmp_path / "raw" / "items" / "*" / "*.parquet")
    assert set(raw.get_column("_file")) == {"good.csv"}


def test_exactly_the_limit_loads_one_byte_more_is_rejected(tmp_path: Path) -> None:
    limits = SizeLimits(max_line_bytes=4 * KiB, max_field_bytes=KiB)
    at = _write(tmp_path, "at.csv", HEADER + "1," + "a" * KiB + ",x\n")
    facts = inspect_file(at, limits)
    assert sum(c.height for c in read_chunks(facts)) == 1
    over = _write(tmp_path, "over.csv", HEADER + "1," + "a" * (KiB + 1) + ",x\n")
    problem = _rejection(tmp_path, over, limits)
    assert problem.rule_id == "delivery.field_too_long"
    assert f"is {KiB + 1:,} bytes, more than the limit of {KiB:,}" in problem.reason


def test_a_quoted_field_of_many_short_lines_is_one_field(tmp_path: Path) -> None:
    """Bounding physical lines is not enough: a quoted value with embedded newlines is one
    field however short its lines are, and it is measured whole (quotes included)."""
    value = "line of text\n" * 2000  # 26 KB in 13-byte lines
    path = _write(tmp_path, "quoted.csv", f'{HEADER}1,a,x\n2,"{value}",y\n3,"ok, ""fine""",z\n')
    problem = _rejection(tmp_path, path)
    assert problem.rule_id == "delivery.field_too_long"
    assert "field 2 (name) of record 2 (from line 3)" in problem.reason
    # the same value under the limit loads whole, commas and doubled quotes inside quotes
    # counted as text, not as separators
    ok = _write(tmp_path, "ok.csv", f'{HEADER}1,"{"a,b" * 100}",x\n2,"say ""hi""",y\n')
    facts = inspect_file(ok, SMALL)
    assert sum(c.height for c in read_chunks(facts)) == 2


def test_a_record_of_many_small_fields_over_the_record_limit(tmp_path: Path) -> None:
    limits = SizeLimits(max_line_bytes=8 * KiB, max_field_bytes=KiB)
    wide = ",".join(["x" * 100] * 100)  # 100 fields of 100 bytes: 10 KB, each field fine
    path = _write(tmp_path, "wide.csv", f"{HEADER}1,a,x\n2,b,{wide}\n")
    problem = _rejection(tmp_path, path, limits)
    assert problem.rule_id == "delivery.line_too_long"
    assert problem.reason.startswith("wide.csv: record 2 (from line 3) is ")
    assert f"limit of {8 * KiB:,} bytes per record" in problem.reason
    assert MAX_LINE_BYTES_ENV in problem.reason


@pytest.mark.parametrize("eol", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_windows_and_classic_mac_line_ends_count_records_not_the_file(
    tmp_path: Path, eol: str
) -> None:
    """Treasury's tas_list.csv ends lines with CR only: read as '\\n' lines it is one 3.5 MB
    line; its records are what is bounded."""
    rows = "".join(f"{i},name {i},note{eol}" for i in range(1, 20_000))
    path = _write(tmp_path, "eol.csv", HEADER.replace("\n", eol) + rows)
    assert path.stat().st_size > SMALL.max_line_bytes
    facts = inspect_file(path, SMALL)
    assert sum(c.height for c in read_chunks(facts)) == 19_999
    big = _write(tmp_path, "big.csv", HEADER.replace("\n", eol) + f"1,{'a' * 20_000},x{eol}")
    problem = _rejection(tmp_path, big)
    assert (problem.rule_id, "record 1 (from line 2)" in problem.reason) == (
        "delivery.field_too_long",
        True,
    )


def test_an_unclosed_quote_in_a_huge_file_is_rejected_after_one_block(tmp_path: Path) -> None:
    """A 50 GB sparse tail after a quote that never closes: the rest of the file is one
    field, rejected once it passes the limit (a block or two read), not read to its end."""
    path = _write(tmp_path, "open.csv", HEADER + '1,"never closed,x\n2,b,y\n')
    with path.open("r+b") as handle:
        handle.truncate(50 << 30)
    started = time.monotonic()
    problem = _rejection(tmp_path, path, SizeLimits())
    assert problem.rule_id == "delivery.field_too_long"
    assert "of record 1 (from line 2) is at least" in problem.reason
    assert time.monotonic() - started < 10


# --- 3. JSON Lines, JSON, Parquet -----------------------------------------------------------------


def test_jsonl_a_line_is_a_record_and_values_are_checked_as_read(tmp_path: Path) -> None:
    long_line = _write(
        tmp_path, "l.jsonl", '{"id": 1, "name": "a"}\n{"id": 2, "name": "' + "b" * 70_000 + '"}\n'
    )
    problem = _rejection(tmp_path, long_line)
    assert problem.rule_id == "delivery.line_too_long"
    assert problem.reason.startswith("l.jsonl: line 2 is ")
    # under the record limit, over the field limit: rejected on the value as read, by name
    value = _write(
        tmp_path, "v.jsonl", '{"id": 1, "name": "a"}\n{"id": 2, "note": "' + "c" * 20_000 + '"}\n'
    )
    problem = _rejection(tmp_path, value)
    assert problem.rule_id == "delivery.field_too_long"
    assert "field note of record 2 is 20,000 bytes" in problem.reason
    # a nested value counts as its JSON text
    nested = _write(
        tmp_path, "n.jsonl", '{"id": 1, "note": ["' + '", "'.join(["x" * 50] * 400) + '"]}\n'
    )
    assert _rejection(tmp_path, nested).rule_id == "delivery.field_too_long"


def test_json_records_are_bounded_per_element_before_they_are_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """polars parsed a .json document whole (217 MB took 1.9 GB): the array is now streamed
    and each element is one record, measured before it is parsed."""
    rows = [{"id": i, "name": f"name {i}"} for i in range(5000)]
    path = _write(tmp_path, "big.json", json.dumps(rows))
    assert path.stat().st_size > SMALL.max_line_bytes
    monkeypatch.setattr(pl, "read_json", lambda *a, **k: pytest.fail("parsed whole"))
    assert sum(c.height for c in read_chunks(inspect_file(path, SMALL))) == 5000
    one = _write(tmp_path, "one.json", json.dumps([{"id": 1}, {"id": 2, "name": "n" * 70_000}]))
    problem = _rejection(tmp_path, one)
    assert problem.rule_id == "delivery.line_too_long"
    assert problem.reason.startswith("one.json: record 2 of the JSON array (from line 1) is ")
    small = _write(tmp_path, "small.json", json.dumps([{"id": 1, "name": "n" * 20_000}]))
    assert _rejection(tmp_path, small).rule_id == "delivery.field_too_long"


def test_a_parquet_bomb_is_rejected_from_its_page_headers_undecoded(tmp_path: Path) -> None:
    """35 KB of Parquet decompressed to a 1 GB value (9.4 GB RSS). The footer and the page
    headers say how large a page decompresses; the page is never read."""
    table = pa.table({"id": ["1", "2"], "name": ["a", "z" * (64 * MiB)]})
    path = _landing(tmp_path) / "bomb.parquet"
    pq.write_table(table, path, compression="zstd")
    assert path.stat().st_size < 64 * KiB
    started = time.monotonic()
    problem = _rejection(tmp_path, path, SizeLimits())
    assert problem.rule_id == "delivery.field_too_long"
    assert problem.reason.startswith("bomb.parquet: column name of row group 1: a page holds")
    assert "without decompressing it" in problem.reason
    assert time.monotonic() - started < 5


def test_parquet_values_and_rows_are_checked_as_read(tmp_path: Path) -> None:
    """A big value among enough small ones passes the page check (its page's average is
    under the limit); the value as read is then rejected, naming column and row."""
    names = ["a"] * 200 + ["z" * 20_000] + ["b"] * 10
    path = _landing(tmp_path) / "mixed.parquet"
    pl.DataFrame({"id": [str(i) for i in range(1, 212)], "name": names}).write_parquet(path)
    problem = _rejection(
        tmp_path, path, SizeLimits(max_line_bytes=64 * KiB, max_field_bytes=16 * KiB)
    )
    assert problem.rule_id == "delivery.field_too_long"
    assert "field name of row 201 is 20,000 bytes" in problem.reason
    wide = _landing(tmp_path) / "wide.parquet"
    pl.DataFrame({"id": ["1"], "name": ["n" * 10_000], "note": ["m" * 10_000]}).write_parquet(wide)
    problem = _rejection(
        tmp_path, wide, SizeLimits(max_line_bytes=16 * KiB, max_field_bytes=16 * KiB)
    )
    assert problem.rule_id == "delivery.line_too_long"
    assert "row 1 is 20,001 bytes as text" in problem.reason


def test_ordinary_parquet_from_every_writer_passes(tmp_path: Path) -> None:
    """DuckDB writes one page per column and row group (32 MB pages here), pyarrow and
    polars ~1 MB pages: none is mistaken for a bomb."""
    duck = _landing(tmp_path) / "duck.parquet"
    duckdb.sql(
        "COPY (SELECT i::VARCHAR AS id, repeat(md5(i::VARCHAR), 8) AS name FROM range(200000) "
        f"t(i)) TO '{duck}' (FORMAT parquet)"
    )
    frame = pl.read_parquet(duck)
    frame.write_parquet(_landing(tmp_path) / "polars.parquet")
    pq.write_table(frame.to_arrow(), _landing(tmp_path) / "pyarrow.parquet")
    limits = SizeLimits(max_line_bytes=4 * KiB, max_field_bytes=KiB)  # values are 256 bytes
    for name in ("duck.parquet", "polars.parquet", "pyarrow.parquet"):
        facts = inspect_file(_landing(tmp_path) / name, limits)
        assert sum(c.height for c in read_chunks(facts)) == 200_000, name


# --- 4. configuration: one place for the defaults ----------------------------------------------


def test_limits_come_from_the_setting_else_the_environment_else_the_default() -> None:
    assert SizeLimits.resolve(environ={}) == SizeLimits(
        max_line_bytes=DEFAULT_MAX_LINE_BYTES, max_field_bytes=DEFAULT_MAX_FIELD_BYTES
    )
    assert 8 * MiB == DEFAULT_MAX_LINE_BYTES
    assert MiB == DEFAULT_MAX_FIELD_BYTES
    env = {MAX_LINE_BYTES_ENV: "16MiB", MAX_FIELD_BYTES_ENV: "2097152"}
    assert SizeLimits.resolve(environ=env) == SizeLimits(
        max_line_bytes=16 * MiB, max_field_bytes=2 * MiB
    )
    assert SizeLimits.resolve(max_field_bytes=5, environ=env).max_field_bytes == 5
    assert [parse_size(t, setting="x") for t in ("8 MB", "8m", "1KiB", "3 GiB")] == [
        8 * MiB,
        8 * MiB,
        KiB,
        3 << 30,
    ]
    with pytest.raises(ConfigurationError, match=f"{MAX_FIELD_BYTES_ENV}='lots' is not a size"):
        SizeLimits.resolve(environ={MAX_FIELD_BYTES_ENV: "lots"})
    with pytest.raises(ConfigurationError, match="must be a positive number of bytes"):
        SizeLimits.resolve(max_line_bytes=0)
    warehouse = FluxWarehouse(home="/nowhere", max_line_bytes=MiB)
    assert warehouse.size_limits() == SizeLimits(max_line_bytes=MiB)


def test_the_loader_uses_the_environment_when_given_no_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "a.csv", HEADER + "1," + "a" * 5000 + ",x\n")
    monkeypatch.setenv(MAX_FIELD_BYTES_ENV, "4KiB")
    result, _ = _load(tmp_path, [path], limits=None)
    assert [o.rule_id for o in result.files] == ["delivery.field_too_long"]
    monkeypatch.setenv(MAX_FIELD_BYTES_ENV, "half a meg")
    (tmp_path / "again").mkdir()
    with pytest.raises(ConfigurationError):  # before any file is read, never a default
        _load(tmp_path / "again", [path], limits=None)


def test_flux_validate_rejects_with_exit_2_and_a_bad_setting_is_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "id,name,nametype,recclass,mass (g),fall,year,reclat,reclong\n"
        f"1,{'A' * 5000},Valid,L5,21,Fell,1880,50.775,6.08333\n"
    )
    args = ["validate", str(path), "--dataset", "meteorites", "--day", "2026-01-05"]
    result = runner.invoke(app, args, env={MAX_FIELD_BYTES_ENV: "4096"})
    assert result.exit_code == 2, result.output
    assert "delivery.field_too_long" in result.output
    assert "field 2 (name) of record 1 (from line 2) is 5,000 bytes" in result.output
    result = runner.invoke(app, args, env={MAX_FIELD_BYTES_ENV: "big"})
    assert result.exit_code == 2, result.output
    assert f"{MAX_FIELD_BYTES_ENV}='big' is not a size" in result.output
    assert runner.invoke(app, args).exit_code == 1  # the default: the row is quarantined


def test_flux_validate_on_a_64_mib_field_stays_small(tmp_path: Path) -> None:
    """Measured as the issue did, in a fresh process (VmHWM): before, a 64 MiB field took
    919 MB and a 1 GiB one 9.5 GB; now the file is rejected at ~220 MB whatever the field."""
    path = tmp_path / "big.csv"
    with path.open("wb") as handle:
        handle.write(b"id,name,nametype,recclass,mass (g),fall,year,reclat,reclong\n1,")
        for _ in range(64):
            handle.write(b"a" * MiB)
        handle.write(b",Valid,L5,21,Fell,1880,50.775,6.08333\n")
    script = (
        "import sys\n"
        "from flux_pipelines.cli.main import app\n"
        "try:\n"
        "    app(sys.argv[1:])\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print('CODE', code, 'PEAK_KB', peak.split()[1])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, "validate", str(path), "--dataset", "meteorites",
         "--day", "2026-01-05"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLUX_MAX_")},
    )  # fmt: skip
    code, peak_kb = re.search(r"CODE (\d+) PEAK_KB (\d+)", run.stdout).groups()  # type: ignore[union-attr]
    assert code == "2", run.stdout + run.stderr
    assert "delivery.field_too_long" in run.stdout
    assert int(peak_kb) < 450 * 1024, f"peak RSS {int(peak_kb) // 1024} MB"


def test_the_ingest_step_applies_the_environment_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Dagster, as a sensor's run loads: the oversize file is rejected with its rule
    in the deliveries log, the good file of the delivery loads."""
    day = "2026-02-02"
    deliver(tmp_path, "nga", "media_items", day, rows=20, seed=3)
    folder = tmp_path / "landing" / "nga" / "media_items" / day
    rows = pl.read_csv(folder / "media_items.csv", infer_schema=False)
    big = rows.head(1).with_columns(pl.lit("x" * 70_000).alias(rows.columns[1]))
    big.write_csv(folder / "big.csv")
    monkeypatch.setenv(MAX_FIELD_BYTES_ENV, "64KiB")
    result = materialize(tmp_path, [("nga", "media_items")], day)
    assert not result.success
    with duckdb.connect(str(agency_db(tmp_path, "nga")), read_only=True) as conn:
        log = dict(conn.execute("SELECT file, rule_id FROM _flux_deliveries").fetchall())
    assert log == {"big.csv": "delivery.field_too_long", "media_items.csv": None}


def test_the_ingest_step_applies_the_resource_limits(tmp_path: Path) -> None:
    day = "2026-02-02"
    deliver(tmp_path, "nga", "media_items", day, rows=5, seed=3)
    folder = tmp_path / "landing" / "nga" / "media_items" / day
    header = (folder / "media_items.csv").read_text().splitlines()[0]
    columns = header.split(",")
    (folder / "big.csv").write_text(header + "\n" + ",".join(["z" * 70_000] * len(columns)) + "\n")
    pairs = [("nga", "media_items")]
    materialize_grouped(
        ingest_assets(pairs),
        ingest_keys(pairs),
        partition_key=day,
        resources={"warehouse": FluxWarehouse(home=str(tmp_path), max_field_bytes=64 * KiB)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    with duckdb.connect(str(agency_db(tmp_path, "nga")), read_only=True) as conn:
        log = dict(conn.execute("SELECT file, rule_id FROM _flux_deliveries").fetchall())
    assert log["big.csv"] == "delivery.field_too_long"


# --- 5. a rejected file holds no descriptor ------------------------------------------------------

RENAMED = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {
        "name": "kind",
        "logicalType": "string",
        "customProperties": [{"property": "renamedFrom", "value": "category"}],
    },
]


def _open_fds() -> dict[str, str]:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed meanwhile
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_files_rejected_after_they_were_opened_leave_no_descriptor(tmp_path: Path) -> None:
    """Before: a file rejected after ``inspect_file`` opened it (a column under its old and
    new name: delivery.duplicate_columns) was never closed, and its hashing pass went on:
    of five 18 MB files rejected so, three were still open when the load returned. Here the
    hashing thread is still busy when the files are rejected (as with a file that hashes
    slower than it is checked): each rejected file must still be let go of before the
    load returns."""
    contract = load_contract(write_contract(tmp_path / "contracts", contract_doc(RENAMED)))
    folder = _landing(tmp_path)
    files = []
    for i in range(5):
        path = folder / f"both{i}.csv"
        path.write_text("id,category,kind\n" + "1,a,b\n" * 20_000)
        files.append(path)
    conn = duckdb.connect(str(tmp_path / "a.duckdb"))

    def load(run: str) -> PartitionResult:
        loader = PartitionLoader(
            conn, agency="test-agency", contract=contract, day=DAY, run_id=run,
            raw_root=tmp_path / "raw" / "items",
        )  # fmt: skip
        return load_partition(loader, files)

    load("warm-up")  # the runtimes' own descriptors (DuckDB, polars) open once
    before = _open_fds()
    busy = threading.Event()
    readers_module._HASHER.submit(busy.wait, 10)  # the hashing thread is still at work
    threading.Timer(0.3, busy.set).start()
    result = load("run-2")
    after = _open_fds()
    conn.close()
    assert [e.rule_id for e in result.errors] == ["delivery.duplicate_columns"] * 5
    leaked = {fd: target for fd, target in after.items() if before.get(fd) != target}
    assert not [t for t in leaked.values() if str(folder) in t], leaked
    assert len(after) <= len(before), leaked


# --- 6. one rule catalogue ------------------------------------------------------------------------


def test_every_delivery_rule_the_code_raises_is_in_the_one_catalogue() -> None:
    """The confinement rules, the size rules and row.short were missing from the catalogue
    the contract page and agency reports show; ``confine.LANDING_RULES`` is now its part."""
    source = Path(delivery_module.__file__).parents[1]
    raised = set()
    for path in source.rglob("*.py"):
        text = path.read_text()
        raised |= set(re.findall(r"\"(delivery\.[a-z_]+)\"", text))
        if "delivery.outside_{" in text:
            raised |= {"delivery.outside_landing", "delivery.outside_outbox"}
    raised.discard("delivery.rejected")  # a fallback label, never a rule a check raises
    assert raised <= set(DELIVERY_RULES), sorted(raised - set(DELIVERY_RULES))
    assert {k: DELIVERY_RULES[k] for k in LANDING_RULES} == LANDING_RULES
    assert {"delivery.line_too_long", "delivery.field_too_long"} <= set(DELIVERY_RULES)
    assert set(FIXED_ROW_RULES) == {SHORT_ROW_RULE}


def test_the_catalogue_lists_fixed_row_rules_with_the_row_rules() -> None:
    contract = load_registry().latest("meteorites")
    entries = {e.id: e for e in contract.catalogue()}
    short = entries[SHORT_ROW_RULE]
    assert (short.scope, short.severity, short.category) == ("row", "fatal", "existence")
    assert short.message == FIXED_ROW_RULES[SHORT_ROW_RULE][0]
    for rule_id in ("delivery.symlink", "delivery.changed_after_marker", "delivery.line_too_long"):
        assert entries[rule_id].scope == "delivery"
    scopes = [e.scope for e in contract.catalogue()]
    assert scopes == sorted(scopes, key=["row", "cross-dataset", "delivery"].index)
    page = rule_catalogue_markdown(contract)
    assert "| `row.short` | row | fatal | existence |" in page
    assert "| `delivery.field_too_long` | delivery | fatal |" in page
    with pytest.raises(KeyError):  # fixed rules are always fatal: no agency override
        contract.with_severities({SHORT_ROW_RULE: "warning"})


def test_a_landing_rejection_carries_the_catalogues_expected_text(tmp_path: Path) -> None:
    """The agency's error report line for a file rejected by confinement said 'an acceptable
    file' when the rule was missing from the catalogue it reads."""
    target = tmp_path / "elsewhere.csv"
    target.write_text(HEADER + "1,a,x\n")
    link = _landing(tmp_path) / "link.csv"
    link.symlink_to(target)
    result, conn = _load(tmp_path, [link])
    assert [o.rule_id for o in result.files] == ["delivery.symlink"]
    assert conn.execute("SELECT expected FROM items_quarantine").fetchall() == [
        (DELIVERY_RULES["delivery.symlink"][1],)
    ]


def test_an_ordinary_delivery_is_untouched_by_the_default_limits(tmp_path: Path) -> None:
    path = _write(tmp_path, "ok.csv", HEADER + "".join(f"{i},n{i},x\n" for i in range(1, 501)))
    result, conn = _load(tmp_path, [path], limits=None)
    assert (result.rows_in, result.rows_curated, result.errors) == (500, 500, [])
    assert conn.execute("SELECT count(*) FROM items").fetchall() == [(500,)]
