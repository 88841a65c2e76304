"""Foreign keys that point at rows the agency really sent, and planted orphans."""

from __future__ import annotations

import random
from collections.abc import Mapping

import polars as pl

from flux_pipelines.contracts.model import Contract
from flux_pipelines.demo.delivery import PLANTED_SCHEMA, GeneratedDelivery


def link_references(
    delivery: GeneratedDelivery,
    contract: Contract,
    siblings: Mapping[str, GeneratedDelivery],
    *,
    seed: int,
    orphan_rate: float,
) -> GeneratedDelivery:
    """Point foreign keys at rows of the referenced delivery of the same agency and day.

    Rows keep their generated (orphan) key with probability ``orphan_rate``; those are
    recorded as planted violations of the reference rule. Rows with a planted defect in a
    key column, or an empty key, are left alone.
    """
    frame, planted = delivery.frame, delivery.planted
    rng = random.Random(seed)
    for rule in contract.cross_rules:
        parent = siblings.get(rule.datasets[0]) if rule.kind == "reference" else None
        if parent is None:
            continue
        target_cols = rule.target_columns
        keys = parent.frame.select(
            pl.col(parent.headers[c]).alias(m)
            for m, c in zip(rule.columns, target_cols, strict=True)
        )
        if keys.height == 0:
            continue
        mine = [delivery.headers[c] for c in rule.columns]
        defective = set(
            planted.filter(
                pl.col("rule_id").is_in(
                    [r.id for r in contract.rules if r.column in set(rule.columns)]
                )
            )
            .get_column("row_number")
            .to_list()
        )
        picks = [rng.randrange(keys.height) for _ in range(frame.height)]
        orphan = [rng.random() < orphan_rate for _ in range(frame.height)]
        first = delivery.row_offset + 1
        present = frame.select(pl.all_horizontal(pl.col(c).is_not_null() for c in mine)).to_series()
        link = [
            bool(present[i]) and not orphan[i] and (first + i) not in defective
            for i in range(frame.height)
        ]
        chosen = keys[picks]
        frame = frame.with_columns(
            pl.when(pl.Series(link)).then(chosen.get_column(m)).otherwise(pl.col(h)).alias(h)
            for m, h in zip(rule.columns, mine, strict=True)
        )
        known = set(keys.iter_rows())
        orphans = [
            first + i
            for i, row in enumerate(frame.select(mine).iter_rows())
            if bool(present[i]) and (first + i) not in defective and tuple(row) not in known
        ]
        planted = pl.concat(
            [
                planted,
                pl.DataFrame(
                    {"row_number": orphans, "rule_id": [rule.id] * len(orphans)},
                    schema=PLANTED_SCHEMA,
                ),
            ]
        )
    return GeneratedDelivery(
        frame=frame, planted=planted, headers=delivery.headers, row_offset=delivery.row_offset
    )
