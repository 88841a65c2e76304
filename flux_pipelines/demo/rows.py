"""Generating rows: one delivery, or many in lockstep sharing validator calls.

Why: ``generate_chunk`` is the whole recipe (valid rows, defects assigned, planted, key
collisions undone) as a coroutine asking the oracle; ``generate_rows`` runs one alone and
``generate_many`` runs many together, byte for byte the same deliveries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import polars as pl

from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.validator import RowValidator
from flux_pipelines.demo.defects import assign_defects, drop_collisions, planted_table
from flux_pipelines.demo.delivery import GeneratedDelivery, delivered_headers
from flux_pipelines.demo.draws import Rng
from flux_pipelines.demo.oracle import Oracle, answer, answer_together
from flux_pipelines.demo.plan import Plan, compile_plan
from flux_pipelines.demo.planting import plant
from flux_pipelines.demo.valid import valid_frame


def generate_rows(
    contract: Contract,
    n_rows: int,
    *,
    seed: int,
    defect_rate: float = 0.02,
    source_headers: bool = True,
    row_offset: int = 0,
    total_rows: int | None = None,
) -> GeneratedDelivery:
    """Generate ``n_rows`` realistic rows, ``defect_rate`` of them breaking one rule each.

    ``row_offset``/``total_rows`` place this chunk inside a larger delivery (streaming):
    keys are derived from the global row index, so they stay unique across chunks.
    """
    total = total_rows if total_rows is not None else row_offset + n_rows
    plan = compile_plan(contract, seed, total)
    steps = generate_chunk(plan, n_rows, row_offset, Rng(seed), defect_rate, source_headers, {})
    return answer(plan.validator, steps)


class RowsRequest(NamedTuple):
    """The arguments of one ``generate_rows`` call, for ``generate_many``."""

    contract: Contract
    n_rows: int
    seed: int
    defect_rate: float = 0.02


def generate_many(requests: Sequence[RowsRequest]) -> list[GeneratedDelivery]:
    """``generate_rows`` for every request, in lockstep: the requests of one contract share
    each validator call (a call costs about the same for 10 rows or 10,000). Each delivery
    is the one ``generate_rows`` makes alone, byte for byte."""
    validators: dict[int, RowValidator] = {}  # one per contract object: its requests batch
    jobs: list[tuple[RowValidator, Oracle[GeneratedDelivery]]] = []
    for contract, n_rows, seed, defect_rate in requests:
        if id(contract) not in validators:
            validators[id(contract)] = RowValidator(contract)
        plan = compile_plan(contract, seed, n_rows, validators[id(contract)])
        jobs.append(
            (plan.validator, generate_chunk(plan, n_rows, 0, Rng(seed), defect_rate, True, {}))
        )
    return answer_together(jobs)


def generate_chunk(
    plan: Plan,
    n_rows: int,
    offset: int,
    rng: Rng,
    defect_rate: float,
    source_headers: bool,
    seen: dict[str, set[str]],
) -> Oracle[GeneratedDelivery]:
    """One chunk, as a coroutine asking the oracle (``answer`` runs it alone)."""
    index = pl.int_range(offset, offset + n_rows, eager=True, dtype=pl.Int64)
    valid, awkward = yield from valid_frame(plan, index, rng)
    defects = assign_defects(plan, valid, defect_rate, rng, set(awkward))
    frame = yield from plant(plan, valid, index, defects, rng)
    frame = drop_collisions(plan, frame, valid, defects, seen)
    headers = delivered_headers(plan.contract, source_headers)
    return GeneratedDelivery(
        frame=frame.rename(headers),
        planted=planted_table(plan, defects, offset),
        headers=headers,
        row_offset=offset,
    )
