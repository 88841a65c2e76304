"""Retention and purge with the clock moved forward: expired artefacts go, the rest stay,
the last copy of a day is never deleted, and every deletion is in a verifying audit trail."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from flux_pipelines.audit.trail import AuditTrail
from flux_pipelines.cli.main import app
from flux_pipelines.contracts.registry import Registry, contracts_dir, load_registry
from flux_pipelines.instance.config import prepare_dagster_home
from flux_pipelines.names import agency_db
from flux_pipelines.ops.purge import apply, plan, plan_with_kept, retention_for
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import deliver, materialize

pytestmark = pytest.mark.slow

PAIRS = [("nasa", "meteorites"), ("nga", "media_items")]
D1, D2, D3 = "2026-01-05", "2026-01-06", "2026-03-02"
NOW = dt.date(2026, 1, 5) + dt.timedelta(days=410)  # D1, D2 past 400 days; D3 not
runner = CliRunner()


def override_registry(tmp_path: Path) -> Registry:
    """The shipped contracts, meteorites' latest version given a retention override."""
    root = tmp_path / "contracts"
    shutil.copytree(contracts_dir(), root)
    latest = Path(load_registry(root).latest("meteorites").source_path)
    doc = yaml.safe_load(latest.read_text())
    doc.setdefault("customProperties", []).append(
        {"property": "retention", "value": {"quarantine": "100d", "published": "100d"}}
    )
    latest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_registry(root)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)
    home = tmp_path / "flux"
    monkeypatch.setenv("FLUX_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    prepare_dagster_home(home)
    with dg.DagsterInstance.get() as instance:
        for i, day in enumerate((D1, D2, D3)):
            for agency, dataset in PAIRS:
                deliver(home, agency, dataset, day, rows=120, seed=i + 1)
            assert materialize(home, PAIRS, day, instance=instance).success
    return home


def raw(home: Path, agency: str, dataset: str, day: str) -> Path:
    return home / "warehouse" / agency / "raw" / dataset / f"_partition_date={day}"


def published(home: Path, agency: str, dataset: str, day: str) -> Path:
    return home / "published" / agency / dataset / f"{day}.parquet"


def rows(home: Path, agency: str, table: str, day: str) -> int:
    with duckdb.connect(str(agency_db(home, agency)), read_only=True) as c:
        ((n,),) = c.execute(
            f"SELECT count(*) FROM {table} WHERE _partition_date = ?", [day]
        ).fetchall()
    return int(n)


def test_purge_with_the_clock_moved_forward(home: Path, tmp_path: Path) -> None:
    registry = override_registry(tmp_path)
    assert retention_for(registry, "meteorites").quarantine == 100  # the override
    assert retention_for(registry, "media_items").quarantine == 730  # the default
    # Last-copy cases: D1's published copy is lost; D2's curated rows are gone.
    published(home, "nasa", "meteorites", D1).unlink()
    with FluxWarehouse(home=str(home)).connect("nasa") as conn:
        conn.execute("DELETE FROM meteorites WHERE _partition_date = ?", [D2])
    # a collection's day publishes its eligibility and content copies beside the records
    companions = {
        day: [home / "published" / "nasa" / f"meteorites_{t}" / f"{day}.parquet"
              for t in ("eligibility", "content")]
        for day in (D2, D3)
    }  # fmt: skip
    for day, paths in companions.items():
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(published(home, "nasa", "meteorites", day).read_bytes())
    trail = AuditTrail(home)
    records_before = sum(1 for _ in trail.iter_records())

    # A dry run lists and deletes nothing (the CLI uses the registry at FLUX_CONTRACTS_DIR).
    env = {"FLUX_CONTRACTS_DIR": str(registry.root)}
    out = runner.invoke(
        app, ["purge", "--home", str(home), "--dry-run", "--now", NOW.isoformat()], env=env
    )
    assert out.exit_code == 0, out.output
    assert f"would delete raw nga/media_items/{D1}" in out.output
    assert raw(home, "nga", "media_items", D1).is_dir()
    assert sum(1 for _ in trail.iter_records()) == records_before

    with dg.DagsterInstance.get() as instance:
        deletions, kept = plan_with_kept(home, registry, instance, now=NOW)
        apply(home, deletions, instance, now=NOW)
        # expired and with another copy: gone
        for day in (D1, D2):
            assert not raw(home, "nga", "media_items", day).exists()
            assert not (home / "outbox" / "nga" / "media_items" / day).exists()
            assert not (home / "outbox" / "nasa" / "meteorites" / day).exists()
            assert rows(home, "nasa", "meteorites_quarantine", day) == 0  # override: 100d
            assert rows(home, "nga", "media_items_quarantine", day) > 0  # default: 730d
        assert published(home, "nga", "media_items", D1).exists()  # 2555d
        assert not published(home, "nasa", "meteorites", D3).exists()  # override: 100d
        # the last copy is kept
        assert raw(home, "nasa", "meteorites", D1).is_dir()  # its published copy is gone
        assert raw(home, "nasa", "meteorites", D2).is_dir()  # its curated rows are gone
        assert published(home, "nasa", "meteorites", D2).exists()  # the only copy left
        assert not any(p.exists() for p in companions[D3])  # purged with their day's copy
        assert all(p.exists() for p in companions[D2])  # kept with it
        reasons = {(k.kind, k.day): k.reason for k in kept if k.agency == "nasa"}
        assert "no published copy" in reasons[("raw", D1)]
        assert "no curated rows" in reasons[("published", D2)]
        # not expired: kept
        assert raw(home, "nga", "media_items", D3).is_dir()
        assert raw(home, "nasa", "meteorites", D3).is_dir()
        assert (home / "outbox" / "nga" / "media_items" / D3).is_dir()
        assert rows(home, "nasa", "meteorites", D3) > 0

        # the trail lists every deletion and still verifies; an archive copy was written
        purged = [e for e in trail.iter_records(kind="purge")]
        listed = {(d["kind"], d.get("agency"), d.get("day")) for e in purged
                  for d in e.payload["deleted"]}  # fmt: skip
        assert {(d.kind, d.agency, d.day) for d in deletions} == listed
        assert ("raw", "nga", D1) in listed and ("published", "nasa", D3) in listed
        assert trail.verify().ok
        (archive,) = (home / "audit" / "archive").glob("trail-*.jsonl.gz")
        assert trail.path.read_bytes().startswith(gzip.decompress(archive.read_bytes()))

        assert plan(home, registry, instance, now=NOW) == []  # a second purge: nothing

        # Years later: finished runs go too (runs: 400 days from their real start), except
        # a run still holding a partition's latest materialization (the UI's record of it).
        later = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=401)
        holders = {r.run_id for r in instance.get_runs()}
        assert len(holders) == 3
        assert [d for d in plan(home, registry, instance, now=later) if d.kind == "runs"] == []
        # the oldest day is loaded again: its first run holds no latest materialization any
        # more, so it goes, and only it
        first = instance.get_runs()[-1]  # newest first
        day = first.tags["dagster/partition"]
        assert materialize(home, PAIRS, day, instance=instance).success
        runs = [d for d in plan(home, registry, instance, now=later) if d.kind == "runs"]
        assert [d.run_id for d in runs] == [first.run_id]
        apply(home, runs, instance, now=later)
        assert {r.run_id for r in instance.get_runs()} == (holders - {first.run_id}) | {
            instance.get_runs()[0].run_id
        }
    last = list(trail.iter_records(kind="purge"))[-1]
    assert {d["run_id"] for d in last.payload["deleted"]} == {d.run_id for d in runs}
    assert trail.verify().ok
    assert json.loads((home / "audit" / "head.json").read_text())["seq"] == last.seq


def test_purge_job_runs_in_the_agency_pools(home: Path) -> None:
    from flux_pipelines.definitions import defs

    job = defs.resolve_job_def("flux_purge")
    pools = {node.definition.pool for node in job.nodes if node.name.startswith("purge_nasa")}
    assert pools == {"duckdb_nasa"}
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, resources={"warehouse": FluxWarehouse(home=str(home))}
        )
    assert result.success
    today = dt.datetime.now(dt.UTC).date()
    assert plan_with_kept(home, load_registry(), None, now=today)[0] == []  # nothing left due
    assert raw(home, "nasa", "meteorites", D3).is_dir() or (today - dt.date(2026, 3, 2)).days > 400
    assert AuditTrail(home).verify().ok
