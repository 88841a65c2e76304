"""Cross-agency outputs: one table per dataset delivered by several agencies, certified days only.

Built from the agencies' published, read-only copies (never their working files) into
``published/cross_agency/<dataset>.parquet``, with the policy's ``cross_agency`` treatments
of classified columns (personal data hashed, restricted masked: ``access/masking.py``); the
certification gate holds back any agency-day whose anomaly monitors raised ERROR until
someone overrides it (``flux quality override``). The quality scorecard of every agency is
published beside it.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from dagster import AssetExecutionContext

from flux_pipelines.access.masking import (
    classified_columns,
    shared_select,
    source_file,
    treatments,
)
from flux_pipelines.audit.trail import AuditTrail, publication_record
from flux_pipelines.contracts.registry import Registry
from flux_pipelines.defs.ingest.assets import asset_keys
from flux_pipelines.defs.published.catalogs import write_views
from flux_pipelines.defs.results import Materialized
from flux_pipelines.names import (
    CATALOG,
    CROSS_AGENCY,
    SCORECARD,
    cross_agency_key,
    published_root,
)
from flux_pipelines.quality.certification import DayVerdict, day_verdicts
from flux_pipelines.quality.scorecard import scorecard_glob
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines.sql import literal, scalar, write_parquet_atomic

if TYPE_CHECKING:
    import duckdb


GROUP = CROSS_AGENCY
CERTIFICATION = "certification"
ZSTD_PARQUET = "FORMAT parquet, COMPRESSION zstd"  # COPY options of every cross-agency file


SCORECARD_KEY = cross_agency_key(SCORECARD)


def output_dir(warehouse: FluxWarehouse) -> Path:
    return published_root(warehouse.root) / GROUP


def _write_atomically(conn: "duckdb.DuckDBPyConnection", select: str, target: Path) -> int:
    """Swap ``select``'s rows in as ``target`` (zstd Parquet); returns how many."""
    write_parquet_atomic(conn, select, target, options=ZSTD_PARQUET)
    return int(scalar(conn, f"SELECT count(*) FROM read_parquet({literal(target)})"))


def certified_files(warehouse: FluxWarehouse, verdicts: list[DayVerdict]) -> list[Path]:
    """The certified days' clearest published copies (the personal-data group's copy where
    there is one): Flux's own builders apply the cross-agency treatments themselves."""
    files = [
        source_file(warehouse.root, v.agency, v.dataset, v.day.isoformat())
        for v in verdicts
        if v.certified
    ]
    return [f for f in files if f.is_file()]


def build_cross_agency_asset(dataset: str, registry: Registry) -> dg.AssetsDefinition:
    agencies = registry.agencies_for(dataset)
    contract = registry.latest(dataset)
    # One copy for every agency's analysts: it carries only what all of them may see.
    wanted = treatments(classified_columns(registry.versions(dataset)), "cross_agency")

    @dg.asset(
        key=cross_agency_key(dataset),
        deps=[asset_keys(a, dataset)[1] for a in agencies],
        group_name=GROUP,
        kinds={"duckdb", "parquet"},
        tags={"layer": "cross_agency", "dataset": dataset},
        description=f"{contract.title} of every agency ({len(agencies)}), certified days only: "
        "an agency-day whose anomaly monitors raised ERROR is held back until overridden "
        "(`flux quality override`). Column `agency` says whose row it is.",
        check_specs=[
            dg.AssetCheckSpec(
                CERTIFICATION,
                asset=cross_agency_key(dataset),
                description="No agency-day is held back by the certification gate.",
            )
        ],
        pool="published_cross_agency",
    )
    def _cross_agency(context: AssetExecutionContext, warehouse: FluxWarehouse) -> Materialized:
        import duckdb

        trail = AuditTrail(warehouse.root)
        trail.require_intact()  # before publishing anything its records could not follow
        verdicts = day_verdicts(published_root(warehouse.root), trail, dataset)
        held = [v for v in verdicts if not v.certified]
        overridden = [v for v in verdicts if v.overridden_by]
        files = certified_files(warehouse, verdicts)
        target = output_dir(warehouse) / f"{dataset}.parquet"
        rows = 0
        if files:
            with duckdb.connect() as conn:
                rows = _write_atomically(
                    conn, shared_select(conn, warehouse.root, files, wanted), target
                )
            trail.append(
                publication_record(
                    "cross-agency",
                    dataset,
                    max(v.day for v in verdicts),
                    target=str(target),
                    rows=rows,
                    run_id=context.run.run_id,
                )
            )
        else:
            target.unlink(missing_ok=True)
        context.log.info(f"{dataset}: {len(files)} agency-days published, {len(held)} held back")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(target)),
                "dagster/row_count": rows,
                "agency_days_published": len(files),
                "agency_days_held_back": len(held),
                "overridden": ", ".join(
                    f"{v.agency} {v.day} by {v.overridden_by}" for v in overridden
                )
                or "none",
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=CERTIFICATION,
                    passed=not held,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "held_back": "; ".join(f"{v.agency} {v.day}: {v.summary}" for v in held)
                        or "none",
                    },
                )
            ],
        )

    return _cross_agency


def build_scorecard_asset(registry: Registry) -> dg.AssetsDefinition:
    @dg.asset(
        key=SCORECARD_KEY,
        deps=[asset_keys(a, d)[1] for a in registry.agencies for d in a.datasets],
        group_name=GROUP,
        kinds={"duckdb", "parquet"},
        tags={"layer": "cross_agency"},
        description="The quality scorecard: one row per agency, dataset and delivery day (rows, "
        "reject rate, rules fired, anomalies, delivered on time against the agency's "
        "deadline), from every agency's published scorecard rows.",
        pool="published_cross_agency",
    )
    def _scorecard(warehouse: FluxWarehouse) -> Materialized:
        import duckdb

        published = published_root(warehouse.root)
        target = output_dir(warehouse) / "quality_scorecard.parquet"
        if not list(published.glob("*/_scorecard/*/*.parquet")):
            return dg.MaterializeResult(metadata={"dagster/row_count": 0})
        pattern = literal(scorecard_glob(published))
        with duckdb.connect() as conn:
            rows = _write_atomically(
                conn,
                f"SELECT * FROM read_parquet({pattern}, union_by_name = true) "
                "ORDER BY agency, dataset, _partition_date",
                target,
            )
        return dg.MaterializeResult(
            metadata={"path": dg.MetadataValue.path(str(target)), "dagster/row_count": rows}
        )

    return _scorecard


CATALOG_KEY = cross_agency_key(CATALOG)


def build_cross_agency_catalog_asset(upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=CATALOG_KEY,
        deps=upstream,
        group_name=GROUP,
        kinds={"duckdb", "parquet"},
        tags={"layer": "cross_agency"},
        description="Read-only catalog of the cross-agency outputs for analysts: one view per "
        "file in published/cross_agency/ (certified datasets, the quality scorecard, the "
        "recipient links).",
        pool="published_cross_agency",
    )
    def _catalog(warehouse: FluxWarehouse) -> Materialized:
        path, rows = write_views(output_dir(warehouse))
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "views": ", ".join(rows) or "none yet",
                "dagster/row_count": sum(rows.values()),
            }
        )

    return _catalog


def cross_agency_assets(
    registry: Registry, upstream: Sequence[dg.AssetKey] = ()
) -> list[dg.AssetsDefinition]:
    """The certified datasets, the scorecard and their catalog, which also reads ``upstream``
    (cross-agency outputs built elsewhere: delivery status, recipient links, exports)."""
    shared = sorted(d for d in registry.contracts if len(registry.agencies_for(d)) > 1)
    outputs = [build_cross_agency_asset(d, registry) for d in shared]
    outputs.append(build_scorecard_asset(registry))
    keys = [k for a in outputs for k in a.keys]
    return [*outputs, build_cross_agency_catalog_asset([*keys, *upstream])]
