"""Every agency's files in its own folders, and a home of the old layout still working.

The old layout (before per-agency mounts): ``warehouse/<agency>.duckdb`` beside the other
agencies' files, receipts in ``warehouse/<agency>/receipts/``. A home in that layout is made
here from a real load by putting its files back where the old layout kept them (the bytes
are the same: only the places changed); then real loads, readers and tools run on it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from flux_pipelines.access.layout import main as layout_main
from flux_pipelines.errors import ConfigurationError, TransientError
from flux_pipelines.ingest.receipts import read_receipt
from flux_pipelines.names import (
    agencies_with_db,
    agency_db,
    agency_receipts,
    legacy_agency_db,
    legacy_agency_receipts,
)
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import deliver, materialize

AGENCY, DATASET = "nasa", "meteorites"
DAY, DAY2 = "2026-02-02", "2026-02-03"


def curated_by_day(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(
            f"SELECT _partition_date, count(*) FROM {DATASET} GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {d.isoformat(): int(n) for d, n in rows}


def to_old_layout(home: Path, agency: str = AGENCY) -> None:
    """Put an agency's working file and receipts where the old layout kept them."""
    os.rename(agency_db(home, agency), legacy_agency_db(home, agency))
    assert not agency_db(home, agency).with_name(f"{agency}.duckdb.wal").exists()
    shutil.move(agency_receipts(home, agency), legacy_agency_receipts(home, agency))


@pytest.fixture
def loaded(tmp_path: Path) -> Path:
    """A home with one real load of nasa's meteorites, in the current layout."""
    home = tmp_path / "home"
    deliver(home, AGENCY, DATASET, DAY, rows=60, seed=3)
    assert materialize(home, [(AGENCY, DATASET)], DAY).success
    return home


def test_a_load_writes_the_agency_file_and_receipts_into_the_agencys_folders(
    loaded: Path,
) -> None:
    assert agency_db(loaded, AGENCY) == loaded / "warehouse" / AGENCY / f"{AGENCY}.duckdb"
    assert agency_db(loaded, AGENCY).is_file()
    assert not legacy_agency_db(loaded, AGENCY).exists()
    receipt = agency_receipts(loaded, AGENCY) / DATASET / f"{DAY}.json"
    assert read_receipt(receipt) is not None and read_receipt(receipt).status == "loaded"
    assert not legacy_agency_receipts(loaded, AGENCY).exists()
    # nothing of the agency lies outside its own folders
    for zone in ("warehouse", "receipts", "published", "outbox", "landing"):
        strays = [p.name for p in (loaded / zone).iterdir() if p.name != AGENCY]
        assert strays == [], f"{zone}/ holds {strays} beside the agency's folder"


def test_a_home_of_the_old_layout_keeps_working_and_is_moved_on_first_open(
    loaded: Path,
) -> None:
    day_one = curated_by_day(agency_db(loaded, AGENCY))
    to_old_layout(loaded)
    warehouse = FluxWarehouse(home=str(loaded))
    assert agencies_with_db(loaded) == [AGENCY]
    # readers see the day's receipt where the old layout keeps it, before anything moved
    seen = warehouse.receipt_path(AGENCY, DATASET, DAY)
    assert seen == legacy_agency_receipts(loaded, AGENCY) / DATASET / f"{DAY}.json"
    # the next load opens the agency file: it moves first, then loads the new day into it
    deliver(loaded, AGENCY, DATASET, DAY2, rows=50, seed=4)
    assert materialize(loaded, [(AGENCY, DATASET)], DAY2).success
    assert not legacy_agency_db(loaded, AGENCY).exists()
    assert not legacy_agency_receipts(loaded, AGENCY).exists()
    after = curated_by_day(agency_db(loaded, AGENCY))
    assert after[DAY] == day_one[DAY] and after[DAY2] > 0  # old rows kept, new day added
    for day in (DAY, DAY2):
        path = warehouse.receipt_path(AGENCY, DATASET, day)
        assert path == agency_receipts(loaded, AGENCY) / DATASET / f"{day}.json"
        assert read_receipt(path) is not None
    assert warehouse.migrate_layout(AGENCY) == []  # idempotent
    assert warehouse.old_layout(AGENCY) == []


def test_the_layout_command_checks_moves_and_is_idempotent(
    loaded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    to_old_layout(loaded)
    assert layout_main(["--home", str(loaded), "--check"]) == 1
    assert f"{legacy_agency_db(loaded, AGENCY)}: layout before" in capsys.readouterr().out
    assert layout_main(["--home", str(loaded)]) == 0
    assert f"moved {legacy_agency_db(loaded, AGENCY)} -> {agency_db(loaded, AGENCY)}" in (
        capsys.readouterr().out
    )
    assert layout_main(["--home", str(loaded), "--check"]) == 0
    assert layout_main(["--home", str(loaded)]) == 0
    assert curated_by_day(agency_db(loaded, AGENCY))[DAY] > 0


def test_backup_purge_and_metrics_follow_the_moved_file(loaded: Path, tmp_path: Path) -> None:
    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.ops.backup import backup
    from flux_pipelines.ops.metrics import arrival_time
    from flux_pipelines.ops.purge import plan_agency

    run_id = read_receipt(agency_receipts(loaded, AGENCY) / DATASET / f"{DAY}.json").run_id
    to_old_layout(loaded)
    assert arrival_time(loaded, AGENCY, DATASET, DAY, run_id) is not None  # old receipt read
    registry = load_registry()
    deletions, _ = plan_agency(loaded, registry, registry.agency(AGENCY), now=dt.date(2030, 1, 1))
    # the file was found (and moved) in the old layout: expired quarantine rows are planned
    assert [d.kind for d in deletions if d.kind == "quarantine"]
    assert agency_db(loaded, AGENCY).is_file() and not legacy_agency_db(loaded, AGENCY).exists()
    summary = backup(loaded, tmp_path / "backup")
    rel = f"warehouse/{AGENCY}/{AGENCY}.duckdb"
    assert summary.tables[rel][DATASET] == curated_by_day(agency_db(loaded, AGENCY))[DAY]
    copied = tmp_path / "backup" / "home"
    assert (copied / rel).is_file() and not (copied / "warehouse" / f"{AGENCY}.duckdb").exists()
    assert (copied / "receipts" / AGENCY / DATASET / f"{DAY}.json").is_file()


def test_a_file_held_by_another_process_is_not_moved(loaded: Path) -> None:
    to_old_layout(loaded)
    old = legacy_agency_db(loaded, AGENCY)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(old)!r}); "
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        warehouse = FluxWarehouse(home=str(loaded), lock_wait_seconds=0.5)
        started = time.monotonic()
        with pytest.raises(TransientError, match="locked by another process"):
            warehouse.migrate_layout(AGENCY)
        assert time.monotonic() - started < 10
        assert old.is_file() and not agency_db(loaded, AGENCY).exists()  # nothing moved
    finally:
        holder.kill()
        holder.wait()
    assert FluxWarehouse(home=str(loaded)).migrate_layout(AGENCY)  # free now: it moves
    assert curated_by_day(agency_db(loaded, AGENCY))[DAY] > 0


def test_a_working_file_in_both_layouts_is_refused_naming_both(loaded: Path) -> None:
    shutil.copyfile(agency_db(loaded, AGENCY), legacy_agency_db(loaded, AGENCY))
    with pytest.raises(ConfigurationError) as refused:
        FluxWarehouse(home=str(loaded)).migrate_layout(AGENCY)
    assert str(legacy_agency_db(loaded, AGENCY)) in str(refused.value)
    assert str(agency_db(loaded, AGENCY)) in str(refused.value)
    assert legacy_agency_db(loaded, AGENCY).is_file() and agency_db(loaded, AGENCY).is_file()


def test_a_working_file_out_of_sight_is_not_replaced_by_an_empty_one(loaded: Path) -> None:
    """What a run pod mounting only warehouse/<agency>/ sees of an unmoved home: the raw
    Parquet of earlier loads and no file. Creating one would split the agency's data."""
    elsewhere = loaded.parent / "outside-the-mount.duckdb"
    os.rename(agency_db(loaded, AGENCY), elsewhere)
    with (
        pytest.raises(ConfigurationError, match="flux access apply"),
        FluxWarehouse(home=str(loaded)).connect(AGENCY),
    ):
        pass
    assert not agency_db(loaded, AGENCY).exists()


def test_a_receipt_written_since_wins_over_the_old_layouts(loaded: Path) -> None:
    new = agency_receipts(loaded, AGENCY) / DATASET / f"{DAY}.json"
    old = legacy_agency_receipts(loaded, AGENCY) / DATASET / f"{DAY}.json"
    old.parent.mkdir(parents=True)
    old.write_text('{"stale": true}', encoding="utf-8")
    before = new.read_bytes()
    moved = FluxWarehouse(home=str(loaded)).migrate_layout(AGENCY)
    assert moved == [f"{old.parents[1]} -> {agency_receipts(loaded, AGENCY)} (0 receipt(s))"]
    assert new.read_bytes() == before and not old.parents[1].exists()
