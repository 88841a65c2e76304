"""The real stack: ``flux dev`` (Dagster's webserver and daemon) on loopback against a real
PostgreSQL, driven only over GraphQL and the landing zone, as an engineer would.

One test walks the whole path so the stack starts once (~15 s here): list assets, checks,
sensors and schedules; launch a partitioned run through GraphQL and watch the queued run
coordinator and daemon take it to SUCCESS; drop a delivery into the landing zone and watch
its sensor start a run that succeeds; kill a run worker mid-run and watch run monitoring
mark the run failed and run retries re-execute it to SUCCESS; then SIGTERM ``flux dev``
and see every process of the stack gone. The measured seconds are printed (``-s``).

Here the code server sees its run worker exit and fails the run at once; a run whose code
server died too is caught by the launcher's health check (``test_crash_recovery``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.defs.ingest.assets import asset_keys
from flux_pipelines.defs.ingest.landing import landing_sensor_name
from flux_pipelines.faults import arm
from flux_pipelines.ingest.manifest import COMPLETION_MARKER
from flux_pipelines_tests.conftest import deliver

pytestmark = pytest.mark.slow

LOCATION = "flux"
REPOSITORY = "__repository__"
START_TIMEOUT = 180.0
RUN_TIMEOUT = 240.0
STOP_TIMEOUT = 90.0
LAUNCHED_DAY = "2026-03-02"
SENSED_DAY = "2026-03-03"

WORKSPACE_QUERY = """
query Workspace($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      jobs { name }
      schedules { name scheduleState { status } }
      sensors { name sensorState { status } }
      assetNodes {
        assetKey { path }
        groupName
        assetChecksOrError { ... on AssetChecks { checks { name } } }
      }
    }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUN_STATUS = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status tags { key value } startTime endTime creationTime }
  }
}
"""

RUNS_TAGGED = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status creationTime startTime endTime tags { key value } } }
  }
}
"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
# dagster.yaml: run monitoring polls every 10 s; one pass takes well under a second here.
DETECTION_BOUND = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc; the stack spawns several levels)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@dataclass
class Stack:
    process: subprocess.Popen[str]
    url: str
    log: Path
    started_seconds: float

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        reply = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        )
        reply.raise_for_status()
        body = reply.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def wait_for_run(self, run_id: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.graphql(RUN_STATUS, runId=run_id)["runOrError"]
            if run.get("status") in FINISHED:
                return run
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} did not finish in {timeout:.0f}s\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def stack(tmp_path: Path, pg_env: dict[str, str]) -> Iterator[Stack]:
    """``flux dev`` in its own session, as a user starts it; stopped by the test itself."""
    home = tmp_path / "flux"
    deliver(home, "nasa", "meteorites", LAUNCHED_DAY, rows=300, seed=31)
    port = _free_port()
    log = tmp_path / "flux_dev.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "FLUX_HOME")}
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flux_pipelines.cli.main", "dev", "--home", str(home),
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
            preexec_fn=_as_a_background_job,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    stack = Stack(process, url, log, 0.0)
    try:
        wait_until_serving(stack, started)
        stack.started_seconds = time.monotonic() - started
        yield stack
    finally:
        if process.poll() is None:  # the test failed before stopping it: leave nothing behind
            for pid in descendants(process.pid) | {process.pid}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()


def _as_a_background_job() -> None:
    """What a non-interactive shell does to a background job (``cmd &``), and more: flux dev
    must still start its services with the default dispositions and stop on SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def ignored_signals(pid: int) -> int:
    """The process's mask of ignored signals (``SigIgn`` in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigIgn for {pid}")


def wait_until_serving(stack: Stack, started: float) -> None:
    """Until the webserver answers and the code location has loaded."""
    while time.monotonic() - started < START_TIMEOUT:
        assert stack.process.poll() is None, f"flux dev exited:\n{stack.tail()}"
        try:
            data = stack.graphql(
                WORKSPACE_QUERY,
                selector={"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY},
            )
            if data["repositoryOrError"]["__typename"] == "Repository":
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(1)
    raise AssertionError(f"the webserver did not serve in {START_TIMEOUT:.0f}s\n{stack.tail()}")


def test_flux_dev_serves_runs_and_sensors_then_stops_on_sigterm(
    stack: Stack, tmp_path: Path
) -> None:
    registry = load_registry()
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    repo = stack.graphql(WORKSPACE_QUERY, selector=selector)["repositoryOrError"]
    assert "PostgreSQL" in stack.log.read_text(), "flux dev says which storage it uses"

    # What an engineer sees: every agency's assets, their checks, sensors and schedules.
    assets = {"/".join(a["assetKey"]["path"]): a for a in repo["assetNodes"]}
    for agency in registry.agencies:
        for dataset in agency.datasets:
            raw, curated, quarantine = (k.to_user_string() for k in asset_keys(agency, dataset))
            assert {raw, curated, quarantine} <= set(assets)
            checks = assets[curated]["assetChecksOrError"]["checks"]
            assert {"conservation", "contract_schema"} <= {c["name"] for c in checks}
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    datasets = {d for a in registry.agencies for d in a.datasets}
    assert {landing_sensor_name(d) for d in datasets} <= set(sensors)
    assert all(sensors[landing_sensor_name(d)] == "RUNNING" for d in datasets)
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repo["schedules"]}
    assert schedules and all(status == "RUNNING" for status in schedules.values()), schedules
    assert "ingest_nasa" in {j["name"] for j in repo["jobs"]}

    # A partitioned run launched over GraphQL: queued, dequeued by the daemon, succeeds.
    clicked = time.monotonic()
    run = stack.wait_for_run(launch(stack, selector, LAUNCHED_DAY))
    launch_seconds = time.monotonic() - clicked
    assert run["status"] == "SUCCESS", stack.tail()
    assert {"key": "dagster/partition", "value": LAUNCHED_DAY} in run["tags"]

    # A delivery dropped into the landing zone: its sensor requests a run, which succeeds.
    dropped = time.monotonic()
    deliver(Path(stack_home(stack)), "nasa", "meteorites", SENSED_DAY, rows=300, seed=32)
    # as the README asks agencies: a completion marker once the last file is written
    day_folder = Path(stack_home(stack)) / "landing" / "nasa" / "meteorites" / SENSED_DAY
    (day_folder / COMPLETION_MARKER).touch()
    sensed = wait_for_sensor_run(stack, SENSED_DAY)
    drop_seconds = time.monotonic() - dropped
    assert sensed["status"] == "SUCCESS", stack.tail()
    tags = {t["key"]: t["value"] for t in sensed["tags"]}
    assert tags["dagster/sensor_name"] == landing_sensor_name("meteorites")
    assert tags["flux/delivery"] and tags["dagster/run_key"].startswith("nasa/meteorites/")

    # A run worker killed mid-run: the daemon's run monitoring marks the run failed, run
    # retries re-execute it from failure once its pool slot is freed, and the retry succeeds.
    wait_until_idle(stack)
    fault = arm("ingest.started", "kill", stack_home(stack))
    killed_id = launch(stack, selector, LAUNCHED_DAY)
    died = wait_for_fault_taken(fault)
    killed = stack.wait_for_run(killed_id)
    detect_seconds = time.monotonic() - died
    assert killed["status"] == "FAILURE", stack.tail()
    assert detect_seconds < DETECTION_BOUND, f"run monitoring took {detect_seconds:.0f}s"
    retried = wait_for_tagged_run(stack, "dagster/parent_run_id", killed_id)
    retry_seconds = time.monotonic() - died
    assert retried["status"] == "SUCCESS", stack.tail()

    # SIGTERM to flux dev stops the webserver, the daemon and the code servers, though flux
    # dev was started with SIGINT and SIGTERM ignored: its services do not inherit that.
    processes = descendants(stack.process.pid)
    assert len(processes) >= 3, "webserver, daemon and code server run under flux dev"
    mask = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    services = psutil.Process(stack.process.pid).children()  # what flux dev started itself
    assert len(services) >= 2, "webserver and daemon run under flux dev"
    inheriting = [s.cmdline() for s in services if ignored_signals(s.pid) & mask]
    assert not inheriting, f"services ignoring SIGINT/SIGTERM: {inheriting}"
    stopping = time.monotonic()
    stack.process.send_signal(signal.SIGTERM)
    stack.process.wait(timeout=STOP_TIMEOUT)
    stop_seconds = time.monotonic() - stopping
    deadline = time.monotonic() + 10
    while any(alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in processes if alive(p)], f"left running:\n{stack.tail()}"
    assert stack.process.returncode == 0, stack.tail()

    print(
        f"\nflux dev serving after {stack.started_seconds:.1f}s; GraphQL launch -> SUCCESS "
        f"{launch_seconds:.1f}s; dropped file -> sensor run SUCCESS {drop_seconds:.1f}s; "
        f"killed run worker -> run FAILURE {detect_seconds:.1f}s, -> retry SUCCESS "
        f"{retry_seconds:.1f}s; "
        f"SIGTERM -> all {len(processes)} processes gone {stop_seconds:.1f}s"
    )


def stack_home(stack: Stack) -> str:
    """The FLUX_HOME ``flux dev`` was started with (from its command line)."""
    args = stack.process.args
    assert isinstance(args, list)
    return str(args[args.index("--home") + 1])


def launch(stack: Stack, selector: dict[str, str], day: str) -> str:
    """Launch nasa's job for one partition as the UI's Materialize button does; the run id."""
    launched = stack.graphql(
        LAUNCH_RUN,
        params={
            "selector": {**selector, "jobName": "ingest_nasa"},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    assert launched["run"]["status"] in ("QUEUED", "NOT_STARTED")
    return str(launched["run"]["runId"])


def wait_for_tagged_run(stack: Stack, key: str, value: str) -> dict[str, Any]:
    """The newest run tagged ``key=value`` once it has finished."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        runs = stack.graphql(RUNS_TAGGED, filter={"tags": [{"key": key, "value": value}]})
        results = runs["runsOrError"]["results"]
        if results and results[0]["status"] in FINISHED:
            return results[0]
        time.sleep(1)
    raise AssertionError(f"no finished run {key}={value} in {RUN_TIMEOUT:.0f}s\n{stack.tail()}")


def wait_for_sensor_run(stack: Stack, day: str) -> dict[str, Any]:
    """The sensor's run for ``day`` once it has finished (sensor interval 15 s)."""
    return wait_for_tagged_run(stack, "dagster/partition", day)


def wait_until_idle(stack: Stack) -> None:
    """No run queued or in flight (the sensor's first tick also loads the launched day)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        runs = stack.graphql(RUNS_TAGGED, filter={})["runsOrError"]["results"]
        if all(r["status"] in FINISHED for r in runs):
            return
        time.sleep(1)
    raise AssertionError(f"runs still in flight after {RUN_TIMEOUT:.0f}s\n{stack.tail()}")


def wait_for_fault_taken(fault: Path) -> float:
    """When the run worker took the armed crash point, i.e. killed itself."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while fault.exists():
        assert time.monotonic() < deadline, "no run reached the armed crash point"
        time.sleep(0.1)
    return time.monotonic()
