"""What a rule kind is: one place per kind for everything Flux derives from it.

A kind declares when a contract column carries it (``declared``), its words for agencies
(``words``: the message and the expected value of ``<column>.<kind>``), the polars
expression that flags a violating row (``violation``), its pandera check on curated rows,
its part of the agency JSON Schema, and the values the demo generator plants to break it
(``defects``). The loader, the validator, the pandera schema, the JSON Schema export and
the generator look kinds up in ``REGISTRY`` (``rule_kinds/__init__.py``); adding a kind is
one module here plus its name in ``RuleKind``.

pandera is imported inside ``pandera_checks`` only: the loader imports every kind at
definitions load, which must stay light (README, asset model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from flux_pipelines.contracts.model import Category, ColumnSpec, RuleKind

if TYPE_CHECKING:
    import pandera.polars as pa


@dataclass(frozen=True)
class Cell:
    """One column of a chunk as a rule sees it."""

    column: ColumnSpec
    text: pl.Expr  # the delivered text, trimmed, null spellings as null
    value: pl.Expr  # the typed value (null when empty or not of the column's type)


def _none(_column: ColumnSpec) -> list[Any]:
    return []


# A value that breaks a rule: an expression over the row's valid value (text), a constant,
# or None (an empty field).
Defect = pl.Expr | str | None


def _no_defects(_column: ColumnSpec, _valid: pl.Expr) -> list[Defect]:
    return []


def _no_schema(_column: ColumnSpec, _typed: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class RuleKindSpec:
    """One rule kind and everything derived from it (see the module docstring)."""

    kind: RuleKind
    category: Category
    declared: Callable[[ColumnSpec], bool]
    words: Callable[[ColumnSpec], tuple[str, str]]
    violation: Callable[[Cell], pl.Expr]
    pandera_checks: Callable[[ColumnSpec], list[pa.Check]] = _none
    json_schema: Callable[[ColumnSpec, dict[str, Any]], None] = _no_schema
    # values that break the rule on a column declaring it, derived from a valid value of the
    # row as an agency would get it wrong; the demo generator plants one and keeps it only
    # when the validator reports exactly this rule (empty: the generator plants it itself)
    defects: Callable[[ColumnSpec, pl.Expr], list[Defect]] = _no_defects
    notes: tuple[str, ...] = field(default=())
