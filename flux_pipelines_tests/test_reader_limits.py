"""The JSON nesting pass (``scanning.NestingScan``) against a byte-by-byte reference, and
the rejections it and the Parquet column names give through ``inspect_file``.

The pass is vectorised over blocks, carrying string, escape and depth state between them;
a bracket inside a string, a quote escaped by a backslash run cut by a block boundary or
a JSON Lines line left open are where it could go wrong, so random texts of exactly those
bytes, cut at random places, must give the reference's verdict.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flux_pipelines.ingest.readers import inspect_file
from flux_pipelines.ingest.scanning import MAX_JSON_DEPTH, FileProblem, NestingScan

ALPHABET = b'[]{}"\\\\\n a'  # backslashes twice: runs of them are what escapes get wrong


def reference(data: bytes, limit: int, *, lines: bool) -> int | None:
    """The offset of the first bracket opening a level over ``limit``, byte by byte."""
    inside, escaped, depth = False, False, 0
    for offset, byte in enumerate(data):
        char = chr(byte)
        if lines and char == "\n":  # every line is a document of its own
            inside, escaped, depth = False, False, 0
            continue
        if escaped:
            escaped = False
            if char in '"\\':
                continue
        elif char == "\\":
            escaped = True
            continue
        if char == '"':
            inside = not inside
        elif not inside and char in "[{":
            depth += 1
            if depth > limit:
                return offset
        elif not inside and char in "]}":
            depth -= 1
    return None


def scanned(data: bytes, limit: int, *, lines: bool, cuts: list[int]) -> int | None:
    """The offset ``NestingScan`` reports, fed ``data`` in blocks cut at ``cuts``."""
    scan = NestingScan(limit, lines=lines)
    bounds = [0, *sorted(cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        if end > start:
            found = scan.feed(data[start:end])
            if found is not None:
                return found.offset
    return None


@pytest.mark.parametrize("lines", [False, True], ids=["json", "jsonl"])
def test_nesting_scan_matches_a_byte_by_byte_reference(lines: bool) -> None:
    rng = random.Random(13)
    for _ in range(3000):
        data = bytes(rng.choices(ALPHABET, k=rng.randint(1, 120)))
        limit = rng.randint(1, 6)
        cuts = rng.sample(range(1, len(data) + 1), k=min(len(data), rng.randint(0, 8)))
        expected = reference(data, limit, lines=lines)
        assert scanned(data, limit, lines=lines, cuts=cuts) == expected, (data, limit, cuts)


def test_valid_json_at_the_limit_passes_and_one_level_more_is_found() -> None:
    value: object = 'a [string] with " and \\ and {braces}'
    for _ in range(MAX_JSON_DEPTH - 2):
        value = [value]
    text = json.dumps([{"id": 1, "v": value}]).encode()  # array, object, then the lists
    assert NestingScan(lines=False).feed(text) is None
    deeper = json.dumps([{"id": 1, "v": [value]}]).encode()
    found = NestingScan(lines=False).feed(deeper)
    assert found is not None
    assert (found.depth, found.limit, found.complete) == (MAX_JSON_DEPTH + 1, MAX_JSON_DEPTH, True)


def test_json_lines_report_the_line_and_its_depth() -> None:
    text = b'{"a": 1}\n{"a": "[[[[[[[["}\n{"a": ' + b"[" * 40 + b"]" * 40 + b"}\n"
    found = NestingScan(lines=True).feed(text)
    assert found is not None
    assert (found.line, found.depth, found.complete) == (3, 41, True)


def _landed(tmp_path: Path, name: str, data: bytes) -> Path:
    """``data`` delivered as ``name`` in a landing day folder (readers open only those)."""
    folder = tmp_path / "landing" / "test-agency" / "items" / "2024-01-01"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def _rejected(path: Path) -> FileProblem:
    with pytest.raises(FileProblem) as rejected:
        inspect_file(path).abandon()
    return rejected.value


@pytest.mark.parametrize(
    ("name", "data", "where"),
    [
        ("deep.json", b'[{"id": 1, "v": ' + b"[" * 300 + b"]" * 300 + b"}]", "document (line 1)"),
        (
            "deep.jsonl",
            b'{"id": 1}\n{"id": 2, "v": ' + b"[" * 300 + b"]" * 300 + b"}\n",
            "line 2",
        ),
    ],
)
def test_a_document_nested_too_deep_is_unreadable_before_it_is_parsed(
    tmp_path: Path, name: str, data: bytes, where: str
) -> None:
    problem = _rejected(_landed(tmp_path, name, data))
    assert problem.rule_id == "delivery.unreadable"
    depth = 302 if name.endswith(".json") else 301
    assert where in problem.reason and f"{depth} levels deep" in problem.reason
    assert f"limit of {MAX_JSON_DEPTH}" in problem.reason


def test_parquet_columns_named_twice_are_duplicate_columns(tmp_path: Path) -> None:
    path = _landed(tmp_path, "twins.parquet", b"")
    table = pa.Table.from_arrays(
        [pa.array([1]), pa.array(["a"]), pa.array(["b"]), pa.array(["c"])],
        names=["id", "Name", "name", "kind"],  # the same name once normalised
    )
    pq.write_table(table, path)
    problem = _rejected(path)
    assert problem.rule_id == "delivery.duplicate_columns"
    assert "['name']" in problem.reason
