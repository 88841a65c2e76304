"""Seeded generator of realistic deliveries with planted defects, driven only by contracts.

Why: the demo, the tests and the benchmark need files that look like an agency's deliveries
(plausible values, non-ASCII names, quoted newlines, byte-order marks) and that carry known
defects, so what the pipeline quarantines can be checked against what was planted. Nothing
here knows a dataset: values come from each column's type and constraints, and the
contract's own ``RowValidator`` is the oracle. Rows that break a rule by accident are
resampled; a defective row is kept only when the validator finds exactly the rule it was
made to break. Valid rows are produced column-wise (numpy's seeded PCG64 plus polars), so
a million rows take seconds; only the few defective rows are handled rule by rule.

A demo delivery has a few hundred rows, where a polars or validator call's fixed cost, not
the rows, is what takes the time. So column values are polars expressions over the seeded
draws, computed in one ``select`` per batch of columns; repair rounds try several
candidates per failing row; and the generation steps are coroutines asking the oracle
(``demo/oracle.py``), so that ``generate_many`` judges the rows of all deliveries of a
contract in one validator call per round.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
import re
import string
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import polars as pl

from flux_pipelines.contracts.model import ColumnSpec, Contract, Rule
from flux_pipelines.contracts.registry import Registry
from flux_pipelines.contracts.rule_kinds import REGISTRY
from flux_pipelines.contracts.validator import FILE, ROW, RowValidator, polars_type
from flux_pipelines.demo.draws import (
    Rng,
    Values,
    char_run,
    choose,
    computed,
    computed_apart,
    computed_column,
    concat,
    gather,
)
from flux_pipelines.demo.oracle import Oracle, answer, answer_together, first_passing
from flux_pipelines.errors import ConfigurationError

Format = Literal["csv", "jsonl", "json", "parquet"]
PLANTED_SCHEMA: dict[str, pl.DataType] = {"row_number": pl.Int64(), "rule_id": pl.String()}

NULL_SHARE = 0.1  # optional columns are empty this often in valid rows
RESAMPLE_ROUNDS = 40  # rounds of "validate, re-draw the rows that failed" for valid rows
REPAIR_ROWS = 1024  # candidate rows a repair round may draw (its failing rows, tried often)
MAX_REPAIR_TRIALS = 16  # candidates per failing row and round at most
DEFECT_ATTEMPTS = 8  # tries per defective row before it is left valid
DEFECT_TRIALS = 4  # candidates per single-cell defect and try, judged in one validator call
EXPRESSION_TRIALS = 16  # candidate rows sampled per defective row and try for a row rule
REPAIR_TRIALS = 4  # re-draws tried at once for a defective row that broke other rules too
DATE_RANGE = (dt.date(2015, 1, 1), dt.date(2025, 12, 31))
DEMO_START = dt.date(2025, 1, 6)  # first landing day when generate_landing gets a day count
# Day-to-day volume wobble of demo deliveries: well inside the anomaly monitors' tolerance
# (a 15% drop is a WARN), so the only volume findings are the planted ones below.
VOLUME_WOBBLE = 0.04
AWKWARD_TEXT = 'Ébauche, "sans titre"\nsecond line, with commas'
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


class GenerationError(ConfigurationError):
    """The contract cannot be satisfied by generated rows (e.g. contradictory rules)."""


# --------------------------------------------------------------------------- regex shapes


class UnsupportedPatternError(ValueError):
    """The pattern uses regex syntax the tiny generator does not model."""


@dataclass(frozen=True, eq=False)
class _Chars:
    """One character drawn from ``chars`` (a literal is a one-character class)."""

    chars: str


@dataclass(frozen=True, eq=False)
class _Repeat:
    node: _Node
    lo: int
    hi: int | None


@dataclass(frozen=True, eq=False)
class _Alt:
    branches: tuple[tuple[_Node, ...], ...]


_Node = _Chars | _Repeat | _Alt
_DIGITS = string.digits
_WORD = string.ascii_letters + string.digits + "_"
_ANY = string.ascii_letters + string.digits
_PRINTABLE = string.ascii_letters + string.digits + "-_.:/()&'"
_ESCAPES = {
    "d": _DIGITS,
    "w": _WORD,
    "s": " ",
    "D": string.ascii_letters + "-_.",
    "W": "-.:/()&",
    "S": _PRINTABLE,
    "n": "\n",
    "t": "\t",
}
OPEN_REPEAT_EXTRA = 6  # '+', '*' and '{n,}' draw up to this many more than their minimum
BOUNDED_REPEAT_EXTRA = 24  # '{n,m}' draws at most this many more than n


class _PatternParser:
    """Recursive descent over the regex subset contracts use; anything else is refused."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 4 if pattern.startswith("(?i)") else 0

    def parse(self) -> _Alt:
        tree = self._alternation()
        if self.pos != len(self.text):
            raise UnsupportedPatternError(f"unexpected {self.text[self.pos]!r} in {self.text!r}")
        return tree

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _take(self) -> str:
        char = self._peek()
        self.pos += 1
        return char

    def _alternation(self) -> _Alt:
        branches = [self._sequence()]
        while self._peek() == "|":
            self.pos += 1
            branches.append(self._sequence())
        return _Alt(tuple(branches))

    def _sequence(self) -> tuple[_Node, ...]:
        nodes: list[_Node] = []
        while self._peek() not in ("", "|", ")"):
            atom = self._atom()
            if atom is not None:
                nodes.append(self._quantified(atom))
        return tuple(nodes)

    def _atom(self) -> _Node | None:
        char = self._take()
        if char in "^$":
            return None
        if char == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self._peek() == "?":
                raise UnsupportedPatternError(f"lookaround or flags in {self.text!r}")
            inner = self._alternation()
            if self._take() != ")":
                raise UnsupportedPatternError(f"unbalanced '(' in {self.text!r}")
            return inner
        if char == "[":
            return _Chars(self._class())
        if char == "\\":
            return self._escape()
        if char == ".":
            return _Chars(_ANY)
        if char in "*+?{":
            raise UnsupportedPatternError(f"dangling quantifier in {self.text!r}")
        return _Chars(char)

    def _escape(self) -> _Chars | None:
        char = self._take()
        if char in ("b", "B", "A", "z", "Z"):
            return None
        if char in _ESCAPES:
            return _Chars(_ESCAPES[char])
        if char == "" or char.isalnum():
            raise UnsupportedPatternError(f"escape \\{char} in {self.text!r}")
        return _Chars(char)

    def _class(self) -> str:
        negate = self._peek() == "^"
        self.pos += negate
        chars: set[str] = set()
        first = True
        while True:
            char = self._take()
            if char == "":
                raise UnsupportedPatternError(f"unterminated '[' in {self.text!r}")
            if char == "]" and not first:
                break
            first = False
            if char == "[" and self._peek() == ":":
                raise UnsupportedPatternError(f"POSIX class in {self.text!r}")
            if char == "\\":
                escaped = self._escape()
                chars.update(escaped.chars if escaped else "")
                continue
            if self._peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                end = self._take()
                if end == "\\":
                    end = self._take()
                chars.update(chr(x) for x in range(ord(char), ord(end) + 1))
            else:
                chars.add(char)
        members = (
            "".join(c for c in _PRINTABLE if c not in chars) if negate else "".join(sorted(chars))
        )
        if not members:
            raise UnsupportedPatternError(f"empty character class in {self.text!r}")
        return members

    def _quantified(self, atom: _Node) -> _Node:
        while True:
            char = self._peek()
            if char == "*":
                bounds: tuple[int, int | None] = (0, None)
            elif char == "+":
                bounds = (1, None)
            elif char == "?":
                bounds = (0, 1)
            elif char == "{":
                match = re.match(r"\{(\d+)(,?)(\d*)\}", self.text[self.pos :])
                if match is None:
                    raise UnsupportedPatternError(f"bad repetition in {self.text!r}")
                lo = int(match[1])
                hi = lo if not match[2] else (int(match[3]) if match[3] else None)
                bounds = (lo, hi)
                self.pos += len(match[0]) - 1
            else:
                return atom
            self.pos += 1
            if self._peek() == "?":  # lazy: same strings
                self.pos += 1
            atom = _Repeat(atom, *bounds)


@functools.lru_cache(maxsize=512)
def parse_pattern(pattern: str) -> _Alt:
    """Parse a contract pattern into the generator's tree (raises UnsupportedPatternError);
    memoised: every delivery's plan parses its contract's patterns, and trees are immutable."""
    return _PatternParser(pattern).parse()


def _repeat_top(lo: int, hi: int | None) -> int:
    return lo + OPEN_REPEAT_EXTRA if hi is None else min(hi, lo + BOUNDED_REPEAT_EXTRA)


def _sample_pattern(node: _Node, n: int, rng: Rng) -> pl.Expr:
    """n random strings matching ``node`` (vectorised: runs of character slots at once)."""
    if isinstance(node, _Chars):
        return char_run(node.chars, 1, 1, n, rng)
    if isinstance(node, _Repeat) and isinstance(node.node, _Chars):
        return char_run(node.node.chars, node.lo, _repeat_top(node.lo, node.hi), n, rng)
    if isinstance(node, _Alt):
        parts = [concat([_sample_pattern(x, n, rng) for x in b]) for b in node.branches]
        if len(parts) == 1:
            return parts[0]
        return choose(parts, rng.ints(n, 0, len(parts) - 1))
    top = _repeat_top(node.lo, node.hi)
    pieces = [_sample_pattern(node.node, n, rng) for _ in range(node.lo)]
    if top > node.lo:
        counts = pl.lit(rng.ints(n, node.lo, top))
        pieces += [
            pl.when(counts > j).then(_sample_pattern(node.node, n, rng)).otherwise(pl.lit(""))
            for j in range(node.lo, top)
        ]
    return concat(pieces)


def sample_pattern(pattern: str, n: int, *, seed: int) -> pl.Series:
    """n seeded random strings matching ``pattern`` (for tests and ad-hoc fixtures)."""
    return computed_column(_sample_pattern(parse_pattern(pattern), n, Rng(seed)), n)


def _repeats(node: _Node) -> Iterator[_Repeat]:
    """Repeat nodes on the fixed path a key takes through the pattern (first branches)."""
    if isinstance(node, _Alt):
        for child in node.branches[0]:
            yield from _repeats(child)
    elif isinstance(node, _Repeat):
        yield node
        yield from _repeats(node.node)


def _skeleton(node: _Node, counts: Mapping[int, int]) -> list[str]:
    """The character classes of one fixed shape of the pattern, left to right."""
    if isinstance(node, _Chars):
        return [node.chars]
    if isinstance(node, _Alt):
        return [slot for child in node.branches[0] for slot in _skeleton(child, counts)]
    return _skeleton(node.node, counts) * counts[id(node)]


@dataclass(frozen=True)
class _KeyCodec:
    """Turns a global row index into a distinct string of a pattern.

    Why: unique keys must stay unique across streamed chunks without remembering them.
    The rightmost character slots spell the index in mixed radix, each digit shifted by a
    function of the lower ones (a bijection that makes neighbouring rows look unrelated);
    the other slots are random.
    """

    slots: tuple[str, ...]
    keyed: tuple[int, ...]  # slot positions, least significant first
    shifts: tuple[int, ...]
    mults: tuple[int, ...]

    def encode(self, index: pl.Series, rng: Rng) -> pl.Expr:
        n = index.len()
        parts: dict[int, pl.Expr] = {}
        radix = 1
        for k, pos in enumerate(self.keyed):
            size = len(self.slots[pos])
            lower = (index % radix) % 1_000_003
            digit = ((index // radix) % size + lower * self.mults[k] + self.shifts[k]) % size
            parts[pos] = gather(self.slots[pos], digit)
            radix *= size
        return concat(
            [
                parts[i] if i in parts else _sample_pattern(_Chars(s), n, rng)
                for i, s in enumerate(self.slots)
            ]
        )


def _key_codec(tree: _Alt, total: int, rng: Rng) -> _KeyCodec:
    """Fix the pattern's shape so that it can hold ``total`` distinct values."""
    repeats = list(_repeats(tree))
    counts = {
        id(r): r.lo if r.hi == r.lo else max(r.lo, 1 if r.hi is None else r.lo) for r in repeats
    }
    need = max(total, 1)
    for _ in range(512):
        slots = _skeleton(tree, counts)
        if math.prod(len(s) for s in slots) >= need:
            break
        growable = [
            r
            for r in repeats
            if (r.hi is None or counts[id(r)] < r.hi)
            and math.prod(len(s) for s in _skeleton(r.node, counts)) > 1
        ]
        if not growable:
            break
        counts[id(growable[-1])] += 1
    slots = _skeleton(tree, counts)
    keyed: list[int] = []
    capacity = 1
    for pos in reversed(range(len(slots))):
        if capacity >= need:
            break
        if len(slots[pos]) > 1:
            keyed.append(pos)
            capacity *= len(slots[pos])
    if capacity < need:
        raise GenerationError(f"pattern cannot hold {total} distinct values")
    return _KeyCodec(
        slots=tuple(slots),
        keyed=tuple(keyed),
        shifts=tuple(rng.py.randrange(len(slots[p])) for p in keyed),
        mults=tuple(rng.py.randrange(1, 1000) for _ in keyed),
    )


# --------------------------------------------------------------------------- column values


@dataclass(frozen=True)
class _Column:
    """A column with everything generation needs, fixed once per delivery."""

    spec: ColumnSpec
    nullable: bool
    unique: bool
    tree: _Alt | None = None
    codec: _KeyCodec | None = None
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


def _build_column(
    spec: ColumnSpec, rules: Sequence[Rule], total: int, rng: Rng, *, stated: bool = False
) -> _Column:
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
    key_base, key_step = _integer_keys(spec, int_range, total, rng) if unique else (0, 1)
    tree, codec = _string_shape(spec, unique, total, rng)
    choices = len(spec.allowed_values) or (2 if spec.logical_type == "boolean" else total)
    if unique and choices < total:
        raise GenerationError(f"{spec.name}: {total} unique values, only {choices} are allowed")
    return _Column(
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


def _integer_keys(
    spec: ColumnSpec, int_range: tuple[int, int], total: int, rng: Rng
) -> tuple[int, int]:
    """Base and stride of unique integers: key = base + index * stride + jitter < stride."""
    lo, hi = int_range
    span = hi - lo + 1
    if spec.logical_type == "integer" and total > span:
        raise GenerationError(f"{spec.name}: {total} unique integers do not fit [{lo}, {hi}]")
    step = max(1, min(7, span // max(total, 1)))
    return lo + rng.py.randrange(max(1, min(span - total * step, 10_000) + 1)), step


def _string_shape(
    spec: ColumnSpec, unique: bool, total: int, rng: Rng
) -> tuple[_Alt | None, _KeyCodec | None]:
    """The pattern tree of a text column, and a key codec when values must be unique."""
    if spec.logical_type != "string" or spec.allowed_values:
        return None, None
    pattern = spec.pattern or (_key_pattern(spec) if unique else None)
    if pattern is None:
        return None, None
    try:
        tree = parse_pattern(pattern)
    except UnsupportedPatternError:
        if not unique:
            return None, None  # examples or words, re-drawn until the validator agrees
        tree = parse_pattern(_key_pattern(spec))
    return tree, (_key_codec(tree, total, rng) if unique else None)


def _key_pattern(spec: ColumnSpec) -> str:
    """A key shape for a unique text column without a pattern, from its first example."""
    for example in spec.examples:
        match = re.fullmatch(r"([A-Za-z]+[-_/ ]?)(\d+)", example)
        if match:
            return f"^{re.escape(match[1])}[0-9]{{{len(match[2])},}}$"
    initials = "".join(part[:1] for part in spec.name.split("_") if part).upper() or "K"
    return f"^{initials}-[0-9]{{6,}}$"


def _values(column: _Column, index: pl.Series, rng: Rng) -> pl.Expr:
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
        case "boolean":
            return choose(["true", "false"], rng.ints(n, 0, 1))
        case "date":
            days = pl.lit(_days(column, index, rng)).cast(pl.Int32).cast(pl.Date)
            return days.dt.to_string(spec.date_format or "%Y-%m-%d")
        case "timestamp":
            seconds = _days(column, index, rng) * 86_400 + rng.ints(n, 0, 86_399)
            return _stamp_text(pl.lit(seconds * 1_000_000).cast(pl.Datetime("us")), spec)
        case _:
            return _strings(column, index, rng)


def _stamp_text(stamp: pl.Expr, spec: ColumnSpec, naive: bool = True) -> pl.Expr:
    """Timestamps in the column's format; a format with an offset gets UTC ones."""
    fmt = spec.date_format or "%Y-%m-%dT%H:%M:%S"
    if re.search(r"%[#:]*[zZ]", fmt) and naive:
        stamp = stamp.dt.replace_time_zone("UTC")
    return stamp.dt.to_string(fmt.replace("%#z", "%z"))  # chrono's %#z only parses


def _enum_values(values: Sequence[str], n: int, rng: Rng) -> pl.Expr:
    """Skewed like real code lists: the first values are the common ones."""
    weights = [1 / (i + 1) for i in range(len(values))]
    total = sum(weights)
    cumulative = pl.Series([sum(weights[: i + 1]) / total for i in range(len(values))])
    picks = pl.lit(cumulative).search_sorted(pl.lit(rng.uniform(n)), side="right")
    return pl.lit(pl.Series(list(values), dtype=pl.String)).gather(
        picks.cast(pl.Int64).clip(0, len(values) - 1)
    )


def _integers(column: _Column, index: pl.Series, rng: Rng) -> pl.Series:
    n = index.len()
    if column.unique:
        jitter = rng.ints(n, 0, column.key_step - 1)
        return (column.key_base + index * column.key_step + jitter).cast(pl.String)
    return rng.ints(n, *column.int_range).cast(pl.String)


def _numbers(column: _Column, index: pl.Series, rng: Rng) -> pl.Expr:
    lo, hi = column.num_range
    if column.unique:
        values = lo + (index + 1).cast(pl.Float64) * column.num_step
    else:
        values = lo + rng.uniform(index.len()) * (hi - lo)
    return pl.lit(values).round(column.decimals).cast(pl.String)


def _days(column: _Column, index: pl.Series, rng: Rng) -> pl.Series:
    """Days since 1970 within the recent range (distinct per index for unique columns)."""
    start, end = (d.toordinal() - _EPOCH_ORDINAL for d in DATE_RANGE)
    if column.unique:
        return end - index
    return rng.ints(index.len(), start, end)


def _strings(column: _Column, index: pl.Series, rng: Rng) -> pl.Expr:
    spec = column.spec
    n = index.len()
    if column.codec is not None:
        return column.codec.encode(index, rng)
    if column.tree is not None:
        return _sample_pattern(column.tree, n, rng)
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
    """One to three words, some with non-ASCII letters, as names and titles look."""
    count = pl.lit(rng.ints(n, 1, 3))
    picks = pl.Series(rng.integers(3 * n, 0, len(_WORDS) - 1), dtype=pl.Int64)
    words = [gather(_WORDS, picks.slice(j * n, n)) for j in range(3)]
    return pl.concat_str(
        [pl.when(count > j).then(words[j]) for j in range(3)], separator=" ", ignore_nulls=True
    )


# --------------------------------------------------------------------------- the plan


_COMPARISON = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(<=|<|>=|>)\s*([a-z_][a-z0-9_]*)\s*$")
_ASSIGNMENT = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*=(?!=)\s*(.+?)\s*$", re.DOTALL)
_IMPLICATION = re.compile(
    r"^\s*([a-z_][a-z0-9_]*)\s+IS\s+NULL\s+OR\s+([a-z_][a-z0-9_]*)\s*=\s*'([^']*)'\s*$", re.I
)
_STRING_LITERAL = re.compile(r"'((?:[^']|'')*)'")
_NUMBER_LITERAL = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


@dataclass(frozen=True)
class _Plan:
    """A contract compiled for generation; key constants derive from the delivery seed."""

    contract: Contract
    validator: RowValidator
    columns: tuple[_Column, ...]
    plantable: tuple[Rule, ...]
    expected: Mapping[str, str]  # rule id -> sorted rule ids the validator reports for it
    comparisons: tuple[tuple[str, str, str], ...]  # (left, operator, right)
    assignments: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # "x = <sql of roots>"
    implications: tuple[tuple[str, str, str], ...] = ()  # "a IS NULL OR b = 'value'"
    literals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def column(self, name: str) -> _Column:
        return self.columns[self.contract.column_names.index(name)]


def _plan(
    contract: Contract, seed: int | str, total: int, validator: RowValidator | None = None
) -> _Plan:
    """``validator``: one shared by the contract's deliveries, so their requests batch."""
    rng = Rng(f"{seed}:keys")
    rights = contract.content.rights_column if contract.content is not None else None
    columns = tuple(
        _build_column(c, contract.rules, total, rng, stated=c.name == rights)
        for c in contract.columns
    )
    by_name = {c.name: c for c in columns}
    comparisons: list[tuple[str, str, str]] = []
    assignments: list[tuple[str, str, tuple[str, ...]]] = []
    implications: list[tuple[str, str, str]] = []
    literals: dict[str, tuple[str, ...]] = {}
    for rule in contract.rules:
        if rule.kind != "expression" or rule.expression is None:
            continue
        literals[rule.id] = _literals(rule.expression)
        match = _COMPARISON.match(rule.expression)
        if match and _comparable(by_name.get(match[1]), by_name.get(match[3])):
            comparisons.append((match[1], match[2], match[3]))
        assignment = _assignment(rule.expression, by_name)
        if assignment is not None:
            assignments.append(assignment)
        implied = _IMPLICATION.match(rule.expression)
        if implied and all(n in by_name and not by_name[n].unique for n in implied.group(1, 2)):
            implications.append((implied[1], implied[2], implied[3]))
    return _Plan(
        contract=contract,
        validator=validator or RowValidator(contract),
        columns=columns,
        plantable=tuple(r for r in contract.rules if _plantable(r, by_name)),
        expected={r.id: _expected(r, contract.rules) for r in contract.rules},
        comparisons=tuple(comparisons),
        assignments=tuple(assignments),
        implications=tuple(implications),
        literals=literals,
    )


def _assignment(
    expression: str, columns: Mapping[str, _Column]
) -> tuple[str, str, tuple[str, ...]] | None:
    """``x = <expression of other columns>``: x can be computed instead of guessed."""
    match = _ASSIGNMENT.match(expression)
    if match is None or match[1] not in columns or columns[match[1]].unique:
        return None
    try:
        roots = pl.sql_expr(match[2]).meta.root_names()
    except (pl.exceptions.PolarsError, ValueError):
        return None
    if match[1] in roots or not set(roots) <= set(columns):
        return None
    return match[1], match[2], tuple(dict.fromkeys(roots))


def _comparable(left: _Column | None, right: _Column | None) -> bool:
    ordered = {"integer", "number", "date", "timestamp"}
    return (
        left is not None
        and right is not None
        and left.spec.logical_type == right.spec.logical_type
        and left.spec.logical_type in ordered
        and not (left.unique or right.unique)
    )


def _literals(expression: str) -> tuple[str, ...]:
    """Constants in a row rule: values near them are where rules flip."""
    found = [s.replace("''", "'") for s in _STRING_LITERAL.findall(expression)]
    bare = _STRING_LITERAL.sub("", expression)
    for number in _NUMBER_LITERAL.findall(bare):
        if "." in number:
            found += [number, repr(float(number) - 1), repr(float(number) + 1)]
        else:
            found += [number, str(int(number) - 1), str(int(number) + 1)]
    return tuple(dict.fromkeys(found))


def _plantable(rule: Rule, columns: Mapping[str, _Column]) -> bool:
    if rule.kind == "expression":
        return any(not columns[c].unique for c in rule.columns)
    if rule.kind == "unique":  # planted by copying the key (or the whole row) of another row
        return True
    column = columns[rule.column] if rule.column else None
    if column is None:
        return False
    spec = column.spec
    match rule.kind:
        case "min_length":
            return (spec.min_length or 0) >= 2
        case "minimum" | "maximum":
            return spec.logical_type in ("integer", "number")
        case "type":
            return spec.logical_type != "string"
    return True


def _expected(rule: Rule, rules: Sequence[Rule]) -> str:
    """What the validator reports for a row that breaks ``rule``: it and its duplicates."""
    if rule.kind == "unique":
        return ""
    same = [
        r.id
        for r in rules
        if r.kind == rule.kind and r.columns == rule.columns and r.expression == rule.expression
    ]
    return ",".join(sorted(same))


def _unique_ids(rule: Rule, rules: Sequence[Rule]) -> list[str]:
    """The unique rules a copy of ``rule``'s key repeats: every key within its columns (the
    source row has a value in each, ``_duplicate_source``)."""
    return sorted(r.id for r in _keys_within(rule, rules))


def _keys_within(rule: Rule, rules: Sequence[Rule]) -> list[Rule]:
    return [r for r in rules if r.kind == "unique" and set(r.columns) <= set(rule.columns)]


# --------------------------------------------------------------------------- valid rows


def _candidates(
    plan: _Plan,
    index: pl.Series,
    rng: Rng,
    null_share: float,
    names: Collection[str] | None = None,
    imply: bool = True,
) -> pl.DataFrame:
    """Independent draws for every column (or just ``names``), then the generic repairs
    (``imply``: with the implications, which a row rule's breakers must do without)."""
    n = index.len()
    columns = [c for c in plan.columns if names is None or c.name in names]
    nullable = [c.name for c in columns if c.nullable] if null_share > 0 else []
    empty = iter([rng.exactly(n, null_share) for _ in nullable])
    data: list[pl.Expr] = []
    for column in columns:
        values = _values(column, index, rng)
        if column.name in nullable:
            values = pl.when(pl.lit(pl.Series(next(empty)))).then(None).otherwise(values)
        data.append(values.alias(column.name))
    return _derive(plan, computed(n, *data) if data else pl.DataFrame(), imply)


def _derive(plan: _Plan, frame: pl.DataFrame, imply: bool = True) -> pl.DataFrame:
    """Generic repairs: order ``a <= b`` pairs, compute ``x = f(y)`` columns, give ``b`` its
    value where ``a IS NULL OR b = 'value'`` needs it (when the columns are present)."""
    present = set(frame.columns)
    implied = [(a, b, v) for a, b, v in plan.implications if imply and {a, b} <= present]
    if implied:
        frame = frame.with_columns(
            pl.when(plan.validator.clean(plan.column(a).spec).is_not_null())
            .then(pl.lit(value))
            .otherwise(pl.col(b))
            .alias(b)
            for a, b, value in implied
        )
    for left, op, right in plan.comparisons:
        if {left, right} <= present:
            frame = _order(plan, frame, left, op, right)
    for target, sql, roots in plan.assignments:
        if target in present and set(roots) <= present:
            frame = _compute(plan, frame, target, sql, roots)
    return frame


def _typed(plan: _Plan, name: str) -> pl.Expr:
    """A column of a text frame, typed as the validator types it; numerals by a plain cast
    (generated ones are plain, and the validator's exactness checks run Python per batch).
    Only the generic repairs use this: the validator still judges every row."""
    spec = plan.column(name).spec
    text = plan.validator.clean(spec)
    if spec.logical_type in ("integer", "number"):
        return text.cast(polars_type(spec), strict=False).alias(name)
    return plan.validator.typed_expr(spec, text).alias(name)


def _order(plan: _Plan, frame: pl.DataFrame, left: str, op: str, right: str) -> pl.DataFrame:
    """Swap the two values of an ``a <= b`` rule where they came out the wrong way."""
    a, b = _typed(plan, left), _typed(plan, right)
    swap = ((a > b) if op.startswith("<") else (a < b)).fill_null(False)
    swapped = (
        frame.lazy()
        .with_columns(swap.alias("__swap"))
        .with_columns(
            pl.when("__swap").then(pl.col(right)).otherwise(pl.col(left)).alias(left),
            pl.when("__swap").then(pl.col(left)).otherwise(pl.col(right)).alias(right),
        )
    )  # the typed values once: typing numbers runs Python per batch
    return swapped.drop("__swap").collect()


def _compute(
    plan: _Plan, frame: pl.DataFrame, target: str, sql: str, roots: Sequence[str]
) -> pl.DataFrame:
    """Set ``target`` to the value its ``target = <sql>`` rule demands (nulls stay null)."""
    try:
        typed = frame.lazy().select(_typed(plan, name) for name in roots)
        value = typed.select(pl.sql_expr(sql).alias("v")).collect()["v"]
    except pl.exceptions.PolarsError:
        return frame  # not computable after all: sampling and the oracle still apply
    text = pl.lit(_render(value, plan.column(target).spec))
    keep = pl.col(target).is_null() | text.is_null()
    return frame.with_columns(pl.when(keep).then(pl.col(target)).otherwise(text).alias(target))


def _render(value: pl.Series, spec: ColumnSpec) -> pl.Series:
    """A typed value as the text a delivery would carry for ``spec``."""
    if value.dtype == pl.Date:
        return value.dt.to_string(spec.date_format or "%Y-%m-%d")
    if isinstance(value.dtype, pl.Datetime):
        return computed_column(
            _stamp_text(pl.lit(value), spec, value.dtype.time_zone is None), len(value)
        )
    if value.dtype.is_float() and spec.logical_type == "integer":
        return value.round(0).cast(pl.Int64, strict=False).cast(pl.String)
    return value.cast(pl.String)


def _violation_sets(frame: pl.DataFrame) -> Oracle[pl.Series]:
    """Per row of ``frame``: the sorted, comma-joined ids of the rules it breaks ('' if none)."""
    found = yield frame
    sets = found.lazy().group_by(ROW).agg(pl.col("rule_id").sort().str.join(",").alias("ids"))
    rows = pl.LazyFrame({ROW: pl.int_range(0, frame.height, eager=True)})
    joined = rows.join(sets, on=ROW, how="left").sort(ROW)
    return joined.select(pl.col("ids").fill_null("")).collect()["ids"]


def _scatter(frame: pl.DataFrame, positions: pl.Series, rows: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the rows at ``positions`` replaced by ``rows``."""
    columns = []
    for name in frame.columns:
        values = frame[name].clone()
        values.scatter(positions, rows[name])
        columns.append(values)
    return pl.DataFrame(columns)


def _valid_frame(plan: _Plan, index: pl.Series, rng: Rng) -> Oracle[tuple[pl.DataFrame, list[int]]]:
    """Rows that break no rule: draw, validate, then repair only the rows that failed.

    A failing row re-draws just the columns of the rules it broke (row rules steered
    towards nulls and the rule's own literals), so a row under many rules converges
    instead of being re-rolled whole; every few rounds failing rows are re-rolled whole.
    Each round tries several repairs per row (up to REPAIR_ROWS candidates in all) and
    keeps the first the validator passes: a validator call costs about the same for 10
    rows or 1,000, so fewer, wider rounds are what makes generation fast.
    """
    frame = _candidates(plan, index, rng, NULL_SHARE)
    frame, awkward = _embed_awkward_text(plan, frame, rng)
    todo = pl.int_range(0, frame.height, eager=True)
    found = yield frame
    for round_ in range(RESAMPLE_ROUNDS):
        if found.height == 0:
            return frame, awkward
        local = found[ROW].unique().sort()
        bad = todo.gather(local)
        trials = max(1, min(MAX_REPAIR_TRIALS, REPAIR_ROWS // bad.len()))
        tried = pl.concat([bad] * trials)
        if round_ % 5 == 4:
            fixed = _candidates(plan, index.gather(tried), rng, NULL_SHARE)
        else:
            broken = pl.DataFrame(
                {ROW: local.search_sorted(found[ROW]).cast(pl.Int64), "rule_id": found["rule_id"]}
            )
            copies = [broken.with_columns(pl.col(ROW) + t * bad.len()) for t in range(trials)]
            fixed = _repair(plan, frame[tried], index.gather(tried), pl.concat(copies), rng)
        found = yield fixed
        kept, failing = first_passing(found, bad.len(), trials)
        frame = _scatter(frame, bad, fixed[kept])
        todo = bad.gather(failing)
        found = (
            found.lazy()
            .filter(pl.col(ROW).is_in(failing.to_list()))
            .with_columns(pl.lit(failing).search_sorted(pl.col(ROW)).cast(pl.Int64).alias(ROW))
            .collect()
        )
    worst = found["rule_id"].value_counts(sort=True)["rule_id"].head(3).to_list()
    raise GenerationError(
        f"contract {plan.contract.id}: cannot generate valid rows; rules {worst} keep failing "
        f"after {RESAMPLE_ROUNDS} repair rounds (contradictory or too narrow?)"
    )


def _repair(
    plan: _Plan,
    rows: pl.DataFrame,
    index: pl.Series,
    broken: pl.DataFrame,
    rng: Rng,
    pinned: pl.Series | None = None,
) -> pl.DataFrame:
    """Re-draw, in each row, the columns of the rules it broke (``broken``: ROW, rule_id).

    ``pinned`` ('|col|...|' per row) protects a planted defect: those cells stay, and the
    generic repairs (ordering, computed columns) are not run over them.
    """
    where: dict[str, list[int]] = {}  # rule id -> rows that broke it
    for row, rule_id in zip(broken[ROW].to_list(), broken["rule_id"].to_list(), strict=True):
        where.setdefault(rule_id, []).append(row)
    rules = [r for r in plan.contract.rules if r.id in where]
    fresh = _candidates(plan, index, rng, NULL_SHARE, {c for r in rules for c in r.columns})
    pins = pinned.to_list() if pinned is not None else None
    cells: list[tuple[str, list[int], pl.Expr]] = []  # column, rows, values for every row
    for rule in rules:
        for name in rule.columns:
            at = [i for i in where[rule.id] if pins is None or f"|{name}|" not in pins[i]]
            if not at:
                continue
            values: pl.Expr = pl.lit(fresh[name])
            if rule.kind == "expression":
                values = _steered(plan, plan.column(name), rule, values, rows.height, rng)
            cells.append((name, at, values.alias(f"__c{len(cells)}")))
    drawn = computed(rows.height, *(values for _, _, values in cells))
    columns = {name: rows[name].clone() for name in rows.columns}
    for k, (name, at, _) in enumerate(cells):
        positions = pl.Series(at, dtype=pl.Int64)
        columns[name].scatter(positions, drawn[f"__c{k}"].gather(positions))
    repaired = pl.DataFrame(list(columns.values()))
    return repaired if pinned is not None else _derive(plan, repaired)


def _steered(plan: _Plan, column: _Column, rule: Rule, fresh: pl.Expr, n: int, rng: Rng) -> pl.Expr:
    """Values where row rules flip: fresh draws, nulls, the rule's literals (not for keys)."""
    if column.unique:
        return fresh
    literals = list(plan.literals.get(rule.id, ()))
    options: list[Values] = [fresh]
    if column.nullable:
        options.append(None)
    if literals:
        options.append(choose(literals, rng.ints(n, 0, len(literals) - 1)))
    return choose(options, rng.ints(n, 0, len(options) - 1))


def _embed_awkward_text(
    plan: _Plan, frame: pl.DataFrame, rng: Rng
) -> tuple[pl.DataFrame, list[int]]:
    """Put quoted newlines and commas in two free-text cells, as real exports have."""
    free = [
        c
        for c in plan.columns
        if c.spec.logical_type == "string"
        and c.spec.pattern is None
        and c.codec is None
        and not c.spec.allowed_values
        and (c.spec.min_length or 0) <= len(AWKWARD_TEXT)
    ]
    if not free or frame.height < 10:
        return frame, []
    column = free[0]
    text = AWKWARD_TEXT[: column.spec.max_length] if column.spec.max_length else AWKWARD_TEXT
    positions = sorted(rng.py.sample(range(frame.height), 2))
    values = frame[column.name].clone()
    values.scatter(positions, [text.strip()] * 2)
    return frame.with_columns(values), positions


# --------------------------------------------------------------------------- defects


def _bad_values(plan: _Plan, rule: Rule, valid: pl.Series, attempt: int, rng: Rng) -> pl.Expr:
    """A value breaking a single-column rule, one of its kind's defects (``rule_kinds``)
    derived from the row's valid value; null spellings only where they are the defect."""
    spec = plan.column(rule.column or "").spec
    options = REGISTRY[rule.kind].defects(spec, pl.lit(valid))
    nulls = plan.contract.null_values
    if rule.kind == "required":  # the contract's own null spellings are defects too
        kept = [*options, *nulls]
    else:
        kept = [o for o in options if not isinstance(o, str) or o not in nulls]
    if not kept:
        raise AssertionError(f"{rule.id}: its kind plants no defect")
    return choose(kept, rng.ints(valid.len(), 0, 1_000) + attempt)


def _break_expression(
    plan: _Plan, rule: Rule, rows: pl.DataFrame, attempt: int, rng: Rng
) -> pl.DataFrame:
    """Candidates breaking a row rule: a swap for ``a <= b``, else values steered by sampling."""
    trials = pl.concat([rows] * EXPRESSION_TRIALS)
    n = trials.height
    fresh = _candidates(plan, pl.int_range(n, eager=True), rng, 0.0, set(rule.columns), False)
    mutable = [plan.column(c) for c in rule.columns if not plan.column(c).unique]
    for column in mutable:
        twins = [
            trials[o.name] for o in mutable
            if o is not column and o.spec.logical_type == column.spec.logical_type
        ]  # fmt: skip
        steered = _steered(plan, column, rule, pl.lit(fresh[column.name]), n, rng)
        options = [trials[column.name], steered, steered, *twins[:1]]
        picked = computed_column(choose(options, rng.ints(n, 0, len(options) - 1)), n)
        trials = trials.with_columns(picked.alias(column.name))
    match = _COMPARISON.match(rule.expression or "")
    if match and attempt == 0 and match[1] in rows.columns and match[3] in rows.columns:
        swapped = rows.with_columns(
            pl.col(match[1]).alias(match[3]), pl.col(match[3]).alias(match[1])
        )
        trials = pl.concat([swapped, trials])
    return trials


@dataclass
class _Defects:
    """Defects being planted: row position -> rule, and the rows already settled."""

    assigned: dict[int, Rule]
    sources: dict[int, int]  # unique defects: target position -> source position
    planted: dict[int, Rule] = field(default_factory=dict)


def _assign(
    plan: _Plan, frame: pl.DataFrame, defect_rate: float, rng: Rng, spare: set[int]
) -> _Defects:
    """Round-robin over the contract's rules in a seeded order, so every rule gets planted."""
    n = frame.height
    rules = list(plan.plantable)
    count = min(round(n * defect_rate), max(0, n - len(spare)))
    if not rules or count == 0 or n < 4:
        return _Defects({}, {})
    rng.py.shuffle(rules)
    pool = [p for p in rng.py.sample(range(n), min(n, count + len(spare))) if p not in spare]
    assigned = {p: rules[i % len(rules)] for i, p in enumerate(pool[:count])}
    sources: dict[int, int] = {}
    taken = set(assigned) | spare
    for pos, rule in list(assigned.items()):
        if rule.kind == "unique":
            needed = {c for r in _keys_within(rule, plan.contract.rules) for c in r.columns}
            keys = frame.select(sorted(needed))
            source = _duplicate_source(keys, plan.contract.null_values, taken, rng)
            if source is None:
                del assigned[pos]
                continue
            sources[pos] = source
            taken.add(source)
    return _Defects(assigned, sources)


def _duplicate_source(
    keys: pl.DataFrame, nulls: Sequence[str], taken: set[int], rng: Rng
) -> int | None:
    """A row, not otherwise used, with a value in every key column: copying it makes a
    duplicate of every key among them."""
    for _ in range(64):
        pos = rng.py.randrange(keys.height)
        row = keys.row(pos)
        if pos not in taken and all(v is not None and v.strip() not in nulls for v in row):
            return pos
    return None


def _apply_defects(
    plan: _Plan,
    valid: pl.DataFrame,
    index: pl.Series,
    rows: pl.DataFrame,
    defects: _Defects,
    attempt: int,
    rng: Rng,
) -> pl.DataFrame:
    """Candidates (several per row) with each row's assigned defect planted.

    Single-cell defects get DEFECT_TRIALS tries, written into copies of ``rows`` (not a
    frame per rule), so that most rows are settled by the first validator call."""
    names = plan.contract.column_names
    copies = pl.concat([rows.select(*names, "__pos")] * DEFECT_TRIALS)
    positions = copies["__pos"]
    groups: dict[str, list[int]] = {}  # rule id -> offsets in rows
    for i, pos in enumerate(rows["__pos"].to_list()):
        groups.setdefault(defects.assigned[pos].id, []).append(i)
    columns = {name: copies[name].clone() for name in names}
    cells: list[int] = []  # offsets of rows whose defect is one changed cell
    bad: list[tuple[str, pl.Series, pl.Expr]] = []  # column, offsets, its bad values there
    parts: list[pl.DataFrame] = []
    for rule_id, offsets in groups.items():
        rule = plan.contract.rule(rule_id)
        if rule.kind == "expression":
            group = rows[offsets].select(*names, "__pos")
            parts.append(_break_expression(plan, rule, group, attempt, rng))
            continue
        offsets = [o + t * rows.height for t in range(DEFECT_TRIALS) for o in offsets]
        at = pl.Series(offsets, dtype=pl.Int64)
        cells += offsets
        where = positions.gather(at)
        name = rule.column or ""
        if rule.kind == "unique":
            sources = [defects.sources[p] for p in where]
            for key in rule.columns:
                columns[key].scatter(at, valid[key].gather(sources))
            continue
        base = valid[name].gather(where)  # break the valid value, or a new one
        if base.null_count():
            new = _values(plan.column(name), index.gather(where), rng)
            base = base.fill_null(computed_column(new, base.len()))
        bad.append((name, at, _bad_values(plan, rule, base, attempt, rng)))
    for (name, at, _), values in zip(bad, computed_apart([v for _, _, v in bad]), strict=True):
        columns[name].scatter(at, values)
    if cells:
        changed = pl.DataFrame([*columns.values(), positions])
        parts.insert(0, changed[pl.Series(sorted(cells), dtype=pl.Int64)])
    return pl.concat(parts, how="vertical")


def _judge(plan: _Plan, candidates: pl.DataFrame, defects: _Defects) -> Oracle[pl.DataFrame]:
    """The best candidate per row: exact (0), planted plus extras (1), defect missing (2)."""
    expected = pl.Series(
        [plan.expected[defects.assigned[p].id] for p in candidates["__pos"].to_list()],
        dtype=pl.String,
    )
    found = yield from _violation_sets(candidates.select(plan.contract.column_names))
    found_ids, expected_ids = pl.col("__found"), pl.col("__expected")
    missing = expected_ids.str.split(",").list.set_difference(found_ids.str.split(",")).list.len()
    score = (
        pl.when(found_ids == expected_ids)
        .then(0)
        .when((expected_ids == "") | (missing == 0))
        .then(1)
        .otherwise(2)
    )
    judged = (
        candidates.lazy()
        .select(*plan.contract.column_names, "__pos")
        .with_columns(found.alias("__found"), expected.alias("__expected"))
        .with_columns(score.alias("__score"), found_ids.str.len_chars().alias("__noise"))
    )
    best = judged.sort("__pos", "__score", "__noise", maintain_order=True)
    return best.unique("__pos", keep="first", maintain_order=True).collect()


def _repair_extras(
    plan: _Plan, state: pl.DataFrame, index: pl.Series, defects: _Defects, rng: Rng
) -> pl.DataFrame:
    """Re-draw the cells behind rules a defective row breaks besides its planted one."""
    trials = pl.concat([state] * REPAIR_TRIALS)
    positions = trials["__pos"]
    rules = [defects.assigned[p] for p in positions.to_list()]
    pinned = pl.Series([f"|{'|'.join(r.columns)}|" for r in rules], dtype=pl.String)
    extras = trials.select(
        pl.int_range(0, trials.height, dtype=pl.Int64).alias(ROW),
        pl.col("__found")
        .str.split(",")
        .list.set_difference(pl.col("__expected").str.split(","))
        .alias("rule_id"),
    ).explode("rule_id")
    broken = extras.filter(pl.col("rule_id").is_not_null() & (pl.col("rule_id") != ""))
    rows = trials.select(plan.contract.column_names)
    repaired = _repair(plan, rows, index.gather(positions), broken, rng, pinned)
    return repaired.with_columns(positions)


def _plant(
    plan: _Plan, valid: pl.DataFrame, index: pl.Series, defects: _Defects, rng: Rng
) -> Oracle[pl.DataFrame]:
    """Plant each row's defect, then repair whatever else it happened to break.

    A row is kept defective only when the validator reports exactly its planted rule (and
    that rule's duplicates); rows still off after DEFECT_ATTEMPTS rounds stay valid.
    """
    if not defects.assigned:
        return valid
    frame = valid
    positions = pl.Series("__pos", sorted(defects.assigned), dtype=pl.Int64)
    first = _apply_defects(
        plan, valid, index, valid[positions].with_columns(positions), defects, 0, rng
    )
    state = yield from _judge(plan, first, defects)
    for attempt in range(1, DEFECT_ATTEMPTS + 1):
        done = state.filter(pl.col("__score") == 0)
        if done.height:
            frame = _scatter(frame, done["__pos"], done.select(plan.contract.column_names))
            for pos in done["__pos"].to_list():
                defects.planted[pos] = defects.assigned.pop(pos)
        state = state.filter(pl.col("__score") > 0)
        if state.height == 0 or attempt == DEFECT_ATTEMPTS:
            break
        restart = pl.col("__score") == 2 if attempt % 3 else pl.lit(True)
        again = state.filter(restart).select("__pos")
        parts = []
        if again.height:
            rows = valid[again["__pos"]].with_columns(again["__pos"])
            parts.append(_apply_defects(plan, valid, index, rows, defects, attempt, rng))
        stuck = state.filter(~restart)
        if stuck.height:
            parts.append(_repair_extras(plan, stuck, index, defects, rng))
        state = yield from _judge(plan, pl.concat(parts, how="vertical"), defects)
    defects.assigned.clear()  # the rest stay valid, unplanted
    return frame


def _drop_collisions(
    plan: _Plan,
    frame: pl.DataFrame,
    valid: pl.DataFrame,
    defects: _Defects,
    seen: dict[str, set[str]],
) -> pl.DataFrame:
    """A defect value repeating a key (two ids of -1) would be an unplanned duplicate.

    Only defect values can collide: valid keys are distinct by construction, and a defect
    value breaks a single-column rule its column's valid values keep, so it differs from
    all of them. ``seen`` carries earlier chunks' defect keys so a streamed file agrees.
    """
    for column in (c for c in plan.columns if c.unique):
        touched = [
            p for p, r in defects.planted.items() if r.column == column.name and r.kind != "unique"
        ]
        if not touched:
            continue
        where = pl.Series(touched, dtype=pl.Int64)
        keys = frame[where].select(plan.validator.clean(column.spec).alias("k"))["k"].to_list()
        taken = seen.setdefault(column.name, set())
        offenders: list[int] = []
        for pos, key in zip(touched, keys, strict=True):
            if key is None:
                continue
            if key in taken:
                offenders.append(pos)
            taken.add(key)
        if offenders:
            back = pl.Series(offenders, dtype=pl.Int64)
            frame = _scatter(frame, back, valid[back])
            for p in offenders:
                defects.planted.pop(p)
    return frame


def _planted_table(plan: _Plan, defects: _Defects, offset: int) -> pl.DataFrame:
    rows: list[tuple[int, str]] = []
    for pos, rule in defects.planted.items():
        if rule.kind == "unique":
            ids = _unique_ids(rule, plan.contract.rules)
            rows += [(p + offset + 1, i) for p in (pos, defects.sources[pos]) for i in ids]
        else:
            rows += [(pos + offset + 1, i) for i in plan.expected[rule.id].split(",")]
    table = pl.DataFrame(rows, schema=PLANTED_SCHEMA, orient="row")
    return table.unique().sort("row_number", "rule_id")


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True, eq=False)
class GeneratedDelivery:
    """A generated delivery and the defects planted in it (row numbers are 1-based)."""

    frame: pl.DataFrame  # all Utf8, headers as delivered (first source name if any)
    planted: pl.DataFrame  # row_number Int64, rule_id str
    headers: Mapping[str, str]  # contract column -> delivered header
    row_offset: int = 0

    def contract_frame(self, file: str = "") -> pl.DataFrame:
        """The frame as RowValidator takes it: contract column names plus FILE and ROW."""
        back = {header: name for name, header in self.headers.items()}
        first = self.row_offset + 1
        return self.frame.rename(back).with_columns(
            pl.lit(file).alias(FILE),
            pl.int_range(first, first + self.frame.height, dtype=pl.Int64).alias(ROW),
        )


def delivered_headers(contract: Contract, source_headers: bool = True) -> dict[str, str]:
    """Header per column: the first source spelling when there is one (as agencies send)."""
    return {
        c.name: (c.source_names[0] if source_headers and c.source_names else c.name)
        for c in contract.columns
    }


def generate_rows(
    contract: Contract,
    n_rows: int,
    *,
    seed: int,
    defect_rate: float = 0.02,
    source_headers: bool = True,
    row_offset: int = 0,
    total_rows: int | None = None,
) -> GeneratedDelivery:
    """Generate ``n_rows`` realistic rows, ``defect_rate`` of them breaking one rule each.

    ``row_offset``/``total_rows`` place this chunk inside a larger delivery (streaming):
    keys are derived from the global row index, so they stay unique across chunks.
    """
    total = total_rows if total_rows is not None else row_offset + n_rows
    plan = _plan(contract, seed, total)
    steps = _generate_chunk(plan, n_rows, row_offset, Rng(seed), defect_rate, source_headers, {})
    return answer(plan.validator, steps)


class RowsRequest(NamedTuple):
    """The arguments of one ``generate_rows`` call, for ``generate_many``."""

    contract: Contract
    n_rows: int
    seed: int
    defect_rate: float = 0.02


def generate_many(requests: Sequence[RowsRequest]) -> list[GeneratedDelivery]:
    """``generate_rows`` for every request, in lockstep: the requests of one contract share
    each validator call (a call costs about the same for 10 rows or 10,000). Each delivery
    is the one ``generate_rows`` makes alone, byte for byte."""
    validators: dict[int, RowValidator] = {}  # one per contract object: its requests batch
    jobs: list[tuple[RowValidator, Oracle[GeneratedDelivery]]] = []
    for contract, n_rows, seed, defect_rate in requests:
        if id(contract) not in validators:
            validators[id(contract)] = RowValidator(contract)
        plan = _plan(contract, seed, n_rows, validators[id(contract)])
        jobs.append(
            (plan.validator, _generate_chunk(plan, n_rows, 0, Rng(seed), defect_rate, True, {}))
        )
    return answer_together(jobs)


def _generate_chunk(
    plan: _Plan,
    n_rows: int,
    offset: int,
    rng: Rng,
    defect_rate: float,
    source_headers: bool,
    seen: dict[str, set[str]],
) -> Oracle[GeneratedDelivery]:
    """One chunk, as a coroutine asking the oracle (``answer`` runs it alone)."""
    index = pl.int_range(offset, offset + n_rows, eager=True, dtype=pl.Int64)
    valid, awkward = yield from _valid_frame(plan, index, rng)
    defects = _assign(plan, valid, defect_rate, rng, set(awkward))
    frame = yield from _plant(plan, valid, index, defects, rng)
    frame = _drop_collisions(plan, frame, valid, defects, seen)
    headers = delivered_headers(plan.contract, source_headers)
    return GeneratedDelivery(
        frame=frame.rename(headers),
        planted=_planted_table(plan, defects, offset),
        headers=headers,
        row_offset=offset,
    )


def write_delivery(
    frame: pl.DataFrame,
    path: Path,
    fmt: Format | None = None,
    *,
    bom: bool = False,
    crlf: bool = False,
) -> Path:
    """Write a delivery as an agency would: CSV (optionally BOM + CRLF), JSONL, JSON, Parquet.

    ``fmt`` defaults to the file's suffix. Values stay text in every format.
    """
    fmt = fmt or _format_of(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    match fmt:
        case "csv":
            terminator = "\r\n" if crlf else "\n"
            frame.write_csv(
                path, include_bom=bom, line_terminator=terminator, quote_style="necessary"
            )
        case "jsonl":
            frame.write_ndjson(path)
        case "json":
            frame.write_json(path)
        case "parquet":
            frame.write_parquet(path)
        case _:
            raise ValueError(f"unknown delivery format {fmt!r}")
    return path


def _format_of(path: Path) -> Format:
    suffix = path.suffix.lower().lstrip(".")
    formats: dict[str, Format] = {
        "csv": "csv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "json", "parquet": "parquet",
    }  # fmt: skip
    if suffix not in formats:
        raise ValueError(f"cannot tell the delivery format of {path}")
    return formats[suffix]


def write_large_csv(
    contract: Contract,
    path: Path,
    n_rows: int,
    *,
    seed: int,
    chunk_rows: int = 500_000,
    defect_rate: float = 0.02,
    bom: bool = False,
    crlf: bool = False,
    source_headers: bool = True,
) -> pl.DataFrame:
    """Stream a big CSV chunk by chunk (memory bounded by ``chunk_rows``); return what was planted.

    Row numbers run on across chunks and keys come from the global row index, so the file is
    one delivery: unique across chunks, duplicates only where planted (within a chunk).
    """
    plan = _plan(contract, seed, n_rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    planted = [pl.DataFrame(schema=PLANTED_SCHEMA)]
    seen: dict[str, set[str]] = {}  # defect values already used in key columns
    terminator = "\r\n" if crlf else "\n"
    with path.open("wb") as handle:
        if n_rows == 0:
            header = delivered_headers(contract, source_headers).values()
            pl.DataFrame(schema=dict.fromkeys(header, pl.String)).write_csv(
                handle, include_bom=bom, line_terminator=terminator
            )
        for number, offset in enumerate(range(0, n_rows, chunk_rows)):
            size = min(chunk_rows, n_rows - offset)
            rng = Rng(f"{seed}:chunk:{number}")
            steps = _generate_chunk(plan, size, offset, rng, defect_rate, source_headers, seen)
            chunk = answer(plan.validator, steps)
            chunk.frame.write_csv(
                handle,
                include_bom=bom and offset == 0,
                include_header=offset == 0,
                line_terminator=terminator,
                quote_style="necessary",
            )
            planted.append(chunk.planted)
    return pl.concat(planted, how="vertical")


@dataclass(frozen=True)
class PlantedAnomaly:
    """A delivery the demo makes unusual on purpose, and what the monitors must say."""

    agency: str
    dataset: str
    day_index: int  # which demo day (0 = the first)
    volume_factor: float  # share of the usual row count delivered
    severity: str  # WARN or ERROR, by DPLA's rules (drop >= 15% WARN, >= 30% ERROR)
    rule: str = "monitor.count_drop"


# One ERROR (held out of the cross-agency outputs by the certification gate) and one WARN.
DEMO_ANOMALIES = (
    PlantedAnomaly("national-archives", "media_items", 3, 0.55, "ERROR"),
    PlantedAnomaly("nasa", "meteorites", 5, 0.78, "WARN"),
)


def planted_anomalies(
    agencies: Sequence[str], days: Sequence[dt.date]
) -> dict[tuple[str, str, dt.date], PlantedAnomaly]:
    """The planted anomalies that fall within a demo's agencies and days."""
    return {
        (a.agency, a.dataset, days[a.day_index]): a
        for a in DEMO_ANOMALIES
        if a.agency in agencies and a.day_index < len(days)
    }


def generate_landing(
    landing_root: Path,
    registry: Registry,
    *,
    agencies: Sequence[str] | None = None,
    days: int | Sequence[dt.date],
    seed: int,
    rows_per_delivery: int = 200,
) -> list[Path]:
    """Write ``<agency>/<dataset>/<day>/<dataset>_<day>.csv`` for the demo; same seed, same bytes.

    Row counts wobble by VOLUME_WOBBLE per day (except the DEMO_ANOMALIES) and defect rates
    differ per agency so the demo summary has contrast; a few agencies send BOM + CRLF
    files, and one delivery each is JSONL and Parquet.
    """
    # spending.py builds on this module's deliveries, so it is imported here, not at the top
    from flux_pipelines.demo.spending import DEMO_RECIPIENTS, SPENDING_DATASET, overlay, recipients

    dates = (
        [DEMO_START + dt.timedelta(days=i) for i in range(days)] if isinstance(days, int) else days
    )
    chosen = [registry.agency(a) for a in agencies] if agencies is not None else registry.agencies
    deliveries = [
        (agency.id, dataset, day)
        for agency in chosen
        for dataset in agency.datasets
        for day in dates
        if _in_force(registry, dataset, day)
    ]
    formats = dict(zip(deliveries, _delivery_formats(len(deliveries)), strict=True))
    anomalies = planted_anomalies([a.id for a in chosen], dates)
    # Referenced datasets first, so references can point at rows the agency really sent.
    order = sorted(deliveries, key=lambda d: _depth(registry, d[1]))
    requests: list[RowsRequest] = []
    draws: list[tuple[float, bool, random.Random]] = []
    for agency, dataset, day in order:
        style = random.Random(f"{seed}/{agency}")
        rate = style.choice((0.0, 0.005, 0.01, 0.02, 0.05, 0.1))
        windows = style.random() < 0.3
        local = random.Random(f"{seed}/{agency}/{dataset}/{day.isoformat()}")
        volume = local.uniform(1 - VOLUME_WOBBLE, 1 + VOLUME_WOBBLE)
        if (planted := anomalies.get((agency, dataset, day))) is not None:
            volume = planted.volume_factor
        n_rows = max(1, round(rows_per_delivery * volume))
        contract = registry.contract_for(dataset, day)
        requests.append(RowsRequest(contract, n_rows, local.getrandbits(63), rate))
        draws.append((rate, windows, local))
    written: list[Path] = []
    generated: dict[tuple[str, str, dt.date], GeneratedDelivery] = {}
    for (agency, dataset, day), request, delivery, (rate, windows, local) in zip(
        order, requests, generate_many(requests), draws, strict=True
    ):
        contract = request.contract
        delivery = link_references(
            delivery,
            contract,
            {d: g for (a, d, when), g in generated.items() if a == agency and when == day},
            seed=local.getrandbits(63),
            orphan_rate=rate / 2,
        )
        if dataset == SPENDING_DATASET:
            delivery = overlay(
                delivery,
                recipients(DEMO_RECIPIENTS, seed=random.Random(f"{seed}/{agency}").getrandbits(32)),
                day=day,
                seed=local.getrandbits(63),
            )
        generated[(agency, dataset, day)] = delivery
        fmt = formats[(agency, dataset, day)]
        stem = f"{dataset}_{day.isoformat()}"
        path = landing_root / agency / dataset / day.isoformat() / f"{stem}.{fmt}"
        written.append(write_delivery(delivery.frame, path, fmt, bom=windows, crlf=windows))
    return sorted(written)


def _depth(registry: Registry, dataset: str, seen: frozenset[str] = frozenset()) -> int:
    """How many reference hops a dataset is from one that references nothing."""
    parents = {d for r in registry.latest(dataset).cross_rules for d in r.datasets}
    if not parents or dataset in seen:
        return 0
    return 1 + max(_depth(registry, p, seen | {dataset}) for p in parents)


def link_references(
    delivery: GeneratedDelivery,
    contract: Contract,
    siblings: Mapping[str, GeneratedDelivery],
    *,
    seed: int,
    orphan_rate: float,
) -> GeneratedDelivery:
    """Point foreign keys at rows of the referenced delivery of the same agency and day.

    Rows keep their generated (orphan) key with probability ``orphan_rate``; those are
    recorded as planted violations of the reference rule. Rows with a planted defect in a
    key column, or an empty key, are left alone.
    """
    frame, planted = delivery.frame, delivery.planted
    rng = random.Random(seed)
    for rule in contract.cross_rules:
        parent = siblings.get(rule.datasets[0]) if rule.kind == "reference" else None
        if parent is None:
            continue
        target_cols = rule.target_columns
        keys = parent.frame.select(
            pl.col(parent.headers[c]).alias(m)
            for m, c in zip(rule.columns, target_cols, strict=True)
        )
        if keys.height == 0:
            continue
        mine = [delivery.headers[c] for c in rule.columns]
        defective = set(
            planted.filter(
                pl.col("rule_id").is_in(
                    [r.id for r in contract.rules if r.column in set(rule.columns)]
                )
            )
            .get_column("row_number")
            .to_list()
        )
        picks = [rng.randrange(keys.height) for _ in range(frame.height)]
        orphan = [rng.random() < orphan_rate for _ in range(frame.height)]
        first = delivery.row_offset + 1
        present = frame.select(pl.all_horizontal(pl.col(c).is_not_null() for c in mine)).to_series()
        link = [
            bool(present[i]) and not orphan[i] and (first + i) not in defective
            for i in range(frame.height)
        ]
        chosen = keys[picks]
        frame = frame.with_columns(
            pl.when(pl.Series(link)).then(chosen.get_column(m)).otherwise(pl.col(h)).alias(h)
            for m, h in zip(rule.columns, mine, strict=True)
        )
        known = set(keys.iter_rows())
        orphans = [
            first + i
            for i, row in enumerate(frame.select(mine).iter_rows())
            if bool(present[i]) and (first + i) not in defective and tuple(row) not in known
        ]
        planted = pl.concat(
            [
                planted,
                pl.DataFrame(
                    {"row_number": orphans, "rule_id": [rule.id] * len(orphans)},
                    schema=PLANTED_SCHEMA,
                ),
            ]
        )
    return GeneratedDelivery(
        frame=frame, planted=planted, headers=delivery.headers, row_offset=delivery.row_offset
    )


def _in_force(registry: Registry, dataset: str, day: dt.date) -> bool:
    try:
        registry.contract_for(dataset, day)
    except ConfigurationError:
        return False
    return True


def _delivery_formats(count: int) -> list[Format]:
    """All CSV but one JSONL and one Parquet, placed deterministically in the set."""
    formats: list[Format] = ["csv"] * count
    if count >= 1:
        formats[count // 3] = "jsonl"
    if count >= 2:
        formats[(2 * count) // 3 if (2 * count) // 3 != count // 3 else count - 1] = "parquet"
    return formats
