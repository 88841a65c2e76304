"""Published's definitions: what analysts read, and the daily refresh that rebuilds it."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.defs.published.catalogs import catalog_assets
from flux_pipelines.defs.published.cross_agency import cross_agency_assets
from flux_pipelines.defs.published.refresh import daily_refresh_job, daily_refresh_schedule
from flux_pipelines.defs.published.status import (
    build_delivery_status_asset,
    delivery_status_sensor,
)


def definitions(registry: Registry, shared: Sequence[dg.AssetKey]) -> dg.Definitions:
    """``shared``: the cross-agency outputs other domains publish (recipient links, use-case
    exports), which the cross-agency catalog reads too."""
    status = build_delivery_status_asset(registry)
    refresh = daily_refresh_job(registry)
    return dg.Definitions(
        assets=[
            *catalog_assets(registry),
            status,
            *cross_agency_assets(registry, [*status.keys, *shared]),
        ],
        jobs=[refresh],
        sensors=[delivery_status_sensor(status)],
        schedules=[daily_refresh_schedule(refresh)],
    )
