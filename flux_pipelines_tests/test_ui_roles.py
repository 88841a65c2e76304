"""Viewer and operator in the Dagster UI: two real webservers, one instance, one code server.

Flux's roles (contracts/access.yaml) put viewers on Dagster's read-only webserver
(``dagster-webserver --read-only``) and operators on the full one, each behind its own
oauth2-proxy (deploy/). This test starts what those proxies forward to: a gRPC code server
for the Flux definitions, an operator webserver and a ``--read-only`` viewer webserver over
the same instance (the project's dagster.yaml, embedded SQLite storage). It then sends both
the same mutations the UI sends: launching a run of ``ingest_nasa``, stopping and starting
a landing sensor, launching a partition backfill, reporting and wiping an asset
materialization. The viewer's server must refuse each with ``UnauthorizedError`` and change
nothing; the operator's must do each; and the viewer's server must still answer queries
(runs, backfills, sensors, assets), where it sees what the operator did.

No daemon runs: a launched run stays QUEUED and a backfill REQUESTED, which is all the
test needs (it checks that they were created, not executed).
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

import pytest
import requests
import yaml

from flux_pipelines.defs.ingest.landing import landing_sensor_name
from flux_pipelines.instance.config import PG_ENV, instance_config

pytestmark = pytest.mark.slow

LOCATION = "flux"
REPOSITORY = "__repository__"
SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
JOB = "ingest_nasa"
DAY = "2026-03-02"
ASSET = {"path": ["nasa", "meteorites"]}
SENSOR = landing_sensor_name("meteorites")
START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
BIN = Path(sys.executable).parent

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId jobName status tags { key value } } }
  }
}
"""

SENSOR_STATE = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { name sensorState { id selectorId status } }
  }
}
"""

START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on Error { message }
  }
}
"""

STOP_SENSOR = """
mutation Stop($id: String, $selectorId: String) {
  stopSensor(id: $id, jobSelectorId: $selectorId) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on Error { message }
  }
}
"""

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

BACKFILLS = """
query Backfills {
  partitionBackfillsOrError {
    __typename
    ... on PartitionBackfills { results { id status } }
  }
}
"""

REPORT_MATERIALIZATION = """
mutation Report($params: ReportRunlessAssetEventsParams!) {
  reportRunlessAssetEvents(eventParams: $params) {
    __typename
    ... on Error { message }
  }
}
"""

WIPE = """
mutation Wipe($ranges: [PartitionsByAssetSelector!]!) {
  wipeAssets(assetPartitionRanges: $ranges) {
    __typename
    ... on AssetWipeSuccess { assetPartitionRanges { assetKey { path } } }
    ... on Error { message }
  }
}
"""

ASSET_MATERIALIZED = """
query Asset($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions) { partition runId } }
  }
}
"""

LOCATION_LOADED = """
query Loaded($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository { jobs { name } }
    ... on Error { message }
  }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One process group started by the test, with its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def tail(self) -> str:
        return f"--- {self.name} log ---\n" + self.log.read_text(errors="replace")[-3000:]

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        reply = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        )
        reply.raise_for_status()
        body = reply.json()
        assert "errors" not in body, f"{self.name}: {body['errors']}"
        return body["data"]

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL if it is still there after STOP_TIMEOUT."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers of the group
        self.process.wait()


def start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Server:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return Server(name, process, log)


def wait_for_code_server(server: Server, port: int, deadline: float) -> None:
    """Until the code server answers a gRPC ping (it loads the definitions first)."""
    from dagster._core.errors import DagsterUserCodeUnreachableError
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    while time.monotonic() < deadline:
        assert server.process.poll() is None, f"the code server exited\n{server.tail()}"
        with contextlib.suppress(DagsterUserCodeUnreachableError):
            if client.ping("flux")["echo"] == "flux":
                return
        time.sleep(0.5)
    raise AssertionError(f"the code server did not answer in {START_TIMEOUT:.0f}s\n{server.tail()}")


def wait_for_webserver(server: Server, deadline: float) -> None:
    """Until /server_info answers and the Flux code location is loaded."""
    while time.monotonic() < deadline:
        assert server.process.poll() is None, f"{server.name} exited\n{server.tail()}"
        try:
            if requests.get(f"{server.url}/server_info", timeout=5).ok:
                loaded = server.graphql(LOCATION_LOADED, selector=SELECTOR)["repositoryOrError"]
                if loaded["__typename"] == "Repository":
                    return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{server.name} did not serve in {START_TIMEOUT:.0f}s\n{server.tail()}")


@dataclass
class Pair:
    operator: Server
    viewer: Server
    started_seconds: float


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """A code server, then an operator webserver and a read-only viewer webserver on it."""
    root = tmp_path_factory.mktemp("ui_roles")
    home, dagster_home = root / "flux", root / "dagster_home"
    home.mkdir()
    dagster_home.mkdir()
    # The project's instance (queued run coordinator, limits, launcher), SQLite storage.
    (dagster_home / "dagster.yaml").write_text(
        yaml.safe_dump(instance_config(postgres=False)), encoding="utf-8"
    )
    code_port, operator_port, viewer_port = free_port(), free_port(), free_port()
    workspace = root / "workspace.yaml"
    grpc = {"host": "127.0.0.1", "port": code_port, "location_name": LOCATION}
    workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": grpc}]}), "utf-8")
    env = {k: v for k, v in os.environ.items() if k not in PG_ENV}
    env.update(DAGSTER_HOME=str(dagster_home), FLUX_HOME=str(home))

    started = time.monotonic()
    deadline = started + START_TIMEOUT
    code_server = start(
        "code-server",
        [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(code_port),
         "-m", "flux_pipelines.definitions"],
        env, root,
    )  # fmt: skip
    running = [code_server]
    try:
        wait_for_code_server(code_server, code_port, deadline)
        webserver = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-w", str(workspace)]
        operator = start("operator", [*webserver, "-p", str(operator_port)], env, root)
        running.append(operator)
        viewer = start("viewer", [*webserver, "-p", str(viewer_port), "--read-only"], env, root)
        running.append(viewer)
        operator.url = f"http://127.0.0.1:{operator_port}"
        viewer.url = f"http://127.0.0.1:{viewer_port}"
        wait_for_webserver(operator, deadline)
        wait_for_webserver(viewer, deadline)
        yield Pair(operator, viewer, time.monotonic() - started)
    finally:
        for server in reversed(running):
            server.stop()
        for server in running:
            assert server.process.returncode is not None


def runs(server: Server, **filter_: Any) -> list[dict[str, Any]]:
    result = server.graphql(RUNS, filter=filter_)["runsOrError"]
    assert result["__typename"] == "Runs", result
    return result["results"]


def launch(server: Server) -> dict[str, Any]:
    """Launch ingest_nasa for one day, as the UI's Materialize button does."""
    return server.graphql(
        LAUNCH_RUN,
        params={
            "selector": {**SELECTOR, "jobName": JOB},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DAY}]},
        },
    )["launchRun"]


def assert_refused(result: dict[str, Any], what: str) -> None:
    assert result["__typename"] == "UnauthorizedError", f"{what}: {result}"
    assert result["message"], what


def sensor_state(server: Server) -> dict[str, Any]:
    sensor = server.graphql(SENSOR_STATE, selector={**SELECTOR, "sensorName": SENSOR})
    assert sensor["sensorOrError"]["__typename"] == "Sensor", sensor
    return sensor["sensorOrError"]["sensorState"]


def backfill_ids(server: Server) -> set[str]:
    result = server.graphql(BACKFILLS)["partitionBackfillsOrError"]
    assert result["__typename"] == "PartitionBackfills", result
    return {b["id"] for b in result["results"]}


def materialized_days(server: Server) -> list[str]:
    asset = server.graphql(ASSET_MATERIALIZED, key=ASSET, partitions=[DAY])["assetOrError"]
    assert asset["__typename"] == "Asset", asset
    return [m["partition"] for m in asset["assetMaterializations"]]


def test_viewer_server_refuses_a_launch_the_operator_server_accepts(servers: Pair) -> None:
    operator, viewer = servers.operator, servers.viewer
    assert runs(viewer) == runs(operator) == []

    began = time.monotonic()
    assert_refused(launch(viewer), "launchRun on the read-only webserver")
    assert runs(operator) == [], "a refused launch must create no run"

    launched = launch(operator)
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    # The queued run coordinator holds it (no daemon here): created, not executed.
    assert launched["run"]["status"] == "QUEUED"
    # The viewer reads the same instance: it sees the operator's run, and only that one.
    for server in (operator, viewer):
        (seen,) = runs(server)
        assert seen["runId"] == run_id and seen["jobName"] == JOB, server.name
        assert {"key": "dagster/partition", "value": DAY} in seen["tags"]
    print(
        f"\nservers ready after {servers.started_seconds:.1f}s; "
        f"both launches answered in {time.monotonic() - began:.1f}s"
    )


def test_viewer_server_refuses_to_stop_or_start_a_sensor(servers: Pair) -> None:
    operator, viewer = servers.operator, servers.viewer
    state = sensor_state(viewer)
    assert state["status"] == "RUNNING"  # landing sensors run by default
    ids = {"id": state["id"], "selectorId": state["selectorId"]}
    selector = {**SELECTOR, "sensorName": SENSOR}

    assert_refused(viewer.graphql(STOP_SENSOR, **ids)["stopSensor"], "stopSensor (viewer)")
    assert sensor_state(operator)["status"] == "RUNNING"
    stopped = operator.graphql(STOP_SENSOR, **ids)["stopSensor"]
    assert stopped["instigationState"]["status"] == "STOPPED", stopped
    assert sensor_state(viewer)["status"] == "STOPPED"

    refused = viewer.graphql(START_SENSOR, selector=selector)["startSensor"]
    assert_refused(refused, "startSensor (viewer)")
    assert sensor_state(operator)["status"] == "STOPPED"
    started = operator.graphql(START_SENSOR, selector=selector)["startSensor"]
    assert started["sensorState"]["status"] == "RUNNING", started
    assert sensor_state(viewer)["status"] == "RUNNING"


def test_viewer_server_refuses_a_backfill(servers: Pair) -> None:
    operator, viewer = servers.operator, servers.viewer
    params = {
        "partitionsByAssets": [
            {"assetKey": ASSET, "partitions": {"range": {"start": DAY, "end": "2026-03-04"}}}
        ],
        "title": "ui roles test",
    }
    before = backfill_ids(viewer)
    refused = viewer.graphql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
    assert_refused(refused, "launchPartitionBackfill (viewer)")
    assert backfill_ids(operator) == before

    accepted = operator.graphql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
    assert accepted["__typename"] == "LaunchBackfillSuccess", accepted
    assert backfill_ids(viewer) == before | {accepted["backfillId"]}


def test_viewer_server_refuses_to_report_or_wipe_asset_events(servers: Pair) -> None:
    operator, viewer = servers.operator, servers.viewer
    report = {"eventType": "ASSET_MATERIALIZATION", "assetKey": ASSET, "partitionKeys": [DAY]}
    refused = viewer.graphql(REPORT_MATERIALIZATION, params=report)["reportRunlessAssetEvents"]
    assert_refused(refused, "reportRunlessAssetEvents (viewer)")
    assert materialized_days(operator) == []

    reported = operator.graphql(REPORT_MATERIALIZATION, params=report)
    assert reported["reportRunlessAssetEvents"]["__typename"] == "ReportRunlessAssetEventsSuccess"
    assert materialized_days(viewer) == [DAY]

    ranges = [{"assetKey": ASSET}]
    assert_refused(viewer.graphql(WIPE, ranges=ranges)["wipeAssets"], "wipeAssets (viewer)")
    assert materialized_days(operator) == [DAY], "a refused wipe must keep the history"

    wiped = operator.graphql(WIPE, ranges=ranges)["wipeAssets"]
    assert wiped["__typename"] == "AssetWipeSuccess", wiped
    assert materialized_days(viewer) == []
