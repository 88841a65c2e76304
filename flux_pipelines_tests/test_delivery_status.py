"""Delivery status: the classifier on constructed facts, then real loads through Dagster read
back from the instance, ``flux status`` on a home, and the ``cross_agency/delivery_status``
asset."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from typer.testing import CliRunner

from flux_pipelines.cli.main import app
from flux_pipelines.contracts.registry import Agency, load_registry
from flux_pipelines.defs.published.status import (
    DELIVERY_STATUS_KEY,
    build_delivery_status_asset,
    delivery_status_sensor,
)
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.instance.config import prepare_dagster_home
from flux_pipelines.quality.delivery_status import (
    ATTEMPT_FAILED,
    ATTEMPT_RUNNING,
    ATTEMPT_SKIPPED,
    DayStatus,
    PartitionFacts,
    State,
    classify,
    counts,
    fetch_facts,
    render_markdown,
    render_matrix,
    report_days,
    select_pairs,
    status_frame,
    status_table,
    summary_line,
)
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import deliver, materialize

runner = CliRunner()
MONDAY = dt.date(2026, 2, 2)
SATURDAY = dt.date(2026, 2, 7)
WEEKDAYS = Agency(
    id="nasa",
    name="NASA",
    datasets=("meteorites",),
    delivery_deadline="0 9 * * 1-5",
    onboarded=dt.date(2026, 2, 2),
)
DEADLINE = dt.datetime(2026, 2, 3, 9, 0)  # Tuesday's
LOADED = PartitionFacts(materialized=True, rows_curated=95, rows_quarantined=5)


def state(
    facts: PartitionFacts | None, day: dt.date = dt.date(2026, 2, 3), *, now: dt.datetime
) -> State:
    return classify(WEEKDAYS, "meteorites", day, facts, now).state


# -- the classifier on constructed facts ----------------------------------------------------


def test_each_state() -> None:
    after = DEADLINE + dt.timedelta(hours=1)
    assert state(None, now=after) == State.LATE
    assert state(None, now=DEADLINE - dt.timedelta(hours=1)) == State.PENDING
    assert state(LOADED, now=after) == State.LOADED
    assert state(PartitionFacts(attempt=ATTEMPT_FAILED), now=after) == State.FAILED
    assert state(None, SATURDAY, now=after + dt.timedelta(days=9)) == State.NOT_EXPECTED


def test_weekday_cron_expects_nothing_on_weekends() -> None:
    now = dt.datetime(2026, 3, 1)
    days = [MONDAY + dt.timedelta(days=n) for n in range(7)]
    states = [state(None, d, now=now) for d in days]
    assert states == [State.LATE] * 5 + [State.NOT_EXPECTED] * 2
    statuses = [classify(WEEKDAYS, "meteorites", d, None, now) for d in days]
    assert [s.deadline for s in statuses[:2]] == [
        dt.datetime(2026, 2, 2, 9),
        dt.datetime(2026, 2, 3, 9),
    ]
    assert statuses[5].deadline is None and not statuses[5].expected


def test_onboarding_boundary() -> None:
    now = dt.datetime(2026, 3, 1)
    assert state(None, dt.date(2026, 1, 30), now=now) == State.NOT_EXPECTED  # a Friday before
    assert state(None, dt.date(2026, 2, 2), now=now) == State.LATE  # the onboarding day


def test_failure_after_success_is_failed_and_success_after_failure_loaded() -> None:
    now = DEADLINE + dt.timedelta(days=1)
    # a materialization, then a run that planned the day and failed
    again_failed = PartitionFacts(materialized=True, attempt=ATTEMPT_FAILED, attempt_run_id="r2")
    status = classify(WEEKDAYS, "meteorites", DEADLINE.date(), again_failed, now)
    assert status.state == State.FAILED and "r2" in status.note
    # a failed run, then a materialization (the latest attempt materialized it)
    assert state(PartitionFacts(materialized=True, attempt=None), now=now) == State.LOADED


def test_deadline_boundary() -> None:
    assert state(None, now=DEADLINE) == State.PENDING  # due at 09:00, not yet past
    assert state(None, now=DEADLINE + dt.timedelta(microseconds=1)) == State.LATE
    aware = DEADLINE.replace(tzinfo=dt.UTC) + dt.timedelta(seconds=1)
    assert state(None, now=aware) == State.LATE
    in_new_york = aware.astimezone(dt.timezone(dt.timedelta(hours=-5)))  # 04:00 there
    assert state(None, now=in_new_york) == State.LATE


def test_outcomes_win_over_the_calendar() -> None:
    now = dt.datetime(2026, 3, 1)
    assert state(LOADED, SATURDAY, now=now) == State.LOADED
    assert state(PartitionFacts(attempt=ATTEMPT_FAILED), SATURDAY, now=now) == State.FAILED


def test_failed_range_run_without_a_delivery_is_not_a_failed_load() -> None:
    now = dt.datetime(2026, 3, 1)
    planned = {"conservation": "planned", "contract_schema": "planned", "anomalies": "planned"}
    # the failed run recorded nothing for the day, and nothing was delivered: late
    nothing = PartitionFacts(
        attempt=ATTEMPT_FAILED, attempt_run_id="r1", checks=planned, delivered=False
    )
    status = classify(WEEKDAYS, "meteorites", MONDAY, nothing, now)
    assert status.state == State.LATE and "r1" in status.note
    # a delivery is there (a crashed step records nothing either): failed
    assert state(replace(nothing, delivered=True), now=now) == State.FAILED
    # the landing zone was not looked at: Dagster's word stands
    assert state(replace(nothing, delivered=None), now=now) == State.FAILED
    # the step recorded check results for the day: its delivery was judged, and failed
    judged = replace(nothing, checks={**planned, "conservation": "passed"})
    assert state(judged, now=now) == State.FAILED
    # an earlier load stands
    assert state(replace(nothing, materialized=True), now=now) == State.LOADED


def test_running_and_skipped_attempts() -> None:
    before = DEADLINE - dt.timedelta(minutes=5)
    running = classify(
        WEEKDAYS, "meteorites", DEADLINE.date(), PartitionFacts(attempt=ATTEMPT_RUNNING), before
    )
    assert running.state == State.PENDING and running.running
    # a successful run that planned the day without loading it: nothing was delivered
    after = DEADLINE + dt.timedelta(hours=1)
    assert state(PartitionFacts(attempt=ATTEMPT_SKIPPED), now=after) == State.LATE


def test_table_rendering_and_counts() -> None:
    days = [MONDAY + dt.timedelta(days=n) for n in range(7)]  # Monday to Sunday
    other = WEEKDAYS.model_copy(update={"id": "dod", "datasets": ("contract_transactions",)})
    pairs = [(WEEKDAYS, "meteorites"), (other, "contract_transactions")]
    facts = {
        ("nasa", "meteorites", days[0]): LOADED,
        ("nasa", "meteorites", days[1]): PartitionFacts(attempt=ATTEMPT_FAILED),
    }
    now = dt.datetime(2026, 2, 4, 8)  # Wednesday, before its 09:00 deadline
    statuses = status_table(pairs, days, facts, now)
    assert len(statuses) == 14
    n = counts(statuses)
    assert n == {
        State.NOT_EXPECTED: 4,
        State.PENDING: 6,  # Wednesday to Friday, both rows
        State.LATE: 2,  # dod's Monday and Tuesday
        State.LOADED: 1,
        State.FAILED: 1,
    }
    matrix = render_matrix(statuses, days).splitlines()
    assert matrix[0].split() == ["Mo", "Tu", "We", "Th", "Fr", "Sa", "Su"]
    assert matrix[1].split()[1:8] == ["02", "03", "04", "05", "06", "07", "08"]
    # symbols, then the row's loaded, failed, late, pending
    assert matrix[2].split() == ["nasa/meteorites", *"✓✗………··", "1", "1", "0", "3"]
    assert matrix[3].split() == ["dod/contract_transactions", *"!!………··", "0", "0", "2", "3"]
    summary = summary_line(statuses)
    assert summary.startswith("2 late, 1 failed, 1 loaded, 6 pending, 4 not expected")
    assert "2 of 2 agency/datasets" in summary
    assert "failed: nasa/meteorites 2026-02-03" in summary
    markdown = render_markdown(statuses, days)
    assert "| nasa/meteorites | ✓ | ✗ | … | … | … | · | · | 0 | 1 |" in markdown
    frame = status_frame(statuses)
    assert frame.height == 14
    first = frame.row(0, named=True)
    assert (first["state"], first["rows_curated"], first["rows_quarantined"]) == ("loaded", 95, 5)


def test_report_days_and_selection() -> None:
    today = dt.date(2026, 2, 10)
    assert report_days(3, None, None, today=today) == [
        dt.date(2026, 2, 8),
        dt.date(2026, 2, 9),
        dt.date(2026, 2, 10),
    ]
    assert len(report_days(14, "2026-02-01", "2026-02-05", today=today)) == 5
    assert report_days(14, "2026-02-09", None, today=today)[-1] == today
    assert report_days(2, None, "2026-01-31", today=today)[0] == dt.date(2026, 1, 30)
    for start, end in (("2026-02-05", "2026-02-01"), ("yesterday", None), (None, "2026-13-01")):
        with pytest.raises(ConfigurationError):
            report_days(14, start, end, today=today)
    registry = load_registry()
    assert select_pairs(registry, "nasa", "meteorites")[0][1] == "meteorites"
    assert {d for _, d in select_pairs(registry, "nasa")} == set(registry.agency("nasa").datasets)
    for agency, dataset in (("comets", None), (None, "comets"), ("dod", "meteorites")):
        with pytest.raises(ConfigurationError):
            select_pairs(registry, agency, dataset)


# -- through Dagster ----------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # prepare_dagster_home points DAGSTER_HOME and FLUX_HOME at the home; restored after
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    return tmp_path / "flux"


def _reject(home: Path, day: str) -> None:
    """A file the loader rejects whole (not UTF-8)."""
    folder = home / "landing" / "nasa" / "meteorites" / day
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.csv").write_bytes(b"id,name\n1,Caf\x94\n")


def flux_status(home: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["status", "--home", str(home), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_loads_read_back_from_the_instance(home: Path) -> None:
    good, empty, bad = "2026-02-02", "2026-02-03", "2026-02-04"
    planted = deliver(home, "nasa", "meteorites", good, rows=100, seed=6)
    _reject(home, bad)
    prepare_dagster_home(home)
    instance = dg.DagsterInstance.get()
    assert materialize(home, [("nasa", "meteorites")], good, instance=instance).success
    assert not materialize(home, [("nasa", "meteorites")], bad, instance=instance).success

    nasa = load_registry().agency("nasa")
    # the registry's onboarding date and deadline may change; these days' rules may not
    agency = nasa.model_copy(
        update={"onboarded": dt.date(2026, 1, 1), "delivery_deadline": "0 9 * * *"}
    )
    days = [dt.date(2026, 2, 1) + dt.timedelta(days=n) for n in range(5)]
    now = dt.datetime(2026, 2, 10, tzinfo=dt.UTC)

    def statuses() -> dict[str, DayStatus]:
        facts = fetch_facts(
            instance, [(nasa, "meteorites")], days, landing_root=home / "landing", with_checks=True
        )
        table = status_table([(agency, "meteorites")], days, facts, now)
        return {str(s.day): s for s in table}

    first = statuses()
    assert {d: s.state for d, s in first.items()} == {
        "2026-02-01": State.LATE,
        good: State.LOADED,
        empty: State.LATE,
        bad: State.FAILED,
        "2026-02-05": State.LATE,
    }
    loaded = first[good]
    assert (loaded.rows_curated, loaded.rows_quarantined) == (100 - len(planted), len(planted))
    assert loaded.checks == {
        "conservation": "passed",
        "contract_schema": "passed",
        "anomalies": "passed",
    }
    assert first[bad].checks["conservation"] == "passed"

    # `flux status` on the home: the same cells, exit 1 (a failure, late days)
    code, output = flux_status(
        home,
        "--agency",
        "nasa",
        "--dataset",
        "meteorites",
        "--from",
        "2026-02-02",
        "--to",
        "2026-02-04",
    )
    assert code == 1, output
    row = next(line for line in output.splitlines() if line.startswith("nasa/meteorites"))
    assert row.split()[1:4] == ["✓", "!", "✗"] or row.split()[1:4] == ["✓", "·", "✗"]
    assert "failed: nasa/meteorites 2026-02-04" in output
    code, output = flux_status(
        home, "--agency", "nasa", "--dataset", "meteorites", "--from", good, "--to", good
    )
    assert code == 0, output
    assert "0 late, 0 failed, 1 loaded" in output

    # a backfill over the empty and the bad day fails on the bad one; Dagster marks both
    # days failed, but nothing was delivered for the empty one: still late, with a note
    ranged = dg.materialize(
        materialize_assets(),
        instance=instance,
        resources={"warehouse": FluxWarehouse(home=str(home))},
        tags={
            "dagster/asset_partition_range_start": empty,
            "dagster/asset_partition_range_end": bad,
        },
        raise_on_error=False,
    )
    assert not ranged.success
    key, partitions = dg.AssetKey(["nasa", "meteorites"]), materialize_assets()[0].partitions_def
    assert partitions is not None
    ui = instance.get_status_by_partition(key, [empty, bad], partitions)  # what the UI shows
    assert ui == {empty: dg.AssetPartitionStatus.FAILED, bad: dg.AssetPartitionStatus.FAILED}
    second = statuses()
    assert second[empty].state == State.LATE and "nothing delivered" in second[empty].note
    assert second[bad].state == State.FAILED

    # success after a failure: loaded; failure after a success: failed
    (home / "landing" / "nasa" / "meteorites" / bad / "broken.csv").unlink()
    deliver(home, "nasa", "meteorites", bad, rows=80, seed=8)
    assert materialize(home, [("nasa", "meteorites")], bad, instance=instance).success
    _reject(home, good)
    assert not materialize(home, [("nasa", "meteorites")], good, instance=instance).success
    third = statuses()
    assert third[bad].state == State.LOADED
    assert third[good].state == State.FAILED
    assert instance.get_status_by_partition(key, [good, bad], partitions) == {
        good: dg.AssetPartitionStatus.FAILED,
        bad: dg.AssetPartitionStatus.MATERIALIZED,
    }

    # the asset: the same table as Parquet, the matrix and counts in its metadata
    asset = build_delivery_status_asset(load_registry())
    dg.Definitions.validate_loadable(
        dg.Definitions(
            assets=[asset],
            sensors=[delivery_status_sensor(asset)],
            resources={"warehouse": FluxWarehouse(home=str(home))},
        )
    )
    window = (dt.datetime.now(dt.UTC).date() - days[0]).days + 1
    result = dg.materialize(
        [asset],
        instance=instance,
        resources={"warehouse": FluxWarehouse(home=str(home))},
        run_config={"ops": {"cross_agency__delivery_status": {"config": {"days": window}}}},
    )
    assert result.success
    (event,) = result.asset_materializations_for_node("cross_agency__delivery_status")
    assert event.asset_key == DELIVERY_STATUS_KEY
    metadata = {k: v.value for k, v in event.metadata.items()}
    for name in ("late", "failed", "loaded", "pending"):
        assert isinstance(metadata[name], int)
    assert "| nasa/meteorites |" in str(metadata["matrix"])
    table = pl.read_parquet(home / "published" / "cross_agency" / "delivery_status.parquet")
    mine = table.filter((pl.col("agency") == "nasa") & (pl.col("dataset") == "meteorites"))
    by_day = {str(d): s for d, s in mine.select("day", "state").iter_rows()}
    assert (by_day[good], by_day[bad]) == ("failed", "loaded")
    assert (
        metadata["dagster/row_count"] == table.height == window * len(select_pairs(load_registry()))
    )


def materialize_assets() -> list[dg.AssetsDefinition]:
    from flux_pipelines_tests.conftest import ingest_assets

    return ingest_assets([("nasa", "meteorites")])


def test_status_command_errors(home: Path) -> None:
    for args, expected in (
        (("--agency", "comets"), "unknown agency 'comets'"),
        (("--dataset", "comets"), "unknown dataset 'comets'"),
        (("--agency", "dod", "--dataset", "meteorites"), "does not deliver meteorites"),
        (("--from", "2026-02-31"), "is not YYYY-MM-DD"),
        (("--from", "2026-02-05", "--to", "2026-02-01"), "is after"),
    ):
        code, output = flux_status(home, *args)
        assert code == 2, output
        assert output.startswith("error: ") and expected in output
        assert "Traceback" not in output


def test_status_lists_what_the_landing_sensors_will_not_load(home: Path) -> None:
    """Issue 13: nothing unreported. The sensors' findings reach the operator's status."""
    from flux_pipelines_tests.test_landing_sensor import tick

    stray = home / "landing" / "nasa" / "meteorites" / "latest"  # not a day
    stray.mkdir(parents=True)
    (stray / "meteorites.csv").write_text("id\n1\n", encoding="utf-8")
    tick(home, dg.DagsterInstance.ephemeral())  # the shipped landing_meteorites sensor
    code, out = flux_status(home, "--agency", "nasa", "--days", "2")
    assert code == 1
    assert "not loaded from landing/ (1;" in out
    assert "nasa/meteorites/latest" in out and "[delivery.unknown_folder]" in out
    code, out = flux_status(home, "--agency", "nga", "--days", "2")
    assert "not loaded from landing/" not in out  # another agency's findings are not nga's
