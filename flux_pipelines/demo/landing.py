"""The demo's landing folder: every planned delivery generated, linked, made real, written.

Why: this is the one place the steps meet. Nothing here knows a dataset: references come
from the contracts' cross-dataset rules, and realism a contract cannot state (spending's
recipients) comes from the plug-in registered for the dataset (``realism.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from flux_pipelines.contracts.registry import Registry
from flux_pipelines.demo.delivery import GeneratedDelivery
from flux_pipelines.demo.files import write_delivery
from flux_pipelines.demo.landing_plan import DEMO_START, plan_landing
from flux_pipelines.demo.realism import Occasion, realism_for
from flux_pipelines.demo.references import link_references
from flux_pipelines.demo.rows import generate_many


def generate_landing(
    landing_root: Path,
    registry: Registry,
    *,
    agencies: Sequence[str] | None = None,
    days: int | Sequence[dt.date],
    seed: int,
    rows_per_delivery: int = 200,
) -> list[Path]:
    """Write ``<agency>/<dataset>/<day>/<dataset>_<day>.csv`` for the demo; same seed, same bytes.

    Row counts wobble by VOLUME_WOBBLE per day (except the DEMO_ANOMALIES) and defect rates
    differ per agency so the demo summary has contrast; a few agencies send BOM + CRLF
    files, and one delivery each is JSONL and Parquet (``landing_plan.py``).
    """
    dates = (
        [DEMO_START + dt.timedelta(days=i) for i in range(days)] if isinstance(days, int) else days
    )
    planned = plan_landing(
        registry, agencies, dates, seed=seed, rows_per_delivery=rows_per_delivery
    )
    written: list[Path] = []
    generated: dict[tuple[str, str, dt.date], GeneratedDelivery] = {}
    for item, delivery in zip(planned, generate_many([p.request for p in planned]), strict=True):
        delivery = link_references(
            delivery,
            item.request.contract,
            {
                d: g
                for (a, d, when), g in generated.items()
                if a == item.agency and when == item.day
            },
            seed=item.local.getrandbits(63),
            orphan_rate=item.request.defect_rate / 2,
        )
        realism = realism_for(item.dataset)
        if realism is not None:
            delivery = realism(delivery, Occasion(item.agency, item.day, seed, item.local))
        generated[(item.agency, item.dataset, item.day)] = delivery
        day = item.day.isoformat()
        path = landing_root / item.agency / item.dataset / day / f"{item.dataset}_{day}.{item.fmt}"
        written.append(
            write_delivery(delivery.frame, path, item.fmt, bom=item.windows, crlf=item.windows)
        )
    return sorted(written)
