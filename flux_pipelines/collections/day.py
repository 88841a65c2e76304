"""A collection's delivery day after its records load: its content package stored
(``content/load.py``) and its records' eligibility decided (``eligibility.py``), inside the
load's own transaction so the day's rows, files and decisions commit together.

The ingest step calls ``prepare_day`` for every dataset whose contract maps rights and
content (``Contract.content``); ``published_tables`` names what is then published beside
the curated copy, for analysts and for the use-case exports.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flux_pipelines.collections.eligibility import EligibilityResult, write_eligibility
from flux_pipelines.collections.use_cases import UseCases, load_use_cases
from flux_pipelines.contracts.model import Contract
from flux_pipelines.names import CONTENT_FOLDER, DatasetTables

if TYPE_CHECKING:
    import duckdb

    from flux_pipelines.content.load import ContentResult


@dataclass(frozen=True)
class CollectionsDay:
    """What one day of a collection added beside its records."""

    content: ContentResult | None  # None: the day delivered no content folder
    eligibility: EligibilityResult

    def summary(self) -> str:
        """One line for the asset's metadata: eligible records per use case, content files."""
        e = self.eligibility
        parts = [f"{u.use_case} {u.eligible:,}/{u.records:,}" for u in e.use_cases]
        text = "eligible records: " + (", ".join(parts) or "none decided")
        if self.content is not None:
            c = self.content
            text += (
                f"; content files: {c.files_in:,} in, {c.files_stored:,} stored, "
                f"{c.files_quarantined:,} quarantined"
            )
        return text


def prepare_day(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    *,
    agency: str,
    day: dt.date,
    landing: Path,
    run_id: str,
    use_cases: UseCases | None = None,
) -> CollectionsDay:
    """Store the day's content package (when ``landing`` holds one) and decide its records'
    eligibility, in the caller's open transaction. ``contract`` is the version as stored."""
    from flux_pipelines.content.load import clear_content_day, load_content

    content = None
    folder = landing / CONTENT_FOLDER
    if folder.is_dir() or folder.is_symlink():  # a link is refused by the package reader
        content = load_content(
            conn, contract, agency=agency, day=day, folder=folder, run_id=run_id,
            own_transaction=False,
        )  # fmt: skip
    else:  # a re-delivery without content leaves none of an earlier delivery's files
        clear_content_day(conn, contract, day)
    decided = write_eligibility(
        conn, contract, day, use_cases or load_use_cases(), own_transaction=False
    )
    return CollectionsDay(content=content, eligibility=decided)


def published_tables(contract: Contract) -> list[str]:
    """The per-day tables published beside the curated copy (a day without rows in one
    has no copy of it)."""
    tables = DatasetTables.for_dataset(contract.dataset)
    return [tables.eligibility, tables.content]
