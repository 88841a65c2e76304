"""Use-case exports as cross-agency assets: one per use case of ``contracts/use_cases.yaml``.

Each reads every agency's certified days of the datasets that map rights and content, and
carries a blocking check that re-derives eligibility from what the export holds
(``exports/verify.py``): when it finds a single record or file the use case may not use,
nothing is swapped in, the check fails and the catalog is not rebuilt from it.
"""

import dagster as dg
from dagster import AssetExecutionContext

from flux_pipelines.audit.trail import AuditTrail, publication_record
from flux_pipelines.collections.use_cases import UseCase, load_use_cases
from flux_pipelines.contracts.registry import Registry, load_registry
from flux_pipelines.defs.ingest.assets import asset_keys
from flux_pipelines.defs.results import Materialized
from flux_pipelines.names import CROSS_AGENCY, export_key
from flux_pipelines.resources.warehouse import FluxWarehouse

ELIGIBILITY_CHECK = "eligibility_rederived"


def build_export_asset(use_case: UseCase, registry: Registry) -> dg.AssetsDefinition:
    datasets = registry.content_datasets()
    key = export_key(use_case.id)

    @dg.asset(
        key=key,
        deps=[asset_keys(a, d)[1] for d in datasets for a in registry.agencies_for(d)],
        group_name=CROSS_AGENCY,
        kinds={"parquet"},
        tags={"layer": "cross_agency", "use_case": use_case.id},
        description=f"The {use_case.id} export: {use_case.description} Records and content "
        f"files of {', '.join(datasets) or 'no dataset yet'} from every agency's certified days, "
        "with a manifest and a datasheet (counts by agency, rights class and content type; "
        "what was excluded and why; provenance).",
        check_specs=[
            dg.AssetCheckSpec(
                ELIGIBILITY_CHECK,
                asset=key,
                blocking=True,
                description="Eligibility re-derived from the exported rights statements, "
                "licences, content types and files: not one record or file the use case may "
                "not use.",
            )
        ],
        pool="published_cross_agency",
    )
    def _export(context: AssetExecutionContext, warehouse: FluxWarehouse) -> Materialized:
        from flux_pipelines.exports.build import build_export

        trail = AuditTrail(warehouse.root)
        trail.require_intact()  # before publishing anything its records could not follow
        result = build_export(warehouse.root, load_registry(), trail, load_use_cases(), use_case.id)
        paths = result.paths
        if result.passed and result.sources.days:
            trail.append(
                publication_record(
                    CROSS_AGENCY,
                    key.path[-1],
                    max(s.day for s in result.sources.days),
                    target=str(paths.docs),
                    rows=result.records,
                    run_id=context.run.run_id,
                )
            )
        context.log.info(
            f"{use_case.id}: {result.records:,} records and {result.files:,} files; parts "
            f"rewritten {len(result.rewritten)}, kept {len(result.kept)}, removed "
            f"{len(result.removed)}"
            + ("" if result.passed else f"; NOT swapped in: {result.problems[0]}")
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.records,
                "files": result.files,
                "datasheet": dg.MetadataValue.path(str(paths.docs / "datasheet.md")),
                "agency_days": len(result.sources.days),
                "agency_days_held_back": len(result.sources.held_back),
                "parts_rewritten": len(result.rewritten),
                "parts_kept": len(result.kept),
                "export_updated": result.passed,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=ELIGIBILITY_CHECK,
                    passed=result.passed,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={
                        "findings": "; ".join(result.problems) or "none",
                        "records_checked": result.records,
                        "files_checked": result.files,
                    },
                )
            ],
        )

    return _export


def export_assets(registry: Registry) -> list[dg.AssetsDefinition]:
    """One export per use case, when some dataset maps rights and content."""
    if not registry.content_datasets():
        return []
    return [build_export_asset(u, registry) for u in load_use_cases().use_cases]
