"""Unique keys: distinct values for every row, even across streamed chunks.

Why: a key column must not repeat by accident (only planted duplicates may), and a delivery
streamed in chunks cannot remember the keys it already wrote. So keys are a function of the
global row index: text keys spell it in the pattern's character slots (``KeyCodec``),
integer keys are a base plus a stride per row (``integer_keys``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import polars as pl

from flux_pipelines.contracts.model import ColumnSpec
from flux_pipelines.demo.draws import Rng, concat, gather
from flux_pipelines.demo.errors import GenerationError
from flux_pipelines.demo.patterns import Alt, Chars, Node, Repeat, sample_tree


def _repeats(node: Node) -> Iterator[Repeat]:
    """Repeat nodes on the fixed path a key takes through the pattern (first branches)."""
    if isinstance(node, Alt):
        for child in node.branches[0]:
            yield from _repeats(child)
    elif isinstance(node, Repeat):
        yield node
        yield from _repeats(node.node)


def _skeleton(node: Node, counts: Mapping[int, int]) -> list[str]:
    """The character classes of one fixed shape of the pattern, left to right."""
    if isinstance(node, Chars):
        return [node.chars]
    if isinstance(node, Alt):
        return [slot for child in node.branches[0] for slot in _skeleton(child, counts)]
    return _skeleton(node.node, counts) * counts[id(node)]


@dataclass(frozen=True)
class KeyCodec:
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
                parts[i] if i in parts else sample_tree(Chars(s), n, rng)
                for i, s in enumerate(self.slots)
            ]
        )


def key_codec(tree: Alt, total: int, rng: Rng) -> KeyCodec:
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
    return KeyCodec(
        slots=tuple(slots),
        keyed=tuple(keyed),
        shifts=tuple(rng.py.randrange(len(slots[p])) for p in keyed),
        mults=tuple(rng.py.randrange(1, 1000) for _ in keyed),
    )


def integer_keys(
    spec: ColumnSpec, int_range: tuple[int, int], total: int, rng: Rng
) -> tuple[int, int]:
    """Base and stride of unique integers: key = base + index * stride + jitter < stride."""
    lo, hi = int_range
    span = hi - lo + 1
    if spec.logical_type == "integer" and total > span:
        raise GenerationError(f"{spec.name}: {total} unique integers do not fit [{lo}, {hi}]")
    step = max(1, min(7, span // max(total, 1)))
    return lo + rng.py.randrange(max(1, min(span - total * step, 10_000) + 1)), step


def key_pattern(spec: ColumnSpec) -> str:
    """A key shape for a unique text column without a pattern, from its first example."""
    for example in spec.examples:
        match = re.fullmatch(r"([A-Za-z]+[-_/ ]?)(\d+)", example)
        if match:
            return f"^{re.escape(match[1])}[0-9]{{{len(match[2])},}}$"
    initials = "".join(part[:1] for part in spec.name.split("_") if part).upper() or "K"
    return f"^{initials}-[0-9]{{6,}}$"
