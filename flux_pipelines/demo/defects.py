"""Which rows carry which planted defect, and the record of what was planted.

Why: every plantable rule should show up in a delivery (round-robin in a seeded order), a
planted duplicate needs a source row to copy, and the planted table (1-based row numbers,
rule ids as the validator reports them) is what tests compare the pipeline's quarantine to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from flux_pipelines.contracts.model import Rule
from flux_pipelines.demo.delivery import PLANTED_SCHEMA
from flux_pipelines.demo.draws import Rng
from flux_pipelines.demo.plan import Plan, keys_within, unique_ids
from flux_pipelines.demo.valid import scatter


@dataclass
class Defects:
    """Defects being planted: row position -> rule, and the rows already settled."""

    assigned: dict[int, Rule]
    sources: dict[int, int]  # unique defects: target position -> source position
    planted: dict[int, Rule] = field(default_factory=dict)


def assign_defects(
    plan: Plan, frame: pl.DataFrame, defect_rate: float, rng: Rng, spare: set[int]
) -> Defects:
    """Round-robin over the contract's rules in a seeded order, so every rule gets planted."""
    n = frame.height
    rules = list(plan.plantable)
    count = min(round(n * defect_rate), max(0, n - len(spare)))
    if not rules or count == 0 or n < 4:
        return Defects({}, {})
    rng.py.shuffle(rules)
    pool = [p for p in rng.py.sample(range(n), min(n, count + len(spare))) if p not in spare]
    assigned = {p: rules[i % len(rules)] for i, p in enumerate(pool[:count])}
    sources: dict[int, int] = {}
    taken = set(assigned) | spare
    for pos, rule in list(assigned.items()):
        if rule.kind == "unique":
            needed = {c for r in keys_within(rule, plan.contract.rules) for c in r.columns}
            keys = frame.select(sorted(needed))
            source = _duplicate_source(keys, plan.contract.null_values, taken, rng)
            if source is None:
                del assigned[pos]
                continue
            sources[pos] = source
            taken.add(source)
    return Defects(assigned, sources)


def _duplicate_source(
    keys: pl.DataFrame, nulls: Sequence[str], taken: set[int], rng: Rng
) -> int | None:
    """A row, not otherwise used, with a value in every key column: copying it makes a
    duplicate of every key among them."""
    for _ in range(64):
        pos = rng.py.randrange(keys.height)
        row = keys.row(pos)
        if pos not in taken and all(v is not None and v.strip() not in nulls for v in row):
            return pos
    return None


def drop_collisions(
    plan: Plan,
    frame: pl.DataFrame,
    valid: pl.DataFrame,
    defects: Defects,
    seen: dict[str, set[str]],
) -> pl.DataFrame:
    """A defect value repeating a key (two ids of -1) would be an unplanned duplicate.

    Only defect values can collide: valid keys are distinct by construction, and a defect
    value breaks a single-column rule its column's valid values keep, so it differs from
    all of them. ``seen`` carries earlier chunks' defect keys so a streamed file agrees.
    """
    for column in (c for c in plan.columns if c.unique):
        touched = [
            p for p, r in defects.planted.items() if r.column == column.name and r.kind != "unique"
        ]
        if not touched:
            continue
        where = pl.Series(touched, dtype=pl.Int64)
        keys = frame[where].select(plan.validator.clean(column.spec).alias("k"))["k"].to_list()
        taken = seen.setdefault(column.name, set())
        offenders: list[int] = []
        for pos, key in zip(touched, keys, strict=True):
            if key is None:
                continue
            if key in taken:
                offenders.append(pos)
            taken.add(key)
        if offenders:
            back = pl.Series(offenders, dtype=pl.Int64)
            frame = scatter(frame, back, valid[back])
            for p in offenders:
                defects.planted.pop(p)
    return frame


def planted_table(plan: Plan, defects: Defects, offset: int) -> pl.DataFrame:
    rows: list[tuple[int, str]] = []
    for pos, rule in defects.planted.items():
        if rule.kind == "unique":
            ids = unique_ids(rule, plan.contract.rules)
            rows += [(p + offset + 1, i) for p in (pos, defects.sources[pos]) for i in ids]
        else:
            rows += [(pos + offset + 1, i) for i in plan.expected[rule.id].split(",")]
    return pl.DataFrame(sorted(set(rows)), schema=PLANTED_SCHEMA, orient="row")
