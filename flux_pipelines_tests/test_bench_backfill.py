"""The backfill bench's checks, on tiny ranges: every landed row and day accounted for, and
one writer per agency file while agencies run in parallel. Times are never asserted here
(speed goals live in ``flux bench``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flux_pipelines.bench.backfill import (
    FIRST_DAY,
    DatasetAccount,
    StepSpan,
    analyse_overlap,
    backfill,
    breakdown,
    day_range,
)
from flux_pipelines.cli.main import app
from flux_pipelines.names import agency_db


def test_overlap_finds_two_writers_on_one_agency() -> None:
    spans = [
        StepSpan("nasa__a", "nasa", 0.0, 10.0),
        StepSpan("nasa__b", "nasa", 8.0, 12.0),  # 2 s on the nasa file at once
        StepSpan("dod__a", "dod", 5.0, 20.0),
    ]
    overlap = analyse_overlap(spans)
    assert overlap.same_agency == {"dod": 0.0, "nasa": pytest.approx(2.0)}
    assert overlap.cross_agency == pytest.approx(7.0)  # 5..12
    assert overlap.busy == {"dod": pytest.approx(15.0), "nasa": pytest.approx(12.0)}
    assert overlap.span == pytest.approx(20.0)


def test_overlap_of_back_to_back_steps_is_zero() -> None:
    spans = [StepSpan("nasa__a", "nasa", 0.0, 4.0), StepSpan("nasa__b", "nasa", 4.0, 9.0)]
    overlap = analyse_overlap(spans)
    assert overlap.same_agency_total == 0.0 and overlap.cross_agency == 0.0
    assert overlap.busy["nasa"] == pytest.approx(9.0)


def test_breakdown_splits_loop_and_tail() -> None:
    span = StepSpan("s", "nasa", 100.0, 110.0, partition_logs=(101.0, 102.0, 104.0, 106.0))
    b = breakdown(span)
    assert (b.partitions, b.loop_seconds, b.tail_seconds) == (4, 6.0, 4.0)
    assert b.first_tenth_ms == pytest.approx(1000.0) and b.last_tenth_ms == pytest.approx(2000.0)


def test_account_problems_name_each_gap() -> None:
    days = day_range(FIRST_DAY, 3)
    account = DatasetAccount(
        "nasa", "meteorites", days_loaded=2, first_day=days[0], last_day=days[1], files=2,
        rejected=1, rows_landed=100, rows_read=90, rows_curated=80, rows_quarantined=5,
    )  # fmt: skip
    problems = " | ".join(account.problems(days))
    for part in ("2 days loaded", "rejected", "90 rows read, 100 landed", "80 curated"):
        assert part in problems


def _table_rows(home: Path, agency: str, table: str) -> int:
    with duckdb.connect(str(agency_db(home, agency)), read_only=True) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]


@pytest.mark.slow
def test_one_agency_backfill_accounts_for_every_day_and_row(tmp_path: Path) -> None:
    days = day_range(dt.date(2025, 3, 1), 5)
    home = tmp_path / "one"
    outcome = backfill(home, ["nasa"], days, rows=60)
    assert outcome.run.success
    assert outcome.problems == []
    assert {a.dataset for a in outcome.accounts} == {"meteorites", "contract_transactions"}
    for a in outcome.accounts:
        assert a.days_loaded == 5 and (a.first_day, a.last_day) == (days[0], days[-1])
        assert a.rows_read == a.rows_landed == a.rows_curated + a.rows_quarantined > 0
        # the log agrees with the tables themselves
        assert _table_rows(home, "nasa", a.dataset) == a.rows_curated
    # one run, one step for the agency, looping over both datasets' five days
    assert len(outcome.spans) == 1
    assert len(outcome.spans[0].partition_logs) == 2 * 5
    assert analyse_overlap(outcome.spans).same_agency_total == 0.0


@pytest.mark.slow
def test_multi_agency_backfill_runs_agencies_in_parallel_one_writer_each(
    tmp_path: Path,
) -> None:
    days = day_range(dt.date(2025, 3, 1), 3)
    # One step per agency (its datasets in order on one connection), two steps at a time:
    # nasa's and va's files are different, so their steps run side by side.
    outcome = backfill(tmp_path / "multi", ["nasa", "va"], days, rows=60, multi=True)
    assert outcome.run.success
    assert outcome.problems == []
    assert sorted((s.agency, s.step_key) for s in outcome.spans) == [
        ("nasa", "nasa__ingest"),
        ("va", "va__ingest"),
    ]
    overlap = analyse_overlap(outcome.spans)
    assert overlap.same_agency == {"nasa": 0.0, "va": 0.0}
    assert overlap.cross_agency > 0
    for a in outcome.accounts:
        assert a.days_loaded == 3
        assert a.rows_read == a.rows_landed == a.rows_curated + a.rows_quarantined > 0


@pytest.mark.slow
def test_bench_cli_runs_only_the_backfill(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "--only", "backfill", "--backfill-days", "2", "--backfill-multi-days", "0",
         "--workdir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "backfill 2 days x 2 datasets (agency nasa)" in result.output
    assert "partitions/min" in result.output and "all accounted" in result.output
    assert "DuckDB read_csv" not in result.output  # the throughput part was skipped
