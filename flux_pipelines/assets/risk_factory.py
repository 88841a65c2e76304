"""Risk assets per agency delivering contract transactions: daily scores and the model.

``<agency>/contract_transactions_risk`` scores each day's curated transactions (rules, the
recipient's own history, the Isolation Forest when one is trained) in the agency's own
file, so spending data never leaves its agency's storage. ``<agency>/
contract_transactions_risk_model`` trains the forest on the feature vectors stored with
the scores and versions it; until one exists, scores are rules only and say so.

Automation: scores follow their curated partition (``eager``: the latest day, as soon as it
loads; older days by backfill); the model retrains every Monday at 05:00 UTC.

Built for every agency at every definitions load (each run worker does one), so what is
the same for all agencies is built once: config schemas, metadata, automation conditions.
The steps read their config from the context: Dagster's inference of a ``Config``
parameter's schema costs ~0.5 ms an asset. scikit-learn is imported only by a step that
trains or loads a model (``risk/model.py``).
"""

import datetime as dt
import warnings
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext
from pydantic import Field

from flux_pipelines.assets.ingest_factory import (
    agency_partitions,
    agency_pool,
    asset_keys,
    transient_retries,
)
from flux_pipelines.contracts.ddl import DatasetTables, quote
from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.names import RISK_DATASET, RISK_MODEL, RISK_SCORES, model_key, scores_key
from flux_pipelines.resources.warehouse import FluxWarehouse, publish_partition
from flux_pipelines.risk.features import FEATURE_COLUMNS, feature_matrix_markdown
from flux_pipelines.risk.model import ModelUnavailable, RiskModel, load_current, save, train
from flux_pipelines.risk.rules import RULES
from flux_pipelines.risk.scoring import ScoringSettings, empty_scores, score_day, score_summary

if TYPE_CHECKING:
    import duckdb


DATASET = RISK_DATASET
SCORES = RISK_SCORES
MODEL = RISK_MODEL
EVERY_TRANSACTION_SCORED = "every_transaction_scored"
FLAGGED_HAVE_REASONS = "flagged_have_reasons"
RETRAIN_CRON = "0 5 * * 1"
# backfill_policy on @asset is marked beta (on @multi_asset it is not); ranged runs matter.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)


class RiskScoringConfig(dg.Config):
    alpha: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Weight of the model: alpha x model + "
        "(1 - alpha) x rules. 0 = rules only."
    )  # fmt: skip
    flag_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="A transaction is flagged from this score."
    )


class RiskModelConfig(dg.Config):
    n_estimators: int = Field(default=100, ge=10, description="Trees in the forest.")
    max_training_rows: int = Field(
        default=200_000, ge=100, description="Scored transactions sampled for training."
    )
    min_training_rows: int = Field(
        default=200, ge=10, description="Fewer scored transactions than this: no model."
    )


# The same for every agency: built once, not per asset.
SCORING_CONFIG_SCHEMA = RiskScoringConfig.to_config_schema()
MODEL_CONFIG_SCHEMA = RiskModelConfig.to_config_schema()
SCORE_AUTOMATION = dg.AutomationCondition.eager()
RETRAIN_AUTOMATION = dg.AutomationCondition.on_cron(RETRAIN_CRON)
SINGLE_RUN = dg.BackfillPolicy.single_run()
RULES_MARKDOWN = dg.MetadataValue.md(
    "| rule | weight | reason |\n|---|---|---|\n"
    + "\n".join(f"| `{r.id}` | {r.weight} | {r.reason} |" for r in RULES)
)
FEATURES_MARKDOWN = dg.MetadataValue.md(feature_matrix_markdown())


def risk_assets(registry: Registry) -> list[dg.AssetsDefinition]:
    return [
        asset
        for agency in registry.agencies
        if DATASET in agency.datasets
        for asset in (build_scores_asset(agency), build_model_asset(agency))
    ]


def current_model(warehouse: FluxWarehouse, agency: Agency) -> tuple[RiskModel | None, str]:
    """The agency's trained model, or None and the reason scoring falls back to rules."""
    try:
        model = load_current(warehouse.models_dir(agency.id, MODEL))
    except ModelUnavailable as exc:
        return None, f"rules only: {exc}"
    return model, f"blended with model {model.version}"


def build_scores_asset(agency: Agency) -> dg.AssetsDefinition:
    key = scores_key(agency)
    curated = asset_keys(agency, DATASET)[1]

    @dg.asset(
        key=key,
        deps=[curated],
        partitions_def=agency_partitions(agency),
        group_name=agency.key,
        owners=[agency.owner] if agency.owner else [],
        tags={"domain": "spending", "agency": agency.key, "layer": "risk"},
        kinds={"duckdb", "scikit-learn", "polars"},
        description=f"Improper-payment risk of {agency.name}'s curated contract transactions, "
        "one row per transaction: fired rules with their reasons, the recipient's own "
        "history (Welford statistics and NAICS/PSC codes kept across days), the Isolation "
        "Forest's score when a model is trained, the blended risk score and whether it is "
        "flagged.",
        metadata={
            "dagster/table_name": f"{agency.id}.{SCORES}",
            "rules": RULES_MARKDOWN,
            "features": FEATURES_MARKDOWN,
        },
        check_specs=[
            dg.AssetCheckSpec(
                EVERY_TRANSACTION_SCORED,
                asset=key,
                description="Every curated transaction of the day has exactly one score.",
                blocking=True,
            ),
            dg.AssetCheckSpec(
                FLAGGED_HAVE_REASONS,
                asset=key,
                description="Every flagged transaction carries at least one reason.",
            ),
        ],
        pool=agency_pool(agency),
        backfill_policy=SINGLE_RUN,
        automation_condition=SCORE_AUTOMATION,
        config_schema=SCORING_CONFIG_SCHEMA,
    )
    def _scores(context: AssetExecutionContext, warehouse: FluxWarehouse) -> dg.MaterializeResult:
        config = RiskScoringConfig(**context.op_config)
        model, basis = current_model(warehouse, agency)
        context.log.info(f"{agency.id}: scoring {basis}")
        settings = ScoringSettings(alpha=config.alpha, flag_threshold=config.flag_threshold)
        days = sorted(dt.date.fromisoformat(k) for k in context.partition_keys)
        with transient_retries(context.retry_number), warehouse.connect(agency.id) as conn:
            scored = [_score_one(conn, warehouse, agency, day, model, settings) for day in days]
            unscored, duplicated = _coverage(conn, days)
        everything = pl.concat(
            [empty_scores(), *(s for s in scored if s.width)], how="diagonal_relaxed"
        )
        summary = score_summary(everything)
        without_reason = everything.filter(
            pl.col("flagged") & (pl.col("reasons").list.len() == 0)
        ).height
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": summary["rows"],
                "flagged": summary["flagged"],
                "score_basis": basis,
                "model_version": model.version if model else "none",
                "alpha": config.alpha if model else 0.0,
                "flag_threshold": config.flag_threshold,
                "rules_fired": dg.MetadataValue.json(summary["by_rule"]),
                "top_flagged": dg.MetadataValue.md(_top_flagged(everything)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=EVERY_TRANSACTION_SCORED,
                    passed=unscored == 0 and duplicated == 0,
                    metadata={"unscored": unscored, "scored_twice": duplicated},
                ),
                dg.AssetCheckResult(
                    check_name=FLAGGED_HAVE_REASONS,
                    passed=without_reason == 0,
                    metadata={"flagged_without_reason": without_reason},
                ),
            ],
        )

    return _scores


def _score_one(
    conn: "duckdb.DuckDBPyConnection",
    warehouse: FluxWarehouse,
    agency: Agency,
    day: dt.date,
    model: RiskModel | None,
    settings: ScoringSettings,
) -> pl.DataFrame:
    curated = DatasetTables.for_dataset(DATASET).curated
    frame = _curated_day(conn, curated, day)
    if frame.width == 0:  # the agency never delivered transactions: nothing to score
        return frame
    scores = score_day(
        conn,
        day,
        frame,
        curated_table=curated,
        scores_table=SCORES,
        model=model,
        settings=settings,
    )
    publish_partition(conn, warehouse, agency.id, SCORES, SCORES, day)
    return scores


def _curated_day(conn: "duckdb.DuckDBPyConnection", table: str, day: dt.date) -> pl.DataFrame:
    if not _has_table(conn, table):
        return pl.DataFrame()
    return conn.sql(
        f"SELECT * FROM {quote(table)} WHERE _partition_date = DATE '{day.isoformat()}' "
        "ORDER BY _file, _row_number"
    ).pl()


def _coverage(conn: "duckdb.DuckDBPyConnection", days: list[dt.date]) -> tuple[int, int]:
    """(curated rows without a score, rows scored more than once) over the days."""
    curated = DatasetTables.for_dataset(DATASET).curated
    if not (_has_table(conn, SCORES) and _has_table(conn, curated)):
        return 0, 0
    ((unscored, duplicated),) = conn.execute(
        f"""WITH s AS (SELECT _partition_date, _file, _row_number, count(*) AS n
                         FROM {quote(SCORES)} WHERE _partition_date IN (SELECT unnest(?))
                         GROUP BY ALL)
            SELECT (SELECT count(*) FROM {quote(curated)} c ANTI JOIN s
                      USING (_partition_date, _file, _row_number)
                     WHERE c._partition_date IN (SELECT unnest(?))),
                   (SELECT count(*) FROM s WHERE n > 1)""",
        [days, days],
    ).fetchall()
    return int(unscored), int(duplicated)


def _has_table(conn: "duckdb.DuckDBPyConnection", table: str) -> bool:
    return conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
    ).fetchall() != [(0,)]


def _top_flagged(scores: pl.DataFrame, limit: int = 10) -> str:
    top = scores.filter(pl.col("flagged")).sort("risk_score", descending=True).head(limit)
    if top.is_empty():
        return "No transaction flagged."
    lines = [
        f"| {r['transaction_id']} | {r['recipient_name']} | {r['federal_action_obligation']} "
        f"| {r['risk_score']:.2f} | {'; '.join(r['reasons'])} |"
        for r in top.iter_rows(named=True)
    ]
    header = "| transaction | recipient | obligation | risk | reasons |\n|---|---|---|---|---|"
    return "\n".join([header, *lines])


def build_model_asset(agency: Agency) -> dg.AssetsDefinition:
    key = model_key(agency)

    @dg.asset(
        key=key,
        deps=[scores_key(agency)],
        group_name=agency.key,
        owners=[agency.owner] if agency.owner else [],
        tags={"domain": "spending", "agency": agency.key, "layer": "risk"},
        kinds={"scikit-learn"},
        description=f"Isolation Forest over the feature vectors stored with {agency.name}'s "
        "risk scores, versioned (training time + hash of data and parameters) and stored "
        "with a sha256 pointer; scoring blends it in from the next run.",
        metadata={"features": FEATURES_MARKDOWN},
        pool=agency_pool(agency),
        automation_condition=RETRAIN_AUTOMATION,
        config_schema=MODEL_CONFIG_SCHEMA,
    )
    def _model(context: AssetExecutionContext, warehouse: FluxWarehouse) -> dg.MaterializeResult:
        config = RiskModelConfig(**context.op_config)
        with transient_retries(context.retry_number), warehouse.connect(agency.id) as conn:
            vectors = _training_vectors(conn, config.max_training_rows)
        if vectors.height < config.min_training_rows:
            raise dg.Failure(
                description=f"{agency.id}: only {vectors.height} scored transactions (< "
                f"{config.min_training_rows}); materialize {SCORES} for more days first. "
                "Scoring stays rules only until a model is trained.",
                allow_retries=False,
            )
        model = train(vectors, n_estimators=config.n_estimators)
        path = save(model, warehouse.models_dir(agency.id, MODEL))
        scores = model.score(vectors)
        context.log.info(f"{agency.id}: trained {model.version} on {model.trained_rows} rows")
        return dg.MaterializeResult(
            metadata={
                "model_version": model.version,
                "path": dg.MetadataValue.path(str(path)),
                "training_rows": model.trained_rows,
                "features": list(model.features),
                "params": dg.MetadataValue.json(model.params),
                "training_score_p50": float(pl.Series(scores).median() or 0.0),
                "training_score_p99": float(pl.Series(scores).quantile(0.99) or 0.0),
            }
        )

    return _model


def _training_vectors(conn: "duckdb.DuckDBPyConnection", limit: int) -> pl.DataFrame:
    """A deterministic sample of stored feature vectors (same data, same model hash)."""
    if not _has_table(conn, SCORES):
        return pl.DataFrame(schema=dict.fromkeys(FEATURE_COLUMNS, pl.Float64))
    columns = ", ".join(quote(c) for c in FEATURE_COLUMNS)
    return conn.sql(
        f"SELECT {columns} FROM {quote(SCORES)} "
        f"ORDER BY hash(_partition_date, _file, _row_number) LIMIT {int(limit)}"
    ).pl()
