"""JSON logs: a real partition load, in its own process with FLUX_LOG_FORMAT=json, writes
only JSON lines, and the line about the day carries the fields Loki or ELK filter on; and a
run started the way a schedule or the UI starts one (no logger in its run config, queued,
launched by the instance's run launcher into a code server's run worker) does too."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
import yaml

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.demo.generator import generate_rows, write_delivery
from flux_pipelines.instance.config import instance_config, prepare_dagster_home
from flux_pipelines_tests.receivers import free_port

AGENCY, DATASET, DAY = "nasa", "meteorites", "2026-01-05"

# The agency's ingest job, in process, against the home's instance, with the run config a
# landing sensor's run request carries (``CONSOLE_RUN_CONFIG``, pinned by the sensor tests).
RUN = """
import dagster as dg
from flux_pipelines.defs.ingest.assets import asset_keys
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.definitions import defs
from flux_pipelines.defs.ingest.jobs import agency_job_name
from flux_pipelines.ops.logs import CONSOLE_RUN_CONFIG

agency = load_registry().agency("nasa")
result = defs.resolve_job_def(agency_job_name(agency)).execute_in_process(
    instance=dg.DagsterInstance.get(),
    asset_selection=list(asset_keys(agency, "meteorites")),
    partition_key="2026-01-05",
    run_config=CONSOLE_RUN_CONFIG,
    raise_on_error=False,
)
"""


def _parse_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line as a JSON object, or an AssertionError quoting the first that
    is not one."""
    records = []
    for line in (line for line in text.splitlines() if line.strip()):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line in JSON mode: {line[:300]}") from None
        assert isinstance(record, dict), line[:300]
        records.append(record)
    return records


def _deliver_duplicate_id(home: Path) -> None:
    contract = load_registry().contract_for(DATASET, dt.date.fromisoformat(DAY))
    frame = generate_rows(contract, 20, seed=3, defect_rate=0.0).frame
    ids = frame.get_column("id").to_list()
    ids[1] = ids[0]  # two rows share an id: both are quarantined under id.unique
    folder = home / "landing" / AGENCY / DATASET / DAY
    folder.mkdir(parents=True)
    write_delivery(frame.with_columns(pl.Series("id", ids)), folder / "meteorites.csv", "csv")


def test_a_load_in_json_mode_writes_only_json_lines_with_the_filter_fields(
    tmp_path: Path,
) -> None:
    _deliver_duplicate_id(tmp_path)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(postgres=False)))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PG")},
        "FLUX_LOG_FORMAT": "json",
        "FLUX_HOME": str(tmp_path),
        "DAGSTER_HOME": str(dagster_home),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = _parse_lines(done.stdout + done.stderr)
    run_ids = {r["run_id"] for r in records if "run_id" in r}
    assert len(run_ids) == 1
    day = [r for r in records if r.get("rule") == "id.unique"]
    assert day, f"no record with rule id.unique among {len(records)}"
    record = day[0]
    assert record["run_id"] in run_ids
    assert record["job"] == "ingest_nasa"
    assert record["step"]
    assert (record["agency"], record["dataset"], record["partition"]) == (AGENCY, DATASET, DAY)
    assert record["file"] == "meteorites.csv"
    assert record["rules"] == {"id.unique": 2}
    assert "2 quarantined" in record["msg"]
    # Dagster's own events (materializations, checks) carry run, job, step and partition too
    events = [r for r in records if r.get("event") == "ASSET_MATERIALIZATION"]
    assert events and all(e["partition"] == DAY and e["step"] for e in events)


def test_the_default_console_stays_human_readable(tmp_path: Path) -> None:
    from flux_pipelines.ops.logs import flux_console_logger, json_logs

    assert os.environ.get("FLUX_LOG_FORMAT", "") != "json" and not json_logs()
    import dagster as dg

    logger = flux_console_logger.logger_fn(
        dg.build_init_logger_context(logger_config={"log_level": "INFO", "name": "t"})
    )
    assert not any("FluxJsonFormatter" in type(h.formatter).__name__ for h in logger.handlers)


# -- a run started as a schedule or the UI starts one -----------------------------------------
WORKSPACE = {
    "load_from": [{"grpc_server": {"host": "127.0.0.1", "port": 0, "location_name": "flux"}}]
}
CODE_SERVER_START = 120.0
RUN_TIMEOUT = 180.0


@pytest.fixture
def json_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with a delivery and the DAGSTER_HOME ``flux`` prepares, in JSON mode, on
    SQLite; this process's environment is restored afterwards."""
    for name in [k for k in os.environ if k.startswith("DAGSTER_PG")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FLUX_LOG_FORMAT", "json")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))  # restored after the test
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    _deliver_duplicate_id(tmp_path)
    prepare_dagster_home(tmp_path)  # points DAGSTER_HOME at tmp_path/dagster_home
    return tmp_path


@pytest.fixture
def code_server(json_home: Path) -> Iterator[tuple[int, Path]]:
    """The code location served by ``dagster api grpc`` in JSON mode (its own lines JSON
    too, ``--log-format json``); every run it starts writes to the same output file."""
    port, output = free_port(), json_home / "code_server.log"
    with output.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "api", "grpc", "-m", "flux_pipelines.definitions",
             "-h", "127.0.0.1", "-p", str(port), "--location-name", "flux",
             "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True,
        )  # fmt: skip
    try:
        yield port, output
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _launch_like_a_schedule(home: Path, port: int) -> str:
    """Create and queue a run of nasa's job for the day with no run config, as a schedule's
    run request or the UI's Materialize button does (``dagster job launch``: the instance's
    queued run coordinator), then start it the way the daemon's run queue does
    (``instance.launch_run``: the instance's run launcher asks the code server for a run
    worker). Returns the run id."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    workspace = home / "workspace.yaml"
    doc = json.loads(json.dumps(WORKSPACE))
    doc["load_from"][0]["grpc_server"]["port"] = port
    workspace.write_text(yaml.safe_dump(doc), encoding="utf-8")
    queued = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "launch", "-w", str(workspace),
         "-j", "ingest_nasa", "--tags", json.dumps({"dagster/partition": DAY})],
        capture_output=True, text=True, timeout=CODE_SERVER_START, env=dict(os.environ),
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr[-3000:]
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.QUEUED  # the coordinator of dagster.yaml
        assert not run.run_config.get("loggers")  # so Dagster's default console runs it
        target = WorkspaceFileTarget(paths=[str(workspace)])
        with WorkspaceProcessContext(instance, target) as context:
            instance.launch_run(run.run_id, context.create_request_context())
        return run.run_id


def _wait_for_run(run_id: str, output: Path) -> dg.DagsterRun:
    deadline = time.monotonic() + RUN_TIMEOUT
    with dg.DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run_id)
            assert run is not None
            if run.is_finished:
                return run
            time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish\n{output.read_text()[-3000:]}")


def _wait_for_code_server(port: int, output: Path) -> None:
    deadline = time.monotonic() + CODE_SERVER_START
    while time.monotonic() < deadline:
        done = subprocess.run(
            [sys.executable, "-m", "dagster", "api", "grpc-health-check", "-p", str(port)],
            capture_output=True, timeout=60,
        )  # fmt: skip
        if done.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"the code server did not serve\n{output.read_text()[-3000:]}")


@pytest.mark.slow
def test_a_run_started_like_a_schedule_or_the_ui_logs_only_json_lines(
    json_home: Path, code_server: tuple[int, Path]
) -> None:
    port, output = code_server
    _wait_for_code_server(port, output)
    run_id = _launch_like_a_schedule(json_home, port)
    run = _wait_for_run(run_id, output)
    assert run.status == dg.DagsterRunStatus.SUCCESS, output.read_text()[-3000:]
    time.sleep(1)  # the run worker's last lines reach the file

    records = _parse_lines(output.read_text())  # the code server's and the run's: all JSON
    ours = [r for r in records if r.get("run_id") == run_id]
    assert {r["job"] for r in ours} == {"ingest_nasa"}
    assert {"PIPELINE_START", "STEP_START", "ASSET_MATERIALIZATION", "PIPELINE_SUCCESS"} <= {
        r.get("event") for r in ours
    }
    step = [r for r in ours if r.get("step")]
    assert step and {(r["step"], r["agency"], r["partition"]) for r in step} == {
        ("nasa__ingest", AGENCY, DAY)
    }
    about_assets = [r for r in step if r.get("event") in ("ASSET_MATERIALIZATION",
                                                            "ASSET_CHECK_EVALUATION")]  # fmt: skip
    assert len(about_assets) >= 6 and {r["dataset"] for r in about_assets} == {DATASET}
    [day] = [r for r in ours if r.get("rule") == "id.unique"]
    assert (day["dataset"], day["file"], day["rules"]) == (
        DATASET,
        "meteorites.csv",
        {"id.unique": 2},
    )
    # no line of the run escaped its fields (Dagster's plain console writes the run id)
    assert not [r for r in records if run_id in json.dumps(r) and r.get("run_id") != run_id
                and r.get("logger", "").startswith("dagster")]  # fmt: skip


def test_json_mode_turns_console_handlers_json_and_names_agencies_by_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import logging

    from flux_pipelines.ops.logs import FluxJsonFormatter, JsonConsoleMixin, _ingest_index

    def attached(handler: logging.Handler) -> logging.Handler:
        JsonConsoleMixin("flux.test").addHandler(handler)
        return handler

    monkeypatch.setenv("FLUX_LOG_FORMAT", "json")
    assert isinstance(attached(logging.StreamHandler(sys.stderr)).formatter, FluxJsonFormatter)
    to_file = attached(logging.FileHandler(tmp_path / "a.log"))
    assert not isinstance(to_file.formatter, FluxJsonFormatter)  # not the console: left as is
    to_file.close()
    monkeypatch.setenv("FLUX_LOG_FORMAT", "text")
    assert attached(logging.StreamHandler(sys.stderr)).formatter is None  # human mode: as is

    # a run tag says national_archives (a Dagster name); the lines say the agency's id
    from flux_pipelines.names import ingest_keys

    registry = load_registry()
    archives = registry.agency("national-archives")
    index = _ingest_index()
    assert index.agency_ids[archives.key] == "national-archives" != archives.key
    raw, curated, quarantine = ingest_keys(archives, "constituents")
    assert {index.assets[k] for k in (raw, curated, quarantine)} == {
        ("national-archives", "constituents")
    }


@pytest.mark.parametrize(("mode", "json_flag"), [("json", True), ("", False)])
def test_flux_dev_asks_dagsters_own_services_for_the_same_format(
    monkeypatch: pytest.MonkeyPatch, mode: str, json_flag: bool
) -> None:
    from flux_pipelines.cli.dev import code_server_command, daemon_command, webserver_command

    monkeypatch.setenv("FLUX_LOG_FORMAT", mode)
    workspace = Path("workspace.yaml")
    webserver, daemon = webserver_command("127.0.0.1", 3000, workspace), daemon_command(workspace)
    code_server = code_server_command(Path("code-server.sock"))
    assert code_server[1:3] == ["code-server", "start"]
    for command in (webserver, daemon, code_server):
        assert (command[-2:] == ["--log-format", "json"]) is json_flag
    assert Path(webserver[0]).name == "dagster-webserver"
    assert Path(daemon[0]).name == "dagster-daemon" and daemon[1] == "run"
