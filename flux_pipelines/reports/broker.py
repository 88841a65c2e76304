"""The agency's error and warning CSVs in the DATA Act Broker's column layout.

Federal submitters already read the Broker's per-row reports, so Flux writes the same nine
columns in the same order (``BROKER_COLUMNS``) and appends one of its own, ``File Name``,
last: a Flux delivery may hold several files and the Broker's layout has no place for the
file (a reader that keys on the first nine columns is unaffected).

The CSVs are written by DuckDB's ``COPY`` straight from the quarantine and warnings tables:
a delivery can have millions of violations, and COPY streams them to disk without building
rows in Python (1M rows in a couple of seconds). What the Python ``csv`` module would do per
cell is therefore done in SQL:

- **CSV injection** (OWASP): a cell starting with ``=``, ``+``, ``-``, ``@``, tab or
  carriage return is prefixed with a single quote, so a spreadsheet shows it as text
  instead of running it as a formula. Delivered values are hostile input; this also means
  a value such as ``-5`` reads ``'-5`` in the report.
- **Encoding**: UTF-8 with a byte-order mark, because Excel opens a BOM-less CSV in the
  machine's legacy code page and garbles every non-ASCII value; the BOM is written as the
  first character of the header (COPY has no BOM option). Python readers should use
  ``encoding="utf-8-sig"``. Quoting is minimal (RFC 4180 quotes only where needed), line
  ends are ``\\n``, which Excel and LibreOffice read as well as ``\\r\\n``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

from flux_pipelines.contracts.ddl import PARTITION, VIOLATION_COLUMNS, DatasetTables
from flux_pipelines.sql import literal, quote

BROKER_COLUMNS: tuple[str, ...] = (
    "Unique ID",
    "Field Name",
    "Rule Message",
    "Value Provided",
    "Expected Value",
    "Difference",
    "Flex Field",
    "Row Number",
    "Rule Label",
)
FILE_COLUMN = "File Name"
REPORT_COLUMNS: tuple[str, ...] = (*BROKER_COLUMNS, FILE_COLUMN)
BOM = "\ufeff"
# Leading characters a spreadsheet may treat as a formula (OWASP "CSV Injection").
FORMULA_TRIGGERS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
FLEX_PREFIX = "flex_"


def neutralised(column: str) -> str:
    """SQL for a text cell with a leading quote added when a spreadsheet would run it."""
    triggers = ", ".join(f"chr({ord(c)})" for c in FORMULA_TRIGGERS)
    return f"CASE WHEN left({column}, 1) IN ({triggers}) THEN '''' || {column} ELSE {column} END"


def flex_field_sql(original_row: str = "original_row") -> str:
    """The Broker's 'Flex Field': the delivery's ``flex_*`` columns echoed back.

    The loader keeps delivered columns the contract does not know in the ``_unmapped``
    object of ``original_row`` (in delivered order); those whose name starts with
    ``flex_`` (any case) come back as ``flex_a: 1, flex_b: 2``. Anything but an object
    there gives an empty cell rather than failing the report. No CASE around the list
    lambdas: DuckDB 2.0 evaluated them ~8x slower inside one (2.4 s vs 0.3 s per 1M rows).
    """
    unmapped = (
        f"CASE WHEN json_type({original_row}, '$._unmapped') = 'OBJECT' "
        f"THEN {original_row}->'_unmapped' END"
    )
    entries = f"map_entries(({unmapped})::MAP(VARCHAR, VARCHAR))"
    is_flex = f"lambda e: starts_with(lower(e.key), '{FLEX_PREFIX}')"
    as_text = "lambda e: e.key || ': ' || coalesce(e.value, '')"
    return (
        f"nullif(array_to_string(list_transform(list_filter({entries}, {is_flex}), {as_text}), "
        "', '), '')"
    )


def table_or_empty(conn: duckdb.DuckDBPyConnection, table: str) -> str:
    """The violations table (or view), or an empty relation of its shape when there is none.

    A report for a dataset that has never loaded is still a report: headers, zero lines.
    """
    try:  # a probe that reads nothing (~0.1 ms; the catalog views took ~1.6 ms)
        conn.execute(f"SELECT 1 FROM {quote(table)} LIMIT 0").fetchall()
        return quote(table)
    except duckdb.CatalogException:
        pass
    columns = ", ".join(
        f"NULL::{sql_type.replace(' NOT NULL', '')} AS {quote(name)}"
        for name, sql_type in VIOLATION_COLUMNS
    )
    return f"(SELECT {columns} WHERE false)"


def error_sources(conn: duckdb.DuckDBPyConnection, tables: DatasetTables) -> list[str]:
    """Fatal violations: the quarantine table's fatal lines (files rejected whole included)."""
    quarantine = table_or_empty(conn, tables.quarantine)
    return [f"(SELECT * FROM {quarantine} WHERE severity = 'fatal')"]


def warning_sources(conn: duckdb.DuckDBPyConnection, tables: DatasetTables) -> list[str]:
    """Warnings: the warnings table, plus the warning lines of rows that were quarantined.

    A quarantined row keeps every violation it has in the quarantine table, warnings
    included; the Broker lists each warning in its warning report whatever happened to the
    row, so those lines go here and not in the error report.
    """
    quarantine = table_or_empty(conn, tables.quarantine)
    return [
        table_or_empty(conn, tables.warnings),
        f"(SELECT * FROM {quarantine} WHERE severity <> 'fatal')",
    ]


def report_query(sources: list[str], day: dt.date) -> str:
    """One report line per violation of the day in ``sources``, in file, row, field order.

    Unique ID falls back to ``row <n> of <file>`` (no identifier value) or ``file <file>``
    (a file rejected whole: the loader writes one ``delivery.*`` line per such file, with
    the reason as its message and no row number).
    """
    unique_id = (
        "coalesce(unique_id, CASE WHEN _row_number IS NULL THEN 'file ' || _file "
        "ELSE 'row ' || _row_number || ' of ' || _file END)"
    )
    cells = {
        "Unique ID": neutralised("unique_id"),
        "Field Name": neutralised("field"),
        "Rule Message": neutralised("message"),
        "Value Provided": neutralised("value_provided"),
        "Expected Value": neutralised("expected"),
        "Difference": neutralised("difference"),
        "Flex Field": neutralised("flex"),
        "Row Number": "_row_number",
        "Rule Label": neutralised("rule_id"),
        FILE_COLUMN: neutralised("_file"),
    }
    header = {name: (BOM + name if i == 0 else name) for i, name in enumerate(REPORT_COLUMNS)}
    select = ",\n       ".join(f"{cells[name]} AS {quote(header[name])}" for name in REPORT_COLUMNS)
    day_filter = f"{PARTITION} = DATE {literal(day.isoformat())}"
    scans = "\n  UNION ALL\n  ".join(
        f"""SELECT _file, _row_number, field, message, value_provided, expected, difference,
         rule_id, {unique_id} AS unique_id, {flex_field_sql()} AS flex
  FROM {source} WHERE {day_filter}"""
        for source in sources
    )
    return f"""WITH v AS (
  {scans})
SELECT {select}
FROM v
ORDER BY _file, _row_number NULLS FIRST, field NULLS FIRST, rule_id"""


def write_report_csv(
    conn: duckdb.DuckDBPyConnection, sources: list[str], day: dt.date, path: Path
) -> int:
    """Write the day's violations in ``sources`` as a Broker CSV at ``path``; lines written."""
    written = conn.execute(
        f"COPY ({report_query(sources, day)}) TO {literal(path)} (FORMAT csv, HEADER true)"
    ).fetchall()
    return int(written[0][0]) if written else 0
