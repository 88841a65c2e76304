"""Spending: USAspending transactions per awarding agency, risk scores, reconciliation."""

from __future__ import annotations

import dagster as dg

from flux_pipelines.assets.reconciliation_factory import reconciliation_assets
from flux_pipelines.assets.risk_factory import delivers_risk, model_specs
from flux_pipelines.contracts.registry import Registry
from flux_pipelines.names import scores_key

DOMAIN = "spending"
RISK_AUTOMATION = "spending_risk_automation"


def definitions(registry: Registry) -> dg.Definitions:
    # scores are specs of each agency's ingest step (risk_factory.scores_specs); the models
    # are external assets that the scoring step trains when due
    scores = [scores_key(a) for a in registry.agencies if delivers_risk(a)]
    # Dagster's default automation sensor starts stopped; scoring a day once it loads is
    # part of the product, so this sensor runs.
    automation = dg.AutomationConditionSensorDefinition(
        RISK_AUTOMATION,
        target=dg.AssetSelection.assets(*scores),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Scores each newly loaded day of contract transactions (the scoring "
        "step retrains an agency's model first when it is due), following the scores' "
        "automation condition.",
    )
    return dg.Definitions(
        assets=[
            *model_specs(registry),
            *reconciliation_assets(registry),
        ],
        sensors=[automation],
    )
