"""``<column>.type``: a non-string value must be of its column's type (validator.py says
which spellings are which type; a number format declared on the column is applied first)."""

import polars as pl

from flux_pipelines.contracts.logical_types import type_row
from flux_pipelines.contracts.model import ColumnSpec, LogicalType
from flux_pipelines.contracts.rule_kinds.base import Defect, RuleKindSpec

# Placeholders and other formats agencies send instead of a value of the type.
_CONSTANTS: dict[LogicalType, list[Defect]] = {
    "integer": ["n/a", "12abc", "unknown"],
    "number": ["n/a", "12abc", "unknown"],
    "boolean": ["maybe", "2", "unknown"],
    "date": ["n/a", "2023-02-30", "someday"],
    "timestamp": ["n/a", "2023-02-30T25:61:00", "soon"],
    "string": [],
}


def _defects(column: ColumnSpec, valid: pl.Expr) -> list[Defect]:
    """Typos of the row's own value; constants too unless the column is a key (two rows
    with one placeholder would also repeat the key)."""
    derived: dict[LogicalType, list[Defect]] = {
        "integer": [valid + "abc", valid + ".5", "#" + valid],
        "number": [valid + "abc", "~" + valid, valid.str.replace(".", ",", literal=True) + "x"],
        "boolean": [],
        "date": [valid + "x", "d" + valid],
        "timestamp": [valid + "x", "t" + valid],
        "string": [],
    }
    options = derived[column.logical_type]
    key = column.unique or column.primary_key
    return options if key and options else options + _CONSTANTS[column.logical_type]


def _words(column: ColumnSpec) -> tuple[str, str]:
    word = type_row(column.logical_type).words
    fmt = f" ({column.date_format})" if column.date_format else ""
    if column.number_format is not None:
        fmt = f" ({column.number_format.describe()})"
    return f"{column.name} must be {word}{fmt}", f"{word}{fmt}"


KIND = RuleKindSpec(
    kind="type",
    category="accuracy",
    declared=lambda column: column.logical_type != "string",
    words=_words,
    violation=lambda cell: cell.text.is_not_null() & cell.value.is_null(),
    defects=_defects,
)
