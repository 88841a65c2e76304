"""``cross_agency/delivery_status``: which agency-days are loaded, failed, late or pending.

Read from the Dagster instance the asset runs on (the ingest assets' events and runs) and
the registry (onboarding date, delivery deadline); see ``quality/delivery_status.py``. The
materialization shows the last ``MATRIX_DAYS`` days as a matrix in the UI with counts the UI
plots; the whole window goes to ``published/cross_agency/delivery_status.parquet`` for
analysts.

Refresh: every 30 minutes by its automation condition (``cron_tick_passed``, not
``on_cron``: ``on_cron`` also waits for every dependency to update since the tick, and the
point of this asset is to notice agencies that did *not* deliver). It declares no
dependencies, since it reads the event log, not the agencies' data. Dagster's default
automation sensor starts stopped, so :func:`delivery_status_sensor` (running by default)
evaluates the condition.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.defs.published.cross_agency import GROUP, output_dir
from flux_pipelines.defs.results import Materialized
from flux_pipelines.files import replacing
from flux_pipelines.names import DELIVERY_STATUS, cross_agency_key
from flux_pipelines.quality.delivery_status import (
    State,
    counts,
    day_range,
    fetch_facts,
    render_markdown,
    select_pairs,
    status_frame,
    status_table,
)
from flux_pipelines.resources.warehouse import FluxWarehouse

DELIVERY_STATUS_KEY = cross_agency_key(DELIVERY_STATUS)
DELIVERY_STATUS_SENSOR = "delivery_status_automation"
REFRESH_CRON = "*/30 * * * *"
MATRIX_DAYS = 14
REFRESH = (
    dg.AutomationCondition.cron_tick_passed(REFRESH_CRON, cron_timezone="UTC")
    & ~dg.AutomationCondition.in_progress()
)


class DeliveryStatusConfig(dg.Config):
    days: int = Field(
        default=30,
        ge=1,
        le=3660,
        description="Days ending today (UTC) in the published table; the matrix shows the "
        f"last {MATRIX_DAYS} of them.",
    )
    checks: bool = Field(
        default=True,
        description="Add every day's check verdicts (three queries per asset: ~20 ms an "
        "asset on SQLite).",
    )


def build_delivery_status_asset(registry: Registry) -> dg.AssetsDefinition:
    pairs = select_pairs(registry)

    @dg.asset(
        key=DELIVERY_STATUS_KEY,
        group_name=GROUP,
        kinds={"polars", "parquet"},
        tags={"layer": "cross_agency"},
        description="Per agency, dataset and day: loaded, failed, late (past the agency's "
        "delivery deadline, nothing loaded), pending or not expected (before onboarding, or "
        "a day the deadline cron skips), from the ingest assets' events and runs. Refreshed "
        "every 30 minutes; `flux status` prints the same.",
        automation_condition=REFRESH,
        pool="published_cross_agency",
    )
    def _delivery_status(
        context: dg.AssetExecutionContext, config: DeliveryStatusConfig, warehouse: FluxWarehouse
    ) -> Materialized:
        now = dt.datetime.now(dt.UTC)
        days = day_range(now.date(), config.days)
        facts = fetch_facts(
            context.instance,
            pairs,
            days,
            landing_root=warehouse.landing_root,
            with_checks=config.checks,
        )
        statuses = status_table(pairs, days, facts, now)
        shown_days = days[-MATRIX_DAYS:]
        shown = [s for s in statuses if s.day >= shown_days[0]]
        n = counts(shown)
        target = output_dir(warehouse) / "delivery_status.parquet"
        with replacing(target) as tmp:
            status_frame(statuses).write_parquet(tmp)
        context.log.info(
            f"last {len(shown_days)} days: {n[State.LATE]} late, {n[State.FAILED]} failed, "
            f"{n[State.LOADED]} loaded, {n[State.PENDING]} pending"
        )
        return dg.MaterializeResult(
            metadata={
                "matrix": dg.MetadataValue.md(render_markdown(shown, shown_days)),
                "late": n[State.LATE],
                "failed": n[State.FAILED],
                "loaded": n[State.LOADED],
                "pending": n[State.PENDING],
                "not_expected": n[State.NOT_EXPECTED],
                "path": dg.MetadataValue.path(str(target)),
                "dagster/row_count": len(statuses),
                "window": f"{days[0]} .. {days[-1]} (UTC)",
            }
        )

    return _delivery_status


def delivery_status_sensor(asset: dg.AssetsDefinition) -> dg.AutomationConditionSensorDefinition:
    """Evaluates the asset's automation condition (Dagster's default sensor starts stopped)."""
    return dg.AutomationConditionSensorDefinition(
        DELIVERY_STATUS_SENSOR,
        target=dg.AssetSelection.assets(asset),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Refreshes cross_agency/delivery_status every 30 minutes.",
    )
