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

from flux_pipelines.errors import ConfigurationError
from flux_pipelines.home import confined
from flux_pipelines.slugs import check_slug, dagster_name

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
# the reserved sub-folder of a delivery day holding its content files (a BagIt bag or files
# with a Flux content manifest): landing/<agency>/<dataset>/<day>/<this>/; never a data file
CONTENT_FOLDER = "content"


@dataclass(frozen=True)
class DatasetTables:
    """The table names of one dataset in an agency file."""

    curated: str
    raw: str
    quarantine: str
    warnings: str
    eligibility: str  # one row per curated record and use case (collections/eligibility.py)

    @classmethod
    @functools.cache  # asked for every asset key of every agency when definitions load
    def for_dataset(cls, dataset: str) -> DatasetTables:
        base = dagster_name(dataset)
        return cls(
            curated=base,
            raw=f"raw_{base}",
            quarantine=f"{base}_quarantine",
            warnings=f"{base}_warnings",
            eligibility=f"{base}_eligibility",
        )

    @property
    def content(self) -> str:
        """One row per content file stored for the dataset (``flux_pipelines/content``)."""
        return f"{self.curated}_content"


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


# Cross-agency outputs besides one table per shared dataset (their run's mounts follow the
# name: access/run_pods.py), and the purge job with one op per agency.
SCORECARD = "quality_scorecard"
DELIVERY_STATUS = "delivery_status"
RECIPIENT_LINKS = "recipient_links"
AWARDS_DATASET = "award_obligations"  # the award file the recipient links join
PURGE_JOB = "flux_purge"


def purge_op_name(agency: Agency) -> str:
    """The agency's op (and step) in the purge job."""
    return f"purge_{agency.key}"


# --- use-case exports (flux_pipelines/exports) --------------------------------------------------
EXPORTS_FOLDER = "exports"  # published/cross_agency/exports/<use case>/: manifest, datasheet


def export_name(use_case: str) -> str:
    """``export_ai_training``: the export's asset name, and its catalog views' prefix."""
    return "export_" + use_case.replace("-", "_")


def export_key(use_case: str) -> dg.AssetKey:
    return cross_agency_key(export_name(use_case))


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
    return home / PUBLISHED_ZONE


def outbox_root(home: Path) -> Path:
    """Reports back to agencies: ``outbox/<agency>/<dataset>/<day>/`` and each agency's
    ``landing_findings.json``."""
    return home / "outbox"


def agency_published(home: Path, agency_id: str) -> Path:
    return confined(published_root(home), agency_id)


# Every agency's files live in ``<zone>/<agency>/`` folders, never beside another agency's,
# so a deployment can mount one agency's folders and nothing of the others' (a run pod of
# that agency's job: ``access/run_pods.py``).
LANDING_ZONE = "landing"  # what agencies drop (the pipeline only reads it)
WAREHOUSE_ZONE = "warehouse"  # the pipeline's working files: DuckDB file, raw Parquet, models
RECEIPTS_ZONE = "receipts"  # load receipts: which content of a delivery day was last loaded
PUBLISHED_ZONE = "published"
OUTBOX_ZONE = "outbox"
RUN_ERRORS_ZONE = "run_errors"  # a run's last words, for run monitoring (instance/launcher.py)
# (zone, written by a run of the agency's job), in the order a run pod mounts them
AGENCY_ZONES: tuple[tuple[str, bool], ...] = (
    (LANDING_ZONE, False),
    (WAREHOUSE_ZONE, True),
    (RECEIPTS_ZONE, True),
    (PUBLISHED_ZONE, True),
    (OUTBOX_ZONE, True),
)
DB_SUFFIX = ".duckdb"


def warehouse_root(home: Path) -> Path:
    return home / WAREHOUSE_ZONE


def agency_db(home: Path, agency_id: str) -> Path:
    """An agency's working DuckDB file, ``warehouse/<agency>/<agency>.duckdb``: inside the
    agency's own folder (mountable alone), named after the agency (DuckDB names the attached
    database after the file, so queries and views keep saying ``<agency>``)."""
    return confined(warehouse_root(home), agency_id, f"{agency_id}{DB_SUFFIX}")


def legacy_agency_db(home: Path, agency_id: str) -> Path:
    """Where the working file lay before per-agency folders: ``warehouse/<agency>.duckdb``
    (moved by ``FluxWarehouse.migrate_layout``)."""
    return confined(warehouse_root(home), f"{agency_id}{DB_SUFFIX}")


def agency_receipts(home: Path, agency_id: str) -> Path:
    """An agency's load receipts, ``receipts/<agency>/<dataset>/<day>.json``: apart from the
    working files, so the intake can read delivery status without any DuckDB file."""
    return confined(home / RECEIPTS_ZONE, agency_id)


def legacy_agency_receipts(home: Path, agency_id: str) -> Path:
    """Where load receipts lay before: ``warehouse/<agency>/receipts/``."""
    return confined(warehouse_root(home), agency_id, "receipts")


def agencies_with_db(home: Path) -> list[str]:
    """Agency ids with a working file in either layout, sorted (backup, tools)."""
    root = warehouse_root(home)
    if not root.is_dir():
        return []
    found = set()
    for entry in root.iterdir():
        name = entry.name.removesuffix(DB_SUFFIX)
        if entry.is_symlink() or not _is_slug(name):
            continue
        in_folder = entry.is_dir() and agency_db(home, name).is_file()
        if in_folder or (entry.is_file() and entry.name.endswith(DB_SUFFIX)):
            found.add(name)
    return sorted(found)


def _is_slug(name: str) -> bool:
    try:
        check_slug(name, "agency")
    except ConfigurationError:
        return False
    return True
