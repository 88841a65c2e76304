"""Seeded draws, and columns built from them as polars expressions.

Why: a demo delivery has a few hundred rows, where a polars call's fixed cost, not the rows,
is what takes the time. So the generator draws with numpy (cheap per call) and describes
each column as an expression over the draws; ``computed`` then computes a batch of columns
in one query instead of one query per step.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from polars.expr.whenthen import ChainedThen, Then

Values = pl.Series | pl.Expr | str | None  # a column, a column to be, or a constant
# The engine for the generator's lazy queries (a few thousand rows at most): polars 2's
# default, streaming, costs more to set up than such rows take; the in-memory engine, the
# one eager calls use, ran the judge's query 1.8x faster (shipped contracts, 2,000 rows).
SMALL_ROWS: Final = "in-memory"


class Rng:
    """Seeded randomness: Python's Random for decisions, numpy's PCG64 for whole columns
    (draws are many and small: a generator kept per delivery, not one seeded per draw)."""

    def __init__(self, seed: int | str) -> None:
        self.py = random.Random(seed)
        self.np = np.random.Generator(np.random.PCG64(self.py.getrandbits(128)))

    def floats(self, n: int) -> np.ndarray:
        return self.np.random(n)

    def integers(self, n: int, lo: int, hi: int) -> np.ndarray:
        """Uniform integers in [lo, hi]."""
        span = hi - lo + 1
        picks = np.minimum(np.floor(self.floats(n) * span).astype(np.int64), span - 1) + lo
        return np.asarray(picks, dtype=np.int64)  # typed for mypy: already int64, no copy

    def uniform(self, n: int) -> pl.Series:
        return pl.Series(self.floats(n), dtype=pl.Float64)

    def ints(self, n: int, lo: int, hi: int) -> pl.Series:
        return pl.Series(self.integers(n, lo, hi), dtype=pl.Int64)

    def chance(self, n: int, p: float) -> pl.Series:
        return self.uniform(n) < p

    def exactly(self, n: int, share: float) -> np.ndarray:
        """A mask with ``share`` of ``n`` set (rounded at random), at random positions:
        deliveries alike in how many values each column lacks, as real exports are, where
        independent draws scatter that count (a 300-row day's 10% swings from 5% to 15%)."""
        whole = n * share
        k = int(whole) + int(self.np.random() < whole - int(whole))
        mask = np.zeros(n, dtype=bool)
        mask[self.np.choice(n, size=min(k, n), replace=False)] = True
        return mask


def as_expr(value: Values) -> pl.Expr:
    if isinstance(value, pl.Expr):
        return value
    return pl.lit(value) if isinstance(value, pl.Series) else pl.lit(value, dtype=pl.String)


def computed(n: int, *columns: pl.Expr) -> pl.DataFrame:
    """Columns built as expressions, computed in one query (constants broadcast to n rows)."""
    frame = pl.select(pl.int_range(n).alias("__n"), *columns)
    frame.drop_in_place("__n")
    return frame


def computed_column(value: pl.Expr, n: int) -> pl.Series:
    return computed(n, value.alias("v"))["v"]


def computed_apart(columns: Sequence[pl.Expr]) -> list[pl.Series]:
    """Columns of different lengths (each built over a drawn column), in one query."""
    if not columns:
        return []
    lists = pl.select(c.implode().alias(f"c{i}") for i, c in enumerate(columns))
    return [lists[f"c{i}"][0] for i in range(len(columns))]


def choose(options: Sequence[Values], pick: pl.Series) -> pl.Expr:
    """Row i takes options[pick[i] % len(options)]; options are columns or constants."""
    which = pl.lit(pick % len(options))
    expr: Then | ChainedThen = pl.when(which == 0).then(as_expr(options[0]))
    for i in range(1, len(options)):
        expr = expr.when(which == i).then(as_expr(options[i]))
    return expr


def concat(parts: Sequence[pl.Expr]) -> pl.Expr:
    return pl.concat_str(parts, separator="") if parts else pl.lit("", dtype=pl.String)


def gather(values: Sequence[str], picks: pl.Series) -> pl.Expr:
    """Row i takes values[picks[i]]."""
    return pl.lit(_vocabulary(tuple(values))).gather(pl.lit(picks))


@functools.lru_cache(maxsize=256)
def _vocabulary(values: tuple[str, ...]) -> pl.Series:
    """Value lists as columns, built once: the same few lists are drawn from per column."""
    return pl.Series(values, dtype=pl.String)


def texts(strings: list[str]) -> pl.Expr:
    """Strings drawn eagerly as a column to compute with others.

    Why eager: picking and joining a few hundred strings costs Python less than polars
    costs to plan and run the expressions (no formatting involved: the same values)."""
    return pl.lit(pl.Series(strings, dtype=pl.String))


def char_run(chars: str, lo: int, top: int, n: int, rng: Rng) -> pl.Expr:
    """n strings of lo..top characters from ``chars``, drawn as one matrix of code points
    (a count below ``top`` leaves trailing zeros, which numpy's fixed-width text drops)."""
    if top == 0 or (len(chars) == 1 and lo == top):
        return pl.lit(chars * lo, dtype=pl.String)
    codes = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32)
    matrix = codes[rng.integers(n * top, 0, len(chars) - 1).reshape(n, top)]
    if top > lo:
        counts = rng.integers(n, lo, top)
        matrix[np.arange(top)[None, :] >= counts[:, None]] = 0
    text = np.ascontiguousarray(matrix).view(f"<U{top}").ravel()
    return pl.lit(pl.Series(text.tolist(), dtype=pl.String))
