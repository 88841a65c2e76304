"""Agency-level reconciliation: name matching, tolerance rule, and the real FY18 files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.defs.spending.reconciliation import (
    AGENCY_TOTALS,
    EVERY_AGENCY_PLACED,
    NAME_MATCHES,
    WITHIN_TOLERANCE,
    agency_totals_key,
)
from flux_pipelines.names import agency_db
from flux_pipelines.reconcile.agency_totals import (
    Tolerance,
    match_agency_names,
    reconcile_agency_totals,
)
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import assets_holding, land, materialize

ACCOUNT_NAMES = [
    "Department of Defense",
    "Department of Health and Human Services",
    "Agency for International Development",
    "US Agencies - Non-CFO Act",
]


def test_names_match_exact_then_normalised_then_fuzzy_then_catch_all() -> None:
    matches = match_agency_names(
        [
            "Department of Defense",
            "DEPARTMENT OF HEALTH & HUMAN SERVICES",
            "Agency for Internationl Development",  # a typo
            "Commission of Fine Arts",
        ],
        ACCOUNT_NAMES,
    )
    got = {r["contract_agency"]: (r["account_agency"], r["method"]) for r in matches.to_dicts()}
    assert got == {
        "Department of Defense": ("Department of Defense", "exact"),
        "DEPARTMENT OF HEALTH & HUMAN SERVICES": (
            "Department of Health and Human Services",
            "normalised",
        ),
        "Agency for Internationl Development": ("Agency for International Development", "fuzzy"),
        "Commission of Fine Arts": ("US Agencies - Non-CFO Act", "catch_all"),
    }
    fuzzy = matches.filter(pl.col("method") == "fuzzy")["score"][0]
    assert 90 <= fuzzy < 100


def test_without_a_catch_all_row_a_small_agency_is_unmatched() -> None:
    matches = match_agency_names(["Commission of Fine Arts"], ACCOUNT_NAMES[:3])
    assert matches.row(0) == ("Commission of Fine Arts", None, "unmatched", 0.0)


def _frames(contracts: dict[str, float], accounts: dict[str, float]) -> tuple[pl.DataFrame, ...]:
    return (
        pl.DataFrame({"agency": list(contracts), "obligation": list(contracts.values())}),
        pl.DataFrame({"agency": list(accounts), "obligation": list(accounts.values())}),
    )


def test_contracts_above_account_obligations_exceed_unless_tolerated() -> None:
    contracts, accounts = _frames(
        {"Department of Defense": 100.0, "Commission of Fine Arts": 5.0, "Peace Corps": 6.0,
         "Agency for International Development": 50.5},
        {"Department of Defense": 100.5, "US Agencies - Non-CFO Act": 10.0,
         "Agency for International Development": 50.0, "Department of Health and Human "
         "Services": 7.0},
    )  # fmt: skip
    totals = reconcile_agency_totals(contracts, accounts, tolerance=Tolerance(0.0, 0.0)).totals
    status = dict(zip(totals["account_agency"], totals["status"], strict=True))
    assert status == {
        "Department of Defense": "within",
        "US Agencies - Non-CFO Act": "exceeds",  # 5 + 6 of small agencies > 10
        "Agency for International Development": "exceeds",
        "Department of Health and Human Services": "within",  # no contracts: 0 <= 7
    }
    bucket = totals.filter(pl.col("account_agency") == "US Agencies - Non-CFO Act").row(
        0, named=True
    )
    assert bucket["contract_agencies"] == ["Commission of Fine Arts", "Peace Corps"]
    assert bucket["headroom"] == pytest.approx(-1.0)
    tolerated = reconcile_agency_totals(contracts, accounts, tolerance=Tolerance(0.1, 0.0)).totals
    assert set(tolerated["status"]) == {"within"}


@pytest.mark.slow
@pytest.mark.realdata
def test_real_fy18_contracts_reconcile_with_q4_account_obligations(
    tmp_path: Path, real_data: Path
) -> None:
    day = "2026-02-02"
    source = real_data / "usaspending"
    land(tmp_path, "treasury", "tas_list", day, source / "tas_list.csv")
    land(tmp_path, "treasury", "account_obligations", day,
         source / "account_obligations_link_update_FY18.csv")  # fmt: skip
    land(tmp_path, "treasury", "award_obligations", day, source / "awards_contracts_FY18_v2.csv")
    datasets = ("tas_list", "account_obligations", "award_obligations")
    assert materialize(tmp_path, [("treasury", d) for d in datasets], day).success

    key = agency_totals_key(load_registry().agency("treasury"))
    (asset,) = assets_holding([key])
    result = dg.materialize(
        [asset], resources={"warehouse": FluxWarehouse(home=str(tmp_path))}, raise_on_error=False
    )
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    with duckdb.connect(str(agency_db(tmp_path, "treasury")), read_only=True) as conn:
        totals = conn.sql(f"SELECT * FROM {AGENCY_TOTALS}").pl()
        matches = conn.sql(f"SELECT * FROM {NAME_MATCHES}").pl()
    # Recomputed with plain polars from the files (curated rows only: the ingest has run).
    awards = pl.read_csv(source / "awards_contracts_FY18_v2.csv", null_values=["NA"])
    accounts = pl.read_csv(source / "account_obligations_link_update_FY18.csv", null_values=["NA"])
    named = set(accounts.filter(pl.col("q") == 4)["Agency"].to_list())
    exact = set(awards["agency"].unique().to_list()) & named
    assert set(matches.filter(pl.col("method") == "exact")["contract_agency"]) == exact
    assert (matches["method"] != "unmatched").all()
    assert set(totals["fiscal_year"]) == {2018}
    dod = totals.filter(pl.col("account_agency") == "Department of Defense").row(0, named=True)
    assert dod["contracts_total"] == pytest.approx(
        awards.filter(pl.col("agency") == "Department of Defense")["obligation"].sum()
    )
    exceeding = totals.filter(pl.col("status") == "exceeds")
    assert checks[WITHIN_TOLERANCE] == exceeding.is_empty()
    assert checks[EVERY_AGENCY_PLACED]
    assert (tmp_path / "published" / "treasury" / AGENCY_TOTALS / "fy2018.parquet").is_file()


@pytest.mark.slow
def test_the_daily_refresh_runs_before_anything_is_delivered(tmp_path: Path) -> None:
    """Catalogs, reconciliations, cross-agency outputs and links on an empty home."""
    from flux_pipelines.definitions import defs
    from flux_pipelines.defs.published.refresh import DAILY_REFRESH_JOB

    job = defs.resolve_job_def(DAILY_REFRESH_JOB)
    result = job.execute_in_process(
        resources={"warehouse": FluxWarehouse(home=str(tmp_path))}, raise_on_error=False
    )
    assert result.success
    key = agency_totals_key(load_registry().agency("treasury"))
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    status = event.materialization.metadata["status"].value
    assert (
        status == "nothing to reconcile yet: no award_obligations or account_obligations delivered"
    )
    assert (tmp_path / "published" / "cross_agency" / "catalog.duckdb").is_file()
