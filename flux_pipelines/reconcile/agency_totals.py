"""Agency-level reconciliation: contract obligations against account obligations.

Contracts are paid out of federal accounts, so an agency's contract obligations for a
fiscal year cannot exceed the obligations its accounts report for that year (Q4 figures
are cumulative for the year). The two files spell agencies their own way, so names are
matched in order of trust: exact, then normalised (case, punctuation, "Dept."), then fuzzy
(rapidfuzz token-sort ratio at or above ``fuzzy_at``). Agencies the account file does not
list by name are reported together in its catch-all row ("US Agencies - Non-CFO Act").

Tolerance rule: contracts <= accounts x (1 + relative) + absolute. The defaults (0, $1) let
only rounding through; anything above is an exception with its difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from rapidfuzz import fuzz, process

from flux_pipelines.reconcile.names import normalise_name


@dataclass(frozen=True)
class Tolerance:
    relative: float = 0.0
    absolute: float = 1.0

    def describe(self) -> str:
        return f"contracts <= account obligations x (1 + {self.relative:g}) + ${self.absolute:,.2f}"


EXACT = Tolerance()  # rounding only


@dataclass(frozen=True)
class AgencyReconciliation:
    matches: pl.DataFrame  # contract_agency, account_agency, method, score
    totals: pl.DataFrame  # one row per account agency (or unmatched contract agency)


def match_agency_names(
    contract_names: list[str],
    account_names: list[str],
    *,
    fuzzy_at: float = 90.0,
    catch_all: str = "non-cfo",
) -> pl.DataFrame:
    """Where each contract agency's obligations are reported in the account file."""
    normalised = _normalised(account_names)
    by_norm = dict(zip(normalised, account_names, strict=True))
    bucket = next((a for a in account_names if catch_all in a.lower()), None)
    rows: list[tuple[str, str | None, str, float]] = []
    for name, norm in zip(contract_names, _normalised(contract_names), strict=True):
        if name in account_names:
            rows.append((name, name, "exact", 100.0))
        elif norm in by_norm:
            rows.append((name, by_norm[norm], "normalised", 100.0))
        elif best := process.extractOne(norm, normalised, scorer=fuzz.token_sort_ratio,
                                        score_cutoff=fuzzy_at):  # fmt: skip
            rows.append((name, by_norm[best[0]], "fuzzy", float(best[1])))
        elif bucket is not None:
            rows.append((name, bucket, "catch_all", 0.0))
        else:
            rows.append((name, None, "unmatched", 0.0))
    return pl.DataFrame(
        rows,
        schema={"contract_agency": pl.String, "account_agency": pl.String,
                "method": pl.String, "score": pl.Float64},
        orient="row",
    )  # fmt: skip


def _normalised(names: list[str]) -> list[str]:
    return (
        pl.DataFrame({"n": names}, schema={"n": pl.String})
        .select(normalise_name(pl.col("n")).fill_null(""))
        .to_series()
        .to_list()
    )


def reconcile_agency_totals(
    contracts: pl.DataFrame,
    accounts: pl.DataFrame,
    *,
    tolerance: Tolerance = EXACT,
    fuzzy_at: float = 90.0,
) -> AgencyReconciliation:
    """``contracts`` and ``accounts`` have columns agency and obligation (any number of rows)."""
    contract_totals = contracts.group_by("agency").agg(pl.col("obligation").sum())
    account_totals = accounts.group_by("agency").agg(pl.col("obligation").sum())
    matches = match_agency_names(
        sorted(contract_totals["agency"].drop_nulls().to_list()),
        sorted(account_totals["agency"].drop_nulls().to_list()),
        fuzzy_at=fuzzy_at,
    )
    placed = contract_totals.join(matches, left_on="agency", right_on="contract_agency")
    grouped = (
        placed.with_columns(pl.coalesce("account_agency", "agency").alias("_group"))
        .group_by("_group")
        .agg(
            pl.col("account_agency").first(),
            pl.col("agency").sort().alias("contract_agencies"),
            pl.col("method").unique().sort().alias("match_methods"),
            pl.col("obligation").sum().alias("contracts_total"),
        )
    )
    totals = (
        grouped.join(
            account_totals.rename({"agency": "account_agency", "obligation": "accounts_total"}),
            on="account_agency",
            how="full",
            coalesce=True,
        )
        .with_columns(pl.col("contracts_total").fill_null(0.0))
        .with_columns(
            (pl.col("accounts_total") - pl.col("contracts_total")).alias("headroom"),
            (pl.col("contracts_total") / pl.col("accounts_total")).alias("contracts_share"),
            _status(tolerance).alias("status"),
        )
        .drop("_group")
        .sort("status", "account_agency", nulls_last=True)
    )
    return AgencyReconciliation(matches=matches, totals=totals)


def _status(tolerance: Tolerance) -> pl.Expr:
    limit = pl.col("accounts_total") * (1 + tolerance.relative) + tolerance.absolute
    return (
        pl.when(pl.col("account_agency").is_null())
        .then(pl.lit("unmatched"))
        .when(pl.col("accounts_total").is_null())
        .then(pl.lit("no_account_obligations"))
        .when(pl.col("contracts_total") > limit)
        .then(pl.lit("exceeds"))
        .otherwise(pl.lit("within"))
    )
