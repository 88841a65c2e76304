"""The daily refresh: catalogs, reconciliations and cross-agency outputs after the loads.

Loads themselves are started by the landing sensors as deliveries arrive; this schedule
refreshes what is downstream of them once a day, after the latest delivery deadline.
"""

from __future__ import annotations

import dagster as dg

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.defs.published.cross_agency import GROUP as CROSS_AGENCY_GROUP
from flux_pipelines.defs.spending.reconciliation import agency_totals_keys
from flux_pipelines.names import catalog_key

DAILY_REFRESH_JOB = "daily_refresh"


def daily_refresh_job(registry: Registry) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        DAILY_REFRESH_JOB,
        selection=dg.AssetSelection.assets(*(catalog_key(a) for a in registry.agencies))
        | dg.AssetSelection.assets(*agency_totals_keys(registry))
        | dg.AssetSelection.groups(CROSS_AGENCY_GROUP),
        description="Rebuild every agency's published catalog (read-only views for analysts), "
        "the agency-level reconciliations, the cross-agency outputs behind the certification "
        "gate, the quality scorecard, the recipient links and the cross-agency catalog.",
        tags={"flux/kind": "refresh"},
    )


def daily_refresh_schedule(job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="daily_refresh_schedule",
        job=job,
        cron_schedule="0 19 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every day at 19:00 UTC, after the latest agency delivery deadline.",
    )
