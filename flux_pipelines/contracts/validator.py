"""Row-level validation compiled from a contract into vectorised polars expressions.

Input is a chunk of delivered rows as text (one Utf8 column per contract column, plus the
row identity columns). Output is the typed chunk, a per-row fatal flag and a long table of
violations (one row per row x rule). Uniqueness spans a whole delivery, so the loader, which
sees every file, decides it and hands it in as a boolean column per unique key
(``dup_flag(key)``); without that column a ``unique`` rule flags nothing.

Every rule is null-safe on purpose (measured: rows with nulls drop out of both sides
otherwise): a null value violates only ``required``; a row rule whose result is NULL passes.

Values are hostile input, so what a delivered text means is decided once, here, and both
typing and uniqueness use it (the agency JSON Schema's text patterns describe the same
spellings, integers without an exponent; they cannot express the exactness checks):

- **numerals**: after trimming, an optional sign, ASCII digits with an optional decimal
  point, and an optional exponent (``5``, ``+5``, ``05``, ``5.0``, ``5e0``, ``.5``): what a
  JSON number allows plus a sign, leading zeros and a bare point, as CSV exports and typed
  formats (JSON, Parquet floats read as ``5.0``) write them. ``1,000``, ``0x5``, ``inf``,
  ``nan`` and non-ASCII digits are no numerals (``<column>.type``).
- **integer**: a numeral whose value is a whole number (JSON Schema's ``integer``): ``5``,
  ``+5``, ``05``, ``5.0``, ``5e0`` and ``50e-1`` are all 5; ``5.5`` is no integer. The value
  is computed exactly from the digits, never through a float, so ``9007199254740993.0`` is
  9007199254740993; one outside the 64-bit range is quarantined (``<column>.type``, saying
  so), never clamped or rounded.
- **number**: a numeral stored as a 64-bit float only when no delivered digit is lost:
  the float, written with as many significant digits as the value was delivered with,
  gives the value back (``0.1``; ``78.400000000000006``, a 17-digit export of the float
  78.4). One that would change (``9007199254740993`` would become ...992, ``1e-400`` 0) is
  quarantined (``<column>.type``, saying what it would have become), never rounded.
- **keys** (``unique`` and primary-key columns) compare as the typed values the curated
  table stores (``key_expr``): ``5``, ``05``, ``+5`` and ``5.0`` are one integer key,
  ``1.5`` and ``15e-1`` one number key, ``2026-01-05`` and ``2026-1-5`` one date key.
  Strings compare as stored: surrounding whitespace trimmed (it is trimmed on load),
  case and inner whitespace significant. A key that is not of the column's type is not a
  key (its row is quarantined for the type), so it never makes another row a duplicate.
- **short rows** (``row.short``, always fatal): a CSV record with fewer fields than the
  header that lacks a field of a contract column. Its trailing values are missing and its
  other values may sit under the wrong columns, so it is quarantined even when the
  missing columns are optional; an empty value is written as an empty field (``1,a,``),
  which loads as null. A record that lacks only trailing columns the contract does not
  know has every contract value and loads (raw keeps it as delivered). The reader counts
  the fields (``readers.short_rows``); the loader hands the short records in as
  ``DELIVERED_FIELDS`` and ``EXPECTED_FIELDS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import polars as pl

from flux_pipelines.contracts.logical_types import type_row
from flux_pipelines.contracts.model import (
    SHORT_ROW_MESSAGE,
    SHORT_ROW_RULE,
    ColumnSpec,
    Contract,
    NumberFormat,
    Rule,
)
from flux_pipelines.contracts.rule_kinds import REGISTRY, Cell
from flux_pipelines.names import FILE, ROW

MAX_CELL_BYTES = 10_240
TRUNCATION_MARKER = "...[truncated by Flux: {n} bytes]"

VIOLATION_SCHEMA: dict[str, pl.DataType] = {
    FILE: pl.String(),
    ROW: pl.Int64(),
    "rule_id": pl.String(),
    "field": pl.String(),
    "value_provided": pl.String(),
    "expected": pl.String(),
    "severity": pl.String(),
    "category": pl.String(),
    "message": pl.String(),
}

# A numeral, after trimming (ASCII digits only: polars' \d is Unicode-aware). Integers and
# numbers accept the same spellings; an integer must also be whole and fit 64 bits.
NUMBER_TEXT = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_PLAIN_INTEGER = r"^[+-]?[0-9]+$"  # the common spelling, cast directly
_DECIMAL_PARTS = r"^([+-]?)([0-9]*)\.?([0-9]*)(?:[eE]([+-]?[0-9]+))?$"
_INT64_DIGITS = 19
# Up to 15 significant digits a decimal without exponent survives a 64-bit float (DBL_DIG);
# only longer texts, or ones with an exponent, need the read-back comparison.
_FLOAT_SAFE_BYTES = 15
_FLOAT_MAX_DIGITS = 767  # the most significant digits a 64-bit float's exact value has
INT64_RANGE = "-9223372036854775808 to 9223372036854775807"

# Short CSV records (see the module docstring): columns the loader adds to a chunk. The
# rule's id and words are in the catalogue (``model.FIXED_ROW_RULES``).
DELIVERED_FIELDS = "__delivered_fields"  # fields the record had; null when it had them all
EXPECTED_FIELDS = "__expected_fields"  # fields of the header
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]
_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")


def dup_flag(key: str) -> str:
    """The column a chunk carries, True where the key (``Rule.key_name``) repeats in the
    delivery."""
    return f"__dup__{key}"


def polars_type(column: ColumnSpec) -> pl.DataType:
    return type_row(column.logical_type).polars


@dataclass(frozen=True)
class ValidatedChunk:
    """One chunk after validation: typed rows, which are fatal, and every violation."""

    typed: pl.DataFrame  # contract columns typed, plus FILE and ROW
    fatal: pl.Series  # True where the row breaks at least one fatal rule
    violations: pl.DataFrame  # VIOLATION_SCHEMA


class RowValidator:
    """Validates chunks against one contract; build once per delivery, reuse per chunk."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.row_rules = list(contract.rules)
        self._nulls = list(contract.null_values)

    def clean(self, column: ColumnSpec) -> pl.Expr:
        """The delivered text with surrounding space removed and null spellings as null."""
        # ``replace`` to null: one pass, half the time of a when/is_in/otherwise (measured).
        return pl.col(column.name).str.strip_chars().replace(self._nulls, None)

    def typed_expr(self, column: ColumnSpec, text: pl.Expr | None = None) -> pl.Expr:
        """The typed value of cleaned text (``text``, default the column itself); null when
        the text is not of the column's type (the module docstring lists the spellings)."""
        text = pl.col(column.name) if text is None else text
        if column.number_format is not None:
            text = plain_numeral(text, column.number_format)
        match column.logical_type:
            case "string":
                return text
            case "integer":
                return integer_value(text)
            case "number":
                return number_value(text)
            case "boolean":
                lowered = text.str.to_lowercase()
                return (
                    pl.when(lowered.is_in(_TRUE))
                    .then(True)
                    .when(lowered.is_in(_FALSE))
                    .then(False)
                    .otherwise(None)
                )
            case "date":
                return text.str.to_date(column.date_format or "%Y-%m-%d", strict=False)
            case "timestamp":
                formats = (column.date_format,) if column.date_format else _TIMESTAMP_FORMATS
                return pl.coalesce(
                    [text.str.to_datetime(f, strict=False, time_unit="us") for f in formats]
                )
        raise AssertionError(column.logical_type)  # pragma: no cover - Literal is exhaustive

    def key_expr(self, column: ColumnSpec) -> pl.Expr:
        """A key as uniqueness compares it: the typed value the curated table would store,
        as text (null when empty or not of the column's type: such a row is no key)."""
        typed = self.typed_expr(column, self.clean(column))
        if column.logical_type == "number":
            typed = pl.when(typed == 0).then(0.0).otherwise(typed)  # -0.0 and 0.0: one value
        return typed.cast(pl.String)

    def unique_key_expr(self, rule: Rule) -> pl.Expr:
        """A unique rule's key for one row, as text (null: the row is no key).

        One column: ``key_expr``. Several: each part's key, length-prefixed so no two keys
        spell alike (``'a|b', 'c'`` is not ``'a', 'b|c'``); an empty part makes no key,
        unless nulls match (exact duplicate rows), where an empty field is a part of its
        own and a value not of its column's type is compared as delivered."""
        columns = [self.contract.column(c) for c in rule.columns]
        if len(columns) == 1 and not rule.nulls_match:
            return self.key_expr(columns[0])
        parts = []
        for column in columns:
            part = self.key_expr(column)
            if rule.nulls_match:
                text = self.clean(column)
                part = (
                    pl.when(text.is_null())
                    .then(pl.lit("-"))
                    .otherwise(pl.coalesce(pl.lit("=") + part, pl.lit("~") + text))
                )
            parts.append(pl.format("{}:{}", part.str.len_bytes(), part))
        return pl.concat_str(parts, separator="|")

    def violation_expr(self, rule: Rule) -> pl.Expr:
        """True where the row violates ``rule``; never null."""
        if rule.kind == "expression":
            assert rule.expression is not None
            return pl.sql_expr(rule.expression).fill_null(True).not_()
        if rule.kind == "unique":
            return pl.col(dup_flag(rule.key_name)).fill_null(False)
        assert rule.column is not None
        column = self.contract.column(rule.column)
        cell = Cell(column, text=pl.col(f"__text_{column.name}"), value=pl.col(column.name))
        return REGISTRY[rule.kind].violation(cell)

    def validate(self, chunk: pl.DataFrame) -> ValidatedChunk:
        """Type, check and flag one chunk of text rows (must hold FILE, ROW, all columns;
        ``DELIVERED_FIELDS`` and ``EXPECTED_FIELDS`` when the reader found short rows)."""
        columns = self.contract.columns
        unique = sorted({r.key_name for r in self.row_rules if r.kind == "unique"})
        flags_in = [
            pl.col(dup_flag(c))
            if dup_flag(c) in chunk.columns
            else pl.lit(False).alias(dup_flag(c))
            for c in unique
        ]
        short = DELIVERED_FIELDS in chunk.columns
        texts = chunk.select(
            pl.col(FILE),
            pl.col(ROW),
            *[self.clean(c).alias(c.name) for c in columns],
            *flags_in,
            *([pl.col(DELIVERED_FIELDS)] if short else []),
        )
        typed = texts.with_columns(
            *[pl.col(c.name).alias(f"__text_{c.name}") for c in columns],
        ).with_columns(*[self.typed_expr(c).alias(c.name) for c in columns])
        flags = typed.with_columns(
            *[self.violation_expr(r).alias(f"__v{i}") for i, r in enumerate(self.row_rules)],
            *([pl.col(DELIVERED_FIELDS).is_not_null().alias(_SHORT_FLAG)] if short else []),
        )
        fatal_cols = [f"__v{i}" for i, r in enumerate(self.row_rules) if r.severity == "fatal"]
        fatal_cols += [_SHORT_FLAG] if short else []
        fatal = (
            flags.select(pl.any_horizontal(fatal_cols).alias("fatal")).to_series()
            if fatal_cols
            else pl.Series("fatal", [False] * chunk.height, dtype=pl.Boolean)
        )
        violations = self._violations(flags, chunk)
        return ValidatedChunk(
            typed=flags.select(FILE, ROW, *[c.name for c in columns]),
            fatal=fatal,
            violations=violations,
        )

    def _violations(self, flags: pl.DataFrame, chunk: pl.DataFrame) -> pl.DataFrame:
        parts: list[pl.DataFrame] = []
        any_flag = [f"__v{i}" for i in range(len(self.row_rules))]
        any_flag += [_SHORT_FLAG] if _SHORT_FLAG in flags.columns else []
        if not any_flag:
            return pl.DataFrame(schema=VIOLATION_SCHEMA)
        flagged = flags.filter(pl.any_horizontal(any_flag))
        if flagged.height == 0:
            return pl.DataFrame(schema=VIOLATION_SCHEMA)
        # rechunk: polars 2.1 panics ("i < self.len()") formatting filtered multi-chunk
        # columns read by read_csv (seen on real CCN files).
        raw = chunk.filter(
            pl.Series(flags.select(pl.any_horizontal(any_flag)).to_series())
        ).rechunk()
        for i, rule in enumerate(self.row_rules):
            hit = flagged[f"__v{i}"]
            if not hit.any():
                continue
            rows = raw.filter(hit).rechunk()
            parts.append(
                rows.select(
                    pl.col(FILE),
                    pl.col(ROW),
                    pl.lit(rule.id).alias("rule_id"),
                    pl.lit(", ".join(rule.columns) or None, dtype=pl.String).alias("field"),
                    _provided(rule).alias("value_provided"),
                    pl.lit(rule.expected).alias("expected"),
                    pl.lit(rule.severity).alias("severity"),
                    pl.lit(rule.category).alias("category"),
                    self._message(rule).alias("message"),
                )
            )
        if _SHORT_FLAG in flagged.columns and flagged[_SHORT_FLAG].any():
            parts.append(_short_rows(raw.filter(flagged[_SHORT_FLAG])))
        return pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=VIOLATION_SCHEMA)

    def _message(self, rule: Rule) -> pl.Expr:
        """The rule's message, with why the value is not of its type when the message
        alone would not say it (outside the integer range, not exact as a float)."""
        if rule.kind != "type" or rule.column is None:
            return pl.lit(rule.message)
        column = self.contract.column(rule.column)
        text = self.clean(column)
        if column.number_format is not None:
            text = plain_numeral(text, column.number_format)
        detail = type_detail(column, text)
        if detail is None:
            return pl.lit(rule.message)
        return pl.concat_str([pl.lit(f"{rule.message}: "), detail]).fill_null(rule.message)


_SHORT_FLAG = "__v_short"


def _short_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """One ``row.short`` violation per short record (always fatal: see the module doc)."""
    return rows.select(
        pl.col(FILE),
        pl.col(ROW),
        pl.lit(SHORT_ROW_RULE).alias("rule_id"),
        pl.lit(None, dtype=pl.String).alias("field"),
        pl.format("{} field(s)", pl.col(DELIVERED_FIELDS)).alias("value_provided"),
        pl.format("{} fields, one per header column", pl.col(EXPECTED_FIELDS)).alias("expected"),
        pl.lit("fatal").alias("severity"),
        pl.lit("existence").alias("category"),
        pl.lit(SHORT_ROW_MESSAGE).alias("message"),
    )


def plain_numeral(text: pl.Expr, fmt: NumberFormat) -> pl.Expr:
    """A formatted number's text as a plain numeral (``$149,800`` -> ``149800``, ``(1,200.00)``
    -> ``-1200.00``, ``12%`` -> ``12e-2`` for a fraction), or null when it does not follow
    the format (thousands out of place, two signs): its row is then quarantined for the
    column's type. Digits are moved, never computed, so exactness is judged as before."""
    t = text
    negative = pl.lit(False)
    if fmt.negative_parentheses:
        inner = t.str.extract(r"^\(\s*(.*?)\s*\)$", 1)
        negative, t = inner.is_not_null(), pl.coalesce(inner, t)
    percent = pl.lit(False)
    if fmt.percent is not None:
        number = t.str.extract(r"^(.*?)\s*%$", 1)
        percent, t = number.is_not_null(), pl.coalesce(number, t)
    if fmt.currency:
        symbol = "|".join(re.escape(c) for c in fmt.currency)
        t = t.str.replace(rf"^([+-]?)\s*(?:{symbol})\s*", "${1}").str.replace(
            rf"\s*(?:{symbol})$", ""
        )
    dec = re.escape(fmt.decimal)
    if fmt.thousands is not None:
        sep = re.escape(fmt.thousands)
        grouped = rf"^[+-]?(?:[0-9]{{1,3}}(?:{sep}[0-9]{{3}})+|[0-9]*)(?:{dec}[0-9]*)?$"
        t = pl.when(t.str.contains(grouped)).then(
            t.str.replace_all(fmt.thousands, "", literal=True)
        )
    if fmt.decimal != ".":
        t = pl.when(t.str.contains(r"\.")).then(None).otherwise(t.str.replace(dec, "."))
    t = (
        pl.when(negative & t.str.contains(r"^[+-]"))
        .then(None)
        .otherwise(pl.when(negative).then(pl.lit("-") + t).otherwise(t))
    )
    if fmt.percent == "fraction":
        t = (
            pl.when(percent & t.str.contains(r"[eE]"))
            .then(None)
            .otherwise(pl.when(percent).then(t + pl.lit("e-2")).otherwise(t))
        )
    return t


def integer_value(text: pl.Expr) -> pl.Expr:
    """An integer computed exactly from the numeral's digits, never through a float; null
    when the text is no numeral, not a whole number, or outside the 64-bit range.

    polars' integer cast succeeds on exactly the plain spellings (``_PLAIN_INTEGER``) within
    64 bits (pinned by ``test_casts_accept_exactly_the_numeral_spellings``), so the common
    case costs one cast and no regular expression; only the texts it leaves null take the
    exact digit path (``_integers``)."""
    return text.map_batches(_integers, return_dtype=pl.Int64)


def _integers(text: pl.Series) -> pl.Series:
    """``integer_value`` on one batch. Why a batch function: the texts the cast leaves null
    are found first, so a clean column (none) costs the cast alone and a dirty one runs the
    digit path on those texts only (measured: 0.12 CPU-s per 1M rows before, 0.03 after)."""
    direct = text.cast(pl.Int64, strict=False)
    others = (direct.is_null() & text.is_not_null()).arg_true()
    if others.len() == 0:
        return direct
    spelled = pl.repeat(None, len(text), dtype=pl.Int64, eager=True)
    # fill_null keeps the input's chunks (scatter would make one): a frame whose columns are
    # chunked alike is not copied whole by the next operation on it (measured: +60 MB).
    return direct.fill_null(spelled.scatter(others, _spelled_integers(text.gather(others))))


def number_value(text: pl.Expr) -> pl.Expr:
    """A 64-bit float, only when it keeps every delivered digit (``_numbers``).

    A finite result of polars' float cast is a numeral (``NUMBER_TEXT``): the cast accepts no
    other spelling that parses finite (pinned by ``test_casts_accept_exactly_the_numeral_
    spellings``), so no regular expression runs over every value."""
    return text.map_batches(_numbers, return_dtype=pl.Float64)


def _numbers(text: pl.Series) -> pl.Series:
    """``number_value`` on one batch: the cast, kept where it is finite and keeps every
    digit the text delivered (written with as many significant digits as the text has, it
    gives the text's number back: 0.1 and 78.400000000000006, a 17-digit export of 78.4,
    are kept; 9007199254740993, which would be ...992, and 1e-400, 0, are not).

    Only texts that may have lost a digit (``_may_lose_digits``) are checked, one by one;
    a batch function so that a clean column skips that step whole (measured: 0.20 CPU-s
    per 1M rows as expressions, 0.06 so)."""
    value = text.cast(pl.Float64, strict=False)
    kept = value.is_finite().fill_null(False)
    suspect = (kept & _may_lose_digits(text)).arg_true()
    if suspect.len():
        pairs = zip(text.gather(suspect).to_list(), value.gather(suspect).to_list(), strict=True)
        exact = pl.Series([_keeps_digits(t, v) is True for t, v in pairs], dtype=pl.Boolean)
        kept = kept.scatter(suspect, exact)
    return value.zip_with(kept, pl.repeat(None, len(value), dtype=pl.Float64, eager=True))


def _may_lose_digits(text: pl.Series) -> pl.Series:
    """True where a float's value may differ from the text's number: longer than 15 bytes, or
    with an exponent. A shorter text without one always is kept (DBL_DIG)."""
    return (text.str.len_bytes() > _FLOAT_SAFE_BYTES) | text.str.contains("[eE]")


def _keeps_digits(text: str | None, value: float | None) -> bool | None:
    """Whether ``value`` written to the significant digits of ``text`` is ``text``."""
    if text is None or value is None:
        return None
    try:
        delivered = Decimal(text)
    except InvalidOperation:
        return None
    if not delivered.is_finite():
        return False
    # Counted from the digits as delivered (normalize() would round them to 28 digits).
    digits = len("".join(map(str, delivered.as_tuple().digits)).rstrip("0")) or 1
    if digits > _FLOAT_MAX_DIGITS:
        return False  # no 64-bit float has that many significant digits
    return Decimal(f"{value:.{digits - 1}e}") == delivered


def _numerals(text: pl.Series) -> pl.DataFrame:
    """The numerals of ``text`` (``i``: position) as sign ('' or '-'), significant digits
    (``core``, '' for zero) and the power of ten they are multiplied by (``exp``; null for
    an exponent beyond 64 bits). Computed on those rows only, each step once: most values
    take the cheap paths, and these are the few (or hostile) other spellings."""
    exponent = pl.col("4")
    return (
        pl.DataFrame({"t": text})
        .with_row_index("i")
        .filter(pl.col("t").str.contains(NUMBER_TEXT))
        .with_columns(pl.col("t").str.extract_groups(_DECIMAL_PARTS).alias("p"))
        .unnest("p")
        .with_columns(pl.concat_str(["2", "3"]).str.strip_chars_start("0").alias("lead"))
        .with_columns(pl.col("lead").str.strip_chars_end("0").alias("core"))
        .select(
            "i",
            pl.col("1").str.replace("+", "", literal=True).alias("sign"),
            "core",
            (
                pl.when(exponent.is_null()).then(0).otherwise(exponent.cast(pl.Int64, strict=False))
                - pl.col("3").str.len_chars().cast(pl.Int64)
                + pl.col("lead").str.len_chars().cast(pl.Int64)
                - pl.col("core").str.len_chars().cast(pl.Int64)
            ).alias("exp"),
        )
    )


def _scattered(text: pl.Series, rows: pl.DataFrame, dtype: pl.DataType) -> pl.Series:
    """``rows``' ``v`` at positions ``i`` of a series as long as ``text``, null elsewhere."""
    out = pl.repeat(None, len(text), dtype=dtype, eager=True).alias(text.name)
    return out.scatter(rows.get_column("i"), rows.get_column("v")) if rows.height else out


def _spelled_integers(text: pl.Series) -> pl.Series:
    """Whole numerals within 64 bits as Int64 (``5.0``, ``5e0``, ``1.5e1``), else null."""
    core, exp = pl.col("core"), pl.col("exp")
    width = core.str.len_chars().cast(pl.Int64) + exp
    fits = (exp >= 0) & (width <= _INT64_DIGITS)
    # The padding is bounded before it is built: 1e999999999 must not become a 1 GB text.
    digits = pl.concat_str(["sign", core.str.pad_end(pl.when(fits).then(width).otherwise(0), "0")])
    value = (
        pl.when(core == "")
        .then(pl.lit(0, dtype=pl.Int64))
        .when(fits)
        .then(digits.cast(pl.Int64, strict=False))
    )
    return _scattered(text, _numerals(text).select("i", value.alias("v")), pl.Int64())


def _fractional(text: pl.Series) -> pl.Series:
    """True for numerals with a non-zero fractional part (no integer, whatever its size)."""
    fraction = (pl.col("exp") < 0) & (pl.col("core") != "")
    return _scattered(text, _numerals(text).select("i", fraction.alias("v")), pl.Boolean())


def type_detail(column: ColumnSpec, text: pl.Expr) -> pl.Expr | None:
    """Why a cleaned text is not of an integer or number column's type, where the rule's
    own message does not say it (not whole, out of range, not exact); else null."""
    numeral = text.str.contains(NUMBER_TEXT)
    match column.logical_type:
        case "integer":
            fractional = text.map_batches(_fractional, return_dtype=pl.Boolean)
            return (
                pl.when(fractional)
                .then(pl.lit("the value is not a whole number (Flux never rounds it)"))
                .when(numeral)
                .then(
                    pl.lit(
                        f"the value is outside the 64-bit integer range ({INT64_RANGE}); "
                        "Flux never rounds or clamps it"
                    )
                )
            )
        case "number":
            value = text.cast(pl.Float64, strict=False)
            return (
                pl.when(numeral & value.is_finite())
                .then(
                    pl.format(
                        "the value has digits a 64-bit float cannot keep (it would become "
                        "{}); send at most 15 significant digits, between 1e-307 and 1e308 "
                        "in size",
                        value.cast(pl.String),
                    )
                )
                .when(numeral)
                .then(pl.lit("the value is beyond the range of a 64-bit float"))
            )
    return None


def _provided(rule: Rule) -> pl.Expr:
    """The delivered value(s) a rule looked at, as the agency sent them."""
    if len(rule.columns) == 1:
        return truncate(pl.col(rule.columns[0]))
    return truncate(
        pl.concat_str(
            [pl.format("{}={}", pl.lit(c), pl.col(c).fill_null("NULL")) for c in rule.columns],
            separator="; ",
        )
    )


def truncate(expr: pl.Expr, limit: int = MAX_CELL_BYTES) -> pl.Expr:
    """Cap a text cell at ``limit`` bytes with a marker, so one huge field cannot bloat reports."""
    size = expr.str.len_bytes()
    marker = pl.format("...[truncated by Flux: {} bytes]", size)
    return (
        pl.when(size > limit)
        .then(pl.concat_str([expr.str.slice(0, limit // 2), marker]))
        .otherwise(expr)
    )
