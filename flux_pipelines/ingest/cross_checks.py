"""Apply a contract's cross-dataset rules to a partition, inside the load's transaction.

A fatal violation moves the curated row to quarantine (with the row's warnings, so the
warnings table keeps only rows that loaded); a warning records it beside the loaded row.
Both carry the rule's two sides: the value provided and what the other dataset holds.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from flux_pipelines.contracts.cross_rules import explain, render
from flux_pipelines.contracts.ddl import PARTITION, DatasetTables
from flux_pipelines.contracts.model import Contract, CrossRule
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.resources.warehouse import ensure_tables
from flux_pipelines.sql import literal, quote

if TYPE_CHECKING:
    import duckdb

VIOLATIONS = "_flux_cross_violations"


def apply_cross_rules(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    day: dt.date,
    *,
    run_id: str,
    loaded_at: dt.datetime,
    references: Mapping[str, Contract],
) -> Counter[str]:
    """Run every cross-dataset rule on the partition; returns violations per rule id."""
    counts: Counter[str] = Counter()
    for rule in contract.cross_rules:
        for dataset in rule.datasets:
            if dataset not in references:
                raise ConfigurationError(
                    f"rule {rule.id} of {contract.dataset} reads {dataset}, but the loader was "
                    "not given its contract"
                )
            ensure_tables(conn, references[dataset])
        explain(rule, contract, references)
        day_sql = literal(day.isoformat())
        query = render(rule, contract, day_sql)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {VIOLATIONS} AS {query}").fetchall()
        ((found,),) = conn.execute(f"SELECT count(*) FROM {VIOLATIONS}").fetchall()
        if found:
            _record(conn, contract, rule, day_sql, run_id, loaded_at)
            counts[rule.id] = int(found)
    conn.execute(f"DROP TABLE IF EXISTS {VIOLATIONS}")
    return counts


def _record(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    rule: CrossRule,
    day_sql: str,
    run_id: str,
    loaded_at: dt.datetime,
) -> None:
    t = DatasetTables.for_dataset(contract.dataset)
    target = t.quarantine if rule.severity == "fatal" else t.warnings
    this_row = (
        f"c.{PARTITION} = DATE {day_sql} AND c._file = v._file AND c._row_number = v._row_number"
    )
    conn.execute(
        f"""INSERT INTO {quote(target)} BY NAME
        SELECT DATE {day_sql} AS {PARTITION}, v._file, v._row_number,
               {literal(rule.id)} AS rule_id, v.field, v.value_provided, v.expected,
               v.difference, {literal(rule.severity)} AS severity,
               {literal(rule.category)} AS category, {literal(rule.message)} AS message,
               {_unique_id(contract)} AS unique_id, {_original_row(contract)} AS original_row,
               c._file_sha256, {literal(contract.id)} AS _contract_id,
               {literal(contract.version)} AS _contract_version, ? AS _run_id,
               ?::TIMESTAMP AS _loaded_at
        FROM {VIOLATIONS} v JOIN {quote(t.curated)} c ON {this_row}""",
        [run_id, loaded_at],
    ).fetchall()
    if rule.severity != "fatal":
        return
    flagged = (
        f"{PARTITION} = DATE {day_sql} AND (_file, _row_number) IN "
        f"(SELECT _file, _row_number FROM {VIOLATIONS})"
    )
    conn.execute(
        f"INSERT INTO {quote(t.quarantine)} BY NAME SELECT * FROM {quote(t.warnings)} "
        f"WHERE {flagged}"
    ).fetchall()
    for table in (t.warnings, t.curated):
        conn.execute(f"DELETE FROM {quote(table)} WHERE {flagged}").fetchall()


def _unique_id(contract: Contract) -> str:
    """The same 'Unique ID' the row validator gives (identifier columns, or the row)."""
    if not contract.identifier:
        return "'row=' || c._row_number::VARCHAR"
    return " || ', ' || ".join(
        f"{literal(col + '=')} || coalesce(c.{quote(col)}::VARCHAR, '')"
        for col in contract.identifier
    )


def _original_row(contract: Contract) -> str:
    pairs = ", ".join(f"{literal(c)}, c.{quote(c)}" for c in contract.column_names)
    return f"json_object({pairs})"
