"""Rows that break no rule: draw, let the validator judge, repair what failed.

Why: the contract's own ``RowValidator`` is the oracle, so a row is valid exactly when the
pipeline would curate it. A validator call costs about the same for 10 rows or 1,000, so
each round tries several repairs per failing row at once.
"""

from __future__ import annotations

import polars as pl

from flux_pipelines.demo.draws import SMALL_ROWS, Rng
from flux_pipelines.demo.errors import GenerationError
from flux_pipelines.demo.oracle import Oracle, first_passing
from flux_pipelines.demo.plan import Plan
from flux_pipelines.demo.repairs import draw_candidates, repair
from flux_pipelines.demo.values import NULL_SHARE
from flux_pipelines.names import ROW

RESAMPLE_ROUNDS = 40  # rounds of "validate, re-draw the rows that failed" for valid rows
REPAIR_ROWS = 1024  # candidate rows a repair round may draw (its failing rows, tried often)
MAX_REPAIR_TRIALS = 16  # candidates per failing row and round at most
AWKWARD_TEXT = 'Ébauche, "sans titre"\nsecond line, with commas'


def violation_sets(frame: pl.DataFrame) -> Oracle[list[str]]:
    """Per row of ``frame``: the sorted, comma-joined ids of the rules it breaks ('' if none).

    Plain Python: a few hundred short lists, where a polars group-by and join cost more."""
    found = yield frame
    ids: list[list[str]] = [[] for _ in range(frame.height)]
    for row, rule_id in zip(found[ROW].to_list(), found["rule_id"].to_list(), strict=True):
        ids[row].append(rule_id)
    return [",".join(sorted(row)) for row in ids]


def scatter(frame: pl.DataFrame, positions: pl.Series, rows: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the rows at ``positions`` replaced by ``rows``."""
    columns = []
    for name in frame.columns:
        values = frame[name].clone()
        values.scatter(positions, rows[name])
        columns.append(values)
    return pl.DataFrame(columns)


def valid_frame(plan: Plan, index: pl.Series, rng: Rng) -> Oracle[tuple[pl.DataFrame, list[int]]]:
    """Rows that break no rule: draw, validate, then repair only the rows that failed.

    A failing row re-draws just the columns of the rules it broke (row rules steered
    towards nulls and the rule's own literals), so a row under many rules converges
    instead of being re-rolled whole; every few rounds failing rows are re-rolled whole.
    Each round tries several repairs per row (up to REPAIR_ROWS candidates in all) and
    keeps the first the validator passes: a validator call costs about the same for 10
    rows or 1,000, so fewer, wider rounds are what makes generation fast.
    """
    frame = draw_candidates(plan, index, rng, NULL_SHARE)
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
            fixed = draw_candidates(plan, index.gather(tried), rng, NULL_SHARE)
        else:
            broken = pl.DataFrame(
                {ROW: local.search_sorted(found[ROW]).cast(pl.Int64), "rule_id": found["rule_id"]}
            )
            copies = [broken.with_columns(pl.col(ROW) + t * bad.len()) for t in range(trials)]
            fixed = repair(plan, frame[tried], index.gather(tried), pl.concat(copies), rng)
        found = yield fixed
        kept, failing = first_passing(found, bad.len(), trials)
        frame = scatter(frame, bad, fixed[kept])
        todo = bad.gather(failing)
        found = (
            found.lazy()
            .filter(pl.col(ROW).is_in(failing.to_list()))
            .with_columns(pl.lit(failing).search_sorted(pl.col(ROW)).cast(pl.Int64).alias(ROW))
            .collect(engine=SMALL_ROWS)
        )
    worst = found["rule_id"].value_counts(sort=True)["rule_id"].head(3).to_list()
    raise GenerationError(
        f"contract {plan.contract.id}: cannot generate valid rows; rules {worst} keep failing "
        f"after {RESAMPLE_ROUNDS} repair rounds (contradictory or too narrow?)"
    )


def _embed_awkward_text(
    plan: Plan, frame: pl.DataFrame, rng: Rng
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
