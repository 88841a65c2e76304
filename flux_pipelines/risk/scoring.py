"""Score a day of curated transactions: rules, the recipient's own history, the model.

``score_transactions`` is pure (frames in, frame out): the benchmark and the tests call it
directly. ``score_day`` is the stateful step the asset runs in the agency's file, in one
transaction: take the day's earlier contribution out of the recipient state (so a re-run
scores against the same history and stays idempotent), read the history of the day's
recipients, score, replace the day's scores, and fold the day back in.

Blending: risk = alpha x model + (1 - alpha) x rules, both on [0, 1]. Without a usable
model the score is the rules score and ``score_basis`` says ``rules_only`` and why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from flux_pipelines.risk import recipient_codes, recipient_history
from flux_pipelines.risk.features import (
    FEATURE_COLUMNS,
    days_to_fiscal_year_end,
    modification_index,
)
from flux_pipelines.risk.model import RiskModel
from flux_pipelines.risk.recipient_history import signed_log
from flux_pipelines.risk.rules import (
    MIN_CODE_HISTORY,
    PLACEHOLDER_DUNS,
    Columns,
    far_from_history,
    modification_out_of_order,
    normalised_duns,
    reasons,
    row_rules,
    rules_score,
)
from flux_pipelines.sql import frame as sql_frame
from flux_pipelines.sql import quote

if TYPE_CHECKING:
    import duckdb


CODE_KINDS = ("naics", "psc")
TRANSACTIONS = Columns()  # the curated contract_transactions table
# What a score row keeps of its transaction (when present): enough to find and judge it.
IDENTITY = (
    "transaction_id", "award_id", "piid", "modification_number", "action_date",
    "federal_action_obligation", "recipient_unique_id", "recipient_name", "naics_code",
    "product_or_service_code", "awarding_subtier_agency_name", "_file", "_row_number",
)  # fmt: skip
OUTPUTS = (
    "rules_fired", "reasons", "rules_score", "model_score", "risk_score", "flagged",
    "score_basis", "model_version", *FEATURE_COLUMNS,
)  # fmt: skip


@dataclass(frozen=True)
class ScoringSettings:
    alpha: float = 0.5
    flag_threshold: float = 0.5
    model_reason_at: float = 0.6  # the forest's score from which it is a reason of its own


DEFAULT_SETTINGS = ScoringSettings()


@dataclass(frozen=True)
class History:
    """What a day is scored against: the recipients' earlier amounts, codes, modifications."""

    amounts: pl.DataFrame  # recipient, n, mean, std
    codes: pl.DataFrame  # recipient, kind, code, n
    modifications: pl.DataFrame  # award, modification, action_date of the awards' other rows

    @staticmethod
    def empty() -> History:
        return History(
            amounts=pl.DataFrame(
                schema={
                    "recipient": pl.String,
                    "n": pl.Int64,
                    "mean": pl.Float64,
                    "std": pl.Float64,
                }
            ),
            codes=pl.DataFrame(
                schema={"recipient": pl.String, "kind": pl.String, "code": pl.String, "n": pl.Int64}
            ),
            modifications=pl.DataFrame(
                schema={"award": pl.Int64, "modification": pl.String, "action_date": pl.Date}
            ),
        )


def recipient_key(columns: Columns) -> pl.Expr:
    """A recipient's identity for history: a real 9-digit DUNS (placeholders pool strangers)."""
    duns = _normalised_duns(columns)
    return pl.when(duns.str.contains(r"^\d{9}$") & ~duns.is_in(PLACEHOLDER_DUNS)).then(duns)


def _normalised_duns(columns: Columns) -> pl.Expr:
    return normalised_duns(pl.col(columns.recipient))


def score_transactions(
    frame: pl.DataFrame,
    history: History,
    model: RiskModel | None,
    settings: ScoringSettings = DEFAULT_SETTINGS,
    columns: Columns = TRANSACTIONS,
) -> pl.DataFrame:
    """One row per transaction: features, fired rules, reasons, scores, flagged."""
    work = _with_history(frame, history, columns)
    fired = _fired_rules(work, history, columns)
    work = work.with_columns(**{f"_r_{rule}": expr for rule, expr in fired.items()})
    flags = {rule: pl.col(f"_r_{rule}") for rule in fired}
    work = work.with_columns(
        rules_score(flags),
        pl.concat_list([pl.when(e).then(pl.lit(r)) for r, e in flags.items()])
        .list.drop_nulls()
        .alias("rules_fired"),
        *_features(columns, flags),
    )
    scored = _blend(_with_reasons(work, flags, columns), model, settings)
    return scored.select(*(c for c in IDENTITY if c in frame.columns), *OUTPUTS)


def _with_reasons(work: pl.DataFrame, flags: dict[str, pl.Expr], columns: Columns) -> pl.DataFrame:
    """Reason texts, formatted only for the rows where a rule fired (most rows have none)."""
    fired = pl.col("rules_fired").list.len() > 0
    indexed = work.with_row_index("_h_row")
    texts = indexed.filter(fired).select("_h_row", reasons(flags, _details(columns)))
    return (
        indexed.join(texts, on="_h_row", how="left", maintain_order="left")
        .with_columns(pl.col("reasons").fill_null(pl.lit([], dtype=pl.List(pl.String))))
        .drop("_h_row")
    )


def _with_history(frame: pl.DataFrame, history: History, columns: Columns) -> pl.DataFrame:
    work = frame.with_columns(
        recipient_key(columns).alias("_recipient"),
        pl.col(columns.naics).cast(pl.String).str.strip_chars().alias("_h_naics"),
        pl.col(columns.psc).cast(pl.String).str.strip_chars().alias("_h_psc"),
    ).join(
        history.amounts.select(
            pl.col("recipient").alias("_recipient"),
            pl.col("n").alias("_h_n"),
            pl.col("mean").alias("_h_mean"),
            pl.col("std").alias("_h_std"),
        ),
        on="_recipient",
        how="left",
    )
    for kind in CODE_KINDS:
        seen = history.codes.filter(pl.col("kind") == kind).select(
            pl.col("recipient").alias("_recipient"),
            pl.col("code").alias(f"_h_{kind}"),
            pl.col("n").alias(f"_h_{kind}_seen"),
        )
        work = work.join(seen, on=["_recipient", f"_h_{kind}"], how="left")
    return work.with_columns(_far(columns)[1].alias("_h_z"))


def _fired_rules(work: pl.DataFrame, history: History, columns: Columns) -> dict[str, pl.Expr]:
    fired = row_rules(columns)
    fired["far_from_recipient_history"] = _far(columns)[0]
    enough = pl.col("_h_n").fill_null(0) >= MIN_CODE_HISTORY
    for kind in CODE_KINDS:
        new = enough & pl.col(f"_h_{kind}").is_not_null() & pl.col(f"_h_{kind}_seen").is_null()
        fired[f"{kind}_new_for_recipient"] = new
    fired["modification_out_of_order"] = pl.lit(_out_of_order(work, history, columns))
    return {rule: expr.fill_null(False) for rule, expr in fired.items()}


def _far(columns: Columns) -> tuple[pl.Expr, pl.Expr]:
    return far_from_history(
        pl.col(columns.amount), pl.col("_h_n"), pl.col("_h_mean"), pl.col("_h_std")
    )


def _out_of_order(work: pl.DataFrame, history: History, columns: Columns) -> pl.Series:
    """Today's rows whose modification is dated before a lower-numbered one of the award."""
    today = work.select(
        pl.col(columns.award).cast(pl.Int64).alias("award"),
        pl.col(columns.modification).cast(pl.String).alias("modification"),
        pl.col(columns.action_date).alias("action_date"),
    )
    earlier = history.modifications.select(today.columns).cast(today.schema)
    both = pl.concat([today.with_row_index("_h_row"), earlier], how="diagonal")
    # Only an award with two or more modifications can have them out of order.
    repeated = both.filter(pl.len().over("award") > 1)
    flags = modification_out_of_order(
        repeated, Columns(award="award", modification="modification", action_date="action_date")
    )
    flagged_rows = repeated.filter(flags.to_numpy()).get_column("_h_row").drop_nulls()
    return pl.Series(np.isin(np.arange(work.height), flagged_rows.to_numpy()))


def _details(columns: Columns) -> dict[str, pl.Expr]:
    amount = pl.col(columns.amount).cast(pl.Float64).round(2)
    duns = _normalised_duns(columns)
    typical = pl.col("_h_mean").sign() * pl.col("_h_mean").abs().exp().sub(1).round(0)
    details = {
        "obligation_not_positive": pl.format("obligation is {} (zero or negative)", amount),
        "duns_placeholder": pl.format("recipient DUNS {} is a placeholder", duns),
        "duns_malformed": pl.format("recipient DUNS '{}' is not 9 digits", duns),
        "round_dollar": pl.format("round-dollar amount {}", amount),
        "far_from_recipient_history": pl.format(
            "obligation {} is {} SD from the recipient's history (typical {}, n = {})",
            amount,
            pl.col("_h_z").round(1),
            typical,
            pl.col("_h_n"),
        ),
    }
    for kind, label in (("naics", "NAICS"), ("psc", "PSC")):
        details[f"{kind}_new_for_recipient"] = pl.format(
            f"{label} {{}} new for this recipient (not in its {{}} earlier transactions)",
            pl.col(f"_h_{kind}"),
            pl.col("_h_n"),
        )
    return details


def _features(columns: Columns, flags: dict[str, pl.Expr]) -> list[pl.Expr]:
    amount = pl.col(columns.amount).cast(pl.Float64)
    values = {
        "log_amount": signed_log(amount),
        "recipient_z": pl.col("_h_z").clip(-50, 50),
        "recipient_history": pl.col("_h_n").fill_null(0).cast(pl.Float64).log1p(),
        "naics_new": flags["naics_new_for_recipient"],
        "psc_new": flags["psc_new_for_recipient"],
        "modification_index": modification_index(pl.col(columns.modification)),
        "days_to_fiscal_year_end": days_to_fiscal_year_end(pl.col(columns.action_date)),
        "identifier_defect": flags["duns_placeholder"] | flags["duns_malformed"],
    }
    return [_finite_or_zero(values[c.removeprefix("f_")].cast(pl.Float64)).alias(c)
            for c in FEATURE_COLUMNS]  # fmt: skip


def _finite_or_zero(value: pl.Expr) -> pl.Expr:
    """The forest cannot take NaN or infinities; such amounts are judged by the contract."""
    return pl.when(value.is_finite()).then(value).otherwise(0.0)


def _blend(work: pl.DataFrame, model: RiskModel | None, settings: ScoringSettings) -> pl.DataFrame:
    if model is None:
        return work.with_columns(
            pl.lit(None, pl.Float64).alias("model_score"),
            pl.col("rules_score").alias("risk_score"),
            pl.lit("rules_only").alias("score_basis"),
            pl.lit(None, pl.String).alias("model_version"),
            (pl.col("rules_score") >= settings.flag_threshold).alias("flagged"),
        )
    scored = work.with_columns(
        pl.Series("model_score", model.score(work), dtype=pl.Float64),
        pl.Series("_h_strongest", model.strongest_feature(work), dtype=pl.String),
        pl.lit("blended").alias("score_basis"),
        pl.lit(model.version).alias("model_version"),
    ).with_columns(
        (
            settings.alpha * pl.col("model_score") + (1 - settings.alpha) * pl.col("rules_score")
        ).alias("risk_score")
    )
    flagged = pl.col("risk_score") >= settings.flag_threshold
    model_reason = pl.format(
        "isolation forest score {} (most unusual feature: {})",
        pl.col("model_score").round(2),
        pl.col("_h_strongest"),
    )
    speaks = (pl.col("model_score") >= settings.model_reason_at) | (
        flagged & (pl.col("reasons").list.len() == 0)
    )
    return scored.with_columns(
        flagged.alias("flagged"),
        pl.when(speaks)
        .then(pl.concat_list("reasons", model_reason))
        .otherwise(pl.col("reasons"))
        .alias("reasons"),
    )


# -- the stateful step in the agency file ---------------------------------------------------
def ensure_state(conn: duckdb.DuckDBPyConnection) -> None:
    recipient_history.ensure_tables(conn)
    recipient_codes.ensure_tables(conn)


def score_day(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    frame: pl.DataFrame,
    *,
    curated_table: str,
    scores_table: str,
    model: RiskModel | None,
    settings: ScoringSettings,
    columns: Columns = TRANSACTIONS,
) -> pl.DataFrame:
    """Score the day's curated rows and replace its scores and state (one transaction)."""
    ensure_state(conn)
    conn.execute("BEGIN TRANSACTION")
    try:
        recipient_history.take_out_day(conn, day)
        recipient_codes.take_out_day(conn, day)
        keys = frame.select(recipient_key(columns)).to_series().drop_nulls()
        history = _history_before(conn, day, keys, frame, curated_table, columns)
        scores = score_transactions(frame, history, model, settings, columns)
        _replace_scores(conn, day, scores, scores_table)
        keyed = frame.with_columns(recipient_key(columns).alias("_recipient"))
        recipient_history.fold_in_day(
            conn, day, recipient_history.day_statistics(keyed, "_recipient", columns.amount)
        )
        recipient_codes.fold_in_day(
            conn,
            day,
            recipient_codes.day_codes(
                keyed, "_recipient", {"naics": columns.naics, "psc": columns.psc}
            ),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return scores


def _history_before(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    keys: pl.Series,
    frame: pl.DataFrame,
    curated_table: str,
    columns: Columns,
) -> History:
    """Everything folded in before ``day``: the running state in the daily flow (O(1) per
    recipient), the ledger when later days are already in (a re-run or an old backfill)."""
    if recipient_history.has_later_days(conn, day):
        amounts = recipient_history.history_before(conn, day, keys)
        codes = recipient_codes.codes_before(conn, day, keys)
    else:
        amounts = recipient_history.history_of(conn, keys)
        codes = recipient_codes.seen_codes(conn, keys)
    modifications = _earlier_modifications(conn, day, frame, curated_table, columns)
    return History(amounts=amounts, codes=codes, modifications=modifications)


def _earlier_modifications(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    frame: pl.DataFrame,
    curated_table: str,
    columns: Columns,
) -> pl.DataFrame:
    """The same awards' modifications delivered before ``day``."""
    awards = frame.select(pl.col(columns.award).cast(pl.Int64).unique().alias("award"))
    conn.register("_flux_awards", awards)
    try:
        return sql_frame(
            conn,
            f"SELECT CAST(t.{quote(columns.award)} AS BIGINT) AS award, "
            f"CAST(t.{quote(columns.modification)} AS VARCHAR) AS modification, "
            f"t.{quote(columns.action_date)} AS action_date FROM {quote(curated_table)} t "
            f"JOIN _flux_awards a ON CAST(t.{quote(columns.award)} AS BIGINT) = a.award "
            f"WHERE t._partition_date < DATE '{day.isoformat()}'",
        )
    finally:
        conn.unregister("_flux_awards")


def _replace_scores(
    conn: duckdb.DuckDBPyConnection, day: dt.date, scores: pl.DataFrame, table: str
) -> None:
    """Delete-then-insert the day's scores (the table is created from the first frame)."""
    staged = scores.with_columns(pl.lit(day).alias("_partition_date"))
    conn.register("_flux_scores", staged)
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {quote(table)} AS SELECT * FROM _flux_scores LIMIT 0"
        ).fetchall()
        conn.execute(f"DELETE FROM {quote(table)} WHERE _partition_date = ?", [day]).fetchall()
        conn.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM _flux_scores").fetchall()
    finally:
        conn.unregister("_flux_scores")


def empty_scores() -> pl.DataFrame:
    """A scores frame without rows (a step whose days held no transactions)."""
    return score_transactions(
        pl.DataFrame(
            schema={"transaction_id": pl.Int64, "award_id": pl.Int64,
                    "modification_number": pl.String, "action_date": pl.Date,
                    "federal_action_obligation": pl.Float64, "recipient_unique_id": pl.String,
                    "recipient_name": pl.String, "naics_code": pl.String,
                    "product_or_service_code": pl.String}
        ),
        History.empty(),
        None,
    )  # fmt: skip


def score_summary(scores: pl.DataFrame) -> dict[str, object]:
    """Counts for metadata and logs: rows, flagged, top reasons by rule."""
    fired = scores.select(pl.col("rules_fired").explode().drop_nulls()).to_series()
    by_rule = fired.value_counts(sort=True)
    mean = scores.get_column("risk_score").mean()  # None when empty, NaN if a score is
    return {
        "rows": scores.height,
        "flagged": int(scores.get_column("flagged").sum()),
        "mean_risk": float(np.nan_to_num(mean if isinstance(mean, float) else 0.0)),
        "by_rule": dict(
            zip(by_rule[by_rule.columns[0]].to_list(), by_rule["count"].to_list(), strict=True)
        ),
    }
