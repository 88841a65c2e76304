"""The ingest asset factory: one multi-asset per agency, its specs built from the contracts.

Shape (an asset per agency and dataset; the README's "Asset model" has the decision and
its figures): assets are keyed ``<agency>/raw_<dataset>``, ``<agency>/<dataset>`` and
``<agency>/<dataset>_quarantine``, grouped by agency, with daily partitions from the
agency's onboarding day. Why: a ``pool``
per agency gives one writer per agency DuckDB file while agencies run in parallel, each
agency's partitions start when it started delivering, single-run backfills over a time
window are well trodden, and owners / freshness are per agency for free. One definition per
agency (not per dataset) keeps the code location's load proportional to the agencies.

A dataset's three assets are produced by one step and one DuckDB transaction per day, so
raw, curated and quarantine can never disagree about a partition; the step itself, and its
per-day events, live in ``step.py``.
"""

import datetime as dt
import functools
import warnings
from collections.abc import Iterator
from typing import TypedDict

import dagster as dg

from flux_pipelines.contracts.ddl import DatasetTables
from flux_pipelines.contracts.logical_types import type_row
from flux_pipelines.contracts.memo import per_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.page import rule_catalogue_markdown
from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.defs.agency import agency_partitions, agency_spec
from flux_pipelines.defs.ingest.step_plan import (
    TRANSIENT_RETRIES,
    DatasetStep,
    IngestKeys,
    retry_delay,
    transient_retries,
)
from flux_pipelines.defs.spending.risk import SCORING_CONFIG_SCHEMA, delivers_risk, scores_specs
from flux_pipelines.names import (
    ANOMALIES,
    CONSERVATION,
    CONTRACT_SCHEMA,
    RISK_DATASET,
    ingest_keys,
)
from flux_pipelines.resources.warehouse import FluxWarehouse

__all__ = [
    "ANOMALIES",
    "CONSERVATION",
    "CONTRACT_SCHEMA",
    "TRANSIENT_RETRIES",
    "agency_pool",
    "asset_keys",
    "build_ingest_asset",
    "ingest_assets",
    "ingest_step_name",
    "retry_delay",
    "transient_retries",
]

DELIVERY_WINDOW = dt.timedelta(hours=24)
SINGLE_RUN = dg.BackfillPolicy.single_run()
# Per-day check results need partitioned check specs, a preview API in Dagster 1.13 (see
# step.py); the behaviour Flux relies on is pinned by a test, so the
# warning, repeated for every asset at every definitions load, says nothing new.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)


@functools.cache
def delivery_freshness(deadline_cron: str) -> dg.FreshnessPolicy:
    """Fresh when a delivery loaded in the 24 hours before the agency's daily deadline.

    One policy per distinct deadline: building one costs ~8 ms (Dagster walks the cron to
    find its smallest interval), which at 600 assets was a third of the definitions' load.
    """
    return dg.FreshnessPolicy.cron(
        deadline_cron=deadline_cron, lower_bound_delta=DELIVERY_WINDOW, timezone="UTC"
    )


def agency_pool(agency: Agency) -> str:
    """One concurrency pool per agency file: at most one writer at a time."""
    return f"duckdb_{agency.key}"


asset_keys = ingest_keys  # the name every factory, sensor and test already uses


@per_contract
def rule_count(contract: Contract) -> int:
    return len(contract.catalogue())


def ingest_step_name(agency: Agency) -> str:
    """The step (op) loading an agency's datasets, as the run view shows it."""
    return f"{agency.key}__ingest"


@per_contract
def column_schema(contract: Contract) -> dg.TableSchema:
    """The curated table's columns as the UI shows them, constraints included."""
    columns = []
    for c in contract.columns:
        other = [
            r.expected
            for r in contract.rules
            if r.column == c.name and r.kind not in ("required", "type", "unique")
        ]
        columns.append(
            dg.TableColumn(
                name=c.name,
                type=type_row(c.logical_type).duckdb,
                description=c.description or None,
                constraints=dg.TableColumnConstraints(
                    nullable=not c.required, unique=c.unique or c.primary_key, other=other
                ),
            )
        )
    return dg.TableSchema(columns=columns)


class _SpecCommon(TypedDict):
    """What a dataset's raw, curated and quarantine specs share."""

    group_name: str
    owners: list[str]
    tags: dict[str, str]
    partitions_def: dg.DailyPartitionsDefinition
    skippable: bool


def _dataset_specs(
    agency: Agency, dataset: str, registry: Registry
) -> tuple[list[dg.AssetSpec], list[dg.AssetCheckSpec]]:
    """The raw / curated / quarantine specs of one agency's dataset, and its checks."""
    contract = registry.latest_for(dataset, agency)
    raw_key, curated_key, quarantine_key = asset_keys(agency, dataset)
    # Cross-dataset rules read other curated tables of the agency: load those first.
    referenced = sorted({d for r in contract.cross_rules for d in r.datasets})
    tables = DatasetTables.for_dataset(dataset)
    common: _SpecCommon = {
        **agency_spec(agency, domain=contract.domain, dataset=dataset),
        "partitions_def": agency_partitions(agency),
        # Events are per day (step.py): no range-wide output beside them.
        "skippable": True,
    }
    specs = [
        dg.AssetSpec(
            raw_key,
            description=f"Every delivered row of {agency.name}'s {contract.title}, as text, "
            "with file, row number, file sha256 and run id.",
            kinds={"duckdb", "polars"},
            metadata={"dagster/table_name": f"{agency.id}.{tables.raw}"},
            **common,
        ),
        dg.AssetSpec(
            curated_key,
            deps=[raw_key, *(asset_keys(agency, d)[1] for d in referenced)],
            description=f"{contract.title} rows of {agency.name} that pass every fatal rule of "
            f"contract {contract.id}, typed. {contract.description}".strip(),
            kinds={"duckdb", "pandera"},
            metadata={
                "dagster/column_schema": column_schema(contract),
                "dagster/table_name": f"{agency.id}.{tables.curated}",
                "contract": dg.MetadataValue.path(contract.source_path),
                "contract_version": contract.version,
                "rules": rule_count(contract),
                "rule_catalogue": dg.MetadataValue.md(rule_catalogue_markdown(contract)),
            },
            freshness_policy=delivery_freshness(agency.delivery_deadline),
            **common,
        ),
        dg.AssetSpec(
            quarantine_key,
            deps=[raw_key],
            description=f"Rows of {agency.name}'s {contract.title} that fail a fatal rule (one "
            "row per violation: rule, field, value, expected, severity, row, file, contract "
            "version) and files rejected whole.",
            kinds={"duckdb"},
            metadata={"dagster/table_name": f"{agency.id}.{tables.quarantine}"},
            **common,
        ),
    ]
    checks = [
        dg.AssetCheckSpec(
            CONSERVATION,
            asset=curated_key,
            partitions_def=agency_partitions(agency),
            description="Nothing lost: per file, rows read = rows curated + rows quarantined.",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            CONTRACT_SCHEMA,
            asset=curated_key,
            partitions_def=agency_partitions(agency),
            description=f"The day's curated rows satisfy the pandera schema generated from "
            f"contract {contract.id} (fatal rules; keys unique within the delivery day).",
        ),
        dg.AssetCheckSpec(
            ANOMALIES,
            asset=curated_key,
            partitions_def=agency_partitions(agency),
            description="Delivery metrics (row count, reject rate, null rates, numeric means) "
            "against this agency's own history: DPLA's volume-drop and reject-rate rules, "
            "seasonal z-scores (weekday, day of month), an Isolation Forest. WARN or ERROR; an "
            "ERROR holds the day out of the cross-agency outputs until overridden.",
        ),
    ]

    return specs, checks


def build_ingest_asset(
    agency: Agency, datasets: list[str], registry: Registry, name: str
) -> dg.AssetsDefinition:
    """One step loading the agency's datasets (a subset when the run selects one): its
    datasets share one DuckDB file, so one step writes them, referenced datasets first
    (cross-dataset rules read them), on one connection."""
    ordered = _referenced_first(datasets, registry)
    specs: list[dg.AssetSpec] = []
    checks: list[dg.AssetCheckSpec] = []
    steps: list[DatasetStep] = []
    for dataset in ordered:
        dataset_specs, dataset_checks = _dataset_specs(agency, dataset, registry)
        specs += dataset_specs
        checks += dataset_checks
        steps.append(DatasetStep(dataset, IngestKeys(*asset_keys(agency, dataset))))
    scores: dg.AssetKey | None = None
    if delivers_risk(agency) and any(s.dataset == RISK_DATASET for s in steps):
        scores_spec, scores_checks = scores_specs(agency)
        specs.append(scores_spec)
        checks += scores_checks
        scores = scores_spec.key

    @dg.multi_asset(
        name=name,
        specs=specs,
        check_specs=checks,
        can_subset=True,
        pool=agency_pool(agency),
        backfill_policy=SINGLE_RUN,
        config_schema=SCORING_CONFIG_SCHEMA if scores else None,
    )
    def _ingest(
        context: dg.AssetExecutionContext, warehouse: FluxWarehouse
    ) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output[None]]:
        # The steps' code (DuckDB, polars, monitors, scoring) loads when a step runs, not
        # with the definitions every process builds.
        from flux_pipelines.defs.ingest.step import check_outputs, run_ingest_step

        yield from run_ingest_step(context, warehouse, registry, agency, steps)
        if scores is not None and scores in context.selected_asset_keys:
            from flux_pipelines.defs.spending.risk_step import run_scoring

            yield from run_scoring(context, warehouse, agency)
        yield from check_outputs(context)

    return _ingest


def ingest_assets(registry: Registry) -> list[dg.AssetsDefinition]:
    """One ingest step per agency, whatever the domains of its datasets: an agency's data is
    one DuckDB file (one writer), and one definition per agency, not per dataset, keeps
    the code location's load proportional to the agencies alone."""
    return [
        build_ingest_asset(agency, list(agency.datasets), registry, ingest_step_name(agency))
        for agency in registry.agencies
    ]


def _referenced_first(datasets: list[str], registry: Registry) -> list[str]:
    """The datasets in an order where every dataset comes after those its rules read."""
    ordered: list[str] = []

    def visit(dataset: str) -> None:
        if dataset in ordered or dataset not in datasets:
            return
        for rule in registry.latest(dataset).cross_rules:
            for referenced in sorted(rule.datasets):
                if referenced != dataset:
                    visit(referenced)
        ordered.append(dataset)

    for dataset in sorted(datasets):
        visit(dataset)
    return ordered
