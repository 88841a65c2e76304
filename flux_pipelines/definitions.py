"""The Dagster code location: the domains' definitions (``defs/<domain>/``) merged, and what
they all share applied once: the warehouse resource, the default executor, the loggers.

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

from flux_pipelines.contracts.registry import Registry, load_registry
from flux_pipelines.defs.collections import definitions as collections
from flux_pipelines.defs.ingest import definitions as ingest
from flux_pipelines.defs.ingest.jobs import PARALLEL_EXECUTOR, cohort_job
from flux_pipelines.defs.operations import definitions as operations
from flux_pipelines.defs.published import definitions as published
from flux_pipelines.defs.spending import definitions as spending
from flux_pipelines.home import FLUX_HOME_ENV
from flux_pipelines.names import CROSS_AGENCY
from flux_pipelines.ops.logs import flux_loggers
from flux_pipelines.resources.warehouse import FluxWarehouse


def warehouse_resource() -> FluxWarehouse:
    """FLUX_HOME as an EnvVar when set at load (shown in the UI), else resolved at run time."""
    if os.environ.get(FLUX_HOME_ENV):
        return FluxWarehouse(home=dg.EnvVar(FLUX_HOME_ENV))
    return FluxWarehouse()


def cross_agency_keys(*domains: dg.Definitions) -> list[dg.AssetKey]:
    """The cross-agency outputs these domains build (the cross-agency catalog reads them)."""
    return [
        spec.key
        for domain in domains
        for assets in domain.assets or []
        if isinstance(assets, dg.AssetsDefinition)
        for spec in assets.specs
        if spec.group_name == CROSS_AGENCY
    ]


def domain_definitions(registry: Registry) -> list[dg.Definitions]:
    """Every domain's definitions, in the order a delivery flows through them."""
    spending_defs = spending.definitions(registry)
    collections_defs = collections.definitions(registry)
    shared = cross_agency_keys(spending_defs, collections_defs)
    return [
        ingest.definitions(registry),
        spending_defs,
        collections_defs,
        published.definitions(registry, shared),
        operations.definitions(registry),
    ]


def build_definitions() -> dg.Definitions:
    return dg.Definitions.merge(
        *domain_definitions(load_registry()),
        dg.Definitions(
            resources={"warehouse": warehouse_resource()},
            # Ad hoc selections and UI backfills may span agencies: run them in parallel.
            executor=PARALLEL_EXECUTOR,
            # Dagster's console logger; JSON lines when FLUX_LOG_FORMAT=json (ops/logs.py).
            loggers=flux_loggers(),
        ),
    )


def resolve_cohort_job(name: str, agency_ids: list[str]) -> dg.JobDefinition:
    """``cohort_job`` resolved against the code location (what a run process executes): it
    lives here, beside ``defs``, because the wiring below the root never imports the root."""
    registry = load_registry()
    job = cohort_job(name, [registry.agency(a) for a in agency_ids])
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(name)


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
