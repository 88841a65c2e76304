"""Each domain's definitions: the ingest assets of its datasets, and later its own assets.

A dataset belongs to the domain its contract names; each agency's datasets of a domain are
loaded by one ingest step (one multi-asset) in that domain.
"""

from __future__ import annotations

import dagster as dg

from flux_pipelines.assets.ingest_factory import build_ingest_asset, ingest_step_name
from flux_pipelines.contracts.registry import Registry


def domain_ingest_assets(registry: Registry, domain: str) -> list[dg.AssetsDefinition]:
    """One ingest multi-asset per agency delivering datasets of ``domain``."""
    built = []
    for agency in registry.agencies:
        mine = [d for d in agency.datasets if registry.latest(d).domain == domain]
        if mine:
            built.append(
                build_ingest_asset(agency, mine, registry, ingest_step_name(agency, domain))
            )
    return built
