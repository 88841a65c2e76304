"""``<column>.minimum`` and ``<column>.maximum``: a number, integer or date within the
contract's bound (inclusive unless the bound is declared exclusive)."""

import math
from typing import Any

import polars as pl

from flux_pipelines.contracts.model import ColumnSpec
from flux_pipelines.contracts.rule_kinds.base import Cell, Defect, RuleKindSpec


def _op(column: ColumnSpec, *, lower: bool) -> str:
    if lower:
        return ">" if column.exclusive_minimum else ">="
    return "<" if column.exclusive_maximum else "<="


def _bound(column: ColumnSpec, *, lower: bool) -> float:
    bound = column.minimum if lower else column.maximum
    assert bound is not None  # declared() holds
    return bound


def _words(column: ColumnSpec, *, lower: bool) -> tuple[str, str]:
    op, bound = _op(column, lower=lower), _bound(column, lower=lower)
    return f"{column.name} must be {op} {bound:g}", f"{op} {bound:g}"


def _violation(cell: Cell, *, lower: bool) -> pl.Expr:
    bound = _bound(cell.column, lower=lower)
    value = cell.value
    if lower:
        out = value <= bound if cell.column.exclusive_minimum else value < bound
    else:
        out = value >= bound if cell.column.exclusive_maximum else value > bound
    return out.fill_null(False)


def _pandera(column: ColumnSpec, *, lower: bool) -> list[Any]:
    import pandera.polars as pa

    bound = _bound(column, lower=lower)
    if lower:
        return [pa.Check.gt(bound) if column.exclusive_minimum else pa.Check.ge(bound)]
    return [pa.Check.lt(bound) if column.exclusive_maximum else pa.Check.le(bound)]


def _json_schema(column: ColumnSpec, typed: dict[str, Any], *, lower: bool) -> None:
    if column.logical_type not in ("integer", "number"):
        return
    exclusive = column.exclusive_minimum if lower else column.exclusive_maximum
    key = ("exclusiveMinimum" if exclusive else "minimum") if lower else (
        "exclusiveMaximum" if exclusive else "maximum"
    )  # fmt: skip
    typed["anyOf"][0][key] = _bound(column, lower=lower)


def _defects(column: ColumnSpec, *, lower: bool) -> list[Defect]:
    """Beyond the bound by growing steps, and exactly on it when the bound is exclusive."""
    if column.logical_type not in ("integer", "number"):
        return []
    bound, sign = _bound(column, lower=lower), -1 if lower else 1
    exclusive = column.exclusive_minimum if lower else column.exclusive_maximum
    if column.logical_type == "integer":
        edge = math.floor(bound) if lower else math.ceil(bound)
        edge += sign if edge == bound else 0
        options: list[Defect] = [str(edge + sign * step) for step in (0, 9, 99, 999)]
    else:
        options = [repr(round(bound + sign * step, 6)) for step in (0.01, 1.5, 17.25, 999.5)]
    if exclusive:
        options.append(str(int(bound)) if bound == int(bound) else repr(bound))
    return options


def _kind(*, lower: bool) -> RuleKindSpec:
    """The minimum (``lower``) or the maximum kind: one definition, two directions."""
    return RuleKindSpec(
        kind="minimum" if lower else "maximum",
        category="accuracy",
        declared=lambda column: (column.minimum if lower else column.maximum) is not None,
        words=lambda column: _words(column, lower=lower),
        violation=lambda cell: _violation(cell, lower=lower),
        pandera_checks=lambda column: _pandera(column, lower=lower),
        json_schema=lambda column, typed: _json_schema(column, typed, lower=lower),
        defects=lambda column, valid: _defects(column, lower=lower),
    )


MINIMUM = _kind(lower=True)
MAXIMUM = _kind(lower=False)
