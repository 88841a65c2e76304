"""Spending: USAspending contract transactions per awarding agency."""

from __future__ import annotations

import dagster as dg

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.domains import domain_ingest_assets

DOMAIN = "spending"


def definitions(registry: Registry) -> dg.Definitions:
    return dg.Definitions(assets=domain_ingest_assets(registry, DOMAIN))
