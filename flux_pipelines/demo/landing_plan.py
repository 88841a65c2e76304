"""The demo's calendar: which deliveries land, when, how big, and in what format.

Why: the demo summary and the monitors need contrast that stays the same for a seed: each
agency has its own defect rate and (some) BOM + CRLF files, daily volumes wobble a little,
a few deliveries are planted anomalies, one delivery each is JSONL and Parquet, and a
dataset is only delivered on days a contract of it is in force.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.demo.files import Format
from flux_pipelines.demo.rows import RowsRequest
from flux_pipelines.demo.scenario import planted_anomalies
from flux_pipelines.errors import ConfigurationError

DEMO_START = dt.date(2025, 1, 6)  # first landing day when generate_landing gets a day count
# Day-to-day volume wobble of demo deliveries: well inside the anomaly monitors' tolerance
# (a 15% drop is a WARN), so the only volume findings are the planted ones (scenario.py).
VOLUME_WOBBLE = 0.04


@dataclass(frozen=True)
class PlannedDelivery:
    """One delivery of the demo: where it lands, its format, and how it is generated."""

    agency: str
    dataset: str
    day: dt.date
    fmt: Format
    request: RowsRequest
    windows: bool  # the agency sends BOM + CRLF files
    # The delivery's own seeded stream: generation steps after the rows draw from it, in
    # order (references first, then the dataset's realism), so the bytes stay the same.
    local: random.Random


def plan_landing(
    registry: Registry,
    agencies: Sequence[str] | None,
    days: Sequence[dt.date],
    *,
    seed: int,
    rows_per_delivery: int,
) -> list[PlannedDelivery]:
    """Every delivery of the demo, referenced datasets first (so references can point at
    rows the agency really sent); same seed, same plan."""
    chosen = [registry.agency(a) for a in agencies] if agencies is not None else registry.agencies
    deliveries = [
        (agency.id, dataset, day)
        for agency in chosen
        for dataset in agency.datasets
        for day in days
        if _in_force(registry, dataset, day)
    ]
    formats = dict(zip(deliveries, _delivery_formats(len(deliveries)), strict=True))
    anomalies = planted_anomalies([a.id for a in chosen], days)
    planned: list[PlannedDelivery] = []
    for agency, dataset, day in sorted(deliveries, key=lambda d: _depth(registry, d[1])):
        style = random.Random(f"{seed}/{agency}")
        rate = style.choice((0.0, 0.005, 0.01, 0.02, 0.05, 0.1))
        windows = style.random() < 0.3
        local = random.Random(f"{seed}/{agency}/{dataset}/{day.isoformat()}")
        volume = local.uniform(1 - VOLUME_WOBBLE, 1 + VOLUME_WOBBLE)
        if (anomaly := anomalies.get((agency, dataset, day))) is not None:
            volume = anomaly.volume_factor
        n_rows = max(1, round(rows_per_delivery * volume))
        contract = registry.contract_for(dataset, day)
        request = RowsRequest(contract, n_rows, local.getrandbits(63), rate)
        fmt = formats[(agency, dataset, day)]
        planned.append(PlannedDelivery(agency, dataset, day, fmt, request, windows, local))
    return planned


def _depth(registry: Registry, dataset: str, seen: frozenset[str] = frozenset()) -> int:
    """How many reference hops a dataset is from one that references nothing."""
    parents = {d for r in registry.latest(dataset).cross_rules for d in r.datasets}
    if not parents or dataset in seen:
        return 0
    return 1 + max(_depth(registry, p, seen | {dataset}) for p in parents)


def _in_force(registry: Registry, dataset: str, day: dt.date) -> bool:
    try:
        registry.contract_for(dataset, day)
    except ConfigurationError:
        return False
    return True


def _delivery_formats(count: int) -> list[Format]:
    """All CSV but one JSONL and one Parquet, placed deterministically in the set."""
    formats: list[Format] = ["csv"] * count
    if count >= 1:
        formats[count // 3] = "jsonl"
    if count >= 2:
        formats[(2 * count) // 3 if (2 * count) // 3 != count // 3 else count - 1] = "parquet"
    return formats
