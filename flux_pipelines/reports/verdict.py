"""The loader's own verdict on one file, in a throw-away in-memory database.

Same code path as a real load (same contract version for the day, same rules, same
uniqueness pass), so what an agency sees (``flux validate``, the intake's pre-validation)
is what Flux will do with the delivery.

Exit codes (``Verdict.exit_code``; ``flux validate`` adds ``INTERNAL_ERROR``): 0 every row
loads, 1 some rows would be quarantined, 2 the file is rejected whole (or the command was
given an unknown agency, dataset or day), 3 Flux itself failed: no verdict on the file.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from flux_pipelines.contracts.ddl import DatasetTables
from flux_pipelines.contracts.model import SizeLimits
from flux_pipelines.contracts.registry import check_ids, load_registry
from flux_pipelines.ingest.delivery import PartitionLoader, PartitionResult, load_partition
from flux_pipelines.sql import quote

VIOLATION_COLUMNS = [
    "_file", "_row_number", "unique_id", "rule_id", "field", "value_provided", "expected",
    "severity", "message",
]  # fmt: skip


CLEAN, QUARANTINED, REJECTED, INTERNAL_ERROR = 0, 1, 2, 3


@dataclass(frozen=True)
class Verdict:
    result: PartitionResult
    violations: pl.DataFrame

    @property
    def exit_code(self) -> int:
        if self.result.errors:
            return REJECTED
        return QUARANTINED if self.result.rows_quarantined else CLEAN


def validate_file(
    path: Path,
    *,
    dataset: str,
    day: dt.date,
    agency: str | None,
    limits: SizeLimits | None = None,
) -> Verdict:
    """The verdict as ``agency`` would get it (its severity overrides applied; None: the
    contract's own severities). ConfigurationError for an unknown agency or dataset, or
    an agency that does not deliver the dataset: never a silently different verdict.

    ``limits`` bound records and fields as a load would (None: ``SizeLimits.resolve``, the
    ``FLUX_MAX_LINE_BYTES`` / ``FLUX_MAX_FIELD_BYTES`` environment, else the defaults), so a
    file too large for the pipeline gets the same ``delivery.*`` rejection here."""
    limits = limits if limits is not None else SizeLimits.resolve()  # a bad setting: exit 2
    # Cross-dataset rules need the agency's other tables; they run at load, not here.
    registry = load_registry()
    known = check_ids(registry, agency, dataset)
    contract = registry.contract_for(dataset, day, known).model_copy(update={"cross_rules": ()})
    tables = DatasetTables.for_dataset(dataset)
    with tempfile.TemporaryDirectory(prefix="flux-validate-") as scratch:
        conn = duckdb.connect(":memory:")
        try:
            loader = PartitionLoader(
                conn,
                agency=agency or "agency",
                contract=contract,
                day=day,
                run_id="flux-validate",
                raw_root=Path(scratch) / "raw",
                limits=limits,
            )
            result = load_partition(loader, [path])
            cols = ", ".join(VIOLATION_COLUMNS)
            violations = conn.sql(
                f"SELECT {cols} FROM {quote(tables.quarantine)} UNION ALL "
                f"SELECT {cols} FROM {quote(tables.warnings)} ORDER BY _row_number, rule_id"
            ).pl()
        finally:
            conn.close()
    return Verdict(result=result, violations=violations)
