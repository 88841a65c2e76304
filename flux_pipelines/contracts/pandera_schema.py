"""The pandera (polars backend) schema of a curated table, generated from the contract.

Only fatal rules belong here: a curated row may legitimately carry warnings. Uniqueness is
per delivery: given the partition column, one frame holding several days is checked with
each key unique within its day (one pandera call for a whole backfill step). The check runs
on an eager polars DataFrame (measured: pandera skips data checks on LazyFrames unless
told otherwise).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from flux_pipelines.contracts.model import ColumnSpec, Contract, Rule
from flux_pipelines.contracts.rule_kinds import REGISTRY
from flux_pipelines.contracts.validator import polars_type


def pandera_schema(contract: Contract, partition: str | None = None) -> pa.DataFrameSchema:
    """The curated table's schema; with ``partition``, uniqueness holds within each day."""
    fatal = [r for r in contract.rules if r.severity == "fatal"]
    unique = [r for r in fatal if r.kind == "unique"]
    single = {r.column for r in unique if len(r.columns) == 1 and not r.nulls_match}
    columns = {
        c.name: pa.Column(
            polars_type(c),
            checks=_column_checks(c, [r for r in fatal if r.column == c.name]),
            nullable=not any(r.kind == "required" and r.column == c.name for r in fatal),
            unique=partition is None and c.name in single,
            description=c.description or None,
            title=c.name,
        )
        for c in contract.columns
    }
    row_checks = [_row_check(r) for r in fatal if r.kind == "expression"]
    row_checks += [
        _unique_within(r, partition)
        for r in unique
        if partition is not None or r.column not in single
    ]
    return pa.DataFrameSchema(
        columns, checks=row_checks, strict=False, name=f"{contract.dataset} {contract.version}"
    )


def _column_checks(column: ColumnSpec, rules: list[Rule]) -> list[pa.Check]:
    """Each fatal rule's own pandera check (``rule_kinds``); required, type and uniqueness
    are the column's nullability, dtype and the key checks."""
    return [check for rule in rules for check in REGISTRY[rule.kind].pandera_checks(column)]


def _row_check(rule: Rule) -> pa.Check:
    assert rule.expression is not None
    expression = rule.expression

    def holds(data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.sql_expr(expression).fill_null(True))

    return pa.Check(holds, name=rule.id, error=rule.message)


def _unique_within(rule: Rule, partition: str | None) -> pa.Check:
    """A key unique within its delivery day (or the frame, without ``partition``), flagged
    on every copy. A key with an empty part is no key, unless nulls match (exact duplicate
    rows: curated values are typed, so ``5`` and ``05`` are one value here as on load)."""
    key = list(rule.columns)
    name = key[0] if len(key) == 1 else rule.id

    def holds(data: pa.PolarsData) -> pl.LazyFrame:
        scope = pl.struct(*key, *([partition] if partition else []))
        no_key = pl.lit(False) if rule.nulls_match else pl.any_horizontal(pl.col(key).is_null())
        return data.lazyframe.select((no_key | ~scope.is_duplicated()).alias(name))

    suffix = " (within a delivery day)" if partition else ""
    return pa.Check(holds, name=rule.id, error=f"{rule.message}{suffix}")
