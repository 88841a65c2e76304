"""Retries by error class: a DuckDB lock held by another process is transient (waited for,
then retried with jittered backoff); data and configuration errors fail once.

The lock is held by a real second process (a DuckDB lock is per process: a connection in
the test process would not conflict with the loader's).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import dagster as dg
import duckdb
import pytest

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.definitions import defs
from flux_pipelines.defs.agency import agency_partitions
from flux_pipelines.defs.ingest import step as ingest_step
from flux_pipelines.defs.ingest.assets import (
    TRANSIENT_RETRIES,
    asset_keys,
    build_ingest_asset,
    retry_delay,
)
from flux_pipelines.errors import TransientError
from flux_pipelines.ingest.manifest import write_manifest
from flux_pipelines.resources import warehouse as warehouse_module
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import deliver, ingest_assets

DAY = "2026-02-02"
LOCK_WAIT = 0.2  # seconds the loader waits for the lock before giving up on an attempt
RETRY_WAIT = 0.05  # what the patched backoff returns, so retries do not sleep for seconds

HOLDER = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1])
conn.execute("CREATE TABLE IF NOT EXISTS analyst_notes AS SELECT 'mine' AS note")
print("locked", flush=True)
sys.stdin.readline()
conn.close()
"""


class LockHolder:
    """Another process with the agency file open read-write (an analyst's session)."""

    def __init__(self, db: Path) -> None:
        db.parent.mkdir(parents=True, exist_ok=True)
        self.db = db
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._stdout().readline()
        assert line.strip() == "locked", f"the lock holder did not start: {line!r}"

    def _stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        assert self.proc.wait(timeout=30) == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def hold_lock() -> Iterator[Any]:
    started: list[LockHolder] = []

    def start(db: Path) -> LockHolder:
        holder = LockHolder(db)
        started.append(holder)
        return holder

    yield start
    for holder in started:
        holder.stop()


def events(result: Any, kind: str) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.event_type_value == kind]


def run_ingest(home: Path, **warehouse: Any) -> dg.ExecuteInProcessResult:
    """Materialize nasa/meteorites for DAY in process (the agency job's executor)."""
    return dg.materialize(
        ingest_assets([("nasa", "meteorites")]),
        partition_key=DAY,
        resources={"warehouse": FluxWarehouse(home=str(home), **warehouse)},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def failure_text(result: Any) -> str:
    [failure] = events(result, "STEP_FAILURE")
    data = failure.step_failure_data
    assert data is not None
    parts = [data.error.to_string() if data.error else ""]
    if data.user_failure_data is not None:
        parts.append(data.user_failure_data.description or "")
    return "\n".join(parts)


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(sql).fetchall()


# --- the warehouse's wait for a lock -------------------------------------------------------------


class FakeClock:
    """Stands in for ``time`` inside warehouse.py: sleeps are recorded, not slept."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_lock_wait_backs_off_with_jitter_then_raises_transient(
    tmp_path: Path, hold_lock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = FluxWarehouse(home=str(tmp_path), lock_wait_seconds=10)
    db = warehouse.agency_db("nasa")
    hold_lock(db)
    clock = FakeClock()
    monkeypatch.setattr(warehouse_module, "time", clock)

    with pytest.raises(TransientError) as raised, warehouse.connect("nasa"):
        pass

    message = str(raised.value)
    assert str(db) in message and "locked by another process after 10s" in message
    assert "retried" in message
    assert isinstance(raised.value.__cause__, duckdb.IOException)
    # waited the whole lock_wait_seconds, not more than one extra sleep
    assert sum(clock.sleeps[:-1]) < 10 <= sum(clock.sleeps)
    # exponential backoff from 0.1 s capped at 2 s, each sleep jittered by 0.5x..1.5x
    nominal = [min(0.1 * 2**i, 2.0) for i in range(len(clock.sleeps))]
    factors = [s / n for s, n in zip(clock.sleeps, nominal, strict=True)]
    assert all(0.5 <= f <= 1.5 for f in factors), factors
    assert len({round(f, 6) for f in factors}) > 1, "sleeps are not jittered"
    assert nominal[-1] == 2.0 and len(clock.sleeps) > 5


def test_lock_released_during_the_wait_is_absorbed(tmp_path: Path, hold_lock: Any) -> None:
    warehouse = FluxWarehouse(home=str(tmp_path), lock_wait_seconds=20)
    holder = hold_lock(warehouse.agency_db("nasa"))
    releaser = threading.Timer(0.5, holder.release)
    started = time.monotonic()
    releaser.start()
    try:
        with warehouse.connect("nasa") as conn:
            waited = time.monotonic() - started
            notes = conn.execute("SELECT note FROM analyst_notes").fetchall()
    finally:
        releaser.join()
    assert 0.5 <= waited < 5
    assert notes == [("mine",)]


def test_other_io_errors_are_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = FluxWarehouse(home=str(tmp_path), lock_wait_seconds=10)
    warehouse.agency_db("nasa").mkdir(parents=True)  # a folder where the file should be
    clock = FakeClock()
    monkeypatch.setattr(warehouse_module, "time", clock)
    with pytest.raises(duckdb.IOException) as raised, warehouse.connect("nasa"):
        pass
    assert not isinstance(raised.value, TransientError)
    assert clock.sleeps == []


# --- backoff between step retries --------------------------------------------------------------


def test_retry_delay_grows_exponentially_to_a_cap_with_full_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts = range(8)
    with monkeypatch.context() as patched:
        patched.setattr(random, "uniform", lambda low, high: high)
        highest = [retry_delay(n) for n in attempts]
        patched.setattr(random, "uniform", lambda low, high: low)
        lowest = [retry_delay(n) for n in attempts]
    assert highest == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert lowest == [0.0] * 8

    random.seed(20260202)
    samples = {n: [retry_delay(n) for _ in range(400)] for n in attempts}
    means = [sum(samples[n]) / 400 for n in attempts]
    assert means[:6] == sorted(means[:6]) and means[5] > 4 * means[2]
    for n, values in samples.items():
        bound = highest[n]
        assert all(0 <= v <= bound for v in values)
        assert min(values) < 0.05 * bound and max(values) > 0.95 * bound
        assert len(set(values)) == len(values)  # jittered: no two retries wait alike


# --- a locked agency file during a run ----------------------------------------------------------


def test_locked_agency_file_is_retried_and_loads_once_released(
    tmp_path: Path, hold_lock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = deliver(tmp_path, "nasa", "meteorites", DAY, rows=80, seed=3)
    db = FluxWarehouse(home=str(tmp_path)).agency_db("nasa")
    holder = hold_lock(db)
    asked: list[int] = []
    real_bounds: list[float] = []

    def backoff(attempt: int) -> float:
        asked.append(attempt)
        real_bounds.append(retry_delay(attempt))
        holder.release()  # the analyst closes the session while the step waits to retry
        return RETRY_WAIT

    monkeypatch.setattr(ingest_step, "retry_delay", backoff)

    result = run_ingest(tmp_path, lock_wait_seconds=LOCK_WAIT)

    assert result.success
    assert asked == [0]
    assert 0 <= real_bounds[0] <= 2.0
    [retry] = events(result, "STEP_UP_FOR_RETRY")
    retry_data = retry.event_specific_data
    assert retry_data.seconds_to_wait == RETRY_WAIT  # type: ignore[union-attr]
    error = retry_data.error  # type: ignore[union-attr]
    assert error.cause is not None and error.cause.cls_name == "TransientError"
    assert f"{db} is locked by another process" in error.cause.message
    assert len(events(result, "STEP_RESTARTED")) == 1
    assert len(events(result, "STEP_SUCCESS")) == 1
    # the second attempt loaded the delivery once; the analyst's table is untouched
    assert query(db, "SELECT count(*) FROM meteorites") == [(80 - len(planted),)]
    assert query(db, "SELECT count(*), count(DISTINCT run_id) FROM _flux_deliveries") == [(1, 1)]
    assert query(db, "SELECT note FROM analyst_notes") == [("mine",)]


def test_lock_held_throughout_fails_after_the_retries(
    tmp_path: Path, hold_lock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(tmp_path, "nasa", "meteorites", DAY, rows=30, seed=4)
    db = FluxWarehouse(home=str(tmp_path)).agency_db("nasa")
    holder = hold_lock(db)
    asked: list[int] = []
    monkeypatch.setattr(ingest_step, "retry_delay", lambda n: asked.append(n) or RETRY_WAIT)

    result = run_ingest(tmp_path, lock_wait_seconds=LOCK_WAIT)

    assert not result.success
    assert asked == list(range(TRANSIENT_RETRIES + 1))  # retry_number counts 0, 1, 2, ...
    assert len(events(result, "STEP_UP_FOR_RETRY")) == TRANSIENT_RETRIES
    text = failure_text(result)
    assert f"Exceeded max_retries of {TRANSIENT_RETRIES}" in text
    assert f"{db} is locked by another process" in text
    holder.release()
    assert query(db, "SELECT table_name FROM information_schema.tables") == [("analyst_notes",)]


# --- errors that are not retried ----------------------------------------------------------------


def _bad_delivery(home: Path) -> None:
    """A delivery whose manifest disagrees with the file: a delivery-level (data) error."""
    deliver(home, "nasa", "meteorites", DAY, rows=30, seed=5)
    write_manifest(home / "landing" / "nasa" / "meteorites" / DAY, {"meteorites.csv": 31})


def _assert_failed_once(result: Any) -> None:
    assert not result.success
    assert events(result, "STEP_UP_FOR_RETRY") == []
    assert len(events(result, "STEP_START")) == 1
    assert events(result, "STEP_RESTARTED") == []
    assert len(events(result, "STEP_FAILURE")) == 1


def test_data_error_fails_once_in_the_shipped_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    _bad_delivery(tmp_path)
    nasa = load_registry().agency("nasa")
    result = defs.resolve_job_def("ingest_nasa").execute_in_process(
        partition_key=DAY,
        asset_selection=list(asset_keys(nasa, "meteorites")),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    _assert_failed_once(result)
    text = failure_text(result)
    assert "delivery.manifest_row_count_mismatch" in text and "meteorites.csv" in text


def test_data_error_is_not_retried_even_under_a_retry_policy(tmp_path: Path) -> None:
    _bad_delivery(tmp_path)
    nasa = load_registry().agency("nasa")
    policy_job = dg.define_asset_job(
        "ingest_with_retry_policy",
        selection=dg.AssetSelection.assets(*asset_keys(nasa, "meteorites")),
        partitions_def=agency_partitions(load_registry().agency("nasa")),
        op_retry_policy=dg.RetryPolicy(max_retries=2),
    )

    def run(warehouse: FluxWarehouse) -> dg.ExecuteInProcessResult:
        job = dg.Definitions(
            assets=ingest_assets([("nasa", "meteorites")]),
            jobs=[policy_job],
            resources={"warehouse": warehouse},
        ).resolve_job_def(policy_job.name)
        return job.execute_in_process(
            partition_key=DAY, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
        )

    # the policy is live: an unclassified failure (a broken setting) is retried under it
    control = run(FluxWarehouse(home=str(tmp_path), memory_limit="lots"))
    assert len(events(control, "STEP_UP_FOR_RETRY")) == 2

    # a delivery error is a Failure that refuses retries
    result = run(FluxWarehouse(home=str(tmp_path)))
    _assert_failed_once(result)
    assert "delivery.manifest_row_count_mismatch" in failure_text(result)


def test_configuration_errors_fail_once(tmp_path: Path) -> None:
    """No contract version in force for the day, and a broken warehouse setting."""
    # the shipped agency jobs carry no op retry policy: only RetryRequested retries a step
    assert all(
        defs.resolve_job_def(f"ingest_{a.key}").op_retry_policy is None
        for a in load_registry().agencies
    )

    contracts = tmp_path / "contracts"
    shutil.copytree(load_registry().root, contracts)
    (contracts / "datasets" / "meteorites" / "2.0.0.odcs.yaml").unlink()  # only v1, from 2027
    contract_file = contracts / "datasets" / "meteorites" / "1.0.0.odcs.yaml"
    text = contract_file.read_text()
    assert 'value: "2000-01-01"' in text
    contract_file.write_text(text.replace('value: "2000-01-01"', 'value: "2027-01-01"', 1))
    registry = load_registry(contracts)
    home = tmp_path / "home"
    deliver(home, "nasa", "meteorites", DAY, rows=20, seed=6)

    result = dg.materialize(
        [build_ingest_asset(registry.agency("nasa"), ["meteorites"], registry, "nasa__meteorites")],
        partition_key=DAY,
        resources={"warehouse": FluxWarehouse(home=str(home))},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    _assert_failed_once(result)
    [failure] = events(result, "STEP_FAILURE")
    error = failure.step_failure_data.error  # type: ignore[union-attr]
    assert error is not None and error.cause is not None
    assert error.cause.cls_name == "ConfigurationError"
    assert f"no meteorites contract is in force on {DAY}" in error.cause.message

    broken = run_ingest(home, memory_limit="lots")
    _assert_failed_once(broken)
    assert "Memory must have a number" in failure_text(broken)


def test_risk_and_reconciliation_steps_retry_only_transient_errors() -> None:
    from flux_pipelines.defs.ingest.assets import transient_retries
    from flux_pipelines.errors import ConfigurationError, TransientError

    with pytest.raises(dg.RetryRequested) as retry, transient_retries(0):
        raise TransientError("file locked")
    assert retry.value.max_retries == 3 and 0 <= retry.value.seconds_to_wait <= 2
    with pytest.raises(ConfigurationError), transient_retries(0):
        raise ConfigurationError("fix the contract")
