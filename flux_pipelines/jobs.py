"""Jobs: one ingest job per agency (the unit of a run and of a backfill) and one for all."""

from __future__ import annotations

import dagster as dg

from flux_pipelines.assets.ingest_factory import DAILY
from flux_pipelines.contracts.registry import Agency, Registry

ALL_AGENCIES_JOB = "ingest_all_agencies"


def agency_job_name(agency: Agency) -> str:
    return f"ingest_{agency.key}"


def ingest_jobs(registry: Registry) -> list[dg.UnresolvedAssetJobDefinition]:
    """Per-agency jobs run in one process: their steps share one DuckDB file anyway."""
    jobs = [
        dg.define_asset_job(
            agency_job_name(agency),
            selection=dg.AssetSelection.groups(agency.key),
            partitions_def=DAILY,
            description=f"Validate and load {agency.name}'s deliveries for a day.",
            tags={"agency": agency.key},
        )
        for agency in registry.agencies
    ]
    jobs.append(
        dg.define_asset_job(
            ALL_AGENCIES_JOB,
            selection=dg.AssetSelection.all(),
            partitions_def=DAILY,
            description="Validate and load every agency's deliveries for a day.",
        )
    )
    return jobs
