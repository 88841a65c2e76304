"""Jobs: one ingest job per agency (the unit of a run and of a backfill) and one for all.

Executors follow the one-writer-per-file rule. An agency job runs in one process
(``in_process``): its steps write one DuckDB file anyway, and a run costs ~3 s less per
step than a process per step. A run across agencies (the all-agencies job, or a
backfill selected in the UI) uses one process per step, two at a time (two cores), so
agencies load in parallel, while each agency's pool (``duckdb_<agency>``, limit 1 in
dagster.yaml) keeps two steps off one agency file.
"""

from __future__ import annotations

import dagster as dg

from flux_pipelines.assets.ingest_factory import DAILY, asset_keys
from flux_pipelines.contracts.registry import Agency, Registry

ALL_AGENCIES_JOB = "ingest_all_agencies"
PARALLEL_STEPS = 2
PARALLEL_EXECUTOR = dg.multiprocess_executor.configured({"max_concurrent": PARALLEL_STEPS})


def agency_job_name(agency: Agency) -> str:
    return f"ingest_{agency.key}"


def ingest_selection(agencies: list[Agency]) -> dg.AssetSelection:
    """The raw / curated / quarantine assets (and their checks) of these agencies."""
    return dg.AssetSelection.assets(
        *(key for agency in agencies for dataset in agency.datasets
          for key in asset_keys(agency, dataset))
    )  # fmt: skip


def agency_jobs(registry: Registry) -> dict[str, dg.UnresolvedAssetJobDefinition]:
    """Agency id -> its ingest job (in one process: its steps share one DuckDB file)."""
    return {
        agency.id: dg.define_asset_job(
            agency_job_name(agency),
            selection=ingest_selection([agency]),
            partitions_def=DAILY,
            description=f"Validate and load {agency.name}'s deliveries for a day.",
            tags={"agency": agency.key},
            executor_def=dg.in_process_executor,
        )
        for agency in registry.agencies
    }


def all_agencies_job(registry: Registry) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        ALL_AGENCIES_JOB,
        selection=ingest_selection(list(registry.agencies)),
        partitions_def=DAILY,
        description="Validate and load every agency's deliveries for a day, agencies in "
        "parallel, one writer per agency file.",
        executor_def=PARALLEL_EXECUTOR,
    )


RISK_JOB = "spending_risk"


def risk_job(registry: Registry) -> dg.UnresolvedAssetJobDefinition:
    """Score a day range for every agency with transactions, then retrain their models."""
    from flux_pipelines.assets.risk_factory import DATASET, model_key, scores_key

    agencies = [a for a in registry.agencies if DATASET in a.datasets]
    return dg.define_asset_job(
        RISK_JOB,
        selection=dg.AssetSelection.assets(
            *(key for a in agencies for key in (scores_key(a), model_key(a)))
        ),
        partitions_def=DAILY,
        description="Risk-score contract transactions for a day range (each agency in its own "
        "file), then retrain each agency's Isolation Forest on the stored feature vectors.",
        executor_def=PARALLEL_EXECUTOR,
    )
