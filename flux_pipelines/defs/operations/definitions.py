"""Operations' definitions: the three alert sensors, the purge job and its schedule."""

from __future__ import annotations

import dagster as dg

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.defs.operations.alert_sensors import alert_sensors
from flux_pipelines.defs.operations.purge_job import purge_job, purge_schedule


def definitions(registry: Registry) -> dg.Definitions:
    purge = purge_job(registry)
    return dg.Definitions(
        jobs=[purge], sensors=alert_sensors(registry), schedules=[purge_schedule(purge)]
    )
