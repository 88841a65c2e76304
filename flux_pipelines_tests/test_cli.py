"""The ``flux`` command as an agency and an engineer use it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import jsonschema
from typer.testing import CliRunner

from flux_pipelines.cli.main import app
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.demo.generator import generate_rows, write_delivery

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
