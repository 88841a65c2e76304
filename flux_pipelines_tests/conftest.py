"""Shared helpers for the contract and loader tests: small contracts written to tmp_path."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from flux_pipelines.contracts.model import Contract
from flux_pipelines.ingest.delivery import (
    PartitionLoader,
    PartitionResult,
    load_partition,
    partition_dir,
)

# Fixtures of the helper modules: the OIDC issuer and its home; the SMTP mailbox.
pytest_plugins = ["flux_pipelines_tests.oidc", "flux_pipelines_tests.receivers"]

DAY = dt.date(2026, 1, 5)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding slow tests first (stable: each file's tests stay together, in order).

    The suite runs whole files per xdist worker (``--dist loadfile``), handed out in this
    order (``--no-loadscope-reorder`` in pyproject.toml; xdist would otherwise hand out the
    files with the most tests first, leaving a long few-test file to start last and keep
    one worker busy alone at the end)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


def contract_doc(
    properties: list[dict[str, Any]],
    *,
    name: str = "items",
    version: str = "1.0.0",
    quality: list[dict[str, Any]] | None = None,
    custom: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An ODCS v3 document with one table; the caller supplies the properties."""
    table: dict[str, Any] = {"name": name, "physicalType": "table", "properties": properties}
    if quality:
        table["quality"] = quality
    return {
        "apiVersion": "v3.0.2",
        "kind": "DataContract",
        "id": f"{name}-v1",
        "name": name,
        "version": version,
        "status": "active",
        "domain": "collections",
        "description": {"purpose": f"Test dataset {name}."},
        "customProperties": custom or [],
        "schema": [table],
    }


def write_contract(root: Path, doc: dict[str, Any], file_name: str | None = None) -> Path:
    """Write ``doc`` as YAML to root/datasets/<name>/<version>.odcs.yaml (the registry layout)."""
    folder = root / "datasets" / str(doc["name"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (file_name or f"{doc['version']}.odcs.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "a.duckdb"))
    try:
        yield connection
    finally:
        connection.close()


def raw_dir(root: Path, contract: Contract, day: dt.date) -> Path:
    """One partition's raw Parquet folder, laid out as the warehouse does (root/raw/<ds>/<day>)."""
    return partition_dir(root / "raw" / contract.dataset, day)


def make_loader(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    root: Path,
    *,
    day: dt.date = DAY,
    chunk_rows: int = 1000,
    run_id: str = "run-1",
    references: dict[str, Contract] | None = None,
) -> PartitionLoader:
    return PartitionLoader(
        conn,
        agency="test-agency",
        contract=contract,
        day=day,
        run_id=run_id,
        raw_root=root / "raw" / contract.dataset,
        chunk_rows=chunk_rows,
        references=references,
    )


def run_load(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    files: Sequence[Path],
    root: Path,
    **loader_options: Any,
) -> PartitionResult:
    """Load a delivery the way the asset does: one transaction, then the raw swap."""
    return load_partition(make_loader(conn, contract, root, **loader_options), files)


# --- real data (../shared/data): present in CI, absent on a user's machine ---------------
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real-data folder; tests that need it skip with the reason when absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data folder {REAL_DATA} is absent (it ships beside the repo in CI)")
    return REAL_DATA


def ingest_keys(pairs: Sequence[tuple[str, str]]) -> list[Any]:
    """The raw / curated / quarantine asset keys of (agency id, dataset) pairs."""
    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.defs.ingest.assets import asset_keys

    registry = load_registry()
    return [key for a, d in pairs for key in asset_keys(registry.agency(a), d)]


def ingest_assets(pairs: Sequence[tuple[str, str]]) -> list[Any]:
    """The shipped ingest multi-assets holding (agency id, dataset) pairs (one step loads an
    agency's datasets of a domain: select ``ingest_keys(pairs)`` to load only the pairs)."""

    wanted = set(ingest_keys(pairs))
    return assets_holding(wanted)


def assets_holding(keys: Iterable[dg.AssetKey]) -> list[dg.AssetsDefinition]:
    """The shipped definitions' assets (as declared: no resources bound) holding ``keys``."""
    from flux_pipelines.definitions import defs

    wanted = set(keys)
    found = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and wanted & a.keys]
    missing = wanted - {k for a in found for k in a.keys}
    assert not missing, f"no shipped asset holds {sorted(k.to_user_string() for k in missing)}"
    return found


class Runs:
    """Several in-process runs read as one result (agencies onboarded on different days
    have different partitions definitions, so one Dagster run cannot hold them all)."""

    def __init__(self, results: Sequence[Any]) -> None:
        self.results = list(results)

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def all_events(self) -> list[Any]:
        return [e for r in self.results for e in r.all_events]

    def get_asset_check_evaluations(self) -> list[Any]:
        return [e for r in self.results for e in r.get_asset_check_evaluations()]

    def asset_materializations_for_node(self, node: str) -> list[Any]:
        return [
            m
            for r in self.results
            if node in {n.name for n in r.job_def.nodes}
            for m in r.asset_materializations_for_node(node)
        ]


def materialize_grouped(
    assets: Sequence[Any], selection: Sequence[Any] | None, **kwargs: Any
) -> Any:
    """``dg.materialize`` once per partitions definition among ``assets`` (agencies onboarded
    on different days have different ones, and one Dagster run holds one)."""
    import dagster as dg

    groups: dict[Any, list[Any]] = {}
    for asset in assets:
        groups.setdefault(asset.partitions_def, []).append(asset)
    wanted = set(selection) if selection is not None else None
    results = []
    for group in groups.values():
        keys = [k for a in group for k in a.keys if wanted is None or k in wanted]
        results.append(dg.materialize(group, selection=keys, raise_on_error=False, **kwargs))
    return results[0] if len(results) == 1 else Runs(results)


def materialize(
    home: Path, pairs: Sequence[tuple[str, str]], partition_key: str, **kwargs: Any
) -> Any:
    """Materialize the pairs' ingest assets through Dagster, in process, against ``home``."""
    import dagster as dg

    from flux_pipelines.resources.warehouse import FluxWarehouse

    return materialize_grouped(
        ingest_assets(pairs),
        ingest_keys(pairs),
        partition_key=partition_key,
        resources={"warehouse": FluxWarehouse(home=str(home))},
        instance=kwargs.pop("instance", None) or dg.DagsterInstance.ephemeral(),
        **kwargs,
    )


def land(
    home: Path, agency: str, dataset: str, day: str, source: Path, name: str | None = None
) -> Path:
    """Drop a file in the landing zone the way an agency would."""
    folder = home / "landing" / agency / dataset / day
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or source.name)
    target.write_bytes(source.read_bytes())
    return target


def deliver(home: Path, agency: str, dataset: str, day: str, rows: int, seed: int) -> set[int]:
    """Land a generated delivery; returns the row numbers planted with a fatal defect."""
    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.demo.generator import generate_rows, write_delivery

    contract = load_registry().contract_for(dataset, dt.date.fromisoformat(day))
    delivery = generate_rows(contract, rows, seed=seed, defect_rate=0.05)
    folder = home / "landing" / agency / dataset / day
    folder.mkdir(parents=True, exist_ok=True)
    write_delivery(delivery.frame, folder / f"{dataset}.csv", "csv")
    fatal = {r.id for r in contract.rules if r.severity == "fatal"}
    planted = delivery.planted.filter(delivery.planted["rule_id"].is_in(list(fatal)))
    return set(planted.get_column("row_number").to_list())


def land_by_awarding_agency(home: Path, day: str, source: Path) -> dict[str, int]:
    """Split a multi-agency USAspending file by awarding agency into each agency's landing
    folder, as the agencies would deliver it; agency id -> rows landed."""
    import polars as pl

    from flux_pipelines.contracts.registry import load_registry

    by_name = {
        name: agency.id
        for agency in load_registry().agencies_for("contract_transactions")
        for name in agency.source_names
    }
    frame = pl.read_csv(source, infer_schema=False)
    names = set(frame.get_column("awarding_toptier_agency_name").drop_nulls().unique().to_list())
    assert names <= set(by_name), f"agencies missing from the registry: {names - set(by_name)}"
    landed: dict[str, int] = {}
    for name, part in frame.group_by("awarding_toptier_agency_name"):
        agency = by_name[str(name[0])]
        folder = home / "landing" / agency / "contract_transactions" / day
        folder.mkdir(parents=True)
        part.write_csv(folder / "transactions.csv")
        landed[agency] = part.height
    return landed


def deliver_transactions(home: Path, agency: str, day: str, rows: int, seed: int) -> Path:
    """Land contract transactions whose recipients repeat with their own habits (risk tests)."""
    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.demo.generator import generate_rows, write_delivery
    from flux_pipelines.demo.spending import overlay, recipients

    contract = load_registry().contract_for("contract_transactions", dt.date.fromisoformat(day))
    delivery = generate_rows(contract, rows, seed=seed, defect_rate=0.02)
    delivery = overlay(delivery, recipients(60, seed=1), day=dt.date.fromisoformat(day), seed=seed)
    folder = home / "landing" / agency / "contract_transactions" / day
    folder.mkdir(parents=True, exist_ok=True)
    return write_delivery(delivery.frame, folder / "contract_transactions.csv", "csv")


def check_results(result: Any) -> dict[str, bool]:
    """Check name -> passed, from a Dagster execution result."""
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
        for e in result.get_asset_check_evaluations()
    }


# -- a real PostgreSQL server (session-wide) ---------------------------------------------
@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A PostgreSQL server started for the test session; fails (not skips) under CI=true."""
    from flux_pipelines_tests.pg import PostgresUnavailable, start_server

    try:
        server = start_server()
    except (PostgresUnavailable, OSError) as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and PostgreSQL could not be started: {exc}")
        pytest.skip(f"PostgreSQL could not be started here: {exc}")
    yield server
    if server.is_running():
        server.stop("immediate")
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def pg_env(
    postgres: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """A fresh database per test, exported as DAGSTER_PG_* for the instance."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:6]
    env = postgres.create_database(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
