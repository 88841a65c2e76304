"""The ``flux`` command as an agency and an engineer use it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb
import jsonschema
import pytest
from typer.testing import CliRunner

from flux_pipelines.cli.main import app
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.definitions import defs
from flux_pipelines.demo.generator import generate_rows, write_delivery
from flux_pipelines.names import agency_db
from flux_pipelines.resources.warehouse import FluxWarehouse

runner = CliRunner()


def test_validate_reports_planted_defects_and_loads_nothing(tmp_path: Path) -> None:
    contract = load_registry().contract_for("meteorites", dt.date(2026, 1, 5))
    delivery = generate_rows(contract, 300, seed=21, defect_rate=0.05)
    path = write_delivery(delivery.frame, tmp_path / "meteorites.csv", "csv")
    errors = tmp_path / "errors.csv"
    result = runner.invoke(
        app,
        ["validate", str(path), "--dataset", "meteorites", "--day", "2026-01-05",
         "--errors-csv", str(errors)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # some rows would be quarantined
    fatal = {r.id for r in contract.rules if r.severity == "fatal"}
    planted_fatal = delivery.planted.filter(delivery.planted["rule_id"].is_in(list(fatal)))
    assert f"{planted_fatal['row_number'].n_unique()} would be quarantined" in result.output
    written = duckdb.sql(f"SELECT DISTINCT _row_number, rule_id FROM '{errors}'").fetchall()
    assert set(written) == set(delivery.planted.iter_rows())
    assert set(tmp_path.iterdir()) == {path, errors}  # nothing loaded, nothing left behind


def test_validate_rejects_a_file_missing_a_required_column(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,name\n1,Aachen\n")
    result = runner.invoke(app, ["validate", str(path), "--dataset", "meteorites"])
    assert result.exit_code == 2
    assert "delivery.missing_required_columns" in result.output
    assert "nametype" in result.output


def test_validate_unknown_dataset_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("a\n1\n")
    result = runner.invoke(app, ["validate", str(path), "--dataset", "comets"])
    assert result.exit_code == 2
    assert "unknown dataset 'comets'" in result.output


def test_contracts_json_schema_is_valid_draft_2020_12() -> None:
    for dataset in load_registry().contracts:
        result = runner.invoke(app, ["contracts", "show", dataset, "--format", "json-schema"])
        assert result.exit_code == 0, result.output
        schema = json.loads(result.output)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_contracts_list_and_page() -> None:
    listing = runner.invoke(app, ["contracts", "list"])
    assert listing.exit_code == 0
    for dataset in load_registry().contracts:
        assert dataset in listing.output
    page = runner.invoke(app, ["contracts", "show", "ccn_depthseries"])
    assert page.exit_code == 0
    assert "`depth_order`" in page.output and "CREATE TABLE" in page.output


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # restored after; the demo sets its own
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    home = tmp_path / "flux"
    result = runner.invoke(
        app,
        ["demo", "--home", str(home), "--days", "3", "--rows", "60",
         "--agencies", "nasa,nga,smithsonian-serc"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    registry = load_registry()
    for agency in ("nasa", "nga", "smithsonian-serc"):
        with duckdb.connect(str(agency_db(home, agency)), read_only=True) as c:
            for dataset in registry.agency(agency).datasets:
                rows_in, curated, quarantined = c.execute(
                    "SELECT sum(rows_read), sum(rows_curated), sum(rows_quarantined) "
                    "FROM _flux_deliveries WHERE dataset = ?",
                    [dataset],
                ).fetchone()  # type: ignore[misc]
                assert rows_in == curated + quarantined > 0
                assert f"{agency}" in result.output and dataset in result.output
    # the runs are in the persistent instance the UI reads
    assert (home / "dagster_home" / "history" / "runs.db").exists()
    assert "flux dev" in result.output

    # the analysts' catalogs exist (the daily refresh ran once), their views hold the
    # curated rows, and the output says where they are
    for agency in ("nasa", "nga", "smithsonian-serc"):
        catalog = home / "published" / agency / "catalog.duckdb"
        assert f"{catalog}: " in result.output
        working = agency_db(home, agency)
        with duckdb.connect(str(working), read_only=True) as c:
            curated = {d: _count(c, d) for d in registry.agency(agency).datasets}
        with duckdb.connect(str(catalog), read_only=True) as c:
            assert {d: _count(c, d) for d in curated} == curated
        assert all(n > 0 for n in curated.values())
    cross = home / "published" / "cross_agency" / "catalog.duckdb"
    assert f"{cross}: " in result.output
    with duckdb.connect(str(cross), read_only=True) as c:
        scored = c.execute(
            "SELECT count(*) FROM quality_scorecard WHERE agency IN ('nasa', 'nga', "
            "'smithsonian-serc')"
        ).fetchall()[0][0]
    delivered = 0
    for agency in ("nasa", "nga", "smithsonian-serc"):
        with duckdb.connect(str(agency_db(home, agency)), read_only=True) as c:
            delivered += c.execute(
                "SELECT count(DISTINCT (dataset, _partition_date)) FROM _flux_deliveries"
            ).fetchall()[0][0]
    assert scored == delivered > 0  # one scorecard row per agency, dataset and day

    # `flux dev` afterwards: the landing sensors start with an empty cursor, and the
    # delivery receipts the demo's loads wrote keep them from loading anything again
    repo = defs.get_repository_def()
    for sensor in repo.sensor_defs:
        if not sensor.name.startswith("landing_"):
            continue
        context = dg.build_sensor_context(
            cursor=None,
            resources={"warehouse": FluxWarehouse(home=str(home))},
            instance=dg.DagsterInstance.ephemeral(),
            repository_def=repo,
        )
        tick = sensor.evaluate_tick(context)
        assert not tick.run_requests, f"{sensor.name} would load the demo again"


def _count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])
