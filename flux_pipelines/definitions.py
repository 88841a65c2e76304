"""The Dagster code location: every domain's assets, jobs, sensors, schedules and resources."""

from __future__ import annotations

import os

import dagster as dg

from flux_pipelines.assets.cross_agency_factory import cross_agency_assets
from flux_pipelines.assets.publish_factory import catalog_assets
from flux_pipelines.assets.reconciliation_factory import recipient_links_asset
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.domains import collections, science, spending
from flux_pipelines.jobs import PARALLEL_EXECUTOR, agency_jobs, all_agencies_job, risk_job
from flux_pipelines.resources.warehouse import FLUX_HOME_ENV, FluxWarehouse
from flux_pipelines.schedules.daily import daily_refresh_job, daily_refresh_schedule
from flux_pipelines.sensors.landing import landing_sensors


def warehouse_resource() -> FluxWarehouse:
    """FLUX_HOME as an EnvVar when set at load (shown in the UI), else resolved at run time."""
    if os.environ.get(FLUX_HOME_ENV):
        return FluxWarehouse(home=dg.EnvVar(FLUX_HOME_ENV))
    return FluxWarehouse()


def build_definitions() -> dg.Definitions:
    registry = load_registry()
    refresh = daily_refresh_job(registry)
    per_agency = agency_jobs(registry)
    return dg.Definitions.merge(
        collections.definitions(registry),
        science.definitions(registry),
        spending.definitions(registry),
        dg.Definitions(
            assets=[
                *catalog_assets(registry),
                *cross_agency_assets(registry, recipient_links_asset(registry)),
            ],
            jobs=[*per_agency.values(), all_agencies_job(registry), risk_job(registry), refresh],
            sensors=landing_sensors(registry, per_agency),
            schedules=[daily_refresh_schedule(refresh)],
            resources={"warehouse": warehouse_resource()},
            # Ad hoc selections and UI backfills may span agencies: run them in parallel.
            executor=PARALLEL_EXECUTOR,
        ),
    )


defs = build_definitions()
