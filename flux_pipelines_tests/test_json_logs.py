"""JSON logs: a real partition load, in its own process with FLUX_LOG_FORMAT=json, writes
only JSON lines, and the line about the day carries the fields Loki or ELK filter on."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.demo.generator import generate_rows, write_delivery
from flux_pipelines.instance.config import instance_config

AGENCY, DATASET, DAY = "nasa", "meteorites", "2026-01-05"

# The agency's ingest job, in process, against the home's instance, with the run config a
# landing sensor's run request carries (``CONSOLE_RUN_CONFIG``, pinned by the sensor tests).
RUN = """
import dagster as dg
from flux_pipelines.assets.ingest_factory import asset_keys
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.definitions import defs
from flux_pipelines.jobs import agency_job_name
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
    import yaml

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
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line in JSON mode: {line[:300]}") from None
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
