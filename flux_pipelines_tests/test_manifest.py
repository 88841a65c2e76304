"""Delivery manifests (rows and sha256 per file): a matching manifest loads normally, and
every mismatch is a delivery-level fatal with its rule id and a reason naming agency,
dataset and file; nothing a manifest rejects reaches curated and every row is accounted for.

Loader tests use a two-column contract written to tmp_path; the Dagster tests land seeded
NASA meteorite deliveries and materialize their partitions the way a run does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.ingest.delivery import (
    PartitionResult,
    delivered_files,
    delivery_manifest,
    load_partition,
    partition_dir,
    raw_counts,
)
from flux_pipelines.ingest.manifest import (
    MANIFEST_NAMES,
    Manifest,
    ManifestInvalid,
    manifest_path,
    read_manifest,
    write_manifest,
)
from flux_pipelines.names import agency_db
from flux_pipelines_tests.conftest import (
    DAY,
    check_results,
    contract_doc,
    deliver,
    make_loader,
    materialize,
    raw_dir,
    write_contract,
)

PROPS: list[dict[str, Any]] = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {"name": "name", "logicalType": "string", "required": True},
]
# a.csv: three clean rows. b.csv: two rows, the second without its required name, so a
# normal load has one row-level quarantine and the accounting is not trivially all-curated.
A_CSV = b"id,name\n1,one\n2,two\n3,three\n"
B_CSV = b"id,name\n4,four\n5,\n"
ROWS = {"a.csv": 3, "b.csv": 2}


@pytest.fixture
def contract(tmp_path: Path) -> Contract:
    return load_contract(write_contract(tmp_path / "contracts", contract_doc(PROPS)))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A delivery folder holding a.csv and b.csv (no manifest yet)."""
    path = tmp_path / "landing" / "test-agency" / "items" / DAY.isoformat()
    path.mkdir(parents=True)
    (path / "a.csv").write_bytes(A_CSV)
    (path / "b.csv").write_bytes(B_CSV)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json(folder: Path, doc: object, name: str = MANIFEST_NAMES[0]) -> Path:
    path = folder / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def entries(**overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Correct manifest entries for a.csv and b.csv, with per-file field overrides."""
    base = {
        "a.csv": {"name": "a.csv", "rows": 3, "sha256": sha(A_CSV)},
        "b.csv": {"name": "b.csv", "rows": 2, "sha256": sha(B_CSV)},
    }
    for name, fields in overrides.items():
        base[name.replace("_", ".")] = {**base[name.replace("_", ".")], **fields}
    return list(base.values())


def load_folder(
    conn: duckdb.DuckDBPyConnection, contract: Contract, folder: Path, root: Path
) -> PartitionResult:
    """Load the folder the way the ingest asset does: its data files and its manifest."""
    loader = make_loader(conn, contract, root)
    return load_partition(loader, delivered_files(folder), delivery_manifest(folder))


def q(conn: duckdb.DuckDBPyConnection, sql: str, *params: object) -> list[tuple[Any, ...]]:
    return conn.execute(sql, list(params)).fetchall()


def per_file(conn: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    return dict(q(conn, f"SELECT _file, count(*) FROM {table} GROUP BY 1"))


def assert_nothing_lost(conn: duckdb.DuckDBPyConnection, result: PartitionResult) -> None:
    """Per file, from the deliveries log and the tables: read = curated + quarantined.

    A loaded file's quarantined rows are counted in the quarantine table; a file rejected
    whole has one quarantine row (no row number) and all its read rows count as quarantined.
    """
    curated = per_file(conn, "items")
    quarantined_rows = dict(
        q(
            conn,
            "SELECT _file, count(DISTINCT _row_number) FROM items_quarantine "
            "WHERE _row_number IS NOT NULL GROUP BY 1",
        )
    )
    logged = {
        file: (status, read, cur, quar)
        for file, status, read, cur, quar in q(
            conn,
            "SELECT file, status, rows_read, rows_curated, rows_quarantined FROM _flux_deliveries",
        )
    }
    assert set(logged) == {o.file for o in result.files}
    for outcome in result.files:
        status, read, cur, quar = logged[outcome.file]
        assert (status, read, cur, quar) == (
            outcome.status,
            outcome.rows_read,
            outcome.rows_curated,
            outcome.rows_quarantined,
        )
        assert cur == curated.get(outcome.file, 0)
        assert (read or 0) == cur + quar, outcome.file
        if status == "rejected":
            assert cur == 0 and quar == (read or 0)
        else:
            assert quar == quarantined_rows.get(outcome.file, 0)


# --- write_manifest / read_manifest --------------------------------------------------------------


def test_write_manifest_round_trips_through_read_manifest(folder: Path) -> None:
    path = write_manifest(folder, {"b.csv": 2, "a.csv": 3})
    assert path == folder / "manifest.json" and manifest_path(folder) == path
    manifest = read_manifest(path)
    assert [(e.name, e.rows, e.sha256) for e in manifest.files] == [
        ("a.csv", 3, sha(A_CSV)),
        ("b.csv", 2, sha(B_CSV)),
    ]
    assert manifest.entry("b.csv") == manifest.files[1]
    assert manifest.entry("c.csv") is None
    # what was written is the documented format, nothing more
    assert json.loads(path.read_text()) == {"files": entries()}
    # and the same document read back and re-serialised is unchanged
    assert Manifest.model_validate(manifest.model_dump()) == manifest


def test_manifest_is_never_a_data_file(folder: Path) -> None:
    write_manifest(folder, ROWS)
    write_json(folder, {"files": entries()}, name="_manifest.json")
    assert [p.name for p in delivered_files(folder)] == ["a.csv", "b.csv"]
    assert manifest_path(folder) == folder / "manifest.json"  # manifest.json wins


# --- a matching manifest ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"files": entries()}, id="as-written"),
        pytest.param(
            {"files": entries(a_csv={"sha256": sha(A_CSV).upper()})}, id="uppercase-sha256"
        ),
        pytest.param({"files": entries(), "agency": "test-agency", "sent": "x"}, id="extra-keys"),
    ],
)
@pytest.mark.parametrize("manifest_name", MANIFEST_NAMES)
def test_matching_manifest_loads_like_no_manifest(
    tmp_path: Path,
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    folder: Path,
    manifest_name: str,
    doc: dict[str, Any],
) -> None:
    with duckdb.connect(str(tmp_path / "without.duckdb")) as plain:
        baseline = load_folder(plain, contract, folder, tmp_path / "plain")
        expected_curated = q(plain, "SELECT id, name, _file FROM items ORDER BY id")
        expected_quarantine = q(plain, "SELECT _file, _row_number, rule_id FROM items_quarantine")
    write_json(folder, doc, name=manifest_name)

    result = load_folder(conn, contract, folder, tmp_path)

    assert result.errors == [] and baseline.errors == []
    assert [(o.file, o.status, o.rows_read) for o in result.files] == [
        ("a.csv", "loaded", 3),
        ("b.csv", "loaded", 2),
    ]
    assert q(conn, "SELECT id, name, _file FROM items ORDER BY id") == expected_curated
    assert [r[0] for r in expected_curated] == [1, 2, 3, 4]
    quarantine = q(conn, "SELECT _file, _row_number, rule_id FROM items_quarantine")
    assert quarantine == expected_quarantine
    assert [(f, n) for f, n, _ in quarantine] == [("b.csv", 2)]
    assert_nothing_lost(conn, result)


# --- mismatches: one file rejected whole --------------------------------------------------------

WRONG_SHA = sha(b"not the delivered bytes")
EXPECTED = {  # the quarantine row's "expected" column, per rule
    "delivery.manifest_sha256_mismatch": "the sha256 the manifest gives",
    "delivery.manifest_row_count_mismatch": "the row count the manifest gives",
    "delivery.manifest_missing_file": "every file the manifest lists",
    "delivery.manifest_unlisted_file": "only files the manifest lists",
}
MISMATCHES = [
    # id, manifest entries, rejected file, rule id, substrings of the reason, raw rows kept
    (
        "sha256",
        entries(b_csv={"sha256": WRONG_SHA}),
        "b.csv",
        "delivery.manifest_sha256_mismatch",
        [f"sha256 is {sha(B_CSV)}", f"the manifest says {WRONG_SHA}", "re-send"],
        2,
    ),
    (
        "row-count",
        entries(b_csv={"rows": 7}),
        "b.csv",
        "delivery.manifest_row_count_mismatch",
        ["2 data rows read, the manifest says 7"],
        2,
    ),
    (
        "missing-file",
        [*entries(), {"name": "c.csv", "rows": 9, "sha256": WRONG_SHA}],
        "c.csv",
        "delivery.manifest_missing_file",
        ["the manifest lists c.csv (9 rows) but it was not delivered"],
        0,
    ),
    (
        "unlisted-file",
        entries()[:1],
        "b.csv",
        "delivery.manifest_unlisted_file",
        ["b.csv is not listed in the manifest (it lists a.csv)"],
        0,
    ),
]


@pytest.mark.parametrize(
    ("doc_files", "bad_file", "rule_id", "reason_parts", "raw_kept"),
    [m[1:] for m in MISMATCHES],
    ids=[m[0] for m in MISMATCHES],
)
def test_manifest_mismatch_rejects_the_file_whole(
    tmp_path: Path,
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    folder: Path,
    doc_files: list[dict[str, Any]],
    bad_file: str,
    rule_id: str,
    reason_parts: list[str],
    raw_kept: int,
) -> None:
    write_json(folder, {"files": doc_files})
    result = load_folder(conn, contract, folder, tmp_path)

    [error] = result.errors
    assert (error.agency, error.dataset, error.file, error.rule_id) == (
        "test-agency",
        "items",
        bad_file,
        rule_id,
    )
    message = str(error)
    for part in ("agency=test-agency", "dataset=items", f"file={bad_file}", rule_id, *reason_parts):
        assert part in message
    # one quarantine row for the whole file, fatal, with the reason and what was expected
    assert q(
        conn,
        "SELECT _row_number, rule_id, severity, message, expected FROM items_quarantine "
        "WHERE _file = ?",
        bad_file,
    ) == [(None, rule_id, "fatal", error.reason, EXPECTED[rule_id])]
    # none of its rows is curated; read-whole rejections keep the delivered rows in raw
    assert per_file(conn, "items").get(bad_file, 0) == 0
    assert per_file(conn, "raw_items").get(bad_file, 0) == raw_kept
    # the delivery's other file is not affected
    assert q(conn, "SELECT id FROM items WHERE _file = 'a.csv' ORDER BY id") == [(1,), (2,), (3,)]
    assert_nothing_lost(conn, result)


def test_rows_of_a_sha256_mismatch_stay_raw_only(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract, folder: Path
) -> None:
    """The file was read whole: its raw rows are the evidence, counted as quarantined."""
    write_json(folder, {"files": entries(a_csv={"sha256": WRONG_SHA})})
    result = load_folder(conn, contract, folder, tmp_path)
    outcome = next(o for o in result.files if o.file == "a.csv")
    assert (outcome.status, outcome.rows_read, outcome.rows_curated, outcome.rows_quarantined) == (
        "rejected",
        3,
        0,
        3,
    )
    assert outcome.sha256 == sha(A_CSV)
    assert q(conn, "SELECT id FROM raw_items WHERE _file = 'a.csv' ORDER BY 1") == [
        ("1",),
        ("2",),
        ("3",),
    ]
    assert (result.rows_in, result.rows_curated, result.rows_quarantined) == (5, 1, 4)


# --- a manifest that cannot be trusted: every file rejected ---------------------------------------

GOOD_ENTRIES = entries()
MALFORMED: list[tuple[str, bytes, list[str]]] = [
    ("not-json", b'{"files": [', ["manifest.json is not readable JSON"]),
    ("not-utf8", b'{"files": "\xff"}', ["manifest.json is not readable JSON"]),
    ("a-list", json.dumps(GOOD_ENTRIES).encode(), ["does not follow the manifest format"]),
    ("no-files", b'{"rows": 5}', ["does not follow the manifest format", "files"]),
    ("empty-files", b'{"files": []}', ["files", "at least 1"]),
    (
        "bad-sha256",
        json.dumps({"files": entries(a_csv={"sha256": "abc"})}).encode(),
        ["files.0.sha256"],
    ),
    (
        "negative-rows",
        json.dumps({"files": entries(b_csv={"rows": -1})}).encode(),
        ["files.1.rows", "greater than or equal to 0"],
    ),
    (
        "unknown-entry-field",
        json.dumps({"files": entries(a_csv={"md5": "x"})}).encode(),
        ["files.0.md5", "xtra"],
    ),
    (
        "listed-twice",
        json.dumps({"files": [*GOOD_ENTRIES, GOOD_ENTRIES[0]]}).encode(),
        ["file(s) listed twice: a.csv"],
    ),
]


@pytest.mark.parametrize(
    ("data", "reason_parts"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_manifest_rejects_every_file(
    tmp_path: Path,
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    folder: Path,
    data: bytes,
    reason_parts: list[str],
) -> None:
    (folder / "manifest.json").write_bytes(data)
    with pytest.raises(ManifestInvalid):
        read_manifest(folder / "manifest.json")

    result = load_folder(conn, contract, folder, tmp_path)

    assert sorted((e.file, e.rule_id) for e in result.errors) == [
        ("a.csv", "delivery.manifest_invalid"),
        ("b.csv", "delivery.manifest_invalid"),
    ]
    for error in result.errors:
        message = str(error)
        for part in ("agency=test-agency", "dataset=items", f"file={error.file}", *reason_parts):
            assert part in message, (part, message)
    # nothing of an untrusted delivery reaches curated or raw; no file counted as read
    assert q(conn, "SELECT count(*) FROM items") == [(0,)]
    assert raw_counts(raw_dir(tmp_path, contract, DAY), conn) == {}
    assert q(conn, "SELECT _file, _row_number, rule_id FROM items_quarantine ORDER BY 1") == [
        ("a.csv", None, "delivery.manifest_invalid"),
        ("b.csv", None, "delivery.manifest_invalid"),
    ]
    assert [(o.file, o.rows_read, o.rows_quarantined) for o in result.files] == [
        ("a.csv", None, 0),
        ("b.csv", None, 0),
    ]
    assert_nothing_lost(conn, result)


def test_corrected_manifest_replaces_the_rejection(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract, folder: Path
) -> None:
    write_json(folder, {"files": entries(b_csv={"rows": 3})})
    assert [e.rule_id for e in load_folder(conn, contract, folder, tmp_path).errors] == [
        "delivery.manifest_row_count_mismatch"
    ]
    write_manifest(folder, ROWS)
    result = load_folder(conn, contract, folder, tmp_path)
    assert result.errors == []
    assert q(conn, "SELECT id FROM items ORDER BY 1") == [(1,), (2,), (3,), (4,)]
    assert q(conn, "SELECT rule_id FROM items_quarantine WHERE _row_number IS NULL") == []
    assert_nothing_lost(conn, result)


# --- through Dagster ------------------------------------------------------------------------------

BAD_DAY, GOOD_DAY = "2026-02-09", "2026-02-10"
BAD = dt.date.fromisoformat(BAD_DAY)


def _db(home: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(agency_db(home, "nasa")), read_only=True)


def _landed(home: Path, day: str) -> Path:
    return home / "landing" / "nasa" / "meteorites" / day


def test_manifest_mismatch_fails_only_its_partition(tmp_path: Path) -> None:
    planted = deliver(tmp_path, "nasa", "meteorites", GOOD_DAY, rows=200, seed=21)
    write_manifest(_landed(tmp_path, GOOD_DAY), {"meteorites.csv": 200})
    deliver(tmp_path, "nasa", "meteorites", BAD_DAY, rows=150, seed=22)
    write_manifest(_landed(tmp_path, BAD_DAY), {"meteorites.csv": 151})

    failed = materialize(tmp_path, [("nasa", "meteorites")], BAD_DAY)

    assert not failed.success
    events = [e.event_type_value for e in failed.all_events]
    assert events.count("STEP_START") == 1 and "STEP_UP_FOR_RETRY" not in events
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    data = failure.step_failure_data.user_failure_data  # type: ignore[union-attr]
    for expected in (
        "nasa/meteorites",
        BAD_DAY,
        "meteorites.csv",
        "delivery.manifest_row_count_mismatch",
        "150 data rows read, the manifest says 151",
    ):
        assert expected in data.description, expected  # type: ignore[union-attr]
    assert data.metadata["rules"].value == ["delivery.manifest_row_count_mismatch"]  # type: ignore[union-attr]
    with _db(tmp_path) as conn:
        assert q(conn, "SELECT count(*) FROM meteorites WHERE _partition_date = ?", BAD_DAY) == [
            (0,)
        ]
        assert q(
            conn,
            "SELECT file, status, rows_read, rows_curated, rows_quarantined FROM _flux_deliveries "
            "WHERE _partition_date = ?",
            BAD_DAY,
        ) == [("meteorites.csv", "rejected", 150, 0, 150)]
        assert q(
            conn,
            "SELECT rule_id, _row_number FROM meteorites_quarantine WHERE _partition_date = ?",
            BAD_DAY,
        ) == [("delivery.manifest_row_count_mismatch", None)]
        # read whole: the delivered rows stay in raw as evidence, none of them curated
        raw = partition_dir(tmp_path / "warehouse" / "nasa" / "raw" / "meteorites", BAD)
        assert raw_counts(raw, conn) == {"meteorites.csv": 150}
    assert not (tmp_path / "published" / "nasa" / "meteorites" / f"{BAD_DAY}.parquet").exists()

    # the next day, with a correct manifest, loads normally, rows accounted for
    good = materialize(tmp_path, [("nasa", "meteorites")], GOOD_DAY)
    assert good.success
    assert check_results(good)["nasa/meteorites:conservation"] is True
    with _db(tmp_path) as conn:
        assert q(conn, "SELECT count(*) FROM meteorites WHERE _partition_date = ?", GOOD_DAY) == [
            (200 - len(planted),)
        ]
        assert q(
            conn,
            "SELECT count(DISTINCT _row_number) FROM meteorites_quarantine "
            "WHERE _partition_date = ?",
            GOOD_DAY,
        ) == [(len(planted),)]
        # and the failed day is still exactly as the rejection left it
        assert q(conn, "SELECT count(*) FROM meteorites WHERE _partition_date = ?", BAD_DAY) == [
            (0,)
        ]


def test_invalid_manifest_fails_the_partition_with_its_problem(tmp_path: Path) -> None:
    deliver(tmp_path, "nasa", "meteorites", BAD_DAY, rows=50, seed=23)
    (_landed(tmp_path, BAD_DAY) / "manifest.json").write_text('{"files": [{"name": 1}]}')

    failed = materialize(tmp_path, [("nasa", "meteorites")], BAD_DAY)

    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    description = failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
    for expected in (
        "nasa/meteorites",
        "meteorites.csv",
        "delivery.manifest_invalid",
        "manifest.json does not follow the manifest format",
        "files.0.name",
    ):
        assert expected in description, expected
    with _db(tmp_path) as conn:
        assert q(conn, "SELECT count(*) FROM meteorites") == [(0,)]
        assert q(conn, "SELECT _file, rule_id, _row_number FROM meteorites_quarantine") == [
            ("meteorites.csv", "delivery.manifest_invalid", None)
        ]
        raw = partition_dir(tmp_path / "warehouse" / "nasa" / "raw" / "meteorites", BAD)
        assert raw_counts(raw, conn) == {}
