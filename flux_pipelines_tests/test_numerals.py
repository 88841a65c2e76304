"""The validator's fast numeral paths rely on what polars' casts accept: pinned here."""

from __future__ import annotations

import random

import polars as pl

from flux_pipelines.contracts.validator import _PLAIN_INTEGER, NUMBER_TEXT

# Characters that make numerals and their near misses: signs, points, exponents, separators,
# spaces (incl. no-break), words polars might read (inf, nan, infinity), non-ASCII digits.
ALPHABET = "0123456789+-.eE _,xinfatyINFATY\u00a0\u0661\uff11"


def _corpus(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    spelled = {"".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 7))) for _ in range(n)}
    edges = ["9223372036854775807", "9223372036854775808", "-9223372036854775808", "1e309"]
    return [*spelled, *edges, "-0", "+.5", "5.", ".e5", "Infinity", "NaN", "1_000", "0x10"]


def test_casts_accept_exactly_the_numeral_spellings() -> None:
    """A finite float cast means a numeral, and an integer cast succeeds on exactly the
    plain integer spellings within 64 bits: so typing needs no regular expression per value."""
    text = pl.col("t")
    frame = pl.DataFrame({"t": _corpus(300_000)}).with_columns(
        number=text.cast(pl.Float64, strict=False).is_finite().fill_null(False),
        numeral=text.str.contains(NUMBER_TEXT),
        integer=text.cast(pl.Int64, strict=False).is_not_null(),
        plain=text.str.contains(_PLAIN_INTEGER),
    )
    assert frame.height > 100_000
    # every finite cast is a numeral; numerals that are not finite overflow the float range
    assert frame.filter(pl.col("number") & ~pl.col("numeral")).height == 0
    overflow = frame.filter(pl.col("numeral") & ~pl.col("number"))
    assert overflow.height > 0  # the corpus does reach them
    assert overflow.get_column("t").cast(pl.Float64, strict=False).is_infinite().all()
    # integer casts: plain spellings only, and every plain spelling within 64 bits
    assert frame.filter(pl.col("integer") & ~pl.col("plain")).height == 0
    out_of_range = frame.filter(pl.col("plain") & ~pl.col("integer")).get_column("t")
    assert out_of_range.to_list() == ["9223372036854775808"]
