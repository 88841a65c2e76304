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

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.defs.published.cross_agency import cross_agency_key
from flux_pipelines.defs.spending.risk import SCORES, scores_key
from flux_pipelines.names import agencies_with_db, agency_db
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import (
    assets_holding,
    check_results,
    land,
    land_by_awarding_agency,
    materialize,
    materialize_grouped,
)

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
DAY = "2026-03-02"


def _assets(keys: set[dg.AssetKey]) -> list[Any]:

    return assets_holding(keys)


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
    result = materialize_grouped(
        _assets(keys),
        sorted(keys, key=lambda k: k.to_user_string()),  # scores only (a spec of the ingest step)
        partition_key=DAY,
        resources={"warehouse": FluxWarehouse(home=str(home))},
        instance=instance,
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
    for db in (agency_db(home, a) for a in agencies_with_db(home)):
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
    folder = home / "published" / "cross_agency"
    matched = pl.read_parquet(folder / "recipient_links_matched.parquet")
    tables = {
        n: pl.read_parquet(folder / f"recipient_links_{n}.parquet").height
        for n in ("matched", "unmatched_left", "unmatched_right", "exceptions")
    }
    # analysts read them through the cross-agency catalog's views
    from flux_pipelines.defs.published.catalogs import write_views

    path, rows = write_views(folder)
    assert {f"recipient_links_{n}": h for n, h in tables.items()}.items() <= rows.items()
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM recipient_links_matched").fetchall() == [
            (matched.height,)
        ]
    print("recipient links:", tables, dict(matched.group_by("method").len().iter_rows()))
    assert set(matched["method"]) <= {"exact", "normalised", "fuzzy"}
    assert matched.filter(pl.col("method") == "exact").height > 0
    fuzzy = matched.filter(pl.col("method") == "fuzzy")
    assert fuzzy["confidence"].is_between(0.9, 1.0).all()


def test_replayed_by_action_date_history_finds_far_obligations(real_data: Path) -> None:
    """The quarter replayed a day at a time per agency, so recipients build a history."""
    import datetime as dt

    from flux_pipelines.risk.scoring import DEFAULT_SETTINGS, score_day

    frame = pl.read_csv(
        real_data / "usaspending" / "Construction_PSCs_CY17Q3.csv",
        null_values=["NA"],
        infer_schema_length=0,
    ).with_columns(
        pl.col("action_date").str.to_date(),
        pl.col("federal_action_obligation").cast(pl.Float64),
        pl.col("award_id").cast(pl.Int64),
        pl.int_range(pl.len()).alias("_row_number"),
        pl.lit("Construction_PSCs_CY17Q3.csv").alias("_file"),
    )
    scores = []
    for _, part in frame.group_by("awarding_toptier_agency_name"):
        conn = duckdb.connect()
        conn.register("part", part.with_columns(pl.col("action_date").alias("_partition_date")))
        conn.execute("CREATE TABLE ct AS SELECT * FROM part")
        for day in sorted(part["action_date"].unique()):
            assert isinstance(day, dt.date)
            scores.append(
                score_day(
                    conn,
                    day,
                    part.filter(pl.col("action_date") == day),
                    curated_table="ct",
                    scores_table="risk",
                    model=None,
                    settings=DEFAULT_SETTINGS,
                )
            )
    every = pl.concat(scores)
    assert every.height == frame.height
    fired = every.select(pl.col("rules_fired").explode()).to_series().value_counts()
    counts = dict(fired.iter_rows())
    print("replayed:", counts, "flagged:", int(every["flagged"].sum()))
    far = every.filter(pl.col("rules_fired").list.contains("far_from_recipient_history"))
    assert far.height > 0
    assert far["reasons"].list.first().str.contains(r"SD from the recipient's history").all()
    # the placeholder DUNS is never anyone's history, and always flagged
    assert counts["duns_placeholder"] == every.filter(pl.col("flagged") & pl.col(
        "rules_fired").list.contains("duns_placeholder")).height  # fmt: skip
