"""Improper-payment rules over curated transactions: each fired rule is a reason.

The rules are where payment-integrity reviews start: amounts that should not be,
identifiers that cannot be, modifications that arrive out of order, amounts that look typed
rather than computed, and an obligation far from the recipient's own history. Every rule
has a weight in [0, 1]; a transaction's rules score is the noisy-or of its fired weights
(1 - prod(1 - w)), so the score stays in [0, 1] like the model's and one strong reason
counts for more than several weak ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from flux_pipelines.risk.recipient_history import signed_log

# 123456787 is what USAspending files carry for "MISCELLANEOUS FOREIGN AWARDEES"
PLACEHOLDER_DUNS = ("123456787", "123456789", "987654321", *(str(d) * 9 for d in range(10)))
UEI_PATTERN = r"^[A-HJ-NP-Z1-9][A-HJ-NP-Z0-9]{11}$"  # SAM.gov: no I or O, no leading 0
Z_FAR = 3.0
MIN_HISTORY = 5
MIN_CODE_HISTORY = 20  # a code with a 10% share is unseen in 20 transactions 12% of the time


@dataclass(frozen=True)
class RiskRule:
    id: str
    weight: float
    reason: str


RULES: tuple[RiskRule, ...] = (
    RiskRule("obligation_not_positive", 0.3, "obligation is zero or negative"),
    RiskRule("duns_placeholder", 0.6, "recipient DUNS is a placeholder"),
    RiskRule("duns_malformed", 0.5, "recipient DUNS is not 9 digits"),
    RiskRule("uei_malformed", 0.5, "recipient UEI is not 12 SAM.gov characters"),
    RiskRule("modification_out_of_order", 0.4, "modification dated before a lower-numbered one"),
    RiskRule("round_dollar", 0.2, "round-dollar amount (a multiple of $1,000 from $10,000)"),
    RiskRule("far_from_recipient_history", 0.5, "obligation far from the recipient's history"),
    RiskRule("naics_new_for_recipient", 0.3, "NAICS code new for this recipient"),
    RiskRule("psc_new_for_recipient", 0.3, "PSC code new for this recipient"),
)


@dataclass(frozen=True)
class Columns:
    """Where the rules find their inputs in a curated transactions table."""

    amount: str = "federal_action_obligation"
    recipient: str = "recipient_unique_id"
    uei: str | None = None
    award: str = "award_id"
    modification: str = "modification_number"
    action_date: str = "action_date"
    naics: str = "naics_code"
    psc: str = "product_or_service_code"
    transaction: str = "transaction_id"


def row_rules(columns: Columns) -> dict[str, pl.Expr]:
    """The rules that need only the row itself: rule id -> fires (never null)."""
    amount = pl.col(columns.amount).cast(pl.Float64)
    duns = normalised_duns(pl.col(columns.recipient))
    placeholder = duns.is_in(PLACEHOLDER_DUNS)
    fired = {
        "obligation_not_positive": amount <= 0,
        "duns_placeholder": placeholder,
        "duns_malformed": duns.is_not_null() & ~placeholder & ~duns.str.contains(r"^\d{9}$"),
        "round_dollar": (amount.abs() >= 10_000) & (amount % 1_000 == 0),
    }
    if columns.uei:
        uei = pl.col(columns.uei).cast(pl.String).str.strip_chars()
        fired["uei_malformed"] = uei.is_not_null() & ~uei.str.contains(UEI_PATTERN)
    return {rule: expr.fill_null(False) for rule, expr in fired.items()}


def normalised_duns(column: pl.Expr) -> pl.Expr:
    """DUNS with the leading zeros that number-typed exports drop put back (7-8 digits).

    The contract already warns about the lost zeros; for risk they are the same recipient.
    """
    text = column.cast(pl.String).str.strip_chars()
    return pl.when(text.str.contains(r"^\d{7,8}$")).then(text.str.zfill(9)).otherwise(text)


def modification_out_of_order(frame: pl.DataFrame, columns: Columns) -> pl.Series:
    """True where an award's modification carries a lower number than one dated earlier.

    Numbers are compared within one award and one prefix (``P00003`` with ``P00001``, never
    with ``A00002``); same-day modifications may come in any order.
    """
    mod = pl.col(columns.modification).cast(pl.String).str.strip_chars()
    keyed = frame.select(
        pl.int_range(pl.len()).alias("_i"),
        pl.col(columns.award).alias("_award"),
        mod.str.extract(r"^([A-Za-z]*)", 1).alias("_prefix"),
        mod.str.extract(r"(\d+)$", 1).cast(pl.Int64, strict=False).alias("_number"),
        pl.col(columns.action_date).alias("_date"),
    )
    usable = keyed.filter(pl.all_horizontal(pl.col("_award", "_number", "_date").is_not_null()))
    by_day = (
        usable.group_by("_award", "_prefix", "_date")
        .agg(pl.col("_number").max().alias("_day_max"))
        .sort("_award", "_prefix", "_date")
        .with_columns(
            pl.col("_day_max").cum_max().shift(1).over("_award", "_prefix").alias("_before_max")
        )
    )
    flagged = (
        usable.join(by_day, on=["_award", "_prefix", "_date"], how="left", nulls_equal=True)
        .filter(pl.col("_number") < pl.col("_before_max"))
        .get_column("_i")
    )
    return keyed.get_column("_i").is_in(flagged.implode()).alias("modification_out_of_order")


def far_from_history(
    amount: pl.Expr, n: pl.Expr, mean: pl.Expr, std: pl.Expr
) -> tuple[pl.Expr, pl.Expr]:
    """(fires, z) against the recipient's history on the signed-log scale.

    No z without MIN_HISTORY values and some spread; a constant history flags any amount
    more than a factor of two away from it.
    """
    x = signed_log(amount.cast(pl.Float64))
    enough = n.fill_null(0) >= MIN_HISTORY
    spread = std.fill_null(0.0) > 1e-9
    z = pl.when(enough & spread & x.is_finite()).then((x - mean) / std)
    constant_broken = enough & ~spread & x.is_finite() & ((x - mean).abs() > 0.6931471805599453)
    return ((z.abs() >= Z_FAR) | constant_broken).fill_null(False), z


def rules_score(fired: dict[str, pl.Expr]) -> pl.Expr:
    """Noisy-or of the fired rules' weights."""
    weights = {rule.id: rule.weight for rule in RULES}
    keep = pl.lit(1.0)
    for rule_id, expr in fired.items():
        keep = keep * pl.when(expr).then(1.0 - weights[rule_id]).otherwise(1.0)
    return (1.0 - keep).alias("rules_score")


def reasons(fired: dict[str, pl.Expr], details: dict[str, pl.Expr] | None = None) -> pl.Expr:
    """The fired rules' reasons, strongest first; ``details`` replace a rule's fixed text."""
    texts = {rule.id: rule for rule in RULES}
    details = details or {}
    ordered = sorted(fired, key=lambda r: -texts[r].weight)
    return (
        pl.concat_list(
            [pl.when(fired[r]).then(details.get(r, pl.lit(texts[r].reason))) for r in ordered]
        )
        .list.drop_nulls()
        .alias("reasons")
    )
