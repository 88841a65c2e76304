"""Jobs: one ingest job per agency (the unit of a run and of a backfill) and one for all.

Executors follow the one-writer-per-file rule. An agency job runs in one process
(``in_process``): its steps write one DuckDB file anyway, and a run costs ~3 s less per
step than a process per step. A run across agencies uses one process per step, two at a
time (two cores), so agencies load in parallel, while each agency's pool
(``duckdb_<agency>``, limit 1 in dagster.yaml) keeps two steps off one agency file.

Each agency's days start at its onboarding, and a Dagster job has one partitions
definition, so there is no job over every agency: a backfill across agencies is launched
from the asset graph (Dagster's asset backfill gives each agency its own run, and the run
queue runs them in parallel, one per agency), and ``cohort_job`` builds a parallel job for
agencies onboarded the same day (benchmarks and crash tests resolve it against the code
location: ``definitions.resolve_cohort_job``).
"""

from __future__ import annotations

import dagster as dg

from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.defs.agency import agency_partitions
from flux_pipelines.defs.ingest.assets import asset_keys
from flux_pipelines.errors import ConfigurationError

PARALLEL_STEPS = 2
# Run config for in-process runs a command makes (demo, bench): warnings and errors only.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
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
            partitions_def=agency_partitions(agency),
            description=f"Validate and load {agency.name}'s deliveries for a day.",
            tags={"agency": agency.key},
            executor_def=dg.in_process_executor,
        )
        for agency in registry.agencies
    }


def cohort_job(name: str, agencies: list[Agency]) -> dg.UnresolvedAssetJobDefinition:
    """Several agencies' ingest in one run, their steps in parallel (one process per step,
    one writer per agency file through the pools); the agencies must share an onboarding
    day, since a job has one partitions definition."""
    starts = {a.onboarded for a in agencies}
    if len(starts) != 1:
        raise ConfigurationError(
            f"{', '.join(a.id for a in agencies)} were onboarded on different days "
            f"({', '.join(sorted(str(d) for d in starts))}): one job cannot hold their "
            "partitions; backfill them from the asset graph instead"
        )
    return dg.define_asset_job(
        name,
        selection=ingest_selection(agencies),
        partitions_def=agency_partitions(agencies[0]),
        description="Validate and load several agencies' deliveries for a day, agencies in "
        "parallel, one writer per agency file.",
        executor_def=PARALLEL_EXECUTOR,
    )
