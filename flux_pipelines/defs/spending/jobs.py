"""Spending's jobs: one risk job per agency delivering contract transactions."""

from __future__ import annotations

import dagster as dg

from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.defs.agency import agency_partitions
from flux_pipelines.names import RISK_DATASET, scores_key


def risk_job_name(agency: Agency) -> str:
    return f"spending_risk_{agency.key}"


def risk_jobs(registry: Registry) -> dict[str, dg.UnresolvedAssetJobDefinition]:
    """Agency id -> its risk job: score a day range (one run, one transaction a day).

    The step trains the agency's model first when it is due (none yet, older than the
    last Monday 05:00 UTC, or op config ``retrain``) and blends it in.
    """
    return {
        a.id: dg.define_asset_job(
            risk_job_name(a),
            selection=dg.AssetSelection.assets(scores_key(a)),
            partitions_def=agency_partitions(a),
            description=f"Risk-score {a.name}'s contract transactions for a day range "
            "(blended with its Isolation Forest once one is trained).",
            tags={"agency": a.key},
            executor_def=dg.in_process_executor,
        )
        for a in registry.agencies_for(RISK_DATASET)
    }
