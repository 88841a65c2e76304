"""The feature vector the Isolation Forest sees: one documented number per idea.

The features are computed when a transaction is scored, against the history as it was
then, and stored with the score (``f_<name>`` columns); the model is trained on those
stored vectors, so training and scoring can never compute a feature differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Feature:
    name: str
    description: str

    @property
    def column(self) -> str:
        return f"f_{self.name}"


FEATURES: tuple[Feature, ...] = (
    Feature("log_amount", "sign(x) * ln(1 + |x|) of the obligation: its size and direction"),
    Feature(
        "recipient_z",
        "z-score of log_amount against the recipient's earlier obligations (0 without five "
        "earlier transactions or without spread)",
    ),
    Feature("recipient_history", "ln(1 + number of the recipient's earlier transactions)"),
    Feature("naics_new", "1 if the NAICS code is new for a recipient with history, else 0"),
    Feature("psc_new", "1 if the PSC code is new for a recipient with history, else 0"),
    Feature("modification_index", "ln(1 + the modification's sequence number); 0 = base award"),
    Feature(
        "days_to_fiscal_year_end",
        "days from the action date to 30 September of its fiscal year (year-end spending "
        "surges); 0 when the date is missing",
    ),
    Feature("identifier_defect", "1 if the recipient's DUNS is a placeholder or malformed"),
)
FEATURE_COLUMNS: tuple[str, ...] = tuple(f.column for f in FEATURES)


def days_to_fiscal_year_end(action_date: pl.Expr) -> pl.Expr:
    """Days to the next 30 September (the federal fiscal year ends then)."""
    year = action_date.dt.year() + (action_date.dt.month() >= 10).cast(pl.Int32)
    end = pl.date(year, 9, 30)
    return (end - action_date).dt.total_days()


def modification_index(modification: pl.Expr) -> pl.Expr:
    number = modification.cast(pl.String).str.extract(r"(\d+)$", 1).cast(pl.Int64, strict=False)
    return number.fill_null(0).clip(lower_bound=0).cast(pl.Float64).log1p()


def feature_matrix_markdown() -> str:
    rows = "\n".join(f"| `{f.column}` | {f.description} |" for f in FEATURES)
    return f"| feature | meaning |\n|---|---|\n{rows}"
