"""``<column>.pattern``, ``<column>.min_length``, ``<column>.max_length``: the delivered
text matches the contract's regular expression (searched: anchor it) and has a length in
characters within the bounds."""

from typing import Any

import polars as pl

from flux_pipelines.contracts.model import ColumnSpec
from flux_pipelines.contracts.rule_kinds.base import Cell, RuleKindSpec

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
MIN_LENGTH = RuleKindSpec(
    kind="min_length",
    category="accuracy",
    declared=lambda column: column.min_length is not None,
    words=lambda column: _length_words(column, lower=True),
    violation=lambda cell: _length_violation(cell, lower=True),
    pandera_checks=lambda column: _length_pandera(column, lower=True),
    json_schema=lambda column, typed: _string_schema(column, typed, "minLength", column.min_length),
    defects=lambda column, valid: [
        valid.str.slice(0, max(1, _length(column, lower=True) - cut)) for cut in (1, 2)
    ],
)
MAX_LENGTH = RuleKindSpec(
    kind="max_length",
    category="accuracy",
    declared=lambda column: column.max_length is not None,
    words=lambda column: _length_words(column, lower=False),
    violation=lambda cell: _length_violation(cell, lower=False),
    pandera_checks=lambda column: _length_pandera(column, lower=False),
    json_schema=lambda column, typed: _string_schema(column, typed, "maxLength", column.max_length),
    defects=lambda column, valid: [
        (valid + _FILLER * (_length(column, lower=False) // len(_FILLER) + 2)).str.slice(
            0, _length(column, lower=False) + extra
        )
        for extra in (1, 2)
    ],
)
