"""The logical types a contract column can have, and what each one is everywhere.

One row per type holds every mapping Flux makes from it: how the contract spells it (ODCS
v3.0.2), the DuckDB column type of the curated table, the polars dtype the validator casts
to (also the pandera dtype of the curated-table check), the agency-facing JSON Schema of a
delivered value, the words an agency reads in a type violation, and which type changes a
stored value survives. Adding a type is adding a row here (and its parsing in the validator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import polars as pl

from flux_pipelines.contracts.model import LogicalType

# A delivered numeral's text, as the JSON Schema accepts it (the validator decides exactly).
_NUMERIC_TEXT = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_INTEGER_TEXT = r"^\s*[-+]?\d+(\.0*)?\s*$"


@dataclass(frozen=True)
class TypeRow:
    """Everything one logical type maps to."""

    name: LogicalType
    odcs: str  # the ODCS v3.0.2 logicalType
    odcs_physical: str | None  # the physicalType that refines ``odcs`` into this type
    duckdb: str  # the curated table's column type
    polars: pl.DataType  # the validator's typed value and pandera's dtype
    json_type: str | None  # the JSON type of a typed value (None: text only)
    json_text: dict[str, str]  # the JSON Schema of the value as text (pattern, format)
    words: str  # what a value must be, in the agency's words
    numeric: bool
    widens_to: frozenset[LogicalType]  # types every stored value survives a change to

    def json_schema(self) -> dict[str, Any]:
        """A delivered value's JSON Schema: values arrive as text (CSV), so a typed value
        is also accepted as its text."""
        text: dict[str, Any] = {"type": "string", **self.json_text}
        if self.json_type is None:
            return text
        return {"anyOf": [{"type": self.json_type}, text]}


_TEXT: frozenset[LogicalType] = frozenset({"string"})

ROWS: tuple[TypeRow, ...] = (
    TypeRow("string", "string", None, "VARCHAR", pl.String(), None, {}, "text", False, frozenset()),
    TypeRow(
        "integer",
        "integer",
        None,
        "BIGINT",
        pl.Int64(),
        "integer",
        {"pattern": _INTEGER_TEXT},
        "a whole number",
        True,
        _TEXT | {"number"},
    ),
    TypeRow(
        "number",
        "number",
        None,
        "DOUBLE",
        pl.Float64(),
        "number",
        {"pattern": _NUMERIC_TEXT},
        "a number",
        True,
        _TEXT,
    ),
    TypeRow(
        "boolean",
        "boolean",
        None,
        "BOOLEAN",
        pl.Boolean(),
        "boolean",
        {},
        "true or false",
        False,
        _TEXT,
    ),
    TypeRow(
        "date",
        "date",
        None,
        "DATE",
        pl.Date(),
        None,
        {"format": "date"},
        "a date",
        False,
        _TEXT | {"timestamp"},
    ),
    # ODCS v3.0.2 has no timestamp logicalType: a date and time is date + physicalType.
    TypeRow(
        "timestamp",
        "date",
        "timestamp",
        "TIMESTAMP",
        pl.Datetime("us"),
        None,
        {"format": "date-time"},
        "a date and time",
        False,
        _TEXT,
    ),
)
LOGICAL_TYPES: dict[LogicalType, TypeRow] = {row.name: row for row in ROWS}
assert set(LOGICAL_TYPES) == set(get_args(LogicalType)), "one row per logical type"


def type_row(name: LogicalType) -> TypeRow:
    """The row of a logical type."""
    return LOGICAL_TYPES[name]


def from_odcs(logical: str, physical: str | None) -> LogicalType | None:
    """The Flux type an ODCS logicalType (and physicalType) spells; None: not one Flux reads."""
    spelled, refined = logical.strip().lower(), (physical or "").strip().lower()
    plain = [r for r in ROWS if r.odcs == spelled and r.odcs_physical is None]
    if not plain:
        return None
    exact = [r for r in ROWS if r.odcs == spelled and r.odcs_physical == refined]
    return (exact or plain)[0].name


def odcs_spellings() -> list[str]:
    """The ODCS logicalTypes Flux reads, sorted."""
    return sorted({r.odcs for r in ROWS})
