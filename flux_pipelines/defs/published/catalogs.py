"""Published catalogs: one read-only DuckDB file per agency with views over its published
Parquet partitions, rebuilt by the daily schedule (and on demand).

Analysts open ``published/<agency>/catalog.duckdb`` (read-only) and query
``meteorites`` etc.; the views read ``published/<agency>/<dataset>/*.parquet``, which each
load swaps in atomically, so they never see half a partition and never hold a lock on the
pipeline's working file (analysts never block a load). Those copies hide classified columns
(``access/masking.py``); the agency's personal-data group opens
``published/<agency>/_clear/catalog.duckdb`` instead: the same views, reading its copies.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster import AssetExecutionContext

from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.defs.agency import agency_spec
from flux_pipelines.defs.ingest.assets import asset_keys
from flux_pipelines.defs.results import Materialized
from flux_pipelines.files import replacing
from flux_pipelines.names import ENTITLED_FOLDER, agency_published, catalog_key
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines.sql import literal, quote, scalar

CATALOG_FILE = "catalog.duckdb"


def write_catalog(warehouse: FluxWarehouse, agency: Agency) -> tuple[Path, dict[str, int]]:
    """(Re)build the agency's catalog file atomically; returns its path and rows per view.

    The analysts' catalog reads the masked copies; when the agency has personal-data copies,
    ``published/<agency>/_clear/catalog.duckdb`` is rebuilt too (same views, reading them)."""
    root = agency_published(warehouse.root, agency.id)
    result = write_views(root)
    entitled = root / ENTITLED_FOLDER
    if entitled.is_dir():
        write_views(entitled, fallback=root)
    return result


def _tables(root: Path) -> dict[str, Path]:
    return {
        f.name: f
        for f in sorted(root.iterdir())
        if f.is_dir() and f.name[0] != "_" and any(f.glob("*.parquet"))
    } | {f.stem: f for f in sorted(root.glob("*.parquet"))}


def _view_sql(source: Path, entitled: Path | None) -> str:
    """A view over a table's daily folder (or single file); with ``entitled``, the days it
    holds are read from there and the other days (nothing hidden) from ``source``."""
    if source.is_file():
        return f"SELECT * FROM read_parquet({literal(source)}, union_by_name = true)"
    days = source / "*.parquet"
    if entitled is None or not any(entitled.glob("*.parquet")):
        return f"SELECT * FROM read_parquet({literal(days)}, union_by_name = true)"
    clear = entitled / "*.parquet"
    return (
        f"SELECT * FROM read_parquet({literal(clear)}, union_by_name = true) "
        "UNION ALL BY NAME SELECT * EXCLUDE (filename) FROM "
        f"read_parquet({literal(days)}, union_by_name = true, filename = true) "
        "WHERE parse_filename(filename) NOT IN "
        f"(SELECT parse_filename(file) FROM glob({literal(clear)}))"
    )


def write_views(root: Path, fallback: Path | None = None) -> tuple[Path, dict[str, int]]:
    """``root/catalog.duckdb`` with a view per published table: a folder of daily Parquet
    partitions (datasets, risk scores) or a single Parquet file (cross-agency outputs).

    With ``fallback`` (the personal-data catalog: ``root`` is ``<agency>/_clear``), a view
    per table of ``fallback``, reading ``root``'s copy of a day where there is one."""
    import duckdb

    root.mkdir(parents=True, exist_ok=True)
    target = root / CATALOG_FILE
    tables = _tables(fallback if fallback is not None else root)
    rows: dict[str, int] = {}
    with replacing(target) as tmp, duckdb.connect(str(tmp)) as conn:
        for name, source in tables.items():
            entitled = root / name if fallback is not None else None
            conn.execute(f"CREATE VIEW {quote(name)} AS {_view_sql(source, entitled)}")
            rows[name] = int(scalar(conn, f"SELECT count(*) FROM {quote(name)}"))
    return target, rows


CATALOG_POOL = "published_catalogs"


def catalog_spec(agency: Agency) -> dg.AssetSpec:
    return dg.AssetSpec(
        catalog_key(agency),
        deps=[asset_keys(agency, d)[1] for d in agency.datasets],
        kinds={"duckdb", "parquet"},
        **agency_spec(agency, layer="published"),
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
    ) -> Iterator[Materialized]:
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
