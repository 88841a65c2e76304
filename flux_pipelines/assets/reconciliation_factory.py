"""Reconciliation assets: agency totals inside one agency's file, record links across agencies.

Storage follows the isolation rule: the agency-level reconciliation compares two datasets
one agency (Treasury) delivers, so it lives in that agency's file and published folder;
recipient links join every agency's transactions with Treasury's award file, so they are
built from published, read-only copies into ``published/cross_agency/``.
"""

import datetime as dt

import dagster as dg
import duckdb
import polars as pl
from dagster import AssetExecutionContext
from pydantic import Field

from flux_pipelines.assets.ingest_factory import agency_pool, asset_keys
from flux_pipelines.contracts.ddl import DatasetTables, quote
from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.reconcile.agency_totals import Tolerance, reconcile_agency_totals
from flux_pipelines.resources.warehouse import FluxWarehouse

CONTRACTS = "award_obligations"
ACCOUNTS = "account_obligations"
AGENCY_TOTALS = "agency_obligations_reconciliation"
NAME_MATCHES = "agency_name_matches"
WITHIN_TOLERANCE = "contracts_within_account_obligations"
EVERY_AGENCY_PLACED = "every_contract_agency_placed"


class AgencyReconciliationConfig(dg.Config):
    fiscal_year: int | None = Field(
        default=None, description="Fiscal year to reconcile; empty: the latest with Q4 figures."
    )
    quarter: int = Field(default=4, ge=1, le=4, description="Account figures of this quarter.")
    relative_tolerance: float = Field(
        default=0.0, ge=0.0, description="Share of account obligations contracts may exceed."
    )
    absolute_tolerance: float = Field(default=1.0, ge=0.0, description="Dollars (rounding).")
    fuzzy_at: float = Field(default=90.0, ge=50.0, le=100.0, description="Fuzzy name score.")


def agency_totals_key(agency: Agency) -> dg.AssetKey:
    return dg.AssetKey([agency.key, AGENCY_TOTALS])


def reconciliation_assets(registry: Registry) -> list[dg.AssetsDefinition]:
    return [
        build_agency_totals_asset(agency)
        for agency in registry.agencies
        if {CONTRACTS, ACCOUNTS} <= set(agency.datasets)
    ]


def build_agency_totals_asset(agency: Agency) -> dg.AssetsDefinition:
    key = agency_totals_key(agency)

    @dg.asset(
        key=key,
        deps=[asset_keys(agency, CONTRACTS)[1], asset_keys(agency, ACCOUNTS)[1]],
        group_name=agency.key,
        owners=[agency.owner] if agency.owner else [],
        tags={"domain": "spending", "agency": agency.key, "layer": "reconciliation"},
        kinds={"duckdb", "polars"},
        description="Per agency: contract obligations of the fiscal year (latest "
        f"{CONTRACTS} delivery) against the Q4 obligations of its federal accounts "
        f"({ACCOUNTS}). Agency names matched exact, normalised, then fuzzy; agencies the "
        "account file does not name go to its catch-all row. Status within / exceeds / "
        "no_account_obligations / unmatched.",
        metadata={
            "dagster/table_name": f"{agency.id}.{AGENCY_TOTALS}",
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    dg.TableColumn("account_agency", "VARCHAR"),
                    dg.TableColumn("contract_agencies", "VARCHAR[]"),
                    dg.TableColumn("match_methods", "VARCHAR[]"),
                    dg.TableColumn("contracts_total", "DOUBLE"),
                    dg.TableColumn("accounts_total", "DOUBLE"),
                    dg.TableColumn("headroom", "DOUBLE", "accounts - contracts"),
                    dg.TableColumn("contracts_share", "DOUBLE"),
                    dg.TableColumn("status", "VARCHAR"),
                ]
            ),
        },
        check_specs=[
            dg.AssetCheckSpec(
                WITHIN_TOLERANCE,
                asset=key,
                description="No agency's contract obligations exceed its account obligations "
                "beyond the tolerance.",
            ),
            dg.AssetCheckSpec(
                EVERY_AGENCY_PLACED,
                asset=key,
                description="Every contract agency is matched to an account agency (by name or "
                "in the catch-all row).",
            ),
        ],
        pool=agency_pool(agency),
    )
    def _agency_totals(
        context: AssetExecutionContext,
        config: AgencyReconciliationConfig,
        warehouse: FluxWarehouse,
    ) -> dg.MaterializeResult:
        tolerance = Tolerance(config.relative_tolerance, config.absolute_tolerance)
        with warehouse.connect(agency.id) as conn:
            contracts, contracts_day = _latest_contracts(conn)
            accounts, fiscal_year = _account_figures(conn, config.fiscal_year, config.quarter)
            result = reconcile_agency_totals(
                contracts, accounts, tolerance=tolerance, fuzzy_at=config.fuzzy_at
            )
            totals = result.totals.with_columns(pl.lit(fiscal_year).alias("fiscal_year"))
            _replace(conn, AGENCY_TOTALS, totals)
            _replace(conn, NAME_MATCHES, result.matches)
        out = warehouse.published_dir(agency.id, AGENCY_TOTALS)
        out.mkdir(parents=True, exist_ok=True)
        totals.write_parquet(out / f"fy{fiscal_year}.parquet")
        exceeds = totals.filter(pl.col("status") == "exceeds")
        unmatched = result.matches.filter(pl.col("method") == "unmatched")
        methods = result.matches["method"].value_counts(sort=True)
        context.log.info(
            f"FY{fiscal_year}: {totals.height} agencies, {exceeds.height} exceed, "
            f"{unmatched.height} unmatched"
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": totals.height,
                "fiscal_year": fiscal_year,
                "contracts_delivery": str(contracts_day),
                "tolerance": tolerance.describe(),
                "name_matches": dg.MetadataValue.json(
                    dict(zip(methods["method"].to_list(), methods["count"].to_list(), strict=True))
                ),
                "status_counts": dg.MetadataValue.json(
                    dict(totals.group_by("status").len().sort("status").iter_rows())
                ),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=WITHIN_TOLERANCE,
                    passed=exceeds.is_empty(),
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={
                        "exceeding": "; ".join(
                            f"{r['account_agency']}: contracts {r['contracts_total']:,.2f} > "
                            f"accounts {r['accounts_total']:,.2f}"
                            for r in exceeds.iter_rows(named=True)
                        )
                        or "none",
                    },
                ),
                dg.AssetCheckResult(
                    check_name=EVERY_AGENCY_PLACED,
                    passed=unmatched.is_empty(),
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "unmatched": ", ".join(unmatched["contract_agency"].to_list()) or "none"
                    },
                ),
            ],
        )

    return _agency_totals


def _latest_contracts(conn: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, dt.date | None]:
    """The latest delivery of the contract totals (each delivery is a full-year file)."""
    table = quote(DatasetTables.for_dataset(CONTRACTS).curated)
    frame = conn.sql(
        f"SELECT agency, obligation, _partition_date FROM {table} "
        f"WHERE _partition_date = (SELECT max(_partition_date) FROM {table})"
    ).pl()
    day = frame["_partition_date"][0] if frame.height else None
    return frame.select("agency", "obligation"), day


def _account_figures(
    conn: duckdb.DuckDBPyConnection, fiscal_year: int | None, quarter: int
) -> tuple[pl.DataFrame, int]:
    """Account obligations of the quarter, from the latest delivery that reports it."""
    table = quote(DatasetTables.for_dataset(ACCOUNTS).curated)
    if fiscal_year is None:
        ((fiscal_year,),) = conn.execute(
            f"SELECT max(fy) FROM {table} WHERE q = ?", [quarter]
        ).fetchall()
    frame = conn.sql(
        f"""SELECT agency, obligation FROM {table}
            WHERE fy = $fy AND q = $q AND _partition_date = (
                SELECT max(_partition_date) FROM {table} WHERE fy = $fy AND q = $q)""",
        params={"fy": fiscal_year, "q": quarter},
    ).pl()
    return frame, int(fiscal_year or 0)


def _replace(conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    conn.register("_flux_frame", frame)
    try:
        conn.execute(f"CREATE OR REPLACE TABLE {quote(table)} AS SELECT * FROM _flux_frame")
    finally:
        conn.unregister("_flux_frame")
