"""The risk step: train the model when due, then score a run's days (part of the agency's
ingest step).

Imported by the asset bodies when a step runs, never with the definitions: it brings polars
and the scoring code, and scikit-learn once a model is trained or loaded.

Scores are recorded per day like the ingest step's results: each scored day gets its own
materialization of ``<agency>/contract_transactions_risk`` (rows, flagged, basis, rules
fired, top flagged) and its own check results, so a multi-day run shows each day's figures.
A day without curated transactions records nothing. A model trained by the step gets its
own materialization of ``<agency>/contract_transactions_risk_model`` (an external asset).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import dagster as dg
import polars as pl
from pydantic import ValidationError

from flux_pipelines.access.masking import classified_columns
from flux_pipelines.config_files import problems
from flux_pipelines.contracts.ddl import DatasetTables
from flux_pipelines.contracts.registry import Agency, load_registry
from flux_pipelines.defs.ingest.step_plan import transient_retries
from flux_pipelines.defs.spending.risk import (
    DATASET,
    EVERY_TRANSACTION_SCORED,
    FLAGGED_HAVE_REASONS,
    MODEL,
    RETRAIN_HOUR_UTC,
    RETRAIN_WEEKDAY,
    SCORES,
    RiskScoringConfig,
)
from flux_pipelines.names import model_key, scores_key
from flux_pipelines.resources.warehouse import FluxWarehouse, publish_partition
from flux_pipelines.risk.features import FEATURE_COLUMNS
from flux_pipelines.risk.model import ModelUnavailable, RiskModel, load_current, save, train
from flux_pipelines.risk.scoring import ScoringSettings, score_day, score_summary
from flux_pipelines.sql import frame, quote, table_exists

if TYPE_CHECKING:
    import duckdb


def run_scoring(
    context: dg.AssetExecutionContext, warehouse: FluxWarehouse, agency: Agency
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """Score each of the run's days; one materialization and check results per scored day.
    A day scored twice or left unscored (the blocking check) fails the step after every
    day's events."""
    try:
        config = RiskScoringConfig(**(context.op_config or {}))
    except ValidationError as exc:
        raise dg.Failure(
            description=f"{agency.id}: risk scoring config is out of range: "
            + problems(exc.errors()),
            allow_retries=False,
        ) from exc
    settings = ScoringSettings(alpha=config.alpha, flag_threshold=config.flag_threshold)
    key = scores_key(agency)
    checks = context.selected_asset_check_keys
    broken: list[str] = []
    with transient_retries(context.retry_number), warehouse.connect(agency.id) as conn:
        model, basis = current_model(warehouse, agency)
        if config.retrain or retrain_due(model, dt.datetime.now(dt.UTC)):
            trained = _train(conn, warehouse, agency, config)
            if isinstance(trained, str):  # too few stored vectors: why no model
                basis = basis if model else f"{basis}; {trained}"
                context.log.info(f"{agency.id}: {trained}")
            else:
                model, materialization = trained
                basis = blended_basis(model)
                yield materialization
                context.log.info(f"{agency.id}: trained and {basis}")
        context.log.info(f"{agency.id}: scoring {basis}")
        for partition in context.partition_keys:
            day = dt.date.fromisoformat(partition)
            scores = _score_one(conn, warehouse, agency, day, model, settings)
            if scores.width == 0 or scores.height == 0:
                context.log.info(f"{agency.id} {day}: no curated transactions, nothing scored")
                continue
            unscored, duplicated = _coverage(conn, [day])
            if unscored or duplicated:
                broken.append(f"{day}: {unscored} unscored, {duplicated} scored twice")
            yield _scores_materialization(key, partition, scores, basis, model, config)
            without_reason = scores.filter(
                pl.col("flagged") & (pl.col("reasons").list.len() == 0)
            ).height
            verdicts = {
                EVERY_TRANSACTION_SCORED: (
                    unscored == 0 and duplicated == 0,
                    {"unscored": unscored, "scored_twice": duplicated},
                ),
                FLAGGED_HAVE_REASONS: (
                    without_reason == 0,
                    {"flagged_without_reason": without_reason},
                ),
            }
            for name, (passed, metadata) in verdicts.items():
                if dg.AssetCheckKey(key, name) in checks:
                    yield dg.AssetCheckEvaluation(
                        asset_key=key,
                        check_name=name,
                        passed=passed,
                        partition=partition,
                        metadata=metadata,
                    )
    if broken:
        raise dg.Failure(
            description=f"{agency.id}: every curated transaction must have exactly one score "
            f"({'; '.join(broken)}). Re-run the days; if it persists, report it with the run id.",
            allow_retries=False,
        )


def _scores_materialization(
    key: dg.AssetKey,
    partition: str,
    scores: pl.DataFrame,
    basis: str,
    model: RiskModel | None,
    config: RiskScoringConfig,
) -> dg.AssetMaterialization:
    summary = score_summary(scores)
    return dg.AssetMaterialization(
        asset_key=key,
        partition=partition,
        metadata={
            "dagster/row_count": cast("int", summary["rows"]),
            "flagged": cast("int", summary["flagged"]),
            "score_basis": basis,
            "model_version": model.version if model else "none",
            "alpha": config.alpha if model else 0.0,
            "flag_threshold": config.flag_threshold,
            "rules_fired": dg.MetadataValue.json(cast("dict[str, int]", summary["by_rule"])),
            "top_flagged": dg.MetadataValue.md(_top_flagged(scores)),
        },
    )


def retrain_due(model: RiskModel | None, now: dt.datetime) -> bool:
    """No model, or one trained before the last retrain time (Mondays 05:00 UTC)."""
    if model is None:
        return True
    tick = now.replace(hour=RETRAIN_HOUR_UTC, minute=0, second=0, microsecond=0)
    tick -= dt.timedelta(days=(now.weekday() - RETRAIN_WEEKDAY) % 7)
    if tick > now:
        tick -= dt.timedelta(days=7)
    trained_at = dt.datetime.strptime(model.trained_at, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    return trained_at < tick


def _train(
    conn: duckdb.DuckDBPyConnection,
    warehouse: FluxWarehouse,
    agency: Agency,
    config: RiskScoringConfig,
) -> tuple[RiskModel, dg.AssetMaterialization] | str:
    """Train and store the agency's forest on its stored feature vectors: the model and
    its materialization, or why no model was trained."""
    vectors = _training_vectors(conn, config.max_training_rows)
    if vectors.height < config.min_training_rows:
        return (
            f"no model trained: only {vectors.height} scored transactions (< "
            f"{config.min_training_rows}); one is trained once more days are scored"
        )
    model = train(vectors, n_estimators=config.n_estimators)
    path = save(model, warehouse.models_dir(agency.id, MODEL))
    scores = pl.Series(model.score(vectors))
    return model, dg.AssetMaterialization(
        asset_key=model_key(agency),
        metadata={
            "model_version": model.version,
            "path": dg.MetadataValue.path(str(path)),
            "training_rows": model.trained_rows,
            "features": list(model.features),
            "params": dg.MetadataValue.json(model.params),
            "training_score_p50": _number(scores.median()),
            "training_score_p99": _number(scores.quantile(0.99)),
        },
    )


def _number(value: object) -> float:
    """A polars statistic as a float (0.0 when there is none: no rows)."""
    return float(value) if isinstance(value, int | float) else 0.0


def current_model(warehouse: FluxWarehouse, agency: Agency) -> tuple[RiskModel | None, str]:
    """The agency's trained model, or None and the reason scoring falls back to rules."""
    try:
        model = load_current(warehouse.models_dir(agency.id, MODEL))
    except ModelUnavailable as exc:
        return None, f"rules only: {exc}"
    return model, blended_basis(model)


def blended_basis(model: RiskModel) -> str:
    return f"blended with model {model.version}"


def _score_one(
    conn: duckdb.DuckDBPyConnection,
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
    # A score row keeps its transaction's recipient: the transactions contract marks it.
    classified = classified_columns(load_registry().versions(DATASET))
    publish_partition(conn, warehouse, agency.id, SCORES, SCORES, day, columns=classified)
    return scores


def _curated_day(conn: duckdb.DuckDBPyConnection, table: str, day: dt.date) -> pl.DataFrame:
    if not table_exists(conn, table):
        return pl.DataFrame()
    return frame(
        conn,
        f"SELECT * FROM {quote(table)} WHERE _partition_date = ? ORDER BY _file, _row_number",
        [day],
    )


def _coverage(conn: duckdb.DuckDBPyConnection, days: list[dt.date]) -> tuple[int, int]:
    """(curated rows without a score, rows scored more than once) over the days."""
    curated = DatasetTables.for_dataset(DATASET).curated
    if not (table_exists(conn, SCORES) and table_exists(conn, curated)):
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


def _training_vectors(conn: duckdb.DuckDBPyConnection, limit: int) -> pl.DataFrame:
    """A deterministic sample of stored feature vectors (same data, same model hash)."""
    if not table_exists(conn, SCORES):
        return pl.DataFrame(schema=dict.fromkeys(FEATURE_COLUMNS, pl.Float64))
    columns = ", ".join(quote(c) for c in FEATURE_COLUMNS)
    return frame(
        conn,
        f"SELECT {columns} FROM {quote(SCORES)} "
        f"ORDER BY hash(_partition_date, _file, _row_number) LIMIT {int(limit)}",
    )
