"""Candidate rows, and the generic repairs that make row rules hold.

Why: drawing each column independently breaks row rules now and then; rather than re-roll
whole rows, the repairs re-draw only the cells behind a broken rule (steered towards nulls
and the rule's own literals) and apply the plan's direct fixes (order, compute, imply).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import polars as pl

from flux_pipelines.contracts.model import ColumnSpec, Rule
from flux_pipelines.contracts.validator import polars_type
from flux_pipelines.demo.columns import Column
from flux_pipelines.demo.draws import SMALL_ROWS, Rng, Values, choose, computed, computed_column
from flux_pipelines.demo.plan import Plan
from flux_pipelines.demo.values import NULL_SHARE, column_values, stamp_text
from flux_pipelines.names import ROW


def draw_candidates(
    plan: Plan,
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
        values = column_values(column, index, rng)
        if column.name in nullable:
            values = pl.when(pl.lit(pl.Series(next(empty)))).then(None).otherwise(values)
        data.append(values.alias(column.name))
    return derive(plan, computed(n, *data) if data else pl.DataFrame(), imply)


def derive(plan: Plan, frame: pl.DataFrame, imply: bool = True) -> pl.DataFrame:
    """Generic repairs: order ``a <= b`` pairs, compute ``x = f(y)`` columns, give ``b`` its
    value where ``a IS NULL OR b = 'value'`` needs it (when the columns are present)."""
    present = set(frame.columns)
    implied = [(a, b, v) for a, b, v in plan.implications if imply and {a, b} <= present]
    ordered = [(a, op, b) for a, op, b in plan.comparisons if {a, b} <= present]
    if implied or ordered:  # one query: each step still sees the one before
        query = frame.lazy()
        if implied:
            query = query.with_columns(
                pl.when(plan.validator.clean(plan.column(a).spec).is_not_null())
                .then(pl.lit(value))
                .otherwise(pl.col(b))
                .alias(b)
                for a, b, value in implied
            )
        for left, op, right in ordered:
            query = _order(plan, query, left, op, right)
        frame = query.collect(engine=SMALL_ROWS)
    for target, sql, roots in plan.assignments:
        if target in present and set(roots) <= present:
            frame = _compute(plan, frame, target, sql, roots)
    return frame


def _typed(plan: Plan, name: str) -> pl.Expr:
    """A column of a text frame, typed as the validator types it; numerals by a plain cast
    (generated ones are plain, and the validator's exactness checks run Python per batch).
    Only the generic repairs use this: the validator still judges every row."""
    spec = plan.column(name).spec
    text = plan.validator.clean(spec)
    if spec.logical_type in ("integer", "number"):
        return text.cast(polars_type(spec), strict=False).alias(name)
    return plan.validator.typed_expr(spec, text).alias(name)


def _order(plan: Plan, frame: pl.LazyFrame, left: str, op: str, right: str) -> pl.LazyFrame:
    """Swap the two values of an ``a <= b`` rule where they came out the wrong way."""
    a, b = _typed(plan, left), _typed(plan, right)
    swap = ((a > b) if op.startswith("<") else (a < b)).fill_null(False)
    swapped = frame.with_columns(swap.alias("__swap")).with_columns(
        pl.when("__swap").then(pl.col(right)).otherwise(pl.col(left)).alias(left),
        pl.when("__swap").then(pl.col(left)).otherwise(pl.col(right)).alias(right),
    )  # the typed values once: typing numbers runs Python per batch
    return swapped.drop("__swap")


def _compute(
    plan: Plan, frame: pl.DataFrame, target: str, sql: str, roots: Sequence[str]
) -> pl.DataFrame:
    """Set ``target`` to the value its ``target = <sql>`` rule demands (nulls stay null)."""
    try:
        typed = frame.lazy().select(_typed(plan, name) for name in roots)
        value = typed.select(pl.sql_expr(sql).alias("v")).collect(engine=SMALL_ROWS)["v"]
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
            stamp_text(pl.lit(value), spec, value.dtype.time_zone is None), len(value)
        )
    if value.dtype.is_float() and spec.logical_type == "integer":
        return value.round(0).cast(pl.Int64, strict=False).cast(pl.String)
    return value.cast(pl.String)


def repair(
    plan: Plan,
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
    fresh = draw_candidates(plan, index, rng, NULL_SHARE, {c for r in rules for c in r.columns})
    pins = pinned.to_list() if pinned is not None else None
    cells: list[tuple[str, list[int], pl.Expr]] = []  # column, rows, values for every row
    for rule in rules:
        for name in rule.columns:
            at = [i for i in where[rule.id] if pins is None or f"|{name}|" not in pins[i]]
            if not at:
                continue
            values: pl.Expr = pl.lit(fresh[name])
            if rule.kind == "expression":
                values = steered(plan, plan.column(name), rule, values, rows.height, rng)
            cells.append((name, at, values.alias(f"__c{len(cells)}")))
    drawn = computed(rows.height, *(values for _, _, values in cells))
    columns = {name: rows[name].clone() for name in rows.columns}
    for k, (name, at, _) in enumerate(cells):
        positions = pl.Series(at, dtype=pl.Int64)
        columns[name].scatter(positions, drawn[f"__c{k}"].gather(positions))
    repaired = pl.DataFrame(list(columns.values()))
    return repaired if pinned is not None else derive(plan, repaired)


def steered(plan: Plan, column: Column, rule: Rule, fresh: pl.Expr, n: int, rng: Rng) -> pl.Expr:
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
