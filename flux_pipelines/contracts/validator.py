"""Row-level validation compiled from a contract into vectorised polars expressions.

Input is a chunk of delivered rows as text (one Utf8 column per contract column, plus the
row identity columns). Output is the typed chunk, a per-row fatal flag and a long table of
violations (one row per row x rule). Uniqueness spans a whole delivery, so the loader, which
sees every file, decides it and hands it in as a boolean column per unique key
(``dup_flag(column)``); without that column a ``unique`` rule flags nothing.

Every rule is null-safe on purpose (STACK_NOTES: rows with nulls drop out of both sides
otherwise): a null value violates only ``required``; a row rule whose result is NULL passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from flux_pipelines.contracts.model import ColumnSpec, Contract, Rule
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

_POLARS_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "integer": pl.Int64(),
    "number": pl.Float64(),
    "boolean": pl.Boolean(),
    "date": pl.Date(),
    "timestamp": pl.Datetime("us"),
}
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]
_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")


def dup_flag(column: str) -> str:
    """The column a chunk carries, True where ``column``'s key repeats in the delivery."""
    return f"__dup__{column}"


def polars_type(column: ColumnSpec) -> pl.DataType:
    return _POLARS_TYPES[column.logical_type]


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
        stripped = pl.col(column.name).str.strip_chars()
        return pl.when(stripped.is_in(self._nulls)).then(None).otherwise(stripped)

    def typed_expr(self, column: ColumnSpec) -> pl.Expr:
        text = pl.col(column.name)
        match column.logical_type:
            case "string":
                return text
            case "integer":
                as_float = text.cast(pl.Float64, strict=False)
                integral = as_float.is_finite() & (as_float == as_float.round(0))
                direct = text.cast(pl.Int64, strict=False)
                return pl.coalesce(
                    direct,
                    pl.when(integral).then(as_float).otherwise(None).cast(pl.Int64, strict=False),
                )
            case "number":
                value = text.cast(pl.Float64, strict=False)
                return pl.when(value.is_finite()).then(value).otherwise(None)
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

    def violation_expr(self, rule: Rule) -> pl.Expr:
        """True where the row violates ``rule``; never null."""
        if rule.kind == "expression":
            assert rule.expression is not None
            return pl.sql_expr(rule.expression).fill_null(True).not_()
        assert rule.column is not None
        column = self.contract.column(rule.column)
        text = pl.col(f"__text_{column.name}")
        value = pl.col(column.name)
        match rule.kind:
            case "unique":
                return pl.col(dup_flag(column.name)).fill_null(False)
            case "required":
                return text.is_null()
            case "type":
                return text.is_not_null() & value.is_null()
            case "allowed_values":
                allowed = [v.value for v in column.allowed_values]
                probe = value.cast(pl.String)
                if column.case_insensitive_values:
                    allowed = [a.lower() for a in allowed]
                    probe = probe.str.to_lowercase()
                return (~probe.is_in(allowed)).fill_null(False)
            case "minimum":
                below = value < column.minimum
                if column.exclusive_minimum:
                    below = value <= column.minimum
                return below.fill_null(False)
            case "maximum":
                above = value > column.maximum
                if column.exclusive_maximum:
                    above = value >= column.maximum
                return above.fill_null(False)
            case "pattern":
                assert column.pattern is not None
                return (~text.str.contains(column.pattern)).fill_null(False)
            case "min_length":
                return (text.str.len_chars() < column.min_length).fill_null(False)
            case "max_length":
                return (text.str.len_chars() > column.max_length).fill_null(False)
        raise AssertionError(rule.kind)  # pragma: no cover

    def validate(self, chunk: pl.DataFrame) -> ValidatedChunk:
        """Type, check and flag one chunk of text rows (must hold FILE, ROW, all columns)."""
        columns = self.contract.columns
        unique = sorted({r.column for r in self.row_rules if r.kind == "unique" and r.column})
        flags_in = [
            pl.col(dup_flag(c))
            if dup_flag(c) in chunk.columns
            else pl.lit(False).alias(dup_flag(c))
            for c in unique
        ]
        texts = chunk.select(
            pl.col(FILE),
            pl.col(ROW),
            *[self.clean(c).alias(c.name) for c in columns],
            *flags_in,
        )
        typed = texts.with_columns(
            *[pl.col(c.name).alias(f"__text_{c.name}") for c in columns],
        ).with_columns(*[self.typed_expr(c).alias(c.name) for c in columns])
        flags = typed.with_columns(
            *[self.violation_expr(r).alias(f"__v{i}") for i, r in enumerate(self.row_rules)]
        )
        fatal_cols = [f"__v{i}" for i, r in enumerate(self.row_rules) if r.severity == "fatal"]
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
                    pl.lit(rule.message).alias("message"),
                )
            )
        return pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=VIOLATION_SCHEMA)


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
