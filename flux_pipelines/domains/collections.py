"""Collections: collection items and people from cultural and science agencies."""

from __future__ import annotations

import dagster as dg

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.domains import domain_ingest_assets

DOMAIN = "collections"


def definitions(registry: Registry) -> dg.Definitions:
    return dg.Definitions(assets=domain_ingest_assets(registry, DOMAIN))
