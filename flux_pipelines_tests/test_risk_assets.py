"""Risk scoring through Dagster: rules-only first, a model trained when due, blended scores,
re-runs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.defs.ingest.assets import ingest_step_name
from flux_pipelines.defs.spending.risk import MODEL, SCORES, model_key, scores_key
from flux_pipelines.defs.spending.risk_step import retrain_due
from flux_pipelines.names import agency_db
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines.risk.model import RiskModel
from flux_pipelines.risk.recipient_history import STATE_TABLE
from flux_pipelines_tests.conftest import (
    assets_holding,
    check_results,
    deliver_transactions,
    materialize,
)

AGENCY = "nasa"
DAYS = [dt.date(2026, 3, 2) + dt.timedelta(days=i) for i in range(6)]
RANGE = {
    "dagster/asset_partition_range_start": DAYS[0].isoformat(),
    "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
}


def _risk_asset(key: dg.AssetKey) -> Any:

    return assets_holding([key])[0]


def _run(home: Path, key: dg.AssetKey, instance: dg.DagsterInstance, **kwargs: Any) -> Any:
    """Only ``key`` (scores are a spec of the agency's ingest step: select it alone)."""
    return dg.materialize(
        [_risk_asset(key)],
        selection=[key],
        resources={"warehouse": FluxWarehouse(home=str(home))},
        instance=instance,
        raise_on_error=False,
        **kwargs,
    )


def _config(agency_id: str = AGENCY, **values: Any) -> dict[str, Any]:
    agency = load_registry().agency(agency_id)
    return {"ops": {ingest_step_name(agency): {"config": values}}}


def _metadata(result: Any, key: dg.AssetKey) -> dict[str, Any]:
    (event,) = [m for m in result.get_asset_materialization_events() if m.asset_key == key][-1:]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _table(home: Path, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(agency_db(home, AGENCY)), read_only=True) as conn:
        return conn.sql(sql).pl()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dg.DagsterInstance]:
    home = tmp_path_factory.mktemp("risk")
    for i, day in enumerate(DAYS):
        deliver_transactions(home, AGENCY, day.isoformat(), rows=120, seed=40 + i)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(
        home, [(AGENCY, "contract_transactions")], None, instance=instance, tags=RANGE
    )  # type: ignore[arg-type]
    assert result.success
    return home, instance


@pytest.mark.slow
def test_rules_only_then_model_then_blended(loaded: tuple[Path, dg.DagsterInstance]) -> None:
    home, instance = loaded
    agency = load_registry().agency(AGENCY)
    model = model_key(agency)
    first = _run(home, scores_key(agency), instance, tags=RANGE)
    assert first.success
    meta = _metadata(first, scores_key(agency))
    # the step tried to train first, with no stored feature vectors yet
    assert meta["score_basis"].startswith("rules only: no trained model")
    assert "no model trained: only 0 scored transactions" in meta["score_basis"]
    assert not [m for m in first.get_asset_materialization_events() if m.asset_key == model]
    assert all(check_results(first).values()), check_results(first)
    curated = _table(home, "SELECT count(*) AS n FROM contract_transactions")["n"][0]
    scores = _table(home, f"SELECT * FROM {SCORES}")
    # one materialization per scored day, each with that day's own row count
    per_day = {
        m.partition: m.materialization.metadata["dagster/row_count"].value
        for m in first.get_asset_materialization_events()
        if m.asset_key == scores_key(agency)
    }
    by_day = _table(
        home,
        f"SELECT CAST(_partition_date AS VARCHAR) AS d, count(*) AS n FROM {SCORES} GROUP BY 1",
    )
    assert per_day == dict(zip(by_day["d"], by_day["n"], strict=True))
    assert set(per_day) == {d.isoformat() for d in DAYS}
    assert {e.partition for e in first.get_asset_check_evaluations()} == set(per_day)
    assert scores.height == curated == sum(per_day.values())
    assert scores["model_score"].null_count() == scores.height
    assert (scores["risk_score"] == scores["rules_score"]).all()
    flagged = scores.filter(pl.col("flagged"))
    assert flagged.height > 0 and (flagged["reasons"].list.len() > 0).all()
    placeholder = scores.filter(pl.col("recipient_unique_id") == "123456787")
    assert placeholder.height > 0
    assert placeholder["reasons"].list.join(";").str.contains("is a placeholder").all()
    for day in DAYS:  # analysts read the published copy, a file per day
        assert (home / "published" / AGENCY / SCORES / f"{day}.parquet").is_file()

    # no model yet: the next scoring step trains one first (recorded on the model asset)
    last = DAYS[-1].isoformat()
    blended = _run(
        home, scores_key(agency), instance, partition_key=last, run_config=_config(alpha=0.7)
    )
    assert blended.success, blended
    version = _metadata(blended, model)["model_version"]
    pointer = json.loads(
        (home / "warehouse" / AGENCY / "models" / MODEL / "current.json").read_text()
    )
    assert pointer["version"] == version and pointer["trained_rows"] == curated
    assert _metadata(blended, scores_key(agency))["model_version"] == version
    # a fresh model is not retrained by the next run
    again = _run(
        home, scores_key(agency), instance, partition_key=last, run_config=_config(alpha=0.7)
    )
    assert not [m for m in again.get_asset_materialization_events() if m.asset_key == model]
    assert _metadata(again, scores_key(agency))["model_version"] == version
    day_scores = _table(home, f"SELECT * FROM {SCORES} WHERE _partition_date = '{last}'")
    assert (day_scores["score_basis"] == "blended").all()
    assert day_scores["model_score"].is_between(0, 1).all()
    expected = 0.7 * day_scores["model_score"] + 0.3 * day_scores["rules_score"]
    assert (day_scores["risk_score"] - expected).abs().max() < 1e-9
    earlier = _table(home, f"SELECT * FROM {SCORES} WHERE _partition_date = '{DAYS[0]}'")
    assert (earlier["score_basis"] == "rules_only").all()  # only re-scored days change


@pytest.mark.slow
def test_rescoring_a_day_is_idempotent(loaded: tuple[Path, dg.DagsterInstance]) -> None:
    home, instance = loaded
    agency = load_registry().agency(AGENCY)
    assert _run(home, scores_key(agency), instance, tags=RANGE).success
    state = _table(home, f"SELECT * FROM {STATE_TABLE} ORDER BY recipient")
    day = DAYS[2].isoformat()
    sql = (
        f"SELECT * EXCLUDE (model_version, model_score, risk_score, score_basis, flagged, "
        f"reasons) FROM {SCORES} WHERE _partition_date = '{day}' ORDER BY _row_number"
    )
    before = _table(home, sql)
    assert _run(home, scores_key(agency), instance, partition_key=day).success
    assert _run(home, scores_key(agency), instance, partition_key=day).success
    after = _table(home, sql)
    # A day is scored against the days before it only, whatever ran since: same rows.
    assert_frame_equal(before, after, abs_tol=1e-9)
    again = _table(home, f"SELECT * FROM {STATE_TABLE} ORDER BY recipient")
    assert again.select("recipient", "n").equals(state.select("recipient", "n"))
    assert (again["mean"] - state["mean"]).abs().max() < 1e-9


@pytest.mark.slow
def test_a_tampered_model_falls_back_to_rules_then_is_replaced(
    loaded: tuple[Path, dg.DagsterInstance],
) -> None:
    home, instance = loaded
    agency = load_registry().agency(AGENCY)
    assert _run(home, scores_key(agency), instance, tags=RANGE).success
    assert _run(
        home,
        scores_key(agency),
        instance,
        run_config=_config(retrain=True),
        partition_key=DAYS[0].isoformat(),
    ).success
    models = home / "warehouse" / AGENCY / "models" / MODEL
    pointer = json.loads((models / "current.json").read_text())
    (models / pointer["file"]).write_bytes(b"not a model")
    # too few rows asked for to train: rules only, and the basis says why
    day = DAYS[0].isoformat()
    result = _run(
        home,
        scores_key(agency),
        instance,
        partition_key=day,
        run_config=_config(min_training_rows=10**6),
    )
    assert result.success
    basis = _metadata(result, scores_key(agency))["score_basis"]
    assert basis.startswith("rules only") and "does not match the sha256" in basis
    assert "no model trained: only" in basis
    # with enough rows, the unusable model is replaced before scoring
    replaced = _run(home, scores_key(agency), instance, partition_key=day)
    assert replaced.success
    assert _metadata(replaced, model_key(agency))["model_version"] != ""
    assert _metadata(replaced, scores_key(agency))["score_basis"].startswith("blended")


def _model(trained_at: dt.datetime) -> RiskModel:
    return RiskModel(
        version="v",
        forest=None,
        features=(),
        means=None,
        stds=None,
        trained_rows=0,  # type: ignore[arg-type]
        trained_at=trained_at.strftime("%Y%m%dT%H%M%SZ"),
        params={},
    )


def test_a_model_is_due_for_retraining_after_monday_five_utc() -> None:
    monday_5 = dt.datetime(2026, 12, 7, 5, 0, tzinfo=dt.UTC)  # a Monday
    assert monday_5.weekday() == 0
    assert retrain_due(None, monday_5)
    sunday = _model(monday_5 - dt.timedelta(hours=6))
    assert not retrain_due(sunday, monday_5 - dt.timedelta(minutes=1))
    assert retrain_due(sunday, monday_5)
    assert retrain_due(sunday, monday_5 + dt.timedelta(days=3))
    fresh = _model(monday_5 + dt.timedelta(minutes=30))
    assert not retrain_due(fresh, monday_5 + dt.timedelta(days=6, hours=23))
    assert retrain_due(fresh, monday_5 + dt.timedelta(days=7))


@pytest.mark.slow
def test_a_newly_loaded_day_is_requested_by_automation(tmp_path: Path) -> None:
    from flux_pipelines.definitions import defs
    from flux_pipelines.defs.agency import agency_partitions

    agency = load_registry().agency(AGENCY)
    key = scores_key(agency)
    instance = dg.DagsterInstance.ephemeral()
    today = agency_partitions(agency).get_last_partition_key()
    assert today is not None
    selection = dg.AssetSelection.assets(key)
    before = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection
    )
    assert before.total_requested == 0  # nothing loaded yet: nothing to score
    deliver_transactions(tmp_path, AGENCY, today, rows=40, seed=3)
    assert materialize(
        tmp_path, [(AGENCY, "contract_transactions")], today, instance=instance
    ).success
    after = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=before.cursor
    )
    assert after.total_requested == 1
    assert after.get_requested_partitions(key) == {today}


@pytest.mark.slow
def test_the_agency_catalog_serves_the_risk_scores(loaded: tuple[Path, dg.DagsterInstance]) -> None:
    from flux_pipelines.defs.published.catalogs import write_catalog

    home, instance = loaded
    agency = load_registry().agency(AGENCY)
    assert _run(home, scores_key(agency), instance, tags=RANGE).success
    path, rows = write_catalog(FluxWarehouse(home=str(home)), agency)
    assert rows[SCORES] == rows["contract_transactions"] > 0
    with duckdb.connect(str(path), read_only=True) as conn:
        flagged = conn.sql(f"SELECT count(*) FROM {SCORES} WHERE flagged").fetchall()[0][0]
    assert flagged == _table(home, f"SELECT count(*) AS n FROM {SCORES} WHERE flagged")["n"][0]
