"""Dagster-level tests: materialize partitions through Dagster and read the tables back.

Deliveries come from the project's seeded generator, which records the defects it planted,
so every expectation is known independently of the validator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.definitions import defs
from flux_pipelines.defs.agency import agency_partitions
from flux_pipelines.defs.ingest.assets import (
    agency_pool,
    asset_keys,
    ingest_step_name,
)
from flux_pipelines.names import agency_db
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import (
    check_results,
    deliver,
    ingest_assets,
    ingest_keys,
    materialize,
)

DAY = "2026-02-02"
SNAPSHOT = Path(__file__).with_name("snapshots") / "asset_graph.txt"


def _db(home: Path, agency: str) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(agency_db(home, agency)), read_only=True)


def _partition_rows(conn: duckdb.DuckDBPyConnection, table: str, day: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT * EXCLUDE (_run_id, _loaded_at) FROM {table} "
        "WHERE _partition_date = ? ORDER BY _file, _row_number",
        [day],
    ).fetchall()


def test_partition_materializes_curated_and_quarantine(tmp_path: Path) -> None:
    planted = deliver(tmp_path, "nasa", "meteorites", DAY, rows=400, seed=3)
    assert planted, "the generator planted fatal defects"
    result = materialize(tmp_path, [("nasa", "meteorites")], DAY)
    assert result.success
    assert check_results(result) == {
        "nasa/meteorites:conservation": True,
        "nasa/meteorites:contract_schema": True,
        "nasa/meteorites:anomalies": True,  # a first delivery: nothing to compare yet
    }
    with _db(tmp_path, "nasa") as conn:
        quarantined = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT _row_number FROM meteorites_quarantine"
            ).fetchall()
        }
        curated = conn.execute("SELECT count(*) FROM meteorites").fetchone()
        raw = conn.execute("SELECT count(*) FROM raw_meteorites").fetchone()
    assert quarantined == planted
    assert curated == (400 - len(planted),) and raw == (400,)
    # metadata the UI plots comes from the same numbers
    mat = result.asset_materializations_for_node("nasa__ingest")
    by_key = {m.asset_key.to_user_string(): m.metadata for m in mat}
    assert by_key["nasa/meteorites"]["dagster/row_count"].value == 400 - len(planted)
    assert by_key["nasa/meteorites"]["reject_rate"].value == pytest.approx(len(planted) / 400)
    # the published read-only copy holds exactly the curated partition
    published = tmp_path / "published" / "nasa" / "meteorites" / f"{DAY}.parquet"
    assert duckdb.execute(f"SELECT count(*) FROM '{published}'").fetchall() == [curated]


def test_rerun_is_idempotent_and_replaces_only_its_partition(tmp_path: Path) -> None:
    other_day = "2026-02-03"
    deliver(tmp_path, "nasa", "meteorites", DAY, rows=300, seed=4)
    deliver(tmp_path, "nasa", "meteorites", other_day, rows=200, seed=5)
    assert materialize(tmp_path, [("nasa", "meteorites")], DAY).success
    assert materialize(tmp_path, [("nasa", "meteorites")], other_day).success
    with _db(tmp_path, "nasa") as conn:
        first = _partition_rows(conn, "meteorites", DAY)
        other = _partition_rows(conn, "meteorites", other_day)
    assert materialize(tmp_path, [("nasa", "meteorites")], DAY).success
    with _db(tmp_path, "nasa") as conn:
        assert _partition_rows(conn, "meteorites", DAY) == first
        assert _partition_rows(conn, "meteorites", other_day) == other
        assert conn.execute("SELECT count(*) FROM meteorites").fetchone() == (
            len(first) + len(other),
        )


def test_bad_file_fails_only_its_partition(tmp_path: Path) -> None:
    bad_day, good_day = DAY, "2026-02-03"
    folder = tmp_path / "landing" / "nasa" / "meteorites" / bad_day
    folder.mkdir(parents=True)
    (folder / "broken.csv").write_bytes(b"id,name\n1,Caf\x94\n")
    deliver(tmp_path, "nasa", "meteorites", good_day, rows=100, seed=6)
    deliver(tmp_path, "nga", "constituents", bad_day, rows=100, seed=7)

    failed = materialize(tmp_path, [("nasa", "meteorites")], bad_day)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    for expected in ("nasa", "meteorites", "broken.csv", "delivery.bad_encoding", "UTF-8"):
        assert expected in message
    with _db(tmp_path, "nasa") as conn:
        assert conn.execute(
            "SELECT rule_id, _row_number FROM meteorites_quarantine WHERE _file = 'broken.csv'"
        ).fetchall() == [("delivery.bad_encoding", None)]

    # the same agency's other day and another agency's same day are untouched
    assert materialize(tmp_path, [("nasa", "meteorites")], good_day).success
    assert materialize(tmp_path, [("nga", "constituents")], bad_day).success


def test_multi_day_run_records_one_result_per_day(tmp_path: Path) -> None:
    """Pins the Dagster behaviour the ingest step relies on (dagster 1.13.27): one run over a
    day range stores each day's materializations and check results under that day."""
    days = ["2026-02-02", "2026-02-03", "2026-02-04", "2026-02-05"]
    delivered = [days[0], days[1], days[3]]  # nothing arrives on 02-04
    rows_in = {day: 150 + 40 * i for i, day in enumerate(delivered)}
    for i, day in enumerate(delivered):
        deliver(tmp_path, "nga", "media_items", day, rows=rows_in[day], seed=10 + i)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        ingest_assets([("nga", "media_items")]),
        selection=ingest_keys([("nga", "media_items")]),
        resources={"warehouse": FluxWarehouse(home=str(tmp_path))},
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": days[0],
            "dagster/asset_partition_range_end": days[-1],
        },
    )
    assert result.success
    # one run, one step, every day of the range in it (a single-run backfill)
    steps = [e for e in result.all_events if e.event_type_value == "STEP_SUCCESS"]
    assert len(steps) == 1
    with _db(tmp_path, "nga") as conn:
        curated = dict(
            conn.execute(
                "SELECT CAST(_partition_date AS VARCHAR), count(*) FROM media_items GROUP BY 1"
            ).fetchall()
        )
        ids_shared = conn.execute(
            "SELECT count(*) FROM (SELECT mediaid FROM media_items GROUP BY mediaid "
            "HAVING count(DISTINCT _partition_date) > 1)"
        ).fetchone()
    assert set(curated) == set(delivered)
    assert len(set(curated.values())) == len(delivered), "days differ, so must their counts"
    assert ids_shared is not None and ids_shared[0] > 0, "ids repeat across days (allowed)"

    key = dg.AssetKey(["nga", "media_items"])
    for day in days:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=10
        ).records
        if day not in delivered:
            assert records == [], "a day without a delivery records nothing"
            continue
        [record] = records  # exactly one, carrying the day's own figures
        metadata = record.asset_materialization.metadata  # type: ignore[union-attr]
        assert metadata["dagster/row_count"].value == curated[day]
        assert metadata["rows_in"].value == rows_in[day]
        assert metadata["rows_quarantined"].value == rows_in[day] - curated[day]

    evaluations = result.get_asset_check_evaluations()
    by_day: dict[str | None, dict[str, bool]] = {}
    for e in evaluations:
        by_day.setdefault(e.partition, {})[e.check_name] = e.passed
    assert by_day == {
        day: {"conservation": True, "contract_schema": True, "anomalies": True} for day in delivered
    }
    for name in ("conservation", "contract_schema", "anomalies"):
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(key, name), limit=10
        )
        evaluated = {r.partition: r.status.value for r in history}
        # the day without a delivery stays as planned: never evaluated, so never "passed"
        assert evaluated == {**dict.fromkeys(delivered, "SUCCEEDED"), days[2]: "PLANNED"}


def test_contract_schema_fails_only_the_day_whose_curated_rows_are_wrong(
    tmp_path: Path,
) -> None:
    """The check passes curated rows by construction and fails when stored data is wrong."""
    from flux_pipelines.defs.ingest.step import schema_check

    days = ["2026-02-02", "2026-02-03"]
    for i, day in enumerate(days):
        deliver(tmp_path, "nga", "media_items", day, rows=120, seed=20 + i)
        assert materialize(tmp_path, [("nga", "media_items")], day).success
    contract = load_registry().latest_for("media_items", load_registry().agency("nga"))
    with duckdb.connect(str(agency_db(tmp_path, "nga"))) as conn:
        dates = [dg_day(d) for d in days]
        assert schema_check(conn, contract, dates) == {}
        # corrupt the second day: one row copied (its id now repeats within the day)
        conn.execute(
            "INSERT INTO media_items SELECT * FROM media_items "
            "WHERE _partition_date = ? ORDER BY _row_number LIMIT 1",
            [days[1]],
        )
        verdicts = schema_check(conn, contract, dates)
    assert set(verdicts) == {dates[1]}
    assert any("unique" in f for f in verdicts[dates[1]].failures), verdicts


def dg_day(day: str) -> Any:
    import datetime as dt

    return dt.date.fromisoformat(day)


def _keys(keys: Any) -> str:
    return ",".join(sorted(k.to_user_string() for k in keys))


def _mapping(values: Any) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in sorted((values or {}).items())) + "}"


class _Shared:
    """Long, shared values (partitions, automation conditions) numbered once, so each asset
    line names them: ``p1``, ``a1``. Numbers follow the sorted text, so they are stable."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seen: set[str] = set()

    def add(self, value: object) -> None:
        if value is not None:
            self.seen.add(repr(value))

    def name(self, value: object) -> str:
        if value is None:
            return "none"
        return f"{self.prefix}{sorted(self.seen).index(repr(value)) + 1}"

    def lines(self, kind: str) -> list[str]:
        return [f"{kind} {self.prefix}{i} {text}" for i, text in enumerate(sorted(self.seen), 1)]


def _executor(executor: dg.ExecutorDefinition | None) -> str:
    """The executor's name and its effective config (a ``configured`` executor's values)."""
    if executor is None:
        return "default"
    schema: Any = executor.config_schema
    if hasattr(schema, "resolve_config"):  # a configured executor: its mapped values
        config = schema.resolve_config({}).value
    else:
        config = schema.default_value if schema.default_provided else None
    return f"{executor.name}{config}"


def graph_snapshot(definitions: dg.Definitions) -> str:
    """Every asset's and check's spec, every job, sensor and schedule, as sorted text."""
    graph = definitions.resolve_asset_graph()
    repo = definitions.get_repository_def()
    partitions, automation = _Shared("p"), _Shared("a")
    nodes = sorted((graph.get(k) for k in graph.get_all_asset_keys()), key=lambda n: n.key)
    checks = [graph.get_check_spec(k) for k in sorted(graph.asset_check_keys)]
    for node in nodes:
        partitions.add(node.partitions_def)
        automation.add(node.automation_condition)
    for check in checks:
        partitions.add(check.partitions_def)
        automation.add(check.automation_condition)
    jobs = {j.name: j for j in repo.get_all_jobs()}
    for job in jobs.values():
        partitions.add(job.partitions_def)
    lines = partitions.lines("partitions") + automation.lines("automation")
    for node in nodes:
        lines.append(
            f"asset {node.key.to_user_string()} group={node.group_name} "
            f"kinds={','.join(sorted(node.kinds))} deps=[{_keys(node.parent_keys)}] "
            f"partitions={partitions.name(node.partitions_def)} tags={_mapping(node.tags)} "
            f"owners={sorted(node.owners)} pools={sorted(node.pools or [])} "
            f"automation={automation.name(node.automation_condition)} "
            f"freshness={node.freshness_policy!r}" + ("" if node.is_executable else " external")
        )
    for check in checks:
        lines.append(
            f"check {check.key.to_user_string()} blocking={check.blocking} "
            f"partitions={partitions.name(check.partitions_def)} "
            f"automation={automation.name(check.automation_condition)}"
        )
    steps = {
        a.node_def.name: a.node_def
        for a in graph.assets_defs
        if a.is_executable and isinstance(a.node_def, dg.OpDefinition)
    }
    for name, op in sorted(steps.items()):
        lines.append(f"step {name} pool={op.pool}")
    unresolved = {j.name: j for j in definitions.jobs or [] if not isinstance(j, dg.JobDefinition)}
    for name, job in sorted(jobs.items()):
        if name.startswith("__"):  # Dagster's implicit job over every asset
            selection = "all"
        elif name in unresolved:
            chosen = unresolved[name].selection
            selection = (
                f"assets=[{_keys(chosen.resolve(graph))}] "
                f"checks=[{_keys(chosen.resolve_checks(graph))}]"
            )
        else:
            selection = f"ops=[{','.join(sorted(n.name for n in job.graph.node_defs))}]"
        lines.append(
            f"job {name} executor={_executor(job.executor_def)} tags={_mapping(job.tags)} "
            f"partitions={partitions.name(job.partitions_def)} {selection}"
        )
    for sensor in sorted(repo.sensor_defs, key=lambda s: s.name):
        targets = sorted(t.job_name for t in sensor.targets)
        watched = getattr(sensor, "asset_selection", None)
        assets = f" assets=[{_keys(watched.resolve(graph))}]" if watched is not None else ""
        lines.append(
            f"sensor {sensor.name} type={type(sensor).__name__} "
            f"status={sensor.default_status.value} interval={sensor.minimum_interval_seconds} "
            f"jobs={targets}{assets}"
        )
    for schedule in sorted(repo.schedule_defs, key=lambda s: s.name):
        lines.append(
            f"schedule {schedule.name} cron={schedule.cron_schedule} "
            f"tz={schedule.execution_timezone} job={schedule.job_name} "
            f"status={schedule.default_status.value}"
        )
    return "\n".join(lines) + "\n"


def test_asset_graph_snapshot() -> None:
    """The full spec of every asset and check, and every job, sensor and schedule, as
    reviewed text: a refactoring of the wiring must leave it byte-identical.

    Set FLUX_UPDATE_SNAPSHOTS=1 to rewrite it after an intended change, then review the diff.
    """
    text = graph_snapshot(defs)
    if os.environ.get("FLUX_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text)
    assert text == SNAPSHOT.read_text()


def test_each_agency_is_one_ingest_step_with_its_agency_pool() -> None:
    """Every (agency, dataset) pair is loaded by exactly one step, its agency's, holding the
    agency's pool (one writer per agency file)."""
    registry = load_registry()
    steps = {
        a.node_def.name: a
        for a in defs.resolve_asset_graph().assets_defs
        if a.is_executable and a.node_def.name.endswith("__ingest")
    }
    pairs = [(a, d) for a in registry.agencies for d in a.datasets]
    assert len(steps) == len(registry.agencies)
    for agency, dataset in pairs:
        [assets] = [a for a in steps.values() if asset_keys(agency, dataset)[1] in a.keys]
        op = assets.node_def
        assert isinstance(op, dg.OpDefinition) and op.name == ingest_step_name(agency)
        assert op.pool == agency_pool(agency)
        assert set(asset_keys(agency, dataset)) <= set(assets.keys)
        assert assets.partitions_def == agency_partitions(agency)
        first = assets.partitions_def.get_first_partition_key()
        assert first == agency.onboarded.isoformat()  # nothing before onboarding


def test_a_subset_records_only_what_it_selected(tmp_path: Path) -> None:
    """A UI selection of the curated asset alone loads the day but reports only that asset
    (and its checks): no materialization of an asset the run did not select."""
    deliver(tmp_path, "nga", "media_items", DAY, rows=60, seed=31)
    curated = asset_keys(load_registry().agency("nga"), "media_items")[1]
    result = dg.materialize(
        ingest_assets([("nga", "media_items")]),
        selection=[curated],
        partition_key=DAY,
        resources={"warehouse": FluxWarehouse(home=str(tmp_path))},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    mats = result.asset_materializations_for_node("nga__ingest")
    assert [m.asset_key for m in mats] == [curated]
    assert {e.check_name for e in result.get_asset_check_evaluations()} == {
        "conservation",
        "contract_schema",
        "anomalies",
    }
