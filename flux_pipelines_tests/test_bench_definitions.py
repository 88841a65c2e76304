"""The definitions bench's registry scaler and fresh processes, and the throughput bench's
equal settings. Times are never asserted here (speed goals live in ``flux bench``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flux_pipelines.bench.definitions import (
    GENERATED_DATASETS,
    SHIPPED_CONTRACTS,
    TEMPLATE_DATASETS,
    fresh_process,
    land_small_delivery,
    measure_size,
    scale_registry,
    sqlite_instance_env,
)
from flux_pipelines.bench.run import (
    connection_settings,
    ensure_file,
    measure_baseline,
    measure_ceiling,
    measure_flux,
)
from flux_pipelines.cli.main import app
from flux_pipelines.contracts.registry import CONTRACTS_DIR_ENV, load_registry
from flux_pipelines.names import agency_db
from flux_pipelines.resources.warehouse import FluxWarehouse


@pytest.fixture
def fresh_registry_cache() -> Iterator[None]:
    """``load_registry()`` caches its answer; other tests must not see a scaled registry."""
    load_registry.cache_clear()
    yield
    load_registry.cache_clear()


def _shipped_count() -> int:
    return len(load_registry(SHIPPED_CONTRACTS).agencies)


def test_scaled_registry_loads_through_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry_cache: None
) -> None:
    shipped = _shipped_count()
    target = tmp_path / "contracts"
    ids = scale_registry(target, 30)
    assert len(ids) == 30 - shipped and len(set(ids)) == len(ids)

    monkeypatch.setenv(CONTRACTS_DIR_ENV, str(target))
    registry = load_registry()
    assert registry.root == target
    assert len(registry.agencies) == 30
    shipped_ids = [a.id for a in load_registry(SHIPPED_CONTRACTS).agencies]
    assert [a.id for a in registry.agencies] == [*shipped_ids, *ids]
    for agency_id in ids:
        agency = registry.agency(agency_id)
        assert agency.datasets == GENERATED_DATASETS
    # Generated entries carry whatever fields the shipped spending entries have.
    entries = yaml.safe_load((target / "agencies.yaml").read_text(encoding="utf-8"))["agencies"]
    template = next(e for e in entries if e["datasets"] == TEMPLATE_DATASETS)
    assert set(template) - {"severity_overrides"} <= set(entries[-1])
    # The shipped folder is left alone.
    assert len(load_registry(SHIPPED_CONTRACTS).agencies) == shipped


def test_scaler_refuses_fewer_agencies_than_shipped(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already lists"):
        scale_registry(tmp_path / "contracts", 1)


def test_definitions_grow_with_the_registry(tmp_path: Path) -> None:
    """Dagster definitions built from a 30-agency registry, in a fresh process each."""
    scaled_dir = tmp_path / "contracts"
    ids = scale_registry(scaled_dir, 30)
    shipped = fresh_process(sqlite_instance_env(tmp_path / "a", SHIPPED_CONTRACTS))
    scaled = fresh_process(sqlite_instance_env(tmp_path / "b", scaled_dir))

    assert shipped.agencies == _shipped_count() and scaled.agencies == 30
    assert shipped.run_success is None and scaled.run_success is None
    assert scaled.assets > shipped.assets and scaled.checks > shipped.checks
    assert shipped.import_dagster_seconds > 0 and shipped.definitions_seconds > 0
    assert shipped.assets == sum(shipped.assets_by_prefix.values())
    # Every generated agency (same datasets) gets the same assets, and all of them are new.
    per_agency = {scaled.assets_by_prefix.get(i.replace("-", "_"), 0) for i in ids}
    assert len(per_agency) == 1 and (grown := per_agency.pop()) > 0
    assert scaled.assets - shipped.assets >= grown * len(ids)


def test_throughput_sides_run_with_the_pipelines_duckdb_settings(tmp_path: Path) -> None:
    csv = ensure_file(tmp_path, 2_000)
    threads = FluxWarehouse().threads  # the pipeline's resource default
    base = measure_baseline(csv, threads)
    flux = measure_flux(csv, threads)
    ceilings = [measure_ceiling(csv, threads, raw_copy=raw) for raw in (True, False)]
    assert base["rows"] == flux["rows"] == 2_000
    # The ceilings keep every row they read (they validate nothing); Flux curates fewer.
    assert [c["rows"] for c in ceilings] == [2_000, 2_000] and flux["curated"] < 2_000
    assert all(c["settings"] == base["settings"] == flux["settings"] for c in ceilings)
    # ... and they are the settings of a connection the pipeline's resource opens.
    with FluxWarehouse(home=str(tmp_path / "home")).connect("any") as conn:
        assert connection_settings(conn) == base["settings"]
    assert base["settings"]["preserve_insertion_order"] == "false"
    assert base["settings"]["threads"] == str(threads)


def test_bench_lists_definitions_as_a_part() -> None:
    result = CliRunner().invoke(app, ["bench", "--only", "nonsense"])
    assert result.exit_code == 2
    assert "definitions" in result.output


@pytest.mark.slow
def test_small_partition_runs_on_a_temporary_sqlite_instance(tmp_path: Path) -> None:
    size = measure_size(tmp_path, None, repeat=1)
    (run,) = size.runs
    assert run.run_success is True and run.agencies == _shipped_count()
    assert agency_db(tmp_path / "definitions" / "shipped", "nasa").exists()
    instance_yaml = tmp_path / "definitions" / "shipped" / "dagster_home" / "dagster.yaml"
    assert "postgres" not in instance_yaml.read_text(encoding="utf-8")


def test_small_delivery_lands_for_the_run(tmp_path: Path) -> None:
    paths = land_small_delivery(tmp_path, rows=20)
    assert any("/nasa/meteorites/2026-01-05/" in str(p) for p in paths)
