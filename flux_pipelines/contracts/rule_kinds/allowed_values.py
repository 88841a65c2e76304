"""``<column>.allowed_values``: the value is one of the contract's ``enum`` (optionally
ignoring case)."""

from typing import Any

import polars as pl

from flux_pipelines.contracts.model import ColumnSpec
from flux_pipelines.contracts.rule_kinds.base import Cell, Defect, RuleKindSpec


def _words(column: ColumnSpec) -> tuple[str, str]:
    listed = ", ".join(v.value for v in column.allowed_values)
    message = f"{column.name} is not one of the {len(column.allowed_values)} allowed values"
    return message, f"one of: {listed}"


def _violation(cell: Cell) -> pl.Expr:
    allowed = [v.value for v in cell.column.allowed_values]
    probe = cell.value.cast(pl.String)
    if cell.column.case_insensitive_values:
        allowed = [a.lower() for a in allowed]
        probe = probe.str.to_lowercase()
    return (~probe.is_in(allowed)).fill_null(False)


def _pandera(column: ColumnSpec) -> list[Any]:
    import pandera.polars as pa

    if column.case_insensitive_values:  # pandera's isin compares exactly
        return []
    return [pa.Check.isin([v.value for v in column.allowed_values])]


def _json_schema(column: ColumnSpec, typed: dict[str, Any]) -> None:
    if column.logical_type == "string" and not column.case_insensitive_values:
        typed["enum"] = [v.value for v in column.allowed_values]


def _defects(column: ColumnSpec, valid: pl.Expr) -> list[Defect]:
    """A stray character, a placeholder, and (when case counts) the value in other case."""
    options: list[Defect] = [valid + "?", "Unknown", "other", "999"]
    if not column.case_insensitive_values:
        options = [valid.str.to_uppercase(), valid.str.to_lowercase(), *options]
    return options


KIND = RuleKindSpec(
    kind="allowed_values",
    category="accuracy",
    declared=lambda column: bool(column.allowed_values),
    words=_words,
    violation=_violation,
    pandera_checks=_pandera,
    json_schema=_json_schema,
    defects=_defects,
)
