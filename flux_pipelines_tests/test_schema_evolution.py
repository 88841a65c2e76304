"""Contract v1 -> v2 (added optional column, renamed column, tightened rule) through Dagster.

meteorites 2.0.0 is in force from 2026-01-09: each day is validated against the version in
force for it, older days (even backfilled later) keep version 1's rules, and every day's
rows are stored under version 2's column names.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.names import agency_db
from flux_pipelines_tests.conftest import check_results, materialize

V1_HEADER = (
    "id,name,nametype,recclass,mass (g),fall,year,reclat,reclong,geolocation,states,counties"
)
V1_ROWS = [
    "1,Aachen,Valid,L5,21,Fell,1880,50.775,6.08333,,,",
    "2,Future,Valid,H6,10,Found,2030,10.0,10.0,,,",  # v1: year.maximum is a warning
]


def _deliver(home: Path, day: str, header: str, rows: list[str]) -> None:
    folder = home / "landing" / "nasa" / "meteorites" / day
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"meteorites_{day}.csv").write_text("\n".join([header, *rows]) + "\n")


def _load(home: Path, day: str) -> None:
    result = materialize(home, [("nasa", "meteorites")], day)
    assert result.success, day
    checks = check_results(result)
    # tiny deliveries swing the anomaly monitors; the data checks must hold
    assert checks["nasa/meteorites:conservation"] and checks["nasa/meteorites:contract_schema"]


def test_each_day_uses_the_version_in_force_and_rows_keep_one_layout(tmp_path: Path) -> None:
    registry = load_registry()
    assert [c.version for c in registry.versions("meteorites")] == ["1.0.0", "2.0.0"]

    _deliver(tmp_path, "2026-01-08", V1_HEADER, V1_ROWS)
    _load(tmp_path, "2026-01-08")
    # v2: new header, the optional column, an unknown extra column, columns reordered.
    _deliver(
        tmp_path,
        "2026-01-09",
        "name,id,nametype,meteorite_class,mass_g,fall,year,reclat,reclong,observed_by,flex_note",
        [
            "Bravo,3,Valid,L6,5,Fell,1990,1.0,1.0,Smithsonian,x",
            "Later,4,Valid,H5,5,Found,2030,1.0,1.0,,y",  # v2: year.maximum is fatal
        ],
    )
    _load(tmp_path, "2026-01-09")
    # A v2 day from an agency still sending the old header name.
    _deliver(tmp_path, "2026-01-10", V1_HEADER, ["5,Charlie,Valid,LL6,7,Found,1999,2.0,2.0,,,"])
    _load(tmp_path, "2026-01-10")
    # Backfilling an old day after v2 exists: v1's rules, v2's layout.
    _deliver(tmp_path, "2026-01-07", V1_HEADER, ["6,Delta,Valid,CM2,3,Found,2031,3.0,3.0,,,"])
    _load(tmp_path, "2026-01-07")

    with duckdb.connect(str(agency_db(tmp_path, "nasa")), read_only=True) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = 'meteorites'"
            ).fetchall()
        ]
        assert "meteorite_class" in columns and "observed_by" in columns
        assert "recclass" not in columns
        rows = conn.execute(
            "SELECT id, meteorite_class, observed_by, _contract_version, year FROM meteorites "
            "ORDER BY id"
        ).fetchall()
        assert rows == [
            (1, "L5", None, "1.0.0", 1880),
            (2, "H6", None, "1.0.0", 2030),
            (3, "L6", "Smithsonian", "2.0.0", 1990),
            (5, "LL6", None, "2.0.0", 1999),
            (6, "CM2", None, "1.0.0", 2031),
        ]
        quarantined = conn.execute(
            "SELECT _partition_date::VARCHAR, _row_number, rule_id, _contract_version "
            "FROM meteorites_quarantine"
        ).fetchall()
        assert quarantined == [("2026-01-09", 2, "year.maximum", "2.0.0")]
        warned = conn.execute(
            "SELECT _partition_date::VARCHAR, rule_id FROM meteorites_warnings "
            "WHERE rule_id = 'year.maximum' ORDER BY 1"
        ).fetchall()
        assert warned == [("2026-01-07", "year.maximum"), ("2026-01-08", "year.maximum")]
        drift = dict(
            conn.execute(
                "SELECT _partition_date::VARCHAR, drift FROM _flux_deliveries ORDER BY 1"
            ).fetchall()
        )
    assert drift["2026-01-08"] is None
    assert drift["2026-01-09"] == (
        "extra columns kept in raw: flex_note; missing optional columns: geolocation, states, "
        "counties; columns in another order than the contract's"
    )
    assert drift["2026-01-10"] == "missing optional columns: observed_by"
