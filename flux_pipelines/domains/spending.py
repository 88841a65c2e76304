"""Spending: USAspending transactions per awarding agency, risk scores, reconciliation."""

from __future__ import annotations

import dagster as dg

from flux_pipelines.assets.reconciliation_factory import reconciliation_assets
from flux_pipelines.assets.risk_factory import risk_assets
from flux_pipelines.contracts.registry import Registry

DOMAIN = "spending"
RISK_AUTOMATION = "spending_risk_automation"


def definitions(registry: Registry) -> dg.Definitions:
    risk = risk_assets(registry)
    # Dagster's default automation sensor starts stopped; the risk assets' conditions (score
    # a day once it loads, retrain weekly) are part of the product, so their sensor runs.
    automation = dg.AutomationConditionSensorDefinition(
        RISK_AUTOMATION,
        target=dg.AssetSelection.assets(*risk),
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
