"""Ingest's definitions: one ingest step per agency, its job, one landing sensor per dataset."""

from __future__ import annotations

import dagster as dg

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.defs.ingest.assets import ingest_assets
from flux_pipelines.defs.ingest.jobs import agency_jobs
from flux_pipelines.defs.ingest.landing import landing_sensors


def definitions(registry: Registry) -> dg.Definitions:
    jobs = agency_jobs(registry)
    return dg.Definitions(
        assets=ingest_assets(registry),
        jobs=list(jobs.values()),
        sensors=landing_sensors(registry, jobs),
    )
