"""Published catalogs: one read-only DuckDB file per agency with views over its published
Parquet partitions, rebuilt by the daily schedule (and on demand).

Analysts open ``published/<agency>/catalog.duckdb`` (read-only) and query
``meteorites`` etc.; the views read ``published/<agency>/<dataset>/*.parquet``, which each
load swaps in atomically, so they never see half a partition and never hold a lock on the
pipeline's working file (analysts never block a load).
"""

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster import AssetExecutionContext

from flux_pipelines.assets.ingest_factory import asset_keys
from flux_pipelines.contracts.ddl import quote
from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.names import agency_published, catalog_key
from flux_pipelines.resources.warehouse import FluxWarehouse

CATALOG_FILE = "catalog.duckdb"


def write_catalog(warehouse: FluxWarehouse, agency: Agency) -> tuple[Path, dict[str, int]]:
    """(Re)build the agency's catalog file atomically; returns its path and rows per view."""
    return write_views(agency_published(warehouse.root, agency.id))


def write_views(root: Path) -> tuple[Path, dict[str, int]]:
    """``root/catalog.duckdb`` with a view per published table: a folder of daily Parquet
    partitions (datasets, risk scores) or a single Parquet file (cross-agency outputs)."""
    import duckdb

    root.mkdir(parents=True, exist_ok=True)
    target = root / CATALOG_FILE
    tmp = root / f".{CATALOG_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    tables = {
        f.name: f / "*.parquet"
        for f in sorted(root.iterdir())
        if f.is_dir() and f.name[0] != "_" and any(f.glob("*.parquet"))
    } | {f.stem: f for f in sorted(root.glob("*.parquet"))}
    rows: dict[str, int] = {}
    with duckdb.connect(str(tmp)) as conn:
        for name, files in tables.items():
            pattern = str(files).replace("'", "''")
            conn.execute(
                f"CREATE VIEW {quote(name)} AS SELECT * FROM read_parquet('{pattern}', "
                "union_by_name = true)"
            )
            counted = conn.execute(f"SELECT count(*) FROM {quote(name)}").fetchall()
            rows[name] = int(counted[0][0])
    os.replace(tmp, target)
    return target, rows


CATALOG_POOL = "published_catalogs"


def catalog_spec(agency: Agency) -> dg.AssetSpec:
    return dg.AssetSpec(
        catalog_key(agency),
        deps=[asset_keys(agency, d)[1] for d in agency.datasets],
        group_name=agency.key,
        kinds={"duckdb", "parquet"},
        owners=[agency.owner] if agency.owner else [],
        tags={"agency": agency.key, "layer": "published"},
        description=f"Read-only catalog of {agency.name}'s published partitions for analysts: "
        f"one view per published table over published/{agency.id}/<table>/*.parquet "
        "(datasets, risk scores, reconciliations).",
        skippable=True,
    )


def build_catalogs_asset(registry: Registry) -> dg.AssetsDefinition:
    """Every agency's catalog from one step (a subset when a run selects some): writing a
    catalog takes milliseconds, and one definition instead of one per agency keeps the code
    location's load flat as agencies are onboarded."""
    by_key = {catalog_key(a): a for a in registry.agencies}

    @dg.multi_asset(
        name="published_catalogs",
        specs=[catalog_spec(a) for a in registry.agencies],
        can_subset=True,
        pool=CATALOG_POOL,
    )
    def _catalogs(
        context: AssetExecutionContext, warehouse: FluxWarehouse
    ) -> Iterator[dg.MaterializeResult]:
        for key in sorted(context.selected_asset_keys, key=lambda k: k.to_user_string()):
            path, rows = write_catalog(warehouse, by_key[key])
            context.log.info(f"{path}: {rows}")
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    "path": dg.MetadataValue.path(str(path)),
                    "views": ", ".join(rows) or "none yet",
                    "dagster/row_count": sum(rows.values()),
                    **{f"rows_{name}": n for name, n in rows.items()},
                },
            )

    return _catalogs


def catalog_assets(registry: Registry) -> list[dg.AssetsDefinition]:
    return [build_catalogs_asset(registry)]
