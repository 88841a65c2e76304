"""A failed delivery never destroys data, and one bad day does not stop a run's other days.

Both through the real ingest step (Dagster in process, real DuckDB files, real reports and
audit trail): a re-delivery rejected whole keeps the day's earlier load, published copy and
reports, and reports the attempt beside them; a day that fails unexpectedly in a multi-day
run leaves the other days loaded and recorded as materialized.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import duckdb

from flux_pipelines.audit.trail import AuditTrail
from flux_pipelines.names import REJECTED_ATTEMPTS_TABLE, agency_db
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import deliver, ingest_assets, ingest_keys, materialize

AGENCY, DATASET = "nasa", "meteorites"
DAY = "2026-02-02"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _curated(home: Path, day: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(agency_db(home, AGENCY)), read_only=True) as conn:
        return conn.execute(
            f"SELECT * FROM {DATASET} WHERE _partition_date = ? ORDER BY _file, _row_number",
            [day],
        ).fetchall()


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]


def test_a_redelivery_rejected_whole_keeps_the_days_earlier_load(tmp_path: Path) -> None:
    deliver(tmp_path, AGENCY, DATASET, DAY, rows=200, seed=3)
    assert materialize(tmp_path, [(AGENCY, DATASET)], DAY).success
    before = _curated(tmp_path, DAY)
    published = tmp_path / "published" / AGENCY / DATASET / f"{DAY}.parquet"
    outbox = tmp_path / "outbox" / AGENCY / DATASET / DAY
    reports = {p.name: _sha(p) for p in outbox.iterdir() if p.is_file()}
    published_sha = _sha(published)
    assert before and len(reports) == 3

    # the agency replaces its good file with one that cannot be read at all
    folder = tmp_path / "landing" / AGENCY / DATASET / DAY
    for old in folder.iterdir():
        old.unlink()
    (folder / "meteorites.csv").write_bytes(b"id,name\n1,Caf\x94\n")
    again = materialize(tmp_path, [(AGENCY, DATASET)], DAY)

    assert not again.success
    message = _failure_message(again)
    for expected in (AGENCY, DATASET, DAY, "meteorites.csv", "delivery.bad_encoding"):
        assert expected in message
    assert f"keeps its earlier load ({len(before):,} curated rows" in message
    # nothing of the earlier load changed: rows, published copy, the agency's reports
    assert _curated(tmp_path, DAY) == before
    assert _sha(published) == published_sha
    assert {p.name: _sha(p) for p in outbox.iterdir() if p.is_file()} == reports
    # the attempt is recorded and reported beside it
    [attempt] = (outbox / "rejected").iterdir()
    assert attempt.name == again.run_id
    errors = (attempt / "error_report.csv").read_text(encoding="utf-8")
    assert "delivery.bad_encoding" in errors and "meteorites.csv" in errors
    with duckdb.connect(str(agency_db(tmp_path, AGENCY))) as conn:
        logged = conn.execute(
            f"SELECT file, status, rule_id, run_id FROM {REJECTED_ATTEMPTS_TABLE}"
        ).fetchall()
    assert logged == [("meteorites.csv", "rejected", "delivery.bad_encoding", again.run_id)]
    kinds = {
        r.kind
        for r in AuditTrail(tmp_path).iter_records(day=DAY)
        if again.run_id in (r.run_id, r.payload.get("run_id"))
    }
    assert "delivery" in kinds and not kinds & {"load", "publication", "quarantine"}, kinds
    # the partition shows the attempt failed, and no materialization of it
    records = again.get_asset_materialization_events()
    assert records == []


def test_a_first_delivery_rejected_whole_is_recorded_as_the_day(tmp_path: Path) -> None:
    """Nothing to keep: the day holds the rejection (quarantine), as before."""
    folder = tmp_path / "landing" / AGENCY / DATASET / DAY
    folder.mkdir(parents=True)
    (folder / "meteorites.csv").write_bytes(b"id,name\n1,Caf\x94\n")
    result = materialize(tmp_path, [(AGENCY, DATASET)], DAY)
    assert not result.success
    assert "keeps its earlier load" not in _failure_message(result)
    assert not (tmp_path / "outbox" / AGENCY / DATASET / DAY / "rejected").exists()
    with duckdb.connect(str(agency_db(tmp_path, AGENCY))) as conn:
        assert conn.execute(
            f"SELECT rule_id FROM {DATASET}_quarantine WHERE _file = 'meteorites.csv'"
        ).fetchall() == [("delivery.bad_encoding",)]


def test_a_day_that_fails_does_not_stop_the_other_days_of_the_run(tmp_path: Path) -> None:
    days = ["2026-02-02", "2026-02-03", "2026-02-04"]
    for i, day in enumerate(days):
        deliver(tmp_path, AGENCY, DATASET, day, rows=120, seed=20 + i)
    # the middle day cannot be published: its published copy's path is taken by a folder
    blocker = tmp_path / "published" / AGENCY / DATASET / f"{days[1]}.parquet"
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("not a parquet file", encoding="utf-8")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        ingest_assets([(AGENCY, DATASET)]),
        selection=ingest_keys([(AGENCY, DATASET)]),
        resources={"warehouse": FluxWarehouse(home=str(tmp_path))},
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": days[0],
            "dagster/asset_partition_range_end": days[-1],
        },
        raise_on_error=False,
    )
    assert not result.success
    message = _failure_message(result)
    assert f"{AGENCY}/{DATASET} {days[1]}: internal error" in message
    assert "other days were loaded and recorded" in message
    key = dg.AssetKey([AGENCY, DATASET])
    for day in (days[0], days[2]):  # loaded after and before the failure, both recorded
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=5
        ).records
        rows = record.asset_materialization.metadata["dagster/row_count"].value  # type: ignore[union-attr]
        assert rows == len(_curated(tmp_path, day)) > 0
    assert (
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[days[1]]), limit=5
        ).records
        == []
    )
