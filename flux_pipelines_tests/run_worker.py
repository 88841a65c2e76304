"""A run process for crash tests: ``python -m flux_pipelines_tests.run_worker JOB DAY``.

It executes a job of the shipped code location for one partition against the instance in
$DAGSTER_HOME, as Dagster's run worker does, so a test can SIGKILL it (through an armed
crash point) and look at what storage and the warehouse are left with.
"""

from __future__ import annotations

import sys

import dagster as dg

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.definitions import defs, resolve_cohort_job
from flux_pipelines.defs.ingest.assets import asset_keys

# Two agencies' steps in one run of a cohort job (nasa and nga share an onboarding day): its
# parallel executor (a process per step, two at a time, one writer per agency file).
TWO_AGENCY_PAIRS = (
    ("nasa", "meteorites"),
    ("nasa", "contract_transactions"),
    ("nga", "media_items"),
)


def nasa_meteorites() -> dg.JobDefinition:
    """nasa's job narrowed to meteorites, so a crash point is reached by that step only."""
    keys = asset_keys(load_registry().agency("nasa"), "meteorites")
    return defs.resolve_job_def("ingest_nasa").get_subset(asset_selection=set(keys))


def two_agencies() -> dg.JobDefinition:
    registry = load_registry()
    keys = {
        key for agency, dataset in TWO_AGENCY_PAIRS
        for key in asset_keys(registry.agency(agency), dataset)
    }  # fmt: skip
    job = resolve_cohort_job("ingest_nasa_nga", ["nasa", "nga"])
    return job.get_subset(asset_selection=keys)


JOBS = {"nasa_meteorites": nasa_meteorites, "two_agencies": two_agencies}


def main(job_name: str, day: str) -> int:
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(JOBS[job_name]),
            instance=instance,
            tags={"dagster/partition": day, "flux/source": "crash test"},
            raise_on_error=False,
        )
        print(f"run_id={result.run_id} success={result.success}", flush=True)
        return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
