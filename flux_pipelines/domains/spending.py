"""Spending: USAspending transactions per awarding agency, risk scores, reconciliation."""

from __future__ import annotations

import dagster as dg

from flux_pipelines.assets.reconciliation_factory import reconciliation_assets
from flux_pipelines.assets.risk_factory import delivers_risk, risk_assets
from flux_pipelines.contracts.registry import Registry
from flux_pipelines.names import scores_key

DOMAIN = "spending"
RISK_AUTOMATION = "spending_risk_automation"


def definitions(registry: Registry) -> dg.Definitions:
    risk = risk_assets(registry)
    # scores are specs of each agency's ingest step (risk_factory.scores_specs)
    scores = [scores_key(a) for a in registry.agencies if delivers_risk(a)]
    # Dagster's default automation sensor starts stopped; the risk assets' conditions (score
    # a day once it loads, retrain weekly) are part of the product, so their sensor runs.
    automation = dg.AutomationConditionSensorDefinition(
        RISK_AUTOMATION,
        target=dg.AssetSelection.assets(*risk, *scores),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Scores each newly loaded day of contract transactions and retrains the "
        "risk models on Mondays, following the assets' automation conditions.",
    )
    return dg.Definitions(
        assets=[
            *risk,
            *reconciliation_assets(registry),
        ],
        sensors=[automation],
    )
