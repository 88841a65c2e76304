"""What generation needs to know of each column, fixed once per delivery.

Why: ranges, key strides, pattern trees and whether a column may be empty follow from the
column's spec and the rules naming it; computing them once per delivery keeps the value
draws (``values.py``) simple and the keys constant across a streamed delivery's chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from flux_pipelines.contracts.model import ColumnSpec, Rule
from flux_pipelines.demo.draws import Rng
from flux_pipelines.demo.errors import GenerationError
from flux_pipelines.demo.keys import KeyCodec, integer_keys, key_codec, key_pattern
from flux_pipelines.demo.patterns import Alt, UnsupportedPatternError, parse_pattern


@dataclass(frozen=True)
class Column:
    """A column with everything generation needs, fixed once per delivery."""

    spec: ColumnSpec
    nullable: bool
    unique: bool
    tree: Alt | None = None
    codec: KeyCodec | None = None
    int_range: tuple[int, int] = (1, 99_999)
    num_range: tuple[float, float] = (0.0, 1000.0)
    decimals: int = 2
    key_base: int = 0
    key_step: int = 1
    num_step: float = 1.0
    # Its values are statements a reader classifies (the contract's rights column): drawn
    # from the contract's examples only, never from random words no reader could classify.
    stated: bool = False

    @property
    def name(self) -> str:
        return self.spec.name


def _int_range(spec: ColumnSpec, total: int, unique: bool) -> tuple[int, int]:
    """Bounds for integers: the contract's, else a plausible window (wide for keys)."""
    width = max(99_999, 10 * total) if unique else 1_000
    lo = None if spec.minimum is None else math.ceil(spec.minimum)
    hi = None if spec.maximum is None else math.floor(spec.maximum)
    if lo is not None and spec.exclusive_minimum and lo == spec.minimum:
        lo += 1
    if hi is not None and spec.exclusive_maximum and hi == spec.maximum:
        hi -= 1
    if lo is None and hi is None:
        return 1, max(width, 99_999)
    if lo is None:
        assert hi is not None
        return hi - width, hi
    return lo, (lo + width if hi is None else hi)


def _num_range(spec: ColumnSpec) -> tuple[float, float]:
    lo, hi = spec.minimum, spec.maximum
    if lo is None and hi is None:
        return 0.0, 1000.0
    if lo is None:
        assert hi is not None
        return hi - 1000.0, hi
    return lo, (lo + 1000.0 if hi is None else hi)


def build_column(
    spec: ColumnSpec, rules: Sequence[Rule], total: int, rng: Rng, *, stated: bool = False
) -> Column:
    kinds = {r.kind for r in rules if r.column == spec.name and len(r.columns) <= 1}
    # a key of several columns is unique when its first column is (the others are free)
    leads = any(
        r.kind == "unique" and not r.nulls_match and r.columns[:1] == (spec.name,) for r in rules
    )
    unique = spec.unique or "unique" in kinds or leads
    num_range = _num_range(spec)
    span = num_range[1] - num_range[0]
    num_step = span / (total + 1)
    decimals = 2 if span >= 100 else 4 if span >= 1 else 6
    if unique and spec.logical_type == "number":
        decimals = min(12, max(2, math.ceil(-math.log10(max(num_step, 1e-12))) + 1))
    int_range = _int_range(spec, total, unique)
    key_base, key_step = integer_keys(spec, int_range, total, rng) if unique else (0, 1)
    tree, codec = _string_shape(spec, unique, total, rng)
    choices = len(spec.allowed_values) or (2 if spec.logical_type == "boolean" else total)
    if unique and choices < total:
        raise GenerationError(f"{spec.name}: {total} unique values, only {choices} are allowed")
    return Column(
        spec=spec,
        nullable=not (spec.required or "required" in kinds),
        unique=unique,
        tree=tree,
        codec=codec,
        int_range=int_range,
        num_range=num_range,
        decimals=decimals,
        key_base=key_base,
        key_step=key_step,
        num_step=num_step,
        stated=stated and bool(spec.examples),
    )


def _string_shape(
    spec: ColumnSpec, unique: bool, total: int, rng: Rng
) -> tuple[Alt | None, KeyCodec | None]:
    """The pattern tree of a text column, and a key codec when values must be unique."""
    if spec.logical_type != "string" or spec.allowed_values:
        return None, None
    pattern = spec.pattern or (key_pattern(spec) if unique else None)
    if pattern is None:
        return None, None
    try:
        tree = parse_pattern(pattern)
    except UnsupportedPatternError:
        if not unique:
            return None, None  # examples or words, re-drawn until the validator agrees
        tree = parse_pattern(key_pattern(spec))
    return tree, (key_codec(tree, total, rng) if unique else None)
