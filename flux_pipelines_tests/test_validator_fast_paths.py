"""The ingest path's fast paths give the general path's verdicts on dirty input.

Each fast path skips work where it can prove the outcome (a clean numeral, a block with few
quotes); these tests run the general path on every value of a hostile corpus and require
the same answer, value by value.
"""

from __future__ import annotations

import random
from decimal import Decimal

import polars as pl
import pytest

from flux_pipelines.contracts.model import SizeLimits
from flux_pipelines.contracts.validator import (
    _keeps_digits,
    _spelled_integers,
    integer_value,
    number_value,
)
from flux_pipelines.ingest import scanning
from flux_pipelines.ingest.scanning import RecordScan

# Numerals, near misses and values that need the slow paths: exponents, long digit runs,
# values past 64 bits or a float's exactness, signs, points, words, empty and null.
SPELLINGS = [
    "5", "+5", "-5", "05", "5.0", "5.", ".5", "5e0", "50e-1", "5E0", "1.5e1", "5.5", "-0",
    "0.1", "78.400000000000006", "9007199254740993", "9007199254740993.0", "1e-400", "1e309",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "1e999999999",
    "123456789012345", "1234567890123456", "1234567890123456789", "0.30000000000000004",
    "abc", "12abc", "1,000", "0x5", "inf", "-inf", "nan", "NaN", "Infinity", "", "\u0661",
    "3810043,63x", "1e", "e5", ".", "+", "--5", "5e+3", "5e-3", "0e0", "000", "1_000",
]  # fmt: skip
ALPHABET = "0123456789+-.eE,x"


def _corpus(seed: int = 5, n: int = 4000) -> list[str | None]:
    rng = random.Random(seed)
    made = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 22))) for _ in range(n)]
    return [*SPELLINGS, *made, None, None]


def _chunked(values: list[str | None], parts: int = 7) -> pl.Series:
    """A text column in several chunks, as the CSV reader hands it over."""
    size = len(values) // parts + 1
    pieces = [
        pl.Series("t", values[i : i + size], dtype=pl.String) for i in range(0, len(values), size)
    ]
    series = pieces[0]
    for piece in pieces[1:]:
        series.append(piece)
    return series


def _typed(text: pl.Series, expr: pl.Expr) -> pl.Series:
    return pl.DataFrame({"t": text}).select(expr.alias("v")).to_series()


@pytest.mark.parametrize("clean", [False, True])
def test_integers_take_the_cast_and_the_digit_path_alike(clean: bool) -> None:
    """Typing a column by one cast plus the digit path for what it leaves null gives, value
    by value, what the exact digit path alone gives on every value; the column keeps its
    chunks (one chunk among many made the next step copy the whole frame)."""
    values = [str(i) for i in range(-50, 50)] if clean else _corpus()
    text = _chunked(values)
    fast = _typed(text, integer_value(pl.col("t")))
    general = _spelled_integers(text.rechunk())
    assert fast.to_list() == general.to_list()
    assert fast.n_chunks() == text.n_chunks() > 1
    if not clean:  # the corpus reaches both paths and the rejections
        assert fast.is_null().sum() > 100
        assert {5, 9007199254740993, -9223372036854775808} <= set(fast.drop_nulls().to_list())


def _number_reference(text: str | None) -> float | None:
    """The general rule, value by value: the float cast, kept when finite and when it keeps
    every delivered digit (``_keeps_digits``, run on every value, short or not)."""
    value = pl.Series([text], dtype=pl.String).cast(pl.Float64, strict=False)[0]
    if value is None or value != value or abs(value) == float("inf"):
        return None
    return value if _keeps_digits(text, value) is True else None


def test_numbers_skip_the_digit_check_only_where_no_digit_can_be_lost() -> None:
    """Texts of at most 15 bytes without an exponent are not checked one by one; the checked
    and unchecked alike give what checking every value gives."""
    values = _corpus(seed=9)
    fast = _typed(_chunked(values), number_value(pl.col("t")))
    expected = [_number_reference(v) for v in values]
    assert fast.to_list() == expected
    kept = dict(zip(values, fast.to_list(), strict=True))
    assert kept["0.1"] == 0.1 and kept["78.400000000000006"] == 78.4
    assert kept["9007199254740993"] is None and kept["1e-400"] is None
    assert Decimal(str(kept["123456789012345"])) == Decimal("123456789012345")


def _commas_outside_quotes(data: bytes) -> int:
    """Byte by byte: separators outside quotes after the header record (LF line ends)."""
    inside, header, count = False, True, 0
    for byte in data:
        if byte == scanning.QUOTE:
            inside = not inside
        elif byte == scanning.LF and not inside:
            header = False
        elif byte == scanning.COMMA and not inside and not header:
            count += 1
    return count


@pytest.mark.parametrize("spans", [scanning.QUOTED_SPANS_COUNTED, 0])
def test_commas_are_counted_alike_by_quoted_spans_and_by_locating_each(
    spans: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size pass counts separators outside quotes span by span between a block's quotes
    (few quotes) or by locating every comma (many, ``spans=0`` forces it): both give the
    byte-by-byte count, with quoted fields cut anywhere between blocks, and so both find the
    same short records."""
    monkeypatch.setattr(scanning, "QUOTED_SPANS_COUNTED", spans)
    rng = random.Random(21)
    pieces = [b"a", b"bb", b",", b",", b"\n", b'"', b'""', b'"x,y"', b"\r\n"]
    header = b"h1,h2\n"
    for _ in range(1500):
        data = header + b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 80)))
        scan, offset = RecordScan(SizeLimits(), eol=scanning.LF, csv=True), 0
        while offset < len(data):
            # the header ends in the first block, as in a file (1 MiB blocks)
            size = rng.choice([1, 2, 3, 7, 64]) + (len(header) if offset == 0 else 0)
            assert scan.feed(data[offset : offset + size]) is None
            offset += size
        assert scan.commas == _commas_outside_quotes(data), data
