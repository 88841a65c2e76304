"""The scheduled purge: one op per agency in the agency's pool, then old runs and the archive.

Each agency op takes the pool the agency's ingest steps use (``duckdb_<agency>``, limit 1),
so it never runs beside a load of that agency; agencies are purged one after another in one
process. Runs and the trail archive come last, once every agency is done.
"""

import datetime as dt

import dagster as dg

from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.defs.ingest.assets import agency_pool
from flux_pipelines.names import PURGE_JOB, purge_op_name
from flux_pipelines.resources.warehouse import FluxWarehouse


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _agency_op(registry: Registry, agency: Agency) -> dg.OpDefinition:
    @dg.op(name=purge_op_name(agency), pool=agency_pool(agency), out=dg.Out(dg.Nothing))
    def _purge(context: dg.OpExecutionContext, warehouse: FluxWarehouse) -> None:
        from flux_pipelines.ops.purge import apply, plan_with_kept

        deletions, kept = plan_with_kept(
            warehouse.root, registry, None, now=_today(), agencies=[agency.id]
        )
        apply(warehouse.root, deletions, None, now=_today())
        context.log.info(f"{agency.id}: {len(deletions)} deleted, {len(kept)} kept (last copy)")

    return _purge


def purge_job(registry: Registry) -> dg.JobDefinition:
    ops = [_agency_op(registry, a) for a in registry.agencies]

    @dg.op(name="purge_runs", ins={"after": dg.In(dg.Nothing)})
    def purge_runs(context: dg.OpExecutionContext, warehouse: FluxWarehouse) -> None:
        from flux_pipelines.ops.purge import apply, plan_runs

        runs = plan_runs(registry, context.instance, now=_today())
        mine = context.run_id
        apply(warehouse.root, [r for r in runs if r.run_id != mine], context.instance, now=_today())

    @dg.graph(name=PURGE_JOB)
    def _graph() -> None:
        purge_runs(after=[op() for op in ops])

    return _graph.to_job(
        description="Delete what outlived its retention (contracts/retention.yaml), never "
        "the last copy of a partition; record every deletion in the audit trail.",
        executor_def=dg.in_process_executor,
        tags={"flux/kind": "purge"},
    )


def purge_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="flux_purge_schedule",
        job=job,
        cron_schedule="30 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every day at 03:30 UTC, before the day's deliveries.",
    )
