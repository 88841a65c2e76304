"""Each domain's definitions: the ingest assets of its datasets, and later its own assets.

A dataset belongs to the domain its contract names; every (agency, dataset) pair the
registry lists becomes one ingest multi-asset in that domain.
"""

from __future__ import annotations

import dagster as dg

from flux_pipelines.assets.ingest_factory import build_ingest_asset
from flux_pipelines.contracts.registry import Registry


def domain_ingest_assets(registry: Registry, domain: str) -> list[dg.AssetsDefinition]:
    """Ingest assets for every agency delivering a dataset of ``domain``."""
    return [
        build_ingest_asset(agency, dataset, registry)
        for agency in registry.agencies
        for dataset in agency.datasets
        if registry.latest(dataset).domain == domain
    ]
