"""The ``<dataset>_eligibility`` table: one row per curated record and use case, per day.

``write_eligibility`` is the one entry point (an asset calls it after a day's load): it
reads the day's curated records of a dataset whose contract maps rights and content
(``Contract.content``), decides each record's eligibility for every use case of
``contracts/use_cases.yaml`` and replaces the day's rows in one transaction (delete, then
insert: re-running gives the same rows).

The work is vectorised: DuckDB lists the day's distinct (rights statement, metadata licence,
content type) combinations, usually a few hundred for thousands of records; each is
classified and decided once in Python (``rights.classify``, ``use_cases.record_eligibility``,
the same functions a single record goes through), and DuckDB joins the decisions back to the
records. Statements Flux could not classify are returned as warnings carrying the value
(``unclassified_statements`` lists them again for any day).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from flux_pipelines.collections.use_cases import (
    RecordFacts,
    UseCases,
    reason_causes,
    record_eligibility,
)
from flux_pipelines.contracts.ddl import create_table_sql, record_key_sql
from flux_pipelines.contracts.model import ContentMapping, Contract
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.names import FILE, PARTITION, ROW, DatasetTables
from flux_pipelines.sql import quote

ELIGIBILITY_COLUMNS: tuple[tuple[str, str], ...] = (
    (PARTITION, "DATE NOT NULL"),
    ("record_key", "VARCHAR NOT NULL"),  # the contract's identifier, else <file>#<row>
    (FILE, "VARCHAR NOT NULL"),
    (ROW, "BIGINT"),
    ("_file_sha256", "VARCHAR NOT NULL"),  # provenance: the delivered file's hash
    ("rights_statement", "VARCHAR"),  # the content rights statement as delivered
    ("rights_class", "VARCHAR NOT NULL"),
    ("rights_reason", "VARCHAR NOT NULL"),  # why the statement got its class
    ("metadata_licence", "VARCHAR"),
    ("metadata_licence_class", "VARCHAR NOT NULL"),
    ("metadata_licence_reason", "VARCHAR NOT NULL"),
    ("content_type", "VARCHAR"),  # a Flux content type, or NULL when none is stated
    ("object_kind", "VARCHAR"),  # the content type column's value as delivered
    ("content_files", "VARCHAR[]"),  # the record's links to its content files
    ("use_case", "VARCHAR NOT NULL"),
    ("eligible", "BOOLEAN NOT NULL"),
    ("reason", "VARCHAR NOT NULL"),  # sentences, joined by "; "
    ("use_cases_version", "VARCHAR NOT NULL"),
    ("_contract_version", "VARCHAR NOT NULL"),
)
_DECISIONS = "_flux_eligibility_decisions"  # the decisions frame, registered while inserting
# Decision columns joined back to the records (their join keys are k_rights, k_meta, k_kind).
_DECIDED = (
    "rights_statement", "rights_class", "rights_reason", "metadata_licence",
    "metadata_licence_class", "metadata_licence_reason", "content_type", "object_kind",
    "use_case", "eligible", "reason",
)  # fmt: skip
TOP_REASONS = 5


@dataclass(frozen=True)
class UnclassifiedStatement:
    """A rights statement or licence Flux could not classify: a warning carrying the value."""

    dataset: str
    day: dt.date
    field: str  # the contract column (or customProperty metadataLicence) it came from
    value: str
    records: int
    reason: str

    @property
    def message(self) -> str:
        return (
            f"{self.dataset} {self.day}: {self.field} {self.value!r} ({self.records} "
            f"record(s)) could not be classified: {self.reason}. Those records are eligible "
            "for no use case: correct the statement in the delivery, or add a rule for it to "
            "flux_pipelines/collections/rights.py"
        )


@dataclass(frozen=True)
class UseCaseSummary:
    """One use case on one day: records judged, eligible, and the commonest reasons not."""

    use_case: str
    records: int
    eligible: int
    top_reasons: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class EligibilityResult:
    """What ``write_eligibility`` wrote for a day."""

    dataset: str
    day: dt.date
    use_cases_version: str
    records: int
    use_cases: tuple[UseCaseSummary, ...]
    warnings: tuple[UnclassifiedStatement, ...] = ()

    def eligible(self, use_case: str) -> int:
        return next((u.eligible for u in self.use_cases if u.use_case == use_case), 0)


def write_eligibility(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    day: dt.date,
    use_cases: UseCases,
    *,
    own_transaction: bool = True,
) -> EligibilityResult:
    """Decide every curated record of ``day`` for every use case and replace the day's rows
    of ``<dataset>_eligibility``.

    ``contract`` is the version as its rows are stored (``Registry.storage_contract``), so
    its column names are the curated table's. Pass ``own_transaction=False`` when the caller
    already holds a transaction on ``conn`` (the delete and insert then commit with it).
    A contract mapping no rights or content, or naming columns the curated table lacks, is a
    ``ConfigurationError``; a day with no curated records writes no rows."""
    mapping = _mapping(contract)
    tables = DatasetTables.for_dataset(contract.dataset)
    conn.execute(create_table_sql(tables.eligibility, list(ELIGIBILITY_COLUMNS)))
    present = _columns_of(conn, tables.curated)
    if present:
        _check_columns(contract, mapping, present)
    keys = _join_keys(mapping)
    combinations = _combinations(conn, tables.curated, keys, day) if present else []
    decisions = _decisions(combinations, keys, mapping, use_cases)
    conn.register(_DECISIONS, decisions)
    try:
        if own_transaction:
            conn.begin()
        try:
            conn.execute(f"DELETE FROM {quote(tables.eligibility)} WHERE {PARTITION} = ?", [day])
            if decisions.height:
                _insert(conn, contract, tables, keys, day, use_cases.version)
            if own_transaction:
                conn.commit()
        except BaseException:
            if own_transaction:
                conn.rollback()
            raise
    finally:
        conn.unregister(_DECISIONS)
    return summarise(conn, contract.dataset, day, use_cases.version, contract)


def _mapping(contract: Contract) -> ContentMapping:
    if contract.content is None:
        raise ConfigurationError(
            f"contract {contract.version_tag} ({contract.source_path}) maps no rights or "
            "content: declare customProperties rightsColumn and metadataLicence (see "
            "contracts/README.md, 'Rights and content') before computing eligibility"
        )
    return contract.content


def _columns_of(conn: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
        "AND schema_name = current_schema() AND database_name = current_database()",
        [table],
    ).fetchall()
    return {name for (name,) in rows}


def _check_columns(contract: Contract, mapping: ContentMapping, present: set[str]) -> None:
    wanted = [*mapping.columns, *contract.identifier, PARTITION, FILE, ROW, "_file_sha256"]
    missing = sorted(set(wanted) - present)
    if missing:
        raise ConfigurationError(
            f"{contract.version_tag}: the curated table {contract.dataset} has no column(s) "
            f"{', '.join(missing)}; pass the contract as its rows are stored "
            "(Registry.storage_contract), whose names are the table's"
        )


# --- the join keys: the columns a decision depends on ------------------------------------------
@dataclass(frozen=True)
class _Key:
    alias: str  # k_rights, k_meta, k_kind
    column: str


def _join_keys(mapping: ContentMapping) -> tuple[_Key, ...]:
    named = (
        ("k_rights", mapping.rights_column),
        ("k_meta", mapping.metadata_licence_column),
        ("k_kind", mapping.content_type_column),
    )
    return tuple(_Key(alias, column) for alias, column in named if column)


def _text(column: str, prefix: str = "") -> str:
    return f"CAST({prefix}{quote(column)} AS VARCHAR)"


def _combinations(
    conn: duckdb.DuckDBPyConnection, table: str, keys: Sequence[_Key], day: dt.date
) -> list[dict[str, str | None]]:
    """The day's distinct key values, one dict per combination (one empty dict when the
    decision depends on no column)."""
    if not keys:
        present = conn.execute(
            f"SELECT count(*) FROM {quote(table)} WHERE {PARTITION} = ?", [day]
        ).fetchone()
        return [{}] if present and present[0] else []
    select = ", ".join(f"{_text(k.column)} AS {k.alias}" for k in keys)
    rows = conn.execute(
        f"SELECT DISTINCT {select} FROM {quote(table)} WHERE {PARTITION} = ?", [day]
    ).fetchall()
    return [dict(zip([k.alias for k in keys], row, strict=True)) for row in rows]


def _decisions(
    combinations: list[dict[str, str | None]],
    keys: Sequence[_Key],
    mapping: ContentMapping,
    use_cases: UseCases,
) -> pl.DataFrame:
    """One row per combination and use case: the join keys and the decided columns."""
    rows = []
    for combo in combinations:
        facts = RecordFacts.of({k.column: combo[k.alias] for k in keys}, mapping)
        for use_case in use_cases.use_cases:
            decision = record_eligibility(use_case, facts)
            rows.append(
                {
                    **{k.alias: combo[k.alias] for k in keys},
                    "rights_statement": facts.content_rights.original,
                    "rights_class": facts.content_rights.rights_class,
                    "rights_reason": facts.content_rights.reason,
                    "metadata_licence": facts.metadata_licence.original,
                    "metadata_licence_class": facts.metadata_licence.rights_class,
                    "metadata_licence_reason": facts.metadata_licence.reason,
                    "content_type": facts.content_type,
                    "object_kind": facts.object_kind,
                    "use_case": use_case.id,
                    "eligible": decision.eligible,
                    "reason": decision.sentence,
                }
            )
    schema: dict[str, type[pl.DataType]] = {k.alias: pl.String for k in keys}
    schema |= {name: pl.Boolean if name == "eligible" else pl.String for name in _DECIDED}
    return pl.DataFrame(rows, schema=schema)


def _insert(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    tables: DatasetTables,
    keys: Sequence[_Key],
    day: dt.date,
    version: str,
) -> None:
    """Insert the day's records joined to the registered decisions (``_DECISIONS``)."""
    mapping = _mapping(contract)
    on = " AND ".join(f"{_text(k.column, 'c.')} IS NOT DISTINCT FROM d.{k.alias}" for k in keys)
    files = ", ".join(_text(c, "c.") for c in mapping.content_file_columns)
    columns = [name for name, _ in ELIGIBILITY_COLUMNS]
    select = {
        PARTITION: f"c.{PARTITION}",
        "record_key": _record_key(contract),
        FILE: f"c.{FILE}",
        ROW: f"c.{ROW}",
        "_file_sha256": "c._file_sha256",
        **{name: f"d.{name}" for name in _DECIDED},
        "content_files": f"list_filter([{files}], lambda f: f IS NOT NULL)" if files else "[]",
        "use_cases_version": "?",
        "_contract_version": "c._contract_version",
    }
    conn.execute(
        f"INSERT INTO {quote(tables.eligibility)} ({', '.join(map(quote, columns))}) "
        f"SELECT {', '.join(select[name] for name in columns)} "
        f"FROM {quote(tables.curated)} c JOIN {_DECISIONS} d ON {on or 'TRUE'} "
        f"WHERE c.{PARTITION} = ? ORDER BY c.{FILE}, c.{ROW}, d.use_case",
        [version, day],
    )


def _record_key(contract: Contract) -> str:
    return record_key_sql(contract, "c.")


# --- reading it back ------------------------------------------------------------------------------
def day_summary(
    conn: duckdb.DuckDBPyConnection, contract: Contract, day: dt.date
) -> EligibilityResult | None:
    """The day's eligibility as an agency report shows it; None when the dataset maps no
    rights or content, or nothing was decided for the day."""
    table = DatasetTables.for_dataset(contract.dataset).eligibility
    if contract.content is None or not _columns_of(conn, table):
        return None
    ((version,),) = conn.execute(
        f"SELECT any_value(use_cases_version) FROM {quote(table)} WHERE {PARTITION} = ?", [day]
    ).fetchall()
    return None if version is None else summarise(conn, contract.dataset, day, version, contract)


def _top_causes(rows: Sequence[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """(use case, cause, records) of the ``TOP_REASONS`` commonest causes per use case: a
    reason's quoted statements set aside (``reason_causes``), so "content rights
    in_copyright" counts every artist's © line once."""
    counted: dict[str, Counter[str]] = {}
    for use_case, reason, n in rows:
        for cause in reason_causes(reason):
            counted.setdefault(use_case, Counter())[cause] += int(n)
    return [
        (use_case, cause, n)
        for use_case in sorted(counted)
        for cause, n in sorted(counted[use_case].items(), key=lambda kv: (-kv[1], kv[0]))[
            :TOP_REASONS
        ]
    ]


def summarise(
    conn: duckdb.DuckDBPyConnection,
    dataset: str,
    day: dt.date,
    version: str,
    contract: Contract | None = None,
) -> EligibilityResult:
    """A day's eligibility as written: records, eligible per use case and the commonest
    reasons not, and the unclassified statements (named by ``contract``'s columns)."""
    table = quote(DatasetTables.for_dataset(dataset).eligibility)
    counts = conn.execute(
        f"SELECT use_case, count(*), count(*) FILTER (eligible) FROM {table} "
        f"WHERE {PARTITION} = ? GROUP BY use_case ORDER BY use_case",
        [day],
    ).fetchall()
    reasons = _top_causes(
        conn.execute(
            f"SELECT use_case, reason, count(*) FROM {table} "
            f"WHERE {PARTITION} = ? AND NOT eligible GROUP BY use_case, reason",
            [day],
        ).fetchall()
    )
    records = conn.execute(
        f"SELECT count(DISTINCT record_key) FROM {table} WHERE {PARTITION} = ?", [day]
    ).fetchone()
    return EligibilityResult(
        dataset=dataset,
        day=day,
        use_cases_version=version,
        records=int(records[0]) if records else 0,
        use_cases=tuple(
            UseCaseSummary(
                use_case=use_case,
                records=int(total),
                eligible=int(eligible),
                top_reasons=tuple((r, int(n)) for u, r, n in reasons if u == use_case),
            )
            for use_case, total, eligible in counts
        ),
        warnings=tuple(unclassified_statements(conn, dataset, day, contract)),
    )


def unclassified_statements(
    conn: duckdb.DuckDBPyConnection, dataset: str, day: dt.date, contract: Contract | None = None
) -> list[UnclassifiedStatement]:
    """The statements of a day Flux could not classify, with how many records carry each.

    ``field`` names where each came from: the contract's rights column and metadata licence
    column (or customProperty ``metadataLicence``) when ``contract`` is given, else
    ``content rights`` / ``metadata licence``."""
    table = DatasetTables.for_dataset(dataset).eligibility
    if not _columns_of(conn, table):
        return []
    mapping = contract.content if contract is not None else None
    rights_field = (mapping.rights_column if mapping else None) or "content rights"
    meta_field = (
        (mapping.metadata_licence_column or "metadataLicence") if mapping else "metadata licence"
    )
    rows = conn.execute(
        f"SELECT 'rights', rights_statement, rights_reason, count(DISTINCT record_key) "
        f"FROM {quote(table)} WHERE {PARTITION} = ? AND rights_class = 'unclassified' "
        "GROUP BY ALL UNION ALL "
        f"SELECT 'meta', metadata_licence, metadata_licence_reason, count(DISTINCT record_key) "
        f"FROM {quote(table)} WHERE {PARTITION} = ? AND metadata_licence_class = 'unclassified' "
        "GROUP BY ALL ORDER BY 1 DESC, 4 DESC, 2",
        [day, day],
    ).fetchall()
    return [
        UnclassifiedStatement(
            dataset=dataset,
            day=day,
            field=rights_field if source == "rights" else meta_field,
            value=str(value),
            records=int(records),
            reason=str(reason),
        )
        for source, value, reason, records in rows
    ]
