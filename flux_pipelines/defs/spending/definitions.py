"""Spending's definitions: risk models, reconciliations, risk jobs, the scoring automation.

The scores themselves are specs of each agency's ingest step (``risk.scores_specs``: one
writer of the agency file); the models are external assets the scoring step trains when due.
"""

from __future__ import annotations

import dagster as dg

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.defs.spending.jobs import risk_jobs
from flux_pipelines.defs.spending.reconciliation import recipient_links_asset, reconciliation_assets
from flux_pipelines.defs.spending.risk import model_specs
from flux_pipelines.names import RISK_DATASET, scores_key

RISK_AUTOMATION = "spending_risk_automation"


def risk_automation(registry: Registry) -> dg.AutomationConditionSensorDefinition:
    """Dagster's default automation sensor starts stopped; scoring a day once it loads is part
    of the product, so this sensor runs."""
    scores = [scores_key(a) for a in registry.agencies_for(RISK_DATASET)]
    return dg.AutomationConditionSensorDefinition(
        RISK_AUTOMATION,
        target=dg.AssetSelection.assets(*scores),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Scores each newly loaded day of contract transactions (the scoring "
        "step retrains an agency's model first when it is due), following the scores' "
        "automation condition.",
    )


def definitions(registry: Registry) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            *model_specs(registry),
            *reconciliation_assets(registry),
            *recipient_links_asset(registry),
        ],
        jobs=list(risk_jobs(registry).values()),
        sensors=[risk_automation(registry)],
    )
