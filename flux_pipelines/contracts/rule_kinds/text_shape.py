"""``<column>.pattern``, ``<column>.min_length``, ``<column>.max_length``: the delivered
text matches the contract's regular expression (searched: anchor it) and has a length in
characters within the bounds."""

from typing import Any

import polars as pl

from flux_pipelines.contracts.model import ColumnSpec
from flux_pipelines.contracts.rule_kinds.base import Cell, Defect, RuleKindSpec

_FILLER = "abcdefghijklmnopqrstuvwxyz"  # lengthens a value past its maximum


def _pattern(column: ColumnSpec) -> str:
    assert column.pattern is not None  # declared() holds
    return column.pattern


def _length(column: ColumnSpec, *, lower: bool) -> int:
    length = column.min_length if lower else column.max_length
    assert length is not None  # declared() holds
    return length


def _pattern_pandera(column: ColumnSpec) -> list[Any]:
    import pandera.polars as pa

    if column.logical_type != "string":
        return []
    return [pa.Check.str_contains(_pattern(column))]


def _length_pandera(column: ColumnSpec, *, lower: bool) -> list[Any]:
    import pandera.polars as pa

    if column.logical_type != "string":
        return []
    length = _length(column, lower=lower)
    if lower:
        return [pa.Check.str_length(min_value=length)]
    return [pa.Check.str_length(max_value=length)]


def _string_schema(column: ColumnSpec, typed: dict[str, Any], key: str, value: Any) -> None:
    if column.logical_type == "string":
        typed[key] = value


def _length_words(column: ColumnSpec, *, lower: bool) -> tuple[str, str]:
    n = _length(column, lower=lower)
    if lower:
        return f"{column.name} is shorter than {n} characters", f"at least {n} characters"
    return f"{column.name} is longer than {n} characters", f"at most {n} characters"


def _length_violation(cell: Cell, *, lower: bool) -> pl.Expr:
    n, size = _length(cell.column, lower=lower), cell.text.str.len_chars()
    return (size < n if lower else size > n).fill_null(False)


PATTERN = RuleKindSpec(
    kind="pattern",
    category="accuracy",
    declared=lambda column: bool(column.pattern),
    words=lambda column: (
        f"{column.name} does not match {_pattern(column)}",
        f"matches {_pattern(column)}",
    ),
    violation=lambda cell: (~cell.text.str.contains(_pattern(cell.column))).fill_null(False),
    pandera_checks=_pattern_pandera,
    json_schema=lambda column, typed: _string_schema(column, typed, "pattern", column.pattern),
    defects=lambda column, valid: [
        "#" + valid,
        valid + "!",
        valid.str.reverse(),
        "?" + valid + "?",
        *[valid.str.slice(0, 1) + mark + valid.str.slice(1) for mark in "\t\u200b"],
    ],
)


def _length_defects(column: ColumnSpec, valid: pl.Expr, *, lower: bool) -> list[Defect]:
    """A character or two short of the minimum, or past the maximum."""
    n = _length(column, lower=lower)
    if lower:
        return [valid.str.slice(0, max(1, n - cut)) for cut in (1, 2)]
    longer = valid + _FILLER * (n // len(_FILLER) + 2)
    return [longer.str.slice(0, n + extra) for extra in (1, 2)]


def _length_kind(*, lower: bool) -> RuleKindSpec:
    """The min_length (``lower``) or the max_length kind: one definition, two directions."""
    key = "minLength" if lower else "maxLength"
    return RuleKindSpec(
        kind="min_length" if lower else "max_length",
        category="accuracy",
        declared=lambda column: (column.min_length if lower else column.max_length) is not None,
        words=lambda column: _length_words(column, lower=lower),
        violation=lambda cell: _length_violation(cell, lower=lower),
        pandera_checks=lambda column: _length_pandera(column, lower=lower),
        json_schema=lambda column, typed: _string_schema(
            column, typed, key, _length(column, lower=lower)
        ),
        defects=lambda column, valid: _length_defects(column, valid, lower=lower),
    )


MIN_LENGTH = _length_kind(lower=True)
MAX_LENGTH = _length_kind(lower=False)
