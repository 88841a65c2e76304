"""Crash recovery against a real PostgreSQL instance: kill -9 and a storage outage mid-run.

Each scenario lands version A of a delivery, loads it, lands a corrected version B, and
makes the run that loads B die at a named point (``flux_pipelines.faults``). What must hold:
the partition is either all A or all B (never a mix, never duplicates); the dead run is
detected and marked failed by run monitoring through the launcher's health check; and
re-execution from failure ends with exactly B, every row accounted for.

Runs execute in a separate process (``flux_pipelines_tests.run_worker``), the way Dagster's
run worker does, so SIGKILL is real and Postgres holds the only record of the run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from flux_pipelines.faults import arm
from flux_pipelines.instance.config import prepare_dagster_home
from flux_pipelines.names import agency_db
from flux_pipelines_tests.conftest import deliver, materialize
from flux_pipelines_tests.run_worker import main as run_in_process
from flux_pipelines_tests.run_worker import nasa_meteorites, two_agencies

pytestmark = pytest.mark.slow

DAY = "2026-03-02"
ROWS_A, ROWS_B = 300, 420
WORKER_TIMEOUT = 300


@pytest.fixture
def home(tmp_path: Path, pg_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """FLUX_HOME and a DAGSTER_HOME whose instance stores runs in the test's Postgres DB."""
    flux_home = tmp_path / "flux"
    monkeypatch.setenv("FLUX_HOME", str(flux_home))
    monkeypatch.setenv("DAGSTER_HOME", str(flux_home / "dagster_home"))
    info = prepare_dagster_home(flux_home)
    assert info.storage == "postgres"
    return flux_home


def start_worker(job: str, day: str = DAY) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flux_pipelines_tests.run_worker", job, day],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )


def run_worker(job: str, day: str = DAY) -> tuple[int, str]:
    proc = start_worker(job, day)
    out, _ = proc.communicate(timeout=WORKER_TIMEOUT)
    return proc.returncode, out


def latest_run(instance: dg.DagsterInstance) -> dg.RunRecord:
    records = instance.get_run_records(limit=1)
    assert records, "no run was recorded in Postgres"
    return records[0]


def curated(home: Path, agency: str = "nasa", dataset: str = "meteorites") -> list[tuple]:
    with duckdb.connect(str(agency_db(home, agency)), read_only=True) as c:
        return c.execute(
            f"SELECT * EXCLUDE (_run_id, _loaded_at) FROM {dataset} "
            "WHERE _partition_date = ? ORDER BY _file, _row_number",
            [DAY],
        ).fetchall()


def accounting(home: Path, agency: str = "nasa", dataset: str = "meteorites") -> dict[str, Any]:
    """What the agency file and the folders beside it say about the partition."""
    db = agency_db(home, agency)
    raw = home / "warehouse" / agency / "raw" / dataset
    published = home / "published" / agency / dataset / f"{DAY}.parquet"
    with duckdb.connect(str(db), read_only=True) as c:

        def one(sql: str) -> Any:
            return c.execute(sql, [DAY]).fetchone()[0]  # type: ignore[index]

        return {
            "deliveries": one(
                f"SELECT count(*) FROM _flux_deliveries WHERE dataset = '{dataset}' "
                "AND _partition_date = ?"
            ),
            "rows_read": one(
                f"SELECT sum(rows_read) FROM _flux_deliveries WHERE dataset = '{dataset}' "
                "AND _partition_date = ?"
            ),
            "curated": one(f"SELECT count(*) FROM {dataset} WHERE _partition_date = ?"),
            "curated_distinct": one(
                f"SELECT count(DISTINCT (_file, _row_number)) FROM {dataset} "
                "WHERE _partition_date = ?"
            ),
            "quarantined": one(
                f"SELECT count(DISTINCT _row_number) FROM {dataset}_quarantine "
                "WHERE _partition_date = ?"
            ),
            "raw": c.execute(
                "SELECT count(*) FROM read_parquet(?)",
                [str(raw / f"_partition_date={DAY}" / "*.parquet")],
            ).fetchone()[0],  # type: ignore[index]
            "published": (
                c.execute("SELECT count(*) FROM read_parquet(?)", [str(published)]).fetchone()[0]  # type: ignore[index]
                if published.exists()
                else 0
            ),
            "leftovers": sorted(p.name for p in raw.glob(".*")),
        }


@pytest.fixture(scope="module")
def expected_b(tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    """Delivery B loaded once, cleanly, in a separate home: what recovery must end with."""
    ref = tmp_path_factory.mktemp("reference")
    deliver(ref, "nasa", "meteorites", DAY, rows=ROWS_B, seed=12)
    assert materialize(ref, [("nasa", "meteorites")], DAY).success
    return curated(ref)


def land_a_then_b(home: Path) -> list[tuple]:
    """Load version A through a clean run, then land B; returns A's curated rows.

    A's run needs no process of its own (nothing kills it): it runs here, as the worker
    would, which spares a Python start and a definitions load per scenario."""
    deliver(home, "nasa", "meteorites", DAY, rows=ROWS_A, seed=11)
    assert run_in_process("nasa_meteorites", DAY) == 0, "version A did not load"
    rows_a = curated(home)
    assert rows_a
    deliver(home, "nasa", "meteorites", DAY, rows=ROWS_B, seed=12)
    return rows_a


def detect_dead_run(instance: dg.DagsterInstance) -> tuple[dg.DagsterRun, float]:
    """One pass of the daemon's run monitoring over the STARTED run (the daemon does this
    every ``run_monitoring.poll_interval_seconds``); returns the run and the pass's seconds."""
    record = latest_run(instance)
    assert record.dagster_run.status == dg.DagsterRunStatus.STARTED, (
        "a killed run worker cannot report its own end: storage still says STARTED"
    )
    started = time.perf_counter()
    monitor_started_run(instance, None, record, logging.getLogger("run_monitoring"))  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    run = instance.get_run_by_id(record.dagster_run.run_id)
    assert run is not None
    return run, elapsed


def free_pool_slots(instance: dg.DagsterInstance, run_id: str, pool: str) -> set[str]:
    """Release the pool slots the dead run still holds, as the daemon's concurrency pass does
    ``run_monitoring.free_slots_after_run_end_seconds`` after a run ends (a dead step cannot
    give its slot back; until then a re-execution's steps wait on the agency pool).
    Returns the steps of ``run_id`` that held a slot of ``pool``."""
    storage = instance.event_log_storage
    held = {
        s.step_key for s in storage.get_concurrency_info(pool).claimed_slots if s.run_id == run_id
    }
    storage.free_concurrency_slots_for_run(run_id)
    still = {s.run_id for s in storage.get_concurrency_info(pool).claimed_slots}
    assert run_id not in still, f"{pool} slots of {run_id} were not freed"
    return held


def reexecute_from_failure(instance: dg.DagsterInstance, job: Any, run_id: str) -> Any:
    """Re-execute from failure as the UI and run retries do: the parent's partition tag
    carries over (``execute_job`` itself keeps only the tags it is given)."""
    parent = instance.get_run_by_id(run_id)
    assert parent is not None
    return dg.execute_job(
        dg.reconstructable(job),
        instance=instance,
        tags={"dagster/partition": parent.tags["dagster/partition"], "flux/source": "retry"},
        reexecution_options=dg.ReexecutionOptions.from_failure(run_id, instance),
        raise_on_error=False,
    )


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert records, "the run has no RUN_FAILURE event"
    return records[-1].event_log_entry.message or ""


def assert_recovered_to_b(home: Path, expected: list[tuple]) -> None:
    assert curated(home) == expected
    facts = accounting(home)
    assert facts["deliveries"] == 1, "one file, one line in the deliveries log"
    assert facts["curated"] == facts["curated_distinct"], "duplicate curated rows"
    assert facts["rows_read"] == ROWS_B == facts["curated"] + facts["quarantined"]
    assert facts["raw"] == ROWS_B
    assert facts["published"] == facts["curated"]
    assert facts["leftovers"] == [], "a killed load's staging folder was left behind"


# Points before the DuckDB commit leave A; points after it leave B (committed, published or
# about to be). Either way there is no third state.
BEFORE_COMMIT = ("ingest.started", "loader.staged", "loader.inserted")
AFTER_COMMIT = ("loader.committed", "ingest.published")


@pytest.mark.parametrize("point", BEFORE_COMMIT + AFTER_COMMIT)
def test_run_process_killed_is_detected_and_reexecution_completes(
    home: Path, point: str, expected_b: list[tuple]
) -> None:
    rows_a = land_a_then_b(home)
    arm(point, "kill", home)
    code, out = run_worker("nasa_meteorites")
    assert code == -9, f"the run worker should have been killed at {point}: {out}"

    state = curated(home)
    assert state == (rows_a if point in BEFORE_COMMIT else expected_b)
    facts = accounting(home)
    assert facts["curated"] == facts["curated_distinct"]
    assert facts["deliveries"] == 1

    with dg.DagsterInstance.get() as instance:
        run, seconds = detect_dead_run(instance)
        assert run.status == dg.DagsterRunStatus.FAILURE
        message = failure_message(instance, run.run_id)
        assert "run worker" in message and "is gone" in message, message
        assert seconds < 5, f"one monitoring pass took {seconds:.1f}s"
        held = free_pool_slots(instance, run.run_id, "duckdb_nasa")
        assert held == {"nasa__ingest"}, "the killed step held the nasa slot"

        result = reexecute_from_failure(instance, nasa_meteorites, run.run_id)
        assert result.success
        assert result.dagster_run.parent_run_id == run.run_id
    assert_recovered_to_b(home, expected_b)


def test_step_process_killed_fails_the_run_and_reexecution_reruns_only_that_step(
    home: Path,
) -> None:
    for agency, dataset, seed in (
        ("nasa", "meteorites", 21),
        ("nasa", "contract_transactions", 22),
        ("nga", "media_items", 23),
    ):
        deliver(home, agency, dataset, DAY, rows=200, seed=seed)
    arm("loader.inserted", "kill", home)
    code, out = run_worker("two_agencies")
    assert code == 1 and "success=False" in out, out  # the run worker outlives its step

    with dg.DagsterInstance.get() as instance:
        run = latest_run(instance).dagster_run
        assert run.status == dg.DagsterRunStatus.FAILURE
        failed = {
            r.event_log_entry.step_key
            for r in instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
            ).records
        }
        succeeded = {
            r.event_log_entry.step_key
            for r in instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS
            ).records
        }
        # one step per agency: the killed one failed, the other agency's succeeded
        assert len(failed) == 1 and len(succeeded) == 1, (failed, succeeded)

        result = reexecute_from_failure(instance, two_agencies, run.run_id)
        assert result.success
        rerun = {
            r.event_log_entry.step_key
            for r in instance.get_records_for_run(
                result.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS
            ).records
        }
        assert rerun == failed, "re-execution from failure re-runs the failed step only"

    for agency, dataset in (
        ("nasa", "meteorites"),
        ("nasa", "contract_transactions"),
        ("nga", "media_items"),
    ):
        facts = accounting(home, agency, dataset)
        assert facts["deliveries"] == 1
        assert facts["rows_read"] == 200 == facts["curated"] + facts["quarantined"]
        assert facts["curated"] == facts["curated_distinct"] == facts["published"]


def test_postgres_stopped_mid_run_fails_readably_and_retry_succeeds(
    home: Path, postgres: Any, expected_b: list[tuple]
) -> None:
    rows_a = land_a_then_b(home)
    pause = arm("loader.inserted", "sleep 4", home)
    proc = start_worker("nasa_meteorites")
    deadline = time.monotonic() + 120
    while pause.exists():  # the run took the fault: it is inside the DuckDB transaction
        assert time.monotonic() < deadline and proc.poll() is None, "run never reached the point"
        time.sleep(0.1)
    postgres.stop("fast")
    try:
        out, _ = proc.communicate(timeout=WORKER_TIMEOUT)
        assert proc.returncode != 0, out
        # DuckDB does not need Postgres: the load may have committed B before the run
        # failed writing its events. Either way the partition is all A or all B.
        assert curated(home) in (rows_a, expected_b)
    finally:
        postgres.start()
        postgres.wait_ready()
    assert "DagsterPostgresException: too many retries for DB connection" in out, out[-3000:]

    with dg.DagsterInstance.get() as instance:
        # The worker could not record its failure; run monitoring does, with its reason.
        run, _ = detect_dead_run(instance)
        assert run.status == dg.DagsterRunStatus.FAILURE
        message = failure_message(instance, run.run_id)
        assert "run storage unavailable [transient]: PostgreSQL stopped answering" in message
        assert "re-execute from failure" in message
        free_pool_slots(instance, run.run_id, "duckdb_nasa")
        result = reexecute_from_failure(instance, nasa_meteorites, run.run_id)
        assert result.success
    assert_recovered_to_b(home, expected_b)
