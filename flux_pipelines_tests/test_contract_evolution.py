"""Contract evolution: a version that retypes a column migrates the curated table (or is
refused with the reason, changing nothing), and ``diff`` says whom a change can break."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from flux_pipelines.cli.main import app
from flux_pipelines.contracts.evolution import ContractMigrationError, diff, is_breaking
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.registry import Registry, load_registry
from flux_pipelines.ingest.delivery import PartitionLoader, PartitionResult, load_partition
from flux_pipelines.names import MIGRATIONS_TABLE, agency_db
from flux_pipelines_tests.conftest import contract_doc, write_contract

DAY1 = dt.date(2026, 3, 2)
DAY2 = dt.date(2026, 3, 3)  # version 2 is in force from here


def _amount(logical_type: str) -> dict[str, Any]:
    return {"name": "amount", "logicalType": logical_type}


def _doc(version: str, amount_type: str, effective: dt.date | None = None) -> dict[str, Any]:
    properties = [
        {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
        _amount(amount_type),
    ]
    custom = [{"property": "effectiveFrom", "value": effective.isoformat()}] if effective else []
    doc = contract_doc(properties, name="awards", version=version, custom=custom)
    doc["id"] = f"awards-v{version[0]}"
    return doc


def _registry(tmp_path: Path, v1_type: str, v2_type: str | None = None) -> Registry:
    """Version 1 alone (``v2_type`` None), or versions 1 and 2: a second registry folder,
    as a deployment adding version 2 after days were loaded under version 1 has."""
    root = tmp_path / ("contracts-v1" if v2_type is None else "contracts-v2")
    write_contract(root, _doc("1.0.0", v1_type))
    if v2_type is not None:
        write_contract(root, _doc("2.0.0", v2_type, DAY2))
    (root / "agencies.yaml").write_text(
        "agencies:\n  - id: test-agency\n    name: Test Agency\n    datasets: [awards]\n",
        encoding="utf-8",
    )
    return load_registry(root)


def _load(
    conn: duckdb.DuckDBPyConnection,
    registry: Registry,
    root: Path,
    day: dt.date,
    rows: str,
    header: str = "id,amount",
) -> PartitionResult:
    contract = registry.contract_for("awards", day)
    delivery = root / "landing" / day.isoformat()
    delivery.mkdir(parents=True, exist_ok=True)
    path = delivery / "awards.csv"
    path.write_text(f"{header}\n{rows}", encoding="utf-8")
    loader = PartitionLoader(
        conn,
        agency="test-agency",
        contract=contract,
        day=day,
        run_id=f"run-{day}",
        raw_root=root / "raw" / "awards",
        storage=registry.storage_contract(contract),
    )
    return load_partition(loader, [path])


def _column_type(conn: duckdb.DuckDBPyConnection, column: str) -> str:
    ((data_type,),) = conn.execute(
        "SELECT data_type FROM duckdb_columns() WHERE table_name = 'awards' AND column_name = ?",
        [column],
    ).fetchall()
    return str(data_type)


def test_a_number_column_retyped_as_text_is_migrated_at_the_next_load(tmp_path: Path) -> None:
    v1, registry = _registry(tmp_path, "number"), _registry(tmp_path, "number", "string")
    with duckdb.connect(str(tmp_path / "a.duckdb")) as conn:
        first = _load(conn, v1, tmp_path, DAY1, "1,149800\n2,12.5\n")
        assert first.rows_curated == 2 and not first.migrations
        assert _column_type(conn, "amount") == "DOUBLE"
        second = _load(conn, registry, tmp_path, DAY2, "3,$149 800\n4,(1200)\n")
        assert second.rows_curated == 2
        assert [(m.column, m.from_type, m.to_type, m.rows) for m in second.migrations] == [
            ("amount", "DOUBLE", "VARCHAR", 2)
        ]
        assert _column_type(conn, "amount") == "VARCHAR"
        rows = conn.execute("SELECT id, amount FROM awards ORDER BY id").fetchall()
        assert rows == [(1, "149800.0"), (2, "12.5"), (3, "$149 800"), (4, "(1200)")]
        recorded = conn.execute(
            f"SELECT column_name, from_type, to_type, contract_version, rows_converted, run_id "
            f"FROM {MIGRATIONS_TABLE}"
        ).fetchall()
        assert recorded == [("amount", "DOUBLE", "VARCHAR", "2.0.0", 2, f"run-{DAY2}")]
        # an old day backfilled under version 1 is stored under the table's newer type
        again = _load(conn, registry, tmp_path, DAY1, "1,7\n")
        assert again.rows_curated == 1 and not again.migrations
        assert conn.execute("SELECT amount FROM awards WHERE id = 1").fetchall() == [("7.0",)]


def test_text_retyped_as_numbers_is_migrated_when_every_value_converts(tmp_path: Path) -> None:
    v1, registry = _registry(tmp_path, "string"), _registry(tmp_path, "string", "number")
    with duckdb.connect(str(tmp_path / "a.duckdb")) as conn:
        _load(conn, v1, tmp_path, DAY1, "1,12\n2,13.5\n3,\n")
        second = _load(conn, registry, tmp_path, DAY2, "4,1.25\n")
        assert [m.rows for m in second.migrations] == [2]  # the empty value stays empty
        assert conn.execute("SELECT id, amount FROM awards ORDER BY id").fetchall() == [
            (1, 12.0),
            (2, 13.5),
            (3, None),
            (4, 1.25),
        ]


def test_a_lossy_retype_is_refused_naming_the_values_and_changes_nothing(
    tmp_path: Path,
) -> None:
    v1, registry = _registry(tmp_path, "string"), _registry(tmp_path, "string", "number")
    with duckdb.connect(str(tmp_path / "a.duckdb")) as conn:
        _load(conn, v1, tmp_path, DAY1, '1,"$149,800"\n2,12\n3,(1200)\n')
        before = conn.execute("SELECT * FROM awards ORDER BY id").fetchall()
        with pytest.raises(ContractMigrationError) as refused:
            _load(conn, registry, tmp_path, DAY2, "4,5\n")
        message = str(refused.value)
        for part in ("agency test-agency", "dataset awards", "contract 2.0.0", "'amount'"):
            assert part in message
        assert "2 of 3 stored value(s) on 1 day(s)" in message
        assert "'$149,800'" in message and "'(1200)'" in message
        assert "Nothing was changed" in message
        assert _column_type(conn, "amount") == "VARCHAR"
        assert conn.execute("SELECT * FROM awards ORDER BY id").fetchall() == before
        assert conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [MIGRATIONS_TABLE]
        ).fetchall() == [(0,)]


def test_a_number_retyped_as_integer_is_refused_when_a_value_has_a_fraction(
    tmp_path: Path,
) -> None:
    v1, registry = _registry(tmp_path, "number"), _registry(tmp_path, "number", "integer")
    with duckdb.connect(str(tmp_path / "a.duckdb")) as conn:
        _load(conn, v1, tmp_path, DAY1, "1,12\n2,2.5\n")
        with pytest.raises(ContractMigrationError, match=r"1 of 2 stored value\(s\).*'2\.5'"):
            _load(conn, registry, tmp_path, DAY2, "3,4\n")


def test_an_old_day_whose_values_the_newer_type_cannot_hold_fails_classified(
    tmp_path: Path,
) -> None:
    v1, registry = _registry(tmp_path, "string"), _registry(tmp_path, "string", "number")
    with duckdb.connect(str(tmp_path / "a.duckdb")) as conn:
        _load(conn, v1, tmp_path, DAY1, "1,12\n")
        _load(conn, registry, tmp_path, DAY2, "2,3\n")  # migrates: 12 converts
        before = conn.execute("SELECT * FROM awards ORDER BY id").fetchall()
        # a backfill of day 1 under version 1 (text) sends a value no number holds
        with pytest.raises(ContractMigrationError) as failed:
            _load(conn, registry, tmp_path, DAY1, '1,"$149,800"\n')
        message = str(failed.value)
        assert f"day {DAY1}" in message and "file awards.csv" in message
        assert "contract 1.0.0" in message and "Nothing of the day was changed" in message
        assert conn.execute("SELECT * FROM awards ORDER BY id").fetchall() == before


# --- diff ----------------------------------------------------------------------------------


def _contract(tmp_path: Path, name: str, properties: list[dict[str, Any]]) -> Contract:
    doc = contract_doc(properties, name="items", version="1.0.0")
    return load_contract(write_contract(tmp_path / name, doc))


def test_diff_says_whom_each_change_can_break(tmp_path: Path) -> None:
    old = _contract(
        tmp_path,
        "old",
        [
            {"name": "id", "logicalType": "integer", "required": True},
            {"name": "amount", "logicalType": "integer", "logicalTypeOptions": {"minimum": 0}},
            {"name": "code", "logicalType": "string", "enum": [{"value": v} for v in "abc"]},
            {"name": "note", "logicalType": "string"},
            {"name": "label", "logicalType": "number"},
        ],
    )
    new = _contract(
        tmp_path,
        "new",
        [
            {"name": "id", "logicalType": "integer", "required": True},
            {"name": "amount", "logicalType": "number", "logicalTypeOptions": {"minimum": 10}},
            {"name": "code", "logicalType": "string", "enum": [{"value": v} for v in "ab"]},
            {"name": "label", "logicalType": "string", "required": True},
            {"name": "extra", "logicalType": "string", "logicalTypeOptions": {"maxLength": 5}},
        ],
    )
    changes = {(c.subject, c.breaks) for c in diff(old, new)}
    whats = {c.subject: c.what for c in diff(old, new)}
    assert ("amount", ("analysts",)) in changes  # integer -> number: every value converts
    assert ("label", ("analysts",)) in changes  # number -> string
    assert ("label", ("agencies",)) in changes  # now required
    assert ("amount.minimum", ("agencies",)) in changes and "tighter" in whats["amount.minimum"]
    assert ("code.allowed_values", ("agencies",)) in changes
    assert ("note", ("analysts",)) in changes and "removed" in whats["note"]
    assert ("extra", ()) in changes  # added, optional
    assert ("extra.max_length", ()) in changes  # a rule of a new column breaks no old file
    assert is_breaking(diff(old, new), "agencies") and is_breaking(diff(old, new), "analysts")
    # the reverse: looser rules and a narrowing type
    back = {(c.subject, c.breaks) for c in diff(new, old)}
    assert ("amount.minimum", ("analysts",)) in back
    assert ("code.allowed_values", ("analysts",)) in back
    assert ("amount", ("agencies", "analysts")) in back  # number -> integer: may be refused
    assert diff(old, old) == []


def test_flux_contracts_diff_on_the_shipped_meteorites_versions() -> None:
    result = CliRunner().invoke(
        app, ["contracts", "diff", "meteorites", "1.0.0", "2.0.0", "--fail-on-breaking"]
    )
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == "meteorites 1.0.0 -> 2.0.0: 4 change(s)"
    assert any("meteorite_class" in ln and "renamed from 'recclass'" in ln for ln in lines)
    assert any("year.maximum" in ln and "warning -> fatal" in ln for ln in lines)
    # the renamed column's rules are the same rules, not removed and added ones
    assert not any(ln.split()[0].startswith("recclass") for ln in lines[1:5])
    assert "breaking for agencies: yes" in lines and "breaking for analysts: yes" in lines
    unknown = CliRunner().invoke(app, ["contracts", "diff", "meteorites", "1.0.0", "9.9.9"])
    assert unknown.exit_code == 2 and "has no version 9.9.9" in unknown.output


# --- through Dagster: `flux load` on a registry that gains a retyping version ---------------

SHIPPED_CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
V2_DAY, V3_DAY = "2026-01-09", "2026-01-12"
V2_HEADER = "name,id,nametype,meteorite_class,mass_g,fall,year,reclat,reclong"


def _retyping_version(contracts: Path) -> None:
    """meteorites 3.0.0: version 2 with ``mass_g`` as text (``'5 g'``), from ``V3_DAY``."""
    folder = contracts / "datasets" / "meteorites"
    doc = yaml.safe_load((folder / "2.0.0.odcs.yaml").read_text(encoding="utf-8"))
    doc.update(version="3.0.0", id="meteorites-v3")
    for prop in doc["customProperties"]:
        if prop["property"] == "effectiveFrom":
            prop["value"] = V3_DAY
    (mass,) = [p for p in doc["schema"][0]["properties"] if p["name"] == "mass_g"]
    mass["logicalType"] = "string"
    mass.pop("logicalTypeOptions", None)
    mass["customProperties"] = [
        p for p in mass.get("customProperties", []) if p["property"] != "severity"
    ]
    (folder / "3.0.0.odcs.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")


def _flux_load(tmp_path: Path, contracts: Path, day: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PG")}
    env.update(
        FLUX_CONTRACTS_DIR=str(contracts),
        FLUX_HOME=str(tmp_path / "home"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
    )
    command = [str(Path(sys.executable).parent / "flux"), "load", "--agency", "nasa"]
    return subprocess.run(
        [*command, "--dataset", "meteorites", "--day", day],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _published_type(tmp_path: Path, day: str, column: str) -> str:
    path = tmp_path / "home" / "published" / "nasa" / "meteorites" / f"{day}.parquet"
    with duckdb.connect() as conn:
        ((data_type,),) = conn.execute(
            f"SELECT column_type FROM (DESCRIBE SELECT * FROM read_parquet('{path}')) "
            "WHERE column_name = ?",
            [column],
        ).fetchall()
    return str(data_type)


@pytest.mark.slow
def test_flux_load_migrates_the_table_and_republishes_earlier_days(tmp_path: Path) -> None:
    contracts = tmp_path / "contracts"
    shutil.copytree(SHIPPED_CONTRACTS, contracts)
    for day, rows in ((V2_DAY, "Alpha,1,Valid,L6,5.5,Fell,1990,1.0,1.0"),
                      (V3_DAY, "Bravo,2,Valid,H5,5 g,Found,1991,2.0,2.0")):  # fmt: skip
        folder = tmp_path / "home" / "landing" / "nasa" / "meteorites" / day
        folder.mkdir(parents=True)
        (folder / "meteorites.csv").write_text(f"{V2_HEADER}\n{rows}\n", encoding="utf-8")
    first = _flux_load(tmp_path, contracts, V2_DAY)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _published_type(tmp_path, V2_DAY, "mass_g") == "DOUBLE"

    _retyping_version(contracts)  # the deployment gains version 3
    second = _flux_load(tmp_path, contracts, V3_DAY)
    assert second.returncode == 0, second.stdout + second.stderr
    with duckdb.connect(str(agency_db(tmp_path / "home", "nasa")), read_only=True) as c:
        assert c.execute("SELECT id, mass_g FROM meteorites ORDER BY id").fetchall() == [
            (1, "5.5"),
            (2, "5 g"),
        ]
        assert c.execute(
            f"SELECT column_name, from_type, to_type, contract_version FROM {MIGRATIONS_TABLE}"
        ).fetchall() == [("mass_g", "DOUBLE", "VARCHAR", "3.0.0")]
    # analysts' copies agree on the type: the earlier day was published again
    assert _published_type(tmp_path, V2_DAY, "mass_g") == "VARCHAR"
    assert _published_type(tmp_path, V3_DAY, "mass_g") == "VARCHAR"
    # a backfill of the earlier day validates under version 2 and stores under version 3
    again = _flux_load(tmp_path, contracts, V2_DAY)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "contract_schema" in again.stdout and "FAILED" not in again.stdout.upper()


def test_a_version_adding_a_required_column_keeps_earlier_days_and_requires_it_after(
    tmp_path: Path,
) -> None:
    """Earlier days keep their rows (the new column empty: they were valid without it); a
    delivery under the new version without the column is rejected whole, one with it loads;
    ``diff`` calls the change breaking for agencies."""
    v1 = _registry(tmp_path, "number")
    root = tmp_path / "contracts-required"
    write_contract(root, _doc("1.0.0", "number"))
    doc = _doc("2.0.0", "number", DAY2)
    doc["schema"][0]["properties"].append(
        {"name": "program", "logicalType": "string", "required": True}
    )
    write_contract(root, doc)
    (root / "agencies.yaml").write_text(
        (tmp_path / "contracts-v1" / "agencies.yaml").read_text(encoding="utf-8"), "utf-8"
    )
    registry = load_registry(root)
    changes = {(c.subject, c.breaks) for c in diff(*registry.versions("awards"))}
    assert ("program", ("agencies",)) in changes
    with duckdb.connect(str(tmp_path / "a.duckdb")) as conn:
        _load(conn, v1, tmp_path, DAY1, "1,5\n")
        missing = _load(conn, registry, tmp_path, DAY2, "2,6\n")
        assert [f.rule_id for f in missing.files] == ["delivery.missing_required_columns"]
        assert conn.execute("SELECT id, program FROM awards").fetchall() == [(1, None)]
        loaded = _load(conn, registry, tmp_path, DAY2, "3,7,grants\n", "id,amount,program")
        assert loaded.rows_curated == 1
        assert conn.execute("SELECT id, program FROM awards ORDER BY id").fetchall() == [
            (1, None),
            (3, "grants"),
        ]
