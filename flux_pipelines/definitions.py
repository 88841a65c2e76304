"""The Dagster code location: every domain's assets, jobs, sensors, schedules and resources.

Every run worker and step process builds these before doing any work, so building them must
not grow faster than the registry: nothing heavy is imported (no DuckDB, no scikit-learn:
the asset bodies import their step code when a step runs), what all agencies share is built
once, the cyclic garbage collector is paused while the definitions and their asset graph are
built, and what they built is then frozen out of later collections (``collector_paused``).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from flux_pipelines.assets.cross_agency_factory import cross_agency_assets
from flux_pipelines.assets.export_factory import export_assets
from flux_pipelines.assets.ingest_factory import ingest_assets
from flux_pipelines.assets.publish_factory import catalog_assets
from flux_pipelines.assets.reconciliation_factory import recipient_links_asset
from flux_pipelines.assets.status_factory import (
    build_delivery_status_asset,
    delivery_status_sensor,
)
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.domains import spending
from flux_pipelines.home import FLUX_HOME_ENV
from flux_pipelines.jobs import PARALLEL_EXECUTOR, agency_jobs, risk_jobs
from flux_pipelines.ops.alert_sensors import alert_sensors
from flux_pipelines.ops.logs import flux_loggers
from flux_pipelines.ops.purge_job import purge_job, purge_schedule
from flux_pipelines.resources.warehouse import FluxWarehouse
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
    delivery_status = build_delivery_status_asset(registry)
    purge = purge_job(registry)
    return dg.Definitions.merge(
        spending.definitions(registry),
        dg.Definitions(
            assets=[
                *ingest_assets(registry),
                *catalog_assets(registry),
                *cross_agency_assets(
                    registry,
                    [*recipient_links_asset(registry), delivery_status, *export_assets(registry)],
                ),
            ],
            jobs=[*per_agency.values(), *risk_jobs(registry).values(), refresh, purge],
            sensors=[
                *landing_sensors(registry, per_agency),
                delivery_status_sensor(delivery_status),
                *alert_sensors(registry),
            ],
            schedules=[daily_refresh_schedule(refresh), purge_schedule(purge)],
            resources={"warehouse": warehouse_resource()},
            # Ad hoc selections and UI backfills may span agencies: run them in parallel.
            executor=PARALLEL_EXECUTOR,
            # Dagster's console logger; JSON lines when FLUX_LOG_FORMAT=json (ops/logs.py).
            loggers=flux_loggers(),
        ),
    )


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (if it runs) for the block, then freeze what the
    block built.

    Building the definitions creates some 3 x 10^5 container objects that all stay alive
    for the life of the process: the collector would run ~900 times over the growing heap
    and find next to nothing (~0.3 s of CPU with 300 agencies, 2,656 assets), and every
    full collection in the step afterwards, and the interpreter's exit, would walk them
    again (~0.6 s and ~1 s of a small run's process at 300 agencies). ``gc.freeze()`` moves
    them out of the collector's reach (CPython's documented use: long-lived objects built at
    start-up). Reference counting still frees whatever is dropped.

    Not when DuckDB is already imported (a test process, a CLI that opened a file first):
    objects of DuckDB's bindings frozen at exit are reported as leaked on stderr. The
    definitions themselves never import it (a test holds that).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if "duckdb" not in sys.modules:
            gc.freeze()
        if was_enabled:
            gc.enable()


with collector_paused():
    defs = build_definitions()
    # Every user of the code location (code server, run worker, step process) resolves the
    # repository and its asset graph next: do it here, with the collector paused, too.
    defs.resolve_asset_graph()
