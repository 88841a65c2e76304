"""The real USAspending transactions through risk scoring and recipient linking.

Construction_PSCs_CY17Q3 (3,011 transactions, 22 awarding agencies) is split by agency and
loaded; every agency's day is scored (rules only: one day, no model yet); the certified
cross-agency transactions are linked to the recipients of Treasury's FY18 award file. The
figures each rule finds are recomputed here with plain polars from the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest

from flux_pipelines.assets.cross_agency_factory import cross_agency_key
from flux_pipelines.assets.risk_factory import SCORES, scores_key
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import (
    check_results,
    land,
    land_by_awarding_agency,
    materialize,
)

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
DAY = "2026-03-02"


def _assets(keys: set[dg.AssetKey]) -> list[Any]:
    from flux_pipelines.definitions import defs

    return [a for a in defs.assets if keys & set(a.keys)]  # type: ignore[union-attr, arg-type]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, real_data: Path) -> tuple[Path, Any]:
    home = tmp_path_factory.mktemp("spending")
    source = real_data / "usaspending"
    landed = land_by_awarding_agency(home, DAY, source / "Construction_PSCs_CY17Q3.csv")
    land(home, "treasury", "award_obligations", DAY, source / "awards_contracts_FY18_v2.csv")
    pairs = [(a, "contract_transactions") for a in landed] + [("treasury", "award_obligations")]
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(home, pairs, DAY, instance=instance).success
    registry = load_registry()
    keys = {scores_key(registry.agency(a)) for a in landed}
    result = dg.materialize(
        _assets(keys),
        partition_key=DAY,
        resources={"warehouse": FluxWarehouse(home=str(home))},
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    return home, result


def _all_scores(home: Path) -> pl.DataFrame:
    return pl.read_parquet(home / "published" / "*" / SCORES / f"{DAY}.parquet")


def test_every_curated_transaction_is_scored_with_reasons(scored: tuple[Path, Any]) -> None:
    home, result = scored
    checks = check_results(result)
    assert len(checks) == 2 * 22 and all(checks.values()), checks
    scores = _all_scores(home)
    curated = 0
    for db in (home / "warehouse").glob("*.duckdb"):
        with duckdb.connect(str(db), read_only=True) as conn:
            tables = {t for (t,) in conn.execute("SHOW TABLES").fetchall()}
            if "contract_transactions" in tables:
                curated += conn.execute("SELECT count(*) FROM contract_transactions").fetchall()[0][
                    0
                ]
    assert scores.height == curated
    assert (scores["score_basis"] == "rules_only").all()
    flagged = scores.filter(pl.col("flagged"))
    assert (flagged["reasons"].list.len() > 0).all()
    by_rule = scores.select(pl.col("rules_fired").explode()).to_series().value_counts()
    print("rules fired on the real file:", dict(by_rule.iter_rows()), "flagged:", flagged.height)


def test_rules_find_what_polars_finds_in_the_file(scored: tuple[Path, Any]) -> None:
    home, _ = scored
    scores = _all_scores(home)
    fired = {
        rule: scores.filter(pl.col("rules_fired").list.contains(rule))["transaction_id"]
        for rule in ("obligation_not_positive", "duns_placeholder", "round_dollar")
    }
    amount = pl.col("federal_action_obligation")
    recomputed = {
        "obligation_not_positive": scores.filter(amount <= 0),
        "duns_placeholder": scores.filter(
            pl.col("recipient_unique_id").str.strip_chars().str.zfill(9) == "123456787"
        ),
        "round_dollar": scores.filter((amount.abs() >= 10_000) & (amount % 1_000 == 0)),
    }
    for rule, frame in recomputed.items():
        assert sorted(fired[rule]) == sorted(frame["transaction_id"]), rule
        assert frame.height > 0, rule  # the file has each of these defects


def test_recipients_link_to_treasury_award_file(scored: tuple[Path, Any]) -> None:
    home, _ = scored
    key = dg.AssetKey(["cross_agency", "recipient_links"])
    result = dg.materialize(
        _assets({cross_agency_key("contract_transactions"), key}),
        resources={"warehouse": FluxWarehouse(home=str(home))},
        raise_on_error=False,
    )
    assert result.success
    assert all(check_results(result).values())
    folder = home / "published" / "cross_agency" / "recipient_links"
    matched = pl.read_parquet(folder / "matched.parquet")
    tables = {n: pl.read_parquet(folder / f"{n}.parquet").height
              for n in ("matched", "unmatched_left", "unmatched_right", "exceptions")}  # fmt: skip
    print("recipient links:", tables, dict(matched.group_by("method").len().iter_rows()))
    assert set(matched["method"]) <= {"exact", "normalised", "fuzzy"}
    assert matched.filter(pl.col("method") == "exact").height > 0
    fuzzy = matched.filter(pl.col("method") == "fuzzy")
    assert fuzzy["confidence"].is_between(0.9, 1.0).all()
