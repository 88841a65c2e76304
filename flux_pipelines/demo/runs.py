"""In-process Dagster runs over a range of days: the demo's loads, and the backfill bench's.

Why here: ``flux demo`` and the backfill benchmark both load seeded deliveries one run per
agency over all their days (a single-run backfill); keeping that next to the generator, not
in the CLI, lets the bench use it without importing the command line.
"""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg
import typer

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.defs.ingest.jobs import QUIET_LOGS, agency_job_name
from flux_pipelines.names import RANGE_END_TAG, RANGE_START_TAG


def run_range(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    days: list[dt.date],
    keys: list[dg.AssetKey] | None = None,
) -> dg.ExecuteInProcessResult:
    """One in-process run of ``job`` over the days (a single-run backfill), quietly."""
    return job.execute_in_process(
        instance=instance,
        asset_selection=keys,
        run_config=QUIET_LOGS,
        tags={
            RANGE_START_TAG: days[0].isoformat(),
            RANGE_END_TAG: days[-1].isoformat(),
            "flux/source": "flux demo",
        },
        raise_on_error=False,
    )


def materialize_agencies(agencies: list[str], days: list[dt.date]) -> list[str]:
    """One Dagster run per agency over the whole day range; returns agencies whose run failed."""
    # the full definitions load when runs are made, not when the module is imported
    from flux_pipelines.definitions import defs

    registry = load_registry()
    instance = dg.DagsterInstance.get()
    failed: list[str] = []
    for agency_id in agencies:
        agency = registry.agency(agency_id)
        job = defs.resolve_job_def(agency_job_name(agency))
        started = time.perf_counter()
        result = run_range(job, instance, days)
        status = "ok" if result.success else "FAILED"
        typer.echo(
            f"run {result.run_id[:8]} {agency_id:<20} {len(days)} day(s) "
            f"{time.perf_counter() - started:5.1f}s {status}"
        )
        if not result.success:
            failed.append(agency_id)
    return failed
