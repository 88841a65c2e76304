"""Real NASA, NGA and USAspending files through Dagster, read back from DuckDB.

Expectations come from plain polars on the real files, not from the validator.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines_tests.conftest import check_results, land, materialize

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
DAY = "2025-03-03"


def _db(home: Path, agency: str) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(home / "warehouse" / f"{agency}.duckdb"), read_only=True)


def _scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> int:
    row = conn.execute(sql, params or []).fetchone()
    assert row is not None
    return int(row[0])


def test_nasa_meteorites(tmp_path: Path, real_data: Path) -> None:
    source = real_data / "nasa" / "Meteorite_Landings.csv"
    land(tmp_path, "nasa", "meteorites", DAY, source)
    result = materialize(tmp_path, [("nasa", "meteorites")], DAY)
    assert result.success
    assert all(check_results(result).values()), check_results(result)

    truth = pl.read_csv(source, infer_schema=False).with_row_index("row", offset=1)
    lat = pl.col("reclat").cast(pl.Float64, strict=False)
    lon = pl.col("reclong").cast(pl.Float64, strict=False)
    beyond = truth.filter(lon.abs() > 180).get_column("row").to_list()
    null_island = truth.filter((lat == 0) & (lon == 0)).height
    future = truth.filter(pl.col("year").cast(pl.Int64, strict=False) > 2026).height
    with _db(tmp_path, "nasa") as conn:
        curated = _scalar(conn, "SELECT count(*) FROM meteorites")
        quarantined = _scalar(conn, "SELECT count(DISTINCT _row_number) FROM meteorites_quarantine")
        assert curated + quarantined == truth.height == 45716
        rows = conn.execute(
            "SELECT _row_number FROM meteorites_quarantine WHERE rule_id = 'reclong.maximum'"
        ).fetchall()
        assert [r[0] for r in rows] == beyond and len(beyond) == 1
        assert (
            _scalar(
                conn,
                "SELECT count(*) FROM meteorites_warnings "
                "WHERE rule_id = 'coordinates_not_null_island'",
            )
            == null_island
            > 1000
        )
        assert (
            _scalar(conn, "SELECT count(*) FROM meteorites_warnings WHERE rule_id = 'year.maximum'")
            == future
            >= 1
        )
        # the byte-order mark did not leak into the first column's name
        assert _scalar(conn, "SELECT count(*) FROM meteorites WHERE name = 'Aachen'") == 1
        # raw keeps every delivered row, with lineage
        assert _scalar(conn, "SELECT count(DISTINCT _file_sha256) FROM raw_meteorites") == 1
        assert _scalar(conn, "SELECT count(*) FROM raw_meteorites") == 45716


def test_nga_constituents_and_media_items(tmp_path: Path, real_data: Path) -> None:
    constituents = real_data / "nga" / "constituents.csv"
    media = real_data / "nga" / "media_items.csv"
    land(tmp_path, "nga", "constituents", DAY, constituents)
    land(tmp_path, "nga", "media_items", DAY, media)
    result = materialize(tmp_path, [("nga", "constituents"), ("nga", "media_items")], DAY)
    assert result.success
    assert all(check_results(result).values()), check_results(result)

    media_truth = pl.read_csv(media, infer_schema=False)
    multi_line = media_truth.filter(pl.col("description").str.contains("\n"))
    assert multi_line.height > 10, "the real media items have multi-line HTML descriptions"
    with _db(tmp_path, "nga") as conn:
        for table, source in (("constituents", constituents), ("media_items", media)):
            delivered = pl.read_csv(source, infer_schema=False).height
            curated = _scalar(conn, f"SELECT count(*) FROM {table}")
            quarantined = _scalar(
                conn, f"SELECT count(DISTINCT _row_number) FROM {table}_quarantine"
            )
            assert curated + quarantined == delivered, table
        # every copy of a repeated non-empty ULAN id is flagged, empty ones never
        ulan = pl.read_csv(constituents, infer_schema=False).get_column("ulanid").str.strip_chars()
        repeated = ulan.filter(ulan.is_not_null() & ulan.is_duplicated()).len()
        flagged = _scalar(
            conn, "SELECT count(*) FROM constituents_warnings WHERE rule_id = 'ulanid.unique'"
        )
        assert flagged == repeated > 0
        loaded = dict(
            conn.execute("SELECT CAST(mediaid AS VARCHAR), description FROM media_items").fetchall()
        )
    for mediaid, description in multi_line.select("mediaid", "description").iter_rows():
        assert loaded[mediaid] == description.strip()


def test_usaspending_split_by_awarding_agency(tmp_path: Path, real_data: Path) -> None:
    source = real_data / "usaspending" / "Construction_PSCs_CY17Q3.csv"
    registry = load_registry()
    by_name = {
        name: agency.id
        for agency in registry.agencies_for("contract_transactions")
        for name in agency.source_names
    }
    frame = pl.read_csv(source, infer_schema=False)
    names = set(frame.get_column("awarding_toptier_agency_name").drop_nulls().unique().to_list())
    assert names <= set(by_name), f"agencies missing from the registry: {names - set(by_name)}"
    expected: dict[str, int] = {}
    for name, part in frame.group_by("awarding_toptier_agency_name"):
        agency = by_name[str(name[0])]
        folder = tmp_path / "landing" / agency / "contract_transactions" / DAY
        folder.mkdir(parents=True)
        part.write_csv(folder / "transactions.csv")
        expected[agency] = part.height
    assert sum(expected.values()) == 3011 and len(expected) == 22

    result = materialize(tmp_path, [(a, "contract_transactions") for a in expected], DAY)
    assert result.success
    checks = check_results(result)
    assert len(checks) == 2 * len(expected) and all(checks.values()), checks
    for agency, delivered in expected.items():
        with _db(tmp_path, agency) as conn:
            curated = _scalar(conn, "SELECT count(*) FROM contract_transactions")
            quarantined = _scalar(
                conn,
                "SELECT count(DISTINCT _row_number) FROM contract_transactions_quarantine",
            )
            assert curated + quarantined == delivered, agency
    # the known DUNS defect is found: leading zeros stripped (fewer than 9 digits)
    duns = pl.col("recipient_unique_id")
    stripped = frame.filter(duns.str.contains(r"^[0-9]{1,8}$")).height
    with _db(tmp_path, "dod") as conn:
        dod_flagged = _scalar(
            conn,
            "SELECT count(*) FROM contract_transactions_warnings "
            "WHERE rule_id = 'recipient_unique_id.pattern'",
        )
    dod_stripped = frame.filter(
        (pl.col("awarding_toptier_agency_name") == "Department of Defense")
        & duns.str.contains(r"^[0-9]{1,8}$")
    ).height
    assert stripped > 0 and dod_flagged >= dod_stripped > 0
