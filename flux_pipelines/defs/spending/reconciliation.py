"""Reconciliation assets: agency totals inside one agency's file, record links across agencies.

Storage follows the isolation rule: the agency-level reconciliation compares two datasets
one agency (Treasury) delivers, so it lives in that agency's file and published folder;
recipient links join every agency's transactions with Treasury's award file, so they are
built from published, read-only copies into ``published/cross_agency/``: matched on names in
clear (the personal-data copies), published with names as the cross-agency policy shows them.
"""

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext
from pydantic import Field

from flux_pipelines.access.masking import (
    bind_key,
    classified_columns,
    select_list,
    source_file,
    strictest,
    treatment,
)
from flux_pipelines.access.policy import Treatment
from flux_pipelines.audit.trail import AuditTrail
from flux_pipelines.contracts.ddl import DatasetTables
from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.defs.agency import agency_spec
from flux_pipelines.defs.ingest.assets import agency_pool, asset_keys, transient_retries
from flux_pipelines.defs.published.cross_agency import GROUP as CROSS_AGENCY
from flux_pipelines.defs.published.cross_agency import ZSTD_PARQUET, certified_files, output_dir
from flux_pipelines.defs.results import Materialized
from flux_pipelines.names import (
    AWARDS_DATASET,
    RECIPIENT_LINKS,
    cross_agency_key,
    published_root,
)
from flux_pipelines.quality.certification import day_verdicts
from flux_pipelines.reconcile.agency_totals import Tolerance, reconcile_agency_totals
from flux_pipelines.reconcile.linking import LinkResult, LinkSettings, LinkSpec, link_records
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines.sql import quote, table_exists, write_parquet_atomic

if TYPE_CHECKING:
    import duckdb


CONTRACTS = AWARDS_DATASET
ACCOUNTS = "account_obligations"
TRANSACTIONS = "contract_transactions"
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


def _reconciled_agencies(registry: Registry) -> list[Agency]:
    return registry.agencies_for(CONTRACTS, ACCOUNTS)


def reconciliation_assets(registry: Registry) -> list[dg.AssetsDefinition]:
    """Agency-level reconciliations (the cross-agency links join ``cross_agency_assets``)."""
    return [build_agency_totals_asset(agency) for agency in _reconciled_agencies(registry)]


def agency_totals_keys(registry: Registry) -> list[dg.AssetKey]:
    """The reconciliation assets' keys, without building the assets again."""
    return [agency_totals_key(a) for a in _reconciled_agencies(registry)]


def build_agency_totals_asset(agency: Agency) -> dg.AssetsDefinition:
    key = agency_totals_key(agency)

    @dg.asset(
        key=key,
        deps=[asset_keys(agency, CONTRACTS)[1], asset_keys(agency, ACCOUNTS)[1]],
        **agency_spec(agency, domain="spending", layer="reconciliation"),
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
    ) -> Materialized:
        tolerance = Tolerance(config.relative_tolerance, config.absolute_tolerance)
        with transient_retries(context.retry_number), warehouse.connect(agency.id) as conn:
            if missing := _missing_inputs(conn):
                return _nothing_to_reconcile(missing)
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


def _missing_inputs(conn: "duckdb.DuckDBPyConnection") -> list[str]:
    return [
        d
        for d in (CONTRACTS, ACCOUNTS)
        if not table_exists(conn, DatasetTables.for_dataset(d).curated)
    ]


def _nothing_to_reconcile(missing: list[str]) -> Materialized:
    """Before both datasets are delivered there is nothing to compare (the daily refresh
    runs regardless); the checks pass and say so."""
    note = f"nothing to reconcile yet: no {' or '.join(missing)} delivered"
    return dg.MaterializeResult(
        metadata={"dagster/row_count": 0, "status": note},
        check_results=[
            dg.AssetCheckResult(check_name=name, passed=True, metadata={"note": note})
            for name in (WITHIN_TOLERANCE, EVERY_AGENCY_PLACED)
        ],
    )


def _latest_contracts(conn: "duckdb.DuckDBPyConnection") -> tuple[pl.DataFrame, dt.date | None]:
    """The latest delivery of the contract totals (each delivery is a full-year file)."""
    table = quote(DatasetTables.for_dataset(CONTRACTS).curated)
    frame = conn.sql(
        f"SELECT agency, obligation, _partition_date FROM {table} "
        f"WHERE _partition_date = (SELECT max(_partition_date) FROM {table})"
    ).pl()
    day = frame["_partition_date"][0] if frame.height else None
    return frame.select("agency", "obligation"), day


def _account_figures(
    conn: "duckdb.DuckDBPyConnection", fiscal_year: int | None, quarter: int
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


def _replace(conn: "duckdb.DuckDBPyConnection", table: str, frame: pl.DataFrame) -> None:
    conn.register("_flux_frame", frame)
    try:
        conn.execute(f"CREATE OR REPLACE TABLE {quote(table)} AS SELECT * FROM _flux_frame")
    finally:
        conn.unregister("_flux_frame")


# -- record level, across agencies ----------------------------------------------------------
LINK_TABLES = ("matched", "unmatched_left", "unmatched_right", "exceptions")
EVERY_RECORD_ACCOUNTED = "every_record_accounted"


class RecipientLinksConfig(dg.Config):
    accept: float = Field(default=90.0, ge=50.0, le=100.0, description="Fuzzy score to link.")
    review: float = Field(default=80.0, ge=50.0, le=100.0, description="Fuzzy score to review.")
    margin: float = Field(default=3.0, ge=0.0, description="Lead over the runner-up to link.")


def recipient_links_asset(registry: Registry) -> list[dg.AssetsDefinition]:
    """Transactions' recipients (every agency) linked to Treasury's award file, if both ship."""
    sources = registry.agencies_for(CONTRACTS)
    if not sources or TRANSACTIONS not in registry.contracts:
        return []
    return [build_recipient_links_asset(sources, names_treatment(registry))]


def names_treatment(registry: Registry) -> Treatment:
    """How the links show recipient names: the cross-agency treatment of the strictest of
    the two name columns they join (hashed when personal, so analysts can still join the
    links to their own copies, whose names are hashed with the same key)."""
    names = {TRANSACTIONS: "recipient_name", CONTRACTS: "recipient"}
    return strictest(
        treatment(column, "cross_agency")
        for dataset, name in names.items()
        if dataset in registry.contracts
        for column in classified_columns(registry.versions(dataset))
        if column.name == name
    )


# Columns of the link tables holding a recipient name (or its normalised form).
NAME_COLUMNS = ("left_name", "right_name", "recipient", "norm")


def build_recipient_links_asset(
    sources: list[Agency], names_as: Treatment = "clear"
) -> dg.AssetsDefinition:
    key = cross_agency_key(RECIPIENT_LINKS)

    @dg.asset(
        key=key,
        deps=[cross_agency_key(TRANSACTIONS), *(asset_keys(a, CONTRACTS)[1] for a in sources)],
        group_name=CROSS_AGENCY,
        tags={"domain": "spending", "layer": "reconciliation"},
        kinds={"polars", "parquet"},
        description="Recipients of every agency's certified contract transactions (left: "
        "awarding agency + recipient name) linked to the recipients of the award "
        "obligations file (right: agency + recipient), blocked by agency: exact, normalised, "
        "then rapidfuzz token-sort with one-to-one links. Four tables: matched (with method "
        "and confidence), unmatched_left, unmatched_right, exceptions (with the reason).",
        check_specs=[
            dg.AssetCheckSpec(
                EVERY_RECORD_ACCOUNTED,
                asset=key,
                description="Each left record is in exactly one of matched, unmatched_left and "
                "exceptions; each right record in matched or unmatched_right.",
            )
        ],
        pool="published_cross_agency",
    )
    def _recipient_links(
        context: AssetExecutionContext, config: RecipientLinksConfig, warehouse: FluxWarehouse
    ) -> Materialized:
        # Names are linked in clear (fuzzy matching needs them) and published as the policy
        # shows them across agencies.
        left = _transaction_recipients(warehouse)
        right = _award_recipients(warehouse, sources)
        settings = LinkSettings(config.accept, config.review, config.margin)
        result = link_records(left, right, LINK_SPEC, settings)
        target = output_dir(warehouse)
        target.mkdir(parents=True, exist_ok=True)
        for name in LINK_TABLES:  # one file per table: a view each in the cross-agency catalog
            _write_shown(
                warehouse.root,
                getattr(result, name),
                target / f"{RECIPIENT_LINKS}_{name}.parquet",
                dict.fromkeys(NAME_COLUMNS, names_as),
            )
        counts = {name: getattr(result, name).height for name in LINK_TABLES}
        accounted = _accounted(result, left, right)
        context.log.info(f"recipient links: {counts}")
        methods = result.matched.group_by("method").len().sort("method")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": counts["matched"],
                **{f"{name}_rows": n for name, n in counts.items()},
                "left_records": left.height,
                "right_records": right.height,
                "methods": dg.MetadataValue.json(dict(methods.iter_rows())),
                "path": dg.MetadataValue.path(str(target)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=EVERY_RECORD_ACCOUNTED,
                    passed=accounted,
                    metadata={"left": left.height, "right": right.height},
                )
            ],
        )

    return _recipient_links


LINK_SPEC = LinkSpec("id", "recipient", "id", "recipient", "agency", "agency")


def _write_shown(
    home: Path, frame: pl.DataFrame, target: Path, wanted: dict[str, Treatment]
) -> None:
    """Write ``frame`` with ``wanted`` applied to the columns it has, swapped in atomically."""
    import duckdb

    with duckdb.connect() as conn:
        if "hash" in wanted.values():
            bind_key(conn, home)
        conn.register("_flux_frame", frame)
        select = f"SELECT {select_list(frame.columns, wanted)} FROM _flux_frame"
        write_parquet_atomic(conn, select, target, options=ZSTD_PARQUET)


def _transaction_recipients(warehouse: FluxWarehouse) -> pl.DataFrame:
    """(awarding agency, recipient) of every agency's certified transactions, names in
    clear: the same days the cross-agency copy holds, read from their clearest copies."""
    verdicts = day_verdicts(
        published_root(warehouse.root), AuditTrail(warehouse.root), TRANSACTIONS
    )
    files = certified_files(warehouse, verdicts)
    if not files:
        return pl.DataFrame(schema={"id": pl.String, "agency": pl.String, "recipient": pl.String})
    return (
        pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore")
        .select(
            pl.col("awarding_toptier_agency_name").alias("agency"),
            pl.col("recipient_name").alias("recipient"),
            pl.col("federal_action_obligation"),
        )
        .filter(pl.col("recipient").is_not_null())
        .group_by("agency", "recipient")
        .agg(pl.len().alias("transactions"), pl.col("federal_action_obligation").sum())
        .sort("agency", "recipient")
        .with_columns(pl.format("T{}", pl.int_range(pl.len())).alias("id"))
        .collect()
    )


def _award_recipients(warehouse: FluxWarehouse, sources: list[Agency]) -> pl.DataFrame:
    """Distinct (agency, recipient) of each source's latest award obligations delivery."""
    files = [
        source_file(warehouse.root, a.id, CONTRACTS, max(days).stem)
        for a in sources
        if (days := sorted(warehouse.published_dir(a.id, CONTRACTS).glob("*.parquet")))
    ]
    if not files:
        return pl.DataFrame(schema={"id": pl.String, "agency": pl.String, "recipient": pl.String})
    return (
        pl.scan_parquet(files)
        .filter(pl.col("recipient").is_not_null())
        .group_by("agency", "recipient")
        .agg(pl.col("obligation").sum())
        .sort("agency", "recipient")
        .with_columns(pl.format("A{}", pl.int_range(pl.len())).alias("id"))
        .collect()
    )


def _accounted(result: LinkResult, left: pl.DataFrame, right: pl.DataFrame) -> bool:
    lefts = pl.concat(
        [result.matched["left_id"], result.unmatched_left["id"], result.exceptions["left_id"]]
    )
    rights = pl.concat([result.matched["right_id"].unique(), result.unmatched_right["id"]])
    return (
        lefts.len() == left.height
        and lefts.n_unique() == left.height
        and rights.len() == right.height
        and rights.n_unique() == right.height
    )
