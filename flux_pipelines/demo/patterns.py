"""Random strings that match a contract's pattern: a tiny regex parser and sampler.

Why: a column's ``pattern`` is the most precise statement of what its values look like, so
valid text is drawn from the pattern itself. Only the regex subset contracts use is
modelled (classes, escapes, groups, alternation, repetition); anything else is refused
with ``UnsupportedPatternError`` and the column falls back to examples or words.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass

import polars as pl

from flux_pipelines.demo.draws import Rng, char_run, choose, computed_column, concat


class UnsupportedPatternError(ValueError):
    """The pattern uses regex syntax the tiny generator does not model."""


@dataclass(frozen=True, eq=False)
class Chars:
    """One character drawn from ``chars`` (a literal is a one-character class)."""

    chars: str


@dataclass(frozen=True, eq=False)
class Repeat:
    node: Node
    lo: int
    hi: int | None


@dataclass(frozen=True, eq=False)
class Alt:
    branches: tuple[tuple[Node, ...], ...]


Node = Chars | Repeat | Alt
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

    def parse(self) -> Alt:
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

    def _alternation(self) -> Alt:
        branches = [self._sequence()]
        while self._peek() == "|":
            self.pos += 1
            branches.append(self._sequence())
        return Alt(tuple(branches))

    def _sequence(self) -> tuple[Node, ...]:
        nodes: list[Node] = []
        while self._peek() not in ("", "|", ")"):
            atom = self._atom()
            if atom is not None:
                nodes.append(self._quantified(atom))
        return tuple(nodes)

    def _atom(self) -> Node | None:
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
            return Chars(self._class())
        if char == "\\":
            return self._escape()
        if char == ".":
            return Chars(_ANY)
        if char in "*+?{":
            raise UnsupportedPatternError(f"dangling quantifier in {self.text!r}")
        return Chars(char)

    def _escape(self) -> Chars | None:
        char = self._take()
        if char in ("b", "B", "A", "z", "Z"):
            return None
        if char in _ESCAPES:
            return Chars(_ESCAPES[char])
        if char == "" or char.isalnum():
            raise UnsupportedPatternError(f"escape \\{char} in {self.text!r}")
        return Chars(char)

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

    def _quantified(self, atom: Node) -> Node:
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
            atom = Repeat(atom, *bounds)


@functools.lru_cache(maxsize=512)
def parse_pattern(pattern: str) -> Alt:
    """Parse a contract pattern into the generator's tree (raises UnsupportedPatternError);
    memoised: every delivery's plan parses its contract's patterns, and trees are immutable."""
    return _PatternParser(pattern).parse()


def _repeat_top(lo: int, hi: int | None) -> int:
    return lo + OPEN_REPEAT_EXTRA if hi is None else min(hi, lo + BOUNDED_REPEAT_EXTRA)


def sample_tree(node: Node, n: int, rng: Rng) -> pl.Expr:
    """n random strings matching ``node`` (vectorised: runs of character slots at once)."""
    if isinstance(node, Chars):
        return char_run(node.chars, 1, 1, n, rng)
    if isinstance(node, Repeat) and isinstance(node.node, Chars):
        return char_run(node.node.chars, node.lo, _repeat_top(node.lo, node.hi), n, rng)
    if isinstance(node, Alt):
        parts = [concat([sample_tree(x, n, rng) for x in b]) for b in node.branches]
        if len(parts) == 1:
            return parts[0]
        return choose(parts, rng.ints(n, 0, len(parts) - 1))
    top = _repeat_top(node.lo, node.hi)
    pieces = [sample_tree(node.node, n, rng) for _ in range(node.lo)]
    if top > node.lo:
        counts = pl.lit(rng.ints(n, node.lo, top))
        pieces += [
            pl.when(counts > j).then(sample_tree(node.node, n, rng)).otherwise(pl.lit(""))
            for j in range(node.lo, top)
        ]
    return concat(pieces)


def sample_pattern(pattern: str, n: int, *, seed: int) -> pl.Series:
    """n seeded random strings matching ``pattern`` (for tests and ad-hoc fixtures)."""
    return computed_column(sample_tree(parse_pattern(pattern), n, Rng(seed)), n)
