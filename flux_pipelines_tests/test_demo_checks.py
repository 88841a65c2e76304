"""The demo as an engineer sees it in the UI: per-day truth, and no unexplained check result.

One `flux demo` run (two agencies, a week) through the command line and a persistent
SQLite instance; then the instance's event log is read the way the UI reads it, and the
agency files, catalogs and the command's output the way an engineer reads them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from typer.testing import CliRunner

from flux_pipelines.cli.main import DEMO_FIRST_DAY, app
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.definitions import defs
from flux_pipelines.defs.ingest.assets import asset_keys
from flux_pipelines.demo.generator import planted_anomalies
from flux_pipelines.names import agency_db
from flux_pipelines.resources.warehouse import FluxWarehouse

AGENCIES = ["nasa", "national-archives"]
DAYS = [DEMO_FIRST_DAY + dt.timedelta(days=i) for i in range(7)]
CROSS_AGENCY_DATASETS = {"constituents", "media_items", "contract_transactions"}

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class DemoRun:
    home: Path
    output: str  # what ``flux demo`` printed


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One ``flux demo`` through the command line, shared by every test here (a demo run
    is the slowest thing the suite does: one for all)."""
    work = tmp_path_factory.mktemp("demo")
    home = work / "flux"
    with pytest.MonkeyPatch.context() as env:  # restored after; the demo sets its own
        env.setenv("DAGSTER_HOME", str(work))
        env.setenv("FLUX_HOME", str(work))
        result = CliRunner().invoke(
            app,
            ["demo", "--home", str(home), "--days", str(len(DAYS)), "--rows", "200",
             "--seed", "42", "--agencies", ",".join(AGENCIES)],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert DAYS[0] == DEMO_FIRST_DAY, "the command's first day is the demo's default"
    return DemoRun(home, result.output)


@pytest.fixture(scope="module")
def demo_home(demo_run: DemoRun) -> Path:
    return demo_run.home


def _instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home / "dagster_home"))


def _evaluations(instance: dg.DagsterInstance) -> list[dg.AssetCheckEvaluation]:
    found = []
    for run in instance.get_runs():
        for entry in instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            found.append(entry.dagster_event.event_specific_data)  # type: ignore[union-attr]
    return found


def test_every_check_result_that_is_not_a_pass_is_a_planted_defect(demo_home: Path) -> None:
    registry = load_registry()
    planted = planted_anomalies(AGENCIES, DAYS)
    assert planted, "the demo plants anomalies for these agencies"
    explained: dict[tuple[str, str, str | None], str] = {}
    for (agency_id, dataset, day), anomaly in planted.items():
        curated = asset_keys(registry.agency(agency_id), dataset)[1]
        explained[(curated.to_user_string(), "anomalies", day.isoformat())] = anomaly.severity
        if anomaly.severity == "ERROR" and dataset in CROSS_AGENCY_DATASETS:
            # the certification gate holds the day back and says so (a WARN)
            explained[(f"cross_agency/{dataset}", "certification", None)] = "WARN"
    not_passed = {
        (e.asset_key.to_user_string(), e.check_name, e.partition): e.severity.value
        for e in _evaluations(_instance(demo_home))
        if not e.passed
    }
    assert not_passed == explained


def test_every_day_shows_its_own_row_count(demo_home: Path) -> None:
    registry = load_registry()
    instance = _instance(demo_home)
    compared = 0
    for agency_id in AGENCIES:
        agency = registry.agency(agency_id)
        path = agency_db(demo_home, agency_id)
        with duckdb.connect(str(path), read_only=True) as conn:
            for dataset in agency.datasets:
                curated = asset_keys(agency, dataset)[1]
                in_duckdb = dict(
                    conn.execute(
                        f"SELECT CAST(_partition_date AS VARCHAR), count(*) FROM {dataset} "
                        "GROUP BY 1"
                    ).fetchall()
                )
                for day in DAYS:
                    key = day.isoformat()
                    [record] = instance.fetch_materializations(
                        dg.AssetRecordsFilter(asset_key=curated, asset_partitions=[key]), limit=1
                    ).records
                    shown = record.asset_materialization.metadata["dagster/row_count"].value  # type: ignore[union-attr]
                    assert shown == in_duckdb[key], (curated, key)
                    compared += 1
    assert compared == len(DAYS) * sum(len(registry.agency(a).datasets) for a in AGENCIES)
    counts = set(in_duckdb.values())
    assert len(counts) > 1, "days differ, so a range-wide figure could not pass"


def test_demo_end_to_end(demo_run: DemoRun) -> None:
    home, output = demo_run.home, demo_run.output
    registry = load_registry()
    for agency in AGENCIES:
        with duckdb.connect(str(agency_db(home, agency)), read_only=True) as c:
            for dataset in registry.agency(agency).datasets:
                rows_in, curated, quarantined = c.execute(
                    "SELECT sum(rows_read), sum(rows_curated), sum(rows_quarantined) "
                    "FROM _flux_deliveries WHERE dataset = ?",
                    [dataset],
                ).fetchone()  # type: ignore[misc]
                assert rows_in == curated + quarantined > 0
                assert f"{agency}" in output and dataset in output
    # the runs are in the persistent instance the UI reads
    assert (home / "dagster_home" / "history" / "runs.db").exists()
    assert "flux dev" in output

    # the analysts' catalogs exist (the daily refresh ran once), their views hold the
    # curated rows, and the output says where they are
    for agency in AGENCIES:
        catalog = home / "published" / agency / "catalog.duckdb"
        assert f"{catalog}: " in output
        working = agency_db(home, agency)
        with duckdb.connect(str(working), read_only=True) as c:
            curated = {d: _count(c, d) for d in registry.agency(agency).datasets}
        with duckdb.connect(str(catalog), read_only=True) as c:
            assert {d: _count(c, d) for d in curated} == curated
        assert all(n > 0 for n in curated.values())
    cross = home / "published" / "cross_agency" / "catalog.duckdb"
    assert f"{cross}: " in output
    with duckdb.connect(str(cross), read_only=True) as c:
        scored = c.execute(
            "SELECT count(*) FROM quality_scorecard WHERE agency IN ('nasa', 'national-archives')"
        ).fetchall()[0][0]
    delivered = 0
    for agency in AGENCIES:
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
