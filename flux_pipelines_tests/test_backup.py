"""The backup and restore drill: load, back up, destroy the home, restore, compare.

On SQLite and on a real PostgreSQL (the ``pg_env`` fixture: a fresh database per test, and a
second one the restore goes into). Also: a backup taken while a load holds the agency file
waits and then holds the whole load, and a tampered backup is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from typer.testing import CliRunner

from flux_pipelines.cli.main import app
from flux_pipelines.faults import arm, faults_dir
from flux_pipelines.instance.config import prepare_dagster_home
from flux_pipelines.names import agencies_with_db, agency_db, asset_key
from flux_pipelines.ops.backup import MANIFEST, backup
from flux_pipelines_tests.conftest import deliver, materialize

pytestmark = pytest.mark.slow

PAIRS = [("nasa", "meteorites"), ("nga", "media_items")]
DAYS = ("2026-01-05", "2026-01-06")
runner = CliRunner()


def make_home(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = root / "flux"
    monkeypatch.setenv("FLUX_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    prepare_dagster_home(home)
    return home


def load_days(home: Path, days: tuple[str, ...] = DAYS) -> None:
    with dg.DagsterInstance.get() as instance:
        for i, day in enumerate(days):
            for agency, dataset in PAIRS:
                deliver(home, agency, dataset, day, rows=150, seed=i + 3)
            result = materialize(home, PAIRS, day, instance=instance)
            assert result.success


def every_row(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """file/table -> its rows in a total order (ORDER BY ALL)."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for db in (agency_db(home, a) for a in agencies_with_db(home)):
        with duckdb.connect(str(db), read_only=True) as conn:
            tables = conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
            ).fetchall()
            for (table,) in tables:
                data = conn.execute(f'SELECT * FROM "{table}" ORDER BY ALL').fetchall()
                rows[f"{db.name}/{table}"] = data
            if db.stem == "nasa":  # the raw view reads the home's Parquet by path
                rows["nasa/raw_meteorites"] = conn.execute(
                    "SELECT * EXCLUDE (_loaded_at) FROM raw_meteorites ORDER BY ALL"
                ).fetchall()
    return rows


def history() -> dict[str, Any]:
    """Run ids and statuses, and materialized partitions of the curated assets."""
    with dg.DagsterInstance.get() as instance:
        runs = sorted((r.run_id, r.status.value) for r in instance.get_runs())
        parts = {
            f"{a}/{d}": sorted(instance.get_materialized_partitions(asset_key(a, d)))
            for a, d in PAIRS
        }
        events = len(
            instance.fetch_materializations(asset_key("nasa", "meteorites"), limit=100).records
        )
    return {"runs": runs, "partitions": parts, "materializations": events}


def drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_env: dict[str, str]) -> None:
    home = make_home(tmp_path, monkeypatch)
    load_days(home)
    before_rows, before_history = every_row(home), history()
    assert before_history["partitions"]["nasa/meteorites"] == list(DAYS)
    assert sum(len(r) for r in before_rows.values()) > 500

    target = tmp_path / "backup"
    started = time.monotonic()
    out = runner.invoke(app, ["backup", "--home", str(home), "--to", str(target)])
    backup_s = time.monotonic() - started
    assert out.exit_code == 0, out.output
    manifest = json.loads((target / MANIFEST).read_text())
    shutil.rmtree(home)  # the disaster

    for key, value in restore_env.items():
        monkeypatch.setenv(key, value)
    restored = tmp_path / "restored"
    monkeypatch.setenv("FLUX_HOME", str(restored))
    monkeypatch.setenv("DAGSTER_HOME", str(restored / "dagster_home"))
    started = time.monotonic()
    out = runner.invoke(app, ["restore", "--from", str(target), "--home", str(restored)])
    restore_s = time.monotonic() - started
    assert out.exit_code == 0, out.output

    after_rows = every_row(restored)
    assert after_rows.keys() == before_rows.keys()
    for name, rows in before_rows.items():
        assert after_rows[name] == rows, name
    out = runner.invoke(app, ["audit", "verify", "--home", str(restored)])
    assert out.exit_code == 0, out.output
    assert history() == before_history
    size = sum(f["size"] for f in manifest["files"].values())
    print(
        f"\ndrill {manifest['storage']}: {len(manifest['files'])} files {size} bytes, "
        f"{sum(len(r) for r in before_rows.values())} rows in {len(before_rows)} tables "
        f"compared, backup {backup_s:.2f}s restore {restore_s:.2f}s"
    )


def test_drill_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)
    drill(tmp_path, monkeypatch, {})


def test_drill_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres: Any) -> None:
    for key, value in postgres.create_database(f"drill_src_{os.getpid()}").items():
        monkeypatch.setenv(key, value)
    # the restore goes into another, empty database: the source one is "lost" with the host
    drill(tmp_path, monkeypatch, postgres.create_database(f"drill_dst_{os.getpid()}"))


def test_backup_waits_for_a_running_load_and_holds_all_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)
    home = make_home(tmp_path, monkeypatch)
    day = "2026-03-02"
    deliver(home, "nasa", "meteorites", day, rows=300, seed=9)
    arm("loader.inserted", "sleep 6", home=home)  # rows inserted, transaction open
    worker = subprocess.Popen(
        [sys.executable, "-m", "flux_pipelines_tests.run_worker", "nasa_meteorites", day],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 120
    while (faults_dir(home) / "loader.inserted").exists():  # removed when the load gets there
        assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
        assert time.monotonic() < deadline, "the load never reached loader.inserted"
        time.sleep(0.1)
    summary = backup(home, tmp_path / "backup", lock_wait_seconds=60)
    output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, output
    assert summary.waited_seconds > 2, "the backup did not wait for the load's lock"

    def curated(db: Path) -> int:
        with duckdb.connect(str(db), read_only=True) as conn:
            ((n,),) = conn.execute(
                "SELECT count(*) FROM meteorites WHERE _partition_date = ?", [day]
            ).fetchall()
        return int(n)

    loaded = curated(agency_db(home, "nasa"))
    assert loaded > 250
    assert curated(agency_db(tmp_path / "backup" / "home", "nasa")) == loaded
    assert summary.tables["warehouse/nasa/nasa.duckdb"]["meteorites"] == loaded

    # A non-empty target and a tampered backup are refused; nothing is written.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    out = runner.invoke(app, ["restore", "--from", str(tmp_path / "backup"), "--home", str(busy)])
    assert out.exit_code == 2 and "not empty" in out.output
    published = next((tmp_path / "backup" / "home" / "published").rglob("*.parquet"))
    published.write_bytes(published.read_bytes()[:-10] + b"0123456789")
    fresh = tmp_path / "fresh"
    out = runner.invoke(app, ["restore", "--from", str(tmp_path / "backup"), "--home", str(fresh)])
    assert out.exit_code == 2, out.output
    assert "changed since the backup" in out.output
    assert not fresh.exists()
