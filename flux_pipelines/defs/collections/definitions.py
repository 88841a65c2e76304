"""Collections' definitions: one export per use case of ``contracts/use_cases.yaml``."""

from __future__ import annotations

import dagster as dg

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.defs.collections.exports import export_assets


def definitions(registry: Registry) -> dg.Definitions:
    return dg.Definitions(assets=export_assets(registry))
