"""Valid values for one column, drawn from its contract spec alone.

Why: values must look like an agency's (plausible numbers and dates, skewed code lists,
names with non-ASCII letters) while coming only from the column's type and constraints, so
any contract gets deliveries without code of its own. Each column is a polars expression
over seeded draws (``draws.py``), computed in batches.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Sequence

import numpy as np
import polars as pl

from flux_pipelines.contracts.model import ColumnSpec
from flux_pipelines.demo.columns import Column
from flux_pipelines.demo.draws import Rng, choose, gather, texts
from flux_pipelines.demo.patterns import sample_tree

NULL_SHARE = 0.1  # optional columns are empty this often in valid rows
DATE_RANGE = (dt.date(2015, 1, 1), dt.date(2025, 12, 31))
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_WORDS = (
    "Aachen", "Abee", "Ålesund", "Allende", "Archive", "Bay", "Bjurböle", "Canyon",
    "Chelyabinsk", "Collection", "Core", "Creek", "Delta", "Dhofar", "Ensisheim", "Field",
    "Gallery", "Gibeon", "Harbor", "Hoba", "Île-de-France", "Jiddat", "Košice", "Landscape",
    "Letter", "Łowicz", "Map", "Marsh", "Murchison", "Museum", "Nōgata", "North", "Orgueil",
    "Peña Blanca", "Photograph", "Portrait", "Project", "Québec", "Renazzo", "River",
    "São Paulo", "Sikhote-Alin", "Station", "Study", "Survey", "Tissint", "Vaca Muerta",
    "Willamette", "Zagami", "Żywiec", "Zürich", "Ōshima",
)  # fmt: skip


def column_values(column: Column, index: pl.Series, rng: Rng) -> pl.Expr:
    """Valid text for one column (no nulls yet); ``index`` keeps unique keys distinct."""
    spec = column.spec
    n = index.len()
    if spec.allowed_values and not column.unique:
        return _enum_values([v.value for v in spec.allowed_values], n, rng)
    if spec.allowed_values or spec.logical_type == "boolean":  # unique: one row per value
        values = [v.value for v in spec.allowed_values] or ["true", "false"]
        return gather(values, index % len(values))
    match spec.logical_type:
        case "integer":
            return pl.lit(_integers(column, index, rng))
        case "number":
            return _numbers(column, index, rng)
        case "date":
            days = pl.lit(_days(column, index, rng)).cast(pl.Int32).cast(pl.Date)
            return days.dt.to_string(spec.date_format or "%Y-%m-%d")
        case "timestamp":
            seconds = _days(column, index, rng) * 86_400 + rng.ints(n, 0, 86_399)
            return stamp_text(pl.lit(seconds * 1_000_000).cast(pl.Datetime("us")), spec)
        case _:
            return _strings(column, index, rng)


def stamp_text(stamp: pl.Expr, spec: ColumnSpec, naive: bool = True) -> pl.Expr:
    """Timestamps in the column's format; a format with an offset gets UTC ones."""
    fmt = spec.date_format or "%Y-%m-%dT%H:%M:%S"
    if re.search(r"%[#:]*[zZ]", fmt) and naive:
        stamp = stamp.dt.replace_time_zone("UTC")
    return stamp.dt.to_string(fmt.replace("%#z", "%z"))  # chrono's %#z only parses


def _enum_values(values: Sequence[str], n: int, rng: Rng) -> pl.Expr:
    """Skewed like real code lists: the first values are the common ones."""
    vocabulary, cumulative = _code_list(tuple(values))
    picks = np.searchsorted(cumulative, rng.floats(n), side="right")
    return texts(vocabulary[np.clip(picks, 0, len(values) - 1)].tolist())


@functools.lru_cache(maxsize=256)
def _code_list(values: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A code list's values and the cumulative share of each (1 / rank), built once."""
    weights = [1 / (i + 1) for i in range(len(values))]
    total = sum(weights)
    cumulative = [sum(weights[: i + 1]) / total for i in range(len(values))]
    return np.array(values, dtype=object), np.array(cumulative, dtype=np.float64)


def _integers(column: Column, index: pl.Series, rng: Rng) -> pl.Series:
    n = index.len()
    if column.unique:
        jitter = rng.ints(n, 0, column.key_step - 1)
        return (column.key_base + index * column.key_step + jitter).cast(pl.String)
    return rng.ints(n, *column.int_range).cast(pl.String)


def _numbers(column: Column, index: pl.Series, rng: Rng) -> pl.Expr:
    lo, hi = column.num_range
    if column.unique:
        values = lo + (index + 1).cast(pl.Float64) * column.num_step
    else:
        values = lo + rng.uniform(index.len()) * (hi - lo)
    return pl.lit(values).round(column.decimals).cast(pl.String)


def _days(column: Column, index: pl.Series, rng: Rng) -> pl.Series:
    """Days since 1970 within the recent range (distinct per index for unique columns)."""
    start, end = (d.toordinal() - _EPOCH_ORDINAL for d in DATE_RANGE)
    if column.unique:
        return end - index
    return rng.ints(index.len(), start, end)


def _strings(column: Column, index: pl.Series, rng: Rng) -> pl.Expr:
    spec = column.spec
    n = index.len()
    if column.codec is not None:
        return column.codec.encode(index, rng)
    if column.tree is not None:
        return sample_tree(column.tree, n, rng)
    if column.stated:
        return gather(spec.examples, rng.ints(n, 0, len(spec.examples) - 1))
    text = _words(n, rng)
    if spec.examples:
        from_examples = gather(spec.examples, rng.ints(n, 0, len(spec.examples) - 1))
        text = choose([from_examples, text], (rng.chance(n, 0.3)).cast(pl.Int64))
    if spec.max_length is not None:
        text = text.str.slice(0, spec.max_length).str.strip_chars_end()
    if spec.min_length is not None:
        text = text.str.pad_end(spec.min_length, "x")
    return text


def _words(n: int, rng: Rng) -> pl.Expr:
    """One to three words, some with non-ASCII letters, as names and titles look (joined in
    Python: cheaper for a few hundred rows than polars' expressions, the same text)."""
    counts = rng.integers(n, 1, 3).tolist()
    picks = [_WORDS[p] for p in rng.integers(3 * n, 0, len(_WORDS) - 1).tolist()]
    # row i: its words are picks i, n + i and 2n + i, as many as its count
    return texts([" ".join(picks[i::n][:count]) for i, count in enumerate(counts)])
