"""Risk assets per agency delivering contract transactions: daily scores and the model.

``<agency>/contract_transactions_risk`` scores each day's curated transactions (rules, the
recipient's own history, the Isolation Forest when one is trained) in the agency's own
file, so spending data never leaves its agency's storage. It is a spec of the agency's
ingest step (``scores_specs``; same partitions, same pool, one writer of the agency file):
a run loading transactions can score them in the same process, and one op less per agency
keeps the definitions' load flat (the README's asset-model figures).

``<agency>/contract_transactions_risk_model`` is the forest trained on the feature vectors
stored with the scores, versioned. The scoring step trains it before it scores when it is
due (none yet, or trained before the last Monday 05:00 UTC, or op config ``retrain``) and
records the model's materialization, so the model needs no op of its own: it is an
external asset (a spec without a step), which costs the definitions almost nothing per
agency, and the training runs under the agency's pool like every other writer of its
file. Until a model exists, scores are rules only and say why.

Automation: scores follow their curated partition (``eager``: the latest day, as soon as it
loads; older days by backfill).

Built for every agency at every definitions load (each run worker does one), so what is
the same for all agencies is built once: config schemas, metadata, automation conditions.
The steps (``risk_step.py``) are imported when a step runs; scikit-learn only by a step
that trains or loads a model (``risk/model.py``).
"""

import dagster as dg
from pydantic import Field

from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.defs.agency import agency_partitions, agency_spec
from flux_pipelines.names import (
    RISK_DATASET,
    RISK_MODEL,
    RISK_SCORES,
    ingest_keys,
    model_key,
    scores_key,
)
from flux_pipelines.risk.features import feature_matrix_markdown
from flux_pipelines.risk.rules import RULES

DATASET = RISK_DATASET
SCORES = RISK_SCORES
MODEL = RISK_MODEL
EVERY_TRANSACTION_SCORED = "every_transaction_scored"
FLAGGED_HAVE_REASONS = "flagged_have_reasons"
RETRAIN_WEEKDAY = 0  # Monday (datetime.weekday)
RETRAIN_HOUR_UTC = 5


class RiskScoringConfig(dg.Config):
    alpha: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Weight of the model: alpha x model + "
        "(1 - alpha) x rules. 0 = rules only."
    )  # fmt: skip
    flag_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="A transaction is flagged from this score."
    )
    retrain: bool = Field(
        default=False,
        description="Train a new model before scoring even when the current one is fresh "
        "(it is retrained anyway when none exists or it predates the last Monday 05:00 UTC).",
    )
    n_estimators: int = Field(default=100, ge=10, description="Trees in the forest.")
    max_training_rows: int = Field(
        default=200_000, ge=100, description="Scored transactions sampled for training."
    )
    min_training_rows: int = Field(
        default=200, ge=10, description="Fewer scored transactions than this: no model."
    )


# The same for every agency: built once, not per asset.
# A multi-asset takes its op config as a plain field mapping; the step validates the
# values (ranges) with RiskScoringConfig itself.
SCORING_CONFIG_SCHEMA = {
    name: dg.Field(field.annotation, default_value=field.default, description=field.description)
    for name, field in RiskScoringConfig.model_fields.items()
}
SCORE_AUTOMATION = dg.AutomationCondition.eager()
RULES_MARKDOWN = dg.MetadataValue.md(
    "| rule | weight | reason |\n|---|---|---|\n"
    + "\n".join(f"| `{r.id}` | {r.weight} | {r.reason} |" for r in RULES)
)
FEATURES_MARKDOWN = dg.MetadataValue.md(feature_matrix_markdown())


def model_specs(registry: Registry) -> list[dg.AssetSpec]:
    """The model of every agency delivering transactions (scores: ``scores_specs``)."""
    return [model_spec(agency) for agency in registry.agencies_for(DATASET)]


def delivers_risk(agency: Agency) -> bool:
    return DATASET in agency.datasets


def scores_specs(agency: Agency) -> tuple[dg.AssetSpec, list[dg.AssetCheckSpec]]:
    """The agency's scores spec and its checks, for the agency's ingest step to carry."""
    key = scores_key(agency)
    partitions = agency_partitions(agency)
    spec = dg.AssetSpec(
        key,
        deps=[ingest_keys(agency, DATASET)[1]],
        partitions_def=partitions,
        **agency_spec(agency, domain="spending", layer="risk"),
        kinds={"duckdb", "scikit-learn", "polars"},
        description=f"Improper-payment risk of {agency.name}'s curated contract transactions, "
        "one row per transaction: fired rules with their reasons, the recipient's own "
        "history (Welford statistics and NAICS/PSC codes kept across days), the Isolation "
        "Forest's score when a model is trained, the blended risk score and whether it is "
        "flagged. Op config (alpha, flag_threshold) applies when it is selected.",
        metadata={
            "dagster/table_name": f"{agency.id}.{SCORES}",
            "rules": RULES_MARKDOWN,
            "features": FEATURES_MARKDOWN,
        },
        automation_condition=SCORE_AUTOMATION,
        skippable=True,  # events are per day (risk_step.py)
    )
    checks = [
        dg.AssetCheckSpec(
            EVERY_TRANSACTION_SCORED,
            asset=key,
            partitions_def=partitions,
            description="Every curated transaction of the day has exactly one score.",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            FLAGGED_HAVE_REASONS,
            asset=key,
            partitions_def=partitions,
            description="Every flagged transaction carries at least one reason.",
        ),
    ]
    return spec, checks


def model_spec(agency: Agency) -> dg.AssetSpec:
    """An external asset: the scoring step trains the model and records its materialization."""
    return dg.AssetSpec(
        model_key(agency),
        deps=[scores_key(agency)],
        **agency_spec(agency, domain="spending", layer="risk"),
        kinds={"scikit-learn"},
        description=f"Isolation Forest over the feature vectors stored with {agency.name}'s "
        "risk scores, versioned (training time + hash of data and parameters) and stored "
        "with a sha256 pointer. Trained by the scoring step before it scores, when due: no "
        "model yet, a model from before the last Monday 05:00 UTC, or op config "
        "`retrain: true` on the scores (to retrain now, materialize a day of "
        f"`{scores_key(agency).to_user_string()}` with it).",
        metadata={"features": FEATURES_MARKDOWN},
    )
