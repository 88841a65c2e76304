"""An agency's days as Dagster partitions, shared by every domain's specs and jobs.

Ingest's assets, spending's scores and jobs all partition by the agency's delivery day: one
definition object per onboarding day, in one module below the domains, so no domain's
wiring imports another's to learn an agency's days.
"""

from __future__ import annotations

import datetime as dt
import functools

import dagster as dg

from flux_pipelines.contracts.registry import Agency


@functools.cache
def partitions_from(first_day: dt.date) -> dg.DailyPartitionsDefinition:
    """Daily partitions from ``first_day`` through today (UTC), one object per start day."""
    return dg.DailyPartitionsDefinition(
        start_date=first_day.isoformat(), end_offset=1, timezone="UTC"
    )


def agency_partitions(agency: Agency) -> dg.DailyPartitionsDefinition:
    """An agency's days start at its onboarding: earlier days are not partitions at all, so
    the UI shows no "missing" days from before the agency delivered anything."""
    return partitions_from(agency.onboarded)
