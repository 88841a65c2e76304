"""Planting defects: break each assigned row's rule, keep it when the validator agrees.

Why: a defective row must break exactly its rule, or the planted table would not match what
the pipeline quarantines. A single-column rule's bad values come from its rule kind
(``contracts/rule_kinds``: each kind says how agencies get it wrong); a row rule is broken
by sampling (a swap for ``a <= b``); a duplicate copies another row's key. The validator
judges every candidate; rows that broke other rules too get those cells re-drawn.
"""

from __future__ import annotations

import polars as pl

from flux_pipelines.contracts.model import Rule
from flux_pipelines.contracts.rule_kinds import REGISTRY
from flux_pipelines.demo.defects import Defects
from flux_pipelines.demo.draws import Rng, Values, choose, computed_apart, computed_column
from flux_pipelines.demo.oracle import Oracle
from flux_pipelines.demo.plan import COMPARISON, Plan
from flux_pipelines.demo.repairs import draw_candidates, repair, steered
from flux_pipelines.demo.valid import scatter, violation_sets
from flux_pipelines.demo.values import column_values
from flux_pipelines.names import ROW

DEFECT_ATTEMPTS = 8  # tries per defective row before it is left valid
DEFECT_TRIALS = 4  # candidates per single-cell defect and try, judged in one validator call
EXPRESSION_TRIALS = 16  # candidate rows sampled per defective row and try for a row rule
REPAIR_TRIALS = 4  # re-draws tried at once for a defective row that broke other rules too


def _bad_values(plan: Plan, rule: Rule, valid: pl.Series, attempt: int, rng: Rng) -> pl.Expr:
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
    plan: Plan, rule: Rule, rows: pl.DataFrame, attempt: int, rng: Rng
) -> pl.DataFrame:
    """Candidates breaking a row rule: a swap for ``a <= b``, else values steered by sampling."""
    trials = pl.concat([rows] * EXPRESSION_TRIALS)
    n = trials.height
    fresh = draw_candidates(plan, pl.int_range(n, eager=True), rng, 0.0, set(rule.columns), False)
    mutable = [plan.column(c) for c in rule.columns if not plan.column(c).unique]
    for column in mutable:
        twins = [
            trials[o.name] for o in mutable
            if o is not column and o.spec.logical_type == column.spec.logical_type
        ]  # fmt: skip
        nudged = steered(plan, column, rule, pl.lit(fresh[column.name]), n, rng)
        options: list[Values] = [trials[column.name], nudged, nudged, *twins[:1]]
        picked = computed_column(choose(options, rng.ints(n, 0, len(options) - 1)), n)
        trials = trials.with_columns(picked.alias(column.name))
    match = COMPARISON.match(rule.expression or "")
    if match and attempt == 0 and match[1] in rows.columns and match[3] in rows.columns:
        swapped = rows.with_columns(
            pl.col(match[1]).alias(match[3]), pl.col(match[3]).alias(match[1])
        )
        trials = pl.concat([swapped, trials])
    return trials


def _apply_defects(
    plan: Plan,
    valid: pl.DataFrame,
    index: pl.Series,
    rows: pl.DataFrame,
    defects: Defects,
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
            new = column_values(plan.column(name), index.gather(where), rng)
            base = base.fill_null(computed_column(new, base.len()))
        bad.append((name, at, _bad_values(plan, rule, base, attempt, rng)))
    for (name, at, _), values in zip(bad, computed_apart([v for _, _, v in bad]), strict=True):
        columns[name].scatter(at, values)
    if cells:
        changed = pl.DataFrame([*columns.values(), positions])
        parts.insert(0, changed[pl.Series(sorted(cells), dtype=pl.Int64)])
    return pl.concat(parts, how="vertical")


def _judge(plan: Plan, candidates: pl.DataFrame, defects: Defects) -> Oracle[pl.DataFrame]:
    """The best candidate per row: exact (0), planted plus extras (1), defect missing (2);
    among equals the one with the fewest other rules, then the first."""
    positions = candidates["__pos"].to_list()
    expected = [plan.expected[defects.assigned[p].id] for p in positions]
    found = yield from violation_sets(candidates.select(plan.contract.column_names))
    scores = [_score(f, e) for f, e in zip(found, expected, strict=True)]
    order = sorted(range(len(positions)), key=lambda i: (positions[i], scores[i], len(found[i])))
    best = [i for k, i in enumerate(order) if k == 0 or positions[order[k - 1]] != positions[i]]
    return candidates.select(*plan.contract.column_names, "__pos")[best].with_columns(
        pl.Series("__found", [found[i] for i in best], dtype=pl.String),
        pl.Series("__expected", [expected[i] for i in best], dtype=pl.String),
        pl.Series("__score", [scores[i] for i in best], dtype=pl.Int32),
    )


def _score(found: str, expected: str) -> int:
    """0: the validator found exactly the planted rule(s); 1: those and others (or nothing
    was expected); 2: a planted rule is missing."""
    if found == expected:
        return 0
    missing = set(expected.split(",")) - set(found.split(","))
    return 1 if expected == "" or not missing else 2


def _repair_extras(
    plan: Plan, state: pl.DataFrame, index: pl.Series, defects: Defects, rng: Rng
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
    repaired = repair(plan, rows, index.gather(positions), broken, rng, pinned)
    return repaired.with_columns(positions)


def plant(
    plan: Plan, valid: pl.DataFrame, index: pl.Series, defects: Defects, rng: Rng
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
            frame = scatter(frame, done["__pos"], done.select(plan.contract.column_names))
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
