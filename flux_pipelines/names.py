"""Every name Flux gives things, built in one place: tables and lineage columns in an agency
file, asset keys, and the folders of the Flux home.

Agency ids become Dagster names with ``-`` read as ``_`` (``national-archives`` ->
``national_archives``); dataset ids likewise. Anything that names a table, an asset or a
published path asks this module, so a rename is one edit. (Dagster is imported only to
build asset keys: the contract engine and `flux validate` use the table names without it.)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flux_pipelines.contracts.slugs import dagster_name
from flux_pipelines.home import confined

if TYPE_CHECKING:
    import dagster as dg

    from flux_pipelines.contracts.registry import Agency

# --- lineage columns every stored row carries --------------------------------------------
PARTITION = "_partition_date"  # the delivery day
FILE = "_file"  # the delivered file the row came from
ROW = "_row_number"  # the row's number in that file (1 = first data row)

# --- tables in an agency's DuckDB file -----------------------------------------------------
DELIVERIES_TABLE = "_flux_deliveries"  # one row per delivered file
# what the landing sensors will not load, with reasons: <home>/<this> (operators) and
# outbox/<agency>/<this> (each agency its own)
LANDING_FINDINGS_FILE = "landing_findings.json"
# one row per file of a re-delivery rejected whole, kept beside the day it did not replace
REJECTED_ATTEMPTS_TABLE = "_flux_rejected_attempts"
# one row per curated column converted to the type a new contract version gives it
MIGRATIONS_TABLE = "_flux_migrations"


@dataclass(frozen=True)
class DatasetTables:
    """The table names of one dataset in an agency file."""

    curated: str
    raw: str
    quarantine: str
    warnings: str

    @classmethod
    @functools.cache  # asked for every asset key of every agency when definitions load
    def for_dataset(cls, dataset: str) -> DatasetTables:
        base = dagster_name(dataset)
        return cls(
            curated=base,
            raw=f"raw_{base}",
            quarantine=f"{base}_quarantine",
            warnings=f"{base}_warnings",
        )


# --- asset keys ----------------------------------------------------------------------------
# published/<agency>/_clear/<dataset>/<day>.parquet: the copy for the agency's personal-data
# group (the ``own_agency_personal`` treatments of ``access/masking.py``), written only when it
# differs from the analysts' copy. A leading "_" keeps it out of the analysts' catalog views.
ENTITLED_FOLDER = "_clear"
CROSS_AGENCY = "cross_agency"  # group and key prefix of the outputs built from every agency
RISK_DATASET = "contract_transactions"  # the dataset risk scoring reads
RISK_SCORES = f"{RISK_DATASET}_risk"
RISK_MODEL = f"{RISK_DATASET}_risk_model"
CATALOG = "published_catalog"


def asset_key(*parts: str) -> dg.AssetKey:
    from dagster import AssetKey

    return AssetKey(list(parts))


def ingest_keys(agency: Agency, dataset: str) -> tuple[dg.AssetKey, dg.AssetKey, dg.AssetKey]:
    """An agency's raw, curated and quarantine assets of a dataset (``nasa/meteorites``)."""
    tables = DatasetTables.for_dataset(dataset)
    return (
        asset_key(agency.key, tables.raw),
        asset_key(agency.key, tables.curated),
        asset_key(agency.key, tables.quarantine),
    )


def scores_key(agency: Agency) -> dg.AssetKey:
    return asset_key(agency.key, RISK_SCORES)


def model_key(agency: Agency) -> dg.AssetKey:
    return asset_key(agency.key, RISK_MODEL)


def catalog_key(agency: Agency) -> dg.AssetKey:
    return asset_key(agency.key, CATALOG)


def cross_agency_key(name: str) -> dg.AssetKey:
    return asset_key(CROSS_AGENCY, name)


# --- checks of every curated asset, and the run tags of a day range -------------------------
CONSERVATION = "conservation"
CONTRACT_SCHEMA = "contract_schema"
ANOMALIES = "anomalies"
CHECK_NAMES = (CONSERVATION, CONTRACT_SCHEMA, ANOMALIES)
RANGE_START_TAG = "dagster/asset_partition_range_start"  # a single-run backfill's first day
RANGE_END_TAG = "dagster/asset_partition_range_end"


# --- folders of the Flux home ----------------------------------------------------------------
def published_root(home: Path) -> Path:
    """Read-only copies for analysts: ``published/<agency>/...``, ``published/cross_agency``."""
    return home / "published"


def outbox_root(home: Path) -> Path:
    """Reports back to agencies: ``outbox/<agency>/<dataset>/<day>/`` and each agency's
    ``landing_findings.json``."""
    return home / "outbox"


def agency_published(home: Path, agency_id: str) -> Path:
    return confined(published_root(home), agency_id)
