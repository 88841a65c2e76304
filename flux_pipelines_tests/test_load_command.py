"""``flux load`` as an engineer uses it: a delivery in the landing zone, loaded through the
home's Dagster instance, reported per day from the run's own events.

Every number the command prints is checked against an independent source: the agency's
DuckDB file (``_flux_deliveries``, the quarantine table) and the run in the instance.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from typer.testing import CliRunner

from flux_pipelines.cli.main import app
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.demo.generator import generate_rows, write_delivery
from flux_pipelines.names import agency_db
from flux_pipelines_tests.conftest import deliver

runner = CliRunner()
DAYS = ["2026-02-02", "2026-02-03", "2026-02-04"]
COLUMNS = (
    *("day", "status", "files", "rows_in", "curated", "quarantined", "reject"),
    *("conservation", "contract_schema", "anomalies"),
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # the command points DAGSTER_HOME and FLUX_HOME at the home; restored after the test
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    return tmp_path / "flux"


def flux_load(home: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        ["load", "--home", str(home), "--agency", "nasa", "--dataset", "meteorites", *args],
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def day_rows(output: str) -> dict[str, dict[str, str]]:
    """The per-day table the command prints: day -> column -> value (top rules as text)."""
    rows = {}
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] in DAYS and len(cells) >= len(COLUMNS):
            row = dict(zip(COLUMNS, cells, strict=False))
            row["top_rules"] = " ".join(cells[len(COLUMNS) :])
            rows[cells[0]] = row
    return rows


def deliveries(home: Path) -> dict[str, tuple[int, int, int, int]]:
    """Per day from the agency file: files, rows read, curated, quarantined."""
    with duckdb.connect(str(agency_db(home, "nasa")), read_only=True) as conn:
        rows = conn.execute(
            "SELECT CAST(_partition_date AS VARCHAR), count(*), sum(rows_read), "
            "sum(rows_curated), sum(rows_quarantined) FROM _flux_deliveries "
            "WHERE dataset = 'meteorites' GROUP BY 1"
        ).fetchall()
    return {day: (int(f), int(r or 0), int(c), int(q)) for day, f, r, c, q in rows}


def top_rule(home: Path, day: str) -> tuple[str, int]:
    with duckdb.connect(str(agency_db(home, "nasa")), read_only=True) as conn:
        ((rule, n),) = conn.execute(
            "SELECT rule_id, count(*) n FROM meteorites_quarantine "
            "WHERE _partition_date = ? GROUP BY 1 ORDER BY n DESC, 1 LIMIT 1",
            [dt.date.fromisoformat(day)],
        ).fetchall()
    return rule, int(n)


def the_run(home: Path) -> dg.DagsterRun:
    """The one run `flux load` made, from the home's instance (what the UI reads)."""
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        [run] = instance.get_runs()
        return run


def clean_delivery(home: Path, day: str, rows: int, seed: int) -> None:
    contract = load_registry().contract_for("meteorites", dt.date.fromisoformat(day))
    delivery = generate_rows(contract, rows, seed=seed, defect_rate=0.0)
    folder = home / "landing" / "nasa" / "meteorites" / day
    folder.mkdir(parents=True, exist_ok=True)
    write_delivery(delivery.frame, folder / "meteorites.csv", "csv")


# --- one day ----------------------------------------------------------------------------------


def test_load_one_day_runs_in_the_homes_instance_and_prints_its_results(home: Path) -> None:
    planted = deliver(home, "nasa", "meteorites", DAYS[0], rows=80, seed=7)
    assert planted, "the seeded delivery plants fatal defects"

    code, output = flux_load(home, "--day", DAYS[0])

    assert code == 1, output  # rows were quarantined, nothing rejected
    files, rows_in, curated, quarantined = deliveries(home)[DAYS[0]]
    assert (rows_in, curated, quarantined) == (80, 80 - len(planted), len(planted))
    row = day_rows(output)[DAYS[0]]
    assert row["status"] == "loaded"
    assert (row["files"], row["rows_in"], row["curated"], row["quarantined"]) == (
        str(files),
        str(rows_in),
        str(curated),
        str(quarantined),
    )
    assert row["reject"] == f"{quarantined / rows_in:.1%}"
    assert (row["conservation"], row["contract_schema"]) == ("passed", "passed")
    assert row["anomalies"] in ("passed", "FAILED")  # a first delivery has no history
    rule, n = top_rule(home, DAYS[0])
    assert f"{rule} ({n})" in row["top_rules"]
    # the run is in the home's instance, where `flux dev` shows it, and the output says so
    run = the_run(home)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.job_name == "ingest_nasa" and run.tags["dagster/partition"] == DAYS[0]
    assert run.tags["flux/source"] == "flux load"
    assert f"run {run.run_id} SUCCESS" in output
    assert f"Dagster storage: sqlite (SQLite under {home / 'dagster_home'}" in output
    # only the dataset's three ingest assets ran (nasa's other dataset is not in the run)
    assert {str(k.to_user_string()) for k in run.asset_selection or []} == {
        "nasa/raw_meteorites",
        "nasa/meteorites",
        "nasa/meteorites_quarantine",
    }


def test_clean_delivery_exits_0(home: Path) -> None:
    clean_delivery(home, DAYS[0], rows=50, seed=3)

    code, output = flux_load(home, "--day", DAYS[0])

    assert code == 0, output
    assert deliveries(home)[DAYS[0]] == (1, 50, 50, 0)
    row = day_rows(output)[DAYS[0]]
    assert (row["rows_in"], row["curated"], row["quarantined"], row["reject"]) == (
        "50",
        "50",
        "0",
        "0.0%",
    )
    assert "every day loaded cleanly" in output


# --- a range, one day rejected (per-day events of the ingest step) -----------------------------


def test_range_reports_each_day_and_names_the_rejected_file(home: Path) -> None:
    for i, day in enumerate(DAYS):
        deliver(home, "nasa", "meteorites", day, rows=50 + 20 * i, seed=40 + i)
    bad = home / "landing" / "nasa" / "meteorites" / DAYS[1] / "extra.csv"
    bad.write_bytes(b"id,name\n\xff\xfe,x\n")  # not UTF-8: rejected whole

    code, output = flux_load(home, "--from", DAYS[0], "--to", DAYS[-1])

    assert code == 2, output
    assert (
        f"rejected: agency=nasa dataset=meteorites day={DAYS[1]} file=extra.csv "
        "rule=delivery.bad_encoding"
    ) in output
    assert "FAILED: nasa/meteorites" in output and "not valid UTF-8" in output
    rows = day_rows(output)
    stored = deliveries(home)
    for day in (DAYS[0], DAYS[2]):  # each day its own numbers, not the run's totals
        files, rows_in, curated, quarantined = stored[day]
        assert rows[day]["status"] == "loaded"
        assert (rows[day]["files"], rows[day]["rows_in"], rows[day]["curated"]) == (
            str(files),
            str(rows_in),
            str(curated),
        )
        assert rows[day]["quarantined"] == str(quarantined)
        assert rows[day]["conservation"] == "passed"
    assert rows[DAYS[1]]["status"] == "rejected"
    # one run over the range, failed, in the home's instance
    run = the_run(home)
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert run.tags["dagster/asset_partition_range_start"] == DAYS[0]
    assert run.tags["dagster/asset_partition_range_end"] == DAYS[-1]
    assert f"run {run.run_id} FAILURE" in output


# --- what is refused before any run -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agency", "nope", "--day", DAYS[0]], "unknown agency 'nope'"),
        (["--dataset", "comets", "--day", DAYS[0]], "unknown dataset 'comets'"),
        (["--dataset", "media_items", "--day", DAYS[0]], "nasa does not deliver media_items"),
        (["--day", "2026-02-30"], "--day '2026-02-30' is not a day"),
        (["--from", DAYS[2], "--to", DAYS[0]], f"--to {DAYS[0]} is before --from {DAYS[2]}"),
        (["--from", DAYS[0]], "needs both --from and --to"),
        (["--day", DAYS[0], "--to", DAYS[1]], "either --day, or --from and --to"),
        ([], "give the delivery day"),
        (["--day", "2026-01-04"], "outside nasa's delivery days"),
        (["--day", "2026-02-09"], "no delivery for nasa/meteorites on 2026-02-09"),
        (["--from", DAYS[0], "--to", "2026-02-06"], "on 2026-02-05, 2026-02-06"),
        (["--day", "2026-02-08"], "holds no data file"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_requests_are_clear_errors(home: Path, args: list[str], message: str) -> None:
    for day in DAYS:
        clean_delivery(home, day, rows=10, seed=1)
    partial = home / "landing" / "nasa" / "meteorites" / "2026-02-08"
    partial.mkdir()
    (partial / "meteorites.csv.part").write_text("id\n1\n")  # still being copied: not data
    cli = ["load", "--home", str(home), "--agency", "nasa", "--dataset", "meteorites"]
    # later options win in typer: the parametrised --agency / --dataset replace the defaults
    result = runner.invoke(app, [*cli, *args])

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert result.output.startswith("error: ") and message in result.output, result.output
    # refused before anything was written: no instance, no warehouse
    assert sorted(p.name for p in home.iterdir()) == ["landing"]
