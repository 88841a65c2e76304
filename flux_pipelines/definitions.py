"""The Dagster code location: every domain's assets, jobs and resources, from contracts."""

from __future__ import annotations

import os

import dagster as dg

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.domains import collections, science, spending
from flux_pipelines.jobs import ingest_jobs
from flux_pipelines.resources.warehouse import FLUX_HOME_ENV, FluxWarehouse


def warehouse_resource() -> FluxWarehouse:
    """FLUX_HOME as an EnvVar when set at load (shown in the UI), else resolved at run time."""
    if os.environ.get(FLUX_HOME_ENV):
        return FluxWarehouse(home=dg.EnvVar(FLUX_HOME_ENV))
    return FluxWarehouse()


def build_definitions() -> dg.Definitions:
    registry = load_registry()
    return dg.Definitions.merge(
        collections.definitions(registry),
        science.definitions(registry),
        spending.definitions(registry),
        dg.Definitions(
            jobs=ingest_jobs(registry),
            resources={"warehouse": warehouse_resource()},
            executor=dg.in_process_executor,
        ),
    )


defs = build_definitions()
